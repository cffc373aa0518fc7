//! `ensure-base`: answer with the base for the current inputs, building and
//! publishing it only when no usable one exists.
//!
//! Lookup order: the record store (cache server action cache, or local
//! records), then the registry tag `base-{key16}`, then build. A hit is only
//! reported after the target proves it still holds the manifest; a stale
//! record means a rebuild, never a broken deploy. The cache is an
//! accelerator: when it is unreachable the run goes on without it (with a
//! warning) unless `require_cache` is set.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::base_key::{self, Current};
use super::context::{host_of, records_for, registry_for};
use super::errors::EnsureError;
use crate::builder::external::{self, ExternalSpec};
use crate::builder::native::{self, NativeSpec};
use crate::builder::package_layers::PackageLayers;
use crate::builder::{BuildError, BuilderKind, registries};
use crate::cli::Cli;
use crate::cli::config::ConfigFile;
use crate::cli::settings::BaseSettings;
use crate::client::ClientError;
use crate::client::leases::Acquired;
use crate::client::records::{BaseRecord, RecordStore, latest_key};
use crate::exit::Failure;
use crate::image::ImageError;
use crate::image::publish;
use crate::image::{ImageTarget, Location, Registry};
use crate::key::{self, BaseKey, Recipe};
use crate::packages::plan;
use crate::report::outcome::{EnsureReport, PackageLayer};
use crate::report::progress::Progress;
use crate::report::{events, output};
use crate::upstream::{self, Policy, Upstream};

/// How a run behaves.
#[derive(Debug, Clone, Copy)]
pub struct EnsureOptions {
    /// Build even on a hit.
    pub force: bool,
    /// Fail (exit 3) instead of going on when the cache is unreachable.
    pub require_cache: bool,
    /// How long to wait for another job that holds the build lease.
    pub wait: Duration,
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Run<'a> {
    progress: Progress,
    settings: &'a BaseSettings,
    /// The recipe's upstream images, tracked or not.
    all_upstreams: &'a [Upstream],
    /// The digests the key holds for them (none under `pin`).
    upstreams: &'a [upstream::Resolved],
    records: &'a RecordStore,
    registry: &'a Registry,
    options: EnsureOptions,
    warnings: Vec<String>,
}

