//! What a repository (or OCI layout) holds, as `cachectl gc`, `history`
//! and `rollback` need it: every tag with the manifest digest it points at,
//! and for each manifest its index children, blobs and the base digest its
//! config names (`org.opencontainers.image.base.digest`). Registry requests
//! run eight at a time.

use std::collections::{BTreeMap, HashMap};

use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;

use super::{ImageError, Location, Registry, oci};

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
    if oci::is_index(&pulled.media_type) {
        info.children = pulled.json["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| entry["digest"].as_str().map(str::to_owned))
            .collect();
        return Ok(info);
    }
    let descriptors = std::iter::once(&pulled.json["config"])
        .chain(pulled.json["layers"].as_array().into_iter().flatten());
    for descriptor in descriptors {
        if let Some(blob) = descriptor["digest"].as_str() {
            info.blobs
                .push((blob.to_owned(), descriptor["size"].as_u64().unwrap_or(0)));
        }
    }
    if let Some(config) = pulled.json["config"]["digest"].as_str() {
        let bytes = at.small_blob(registry, config).await?;
        let config: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if let Some(labels) = config["config"]["Labels"].as_object() {
            info.labels = labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect();
        }
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
