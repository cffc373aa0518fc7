//! The current base key, upstream digests resolved: where `hash` and
//! `ensure-base` both start.
//!
//! The upstream tags are asked concurrently with the image's last record
//! (which a miss needs anyway to say what changed, and which holds the
//! digests to keep when an upstream registry cannot be asked), so tracking
//! upstreams costs one round trip, not one per image.

use super::errors::EnsureError;
use crate::cli::settings::BaseSettings;
use crate::client::ClientError;
use crate::client::records::{BaseRecord, RecordStore, latest_key};
use crate::image::Registry;
use crate::key::{BaseKey, InputKind};
use crate::upstream::{self, Policy, Resolved, Source, Upstream};

/// The key of this run and what was learnt computing it.
#[derive(Debug)]
pub struct Current {
    /// The key and its inputs.
    pub base: BaseKey,
    /// The upstream images and the digests the key holds for them.
    pub upstreams: Vec<Resolved>,
    /// The image's last record, when it was fetched (always when there
    /// are upstream tags to resolve): `Some(None)` when there is none.
    pub previous: Option<Option<BaseRecord>>,
    /// What the run should warn about.
    pub warnings: Vec<String>,
}

/// A record lookup's answer, with an unreachable cache turned into `None`
/// plus a warning in `warnings`, unless the cache is required.
pub fn unless_required<T>(
    answer: Result<Option<T>, ClientError>,
    require_cache: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<T>, EnsureError> {
    match answer {
        Ok(record) => Ok(record),
        Err(error) if require_cache => Err(EnsureError::CacheRequired(error)),
        Err(error) => {
            warnings.push(format!("{error}; going on without the cache"));
            Ok(None)
        }
    }
}

/// The image's last base record (see [`unless_required`]).
pub async fn previous_record(
    settings: &BaseSettings,
    records: &RecordStore,
    require_cache: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<BaseRecord>, EnsureError> {
    let answer = records.get(&latest_key(&settings.image.describe())).await;
    unless_required(answer, require_cache, warnings)
}

/// Resolves `upstreams` (from [`BaseSettings::upstreams`]) and computes
/// the key.
pub async fn current(
    settings: &BaseSettings,
    upstreams: &[Upstream],
    records: &RecordStore,
    registry: &Registry,
    require_cache: bool,
) -> Result<Current, EnsureError> {
    let no_guess: Option<fn(BaseKey) -> std::future::Ready<()>> = None;
    let (current, _) = current_with(
        settings,
        upstreams,
        records,
        registry,
        require_cache,
        no_guess,
    )
    .await?;
    Ok(current)
}

/// [`current`], and meanwhile `speculate` on the key the upstreams would
/// give if they had not moved since the image's last record: while their
/// registries are asked, `speculate` (a lookup of that key) runs, so that
/// on a warm deploy the key's lookup costs no round trip of its own. Its
/// answer comes back with the key it was for; the caller uses it only when
/// that is the current key.
pub async fn current_with<T, F>(
    settings: &BaseSettings,
    upstreams: &[Upstream],
    records: &RecordStore,
    registry: &Registry,
    require_cache: bool,
    speculate: Option<impl FnOnce(BaseKey) -> F>,
) -> Result<(Current, Option<(BaseKey, T)>), EnsureError>
where
    F: Future<Output = T>,
{
    let mut warnings = Vec::new();
    let tracked = match settings.upstream {
        Policy::Track => upstreams,
        Policy::Pin => &[],
    };
    let (previous, answers, guessed) = if tracked.is_empty() {
        (None, Vec::new(), None)
    } else {
        let previous_and_guess = async {
            let previous = previous_record(settings, records, require_cache, &mut warnings).await;
            let guessed = match (&previous, speculate) {
                (Ok(Some(record)), Some(speculate)) => match guess(settings, tracked, record) {
                    Some(base) => {
                        let answer = speculate(base.clone()).await;
                        Some((base, answer))
                    }
                    None => None,
                },
                _ => None,
            };
            (previous, guessed)
        };
        let ((previous, guessed), answers) =
            tokio::join!(previous_and_guess, upstream::ask(registry, tracked));
        (Some(previous?), answers?, guessed)
    };
    let known = previous
        .as_ref()
        .and_then(Option::as_ref)
        .map(|record| record.inputs.as_slice())
        .unwrap_or_default();
    let upstreams = upstream::settle(answers, known, &mut warnings)?;
    let base = settings.key(&upstreams)?;
    Ok((
        Current {
            base,
            upstreams,
            previous,
            warnings,
        },
        guessed,
    ))
}

/// The key the `tracked` upstreams would give with the digests `previous`
/// (the image's last base) holds for them; `None` when it holds none for
/// one of them or the key cannot be computed.
fn guess(settings: &BaseSettings, tracked: &[Upstream], previous: &BaseRecord) -> Option<BaseKey> {
    let resolved = tracked
        .iter()
        .map(|upstream| {
            let digest = match upstream.reference.digest() {
                Some(digest) => digest.to_owned(),
                None => previous
                    .inputs
                    .iter()
                    .find(|input| input.kind == InputKind::Upstream && input.name == upstream.name)?
                    .value
                    .clone()?,
            };
            Some(Resolved {
                name: upstream.name.clone(),
                digest,
                source: Source::LastKnown,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    settings.key(&resolved).ok()
}

/// The reference the native builder pulls for `from`: the digest the key
/// holds for it, so that the base is built on exactly the image the key
/// names even if the tag moves meanwhile.
pub fn pinned(from: &str, upstreams: &[Resolved]) -> String {
    match upstreams.iter().find(|resolved| resolved.name == from) {
        Some(resolved) if !from.contains('@') => format!("{from}@{}", resolved.digest),
        _ => from.to_owned(),
    }
}
