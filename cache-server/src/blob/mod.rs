//! Blobs in storage: where they live, how they are laid out, and the
//! verified upload and streaming download paths.

pub mod download;
pub mod format;
pub mod name;
pub mod upload;

pub use name::{EntryKey, Space};

use cache_proto::{Digest, Key};
use object_store::path::Path;

/// Storage folder of CAS blobs.
pub const CAS_PREFIX: &str = "cas";
/// Storage folder of action-cache entries.
pub const AC_PREFIX: &str = "ac";
/// Storage folder of compatibility-protocol entries.
pub const KV_PREFIX: &str = "kv";

/// `cas/{first two hex}/{digest}`.
pub fn cas_path(digest: &Digest) -> Path {
    let hex = digest.to_string();
    Path::from_iter([CAS_PREFIX, &hex[..2], &hex])
}

/// `ac/{key}`.
pub fn ac_path(key: &Key) -> Path {
    Path::from_iter([AC_PREFIX, &key.to_string()])
}

/// What a storage path names, when it is one of ours.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StoredName {
    /// A CAS blob.
    Blob(Digest),
    /// An action-cache entry.
    Action(Key),
    /// An entry of a compatibility protocol: an opaque key in its space.
    Entry(Space, EntryKey),
}

impl StoredName {
    /// Recognises `cas/{xx}/{digest}`, `ac/{key}` and `kv/{space}/{key}`;
    /// anything else is `None`.
    pub fn from_path(path: &Path) -> Option<Self> {
        let parts: Vec<_> = path.parts().collect();
        match parts.as_slice() {
            [kind, shard, name] if kind.as_ref() == CAS_PREFIX => {
                let digest = Digest::parse(name.as_ref()).ok()?;
                (digest.to_string()[..2] == *shard.as_ref()).then_some(Self::Blob(digest))
            }
            [kind, name] if kind.as_ref() == AC_PREFIX => {
                Key::parse(name.as_ref()).ok().map(Self::Action)
            }
            [kind, space, key] if kind.as_ref() == KV_PREFIX => Some(Self::Entry(
                Space::parse(space.as_ref())?,
                EntryKey::parse(key.as_ref()).ok()?,
            )),
            _ => None,
        }
    }

    /// Where the object lives in storage.
    pub fn path(&self) -> Path {
        match self {
            Self::Blob(digest) => cas_path(digest),
            Self::Action(key) => ac_path(key),
            Self::Entry(space, key) => Path::from_iter([KV_PREFIX, &space.segment(), key.as_str()]),
        }
    }

    /// The index's (kind, name) of the object.
    pub fn index_key(&self) -> (String, String) {
        match self {
            Self::Blob(digest) => ("cas".to_owned(), digest.to_string()),
            Self::Action(key) => ("ac".to_owned(), key.to_string()),
            Self::Entry(space, key) => (format!("kv/{}", space.segment()), key.as_str().to_owned()),
        }
    }

    /// The inverse of [`StoredName::index_key`].
    pub fn from_index_key(kind: &str, name: &str) -> Option<Self> {
        match kind {
            "cas" => Digest::parse(name).ok().map(Self::Blob),
            "ac" => Key::parse(name).ok().map(Self::Action),
            _ => Some(Self::Entry(
                Space::parse(kind.strip_prefix("kv/")?)?,
                EntryKey::parse(name).ok()?,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_and_foreign_paths_are_ignored() {
        let digest = Digest::of(b"x");
        let key = Key::from_bytes(*digest.as_bytes());
        assert_eq!(
            StoredName::from_path(&cas_path(&digest)),
            Some(StoredName::Blob(digest))
        );
        assert_eq!(
            StoredName::from_path(&ac_path(&key)),
            Some(StoredName::Action(key))
        );
        assert!(
            cas_path(&digest)
                .as_ref()
                .starts_with(&format!("cas/{}/", &digest.to_string()[..2]))
        );
        assert_eq!(StoredName::from_path(&Path::from("cas/zz/nothex")), None);
        assert_eq!(
            StoredName::from_path(&Path::from(format!("cas/00/{digest}"))),
            None
        );
        assert_eq!(StoredName::from_path(&Path::from("conformance/x")), None);
    }
}
