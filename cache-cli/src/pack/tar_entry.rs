//! One tar entry in POSIX (ustar + PAX) form, written byte for byte the same
//! on every machine.
//!
//! A name or link target that is not plain ASCII, or does not fit the ustar
//! fields (100 bytes, or a 155-byte prefix and a 100-byte name), goes in a
//! PAX extended header (`path`, `linkpath`; `hdrcharset=BINARY` when it is
//! not UTF-8, so the exact bytes survive), as does a size past the 8 GiB the
//! ustar field holds. The `tar` crate would write GNU `@LongLink` entries
//! instead, which the OCI spec does not name.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

/// Largest size the 11 octal digits of a ustar header hold.
const USTAR_MAX_SIZE: u64 = 0o77_777_777_777;

/// What kind of entry, with what it needs.
pub enum EntryKind<'a> {
    /// A folder.
    Directory,
    /// A regular file of this many bytes.
    File {
        /// Its size.
        size: u64,
        /// 0644 or 0755.
        executable: bool,
    },
    /// A symbolic link to this target (stored, never followed).
    Symlink(&'a [u8]),
}

/// The content of a file entry: exactly `remaining` bytes, an error if the
/// file ends sooner (it shrank while being packed), never more.
struct Exact<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let limit = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..limit])?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file changed size while it was being packed",
            ));
        }
        self.remaining -= read as u64;
        Ok(read)
    }
}

/// A PAX record: `"<length> <key>=<value>\n"`, the length counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut length = rest + 1;
    while length != rest + length.to_string().len() {
        length = rest + length.to_string().len();
    }
    let mut record = format!("{length} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// `bytes` as a short printable ASCII stand-in for the ustar field of a
/// reader that does not know PAX: at most `limit` bytes of its tail.
fn ascii_stand_in(bytes: &[u8], limit: usize) -> Vec<u8> {
    let cleaned: Vec<u8> = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b
            } else {
                b'_'
            }
        })
        .collect();
    let tail = &cleaned[cleaned.len().saturating_sub(limit)..];
    let start = tail.iter().position(|&b| b != b'/').unwrap_or(tail.len());
    tail[start..].to_vec()
}

/// A stand-in for a path: the tail of [`ascii_stand_in`] with no empty,
/// `.` or `..` component (a cut mid-component can form one, as in
/// `xx../c` cut to `../c`), which tar readers refuse or resolve upwards.
fn path_stand_in(bytes: &[u8], limit: usize) -> Vec<u8> {
    let tail = ascii_stand_in(bytes, limit);
    let components: Vec<&[u8]> = tail
        .split(|&b| b == b'/')
        .filter(|component| !component.is_empty())
        .map(|component| match component {
            b"." | b".." => &b"_"[..],
            other => other,
        })
        .collect();
    if components.is_empty() {
        return b"_".to_vec();
    }
    components.join(&b'/')
}

fn base_header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    // Empty user and group names: the fields are zeroed already.
    header
}

/// Mode bits and owner an entry keeps instead of the normalised ones (a
/// layer of changes to a root filesystem, where a setuid bit or a
/// service's own user matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Permission bits, setuid, setgid and sticky included.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
}

/// Appends one entry named `name` (raw bytes, `/`-separated, relative),
/// every mtime `mtime`, uid/gid 0, with `data` as content for a file.
pub fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &[u8],
    kind: EntryKind<'_>,
    mtime: u64,
    data: impl Read,
) -> io::Result<()> {
    append_owned(builder, name, kind, mtime, data, None)
}

