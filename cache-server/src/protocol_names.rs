//! What the protocols' identifiers name in the store, for every protocol
//! that carries them (the HTTP adapters and the gRPC services): an opaque
//! key of a compatible protocol, the names an entry is read and written
//! under in a request's namespaces, and a Bazel object by its digest.

use std::sync::LazyLock;

use cache_proto::{Digest, HexError, Namespace, Sha256};

use crate::blob::upload::ContentCheck;
use crate::blob::{EntryKey, Space, StoredName};
use crate::error::ApiError;
use crate::namespaces::Namespaces;

/// Parses an opaque key from a path segment (400 before any I/O).
pub fn opaque_key(raw: &str) -> Result<EntryKey, ApiError> {
    EntryKey::parse(raw)
        .map_err(|error| ApiError::bad_request("invalid_key", format!("invalid key: {error}")))
}

/// The names an entry is read under, in order: in each namespace the
/// request reads (its own first, then its fallbacks).
pub fn read_names(namespaces: &Namespaces, space: &Space, key: &EntryKey) -> Vec<StoredName> {
    namespaces
        .reads
        .iter()
        .map(|namespace| StoredName::Entry(namespace.clone(), space.clone(), key.clone()))
        .collect()
}

/// The name an entry is written under: in the request's own namespace.
pub fn write_name(namespaces: &Namespaces, space: Space, key: EntryKey) -> StoredName {
    StoredName::Entry(namespaces.own.clone(), space, key)
}

/// The hash of a Bazel digest, of the function the request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BazelHash {
    /// SHA-256: Bazel's default.
    Sha256(Sha256),
    /// BLAKE3 (`--digest_function=blake3`): our native CAS's names.
    Blake3(Digest),
}

impl BazelHash {
    /// Parses 64 lowercase hex characters of the function `blake3` says.
    pub fn parse(hex: &str, blake3: bool) -> Result<Self, HexError> {
        Ok(if blake3 {
            Self::Blake3(Digest::parse(hex)?)
        } else {
            Self::Sha256(Sha256::parse(hex)?)
        })
    }

    /// Whether the hash is BLAKE3's.
    pub fn is_blake3(&self) -> bool {
        matches!(self, Self::Blake3(_))
    }

    /// Whether it is the hash of no bytes at all (asked on every Bazel
    /// request: both hashes of nothing are computed once).
    pub fn is_of_nothing(&self) -> bool {
        static EMPTY_SHA256: LazyLock<Sha256> = LazyLock::new(|| {
            use sha2::Digest as _;
            Sha256::from_bytes(sha2::Sha256::digest(b"").into())
        });
        static EMPTY_BLAKE3: LazyLock<Digest> = LazyLock::new(|| Digest::of(b""));
        match self {
            Self::Sha256(hash) => *hash == *EMPTY_SHA256,
            Self::Blake3(digest) => *digest == *EMPTY_BLAKE3,
        }
    }
}

impl std::fmt::Display for BazelHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sha256(hash) => hash.fmt(f),
            Self::Blake3(digest) => digest.fmt(f),
        }
    }
}

/// A Bazel object: a CAS blob or an action result, named by a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BazelObject {
    /// An action result (under its action's digest), rather than a blob.
    pub action: bool,
    /// The digest's hash.
    pub hash: BazelHash,
}

/// Where an object is read and written, and the check its content passes.
#[derive(Debug, Clone)]
pub struct ObjectNames {
    /// The names it is read under, in order.
    pub reads: Vec<StoredName>,
    /// The name it is written under.
    pub write: StoredName,
    /// What its content must hash to.
    pub check: ContentCheck,
}

impl BazelObject {
    /// The CAS blob `hash`.
    pub fn blob(hash: BazelHash) -> Self {
        Self {
            action: false,
            hash,
        }
    }

    /// The result of the action `hash`.
    pub fn action(hash: BazelHash) -> Self {
        Self { action: true, hash }
    }

    /// Recognises `.../ac/{64 hex}` and `.../cas/{64 hex}` under any prefix
    /// (a `blake3` segment selects BLAKE3); `None` for any other path.
    pub fn parse_path(path: &str) -> Option<Self> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let [prefix @ .., kind, hex] = segments.as_slice() else {
            return None;
        };
        let action = match *kind {
            "ac" => true,
            "cas" => false,
            _ => return None,
        };
        let blake3 = prefix.iter().any(|s| s.eq_ignore_ascii_case("blake3"));
        let hash = BazelHash::parse(hex, blake3).ok()?;
        Some(Self { action, hash })
    }

    /// The names the object is read under (in order) and the one it is
    /// written under, with the check its content must pass. Action results
    /// live in namespaces; CAS content is verified against its name, so it
    /// is global (in `default`, where it always was).
    pub fn names(&self, namespaces: &Namespaces) -> Result<ObjectNames, ApiError> {
        if self.action {
            let key = opaque_key(&self.hash.to_string())?;
            let space = Space::BazelAc {
                blake3: self.hash.is_blake3(),
            };
            return Ok(ObjectNames {
                reads: read_names(namespaces, &space, &key),
                write: write_name(namespaces, space, key),
                check: ContentCheck::Unverified,
            });
        }
        let (name, check) = match self.hash {
            BazelHash::Blake3(digest) => (StoredName::Blob(digest), ContentCheck::Blake3(digest)),
            BazelHash::Sha256(hash) => {
                let key = opaque_key(&hash.to_string())?;
                (
                    StoredName::Entry(Namespace::default(), Space::BazelCasSha256, key),
                    ContentCheck::Sha256(*hash.as_bytes()),
                )
            }
        };
        Ok(ObjectNames {
            reads: vec![name.clone()],
            write: name,
            check,
        })
    }

    /// Whether this is the empty blob, which always exists.
    pub fn is_empty_blob(&self) -> bool {
        !self.action && self.hash.is_of_nothing()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_any_prefix_and_the_digest_function() {
        let hex = "ab".repeat(32);
        let sha = BazelHash::Sha256(Sha256::parse(&hex).unwrap());
        assert_eq!(
            BazelObject::parse_path(&format!("/cas/{hex}")),
            Some(BazelObject::blob(sha))
        );
        let parsed = BazelObject::parse_path(&format!("/team/blake3/ac/{hex}")).unwrap();
        assert!(parsed.action && parsed.hash.is_blake3());
        assert!(BazelObject::parse_path(&format!("/cas/{}", "AB".repeat(32))).is_none());
        assert!(BazelObject::parse_path("/cas/abc").is_none());
        assert!(BazelObject::parse_path(&format!("/other/{hex}")).is_none());
        assert!(BazelObject::parse_path("/").is_none());
    }

    #[test]
    fn the_empty_blob_of_either_function_is_known() {
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let empty = BazelObject::blob(BazelHash::parse(sha, false).unwrap());
        assert!(empty.is_empty_blob());
        let blake3 = BazelHash::Blake3(Digest::of(b""));
        assert!(BazelObject::blob(blake3).is_empty_blob());
        assert!(!BazelObject::action(blake3).is_empty_blob());
        let other = BazelHash::parse(&"ab".repeat(32), false).unwrap();
        assert!(!BazelObject::blob(other).is_empty_blob());
    }
}
