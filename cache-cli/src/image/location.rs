//! One image by where it lives: a registry reference or a name in a local
//! OCI image layout. `cachectl layer` reads its base from one location and
//! writes the app image to another, in any combination. Blobs move between
//! them without a round trip through memory: registry to registry by HEAD,
//! cross-repository mount or a streamed copy; between a layout and a registry
//! as files; layout to layout by hard link (or copy).

use std::path::{Path, PathBuf};

use oci_client::Reference;

use super::error::ImageError;
use super::layout::{Layout, LayoutError};
use super::oci::{self, Platform};
use super::registry::{
    Presence, PulledManifest, Registry, RegistryError, Transfer, parse_reference,
};

/// What a layout location points at: a name in `index.json` or a manifest
/// by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutRef {
    /// `org.opencontainers.image.ref.name`.
    Name(String),
    /// A manifest digest.
    Digest(String),
}

/// An image location.
#[derive(Debug, Clone)]
pub enum Location {
    /// `[registry/]repository[:tag][@digest]`.
    Registry(Reference),
    /// `oci:DIR[:NAME]` (NAME defaults to `latest`).
    Layout {
        /// The layout.
        layout: Layout,
        /// The image in it.
        reference: LayoutRef,
    },
}

impl Location {
    /// Parses `oci:DIR[:NAME]` or a registry reference; a reference without
    /// tag or digest means `:latest`. Relative layout folders are taken
    /// from `root`.
    pub fn parse(text: &str, root: &Path) -> Result<Self, ImageError> {
        let Some(rest) = text.strip_prefix("oci:") else {
            return Ok(Self::Registry(parse_reference(text)?));
        };
        let (dir, name) = match rest.rsplit_once(':') {
            Some((dir, name)) if !name.contains('/') && !dir.is_empty() => (dir, name),
            _ => (rest, "latest"),
        };
        if dir.is_empty() || name.is_empty() {
            return Err(ImageError::Layout(LayoutError::Invalid {
                path: text.to_owned(),
                message: "an oci: image is oci:DIR[:NAME], e.g. oci:./build/oci:web".into(),
            }));
        }
        let dir: PathBuf = root
            .join(dir)
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect();
        Ok(Self::Layout {
            layout: Layout::new(dir),
            reference: LayoutRef::Name(name.to_owned()),
        })
    }

    /// The registry host, for a registry location.
    pub fn registry_host(&self) -> Option<&str> {
        match self {
            Self::Registry(reference) => Some(reference.registry()),
            Self::Layout { .. } => None,
        }
    }

    /// The repository or layout, without tag or digest: the image's name
    /// (`registry/repository`, `oci:DIR`).
    pub fn name(&self) -> String {
        match self {
            Self::Registry(reference) => {
                format!("{}/{}", reference.registry(), reference.repository())
            }
            Self::Layout { layout, .. } => format!("oci:{}", layout.dir().display()),
        }
    }

    /// The tagged form, as given (`registry/repository:tag`, `oci:DIR:NAME`).
    pub fn tagged(&self) -> String {
        match self {
            Self::Registry(reference) => match (reference.tag(), reference.digest()) {
                (None, Some(digest)) => format!("{}@{digest}", self.name()),
                (tag, _) => format!("{}:{}", self.name(), tag.unwrap_or("latest")),
            },
            Self::Layout { reference, .. } => match reference {
                LayoutRef::Name(name) => format!("{}:{name}", self.name()),
                LayoutRef::Digest(digest) => format!("{}@{digest}", self.name()),
            },
        }
    }

    /// The base name recorded in an image's labels: the repository, or for a
    /// layout the image's name only (a host path would make the image
    /// differ between checkouts).
    pub fn label_name(&self) -> String {
        match self {
            Self::Registry(_) => self.name(),
            Self::Layout { reference, .. } => match reference {
                LayoutRef::Name(name) => name.clone(),
                LayoutRef::Digest(digest) => digest.clone(),
            },
        }
    }