impl Run<'_> {
    /// Says `message` on stderr and in the report, once (a wait loop meets
    /// the same condition every round).
    fn warn(&mut self, message: String) {
        if self.warnings.contains(&message) {
            return;
        }
        self.progress.pause();
        eprintln!("warning: {message}");
        self.progress.resume();
        self.warnings.push(message);
    }

    /// A record lookup that turns an unreachable cache into `None` plus a
    /// warning, unless the cache is required.
    async fn record(&mut self, key: &cache_proto::Key) -> Result<Option<BaseRecord>, EnsureError> {
        let answer = self.records.get(key).await;
        self.unless_required(answer)
    }

    /// [`base_key::unless_required`], warning through [`Run::warn`].
    fn unless_required<T>(
        &mut self,
        answer: Result<Option<T>, ClientError>,
    ) -> Result<Option<T>, EnsureError> {
        let mut warnings = Vec::new();
        let found = base_key::unless_required(answer, self.options.require_cache, &mut warnings);
        for warning in warnings {
            self.warn(warning);
        }
        found
    }

    async fn remember(&mut self, record: &BaseRecord) -> Result<(), EnsureError> {
        for key in [record.key, latest_key(&record.image)] {
            if let Err(error) = self.records.put(&key, record).await {
                if self.options.require_cache {
                    return Err(EnsureError::CacheRequired(error));
                }
                self.warn(format!("could not record the base: {error}"));
                break;
            }
        }
        Ok(())
    }

    fn record_for(&self, base: &BaseKey, tag: &str, digest: &str) -> BaseRecord {
        BaseRecord {
            version: 1,
            key: base.key,
            image: self.settings.image.describe(),
            reference: self.settings.image.reference(tag, digest),
            digest: digest.to_owned(),
            inputs: base.inputs.clone(),
            created: now_seconds(),
            plan: Vec::new(),
        }
    }

    /// An existing, still present base for `base`, and where it was found:
    /// under this run's own tag, else (in an untrusted namespace) under the
    /// trusted one, main's base of the same key. A trusted run looks only
    /// at the trusted tag.
    async fn lookup(
        &mut self,
        base: &BaseKey,
    ) -> Result<Option<(BaseRecord, &'static str)>, EnsureError> {
        let tag = self.settings.base_tag(&base.key);
        self.progress.quick(format!("looking up {tag}"));
        let answers = lookup_answers(self.settings, self.records, self.registry, base).await;
        self.settle_lookup(base, answers).await
    }

    /// What the lookup of `base` found, from its [`lookup_answers`].
    async fn settle_lookup(
        &mut self,
        base: &BaseKey,
        (recorded, tagged): LookupAnswers,
    ) -> Result<Option<(BaseRecord, &'static str)>, EnsureError> {
        let target = &self.settings.image;
        let tag = self.settings.base_tag(&base.key);
        let recorded = self.unless_required(recorded)?;
        let tagged = tagged?;
        match (recorded, tagged) {
            (Some(record), Some(digest)) if record.digest == digest => {
                Ok(Some((self.record_for(base, &tag, &digest), "cache")))
            }
            (recorded, Some(digest)) => {
                if let Some(record) = recorded {
                    self.warn(format!(
                        "the cache's record for {tag} names {} but {} holds {digest}; \
                         using the registry's",
                        record.digest,
                        target.describe()
                    ));
                }
                let record = self.record_for(base, &tag, &digest);
                self.remember(&record).await?;
                Ok(Some((record, "registry")))
            }
            (recorded, None) => {
                if let Some(trusted) = self.settings.trusted_base_tag(&base.key)
                    && let Some(digest) =
                        publish::resolve_tag(target, self.registry, &trusted).await?
                {
                    // Main's base: used, never re-recorded as this namespace's.
                    return Ok(Some((self.record_for(base, &trusted, &digest), "registry")));
                }
                if let Some(record) = recorded {
                    self.warn(format!(
                        "recorded base {} no longer exists as {tag} in {}; rebuilding",
                        record.digest,
                        target.describe()
                    ));
                }
                Ok(None)
            }
        }
    }

    async fn build(&mut self, base: &BaseKey) -> Result<(BaseRecord, Pushed), EnsureError> {
        let settings = self.settings;
        let tag = settings.base_tag(&base.key);
        let mut tags = vec![tag.as_str()];
        if let Some(moving) = settings.image.moving_tag(settings.tag.as_deref()) {
            if settings.may_move_tags() {
                tags.push(moving);
            } else {
                self.warn(format!(
                    "not moving the tag {moving}: this run is in an untrusted namespace"
                ));
            }
        }
        let pushed = match &settings.recipe {
            Recipe::Native {
                from,
                install,
                install_in,
                capture,
                package_layers,
                max_layers,
            } => {
                let target = settings.image.at(&tag)?;
                let package_layers = package_layers.as_ref().map(|step| PackageLayers {
                    step,
                    records: self.records,
                    target: &target,
                    max_layers: *max_layers,
                    reuse: !self.options.force,
                });
                let staging =
                    tempfile::tempdir().map_err(BuildError::io("creating a staging folder"))?;
                let started = Instant::now();
                let from = from
                    .as_deref()
                    .map(|from| base_key::pinned(from, self.upstreams));
                let spec = NativeSpec {
                    root: &settings.root,
                    from: from.as_deref(),
                    install,
                    args: &settings.args,
                    platform: &settings.platform,
                    key: &base.key,
                    install_in: *install_in,
                    capture: *capture,
                    rootfs_cache: &settings.rootfs_cache,
                    package_layers,
                };
                self.progress.pause();
                let image = native::build(self.registry, &spec, staging.path()).await?;
                self.progress.resume();
                for warning in &image.warnings {
                    self.warn(warning.clone());
                }
                let build_seconds = started.elapsed().as_secs_f64();
                let started = Instant::now();
                self.progress
                    .slow(format!("pushing to {}", settings.image.describe()));
                let bytes = publish::publish(&settings.image, self.registry, &image, &tags).await?;
                Pushed {
                    digest: image.digest(),
                    build_seconds,
                    push_seconds: started.elapsed().as_secs_f64(),
                    bytes,
                    package_layers: image.package_layers,
                }
            }
            Recipe::Dockerfile(dockerfile) => self.build_external(dockerfile, base, &tags).await?,
        };
        let record = BaseRecord {
            // The glue holds no package and adds nothing.
            plan: pushed
                .package_layers
                .iter()
                .flat_map(|layer| layer.packages.iter().cloned())
                .collect(),
            ..self.record_for(base, &tag, &pushed.digest)
        };
        self.remember(&record).await?;
        Ok((record, pushed))
    }
}

