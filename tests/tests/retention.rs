//! Deploy tags, `cachectl history`, `rollback` and `gc`, end to end with
//! the real binary against a real registry (docker-registry with deletes
//! enabled, its own `garbage-collect` afterwards) and an OCI layout; what
//! is left is read back with skopeo.

use std::collections::BTreeSet;
use std::process::Command;

use cachectl_e2e::CacheServer;
use cachectl_e2e::cachectl::Project;
use cachectl_e2e::data::files_under;
use cachectl_e2e::registry::{RegistryServer, skopeo_inspect};

/// A native project (no `from`: quick builds) whose base goes to `base`
/// and app to `app`; the app folder is `app/`.
fn project(base: &str, app: &str, cache: Option<&str>) -> Project {
    let project = Project::new();
    project.write("requirements.txt", "pkg==0\n");
    project.write("app/main.py", "print('v0')\n");
    let cache = cache
        .map(|c| format!("cache = \"{c}\"\n"))
        .unwrap_or_default();
    project.write(
        "cachectl.toml",
        &format!(
            r#"{cache}[base]
image = "{base}"
manifests = ["requirements.txt"]
builder = "native"
install = "mkdir -p {{out}}/opt && cp requirements.txt {{out}}/opt/"
platform = "linux/amd64"
[app]
image = "{app}"
context = "app"
"#
        ),
    );
    project
}

/// `cachectl build --json` with `args`; returns (base digest, app digest,
/// deploy tag).
fn build(project: &Project, args: &[&str]) -> (String, String, String) {
    let mut all = vec!["build", "--json"];
    all.extend_from_slice(args);
    let report = project.cachectl(&all, &[]).success().json();
    (
        report["base"]["digest"].as_str().unwrap().to_owned(),
        report["app"]["digest"].as_str().unwrap().to_owned(),
        report["app"]["deploy_tag"].as_str().unwrap().to_owned(),
    )
}

