//! Blobs in storage: where they live, how they are laid out, and the
//! verified upload and streaming download paths.

pub mod download;
pub mod format;
pub mod upload;

use cache_proto::{Digest, Key};
use object_store::path::Path;

/// Storage folder of CAS blobs.
pub const CAS_PREFIX: &str = "cas";
/// Storage folder of action-cache entries.
pub const AC_PREFIX: &str = "ac";

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoredName {
    /// A CAS blob.
    Blob(Digest),
    /// An action-cache entry.
    Action(Key),
}

impl StoredName {
    /// Recognises `cas/{xx}/{digest}` and `ac/{key}`; anything else is `None`.
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
            _ => None,
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