impl Run<'_> {
    /// Builds with docker, buildah or podman. Buildah and podman export to
    /// a staging layout that cachectl pushes; docker pushes itself.
    async fn build_external(
        &mut self,
        dockerfile: &std::path::Path,
        base: &BaseKey,
        tags: &[&str],
    ) -> Result<Pushed, EnsureError> {
        let settings = self.settings;
        let staging = tempfile::tempdir().map_err(BuildError::io("creating a staging folder"))?;
        let layout = staging.path().join("oci");
        let upstream_hosts = upstream::hosts(self.all_upstreams);
        let insecure: Vec<String> = upstream_hosts
            .iter()
            .filter(|host| self.registry.speaks_plain_http(host))
            .cloned()
            .collect();
        let credentials = self
            .registry
            .credentials()
            .map(|(user, password)| (user, password, upstream_hosts.as_slice()));
        let builder_env = match settings.builder {
            BuilderKind::Docker => registries::BuilderEnv::default(),
            _ => registries::builder_env(staging.path(), &insecure, credentials)
                .map_err(BuildError::io("writing the builder's registry settings"))?,
        };
        for warning in builder_env.warnings {
            self.warn(warning);
        }
        let spec = ExternalSpec {
            kind: settings.builder,
            root: &settings.root,
            dockerfile,
            context: &settings.context,
            args: &settings.args,
            platform: &settings.platform,
            target: &settings.image,
            tags,
            staging: &layout,
            pull: settings.upstream == Policy::Track,
            builder_args: &settings.builder_args,
            key: &base.key,
        };
        self.progress.pause();
        let (build_seconds, export_seconds) = external::build(&spec, &builder_env.vars).await?;
        self.progress.resume();
        if settings.builder == BuilderKind::Docker {
            let tag = tags.first().copied().unwrap_or_default();
            let digest = publish::resolve_tag(&settings.image, self.registry, tag)
                .await?
                .ok_or_else(|| {
                    BuildError::Base(format!(
                        "docker reported success but {} has no tag {tag}",
                        settings.image.describe()
                    ))
                })?;
            return Ok(Pushed {
                digest,
                build_seconds,
                push_seconds: export_seconds,
                bytes: 0,
                package_layers: Vec::new(),
            });
        }
        let started = Instant::now();
        self.progress
            .slow(format!("pushing to {}", settings.image.describe()));
        let staged = Location::parse(
            &format!("oci:{}:{}", layout.display(), external::STAGED_NAME),
            &settings.root,
        )?;
        let (digest, pushed) =
            publish::copy_image(&staged, &settings.image, self.registry, tags).await?;
        let push_seconds = export_seconds + started.elapsed().as_secs_f64();
        Ok(Pushed {
            digest,
            build_seconds,
            push_seconds,
            bytes: pushed,
            package_layers: Vec::new(),
        })
    }
}

/// A base this run built and pushed.
struct Pushed {
    /// Its manifest digest.
    digest: String,
    /// Seconds building.
    build_seconds: f64,
    /// Seconds pushing (for docker, exporting).
    push_seconds: f64,
    /// Bytes pushed.
    bytes: u64,
    /// With package layers: each layer, built or reused.
    package_layers: Vec<PackageLayer>,
}

