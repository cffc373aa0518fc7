//! Deploy events for the cache server's history (`POST /v1/events`), built
//! from the reports of `ensure-base`, `layer` and `build`. Sending is best
//! effort: a server that is down or refuses never fails the deploy.

use std::collections::BTreeMap;

use cache_proto::body::DeployEvent;

use super::outcome::{EnsureReport, LayerReport};

fn phases(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs
        .iter()
        .map(|(name, seconds)| ((*name).to_owned(), *seconds))
        .collect()
}

/// The event of an `ensure-base` run.
pub fn from_ensure(report: &EnsureReport) -> DeployEvent {
    DeployEvent {
        kind: "ensure-base".into(),
        image: report.image.clone(),
        key: Some(report.key.clone()),
        hit: report.hit,
        phases: phases(&[
            ("hash", report.hash_seconds),
            ("lookup", report.lookup_seconds),
            ("build", report.build_seconds),
            ("push", report.push_seconds),
        ]),
        seconds: report.seconds,
        bytes: report.pushed_bytes,
        digest: Some(report.digest.clone()),
    }
}

/// The event of a `layer` run (`hit`: an identical earlier push was reused).
pub fn from_layer(report: &LayerReport) -> DeployEvent {
    DeployEvent {
        kind: "layer".into(),
        image: report.image.clone(),
        key: None,
        hit: report.reused,
        phases: phases(&[
            ("layer", report.layer_seconds),
            ("push", report.push_seconds),
        ]),
        seconds: report.seconds,
        bytes: report.uploaded_bytes,
        digest: Some(report.digest.clone()),
    }
}

/// The event of a `build` run: the base's phases and the app's.
pub fn from_build(base: &EnsureReport, app: &LayerReport) -> DeployEvent {
    DeployEvent {
        kind: "build".into(),
        image: app.image.clone(),
        key: Some(base.key.clone()),
        hit: base.hit,
        phases: phases(&[
            ("hash", base.hash_seconds),
            ("lookup", base.lookup_seconds),
            ("build", base.build_seconds),
            ("push", base.push_seconds + app.push_seconds),
            ("layer", app.layer_seconds),
        ]),
        seconds: base.seconds + app.seconds,
        bytes: base.pushed_bytes + app.uploaded_bytes,
        digest: Some(app.digest.clone()),
    }
}