    /// The pullable reference of manifest `digest` pushed here: by digest in
    /// a registry, by name in a layout (the form `skopeo` and `umoci` read).
    pub fn pinned(&self, digest: &str) -> String {
        match self {
            Self::Registry(_) => format!("{}@{digest}", self.name()),
            Self::Layout { .. } => self.tagged(),
        }
    }

    /// The same repository or layout, at `tag`.
    pub fn at_tag(&self, tag: &str) -> Self {
        match self {
            Self::Registry(reference) => Self::Registry(Reference::with_tag(
                reference.registry().to_owned(),
                reference.repository().to_owned(),
                tag.to_owned(),
            )),
            Self::Layout { layout, .. } => Self::Layout {
                layout: layout.clone(),
                reference: LayoutRef::Name(tag.to_owned()),
            },
        }
    }

    /// The same repository or layout, at manifest `digest`.
    pub fn at_digest(&self, digest: &str) -> Self {
        match self {
            Self::Registry(reference) => Self::Registry(reference.clone_with_digest(digest.into())),
            Self::Layout { layout, .. } => Self::Layout {
                layout: layout.clone(),
                reference: LayoutRef::Digest(digest.to_owned()),
            },
        }
    }

    /// The manifest digest this location points at, or `None`.
    pub async fn resolve(&self, registry: &Registry) -> Result<Option<String>, ImageError> {
        match self {
            Self::Registry(reference) => Ok(registry.resolve(reference).await?),
            Self::Layout { layout, reference } => match reference {
                LayoutRef::Name(name) => Ok(layout.resolve(name)?),
                LayoutRef::Digest(digest) => Ok(layout.has_blob(digest).then(|| digest.clone())),
            },
        }
    }

    /// Whether this registry repository is known to hold every layer of
    /// the image whose manifest is `manifest_digest` (see
    /// [`super::known_layers`]); never for a layout, whose blobs are local
    /// files to look at.
    pub fn layers_known(&self, registry: &Registry, manifest_digest: &str) -> bool {
        match self {
            Self::Registry(reference) => registry.layers_known(reference, manifest_digest),
            Self::Layout { .. } => false,
        }
    }

    /// Marks (`true`) or unmarks this registry repository as holding every
    /// layer of `manifest_digest`; nothing for a layout.
    pub fn set_layers_known(&self, registry: &Registry, manifest_digest: &str, known: bool) {
        if let Self::Registry(reference) = self {
            registry.set_layers_known(reference, manifest_digest, known);
        }
    }

    /// Opens upload sessions ahead for an app of `tree` (see
    /// [`Registry::open_uploads_ahead`]); nothing for a layout.
    pub async fn open_uploads_ahead(
        &self,
        registry: &Registry,
        tree: impl Future<Output = Option<[u8; 32]>>,
    ) {
        if let Self::Registry(reference) = self {
            registry.open_uploads_ahead(reference, tree).await;
        }
    }

    /// Remembers that the app of `tree` (its layer `layer_bytes`) is here
    /// now (see [`Registry::note_pushed_tree`]); nothing for a layout.
    pub fn note_pushed_tree(&self, registry: &Registry, tree: &[u8; 32], layer_bytes: u64) {
        if let Self::Registry(reference) = self {
            registry.note_pushed_tree(reference, tree, layer_bytes);
        }
    }

    /// Whether the repository or layout holds manifest `digest`.
    pub async fn has_manifest(
        &self,
        registry: &Registry,
        digest: &str,
    ) -> Result<bool, ImageError> {
        Ok(self.at_digest(digest).resolve(registry).await?.is_some())
    }

