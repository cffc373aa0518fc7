//! The deploy time the cache saved, per image: each warm run (the base was
//! found) against the median of the same image's cold runs (the base was
//! built) in the window. An image with no cold run in the window has no
//! reference, and is counted as such rather than guessed.

use std::collections::BTreeMap;

use cache_proto::body::StoredEvent;

/// A day, in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// The median of `values` (sorted in place); `None` for none.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    })
}

/// Saved seconds of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSaving {
    /// The image the deploy steps produced.
    pub image: String,
    /// Median seconds of its cold runs in the window, if any.
    pub cold_median: Option<f64>,
    /// Warm runs in the last 7 days and in the window.
    pub warm_runs: (usize, usize),
    /// Seconds saved in the last 7 days and in the window (`None` without
    /// a cold run to compare with).
    pub saved: (Option<f64>, Option<f64>),
}

/// Per image, most saved first: what `events` (newest first, the
/// window's) saved, a week counting back from `now_ms`. `layer` steps
/// are not counted: they never build a base.
pub fn savings(events: &[StoredEvent], now_ms: i64) -> Vec<ImageSaving> {
    let week_start = now_ms - 7 * DAY_MS;
    let mut by_image: BTreeMap<&str, Vec<&StoredEvent>> = BTreeMap::new();
    for event in events.iter().filter(|e| e.event.kind != "layer") {
        by_image.entry(&event.event.image).or_default().push(event);
    }
    let mut out: Vec<ImageSaving> = by_image
        .into_iter()
        .map(|(image, events)| {
            let mut cold: Vec<f64> = events
                .iter()
                .filter(|e| !e.event.hit)
                .map(|e| e.event.seconds)
                .collect();
            let cold_median = median(&mut cold);
            let warm: Vec<&&StoredEvent> = events.iter().filter(|e| e.event.hit).collect();
            let saved_by = |from: i64| {
                cold_median.map(|cold| {
                    warm.iter()
                        .filter(|e| e.at_ms >= from)
                        .map(|e| (cold - e.event.seconds).max(0.0))
                        .sum::<f64>()
                })
            };
            ImageSaving {
                image: image.to_owned(),
                cold_median,
                warm_runs: (
                    warm.iter().filter(|e| e.at_ms >= week_start).count(),
                    warm.len(),
                ),
                saved: (saved_by(week_start), saved_by(i64::MIN)),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.saved
            .1
            .unwrap_or(-1.0)
            .total_cmp(&a.saved.1.unwrap_or(-1.0))
            .then_with(|| a.image.cmp(&b.image))
    });
    out
}

/// `2 h 14 min`, `3 min 05 s`, `12 s`.
pub fn duration_label(seconds: f64) -> String {
    let total = seconds.round().max(0.0) as u64;
    let (hours, minutes, secs) = (total / 3600, total / 60 % 60, total % 60);
    if hours > 0 {
        format!("{hours} h {minutes:02} min")
    } else if minutes > 0 {
        format!("{minutes} min {secs:02} s")
    } else {
        format!("{secs} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cache_proto::body::DeployEvent;

    fn event(days_ago: i64, image: &str, hit: bool, seconds: f64, kind: &str) -> StoredEvent {
        let now = 100 * DAY_MS;
        StoredEvent {
            id: 0,
            at_ms: now - days_ago * DAY_MS - 1,
            event: DeployEvent {
                kind: kind.into(),
                image: image.into(),
                key: None,
                hit,
                phases: BTreeMap::new(),
                seconds,
                bytes: 0,
                digest: None,
            },
        }
    }

    #[test]
    fn warm_runs_are_counted_against_the_images_cold_median() {
        let events = vec![
            event(0, "web", true, 1.0, "build"),
            event(2, "web", true, 2.0, "build"),
            event(10, "web", true, 3.0, "build"),
            event(12, "web", false, 40.0, "build"),
            event(20, "web", false, 60.0, "build"),
            // A warm run slower than the cold median saves nothing, not less.
            event(1, "web", true, 70.0, "build"),
            // Layer steps are not deploys of a base.
            event(1, "web", true, 0.1, "layer"),
            // Only warm runs: no reference.
            event(1, "api", true, 0.5, "build"),
        ];
        let saved = savings(&events, 100 * DAY_MS);
        assert_eq!(saved.len(), 2);
        let web = &saved[0];
        assert_eq!(web.image, "web");
        assert_eq!(web.cold_median, Some(50.0));
        assert_eq!(web.warm_runs, (3, 4));
        assert_eq!(web.saved, (Some(49.0 + 48.0), Some(49.0 + 48.0 + 47.0)));
        assert_eq!(saved[1].saved, (None, None));
        assert_eq!(duration_label(144.0), "2 min 24 s");
        assert_eq!(duration_label(8040.0), "2 h 14 min");
        assert_eq!(duration_label(12.4), "12 s");
    }
}
