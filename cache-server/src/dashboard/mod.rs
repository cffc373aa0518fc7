//! The dashboard: one self-contained HTML page (inline CSS and SVG, no
//! script, no external asset) rendered from the stats and the deploy
//! history. Rendering is a pure function of its data, so it is tested
//! without a server; everything a client sent is HTML-escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cache_proto::body::{Stats, StoredEvent};

use saved::{DAY_MS, median};

pub mod saved;

/// Days of history the trend chart shows.
pub const TREND_DAYS: i64 = 30;

/// What the page shows.
#[derive(Debug, Clone)]
pub struct DashboardData {
    /// Stored totals (with the quota) and per-protocol counters.
    pub stats: Stats,
    /// Deploy events of the last [`TREND_DAYS`] days, newest first.
    pub events: Vec<StoredEvent>,
    /// Now, unix milliseconds: the chart's last day.
    pub now_ms: i64,
}

/// Escapes text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1.5 GiB`-style sizes.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `2026-11-26` for a day number since the epoch.
fn day_label(day: i64) -> String {
    let time =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis((day * DAY_MS).max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()[..10].to_owned()
}

/// `2026-11-26 14:03` for unix milliseconds.
fn time_label(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    let text = humantime::format_rfc3339_seconds(time).to_string();
    format!("{} {}", &text[..10], &text[11..16])
}

/// Median deploy seconds per day, for hits and for misses.
pub fn daily_medians(events: &[StoredEvent]) -> BTreeMap<i64, (Option<f64>, Option<f64>)> {
    let mut days: BTreeMap<i64, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for event in events {
        let day = event.at_ms.div_euclid(DAY_MS);
        let (hits, misses) = days.entry(day).or_default();
        if event.event.hit {
            hits.push(event.event.seconds);
        } else {
            misses.push(event.event.seconds);
        }
    }
    days.into_iter()
        .map(|(day, (mut hits, mut misses))| (day, (median(&mut hits), median(&mut misses))))
        .collect()
}

fn store_section(out: &mut String, stats: &Stats) {
    let stored = &stats.stored;
    out.push_str("<section id=\"store\"><h2>Store</h2>");
    match stored.quota_bytes {
        Some(quota) if quota > 0 => {
            let share = (stored.stored_bytes as f64 / quota as f64 * 100.0).min(100.0);
            let _ = write!(
                out,
                "<p><span id=\"store-size\">{}</span> of <span id=\"store-quota\">{}</span> quota \
                 (<span id=\"store-share\">{share:.0} %</span>)</p>\
                 <div class=\"bar\"><div style=\"width:{share:.1}%\"></div></div>",
                human_bytes(stored.stored_bytes),
                human_bytes(quota)
            );
        }
        _ => {
            let _ = write!(
                out,
                "<p><span id=\"store-size\">{}</span> stored, no quota</p>",
                human_bytes(stored.stored_bytes)
            );
        }
    }
    let _ = write!(
        out,
        "<p>{} blobs, {} action-cache entries, {} protocol entries; {} uncompressed; \
         {} objects evicted ({}).</p></section>",
        stored.blobs,
        stored.action_entries,
        stored.protocol_entries,
        human_bytes(stored.bytes),
        stored.evicted_objects,
        human_bytes(stored.evicted_bytes)
    );
}

fn protocol_section(out: &mut String, stats: &Stats) {
    out.push_str(
        "<section id=\"protocols\"><h2>Hit rate per protocol</h2><table><thead><tr>\
         <th>protocol</th><th>hits</th><th>misses</th><th>hit rate</th><th></th>\
         <th>writes</th><th>served</th></tr></thead><tbody>",
    );
    for (name, counters) in &stats.protocols {
        let lookups = counters.hits + counters.misses;
        let (rate, width) = if lookups == 0 {
            ("–".to_owned(), 0.0)
        } else {
            let rate = counters.hits as f64 / lookups as f64 * 100.0;
            (format!("{rate:.0} %"), rate)
        };
        let _ = write!(
            out,
            "<tr data-protocol=\"{name}\"><td>{name}</td><td>{}</td><td>{}</td>\
             <td class=\"rate\">{rate}</td><td><div class=\"bar small\"><div style=\"width:{width:.1}%\"></div></div></td>\
             <td>{}</td><td>{}</td></tr>",
            counters.hits,
            counters.misses,
            counters.writes,
            human_bytes(counters.bytes_served),
            name = escape(name)
        );
    }
    out.push_str("</tbody></table></section>");
}

/// How many namespaces the page lists (the largest).
const NAMESPACES_SHOWN: usize = 20;

fn namespace_section(out: &mut String, stats: &Stats) {
    if stats.namespaces.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<section id=\"namespaces\"><h2>Namespaces</h2><p>{} namespaces hold objects; the largest:</p>\
         <table><thead><tr><th>namespace</th><th>objects</th><th>stored</th><th>quota</th><th></th>\
         </tr></thead><tbody>",
        stats.namespaces.len()
    );
    for usage in stats.namespaces.iter().take(NAMESPACES_SHOWN) {
        let (quota, width) = match usage.quota_bytes {
            Some(quota) if quota > 0 => (
                human_bytes(quota),
                (usage.stored_bytes as f64 / quota as f64 * 100.0).min(100.0),
            ),
            _ => ("none".to_owned(), 0.0),
        };
        let _ = write!(
            out,
            "<tr data-namespace=\"{name}\"><td>{name}</td><td>{}</td><td>{}</td><td>{quota}</td>\
             <td><div class=\"bar small\"><div style=\"width:{width:.1}%\"></div></div></td></tr>",
            usage.objects,
            human_bytes(usage.stored_bytes),
            name = escape(&usage.namespace)
        );
    }
    out.push_str("</tbody></table></section>");
}

