//! Upstream-aware base keys, end to end: a new image pushed under the tag a
//! base is built `FROM` (the patched `python:3.11-slim` case) makes a new
//! base with the native builder and with buildah, `hash --explain` and the
//! miss name the digests; a digest-pinned upstream costs no request; an
//! unreachable upstream registry keeps the last known digest with a
//! warning. Real docker-registry, buildah, skopeo and umoci.

use cachectl_e2e::buildah::{borrowed, counting_buildah};
use cachectl_e2e::cachectl::Project;
use cachectl_e2e::data::files_under;
use cachectl_e2e::fault_proxy::{Fault, FaultProxy, LATENCY};
use cachectl_e2e::registry::{RegistryServer, push_busybox_release, skopeo_inspect, unpack};

fn digest_of(reference: &str) -> String {
    skopeo_inspect(&format!("docker://{reference}"), false)["Digest"]
        .as_str()
        .expect("a digest")
        .to_owned()
}

#[test]
fn a_new_image_under_the_from_tag_rebuilds_the_native_base_and_explain_names_it() {
    let upstream = RegistryServer::start();
    let registry = RegistryServer::start();
    let from = push_busybox_release(&upstream, "library/python", "3.11-slim", Some("1"));
    let old = digest_of(&from);
    let image = format!("{}/acme/web-base", registry.host());
    let project = Project::native(&image, Some(&from));

    let built = project
        .cachectl(&["ensure-base", "--json"], &[])
        .success()
        .json();
    assert_eq!(built["source"], "built");
    let hit = project
        .cachectl(&["ensure-base", "--json"], &[])
        .success()
        .json();
    assert_eq!(
        (hit["hit"].as_bool(), &hit["key"]),
        (Some(true), &built["key"])
    );
    let unchanged = project.cachectl(&["hash", "--explain"], &[]).success();
    assert!(
        unchanged
            .stderr
            .contains(&format!("upstream {from}  {old}")),
        "{}",
        unchanged.stderr
    );

    // The upstream publishes a patched image under the same tag.
    push_busybox_release(&upstream, "library/python", "3.11-slim", Some("2"));
    let new = digest_of(&from);
    assert_ne!(new, old);
    let explain = project.cachectl(&["hash", "--explain"], &[]).success();
    let line = format!("changed upstream {from}  {old} -> {new}");
    assert!(explain.stderr.contains(&line), "{}", explain.stderr);
    let rebuilt = project.cachectl(&["ensure-base", "--json"], &[]).success();
    assert!(rebuilt.stderr.contains(&line), "{}", rebuilt.stderr);
    let report = rebuilt.json();
    assert_eq!(report["source"], "built");
    assert_ne!(report["key"], built["key"]);
    assert_eq!(
        (
            &report["changed"][0]["input"],
            &report["changed"][0]["from"],
            &report["changed"][0]["to"]
        ),
        (
            &serde_json::json!(format!("upstream {from}")),
            &serde_json::json!(old),
            &serde_json::json!(new)
        )
    );
    assert_eq!(project.builds(), 2);
    // The new base is built on the new upstream image.
    let unpacked = tempfile::tempdir().unwrap();
    let key16 = &report["key"].as_str().unwrap()[..16];
    let rootfs = unpack(&format!("docker://{image}:base-{key16}"), unpacked.path()).join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/release")).unwrap(),
        "2\n"
    );
    assert!(rootfs.join("opt/deps/requirements.txt").is_file());

    // The upstream registry goes away: the last known digest is kept, the
    // base is a hit, and the run says so.
    drop(upstream);
    let offline = project.cachectl(&["ensure-base", "--json"], &[]).success();
    let offline_report = offline.json();
    assert_eq!(
        (offline_report["hit"].as_bool(), &offline_report["key"]),
        (Some(true), &report["key"])
    );
    assert!(
        offline.stderr.contains("using its last known digest"),
        "{}",
        offline.stderr
    );
    assert!(
        offline_report["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains(&new)),
        "{offline_report}"
    );
    assert_eq!(project.builds(), 2, "an unreachable upstream rebuilt");

    // Under `pin` nothing is asked and the key does not follow digests.
    let pinned = project
        .cachectl(&["hash", "--json", "--upstream", "pin"], &[])
        .success()
        .json();
    assert!(
        pinned["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|input| input["kind"] != "upstream"),
        "{pinned}"
    );
    assert!(
        pinned["warnings"].as_array().unwrap().is_empty(),
        "{pinned}"
    );
}

#[test]
fn an_upstream_pinned_by_digest_costs_no_request_and_an_unknown_one_fails_clearly() {
    let upstream = RegistryServer::start();
    let registry = RegistryServer::start();
    let tagged = push_busybox_release(&upstream, "library/python", "3.12", Some("1"));
    let digest = digest_of(&tagged);
    let pinned = format!("{tagged}@{digest}");
    let image = format!("{}/acme/pinned-base", registry.host());
    let project = Project::native(&image, Some(&pinned));
    let built = project
        .cachectl(&["ensure-base", "--json"], &[])
        .success()
        .json();
    assert_eq!(built["source"], "built");

    // With the upstream registry gone, a pinned reference still hits
    // without a warning: nothing was asked.
    drop(upstream);
    let hit = project.cachectl(&["ensure-base", "--json"], &[]).success();
    let report = hit.json();
    assert_eq!(
        (report["hit"].as_bool(), &report["key"]),
        (Some(true), &built["key"])
    );
    assert!(
        report["warnings"].as_array().unwrap().is_empty(),
        "{report}"
    );

    // A tag whose registry cannot be asked, with no earlier base recording
    // its digest: exit 3, naming the way out.
    let other = Project::native(&image, Some(&tagged));
    let refused = other.cachectl(&["ensure-base"], &[]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("--upstream pin"),
        "{}",
        refused.stderr
    );
    assert_eq!(other.builds(), 0);

    // A tag that does not exist: exit 1, naming it.
    let missing = Project::native(&image, Some(&format!("{}/library/nope:1", registry.host())));
    let run = missing.cachectl(&["ensure-base"], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("library/nope:1 does not exist"),
        "{}",
        run.stderr
    );
}

/// Bytes of every blob (layers, configs, manifests) a registry stores.
fn stored_blob_bytes(registry: &RegistryServer) -> u64 {
    let blobs = registry.storage().join("docker/registry/v2/blobs");
    files_under(&blobs)
        .iter()
        .filter(|path| path.file_name().is_some_and(|name| name == "data"))
        .map(|path| std::fs::metadata(path).unwrap().len())
        .sum()
}

#[test]
fn buildah_rebuilds_when_the_second_stage_from_moves_and_reports_the_bytes_it_pushed() {
    let upstream = RegistryServer::start();
    let registry = RegistryServer::start();
    let builder = push_busybox_release(&upstream, "library/busybox", "1", Some("builder-1"));
    let runtime = push_busybox_release(&upstream, "library/busybox", "2", Some("runtime-1"));
    let image = format!("{}/acme/web-base", registry.host());
    let project = Project::new();
    project.write("requirements.txt", "flask==3.0.3\n");
    // Both registries speak plain HTTP; nothing but cachectl's own
    // settings (loopback is plain HTTP) tells buildah so.
    project.write(
        "Dockerfile.base",
        &format!(
            "ARG REGISTRY={}\nFROM ${{REGISTRY}}/library/busybox:1 AS build\nRUN echo compiled > /artifact\n\
             FROM ${{REGISTRY}}/library/busybox:2\nCOPY --from=build /artifact /opt/artifact\n\
             COPY requirements.txt /opt/requirements.txt\n",
            upstream.host()
        ),
    );
    project.write(
        "cachectl.toml",
        &format!(
            "[base]\nimage = \"{image}\"\nmanifests = [\"requirements.txt\", \"Dockerfile.base\"]\n\
             builder = \"buildah\"\ndockerfile = \"Dockerfile.base\"\nplatform = \"linux/amd64\"\n"
        ),
    );
    let scratch = tempfile::tempdir().unwrap();
    let env_owned = counting_buildah(&project.marker(), scratch.path());
    let env = borrowed(&env_owned);

    let explain = project.cachectl(&["hash", "--explain"], &env).success();
    for (reference, digest) in [
        (&builder, digest_of(&builder)),
        (&runtime, digest_of(&runtime)),
    ] {
        assert!(
            explain
                .stderr
                .contains(&format!("upstream {reference}  {digest}")),
            "{}",
            explain.stderr
        );
    }
    // Listed as a manifest too, the Dockerfile counts once, as the recipe.
    assert!(
        !explain.stderr.contains("manifest Dockerfile.base"),
        "{}",
        explain.stderr
    );

    let built = project
        .cachectl(&["ensure-base", "--json"], &env)
        .success()
        .json();
    assert_eq!(built["source"], "built");
    // The target registry started empty: what it stores is what it received.
    assert_eq!(
        built["pushed_bytes"].as_u64(),
        Some(stored_blob_bytes(&registry)),
        "{built}"
    );
    assert!(built["pushed_bytes"].as_u64().unwrap() > 100_000, "{built}");
    let hit = project
        .cachectl(&["ensure-base", "--json"], &env)
        .success()
        .json();
    assert_eq!(
        (hit["hit"].as_bool(), &hit["key"]),
        (Some(true), &built["key"])
    );
    assert_eq!(project.builds(), 1);

    // A patched runtime image under the same tag: the second stage's FROM
    // moved, so the base is rebuilt on it.
    let old = digest_of(&runtime);
    push_busybox_release(&upstream, "library/busybox", "2", Some("runtime-2"));
    let new = digest_of(&runtime);
    let rebuilt = project.cachectl(&["ensure-base", "--json"], &env).success();
    let line = format!("changed upstream {runtime}  {old} -> {new}");
    assert!(rebuilt.stderr.contains(&line), "{}", rebuilt.stderr);
    let report = rebuilt.json();
    assert_eq!(report["source"], "built");
    assert_eq!(report["changed"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(project.builds(), 2);
    let key16 = &report["key"].as_str().unwrap()[..16];
    let unpacked = tempfile::tempdir().unwrap();
    let rootfs = unpack(&format!("docker://{image}:base-{key16}"), unpacked.path()).join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/release")).unwrap(),
        "runtime-2\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("opt/artifact")).unwrap(),
        "compiled\n"
    );
}

#[test]
fn the_first_run_after_a_key_format_change_says_so_instead_of_nothing_changed() {
    let project = Project::native("oci:./build/oci", None);
    let built = project
        .cachectl(&["ensure-base", "--json"], &[])
        .success()
        .json();
    let key = built["key"].as_str().unwrap().to_owned();
    // What an earlier cachectl left: the same inputs recorded under another
    // key (its format's), and no tag for today's key.
    let old_key = "ab".repeat(32);
    for path in files_under(&project.path().join(".cachectl/records")) {
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace(&key, &old_key)).unwrap();
    }
    let index_path = project.path().join("build/oci/index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    index["manifests"].as_array_mut().unwrap().retain(|entry| {
        entry["annotations"]["org.opencontainers.image.ref.name"] != format!("base-{}", &key[..16])
    });
    std::fs::write(&index_path, index.to_string()).unwrap();

    let rebuilt = project.cachectl(&["ensure-base", "--json"], &[]).success();
    assert!(
        rebuilt
            .stderr
            .contains("the key's format changed since the last base"),
        "{}",
        rebuilt.stderr
    );
    assert_eq!(rebuilt.json()["key"], key.as_str());
    assert_eq!(project.builds(), 2);
}

