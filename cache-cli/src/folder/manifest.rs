//! The tree manifest: every entry of a saved folder (relative path, kind,
//! mode, content digest and size, or link target), sorted by path bytes.
//! Stored as JSON in the CAS; paths that are not UTF-8 are kept byte for
//! byte as base64.
//!
//! Version 2 adds packs: small files are stored concatenated in a few CAS
//! blobs (listed in `packs`), and each such file names its pack and the
//! offset of its bytes there. A version 1 manifest (every file its own
//! blob) is still read.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cache_proto::Digest;
use serde::{Deserialize, Serialize};

/// Format version written in every manifest.
pub const VERSION: u32 = 2;

/// A path or link target as raw bytes: a JSON string when UTF-8, else
/// `{"b64": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RawPath(pub Vec<u8>);

impl Serialize for RawPath {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => {
                #[derive(Serialize)]
                struct Encoded {
                    b64: String,
                }
                Encoded {
                    b64: STANDARD.encode(&self.0),
                }
                .serialize(serializer)
            }
        }
    }
}

impl<'de> Deserialize<'de> for RawPath {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Encoded { b64: String },
        }
        match Form::deserialize(deserializer)? {
            Form::Text(text) => Ok(Self(text.into_bytes())),
            Form::Encoded { b64 } => STANDARD
                .decode(b64)
                .map(Self)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum EntryKind {
    /// A folder.
    Dir,
    /// A regular file.
    File {
        /// BLAKE3 of its content.
        digest: Digest,
        /// Its size in bytes.
        size: u64,
        /// Whether any execute bit is set (restored as 0755, else 0644).
        executable: bool,
        /// Where its bytes are when it is stored in a pack; `None` when the
        /// content is a blob of its own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pack: Option<PackSlot>,
    },
    /// A symbolic link, stored as its target, never followed.
    Symlink {
        /// The target as written in the link.
        target: RawPath,
    },
}

/// A pack: small files' contents concatenated, stored as one CAS blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackInfo {
    /// BLAKE3 of the whole pack.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// Where a packed file's bytes are: the index of its pack in
/// [`TreeManifest::packs`] and the offset in it (the length is the file's
/// size). Written as `[index, offset]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackSlot(pub u32, pub u64);

impl PackSlot {
    /// The pack's index in [`TreeManifest::packs`].
    pub fn pack(self) -> usize {
        self.0 as usize
    }

    /// The offset of the file's bytes in the pack.
    pub fn offset(self) -> u64 {
        self.1
    }
}

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// `/`-separated path relative to the saved folder.
    pub path: RawPath,
    /// What it is.
    #[serde(flatten)]
    pub kind: EntryKind,
}

/// One distinct file content of a manifest and where it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Content {
    /// BLAKE3 of the content.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its place in a pack, or `None` for a blob of its own.
    pub pack: Option<PackSlot>,
}

/// A saved folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeManifest {
    /// [`VERSION`].
    pub version: u32,
    /// The packs the entries' [`PackSlot`]s point into.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packs: Vec<PackInfo>,
    /// The entries, sorted by path bytes.
    pub entries: Vec<TreeEntry>,
}

impl TreeManifest {
    /// A manifest of `entries` (sorted here) with no packs.
    pub fn new(entries: Vec<TreeEntry>) -> Self {
        Self::with_packs(Vec::new(), entries)
    }

    /// A manifest of `entries` (sorted here) whose slots point into `packs`.
    pub fn with_packs(packs: Vec<PackInfo>, mut entries: Vec<TreeEntry>) -> Self {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Self {
            version: VERSION,
            packs,
            entries,
        }
    }

    /// The distinct file contents, in manifest order.
    pub fn contents(&self) -> Vec<Content> {
        let mut seen = std::collections::HashSet::new();
        self.entries
            .iter()
            .filter_map(|entry| match &entry.kind {
                EntryKind::File {
                    digest, size, pack, ..
                } if seen.insert(*digest) => Some(Content {
                    digest: *digest,
                    size: *size,
                    pack: *pack,
                }),
                _ => None,
            })
            .collect()
    }

    /// The distinct file digests with their sizes, in manifest order.
    pub fn blobs(&self) -> Vec<(Digest, u64)> {
        self.contents()
            .into_iter()
            .map(|content| (content.digest, content.size))
            .collect()
    }

    /// Total bytes of the files.
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|entry| match entry.kind {
                EntryKind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }

    /// The JSON form stored in the CAS.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the JSON form.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_are_not_utf8_round_trip_byte_for_byte() {
        let manifest = TreeManifest::new(vec![
            TreeEntry {
                path: RawPath(b"caf\xe9.txt".to_vec()),
                kind: EntryKind::File {
                    digest: Digest::of(b"x"),
                    size: 1,
                    executable: true,
                    pack: None,
                },
            },
            TreeEntry {
                path: RawPath(b"bin".to_vec()),
                kind: EntryKind::Dir,
            },
            TreeEntry {
                path: RawPath(b"bin/link".to_vec()),
                kind: EntryKind::Symlink {
                    target: RawPath(b"../\xff".to_vec()),
                },
            },
        ]);
        let json = manifest.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains(r#""path":"bin""#), "{text}");
        assert!(text.contains(r#""b64""#), "{text}");
        assert_eq!(TreeManifest::from_json(&json).unwrap(), manifest);
        assert_eq!(manifest.entries[0].path.0, b"bin");
        assert_eq!(manifest.blobs(), vec![(Digest::of(b"x"), 1)]);
        assert_eq!(manifest.file_bytes(), 1);
    }
}
