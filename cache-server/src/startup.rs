//! Starting the server: storage and index opened, the [`AppState`] for one
//! server or for replicas sharing a bucket (index trust, leases in the
//! bucket, shared eviction, redirects), and the background tasks (crash
//! leftovers sweep, eviction, access-time flusher), then serving until a
//! signal.

use std::time::Duration;

use anyhow::Context;

use crate::auth::AuthMode;
use crate::blob::upload::UploadSettings;
use crate::cache::catalog::IndexTrust;
use crate::cache::eviction::SharedEviction;
use crate::config::Cli;
use crate::http::app;
use crate::index::Index;
use crate::oidc::Oidc;
use crate::oidc::config::OidcConfig;
use crate::replicated::leases::{LeaseBook, probe_guarantee};
use crate::replicated::{EventLog, TokenStore};
use crate::serve::{HttpWorkers, ServeSettings, load_tls, load_tls_for};
use crate::state::AppState;
use crate::storage::Storage;

/// The state a server over `storage` and `index` serves, as `cli` says.
pub async fn app_state(cli: &Cli, storage: Storage, index: Index) -> anyhow::Result<AppState> {
    let upload = UploadSettings {
        max_size: cli.max_blob_size,
        zstd_level: cli.zstd_level,
    };
    let shared = cli.shared()?;
    let replica = cli.replica_id.clone().unwrap_or_else(random_replica_id);
    let (tokens, events) = if shared {
        (
            TokenStore::bucket(storage.clone()),
            EventLog::bucket(storage.clone(), replica.clone()),
        )
    } else {
        (
            TokenStore::index(index.clone()),
            EventLog::Index(index.clone()),
        )
    };
    let auth = cli.auth.unwrap_or(AuthMode::default_for(&cli.listen));
    if auth != AuthMode::Off
        && !cli.listen.ip().is_loopback()
        && cli.oidc_config.is_none()
        && !tokens.has_active().await?
    {
        anyhow::bail!(
            "refusing to listen on {} with auth {:?} and no active token: create one with \
             `cache-server token create --scope admin`, or pass --auth off explicitly",
            cli.listen,
            auth
        );
    }
    let mut state = AppState::new(storage.clone(), index.clone(), upload)
        .with_auth(auth)
        .with_fallbacks(cli.fallback_chains()?)
        .with_shared_state(tokens, events);
    if !cli.namespace_quota.is_empty() {
        if shared {
            tracing::warn!(
                "--namespace-quota with replicas: each replica charges what it stored, so a \
                 namespace may hold up to its quota on every replica"
            );
        }
        state = state.with_namespace_quotas(cli.namespace_quota.clone());
    }
    if let Some(path) = &cli.oidc_config {
        let config = OidcConfig::load(path)?;
        for warning in config.warnings() {
            tracing::warn!("{}: {warning}", path.display());
        }
        let oidc = Oidc::new(config);
        if auth == AuthMode::Off {
            tracing::warn!(
                "--oidc-config has no effect with --auth off: every request is admitted anyway"
            );
        }
        tracing::info!("accepting ID tokens of {}", oidc.issuer_names().join(", "));
        state = state.with_oidc(oidc);
    }
    if shared {
        let settle = Duration::from_millis(cli.lease_settle_ms.max(1));
        let guarantee = probe_guarantee(&storage, settle).await;
        tracing::info!(
            "replica {replica}: the bucket may be shared; index rows trusted for {} s, \
             leases in the bucket by {guarantee}",
            cli.index_fresh_for
        );
        state = state
            .with_index_trust(IndexTrust::Cache {
                fresh_for: Duration::from_secs(cli.index_fresh_for),
            })
            .with_leases(LeaseBook::Bucket { storage, guarantee });
    }
    if let Some(quota) = cli.max_size {
        state = state.with_quota(quota);
        if shared && let Some(evictor) = state.evictor.clone() {
            let turn = SharedEviction {
                leases: state.leases.clone(),
                replica: replica.clone(),
            };
            state = state.with_evictor(evictor.shared(turn));
        }
    }
    if let Some(bytes) = cli.redirect_reads_over {
        if state.storage.can_presign() {
            state = state.with_redirect_reads_over(bytes);
        } else {
            tracing::warn!("--redirect-reads-over needs S3 storage; blobs are served directly");
        }
    }
    state = state
        .with_events_retention(cli.events_retention)
        .with_upload_memory(cli.upload_memory);
    Ok(state)
}

