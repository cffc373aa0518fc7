//! The dashboard in a real browser: headless Chromium (Debian) loads `/`
//! from a server holding known events and traffic; the test reads what the
//! page shows from the DOM and keeps a screenshot as an artifact
//! (`target/test-artifacts/dashboard.png`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cachectl_e2e::CacheServer;
use cachectl_e2e::data::digest;
use reqwest::StatusCode;
use serde_json::json;

const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
];

/// Runs Chromium with `args` (plus the flags above and a throwaway
/// profile), killed after 90 s; returns its stdout.
fn chromium(profile: &Path, args: &[String]) -> String {
    let mut child = Command::new("chromium")
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium runs (scripts/install-test-deps)");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).ok();
        text
    });
    loop {
        if child.try_wait().expect("waiting for chromium").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().expect("reader thread")
}

fn artifacts_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts folder");
    dir
}

async fn post_event(server: &CacheServer, event: serde_json::Value) {
    let response = server
        .client
        .post(server.url("/v1/events"))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "{event}");
}

fn event(kind: &str, image: &str, hit: bool, seconds: f64, build: f64) -> serde_json::Value {
    json!({
        "kind": kind, "image": image, "key": "ab".repeat(32), "hit": hit,
        "phases": { "hash": 0.001, "lookup": 0.01, "build": build },
        "seconds": seconds, "bytes": 1_048_576,
    })
}

#[tokio::test]
async fn the_dashboard_shows_hit_rates_store_trend_and_slowest_builds_in_chromium() {
    let server = CacheServer::start(
        cachectl_e2e::Backend::Local,
        cachectl_e2e::ServerOptions::args(&["--max-size", "1MiB"]),
    );
    // Traffic: one CAS hit and one miss, so 50 %.
    let blob = vec![7u8; 4096];
    let path = format!("/v1/cas/{}", digest(&blob));
    server
        .client
        .put(server.url(&path))
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    server.client.get(server.url(&path)).send().await.unwrap();
    let absent = format!("/v1/cas/{}", digest(b"absent"));
    server.client.get(server.url(&absent)).send().await.unwrap();

    // Known deploy events: base hits at 0.02/0.04/0.06 s, a layer step
    // at 0.5 s, base builds at 30 and 90 s.
    for seconds in [0.02, 0.04, 0.06] {
        post_event(
            &server,
            event(
                "ensure-base",
                "registry.local/acme/web-base",
                true,
                seconds,
                0.0,
            ),
        )
        .await;
    }
    post_event(
        &server,
        event(
            "ensure-base",
            "registry.local/acme/slow-base",
            false,
            90.0,
            85.0,
        ),
    )
    .await;
    post_event(
        &server,
        event("build", "registry.local/acme/fast-base", false, 30.0, 25.0),
    )
    .await;
    post_event(
        &server,
        event("layer", "registry.local/acme/<b>web</b>", true, 0.5, 0.0),
    )
    .await;

    // The deploy step of one app: two cold runs (40 and 60 s, median 50)
    // and three warm ones (1, 2, 3 s): 49 + 48 + 47 = 144 s saved.
    for (hit, seconds) in [
        (false, 40.0),
        (false, 60.0),
        (true, 1.0),
        (true, 2.0),
        (true, 3.0),
    ] {
        post_event(
            &server,
            event("build", "registry.local/acme/api", hit, seconds, 0.0),
        )
        .await;
    }

    let profile = tempfile::tempdir().unwrap();
    let dom = chromium(profile.path(), &["--dump-dom".to_owned(), server.url("/")]);
    assert!(dom.contains("<svg id=\"trend-chart\""), "{dom}");

    // The time saved comes first, this week and in the window, per image.
    let saved_at = dom.find("id=\"saved\"").expect("a saved section");
    assert!(
        saved_at < dom.find("id=\"store\"").unwrap(),
        "not at the top"
    );
    assert!(dom.contains("id=\"saved-week\">2 min 24 s<"), "{dom}");
    assert!(dom.contains("id=\"saved-month\">2 min 24 s<"), "{dom}");
    let api_row = dom
        .split("<tr data-image=\"registry.local/acme/api\">")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or_else(|| panic!("no api row: {dom}"));
    assert!(
        api_row.contains("3 / 3") && api_row.contains("50.0 s"),
        "{api_row}"
    );
    // Hits without a cold run to compare are not guessed.
    let web_row = dom
        .split("<tr data-image=\"registry.local/acme/web-base\">")
        .nth(1)
        .unwrap_or_default();
    assert!(
        web_row.starts_with("<td>registry.local/acme/web-base</td><td>no cold run"),
        "{web_row}"
    );

    // Hit rate per protocol.
    let cas_row = dom
        .split("<tr data-protocol=\"cas\">")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or_else(|| panic!("no cas row: {dom}"));
    assert!(cas_row.contains("50 %"), "{cas_row}");
    // Store against the quota.
    assert!(dom.contains("id=\"store-quota\">1.0 MiB<"), "{dom}");
    // Trend: today's medians, hits (0.02, 0.04, 0.06, 0.5, 1, 2, 3: 0.5)
    // and misses (30, 40, 60, 90: 50).
    assert!(
        dom.contains("class=\"series-hit\"") && dom.contains("data-seconds=\"0.500\""),
        "{dom}"
    );
    assert!(
        dom.contains("class=\"series-miss\"") && dom.contains("data-seconds=\"50.000\""),
        "{dom}"
    );
    // Slowest base builds, slowest first; layer steps are not builds.
    let slowest = dom.split("id=\"slowest\"").nth(1).unwrap_or_default();
    let slow = slowest.find("acme/slow-base").expect("slow build listed");
    let fast = slowest.find("acme/fast-base").expect("fast build listed");
    assert!(slow < fast, "not slowest first");
    assert!(
        slowest
            .find("85.0 s")
            .is_some_and(|at| at > slow && at < fast),
        "{slowest}"
    );
    // What a client sent is text, not markup.
    assert!(dom.contains("&lt;b&gt;web&lt;/b&gt;") && !dom.contains("<b>web</b>"));

    // A screenshot, kept as an artifact.
    let screenshot = artifacts_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    chromium(
        profile.path(),
        &[
            format!("--screenshot={}", screenshot.display()),
            "--window-size=1100,1300".to_owned(),
            "--hide-scrollbars".to_owned(),
            server.url("/"),
        ],
    );
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a blank screenshot ({} bytes)",
        png.len()
    );
}

