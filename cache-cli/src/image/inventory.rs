//! What a repository (or OCI layout) holds, as `cachectl gc`, `history`
//! and `rollback` need it: every tag with the manifest digest it points at,
//! and for each manifest its index children, blobs and the base digest its
//! config names (`org.opencontainers.image.base.digest`). Registry requests
//! run eight at a time.

use std::collections::{BTreeMap, HashMap};

use super::config::ImageConfig;
use super::manifest::Document;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::{ImageError, Location, Registry};

/// How many registry requests run at once.
const CONCURRENCY: usize = 8;

/// The label naming an app image's base manifest.
pub const BASE_DIGEST_LABEL: &str = "org.opencontainers.image.base.digest";

/// One manifest, as far as retention is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestInfo {
    /// An index's children (manifest digests).
    pub children: Vec<String>,
    /// Config and layer digests with their sizes.
    pub blobs: Vec<(String, u64)>,
    /// The base manifest the config's label names, if any.
    pub base: Option<String>,
    /// The config's labels.
    pub labels: BTreeMap<String, String>,
    /// The manifest's own size.
    pub size: u64,
}

/// Every tag of `location`'s repository or layout and its digest, sorted
/// by tag.
pub async fn tags(
    registry: &Registry,
    location: &Location,
) -> Result<Vec<(String, String)>, ImageError> {
    let mut tagged = match location {
        Location::Layout { layout, .. } => layout.names()?,
        Location::Registry(reference) => {
            let names = registry.list_tags(reference).await?;
            stream::iter(names)
                .map(|tag| async move {
                    let digest = location.at_tag(&tag).resolve(registry).await?;
                    Ok::<_, ImageError>(digest.map(|digest| (tag, digest)))
                })
                .buffer_unordered(CONCURRENCY)
                .try_filter_map(|found| async move { Ok(found) })
                .try_collect()
                .await?
        }
    };
    tagged.sort();
    Ok(tagged)
}

/// Reads manifest `digest` of `location` (and its config's labels).
pub async fn manifest(
    registry: &Registry,
    location: &Location,
    digest: &str,
) -> Result<ManifestInfo, ImageError> {
    let at = location.at_digest(digest);
    let pulled = at.manifest_as_is(registry).await?;
    let mut info = ManifestInfo {
        size: pulled.bytes.len() as u64,
        ..ManifestInfo::default()
    };
    let image = match &pulled.document {
        Document::Index(index) => {
            info.children = index
                .manifests
                .iter()
                .map(|entry| entry.digest.to_string())
                .collect();
            return Ok(info);
        }
        Document::Image(image) => image,
    };
    info.blobs = std::iter::once(&image.config)
        .chain(&image.layers)
        .map(|blob| (blob.digest.to_string(), blob.size))
        .collect();
    let bytes = at
        .small_blob(registry, image.config.digest.as_str())
        .await?;
    // A signature's or an SBOM's config is no image config: no labels.
    if let Ok(config) = ImageConfig::parse(&bytes, &at.tagged()) {
        info.labels = config.labels();
        info.base = info.labels.get(BASE_DIGEST_LABEL).cloned();
    }
    Ok(info)
}

/// Reads every manifest of `digests` and, for indexes, their children.
pub async fn manifests(
    registry: &Registry,
    location: &Location,
    digests: impl IntoIterator<Item = String>,
) -> Result<HashMap<String, ManifestInfo>, ImageError> {
    let mut found: HashMap<String, ManifestInfo> = HashMap::new();
    let mut pending: Vec<String> = digests.into_iter().collect();
    pending.sort();
    pending.dedup();
    while !pending.is_empty() {
        let batch: Vec<(String, ManifestInfo)> = stream::iter(std::mem::take(&mut pending))
            .map(|digest| async move {
                let info = manifest(registry, location, &digest).await?;
                Ok::<_, ImageError>((digest, info))
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        for (digest, info) in batch {
            pending.extend(
                info.children
                    .iter()
                    .filter(|child| !found.contains_key(*child))
                    .cloned(),
            );
            found.insert(digest, info);
        }
        pending.retain(|digest| !found.contains_key(digest));
        pending.sort();
        pending.dedup();
    }
    Ok(found)
}
