//! `cachectl rollback`: points the app tag back at an earlier deploy,
//! without building or uploading anything: the earlier manifest is put
//! under the tag again (one manifest read and one write) and tagged as a
//! new deploy, so the history shows the rollback and `gc` keeps it.

use super::context::registry_for;
use super::history::{Deploy, history};
use crate::cli::config::ConfigFile;
use crate::cli::{AppFlags, Cli};
use crate::exit::Failure;
use crate::image::{Location, Registry, deploys};
use crate::invalid::Invalid;
use crate::report::outcome::RollbackReport;
use crate::report::output;

/// The deploy `to` names (a digest, a deploy tag, or a number of deploys
/// back among those with another image), else the newest deploy of
/// another image than the current one.
fn choose<'a>(
    deploys: &'a [Deploy],
    current: Option<&str>,
    to: Option<&str>,
) -> Result<&'a Deploy, Invalid> {
    if let Some(to) = to {
        if let Ok(steps) = to.parse::<usize>() {
            let mut distinct: Vec<&Deploy> = Vec::new();
            for deploy in deploys {
                if Some(deploy.digest.as_str()) != current
                    && !distinct.iter().any(|d| d.digest == deploy.digest)
                {
                    distinct.push(deploy);
                }
            }
            return steps
                .checked_sub(1)
                .and_then(|index| distinct.get(index).copied())
                .ok_or_else(|| {
                    Invalid(format!(
                        "there are only {} earlier images to go back to",
                        distinct.len()
                    ))
                });
        }
        return deploys
            .iter()
            .find(|deploy| {
                deploy.digest == to
                    || deploy.tag == to
                    || deploy.digest.starts_with(to) && to.len() >= 12
            })
            .ok_or_else(|| {
                Invalid(format!(
                    "no deploy of this tag is {to:?} (see `cachectl history`)"
                ))
            });
    }
    deploys
        .iter()
        .find(|deploy| Some(deploy.digest.as_str()) != current)
        .ok_or_else(|| Invalid::new("no earlier deploy of another image to go back to"))
}

/// Points `app`'s tag at the deploy `to` names (see [`choose`]).
pub async fn rollback(
    registry: &Registry,
    app: &Location,
    to: Option<&str>,
    deploy_tags: bool,
) -> Result<RollbackReport, Failure> {
    let started = std::time::Instant::now();
    let image_failure = |e: crate::image::ImageError| Failure::new(e.exit(), e);
    let history = history(registry, app, usize::MAX)
        .await
        .map_err(image_failure)?;
    let target = choose(&history.deploys, history.current.as_deref(), to)
        .map_err(|m| Failure::usage(anyhow::anyhow!(m)))?;
    let manifest = app
        .at_digest(&target.digest)
        .manifest_as_is(registry)
        .await
        .map_err(image_failure)?;
    app.push_manifest(registry, &manifest.bytes, &manifest.media_type)
        .await
        .map_err(image_failure)?;
    let mut warnings = Vec::new();
    let deploy_tag = if deploy_tags {
        let known = (&manifest.bytes[..], manifest.media_type.as_str());
        match deploys::tag_deploy(registry, app, &target.digest, Some(known)).await {
            Ok(tag) => tag.map(|deploy| deploy.tag),
            Err(error) => {
                warnings.push(format!("could not add the deploy tag: {error}"));
                None
            }
        }
    } else {
        None
    };
    Ok(RollbackReport {
        warnings,
        image: history.image,
        previous: history.current,
        digest: target.digest.clone(),
        reference: target.reference.clone(),
        deploy: target.tag.clone(),
        uploaded_bytes: 0,
        deploy_tag,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Runs `rollback`.
pub async fn run(
    cli: &Cli,
    file: &ConfigFile,
    to: Option<&str>,
    app: &AppFlags,
) -> Result<(), Failure> {
    let settings = cli.app_settings(file, app).map_err(Failure::usage)?;
    if deploys::app_tag(&settings.image).is_none() {
        return Err(Failure::usage(anyhow::anyhow!(
            "{} names a digest; rollback moves a tag",
            settings.image.tagged()
        )));
    }
    let registry = registry_for(cli, settings.image.registry_host().map(str::to_owned));
    let report = rollback(&registry, &settings.image, to, settings.deploy_tags).await?;
    output::report_rollback(&report, cli.json).map_err(Failure::failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(tag: &str, digest: &str) -> Deploy {
        Deploy {
            time: String::new(),
            tag: tag.into(),
            digest: digest.into(),
            reference: format!("r/web@{digest}"),
            base_key: None,
            base_digest: None,
            current: false,
            hit: None,
            seconds: None,
        }
    }

    #[test]
    fn the_default_is_the_newest_other_image_and_numbers_count_images_not_tags() {
        let deploys = [
            deploy("t4", "sha256:c"),
            deploy("t3", "sha256:b"),
            deploy("t2", "sha256:b"),
            deploy("t1", "sha256:a"),
        ];
        let current = Some("sha256:c");
        assert_eq!(choose(&deploys, current, None).unwrap().tag, "t3");
        assert_eq!(choose(&deploys, current, Some("1")).unwrap().tag, "t3");
        assert_eq!(choose(&deploys, current, Some("2")).unwrap().tag, "t1");
        assert!(choose(&deploys, current, Some("3")).is_err());
        assert_eq!(choose(&deploys, current, Some("t2")).unwrap().tag, "t2");
        assert_eq!(
            choose(&deploys, current, Some("sha256:a")).unwrap().tag,
            "t1"
        );
        assert!(choose(&deploys, current, Some("sha256:zz")).is_err());
        assert!(choose(&deploys[..1], current, None).is_err());
    }
}
