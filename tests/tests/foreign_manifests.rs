//! Manifests other tools write (annotations everywhere, an `artifactType`,
//! a `subject`, fields no spec names, their own spacing) pass through
//! `build`, `layer`, `rollback` and `gc` against a real registry: what
//! cachectl does not change keeps its bytes, so its digest never moves, and
//! what it copies into its own manifests (a base's layer descriptors)
//! keeps every field.

use cachectl_e2e::cachectl::Project;
use cachectl_e2e::data::oci_digest;
use cachectl_e2e::registry::{RegistryServer, push_busybox};
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The bytes of manifest `reference` in `repository`.
async fn manifest(host: &str, repository: &str, reference: &str) -> Vec<u8> {
    let response = reqwest::Client::new()
        .get(format!(
            "http://{host}/v2/{repository}/manifests/{reference}"
        ))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{repository}:{reference}");
    response.bytes().await.unwrap().to_vec()
}

/// Puts manifest `bytes` at `reference` (a tag or its digest); its digest.
async fn put_manifest(host: &str, repository: &str, reference: &str, bytes: &[u8]) -> String {
    let response = reqwest::Client::new()
        .put(format!(
            "http://{host}/v2/{repository}/manifests/{reference}"
        ))
        .header("content-type", OCI_MANIFEST)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    oci_digest(bytes)
}

/// Uploads blob `bytes` to `repository` in one request; its digest.
async fn push_blob(host: &str, repository: &str, bytes: &[u8]) -> String {
    let client = reqwest::Client::new();
    let digest = oci_digest(bytes);
    let started = client
        .post(format!("http://{host}/v2/{repository}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let url = if location.starts_with("http") {
        location
    } else {
        format!("http://{host}{location}")
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    let done = client
        .put(format!("{url}{separator}digest={digest}"))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 201);
    digest
}

/// `image` (a manifest's JSON) as a release tool rewrites it: annotations
/// on the manifest, its config and each layer, an `artifactType`, a
/// `subject` (`subject_digest`, `subject_size`), fields of its own, and
/// its own layout of the text (indented, not cachectl's compact sorted
/// form), so that any re-serialisation would change the bytes.
fn foreign(image: &[u8], subject_digest: &str, subject_size: usize) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(image).unwrap();
    value["mediaType"] = json!(OCI_MANIFEST);
    value["artifactType"] = json!("application/vnd.example.release+json");
    value["annotations"] = json!({
        "org.opencontainers.image.source": "https://example.com/tool",
        "io.example.signed-by": "release-bot"
    });
    value["io.example.tool"] = json!({ "run": 42, "steps": ["scan", "sign"] });
    value["subject"] = json!({
        "mediaType": OCI_MANIFEST,
        "digest": subject_digest,
        "size": subject_size,
        "annotations": { "io.example.why": "provenance" }
    });
    value["config"]["annotations"] = json!({ "io.example.config": "checked" });
    for layer in value["layers"].as_array_mut().unwrap() {
        layer["annotations"] = json!({ "io.example.layer": "scanned" });
        layer["io.example.scan"] = json!({ "findings": 0 });
    }
    serde_json::to_vec_pretty(&value).unwrap()
}

