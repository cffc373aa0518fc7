//! What putting an app on its base cost: blobs uploaded, mounted or
//! already there, and how long each phase took; the report made of them.

use std::time::Instant;

use crate::image::Location;
use crate::image::registry::Transfer;
use crate::report::outcome::LayerReport;

/// What moving the blobs of an image cost: bytes uploaded, blobs mounted
/// and blobs the target already had.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Moved {
    pub(super) uploaded: u64,
    pub(super) mounted: usize,
    pub(super) skipped: usize,
}

impl Moved {
    pub(super) fn add(&mut self, transfer: Transfer) {
        match transfer {
            Transfer::Present => self.skipped += 1,
            Transfer::Mounted => self.mounted += 1,
            Transfer::Copied(bytes) => self.uploaded += bytes,
        }
    }

    pub(super) fn add_pushed(&mut self, bytes: u64) {
        self.add(if bytes == 0 {
            Transfer::Present
        } else {
            Transfer::Copied(bytes)
        });
    }
}

/// When each phase started and how long packing took.
pub(super) struct Timing {
    pub(super) started: Instant,
    pub(super) layer_seconds: f64,
    pub(super) push_started: Option<Instant>,
}

impl Timing {
    /// A run that packed for `layer_seconds` and began pushing at
    /// `push_started`.
    pub(super) fn pushed(started: Instant, layer_seconds: f64, push_started: Instant) -> Self {
        Self {
            started,
            layer_seconds,
            push_started: Some(push_started),
        }
    }
}

impl LayerReport {
    /// The report of an app image pushed to `target` as `digest`.
    pub(super) fn new(
        target: &Location,
        digest: String,
        base: &Location,
        layer: (&str, u64),
        moved: Moved,
        timing: Timing,
    ) -> Self {
        Self {
            reused: false,
            image: target.tagged(),
            reference: target.pinned(&digest),
            digest,
            base: base.tagged(),
            layer_digest: layer.0.to_owned(),
            layer_bytes: layer.1,
            uploaded_bytes: moved.uploaded,
            mounted: moved.mounted,
            skipped: moved.skipped,
            layer_seconds: timing.layer_seconds,
            push_seconds: timing
                .push_started
                .map_or(0.0, |push| push.elapsed().as_secs_f64()),
            seconds: timing.started.elapsed().as_secs_f64(),
            deploy_tag: None,
            warnings: Vec::new(),
            manifest: None,
            app_layers: None,
        }
    }
}