    /// The manifest or index here, as it is.
    pub async fn manifest_as_is(&self, registry: &Registry) -> Result<PulledManifest, ImageError> {
        let (layout, reference) = match self {
            Self::Registry(reference) => {
                return Ok(registry.pull_manifest_as_is(reference).await?);
            }
            Self::Layout { layout, reference } => (layout, reference),
        };
        let digest = match reference {
            LayoutRef::Digest(digest) => digest.clone(),
            LayoutRef::Name(name) => layout.resolve(name)?.ok_or_else(|| {
                ImageError::Layout(LayoutError::Invalid {
                    path: layout.dir().display().to_string(),
                    message: format!("no image named {name:?} in index.json"),
                })
            })?,
        };
        let bytes = layout.read_blob(&digest)?;
        PulledManifest::parse(bytes.into(), &digest, &self.tagged()).map_err(|invalid| {
            ImageError::Layout(LayoutError::Invalid {
                path: self.tagged(),
                message: invalid.to_string(),
            })
        })
    }

    /// The image manifest here; an index is resolved to `platform`'s image.
    pub async fn manifest(
        &self,
        registry: &Registry,
        platform: &Platform,
    ) -> Result<PulledManifest, ImageError> {
        let pulled = self.manifest_as_is(registry).await?;
        let Some(index) = pulled.index() else {
            return Ok(pulled);
        };
        let digest = index
            .entry_for(platform)
            .map(|entry| entry.digest.as_str())
            .ok_or_else(|| {
                ImageError::Registry(RegistryError::NotFound {
                    registry: self.name(),
                    message: format!("{} has no image for platform {platform}", self.tagged()),
                })
            })?;
        self.at_digest(digest).manifest_as_is(registry).await
    }

    /// Whether the repository or layout holds blob `digest`.
    pub async fn has_blob(&self, registry: &Registry, digest: &str) -> Result<bool, ImageError> {
        match self {
            Self::Registry(reference) => Ok(registry.has_blob(reference, digest).await?),
            Self::Layout { layout, .. } => Ok(layout.blob_path(digest)?.is_file()),
        }
    }

    /// A small blob (an image config) into memory.
    pub async fn small_blob(
        &self,
        registry: &Registry,
        digest: &str,
    ) -> Result<Vec<u8>, ImageError> {
        match self {
            Self::Registry(reference) => Ok(registry.pull_small_blob(reference, digest).await?),
            Self::Layout { layout, .. } => Ok(layout.read_blob(digest)?),
        }
    }

    /// Makes blob `digest` (`size` bytes) of `source` present here.
    pub async fn receive_blob(
        &self,
        registry: &Registry,
        source: &Location,
        digest: &str,
        size: u64,
    ) -> Result<Transfer, ImageError> {
        match (self, source) {
            (Self::Registry(target), Self::Registry(from)) => {
                Ok(registry.copy_blob(from, target, digest, size).await?)
            }
            (Self::Registry(_), Self::Layout { layout, .. }) => {
                let pushed = self
                    .push_blob_file(
                        registry,
                        digest,
                        &layout.blob_path(digest)?,
                        Presence::Unknown,
                    )
                    .await?;
                Ok(if pushed == 0 {
                    Transfer::Present
                } else {
                    Transfer::Copied(pushed)
                })
            }
            (Self::Layout { layout, .. }, _) if layout.has_blob(digest) => Ok(Transfer::Present),
            (Self::Layout { layout, .. }, Self::Layout { layout: from, .. }) => {
                layout.put_blob_file(digest, &from.blob_path(digest)?)?;
                Ok(Transfer::Copied(size))
            }
            (Self::Layout { layout, .. }, Self::Registry(from)) => {
                let staged = layout.staging_file()?;
                registry
                    .pull_blob_to_file(from, digest, staged.path())
                    .await?;
                layout.put_blob_file(digest, staged.path())?;
                Ok(Transfer::Copied(size))
            }
        }
    }