/// The inline SVG line chart of daily medians, hits and misses.
fn trend_chart(out: &mut String, events: &[StoredEvent], now_ms: i64) {
    out.push_str("<section id=\"trend\"><h2>Deploy time, median per day</h2>");
    let medians = daily_medians(events);
    // A fixed window of the last TREND_DAYS days, today at the right.
    let last = now_ms.div_euclid(DAY_MS);
    let first = last - (TREND_DAYS - 1);
    if medians.is_empty() {
        out.push_str("<p class=\"empty\">No deploy events yet: <code>cachectl</code> reports them when a cache server is configured.</p></section>");
        return;
    }
    let (width, height, left, bottom, top, right) = (720.0, 260.0, 56.0, 36.0, 16.0, 16.0);
    let max = medians
        .values()
        .flat_map(|(hit, miss)| [*hit, *miss])
        .flatten()
        .fold(0.0_f64, f64::max)
        .max(0.001)
        * 1.1;
    let span = (last - first).max(1) as f64;
    let x = |day: i64| left + (day - first) as f64 / span * (width - left - right);
    let y = |seconds: f64| top + (1.0 - seconds / max) * (height - top - bottom);
    let _ = write!(
        out,
        "<svg id=\"trend-chart\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" \
         role=\"img\" aria-label=\"Deploy time per day\" xmlns=\"http://www.w3.org/2000/svg\">\
         <line x1=\"{left}\" y1=\"{base}\" x2=\"{end}\" y2=\"{base}\" class=\"axis\"/>\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{base}\" class=\"axis\"/>\
         <text x=\"{label_x}\" y=\"{top_label}\" class=\"tick\" text-anchor=\"end\">{max_label}</text>\
         <text x=\"{label_x}\" y=\"{base}\" class=\"tick\" text-anchor=\"end\">0 s</text>\
         <text x=\"{left}\" y=\"{date_y}\" class=\"tick\">{first_label}</text>\
         <text x=\"{end}\" y=\"{date_y}\" class=\"tick\" text-anchor=\"end\">{last_label}</text>",
        base = height - bottom,
        end = width - right,
        label_x = left - 6.0,
        top_label = top + 4.0,
        max_label = format_args!("{max:.1} s"),
        date_y = height - bottom + 20.0,
        first_label = day_label(first),
        last_label = day_label(last),
    );
    for (series, pick) in [("hit", 0usize), ("miss", 1usize)] {
        let points: Vec<(i64, f64)> = medians
            .iter()
            .filter(|(day, _)| **day >= first)
            .filter_map(|(day, pair)| {
                let value = if pick == 0 { pair.0 } else { pair.1 };
                value.map(|seconds| (*day, seconds))
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        let path: Vec<String> = points
            .iter()
            .map(|(day, seconds)| format!("{:.1},{:.1}", x(*day), y(*seconds)))
            .collect();
        let _ = write!(
            out,
            "<polyline class=\"series-{series}\" points=\"{}\" fill=\"none\"/>",
            path.join(" ")
        );
        for (day, seconds) in points {
            let _ = write!(
                out,
                "<circle class=\"series-{series}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" data-day=\"{}\" data-seconds=\"{seconds:.3}\">\
                 <title>{} {series}: median {seconds:.2} s</title></circle>",
                x(day),
                y(seconds),
                day_label(day),
                day_label(day)
            );
        }
    }
    out.push_str(
        "</svg><p class=\"legend\"><span class=\"key hit\"></span> base hit \
         <span class=\"key miss\"></span> base built</p></section>",
    );
}

fn slowest_builds(out: &mut String, events: &[StoredEvent]) {
    out.push_str("<section id=\"slowest\"><h2>Slowest recent base builds</h2>");
    let mut builds: Vec<&StoredEvent> = events
        .iter()
        .filter(|e| !e.event.hit && e.event.kind != "layer")
        .collect();
    let build_seconds = |e: &StoredEvent| {
        e.event
            .phases
            .get("build")
            .copied()
            .unwrap_or(e.event.seconds)
    };
    builds.sort_by(|a, b| build_seconds(b).total_cmp(&build_seconds(a)));
    if builds.is_empty() {
        out.push_str("<p class=\"empty\">No base built recently.</p></section>");
        return;
    }
    out.push_str(
        "<table><thead><tr><th>when</th><th>image</th><th>key</th><th>build</th>\
         <th>total</th><th>pushed</th></tr></thead><tbody>",
    );
    for event in builds.into_iter().take(10) {
        let key = event
            .event
            .key
            .as_deref()
            .map_or(String::new(), |key| escape(&key[..key.len().min(16)]));
        let _ = write!(
            out,
            "<tr class=\"build\"><td>{}</td><td class=\"image\">{}</td><td><code>{key}</code></td>\
             <td>{:.1} s</td><td>{:.1} s</td><td>{}</td></tr>",
            time_label(event.at_ms),
            escape(&event.event.image),
            build_seconds(event),
            event.event.seconds,
            human_bytes(event.event.bytes)
        );
    }
    out.push_str("</tbody></table></section>");
}

fn recent_deploys(out: &mut String, events: &[StoredEvent]) {
    if events.is_empty() {
        return;
    }
    out.push_str(
        "<section id=\"recent\"><h2>Recent deploy steps</h2><table><thead><tr><th>when</th>\
         <th>step</th><th>image</th><th>base</th><th>time</th><th>uploaded</th></tr></thead><tbody>",
    );
    for event in events.iter().take(15) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"image\">{}</td><td>{}</td><td>{:.2} s</td><td>{}</td></tr>",
            time_label(event.at_ms),
            escape(&event.event.kind),
            escape(&event.event.image),
            if event.event.hit { "hit" } else { "built" },
            event.event.seconds,
            human_bytes(event.event.bytes)
        );
    }
    out.push_str("</tbody></table></section>");
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:980px;color:#1d2330;background:#fafbfc}\
h1{font-size:22px}.headline{font-size:18px}.headline b{color:#2e9b57}.note{color:#5a6270;font-size:12px}h2{font-size:16px;margin-top:28px}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e3e6ea}th{color:#5a6270;font-weight:600}\
.bar{background:#e3e6ea;border-radius:4px;height:12px;width:100%;max-width:420px}.bar div{background:#2f7de1;height:100%;border-radius:4px}\
.bar.small{width:120px}.axis{stroke:#8a93a1}.tick{font-size:11px;fill:#5a6270}\
polyline.series-hit{stroke:#2e9b57;stroke-width:2}polyline.series-miss{stroke:#d9822b;stroke-width:2}\
circle.series-hit{fill:#2e9b57}circle.series-miss{fill:#d9822b}\
.key{display:inline-block;width:12px;height:12px;border-radius:2px;margin:0 4px 0 12px}.key.hit{background:#2e9b57}.key.miss{background:#d9822b}\
.empty{color:#5a6270}.image{font-family:ui-monospace,monospace;font-size:12px}";

/// What the cache saved, this week and in the window, at the top: the
/// figure a team lead asks for first.
fn saved_section(out: &mut String, events: &[StoredEvent], now_ms: i64) {
    let savings = saved::savings(events, now_ms);
    out.push_str("<section id=\"saved\"><h2>Deploy time the cache saved</h2>");
    if savings.is_empty() {
        out.push_str("<p class=\"empty\">No deploy events yet.</p></section>");
        return;
    }
    let total = |pick: fn(&saved::ImageSaving) -> Option<f64>| -> f64 {
        savings.iter().filter_map(pick).sum()
    };
    let _ = write!(
        out,
        "<p class=\"headline\">This week <b id=\"saved-week\">{}</b> · last {TREND_DAYS} days \
         <b id=\"saved-month\">{}</b></p><table><thead><tr><th>image</th><th>this week</th>\
         <th>last {TREND_DAYS} days</th><th>warm runs</th><th>cold median</th></tr></thead><tbody>",
        saved::duration_label(total(|s| s.saved.0)),
        saved::duration_label(total(|s| s.saved.1)),
    );
    for saving in &savings {
        let label = |seconds: Option<f64>| {
            seconds.map_or_else(
                || "no cold run to compare".to_owned(),
                saved::duration_label,
            )
        };
        let _ = write!(
            out,
            "<tr data-image=\"{image}\"><td>{image}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td></tr>",
            label(saving.saved.0),
            label(saving.saved.1),
            saving.warm_runs.0,
            saving.warm_runs.1,
            saving
                .cold_median
                .map_or_else(|| "–".to_owned(), |s| format!("{s:.1} s")),
            image = escape(&saving.image),
        );
    }
    out.push_str(
        "</tbody></table><p class=\"note\">Each warm run (base found) against the median of \
         the same image's cold runs (base built) in the window.</p></section>",
    );
}

/// The whole page.
pub fn render(data: &DashboardData) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"30\"><title>cache-server</title>\
         <style>{STYLE}</style></head><body><h1>cache-server</h1>"
    );
    saved_section(&mut out, &data.events, data.now_ms);
    store_section(&mut out, &data.stats);
    protocol_section(&mut out, &data.stats);
    namespace_section(&mut out, &data.stats);
    trend_chart(&mut out, &data.events, data.now_ms);
    slowest_builds(&mut out, &data.events);
    recent_deploys(&mut out, &data.events);
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cache_proto::body::{DeployEvent, StoredStats};

    fn event(day: i64, hit: bool, seconds: f64, image: &str) -> StoredEvent {
        StoredEvent {
            id: day,
            at_ms: day * DAY_MS + 3_600_000,
            event: DeployEvent {
                kind: "ensure-base".into(),
                image: image.into(),
                key: Some("ab".repeat(32)),
                hit,
                phases: [("build".to_owned(), seconds)].into(),
                seconds,
                bytes: 2048,
                digest: None,
            },
        }
    }

    #[test]
    fn medians_are_per_day_and_per_outcome() {
        let events = vec![
            event(100, true, 0.1, "r"),
            event(100, true, 0.3, "r"),
            event(100, false, 50.0, "r"),
            event(101, true, 0.2, "r"),
        ];
        let medians = daily_medians(&events);
        assert_eq!(medians[&100], (Some(0.2), Some(50.0)));
        assert_eq!(medians[&101], (Some(0.2), None));
    }

    #[test]
    fn the_page_escapes_what_clients_sent_and_needs_nothing_external() {
        let stats = Stats {
            stored: StoredStats {
                stored_bytes: 512 << 20,
                quota_bytes: Some(1 << 30),
                ..StoredStats::default()
            },
            protocols: BTreeMap::new(),
            namespaces: vec![cache_proto::body::NamespaceStats {
                namespace: "pr-<b>".into(),
                objects: 3,
                bytes: 1 << 20,
                stored_bytes: 1 << 19,
                quota_bytes: Some(1 << 20),
            }],
        };
        let events = vec![event(100, false, 42.0, "<script>alert(1)</script>")];
        let page = render(&DashboardData {
            stats,
            events,
            now_ms: 101 * DAY_MS,
        });
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("pr-<b>"), "{page}");
        assert!(page.contains("data-namespace=\"pr-&lt;b&gt;\""), "{page}");
        assert!(page.contains("&lt;script&gt;"));
        assert!(
            page.contains("512.0 MiB") && page.contains("50 %"),
            "{page}"
        );
        for external in ["src=", "href=", "<link", "<script", "url("] {
            assert!(!page.contains(external), "{external} in the page");
        }
    }
}
