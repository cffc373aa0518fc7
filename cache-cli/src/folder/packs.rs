//! Packs: small files stored concatenated in a few CAS blobs, so a folder of
//! ten thousand files is a dozen objects on the server (one write, one
//! index row, one download each) instead of ten thousand.
//!
//! A save keeps the packs of the previous save whose bytes are still mostly
//! used (a one-file change re-uploads one small pack, not the folder) and
//! packs every other small content anew, in manifest order so that the files
//! of one package travel together.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;

use cache_proto::Digest;

use super::manifest::{Content, PackInfo, PackSlot, TreeManifest};

/// Files up to this size are packed; larger ones are blobs of their own.
pub const PACKED_MAX: u64 = 1024 * 1024;
/// A new pack is closed once it holds this many bytes.
pub const PACK_TARGET: u64 = 8 * 1024 * 1024;
/// Largest pack a restore accepts (a manifest is input).
pub const PACK_MAX: u64 = 64 * 1024 * 1024;

/// A content to save: its digest, size and one local file holding it.
pub type Source = (Digest, u64, PathBuf);

/// A pack of the previous save that the new one can point into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The pack.
    pub pack: PackInfo,
    /// The contents the new save takes from it, with their offsets.
    pub contents: Vec<(Digest, u64)>,
}

/// The packs of `base` worth keeping for a save of `small`: those of which at
/// least half the bytes are still wanted (below that, a restore would fetch
/// more dead bytes than live ones, and the live files are packed anew).
pub fn keepable(base: &TreeManifest, small: &[Source]) -> Vec<Kept> {
    let wanted: HashSet<Digest> = small.iter().map(|(digest, _, _)| *digest).collect();
    let mut by_pack: HashMap<usize, Vec<(Digest, u64, u64)>> = HashMap::new();
    for Content { digest, size, pack } in base.contents() {
        if let Some(slot) = pack
            && wanted.contains(&digest)
            && slot.pack() < base.packs.len()
        {
            by_pack
                .entry(slot.pack())
                .or_default()
                .push((digest, slot.offset(), size));
        }
    }
    let mut kept: Vec<Kept> = by_pack
        .into_iter()
        .filter_map(|(index, contents)| {
            let pack = base.packs[index];
            let live: u64 = contents.iter().map(|(_, _, size)| size).sum();
            (live * 2 >= pack.size).then(|| Kept {
                pack,
                contents: contents
                    .into_iter()
                    .map(|(digest, offset, _)| (digest, offset))
                    .collect(),
            })
        })
        .collect();
    kept.sort_by_key(|kept| kept.pack.digest.to_string());
    kept
}

/// Where every small content of a save goes.
#[derive(Debug, Default)]
pub struct Layout {
    /// The packs of the previous save that stay, first in the manifest.
    pub kept: Vec<PackInfo>,
    /// Contents to pack anew, in groups of about [`PACK_TARGET`] bytes; group
    /// `g` becomes pack `kept.len() + g`.
    pub groups: Vec<Vec<Source>>,
    /// The slot of every small content.
    pub slots: HashMap<Digest, PackSlot>,
}

/// Lays out `small` (distinct contents, in manifest order): what `kept`
/// holds stays where it is, the rest is grouped into new packs.
pub fn layout(kept: Vec<Kept>, small: &[Source]) -> Layout {
    let mut slots = HashMap::new();
    let mut packs = Vec::with_capacity(kept.len());
    for (index, Kept { pack, contents }) in kept.into_iter().enumerate() {
        for (digest, offset) in contents {
            slots.insert(digest, PackSlot(index as u32, offset));
        }
        packs.push(pack);
    }
    let mut groups: Vec<Vec<Source>> = Vec::new();
    let mut filled = PACK_TARGET;
    for source in small {
        if slots.contains_key(&source.0) {
            continue;
        }
        if filled >= PACK_TARGET {
            groups.push(Vec::new());
            filled = 0;
        }
        let index = (packs.len() + groups.len() - 1) as u32;
        slots.insert(source.0, PackSlot(index, filled));
        filled += source.1;
        if let Some(group) = groups.last_mut() {
            group.push(source.clone());
        }
    }
    Layout {
        kept: packs,
        groups,
        slots,
    }
}