fn copy_out(reference: &str, into: &std::path::Path) {
    let output = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", reference])
        .arg(format!("oci:{}:copy", into.display()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{reference} is not whole: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn gc_keeps_exactly_the_last_deploys_and_the_bases_they_use_in_a_registry() {
    let registry = RegistryServer::start();
    let base_image = format!("{}/acme/base", registry.host());
    let prod = format!("{}/acme/web:prod", registry.host());
    let staging = format!("{}/acme/web:staging", registry.host());
    let project = project(&base_image, &prod, None);
    // 30 bases, two app images on each: 40 deploys of prod, then 20 of
    // staging.
    let mut deploys: Vec<(String, String, String)> = Vec::new();
    for n in 0..60 {
        project.write("requirements.txt", &format!("pkg=={}\n", n / 2));
        project.write("app/main.py", &format!("print('v{n}')\n"));
        let app = if n < 40 { &prod } else { &staging };
        deploys.push(build(&project, &["--app-image", app]));
    }
    let bases: BTreeSet<&String> = deploys.iter().map(|d| &d.0).collect();
    assert_eq!(bases.len(), 30);
    assert_eq!(registry.tags("acme/base").len(), 30);
    assert_eq!(
        registry.tags("acme/web").len(),
        62,
        "60 deploy tags, prod, staging"
    );

    let gc = ["gc", "--json", "--keep-deploys", "5", "--keep-days", "0"];
    let dry = project.cachectl(&gc, &[]).success().json();
    assert_eq!(dry["dry_run"], true);
    let planned: BTreeSet<String> = dry["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["delete"] == true)
        .map(|d| d["tag"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(registry.tags("acme/web").len(), 62, "the dry run deleted");

    // What the policy names: the last 5 deploys of each tag, the tags
    // themselves, the bases those use, and the base of the current inputs
    // (the last requirements, which the last deploys use anyway).
    let kept_deploys: Vec<&(String, String, String)> =
        deploys[35..40].iter().chain(&deploys[55..60]).collect();
    let kept_bases: BTreeSet<&String> = kept_deploys.iter().map(|d| &d.0).collect();
    assert_eq!(kept_bases.len(), 6);
    let mut expected_web: Vec<String> = kept_deploys.iter().map(|d| d.2.clone()).collect();
    expected_web.extend(["prod".to_owned(), "staging".to_owned()]);
    expected_web.sort();
    let base_tag_of = |digest: &String| -> String {
        let inspected = skopeo_inspect(&format!("docker://{base_image}@{digest}"), true);
        let key = inspected["config"]["Labels"]["dev.cachectl.base-key"]
            .as_str()
            .unwrap()
            .to_owned();
        format!("base-{}", &key[..16])
    };
    let mut expected_base: Vec<String> = kept_bases.iter().map(|d| base_tag_of(d)).collect();
    expected_base.sort();
    let expected_deleted: BTreeSet<String> = registry
        .tags("acme/base")
        .into_iter()
        .filter(|t| !expected_base.contains(t))
        .chain(
            deploys[..35]
                .iter()
                .chain(&deploys[40..55])
                .map(|d| d.2.clone()),
        )
        .collect();
    assert_eq!(planned, expected_deleted);
    assert_eq!(planned.len(), 24 + 50);
    assert!(dry["freed_bytes"].as_u64().unwrap() > 0, "{dry}");

    let deleted = project
        .cachectl(
            &["gc", "--delete", "--keep-deploys", "5", "--keep-days", "0"],
            &[],
        )
        .success();
    assert!(deleted.stdout.contains("deleted"), "{}", deleted.stdout);
    assert!(
        deleted.stderr.contains("`registry garbage-collect CONFIG`"),
        "{}",
        deleted.stderr
    );
    assert_eq!(registry.tags("acme/web"), expected_web);
    assert_eq!(registry.tags("acme/base"), expected_base);

    // The registry's own garbage collection, then every kept image is
    // whole: manifest, config and every layer.
    let storage_before: u64 = files_under(&registry.storage())
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    registry.garbage_collect();
    let storage_after: u64 = files_under(&registry.storage())
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(
        storage_after < storage_before,
        "{storage_after} >= {storage_before}"
    );
    let scratch = tempfile::tempdir().unwrap();
    for (n, tag) in expected_web.iter().enumerate() {
        copy_out(
            &format!("docker://{}/acme/web:{tag}", registry.host()),
            &scratch.path().join(format!("web{n}")),
        );
    }
    for (n, tag) in expected_base.iter().enumerate() {
        copy_out(
            &format!("docker://{base_image}:{tag}"),
            &scratch.path().join(format!("base{n}")),
        );
    }

    // A second run finds nothing more to delete.
    let again = project.cachectl(&gc, &[]).success().json();
    assert!(
        again["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["delete"] == false),
        "{again}"
    );
}

#[test]
fn rollback_points_the_tag_at_an_earlier_deploy_and_uploads_nothing() {
    let registry = RegistryServer::start();
    let server = CacheServer::local();
    let base_image = format!("{}/acme/base", registry.host());
    let app_image = format!("{}/acme/web:prod", registry.host());
    let project = project(&base_image, &app_image, Some(&server.base_url()));
    let mut apps = Vec::new();
    for n in 1..=3 {
        project.write("app/main.py", &format!("print('v{n}')\n"));
        apps.push(build(&project, &[]).1);
    }
    let history = project
        .cachectl(&["history", "--json"], &[])
        .success()
        .json();
    let listed: Vec<&str> = history["deploys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [&apps[2], &apps[1], &apps[0]].map(String::as_str));
    assert_eq!(history["deploys"][0]["current"], true);
    assert_eq!(history["current"], apps[2].as_str());
    // The cache server's events tell a base built from a base hit.
    let hits: Vec<&serde_json::Value> = history["deploys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["hit"])
        .collect();
    assert_eq!(
        hits,
        [
            &serde_json::json!(true),
            &serde_json::json!(true),
            &serde_json::json!(false)
        ]
    );
    assert!(history["deploys"][2]["base_key"].is_string(), "{history}");

    // Back two images: the first deploy.
    let uploads = registry.blob_upload_requests();
    let rolled = project
        .cachectl(&["rollback", "--json", "--to", "2"], &[])
        .success()
        .json();
    assert_eq!(rolled["digest"], apps[0].as_str());
    assert_eq!(rolled["previous"], apps[2].as_str());
    assert_eq!(rolled["uploaded_bytes"], 0);
    assert_eq!(
        registry.blob_upload_requests(),
        uploads,
        "the rollback uploaded a blob"
    );
    let now = skopeo_inspect(&format!("docker://{app_image}"), false);
    assert_eq!(now["Digest"], apps[0].as_str());

    // The rollback is a deploy too; a plain rollback then goes back to the
    // newest other image.
    let after = project
        .cachectl(&["history", "--json"], &[])
        .success()
        .json();
    assert_eq!(after["deploys"][0]["digest"], apps[0].as_str());
    assert_eq!(after["deploys"][0]["current"], true);
    let text = project.cachectl(&["history"], &[]).success();
    assert!(text.stdout.contains("<- current"), "{}", text.stdout);
    let back = project.cachectl(&["rollback"], &[]).success();
    assert_eq!(
        back.stdout.trim(),
        format!("{}/acme/web@{}", registry.host(), apps[2])
    );
    let refused = project.cachectl(&["rollback", "--to", "sha256:nope"], &[]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
}

#[test]
fn gc_on_an_oci_layout_removes_the_tags_and_their_blobs() {
    let project = project("oci:./oci/base", "oci:./oci/web:prod", None);
    let mut deploys = Vec::new();
    for n in 0..6 {
        project.write("requirements.txt", &format!("pkg=={n}\n"));
        project.write("app/main.py", &format!("print('v{n}')\n"));
        deploys.push(build(&project, &[]));
    }
    // Blobs younger than ten minutes are left to a push in progress: age them.
    for blob in files_under(&project.path().join("oci")) {
        let file = std::fs::File::options().write(true).open(&blob).unwrap();
        file.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
            .unwrap();
    }
    let blobs = |name: &str| files_under(&project.path().join(format!("oci/{name}/blobs"))).len();
    let before = (blobs("base"), blobs("web"));
    let report = project
        .cachectl(
            &[
                "gc",
                "--json",
                "--delete",
                "--keep-deploys",
                "2",
                "--keep-days",
                "0",
            ],
            &[],
        )
        .success()
        .json();
    assert!(
        report["layout_bytes_removed"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(blobs("base") < before.0 && blobs("web") < before.1);
    for (_, _, tag) in &deploys[4..] {
        let reference = format!("oci:{}/oci/web:{tag}", project.path().display());
        let scratch = tempfile::tempdir().unwrap();
        copy_out(&reference, scratch.path());
    }
    for (_, _, tag) in &deploys[..4] {
        let inspected = Command::new("skopeo")
            .args([
                "inspect",
                &format!("oci:{}/oci/web:{tag}", project.path().display()),
            ])
            .output()
            .unwrap();
        assert!(!inspected.status.success(), "{tag} survived");
    }
}

#[test]
fn a_registry_that_refuses_deletes_is_explained_and_nothing_is_half_done() {
    let registry = RegistryServer::start_without_deletes();
    let base_image = format!("{}/acme/base", registry.host());
    let project = project(
        &base_image,
        &format!("{}/acme/web:prod", registry.host()),
        None,
    );
    for n in 0..3 {
        project.write("app/main.py", &format!("print('v{n}')\n"));
        build(&project, &[]);
    }
    let tags = registry.tags("acme/web");
    let refused = project.cachectl(
        &["gc", "--delete", "--keep-deploys", "1", "--keep-days", "0"],
        &[],
    );
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("refuses deletes"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("storage.delete.enabled"),
        "{}",
        refused.stderr
    );
    assert_eq!(registry.tags("acme/web"), tags);
}

/// Pushes `bytes` as a blob of `repository` (POST, then PUT with its
/// digest); returns the digest.
async fn push_blob(
    client: &reqwest::Client,
    registry: &str,
    repository: &str,
    bytes: &[u8],
) -> String {
    let digest = cachectl_e2e::data::oci_digest(bytes);
    let started = client
        .post(format!("http://{registry}/v2/{repository}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let location = if location.starts_with("http") {
        location
    } else {
        format!("http://{registry}{location}")
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let put = client
        .put(format!("{location}{separator}digest={digest}"))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "{:?}", put.text().await);
    digest
}

/// `cachectl gc --delete` and then the clean-up it recommends (the
/// registry's plain `garbage-collect`) keep whole every image gc keeps: a
/// multi-platform image under another tag, with its untagged platform
/// images, and an untagged OCI 1.1 referrer (an SBOM) of a kept deploy.
#[tokio::test]
async fn the_recommended_registry_clean_up_after_gc_keeps_multi_platform_images_and_referrers() {
    let registry = RegistryServer::start();
    let host = registry.host();
    let base_image = format!("{host}/acme/base");
    let prod = format!("{host}/acme/web:prod");
    let project = project(&base_image, &prod, None);
    let mut deploys = Vec::new();
    for n in 0..4 {
        project.write("requirements.txt", &format!("pkg=={n}\n"));
        project.write("app/main.py", &format!("print('v{n}')\n"));
        deploys.push(build(&project, &[]));
    }
    let release = cachectl_e2e::registry::push_multi_platform(&registry, "acme/web", "release-1");

    // An SBOM of the last deploy, attached as a referrer, untagged.
    let client = reqwest::Client::new();
    let subject = &deploys[3].1;
    let subject_bytes = client
        .get(format!("http://{host}/v2/acme/web/manifests/{subject}"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let empty = push_blob(&client, &host, "acme/web", b"{}").await;
    let sbom_bytes = br#"{"spdxVersion": "SPDX-2.3"}"#;
    let sbom = push_blob(&client, &host, "acme/web", sbom_bytes).await;
    let referrer = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/spdx+json", "digest": sbom, "size": sbom_bytes.len()}],
        "subject": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": subject,
            "size": subject_bytes.len(),
        },
    }))
    .unwrap();
    let referrer_digest = cachectl_e2e::data::oci_digest(&referrer);
    let pushed = client
        .put(format!(
            "http://{host}/v2/acme/web/manifests/{referrer_digest}"
        ))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(referrer)
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 201, "{:?}", pushed.text().await);

    project
        .cachectl(
            &["gc", "--delete", "--keep-deploys", "2", "--keep-days", "0"],
            &[],
        )
        .success();
    let mut expected: Vec<String> = deploys[2..].iter().map(|d| d.2.clone()).collect();
    expected.extend(["prod".to_owned(), "release-1".to_owned()]);
    expected.sort();
    assert_eq!(registry.tags("acme/web"), expected);
    registry.garbage_collect();

    // Every kept image pulls whole: the deploys, every platform of the
    // multi-platform image, and the referrer with its blobs.
    let scratch = tempfile::tempdir().unwrap();
    for (n, deploy) in deploys[2..].iter().enumerate() {
        copy_out(
            &format!("docker://{host}/acme/web:{}", deploy.2),
            &scratch.path().join(format!("deploy{n}")),
        );
    }
    let all = Command::new("skopeo")
        .args(["copy", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{release}"))
        .arg(format!(
            "oci:{}:release",
            scratch.path().join("release").display()
        ))
        .output()
        .unwrap();
    assert!(
        all.status.success(),
        "the multi-platform image lost a platform: {}",
        String::from_utf8_lossy(&all.stderr)
    );
    for path in [
        format!("manifests/{referrer_digest}"),
        format!("blobs/{sbom}"),
        format!("blobs/{empty}"),
    ] {
        let status = client
            .get(format!("http://{host}/v2/acme/web/{path}"))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "the referrer's {path} is gone");
    }
}