#[tokio::test]
async fn events_are_stored_returned_newest_first_and_validated() {
    let server = CacheServer::local();
    post_event(&server, event("ensure-base", "r/a", false, 12.0, 10.0)).await;
    post_event(&server, event("build", "r/b", true, 0.3, 0.0)).await;
    let listed = server.get_json("/v1/events?limit=10", None).await;
    let events = listed["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["image"], "r/b");
    assert_eq!(events[1]["phases"]["build"], 10.0);
    assert!(events[0]["at_ms"].as_i64().unwrap() > 0);
    for bad in [
        json!({"kind": "deploy", "image": "r", "hit": true, "seconds": 1.0}),
        json!({"kind": "build", "image": "r", "hit": true, "seconds": -1.0}),
        json!({"kind": "build", "image": "", "hit": true, "seconds": 1.0}),
        json!({"image": "r"}),
    ] {
        let response = server
            .client
            .post(server.url("/v1/events"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let retained = CacheServer::start(
        cachectl_e2e::Backend::Local,
        cachectl_e2e::ServerOptions::args(&["--events-retention", "2"]),
    );
    for image in ["r/1", "r/2", "r/3"] {
        post_event(&retained, event("layer", image, true, 0.1, 0.0)).await;
    }
    let kept = retained.get_json("/v1/events", None).await;
    let images: Vec<&str> = kept["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["image"].as_str().unwrap())
        .collect();
    assert_eq!(images, vec!["r/3", "r/2"]);
}
