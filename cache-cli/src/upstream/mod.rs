//! Upstream images: the images a base is built on (the native builder's
//! `from`, every `FROM` and `COPY --from=` image of the Dockerfile), and the
//! digests they resolve to for the target platform, which go into the base
//! key so that a new image pushed under the same tag (an OS security fix)
//! makes a new base.
//!
//! A reference pinned by digest costs no request. A tag costs one manifest
//! request, all of them concurrent. When a registry cannot be asked (down,
//! refusing, rate limited), the digest recorded for the same reference in
//! the image's last base is kept, with a warning: a flaky upstream must
//! neither fail a deploy whose base exists nor make every run rebuild.

pub mod dockerfile;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use futures::future::join_all;
use oci_client::Reference;

use crate::exit::Exit;
use crate::image::oci::Platform;
use crate::image::registry::{Registry, RegistryError, parse_reference};
use crate::invalid::Invalid;
use crate::key::{Input, InputKind, Recipe};

/// Whether the key follows the upstream images' digests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Policy {
    /// Resolve each tag on every run: a new upstream image makes a new base.
    #[default]
    Track,
    /// Only the references as written count (no registry request): a new
    /// upstream image under the same tag is picked up by `--force` or by
    /// changing the reference.
    Pin,
}

impl Policy {
    /// Parses `track` or `pin`.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        match text {
            "track" => Ok(Self::Track),
            "pin" => Ok(Self::Pin),
            other => Err(Invalid(format!("{other:?} is not track or pin"))),
        }
    }
}

/// An upstream image of the recipe.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// How the key names it: the reference as written (variables
    /// substituted), with ` [os/arch]` when pulled for another platform
    /// than the target.
    pub name: String,
    /// The parsed reference.
    pub reference: Reference,
    /// The platform it is pulled for.
    pub platform: Platform,
}

/// An upstream image and the digest it stands for in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// As in [`Upstream::name`].
    pub name: String,
    /// The manifest digest for the platform.
    pub digest: String,
    /// Where the digest came from.
    pub source: Source,
}

/// Where a [`Resolved`] digest came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The reference carries it.
    Pinned,
    /// The registry, now.
    Registry,
    /// The last base of the image, because the registry could not be asked.
    LastKnown,
}

impl Resolved {
    /// The key input for it.
    pub fn input(&self) -> Input {
        Input::upstream(&self.name, &self.digest)
    }
}

/// Why the upstream images could not be told or resolved.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The Dockerfile cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The Dockerfile does not say which image a stage starts from.
    #[error("{path}: {source}")]
    Dockerfile {
        /// The file.
        path: String,
        /// What is wrong, and where.
        source: dockerfile::DockerfileError,
    },
    /// A reference does not parse.
    #[error("upstream image {name}: {source}")]
    Reference {
        /// As written.
        name: String,
        /// Why.
        source: RegistryError,
    },
    /// The registry answered that the tag does not exist.
    #[error("upstream image {name} does not exist in its registry")]
    NotFound {
        /// The upstream.
        name: String,
    },
    /// The registry could not be asked and no earlier base recorded a
    /// digest for it.
    #[error(
        "upstream image {name}: {source}; no earlier base of this image recorded its digest \
         (set base.upstream = \"pin\" or --upstream pin to build without asking)"
    )]
    Unresolved {
        /// The upstream.
        name: String,
        /// The registry's failure.
        source: RegistryError,
    },
}

impl UpstreamError {
    /// 2 for a recipe problem, the registry's exit for one that could not
    /// be asked, 1 for an image that does not exist.
    pub fn exit(&self) -> Exit {
        match self {
            Self::Read { .. } | Self::Dockerfile { .. } | Self::Reference { .. } => Exit::Usage,
            Self::NotFound { .. } => Exit::Failed,
            Self::Unresolved { source, .. } => source.exit(),
        }
    }
}

/// The upstream images of `recipe`, in the order they appear.
pub fn of_recipe(
    root: &Path,
    recipe: &Recipe,
    args: &BTreeMap<String, String>,
    target: &Platform,
) -> Result<Vec<Upstream>, UpstreamError> {
    let uses = match recipe {
        Recipe::Native { from: None, .. } => Vec::new(),
        Recipe::Native {
            from: Some(from), ..
        } => vec![(from.clone(), target.clone(), false)],
        Recipe::Dockerfile(path) => {
            let full = root.join(path);
            let text = std::fs::read_to_string(&full).map_err(|source| UpstreamError::Read {
                path: full.display().to_string(),
                source,
            })?;
            dockerfile::images(&text, args, target)
                .map_err(|source| UpstreamError::Dockerfile {
                    path: path.display().to_string(),
                    source,
                })?
                .into_iter()
                .map(|u| (u.reference, u.platform, u.explicit_platform))
                .collect()
        }
    };
    uses.into_iter()
        .map(|(text, platform, explicit)| {
            let reference = parse_reference(&text).map_err(|source| UpstreamError::Reference {
                name: text.clone(),
                source,
            })?;
            let name = if explicit {
                format!("{text} [{platform}]")
            } else {
                text
            };
            Ok(Upstream {
                name,
                reference,
                platform,
            })
        })
        .collect()
}