/// Why a pack could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file changed between the scan and the packing.
    #[error("{0} changed while the folder was being saved")]
    Changed(String),
}

/// The bytes of a pack of `group` (as laid out by [`layout`]), each file
/// read again and checked against the digest it was scanned with.
pub fn build(group: &[Source]) -> Result<(PackInfo, Vec<u8>), PackError> {
    let total: u64 = group.iter().map(|(_, size, _)| size).sum();
    let mut bytes = Vec::with_capacity(total as usize);
    for (digest, size, path) in group {
        let start = bytes.len();
        let read = |source| PackError::Read {
            path: path.display().to_string(),
            source,
        };
        std::fs::File::open(path)
            .and_then(|file| file.take(size + 1).read_to_end(&mut bytes))
            .map_err(read)?;
        let content = &bytes[start..];
        if content.len() as u64 != *size || Digest::of(content) != *digest {
            return Err(PackError::Changed(path.display().to_string()));
        }
    }
    let info = PackInfo {
        digest: Digest::of(&bytes),
        size: bytes.len() as u64,
    };
    Ok((info, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::manifest::{EntryKind, RawPath, TreeEntry};

    fn source(folder: &std::path::Path, name: &str, content: &[u8]) -> Source {
        let path = folder.join(name);
        std::fs::write(&path, content).unwrap();
        (Digest::of(content), content.len() as u64, path)
    }

    #[test]
    fn new_contents_are_grouped_and_a_pack_still_mostly_used_is_kept() {
        let folder = tempfile::tempdir().unwrap();
        let a = source(folder.path(), "a", &[1u8; 600]);
        let b = source(folder.path(), "b", &[2u8; 400]);
        let (first, bytes) = build(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(first.size, 1000);
        assert_eq!(&bytes[600..], &[2u8; 400][..]);
        let entry = |name: &str, source: &Source, slot| TreeEntry {
            path: RawPath(name.as_bytes().to_vec()),
            kind: EntryKind::File {
                digest: source.0,
                size: source.1,
                executable: false,
                pack: Some(slot),
            },
        };
        let base = TreeManifest::with_packs(
            vec![first],
            vec![
                entry("a", &a, PackSlot(0, 0)),
                entry("b", &b, PackSlot(0, 600)),
            ],
        );
        // `b` changed: 600 of 1000 bytes still used, the pack stays.
        let c = source(folder.path(), "c", b"new");
        let kept = keepable(&base, &[a.clone(), c.clone()]);
        assert_eq!(kept.len(), 1);
        let layout = layout(kept, &[a.clone(), c.clone()]);
        assert_eq!(layout.kept, vec![first]);
        assert_eq!(layout.slots[&a.0], PackSlot(0, 0));
        assert_eq!(layout.slots[&c.0], PackSlot(1, 0));
        assert_eq!(layout.groups, vec![vec![c.clone()]]);
        // Only `b` left: 400 of 1000 bytes, packed anew instead.
        assert!(keepable(&base, std::slice::from_ref(&b)).is_empty());
        // A file that changed after the scan is refused, not packed.
        std::fs::write(&c.2, b"other").unwrap();
        assert!(matches!(build(&[c]), Err(PackError::Changed(_))));
    }

    #[test]
    fn groups_close_at_the_target_size() {
        let folder = tempfile::tempdir().unwrap();
        let half = (PACK_TARGET / 2) as usize;
        let sources: Vec<Source> = (0..5u8)
            .map(|i| source(folder.path(), &i.to_string(), &vec![i; half]))
            .collect();
        let layout = layout(Vec::new(), &sources);
        let sizes: Vec<usize> = layout.groups.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 2, 1]);
        assert_eq!(layout.slots[&sources[3].0], PackSlot(1, half as u64));
    }
}
