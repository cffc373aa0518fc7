//! Deploy tags: every app image `layer` and `build` push under a tag `T`
//! is also tagged `T.deploy-YYYYMMDDTHHMMSS.mmmZ` (UTC, the time of the
//! push). The registry alone then knows the deploys of `T` in order, keeps
//! each earlier image alive (a registry's garbage collection removes
//! untagged manifests), lets `cachectl rollback` point `T` back at one of
//! them, and lets `cachectl gc` keep the last N.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{ImageError, Location, Registry};

/// What separates the app tag from the time.
const MARK: &str = ".deploy-";

/// Tags are at most 128 characters; the suffix takes 28.
const MAX_APP_TAG: usize = 128 - MARK.len() - "20261130T133051.123Z".len();

/// A deploy tag, parsed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeployTag {
    /// When: milliseconds since the epoch (first, so tags sort by time).
    pub at_ms: u64,
    /// The app tag it is a deploy of.
    pub app_tag: String,
    /// The whole tag.
    pub tag: String,
}

impl DeployTag {
    /// The deploy tag of `app_tag` at `at`; `None` when `app_tag` is too
    /// long to carry the suffix.
    pub fn new(app_tag: &str, at: SystemTime) -> Option<Self> {
        if app_tag.len() > MAX_APP_TAG {
            return None;
        }
        let at_ms = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let time = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at_ms))
            .to_string()
            .replace(['-', ':'], "");
        Some(Self {
            at_ms,
            app_tag: app_tag.to_owned(),
            tag: format!("{app_tag}{MARK}{time}"),
        })
    }

    /// Parses a tag; `None` for a tag that is not a deploy tag.
    pub fn parse(tag: &str) -> Option<Self> {
        let (app_tag, time) = tag.rsplit_once(MARK)?;
        // 20261130T133051.123Z -> 2026-11-30T13:30:51.123Z
        let b = time.as_bytes();
        if app_tag.is_empty() || b.len() != 20 || b[8] != b'T' || b[15] != b'.' || b[19] != b'Z' {
            return None;
        }
        let rfc3339 = format!(
            "{}-{}-{}T{}:{}:{}",
            &time[0..4],
            &time[4..6],
            &time[6..8],
            &time[9..11],
            &time[11..13],
            &time[13..]
        );
        let at = humantime::parse_rfc3339(&rfc3339).ok()?;
        let at_ms = at.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64;
        Some(Self {
            at_ms,
            app_tag: app_tag.to_owned(),
            tag: tag.to_owned(),
        })
    }

    /// When, as RFC 3339.
    pub fn time(&self) -> String {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(self.at_ms)).to_string()
    }
}

/// The app tag of `target`, when it is a tag (not a digest).
pub fn app_tag(target: &Location) -> Option<String> {
    match target {
        Location::Registry(reference) => match (reference.tag(), reference.digest()) {
            (_, Some(_)) => None,
            (tag, None) => Some(tag.unwrap_or("latest").to_owned()),
        },
        Location::Layout { reference, .. } => match reference {
            super::location::LayoutRef::Name(name) => Some(name.clone()),
            super::location::LayoutRef::Digest(_) => None,
        },
    }
}

/// Tags manifest `digest`, just pushed to `target`, with a deploy tag of
/// `target`'s tag: one manifest write when the caller `known`s its bytes and
/// media type, else a read first; no blob moves.
/// `None` when `target` names a digest or a tag too long to extend.
pub async fn tag_deploy(
    registry: &Registry,
    target: &Location,
    digest: &str,
    known: Option<(&[u8], &str)>,
) -> Result<Option<DeployTag>, ImageError> {
    let Some(deploy) = app_tag(target).and_then(|tag| DeployTag::new(&tag, SystemTime::now()))
    else {
        return Ok(None);
    };
    let tagged = target.at_tag(&deploy.tag);
    match known {
        Some((bytes, media_type)) => tagged.push_manifest(registry, bytes, media_type).await?,
        None => {
            let manifest = target.at_digest(digest).manifest_as_is(registry).await?;
            tagged
                .push_manifest(registry, &manifest.bytes, &manifest.media_type)
                .await?
        }
    }
    Ok(Some(deploy))
}

/// The deploys of `target`'s tag, newest first, with their digests.
pub async fn list(
    registry: &Registry,
    target: &Location,
) -> Result<Vec<(DeployTag, String)>, ImageError> {
    let Some(tag) = app_tag(target) else {
        return Ok(Vec::new());
    };
    let mut deploys: Vec<(DeployTag, String)> = super::inventory::tags(registry, target)
        .await?
        .into_iter()
        .filter_map(|(name, digest)| {
            DeployTag::parse(&name)
                .filter(|deploy| deploy.app_tag == tag)
                .map(|deploy| (deploy, digest))
        })
        .collect();
    deploys.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(deploys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_tags_round_trip_and_sort_by_time() {
        let at = UNIX_EPOCH + Duration::from_millis(1_796_045_451_123);
        let deploy = DeployTag::new("prod", at).unwrap();
        assert_eq!(deploy.tag, "prod.deploy-20261130T133051.123Z");
        assert_eq!(DeployTag::parse(&deploy.tag), Some(deploy.clone()));
        assert_eq!(deploy.time(), "2026-11-30T13:30:51.123Z");
        let later = DeployTag::new("prod", at + Duration::from_millis(5)).unwrap();
        assert!(later > deploy);
        // Tags with dots and dashes of their own.
        let dotted = DeployTag::new("v1.2-rc.deploy", at).unwrap();
        assert_eq!(
            DeployTag::parse(&dotted.tag).unwrap().app_tag,
            "v1.2-rc.deploy"
        );
        for other in [
            "prod",
            "base-0123456789abcdef",
            "prod.deploy-yesterday",
            ".deploy-20261130T133051.123Z",
        ] {
            assert_eq!(DeployTag::parse(other), None, "{other}");
        }
        assert!(DeployTag::new(&"x".repeat(101), at).is_none());
        assert!(DeployTag::new(&"x".repeat(100), at).unwrap().tag.len() <= 128);
    }
}