/// The registry hosts of `upstreams`, each once.
pub fn hosts(upstreams: &[Upstream]) -> Vec<String> {
    let mut hosts: Vec<String> = upstreams
        .iter()
        .map(|upstream| upstream.reference.registry().to_owned())
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// What asking the registries gave, before falling back to known digests.
pub type Answers = Vec<Result<Resolved, (String, RegistryError)>>;

/// Asks the registries for every tag of `upstreams`, concurrently; pinned
/// references are answered without a request.
pub async fn ask(registry: &Registry, upstreams: &[Upstream]) -> Result<Answers, UpstreamError> {
    let answers = join_all(upstreams.iter().map(|upstream| async move {
        if let Some(digest) = upstream.reference.digest() {
            return Ok(Ok(Resolved {
                name: upstream.name.clone(),
                digest: digest.to_owned(),
                source: Source::Pinned,
            }));
        }
        match registry
            .platform_digest(&upstream.reference, &upstream.platform)
            .await
        {
            Ok(Some(digest)) => Ok(Ok(Resolved {
                name: upstream.name.clone(),
                digest,
                source: Source::Registry,
            })),
            Ok(None) => Err(UpstreamError::NotFound {
                name: upstream.name.clone(),
            }),
            Err(error) => Ok(Err((upstream.name.clone(), error))),
        }
    }))
    .await;
    answers.into_iter().collect()
}

/// The digests of this run: the registries' answers, and for a registry
/// that could not be asked, the digest `known` (the last base's inputs)
/// recorded for the same upstream, with a warning.
pub fn settle(
    answers: Answers,
    known: &[Input],
    warnings: &mut Vec<String>,
) -> Result<Vec<Resolved>, UpstreamError> {
    answers
        .into_iter()
        .map(|answer| match answer {
            Ok(resolved) => Ok(resolved),
            Err((name, error)) => {
                let last = known
                    .iter()
                    .find(|input| input.kind == InputKind::Upstream && input.name == name)
                    .and_then(|input| input.value.clone());
                match last {
                    Some(digest) => {
                        warnings.push(format!(
                            "could not ask for upstream image {name} ({error}); \
                             using its last known digest {digest}"
                        ));
                        Ok(Resolved {
                            name,
                            digest,
                            source: Source::LastKnown,
                        })
                    }
                    None => Err(UpstreamError::Unresolved {
                        name,
                        source: error,
                    }),
                }
            }
        })
        .collect()
}

impl fmt::Display for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unanswered_upstream_keeps_its_last_known_digest_and_says_so() {
        let error = || RegistryError::Unreachable {
            registry: "r.io".into(),
            message: "connection refused".into(),
        };
        let known = vec![Input::upstream("r.io/python:3.11", "sha256:aaa")];
        let mut warnings = Vec::new();
        let settled = settle(
            vec![Err(("r.io/python:3.11".into(), error()))],
            &known,
            &mut warnings,
        )
        .unwrap();
        assert_eq!(settled[0].digest, "sha256:aaa");
        assert_eq!(settled[0].source, Source::LastKnown);
        assert!(
            warnings[0].contains("last known digest sha256:aaa"),
            "{warnings:?}"
        );

        let unknown = settle(
            vec![Err(("r.io/other:1".into(), error()))],
            &known,
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(unknown.to_string().contains("--upstream pin"), "{unknown}");
        assert_eq!(unknown.exit(), Exit::Unreachable);
    }

    #[test]
    fn every_image_is_named_with_its_platform_when_it_is_not_the_target() {
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(
            folder.path().join("Dockerfile"),
            "FROM --platform=linux/arm64 r.io/a:1 AS a\nFROM r.io/b@sha256:0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        let recipe = Recipe::Dockerfile("Dockerfile".into());
        let target = Platform::parse("linux/amd64").unwrap();
        let args = BTreeMap::new();
        let tracked = of_recipe(folder.path(), &recipe, &args, &target).unwrap();
        let names: Vec<_> = tracked.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "r.io/a:1 [linux/arm64]",
                "r.io/b@sha256:0123456789abcdef0123456789abcdef"
            ]
        );
        let native = Recipe::Native {
            from: None,
            install: "true".into(),
            install_in: crate::builder::step::InstallIn::Host,
            capture: crate::builder::step::Capture::Out,
            package_layers: None,
            max_layers: crate::packages::stack::DEFAULT_MAX_LAYERS,
        };
        assert!(
            of_recipe(folder.path(), &native, &args, &target)
                .unwrap()
                .is_empty()
        );
    }
}