/// Like [`append`], with `owner`'s mode and ids when given.
pub fn append_owned<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &[u8],
    kind: EntryKind<'_>,
    mtime: u64,
    data: impl Read,
    owner: Option<Owner>,
) -> io::Result<()> {
    let (entry_type, mode, size, link) = match kind {
        EntryKind::Directory => (tar::EntryType::Directory, 0o755, 0, None),
        EntryKind::File { size, executable } => (
            tar::EntryType::Regular,
            if executable { 0o755 } else { 0o644 },
            size,
            None,
        ),
        EntryKind::Symlink(target) => (tar::EntryType::Symlink, 0o777, 0, Some(target)),
    };
    let mut header = base_header(entry_type, mode, size.min(USTAR_MAX_SIZE), mtime);
    if let Some(owner) = owner {
        header.set_mode(owner.mode & 0o7777);
        header.set_uid(owner.uid);
        header.set_gid(owner.gid);
    }
    let mut records = Vec::new();
    let mut binary = false;
    // The tar crate normalises what it stores (`./`, `//`, a trailing or a
    // lone `/`): whatever does not read back byte for byte goes in PAX.
    let exact_path = name.is_ascii()
        && header.set_path(OsStr::from_bytes(name)).is_ok()
        && &*header.path_bytes() == name;
    if !exact_path {
        records.extend(pax_record("path", name));
        binary |= std::str::from_utf8(name).is_err();
        header.set_path(OsStr::from_bytes(&path_stand_in(name, 99)))?;
    }
    if let Some(target) = link
        && !(target.is_ascii()
            && header.set_link_name(OsStr::from_bytes(target)).is_ok()
            && header.link_name_bytes().as_deref() == Some(target))
    {
        records.extend(pax_record("linkpath", target));
        binary |= std::str::from_utf8(target).is_err();
        // The ustar field is only a stand-in for readers without PAX; one
        // the tar crate refuses (such as an empty one for `/`) stays empty.
        if header
            .set_link_name(OsStr::from_bytes(&ascii_stand_in(target, 99)))
            .is_err()
        {
            header.set_link_name("_")?;
        }
    }
    if size > USTAR_MAX_SIZE {
        records.extend(pax_record("size", size.to_string().as_bytes()));
    }
    if !records.is_empty() {
        if binary {
            // Must come before the records it describes.
            let mut first = pax_record("hdrcharset", b"BINARY");
            first.extend(records);
            records = first;
        }
        let mut extended = base_header(tar::EntryType::XHeader, 0o644, records.len() as u64, mtime);
        extended.set_path("PaxHeader")?;
        extended.set_cksum();
        builder.append(&extended, records.as_slice())?;
    }
    header.set_cksum();
    let content = Exact {
        inner: data,
        remaining: size,
    };
    builder.append(&header, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_the_tar_crate_would_normalise_come_back_exact() {
        // Found by the tar_writer fuzz target: a link to `/` read back as `//`.
        for target in [&b"/"[..], b"./x", b"a//b", b"dir/", b"../lib/./x", b"."] {
            let entries = read_back(&[(b"link", EntryKind::Symlink(target))]);
            assert_eq!(
                entries[0].1.as_deref(),
                Some(target),
                "{:?}",
                String::from_utf8_lossy(target)
            );
        }
    }

    #[test]
    fn a_long_path_whose_tail_starts_with_dot_dot_survives_exactly() {
        // Found by the tar_writer fuzz target: the 99-byte ustar stand-in of
        // `app/<200 d>/xx../<96 c>` began with `../`, which the tar crate
        // refuses to set, so `cachectl build` failed on such an app folder.
        let name = format!("app/{}/xx../{}", "d".repeat(200), "c".repeat(96)).into_bytes();
        let file = EntryKind::File {
            size: 2,
            executable: false,
        };
        let entries = read_back(&[(name.as_slice(), file)]);
        assert_eq!(entries[0].0, name);
        for tail in [&b"a/../b"[..], b"./x", b"..", b"//", b"x/./.."] {
            let stand_in = path_stand_in(tail, 99);
            assert!(
                stand_in
                    .split(|&b| b == b'/')
                    .all(|c| !c.is_empty() && c != b"." && c != b".."),
                "{:?}",
                String::from_utf8_lossy(&stand_in)
            );
        }
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        assert_eq!(pax_record("path", b"a"), b"9 path=a\n");
        let record = pax_record("path", &[b'x'; 93]);
        assert_eq!(record.len(), 103);
        assert!(record.starts_with(b"103 path="));
    }

    fn read_back(entries: &[(&[u8], EntryKind<'_>)]) -> Vec<(Vec<u8>, Option<Vec<u8>>, u64)> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind) in entries {
            let size = match kind {
                EntryKind::File { size, .. } => *size,
                _ => 0,
            };
            let kind = match kind {
                EntryKind::Directory => EntryKind::Directory,
                EntryKind::File { size, executable } => EntryKind::File {
                    size: *size,
                    executable: *executable,
                },
                EntryKind::Symlink(target) => EntryKind::Symlink(target),
            };
            append(&mut builder, name, kind, 0, io::repeat(b'z').take(size)).unwrap();
        }
        let bytes = builder.into_inner().unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let link = entry.link_name_bytes().map(|l| l.into_owned());
                (
                    entry.path_bytes().into_owned(),
                    link,
                    entry.header().size().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn long_non_ascii_and_non_utf8_names_survive_exactly() {
        let long = format!("app/{}/{}", "d".repeat(120), "f".repeat(255)).into_bytes();
        let accented = "app/café/naïve.txt".as_bytes().to_vec();
        let latin1 = b"app/caf\xe9.txt".to_vec();
        let far = format!("../{}", "t".repeat(200)).into_bytes();
        let entries = [
            (b"app".as_slice(), EntryKind::Directory),
            (
                long.as_slice(),
                EntryKind::File {
                    size: 3,
                    executable: false,
                },
            ),
            (
                accented.as_slice(),
                EntryKind::File {
                    size: 1,
                    executable: true,
                },
            ),
            (
                latin1.as_slice(),
                EntryKind::File {
                    size: 0,
                    executable: false,
                },
            ),
            (b"app/link".as_slice(), EntryKind::Symlink(&far)),
        ];
        let back = read_back(&entries);
        let names: Vec<&[u8]> = back.iter().map(|(name, _, _)| name.as_slice()).collect();
        assert_eq!(
            names,
            vec![
                b"app".as_slice(),
                &long,
                &accented,
                &latin1,
                b"app/link".as_slice()
            ]
        );
        assert_eq!(back[1].2, 3);
        assert_eq!(back[4].1.as_deref(), Some(far.as_slice()));
    }

    #[test]
    fn a_file_shorter_than_its_header_says_is_an_error() {
        let mut builder = tar::Builder::new(Vec::new());
        let file = EntryKind::File {
            size: 10,
            executable: false,
        };
        let error = append(&mut builder, b"app/a", file, 0, &b"short"[..]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn plain_short_names_need_no_extended_header() {
        let mut builder = tar::Builder::new(Vec::new());
        append(
            &mut builder,
            b"app/main.py",
            EntryKind::File {
                size: 0,
                executable: false,
            },
            0,
            io::empty(),
        )
        .unwrap();
        let bytes = builder.into_inner().unwrap();
        assert_eq!(
            bytes.len(),
            512 + 1024,
            "one header and the end marker, no PAX entry"
        );
        assert_eq!(&bytes[257..263], b"ustar\0");
    }
}