/// A warm `ensure-base` against a distant registry costs one round trip:
/// the registry's probe, the `from` tag and the base's key (the one the
/// `from` digest gave last time) are asked together, not one after the
/// other (three round trips before).
#[test]
fn a_warm_ensure_base_on_a_distant_registry_takes_one_round_trip() {
    let registry = RegistryServer::start();
    let proxy = FaultProxy::start(registry.address());
    let distant = proxy.address().to_string();
    let from = push_busybox_release(&registry, "library/python", "3.11-slim", None)
        .replace(&registry.host(), &distant);
    let image = format!("{distant}/acme/web-base");
    let project = Project::native(&image, Some(&from));
    let built = project
        .cachectl(&["ensure-base", "--json"], &[])
        .success()
        .json();
    assert_eq!(built["source"], "built");

    proxy.set(Fault::Distant);
    let round_trip = LATENCY * 2;
    let started = std::time::Instant::now();
    let hit = project
        .cachectl(&["ensure-base", "--json"], &[])
        .success()
        .json();
    let took = started.elapsed();
    assert_eq!(
        (hit["hit"].as_bool(), &hit["key"]),
        (Some(true), &built["key"])
    );
    assert!(
        took < round_trip * 3 / 2,
        "a warm ensure-base took {took:?} with {round_trip:?} round trips: more than one"
    );
}
