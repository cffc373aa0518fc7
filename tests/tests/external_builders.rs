//! buildah run the way a CI job runs it, configured through cachectl alone:
//! the credentials given to cachectl reach buildah's pull and cachectl's
//! push, `--builder-arg`s reach the build command, and a pull the registry
//! refuses is exit 3. Real buildah, docker-registry with htpasswd, skopeo
//! and umoci.

use std::process::Command;

use cachectl_e2e::buildah::counting_buildah;
use cachectl_e2e::cachectl::Project;
use cachectl_e2e::registry::{RegistryServer, push_busybox};

const USER: &str = "ci";
const PASSWORD: &str = "s3cret-pass";

fn skopeo(args: &[&str]) {
    let output = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo runs");
    assert!(
        output.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn buildah_pulls_and_cachectl_pushes_with_the_credentials_and_options_given_to_cachectl() {
    let open = RegistryServer::start();
    let private = RegistryServer::start_with_htpasswd(USER, PASSWORD);
    let busybox = push_busybox(&open, "library/busybox", "1");
    let from = format!("{}/library/busybox:1", private.host());
    let creds = format!("{USER}:{PASSWORD}");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("docker://{busybox}"),
        &format!("docker://{from}"),
    ]);
    let image = format!("{}/acme/private-base", private.host());
    let project = Project::new();
    project.write("requirements.txt", "flask==3.0.3\n");
    project.write(
        "Dockerfile.base",
        &format!("FROM {from}\nARG MARK=unset\nRUN echo \"$MARK\" > /mark\n"),
    );
    project.write(
        "cachectl.toml",
        &format!(
            "[base]\nimage = \"{image}\"\nmanifests = [\"requirements.txt\"]\nbuilder = \"buildah\"\n\
             dockerfile = \"Dockerfile.base\"\nplatform = \"linux/amd64\"\n"
        ),
    );
    let scratch = tempfile::tempdir().unwrap();
    let mut env_owned = counting_buildah(&project.marker(), scratch.path());
    env_owned.push(("CACHECTL_REGISTRY_USER".into(), USER.into()));
    env_owned.push((
        "CACHECTL_BUILDER_ARGS".into(),
        "--build-arg MARK=passed-through".into(),
    ));
    let env = |password: &'static str| -> Vec<(&str, &str)> {
        env_owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([("CACHECTL_REGISTRY_PASSWORD", password)])
            .collect()
    };

    let built = project.cachectl(&["ensure-base", "--json"], &env(PASSWORD));
    assert!(
        !built.stderr.contains(PASSWORD),
        "the password reached the output"
    );
    let report = built.success().json();
    assert_eq!(report["source"], "built");
    assert!(report["pushed_bytes"].as_u64().unwrap() > 0, "{report}");

    // What was pushed, read back with the same credentials.
    let work = tempfile::tempdir().unwrap();
    let layout = format!("{}/layout:base", work.path().display());
    let key16 = &report["key"].as_str().unwrap()[..16];
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &format!("docker://{image}:base-{key16}"),
        &format!("oci:{layout}"),
    ]);
    let bundle = work.path().join("bundle");
    let unpacked = Command::new("umoci")
        .args(["unpack", "--image", &layout, &bundle.display().to_string()])
        .output()
        .unwrap();
    assert!(unpacked.status.success(), "{unpacked:?}");
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/mark")).unwrap(),
        "passed-through\n",
        "the builder argument did not reach buildah"
    );

    // A pull the registry refuses (on a runner whose buildah store is
    // empty, so that buildah must pull): buildah's failure is exit 3, with
    // its line, as cachectl's own registry failures are.
    let fresh = tempfile::tempdir().unwrap();
    let mut fresh_env: Vec<(&str, &str)> = Vec::new();
    let fresh_owned = counting_buildah(&project.marker(), fresh.path());
    for (name, value) in env("wrong-pass") {
        let fresh_value = fresh_owned
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str());
        fresh_env.push((name, fresh_value.unwrap_or(value)));
    }
    let refused = project.cachectl(&["ensure-base", "--force", "--upstream", "pin"], &fresh_env);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("reaching a registry"),
        "{}",
        refused.stderr
    );
    assert!(
        !refused.stderr.contains("wrong-pass"),
        "the password reached the output"
    );
    assert_eq!(project.builds(), 2);
}