    /// Stores `file` as blob `digest` unless it is here (a registry is
    /// asked first as `presence` says); returns the bytes written.
    pub async fn push_blob_file(
        &self,
        registry: &Registry,
        digest: &str,
        file: &Path,
        presence: Presence,
    ) -> Result<u64, ImageError> {
        match self {
            Self::Registry(target) => Ok(registry
                .push_blob_file(target, digest, file, presence)
                .await?),
            Self::Layout { layout, .. } if layout.has_blob(digest) => Ok(0),
            Self::Layout { layout, .. } => {
                layout.put_blob_file(digest, file)?;
                Ok(std::fs::metadata(file).map(|m| m.len()).unwrap_or(0))
            }
        }
    }

    /// Stores small `bytes` as a blob unless they are here (a registry is
    /// asked first as `presence` says); returns the bytes written.
    pub async fn push_blob_bytes(
        &self,
        registry: &Registry,
        bytes: &[u8],
        presence: Presence,
    ) -> Result<u64, ImageError> {
        match self {
            Self::Registry(target) => Ok(registry.push_blob_bytes(target, bytes, presence).await?),
            Self::Layout { layout, .. } if layout.has_blob(&oci::sha256_digest(bytes)) => Ok(0),
            Self::Layout { layout, .. } => {
                layout.put_blob(bytes)?;
                Ok(bytes.len() as u64)
            }
        }
    }

    /// Stores a manifest (or index) and points this location's tag or name at it.
    pub async fn push_manifest(
        &self,
        registry: &Registry,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), ImageError> {
        match self {
            Self::Registry(target) => Ok(registry.push_manifest(target, bytes, media_type).await?),
            Self::Layout { layout, reference } => {
                match reference {
                    LayoutRef::Name(name) => layout.put_manifest(bytes, media_type, &[name])?,
                    LayoutRef::Digest(_) => layout.put_blob(bytes)?,
                };
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_layouts_and_registry_references() {
        let root = Path::new("/project");
        let layout = Location::parse("oci:./build/oci:web", root).unwrap();
        assert_eq!(layout.tagged(), "oci:/project/build/oci:web");
        assert_eq!(layout.pinned("sha256:aa"), "oci:/project/build/oci:web");
        let unnamed = Location::parse("oci:/tmp/oci", root).unwrap();
        assert_eq!(unnamed.tagged(), "oci:/tmp/oci:latest");
        let registry = Location::parse("127.0.0.1:5000/acme/web", root).unwrap();
        assert_eq!(registry.tagged(), "127.0.0.1:5000/acme/web:latest");
        assert_eq!(
            registry.pinned("sha256:aa"),
            "127.0.0.1:5000/acme/web@sha256:aa"
        );
        assert_eq!(registry.registry_host(), Some("127.0.0.1:5000"));
        let digest = oci::sha256_digest(b"");
        let pinned = Location::parse(&format!("127.0.0.1:5000/acme/web@{digest}"), root).unwrap();
        assert_eq!(pinned.tagged(), format!("127.0.0.1:5000/acme/web@{digest}"));
        assert!(Location::parse("oci:", root).is_err());
    }

    #[tokio::test]
    async fn a_layout_image_reads_back_by_name_and_by_digest() {
        let folder = tempfile::tempdir().unwrap();
        let location = Location::parse("oci:oci:app", folder.path()).unwrap();
        let registry = Registry::new(Default::default(), &[]);
        assert_eq!(location.resolve(&registry).await.unwrap(), None);
        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
        location
            .push_manifest(&registry, manifest, oci::OCI_MANIFEST)
            .await
            .unwrap();
        let digest = oci::sha256_digest(manifest);
        assert_eq!(
            location.resolve(&registry).await.unwrap(),
            Some(digest.clone())
        );
        assert!(location.has_manifest(&registry, &digest).await.unwrap());
        let pulled = location.manifest_as_is(&registry).await.unwrap();
        assert_eq!(pulled.digest.as_str(), digest);
        assert_eq!(pulled.media_type, oci::OCI_MANIFEST);
    }
}