/// How a miss ended.
enum Settled {
    /// We built it.
    Built(BaseRecord, Pushed),
    /// Another job built it while we waited (or just before we started).
    Found(BaseRecord, &'static str),
}

impl Run<'_> {
    /// Builds under the cache server's build lease, so that of several jobs
    /// missing the same key one builds and the others use its result.
    async fn build_or_wait(&mut self, base: &BaseKey) -> Result<Settled, EnsureError> {
        let Some(leases) = self.records.leases() else {
            return self.build_now(base).await;
        };
        let deadline = Instant::now() + self.options.wait;
        let mut waited = false;
        loop {
            match leases.acquire(&base.key).await {
                Ok(Acquired::Granted) => {
                    if waited && let Some((record, source)) = self.lookup(base).await? {
                        leases.release(&base.key).await;
                        return Ok(Settled::Found(record, source));
                    }
                    let _renewing = leases.keep_alive(base.key);
                    let result = self.build_now(base).await;
                    leases.release(&base.key).await;
                    return result;
                }
                Ok(Acquired::Held(lease)) => {
                    if !waited {
                        self.progress.pause();
                        eprintln!(
                            "another job ({}) is building this base; waiting for it (up to {:?})",
                            lease.holder, self.options.wait
                        );
                        waited = true;
                        self.progress.resume();
                    }
                    // A registry error while the other job pushes (a
                    // half-written tag can answer 500) is not our failure:
                    // look again next round.
                    match self.lookup(base).await {
                        Ok(Some((record, source))) => return Ok(Settled::Found(record, source)),
                        Ok(None) => {}
                        Err(error) => {
                            tracing::debug!(%error, "looking for the other job's base");
                            self.warn(
                                "the registry answered an error while the other job pushes; still waiting"
                                    .to_owned(),
                            );
                        }
                    }
                    if Instant::now() >= deadline {
                        self.warn(format!(
                            "gave up waiting for {} after {:?}; building here",
                            lease.holder, self.options.wait
                        ));
                        return self.build_now(base).await;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) if self.options.require_cache => {
                    return Err(EnsureError::CacheRequired(error));
                }
                Err(error) => {
                    self.warn(format!("{error}; building without a lease"));
                    return self.build_now(base).await;
                }
            }
        }
    }

    async fn build_now(&mut self, base: &BaseKey) -> Result<Settled, EnsureError> {
        let (record, pushed) = self.build(base).await?;
        Ok(Settled::Built(record, pushed))
    }
}

/// The record and the tag of a base key, as asked.
type LookupAnswers = (
    Result<Option<BaseRecord>, ClientError>,
    Result<Option<String>, ImageError>,
);

/// Asks for `base`'s record and tag at once: a warm hit is these two
/// round trips (one, when they go while the upstreams are asked). The
/// record only says where to look: the target's own tag decides. A record
/// naming another digest (a stale or poisoned action-cache entry) is never
/// used, and what is printed is built from our own settings and the digest
/// the target holds, never copied from it.
async fn lookup_answers(
    settings: &BaseSettings,
    records: &RecordStore,
    registry: &Registry,
    base: &BaseKey,
) -> LookupAnswers {
    let tag = settings.base_tag(&base.key);
    tokio::join!(
        records.get::<BaseRecord>(&base.key),
        publish::resolve_tag(&settings.image, registry, &tag)
    )
}

/// Runs `ensure-base`; `all_upstreams` are `settings.upstreams()`.
pub async fn ensure_base(
    settings: &BaseSettings,
    all_upstreams: &[Upstream],
    records: &RecordStore,
    registry: &Registry,
    options: EnsureOptions,
) -> Result<EnsureReport, EnsureError> {
    let started = Instant::now();
    // The key the upstreams gave last time is looked up while they are
    // asked (not with --force, which looks nothing up).
    let speculate = (!options.force).then_some(|guess: BaseKey| async move {
        lookup_answers(settings, records, registry, &guess).await
    });
    let (current, guessed) = base_key::current_with(
        settings,
        all_upstreams,
        records,
        registry,
        options.require_cache,
        speculate,
    )
    .await?;
    let Current {
        base,
        upstreams,
        previous,
        warnings,
    } = current;
    let hash_seconds = started.elapsed().as_secs_f64();
    let mut run = Run {
        progress: Progress::for_stderr(),
        settings,
        all_upstreams,
        upstreams: &upstreams,
        records,
        registry,
        options,
        warnings: Vec::new(),
    };
    for warning in warnings {
        run.warn(warning);
    }
    let lookup_started = Instant::now();
    let found = match guessed {
        _ if options.force => None,
        Some((guess, answers)) if guess.key == base.key => {
            run.settle_lookup(&base, answers).await?
        }
        _ => run.lookup(&base).await?,
    };
    let lookup_seconds = lookup_started.elapsed().as_secs_f64();
    if let Some((record, source)) = found {
        return Ok(EnsureReport {
            key: base.key.to_string(),
            image: record.image,
            reference: record.reference,
            digest: record.digest,
            hit: true,
            source,
            seconds: started.elapsed().as_secs_f64(),
            hash_seconds,
            lookup_seconds,
            build_seconds: 0.0,
            push_seconds: 0.0,
            pushed_bytes: 0,
            changed: Vec::new(),
            package_layers: Vec::new(),
            plan_changes: Vec::new(),
            warnings: run.warnings,
        });
    }
    let previous = match previous {
        Some(previous) => previous,
        None => run.record(&latest_key(&settings.image.describe())).await?,
    };
    let changed = match &previous {
        Some(previous) => key::diff(&previous.inputs, &base.inputs),
        None => Vec::new(),
    };
    run.progress.pause();
    let tag = settings.base_tag(&base.key);
    let same_key = previous.as_ref().is_some_and(|p| p.key == base.key);
    if previous.is_none() {
        eprintln!("building base {tag} (no earlier base recorded for this image)");
    } else if changed.is_empty() && !same_key {
        eprintln!(
            "building base {tag} (the key's format changed since the last base, \
             which an earlier cachectl recorded; its inputs did not)"
        );
    } else if changed.is_empty() && options.force {
        eprintln!("building base {tag} (--force: nothing changed since the last base)");
    } else if changed.is_empty() {
        eprintln!("building base {tag} (nothing changed since the last base, but it is not there)");
    } else {
        eprintln!("building base {tag}; changed since the last base:");
        for change in &changed {
            eprintln!("  {change}");
        }
    }
    let (record, source, pushed) = match run.build_or_wait(&base).await? {
        Settled::Built(record, pushed) => (record, "built", Some(pushed)),
        Settled::Found(record, source) => (record, source, None),
    };
    let hit = pushed.is_none();
    let (build_seconds, push_seconds, pushed_bytes) =
        pushed.as_ref().map_or((0.0, 0.0, 0), |pushed| {
            (pushed.build_seconds, pushed.push_seconds, pushed.bytes)
        });
    let package_layers = pushed
        .map(|pushed| pushed.package_layers)
        .unwrap_or_default();
    let plan_changes = match &previous {
        // Against a base of package layers only (one layer records no plan).
        Some(previous) if !record.plan.is_empty() && !previous.plan.is_empty() => {
            plan::diff(&previous.plan, &record.plan)
        }
        _ => Vec::new(),
    };
    Ok(EnsureReport {
        key: base.key.to_string(),
        image: record.image,
        reference: record.reference,
        digest: record.digest,
        hit,
        source,
        seconds: started.elapsed().as_secs_f64(),
        hash_seconds,
        lookup_seconds,
        build_seconds,
        push_seconds,
        pushed_bytes,
        changed,
        package_layers,
        plan_changes,
        warnings: run.warnings,
    })
}

/// The flags `ensure-base` and `build` share.
#[derive(Debug, Clone, Copy)]
pub struct Flags {
    /// Build even on a hit.
    pub force: bool,
    /// How long to wait for another job building the same base.
    pub wait: Duration,
}

impl Flags {
    /// `--force` and `--wait`.
    pub fn new(force: bool, wait: Duration) -> Self {
        Self { force, wait }
    }
}

/// The registry hosts `ensure-base` talks to: the base image's, the native
/// builder's starting image's and the Dockerfile's upstream images'.
pub fn base_hosts(settings: &BaseSettings, upstreams: &[Upstream]) -> Vec<String> {
    let mut hosts = Vec::new();
    if let ImageTarget::Registry(repository) = &settings.image {
        hosts.extend(host_of(repository));
    }
    // The native builder's `from` is among the upstreams.
    hosts.extend(upstream::hosts(upstreams));
    hosts.sort();
    hosts.dedup();
    hosts
}

/// What `ensure-base` works with: the base's settings, its upstream images
/// and one registry session, which `build` also pushes the app in.
pub struct BaseSession {
    settings: BaseSettings,
    upstreams: Vec<Upstream>,
    registry: Registry,
    require_cache: bool,
}

impl BaseSession {
    /// The session for `cli`'s base; its registry client also knows
    /// `app_host` (the app image's registry).
    pub fn new(cli: &Cli, file: &ConfigFile, app_host: Option<&str>) -> Result<Self, Failure> {
        let settings = cli.base_settings(file).map_err(Failure::usage)?;
        let upstreams = settings.upstreams().map_err(EnsureError::from)?;
        let hosts = base_hosts(&settings, &upstreams)
            .into_iter()
            .chain(app_host.map(str::to_owned));
        let registry = registry_for(cli, hosts);
        Ok(Self {
            settings,
            upstreams,
            registry,
            require_cache: cli.require_cache,
        })
    }

    /// The registry client of the session.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The base for the current inputs: found, or built and pushed.
    pub async fn ensure(
        &self,
        records: &RecordStore,
        flags: Flags,
    ) -> Result<EnsureReport, Failure> {
        let options = EnsureOptions {
            force: flags.force,
            require_cache: self.require_cache,
            wait: flags.wait,
        };
        Ok(ensure_base(
            &self.settings,
            &self.upstreams,
            records,
            &self.registry,
            options,
        )
        .await?)
    }
}

/// `cachectl ensure-base`: prints the base's reference (or its report).
pub async fn run(cli: &Cli, file: &ConfigFile, flags: Flags) -> Result<(), Failure> {
    let records = records_for(cli, file)?;
    let report = BaseSession::new(cli, file, None)?
        .ensure(&records, flags)
        .await?;
    output::report_ensure(&report, cli.json).map_err(Failure::failed)?;
    records.report_event(&events::from_ensure(&report)).await;
    Ok(())
}
