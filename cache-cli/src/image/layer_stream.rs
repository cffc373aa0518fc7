//! A layer's tar stream read the way the ecosystem reads it.
//!
//! Go's `archive/tar` (and so containerd, Docker, buildah, skopeo and umoci)
//! ends an archive at a clean end of stream on an entry boundary: the two
//! zero blocks of the end-of-archive marker may be missing, and so may the
//! zero padding that rounds the last entry's data up to a 512-byte block.
//! umoci 0.4.7 writes such layers. The `tar` crate needs the padding, so
//! [`EntryBoundedReader`] supplies it when, and only when, the stream ends
//! exactly where the last entry's data ends. A stream that ends anywhere
//! else (inside a header, inside an entry's data, inside its padding) stays
//! an error that names the entry, as it is in Go.

use std::cell::RefCell;
use std::io::{self, Read};
use std::path::PathBuf;
use std::rc::Rc;

/// The tar block size: headers and data padding are counted in it.
const BLOCK: u64 = 512;

/// Where the data of the entry being read lies in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpan {
    /// The entry's path, for the error if the stream ends inside it.
    pub path: PathBuf,
    /// Offset of its first data byte in the (decompressed) tar stream.
    pub data_start: u64,
    /// How many data bytes it stores.
    pub data_len: u64,
}

impl EntrySpan {
    fn data_end(&self) -> u64 {
        self.data_start.saturating_add(self.data_len)
    }

    fn padded_end(&self) -> u64 {
        self.data_end().div_ceil(BLOCK).saturating_mul(BLOCK)
    }
}

/// The reader's view of the entry the archive is at, shared with the loop
/// that walks the entries (both live on one thread).
#[derive(Debug, Clone, Default)]
pub struct CurrentEntry(Rc<RefCell<Option<EntrySpan>>>);

impl CurrentEntry {
    /// Records that the archive now reads `span`'s entry; `None` for an
    /// entry whose data is not one contiguous run (a GNU sparse file),
    /// where a stream that ends is left to the `tar` crate to judge.
    pub fn set(&self, span: Option<EntrySpan>) {
        self.0.replace(span);
    }

    fn get(&self) -> Option<EntrySpan> {
        self.0.borrow().clone()
    }
}

/// A tar stream that may end without its end-of-archive marker, or without
/// its last entry's padding.
#[derive(Debug)]
pub struct EntryBoundedReader<R> {
    inner: R,
    /// Bytes read from `inner` so far.
    position: u64,
    entry: CurrentEntry,
    /// Zero bytes still to supply in place of the missing padding.
    padding: u64,
    ended: bool,
}

impl<R: Read> EntryBoundedReader<R> {
    /// Reads the tar stream `inner`; `entry` is kept up to date by whoever
    /// walks the archive's entries.
    pub fn new(inner: R, entry: CurrentEntry) -> Self {
        Self {
            inner,
            position: 0,
            entry,
            padding: 0,
            ended: false,
        }
    }

    /// What the end of `inner` at [`Self::position`] means: the number of
    /// zero bytes to supply before the end (0: end here), or an error.
    fn at_end(&self) -> io::Result<u64> {
        let position = self.position;
        if let Some(span) = self.entry.get()
            && position >= span.data_start
            && position < span.padded_end()
        {
            if position < span.data_end() {
                return Err(cut(format!(
                    "the layer ends inside {}: {} of its {} bytes are there",
                    span.path.display(),
                    position - span.data_start,
                    span.data_len
                )));
            }
            if position == span.data_end() {
                // The last entry's data is whole and its padding missing:
                // as in Go, the archive ends here.
                return Ok(span.padded_end() - position);
            }
            return Err(cut(format!(
                "the layer ends inside the padding after {}",
                span.path.display()
            )));
        }
        if !position.is_multiple_of(BLOCK) {
            return Err(cut(format!(
                "the layer ends inside a tar header, at byte {position}"
            )));
        }
        Ok(0)
    }
}

fn cut(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, why)
}

impl<R: Read> Read for EntryBoundedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.ended {
            let read = self.inner.read(buf)?;
            if read > 0 {
                self.position += read as u64;
                return Ok(read);
            }
            self.padding = self.at_end()?;
            self.ended = true;
        }
        let zeros = usize::try_from(self.padding)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        buf[..zeros].fill(0);
        self.padding -= zeros as u64;
        Ok(zeros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of `files` (path, content), cut to its first `keep` bytes
    /// (`None`: whole, with its end-of-archive marker).
    fn archive(files: &[(&str, &[u8])], keep: Option<usize>) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in files {
            let mut header = tar::Header::new_ustar();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, path, *content).unwrap();
        }
        let mut bytes = builder.into_inner().unwrap();
        if let Some(keep) = keep {
            bytes.truncate(keep);
        }
        bytes
    }

    /// Every entry's path and content, or the error that ended the walk.
    fn read_all(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
        let entry = CurrentEntry::default();
        let mut archive = tar::Archive::new(EntryBoundedReader::new(bytes, entry.clone()));
        let mut out = Vec::new();
        for item in archive.entries().map_err(|e| e.to_string())? {
            let mut item = item.map_err(|e| e.to_string())?;
            let path = item.path().unwrap().display().to_string();
            entry.set(Some(EntrySpan {
                path: path.clone().into(),
                data_start: item.raw_file_position(),
                data_len: item.size(),
            }));
            let mut content = Vec::new();
            item.read_to_end(&mut content).map_err(|e| e.to_string())?;
            out.push((path, content));
        }
        Ok(out)
    }

    const FILES: &[(&str, &[u8])] = &[("a", b"first"), ("b", b"second file")];

    fn whole() -> Vec<(String, Vec<u8>)> {
        FILES
            .iter()
            .map(|(p, c)| (p.to_string(), c.to_vec()))
            .collect()
    }

    #[test]
    fn an_archive_without_its_marker_or_last_padding_reads_whole() {
        // header a, data a (one block), header b, data b: 2048 bytes.
        let data_end_b = 512 * 3 + 11;
        for keep in [None, Some(2048 + 512), Some(2048), Some(data_end_b)] {
            assert_eq!(read_all(&archive(FILES, keep)), Ok(whole()), "{keep:?}");
        }
    }

    #[test]
    fn an_archive_cut_inside_an_entry_is_an_error_naming_it() {
        let in_data = read_all(&archive(FILES, Some(512 * 3 + 4))).unwrap_err();
        assert!(
            in_data.contains("ends inside b: 4 of its 11 bytes"),
            "{in_data}"
        );
        let in_padding = read_all(&archive(FILES, Some(512 * 3 + 100))).unwrap_err();
        assert!(
            in_padding.contains("inside the padding after b"),
            "{in_padding}"
        );
        let in_header = read_all(&archive(FILES, Some(1024 + 100))).unwrap_err();
        assert!(in_header.contains("inside a tar header"), "{in_header}");
    }

    #[test]
    fn an_empty_stream_is_an_empty_archive() {
        assert_eq!(read_all(&[]), Ok(Vec::new()));
    }
}
