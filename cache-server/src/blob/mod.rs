//! Blobs in storage: where they live, how they are laid out, and the
//! verified upload and streaming download paths.

pub mod download;
pub mod format;
pub mod name;
pub mod reframe;
pub mod upload;

pub use name::{EntryKey, Space};

use cache_proto::{Digest, Key, Namespace};
use object_store::path::Path;

/// Storage folder of CAS blobs.
pub const CAS_PREFIX: &str = "cas";
/// Storage folder of action-cache entries.
pub const AC_PREFIX: &str = "ac";
/// Storage folder of compatibility-protocol entries.
pub const KV_PREFIX: &str = "kv";
/// Storage folder of the namespaces other than `default`:
/// `ns/{namespace}/ac/...` and `ns/{namespace}/kv/...`.
pub const NS_PREFIX: &str = "ns";
/// Every top-level folder that holds objects (what `reindex` and eviction
/// of a shared bucket list).
pub const OBJECT_PREFIXES: [&str; 4] = [CAS_PREFIX, AC_PREFIX, KV_PREFIX, NS_PREFIX];

/// `cas/{first two hex}/{digest}`.
pub fn cas_path(digest: &Digest) -> Path {
    let hex = digest.to_string();
    Path::from_iter([CAS_PREFIX, &hex[..2], &hex])
}

/// `ac/{key}` in the default namespace, `ns/{namespace}/ac/{key}` in others.
pub fn ac_path(namespace: &Namespace, key: &Key) -> Path {
    in_namespace(namespace, [AC_PREFIX, &key.to_string()])
}

/// `parts` under the folder of `namespace` (the root for `default`, which
/// keeps the layout of a cache from before namespaces).
fn in_namespace<'a>(namespace: &'a Namespace, parts: impl IntoIterator<Item = &'a str>) -> Path {
    let root: Vec<&str> = if namespace.is_default() {
        Vec::new()
    } else {
        vec![NS_PREFIX, namespace.as_str()]
    };
    Path::from_iter(root.into_iter().chain(parts))
}

/// What a storage path names, when it is one of ours.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StoredName {
    /// A CAS blob: global, its content is its name.
    Blob(Digest),
    /// An action-cache entry in a namespace.
    Action(Namespace, Key),
    /// An entry of a compatibility protocol: an opaque key in its space, in
    /// a namespace.
    Entry(Namespace, Space, EntryKey),
}

impl StoredName {
    /// Recognises `cas/{xx}/{digest}`, `ac/{key}` and `kv/{space}/{key}`,
    /// the last two also under `ns/{namespace}/`; anything else is `None`.
    pub fn from_path(path: &Path) -> Option<Self> {
        let parts: Vec<_> = path.parts().collect();
        let parts: Vec<&str> = parts.iter().map(AsRef::as_ref).collect();
        let (namespace, rest) = match parts.as_slice() {
            // The default namespace has one spelling: the root.
            [NS_PREFIX, namespace, rest @ ..] => (
                Namespace::parse(namespace)
                    .ok()
                    .filter(|namespace| !namespace.is_default())?,
                rest,
            ),
            all => (Namespace::default(), all),
        };
        match rest {
            [CAS_PREFIX, shard, name] if namespace.is_default() => {
                let digest = Digest::parse(name).ok()?;
                (digest.to_string()[..2] == **shard).then_some(Self::Blob(digest))
            }
            [AC_PREFIX, name] => Key::parse(name)
                .ok()
                .map(|key| Self::Action(namespace, key)),
            [KV_PREFIX, space, key] => Some(Self::Entry(
                namespace,
                Space::parse(space)?,
                EntryKey::parse(key).ok()?,
            )),
            _ => None,
        }
    }

    /// Where the object lives in storage.
    pub fn path(&self) -> Path {
        match self {
            Self::Blob(digest) => cas_path(digest),
            Self::Action(namespace, key) => ac_path(namespace, key),
            Self::Entry(namespace, space, key) => {
                in_namespace(namespace, [KV_PREFIX, &space.segment(), key.as_str()])
            }
        }
    }

    /// The namespace of a keyed entry; `None` for a blob.
    pub fn namespace(&self) -> Option<&Namespace> {
        match self {
            Self::Blob(_) => None,
            Self::Action(namespace, _) | Self::Entry(namespace, ..) => Some(namespace),
        }
    }

    /// The index's (kind, name) of the object: the kind is the storage
    /// folder (`cas`, `ac`, `kv/{space}`, `ns/{namespace}/ac`, ...).
    pub fn index_key(&self) -> (String, String) {
        let kind = |namespace: &Namespace, kind: String| {
            if namespace.is_default() {
                kind
            } else {
                format!("{NS_PREFIX}/{namespace}/{kind}")
            }
        };
        match self {
            Self::Blob(digest) => (CAS_PREFIX.to_owned(), digest.to_string()),
            Self::Action(namespace, key) => (kind(namespace, AC_PREFIX.into()), key.to_string()),
            Self::Entry(namespace, space, key) => (
                kind(namespace, format!("{KV_PREFIX}/{}", space.segment())),
                key.as_str().to_owned(),
            ),
        }
    }

    /// The inverse of [`StoredName::index_key`].
    pub fn from_index_key(kind: &str, name: &str) -> Option<Self> {
        Self::from_path(&Path::from(format!("{kind}/{name}")))
            .or_else(|| {
                // A blob's index kind is `cas` alone, without the shard.
                (kind == CAS_PREFIX)
                    .then(|| Digest::parse(name).ok().map(Self::Blob))
                    .flatten()
            })
            .filter(|parsed| parsed.index_key() == (kind.to_owned(), name.to_owned()))
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
        let default = Namespace::default();
        let pr = Namespace::parse("pr-1").unwrap();
        assert_eq!(
            StoredName::from_path(&ac_path(&default, &key)),
            Some(StoredName::Action(default.clone(), key))
        );
        assert_eq!(ac_path(&default, &key).as_ref(), format!("ac/{key}"));
        assert_eq!(ac_path(&pr, &key).as_ref(), format!("ns/pr-1/ac/{key}"));
        let entry = StoredName::Entry(pr.clone(), Space::Gradle, EntryKey::parse("k1").unwrap());
        assert_eq!(entry.path().as_ref(), "ns/pr-1/kv/gradle/k1");
        for name in [
            StoredName::Blob(digest),
            StoredName::Action(default.clone(), key),
            StoredName::Action(pr.clone(), key),
            entry.clone(),
            StoredName::Entry(default.clone(), Space::Nx, EntryKey::parse("n").unwrap()),
        ] {
            assert_eq!(StoredName::from_path(&name.path()), Some(name.clone()));
            let (kind, text) = name.index_key();
            assert_eq!(StoredName::from_index_key(&kind, &text), Some(name));
        }
        // The default namespace has one spelling: the root.
        assert_eq!(
            StoredName::from_path(&Path::from(format!("ns/default/ac/{key}"))),
            None
        );
        assert_eq!(
            StoredName::from_path(&Path::from(format!("ns/pr-1/cas/00/{digest}"))),
            None
        );
        assert_eq!(
            StoredName::from_path(&Path::from(format!("ns/../ac/{key}"))),
            None
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
