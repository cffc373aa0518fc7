//! The app's settings over its base's image config: environment, command,
//! entrypoint, working directory, user, exposed ports and labels, as a Dockerfile's
//! instructions on top of `FROM` would set them.

use crate::cli::settings::AppSettings;
use crate::image::config::{History, ImageConfig};
use crate::image::inventory::BASE_DIGEST_LABEL;

/// The label naming the base image an app image was put on.
pub const BASE_NAME_LABEL: &str = "org.opencontainers.image.base.name";

/// Sets `app`'s settings over `config` (the base's) and names the base
/// (`base_name`, manifest `base_digest`) in its labels; returns the history
/// step of the app layer.
pub fn apply(
    config: &mut ImageConfig,
    app: &AppSettings,
    base_name: &str,
    base_digest: &str,
) -> History {
    let run = config.run_config();
    if !app.env.is_empty() {
        let mut env: Vec<String> = run
            .env
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|entry| {
                let name = entry.split('=').next().unwrap_or_default();
                !app.env.contains_key(name)
            })
            .collect();
        env.extend(app.env.iter().map(|(k, v)| format!("{k}={v}")));
        run.env = Some(env);
    }
    if let Some(workdir) = &app.workdir {
        run.working_dir = Some(workdir.clone());
    }
    if let Some(user) = &app.user {
        run.user = Some(user.clone());
    }
    if let Some(entrypoint) = &app.entrypoint {
        run.entrypoint = Some(entrypoint.clone());
        // As a Dockerfile's ENTRYPOINT does: the base's command was an
        // argument list for the base's entrypoint, not for this one.
        if app.cmd.is_none() {
            run.cmd = None;
        }
    }
    if let Some(cmd) = &app.cmd {
        run.cmd = Some(cmd.clone());
    }
    for port in &app.expose {
        run.expose(port);
    }
    for (name, value) in &app.labels {
        run.set_label(name, value);
    }
    run.set_label(BASE_DIGEST_LABEL, base_digest);
    run.set_label(BASE_NAME_LABEL, base_name);
    History {
        // No host path here: the same inputs give the same image on any machine.
        created_by: Some(format!("cachectl layer: COPY . {}", app.dest)),
        ..History::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::image::Location;
    use crate::image::compose::{self, TopLayer};
    use crate::image::manifest::{Manifest, OciDigest};
    use crate::image::oci::{self, Flavor, Platform};
    use crate::pack::layer::Compression;

    fn app() -> AppSettings {
        AppSettings {
            image: Location::parse("r/x", std::path::Path::new(".")).unwrap(),
            context: ".".into(),
            dest: "/app".into(),
            exclude: Vec::new(),
            cmd: Some(vec!["gunicorn".into(), "web.wsgi".into()]),
            entrypoint: None,
            env: BTreeMap::from([("MODE".to_owned(), "app".to_owned())]),
            workdir: Some("/app".into()),
            user: None,
            expose: Vec::new(),
            labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
            platform: Platform::host(),
            compression: Compression::default(),
            all_platforms: false,
            tree_cache: None,
            deploy_tags: true,
            by_change: None,
        }
    }

    /// The config of the app image `app` makes on a base of config `base`.
    fn composed(base: &str, app: &AppSettings) -> ImageConfig {
        let mut config = ImageConfig::parse(base.as_bytes(), "base").unwrap();
        let step = apply(&mut config, app, "r/base", "sha256:cc");
        let digest = OciDigest::sha256_of(b"layer");
        let top = TopLayer {
            digest: &digest,
            diff_id: "sha256:bb",
            size: 5,
            media_type: oci::OCI_LAYER_GZIP,
        };
        let image = compose::compose(Flavor::Oci, config, &[], top, step);
        let manifest: Manifest = serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(manifest.layers[0].digest, digest);
        assert_eq!(manifest.config.digest, OciDigest::sha256_of(&image.config));
        ImageConfig::parse(&image.config, "app").unwrap()
    }

    #[test]
    fn the_app_config_merges_over_the_base() {
        let base = r#"{
            "architecture": "amd64", "os": "linux",
            "config": { "Env": ["PATH=/bin", "MODE=base"], "Cmd": ["/bin/sh"], "Labels": { "team": "infra" }, "StopSignal": "SIGINT" },
            "rootfs": { "type": "layers", "diff_ids": ["sha256:aa"] },
            "history": [{ "created_by": "base" }]
        }"#;
        let config = composed(base, &app());
        assert_eq!(config.rootfs.diff_ids, ["sha256:aa", "sha256:bb"]);
        let run = config.config.as_ref().unwrap();
        assert_eq!(run.env.as_deref().unwrap(), ["PATH=/bin", "MODE=app"]);
        assert_eq!(run.cmd.as_deref().unwrap(), ["gunicorn", "web.wsgi"]);
        assert_eq!(run.working_dir.as_deref(), Some("/app"));
        // What the app does not set stays the base's.
        assert_eq!(run.other["StopSignal"], "SIGINT");
        let labels = config.labels();
        assert_eq!(labels["team"], "infra");
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[BASE_DIGEST_LABEL], "sha256:cc");
        assert_eq!(labels[BASE_NAME_LABEL], "r/base");
        assert_eq!(config.history.as_ref().unwrap().len(), 2);
        assert_eq!(config.created.as_deref(), Some("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn an_entrypoint_without_a_command_drops_the_base_command() {
        // The base's command would otherwise become the entrypoint's
        // arguments.
        let app = AppSettings {
            cmd: None,
            entrypoint: Some(vec!["/usr/local/bin/cache-server".into()]),
            ..app()
        };
        let config = composed(r#"{ "config": { "Cmd": ["node"] } }"#, &app);
        let run = config.config.as_ref().unwrap();
        assert_eq!(
            run.entrypoint.as_deref().unwrap(),
            ["/usr/local/bin/cache-server"]
        );
        assert_eq!(run.cmd, None);
    }
}