/// `cache-server serve` (the default): serves until SIGINT or SIGTERM.
pub async fn serve(cli: &Cli) -> anyhow::Result<()> {
    let crate::config::Opened {
        storage,
        index,
        described,
    } = cli.open()?;
    if let Some(folder) = cli.location()?.local_folder().cloned() {
        let started = std::time::SystemTime::now();
        tokio::task::spawn_blocking(move || {
            match crate::storage::staging::sweep(&folder, started) {
                Ok((0, _)) => {}
                Ok((files, bytes)) => {
                    tracing::info!(
                        files,
                        bytes,
                        "removed writes left unpublished by an earlier crash"
                    );
                }
                Err(error) => tracing::warn!(%error, "could not sweep unpublished writes"),
            }
        });
    }
    let auth = cli.auth.unwrap_or(AuthMode::default_for(&cli.listen));
    let shared = cli.shared()?;
    let state = app_state(cli, storage, index.clone()).await?;
    let eviction_interval = Duration::from_secs(
        cli.eviction_interval
            .unwrap_or(if shared { 10 } else { 1 })
            .max(1),
    );
    let evicting = state
        .evictor
        .clone()
        .map(|evictor| tokio::spawn(evictor.run(eviction_interval)));
    let settings = ServeSettings {
        header_timeout: Duration::from_secs(cli.header_timeout.max(1)),
        idle_timeout: Duration::from_secs(cli.idle_timeout.max(1)),
        tls: match (&cli.tls_cert, &cli.tls_key) {
            (Some(cert), Some(key)) => Some(load_tls(cert, key)?),
            _ => None,
        },
        ..ServeSettings::default()
    };
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;
    // Started before the address is announced: whoever reads it may
    // connect (and look at the threads) at once.
    let workers = HttpWorkers {
        threads: cli.http_threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            usize::from,
        ),
        affinity: cli.http_cpu_affinity,
    }
    .start()
    .context("starting the HTTP worker threads")?;
    tracing::info!("listening on {address}");
    if settings.tls.is_some() {
        tracing::info!("serving HTTPS (TLS by rustls)");
    }
    tracing::info!(
        "serving {described}, blobs up to {} bytes, quota {}, auth {auth:?}",
        cli.max_blob_size,
        cli.max_size
            .map_or_else(|| "none".to_owned(), |quota| format!("{quota} bytes"))
    );

    let grpc = match cli.grpc_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("binding {address} (--grpc-listen)"))?;
            let address = listener.local_addr().context("reading the bound address")?;
            tracing::info!("gRPC (Remote Execution API cache) listening on {address}");
            let tls = match (&cli.tls_cert, &cli.tls_key) {
                (Some(cert), Some(key)) => {
                    tracing::info!("gRPC over TLS (the --tls-cert of HTTPS)");
                    Some(load_tls_for(cert, key, b"h2")?)
                }
                _ => None,
            };
            let grpc_state = state.clone();
            Some(tokio::spawn(async move {
                if let Err(error) =
                    crate::serve_grpc::serve(grpc_state, listener, tls, shutdown_signal()).await
                {
                    tracing::error!(%error, "the gRPC server stopped");
                }
            }))
        }
        None => None,
    };
    let flusher = tokio::spawn(flush_access_periodically(index.clone()));
    crate::serve::serve(listener, app(state), settings, workers, shutdown_signal())
        .await
        .context("serving HTTP")?;
    if let Some(grpc) = grpc {
        grpc.abort();
    }
    flusher.abort();
    if let Some(evicting) = evicting {
        evicting.abort();
    }
    index
        .flush_access()
        .await
        .context("writing access times at shutdown")?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// A replica name for leases and events when none is given.
fn random_replica_id() -> String {
    format!("replica-{}", crate::auth::random_hex(4))
}

async fn flush_access_periodically(index: Index) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        if let Err(error) = index.flush_access().await {
            tracing::warn!(%error, "could not write access times to the index");
        }
    }
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