/// The layer descriptors of manifest `bytes`.
fn layers(bytes: &[u8]) -> Vec<Value> {
    let value: Value = serde_json::from_slice(bytes).unwrap();
    value["layers"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_manifest_passes_through_build_layer_rollback_and_gc_unchanged() {
    let registry = RegistryServer::start();
    let host = registry.host();

    // A base image as a release tool publishes it.
    push_busybox(&registry, "vendor/tool", "plain");
    let plain = manifest(&host, "vendor/tool", "plain").await;
    let foreign_base = foreign(&plain, &oci_digest(&plain), plain.len());
    let foreign_base_digest = put_manifest(&host, "vendor/tool", "1", &foreign_base).await;
    let base_layers = layers(&foreign_base);
    assert!(base_layers[0]["io.example.scan"].is_object());

    // `build`: the native base starts from it, the app goes on top. Both
    // manifests list its layers with every field they came with.
    let from = format!("{host}/vendor/tool:1");
    let project = Project::native(&format!("{host}/acme/base"), Some(&from));
    project.write("app/main.py", "print('v1')\n");
    let prod = format!("{host}/acme/web:prod");
    let build = |project: &Project| {
        project
            .cachectl(
                &["build", "--json", "--app-image", &prod, "--context", "app"],
                &[],
            )
            .success()
            .json()
    };
    let first = build(&project);
    let base_reference = first["base"]["reference"].as_str().unwrap();
    let base_digest = base_reference.rsplit('@').next().unwrap();
    let base = manifest(&host, "acme/base", base_digest).await;
    assert_eq!(layers(&base)[..base_layers.len()], base_layers[..]);
    let app_digest = first["app"]["digest"].as_str().unwrap().to_owned();
    let app = manifest(&host, "acme/web", &app_digest).await;
    assert_eq!(layers(&app)[..base_layers.len()], base_layers[..]);
    // Read, never rewritten: the foreign base is byte for byte what it was.
    assert_eq!(manifest(&host, "vendor/tool", "1").await, foreign_base);

    // `layer` straight onto the foreign base.
    let direct = format!("{host}/acme/web:direct");
    let layered = project
        .cachectl(
            &[
                "layer",
                "--json",
                "--base",
                &from,
                "--app-image",
                &direct,
                "--context",
                "app",
            ],
            &[],
        )
        .success()
        .json();
    let layered_digest = layered["digest"].as_str().unwrap();
    let on_foreign = manifest(&host, "acme/web", layered_digest).await;
    let on_foreign_layers = layers(&on_foreign);
    assert_eq!(on_foreign_layers.len(), base_layers.len() + 1);
    assert_eq!(on_foreign_layers[..base_layers.len()], base_layers[..]);
    assert_eq!(manifest(&host, "vendor/tool", "1").await, foreign_base);
    // Its config names the foreign base by the digest of its bytes.
    let on_foreign: Value = serde_json::from_slice(&on_foreign).unwrap();
    let config = reqwest::get(format!(
        "http://{host}/v2/acme/web/blobs/{}",
        on_foreign["config"]["digest"].as_str().unwrap()
    ))
    .await
    .unwrap()
    .json::<Value>()
    .await
    .unwrap();
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.base.digest"],
        foreign_base_digest.as_str()
    );

    // A deploy the release tool re-signed and tagged in cachectl's naming;
    // then a newer deploy by cachectl.
    let released = foreign(&app, &app_digest, app.len());
    let release_tag = "prod.deploy-20200101T000000.000Z";
    let released_digest = put_manifest(&host, "acme/web", release_tag, &released).await;
    project.write("app/main.py", "print('v2')\n");
    let second = build(&project);
    let newest = second["app"]["digest"].as_str().unwrap().to_owned();
    assert_ne!(newest, app_digest);

    // `rollback` to the foreign deploy puts exactly its bytes under the tag.
    let rolled = project
        .cachectl(
            &[
                "rollback",
                "--json",
                "--app-image",
                &prod,
                "--to",
                release_tag,
            ],
            &[],
        )
        .success()
        .json();
    assert_eq!(rolled["digest"], released_digest.as_str(), "{rolled}");
    assert_eq!(manifest(&host, "acme/web", "prod").await, released);

    // A cosign-style signature of the newest deploy, tagged as cosign tags
    // them; then `gc` keeps one deploy and reads every manifest on the way.
    let empty = push_blob(&host, "acme/web", b"{}").await;
    let payload = br#"{"critical":{"image":{"docker-manifest-digest":"x"}}}"#;
    let payload_digest = push_blob(&host, "acme/web", payload).await;
    let newest_bytes = manifest(&host, "acme/web", &newest).await;
    let signature = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2 },
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": payload_digest,
            "size": payload.len(),
            "annotations": { "dev.cosignproject.cosign/signature": "MEUCIQ" }
        }],
        "subject": { "mediaType": OCI_MANIFEST, "digest": newest, "size": newest_bytes.len() },
        "io.example.tool": { "signed": true }
    }))
    .unwrap();
    let signature_tag = format!("{}.sig", newest.replace(':', "-"));
    let signature_digest = put_manifest(&host, "acme/web", &signature_tag, &signature).await;
    project
        .cachectl(
            &[
                "gc",
                "--delete",
                "--app-image",
                &prod,
                "--keep-deploys",
                "1",
                "--keep-days",
                "0",
            ],
            &[],
        )
        .success();
    let tags = registry.tags("acme/web");
    assert!(tags.contains(&signature_tag), "{tags:?}");
    assert_eq!(
        manifest(&host, "acme/web", &signature_tag).await,
        signature,
        "the signature {signature_digest} changed"
    );
    assert_eq!(manifest(&host, "acme/web", "prod").await, released);
    assert_eq!(manifest(&host, "vendor/tool", "1").await, foreign_base);
}
