//! Every route of every protocol, as one type: [`Endpoint`]. The axum table
//! (`http::app`) mounts [`Endpoint::ROUTED`] at their templates, the auth
//! middleware finds a request's endpoint with [`Endpoint::of`] (the same
//! templates, matched the way axum matches them), and
//! [`Endpoint::required_scope`] decides who may call it in one exhaustive
//! `match`: a route cannot be added without deciding its scope.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::http::Method;
use cache_proto::routes;

use crate::index::Scope;

/// A route family: a path template of one protocol (any method).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /healthz`: the process answers.
    Healthz,
    /// `GET /readyz`: storage answers too.
    Readyz,
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// `GET /v1/stats`.
    Stats,
    /// `GET /`: the dashboard.
    Dashboard,
    /// `GET` (list) / `POST` (create) `/v1/tokens`.
    Tokens,
    /// `DELETE /v1/tokens/{id}`.
    Token,
    /// `HEAD/GET/PUT /v1/cas/{digest}`.
    Cas,
    /// `POST /v1/cas/missing`: which digests the server lacks.
    CasMissing,
    /// `POST /v1/cas/batch`: many small blobs in one body.
    CasBatch,
    /// `POST /v1/cas/batch-get`: many small blobs in one answer.
    CasBatchGet,
    /// `HEAD/GET/PUT/DELETE /v1/ac/{key}`.
    Ac,
    /// `POST/DELETE /v1/leases/{key}`.
    Lease,
    /// `GET/POST /v1/events`: the deploy history.
    Events,
    /// Turborepo: `GET /v8/artifacts/status`.
    TurboStatus,
    /// Turborepo: `POST /v8/artifacts/events` (usage events).
    TurboEvents,
    /// Turborepo: `POST /v8/artifacts` (which hashes exist).
    TurboQuery,
    /// Turborepo: `HEAD/GET/PUT /v8/artifacts/{hash}`.
    TurboArtifact,
    /// Nx: `HEAD/GET/PUT /v1/cache/{hash}`.
    Nx,
    /// Gradle: `HEAD/GET/PUT /cache/{key}`.
    Gradle,
    /// ccache: `/ccache/{key}` (any method ccache sends).
    CcacheFlat,
    /// ccache with subdirs: `/ccache/{first}/{rest}`.
    CcacheSubdirs,
    /// No template matched: the Bazel HTTP cache (`…/ac/{hash}`,
    /// `…/cas/{hash}` under any prefix), else 404.
    Fallback,
}

impl Endpoint {
    /// Every endpoint with a template, in the order the table mounts them.
    pub const ROUTED: [Endpoint; 22] = [
        Self::Healthz,
        Self::Readyz,
        Self::Metrics,
        Self::Stats,
        Self::Dashboard,
        Self::Tokens,
        Self::Token,
        Self::Cas,
        Self::CasMissing,
        Self::CasBatch,
        Self::CasBatchGet,
        Self::Ac,
        Self::Lease,
        Self::Events,
        Self::TurboStatus,
        Self::TurboEvents,
        Self::TurboQuery,
        Self::TurboArtifact,
        Self::Nx,
        Self::Gradle,
        Self::CcacheFlat,
        Self::CcacheSubdirs,
    ];

    /// The path template (axum's syntax), `None` for [`Endpoint::Fallback`].
    pub fn template(self) -> Option<&'static str> {
        Some(match self {
            Self::Healthz => routes::HEALTHZ,
            Self::Readyz => routes::READYZ,
            Self::Metrics => routes::METRICS,
            Self::Stats => routes::STATS,
            Self::Dashboard => routes::DASHBOARD,
            Self::Tokens => routes::TOKENS,
            Self::Token => routes::TOKEN_TEMPLATE,
            Self::Cas => routes::CAS_TEMPLATE,
            Self::CasMissing => routes::CAS_MISSING,
            Self::CasBatch => routes::CAS_BATCH,
            Self::CasBatchGet => routes::CAS_BATCH_GET,
            Self::Ac => routes::AC_TEMPLATE,
            Self::Lease => routes::LEASE_TEMPLATE,
            Self::Events => routes::EVENTS,
            Self::TurboStatus => "/v8/artifacts/status",
            Self::TurboEvents => "/v8/artifacts/events",
            Self::TurboQuery => "/v8/artifacts",
            Self::TurboArtifact => "/v8/artifacts/{hash}",
            Self::Nx => "/v1/cache/{hash}",
            Self::Gradle => "/cache/{key}",
            Self::CcacheFlat => "/ccache/{key}",
            Self::CcacheSubdirs => "/ccache/{first}/{rest}",
            Self::Fallback => return None,
        })
    }

    /// The scope a request needs, `None` for health checks, which anyone
    /// may call. Admin: the dashboard (it shows what `/v1/stats` shows; a
    /// browser asks for it with Basic: any user, the token as password),
    /// stats, metrics and tokens. Queries sent as `POST` only read. All
    /// else reads with `GET`, `HEAD`, `OPTIONS` and `PROPFIND`, and writes
    /// with any other method.
    pub fn required_scope(self, method: &Method) -> Option<Scope> {
        match self {
            Self::Healthz | Self::Readyz => None,
            Self::Dashboard | Self::Stats | Self::Metrics | Self::Tokens | Self::Token => {
                Some(Scope::Admin)
            }
            Self::CasMissing | Self::CasBatchGet | Self::TurboQuery | Self::TurboEvents => {
                Some(Scope::Read)
            }
            Self::Cas
            | Self::CasBatch
            | Self::Ac
            | Self::Lease
            | Self::Events
            | Self::TurboStatus
            | Self::TurboArtifact
            | Self::Nx
            | Self::Gradle
            | Self::CcacheFlat
            | Self::CcacheSubdirs
            | Self::Fallback => Some(by_method(method)),
        }
    }

    /// The endpoint of a request path, matched against the same templates
    /// as the axum table and in the same way (on the raw path).
    pub fn of(path: &str) -> Self {
        static TABLE: LazyLock<matchit::Router<Endpoint>> = LazyLock::new(|| {
            let mut table = matchit::Router::new();
            for endpoint in Endpoint::ROUTED {
                if let Some(template) = endpoint.template() {
                    // The templates are constants, unit-tested to insert.
                    let _ = table.insert(template, endpoint);
                }
            }
            table
        });
        TABLE.at(path).map_or(Self::Fallback, |found| *found.value)
    }

    /// The endpoint whose route template is `template` (as the router's
    /// `MatchedPath` gives it), without matching the path again.
    pub fn of_template(template: &str) -> Option<Self> {
        static TABLE: LazyLock<HashMap<&'static str, Endpoint>> = LazyLock::new(|| {
            Endpoint::ROUTED
                .into_iter()
                .filter_map(|endpoint| Some((endpoint.template()?, endpoint)))
                .collect()
        });
        TABLE.get(template).copied()
    }
}

/// Reads are `GET`, `HEAD`, `OPTIONS` and WebDAV's `PROPFIND`.
fn by_method(method: &Method) -> Scope {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || method.as_str() == "PROPFIND"
    {
        Scope::Read
    } else {
        Scope::Write
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope_of(method: &Method, path: &str) -> Option<Scope> {
        Endpoint::of(path).required_scope(method)
    }

    #[test]
    fn scopes_follow_method_and_route() {
        assert_eq!(scope_of(&Method::GET, "/healthz"), None);
        assert_eq!(scope_of(&Method::GET, "/v1/cas/ab"), Some(Scope::Read));
        assert_eq!(scope_of(&Method::PUT, "/v1/cas/ab"), Some(Scope::Write));
        assert_eq!(
            scope_of(&Method::POST, "/v1/cas/missing"),
            Some(Scope::Read)
        );
        assert_eq!(scope_of(&Method::GET, "/v1/stats"), Some(Scope::Admin));
        assert_eq!(
            scope_of(&Method::DELETE, "/v1/tokens/x"),
            Some(Scope::Admin)
        );
        assert_eq!(
            scope_of(&Method::DELETE, "/ccache/ab/cd"),
            Some(Scope::Write)
        );
        assert_eq!(scope_of(&Method::POST, "/v8/artifacts"), Some(Scope::Read));
        assert_eq!(
            scope_of(&Method::POST, "/v1/cas/batch-get"),
            Some(Scope::Read)
        );
        assert_eq!(scope_of(&Method::POST, "/v1/cas/batch"), Some(Scope::Write));
    }

    #[test]
    fn every_template_inserts_and_matches_itself() {
        let mut table = matchit::Router::new();
        for endpoint in Endpoint::ROUTED {
            let template = endpoint
                .template()
                .expect("a routed endpoint has a template");
            table
                .insert(template, endpoint)
                .expect("templates do not clash");
        }
        assert_eq!(Endpoint::Fallback.template(), None);
    }

    #[test]
    fn every_template_names_its_endpoint() {
        for endpoint in Endpoint::ROUTED {
            let template = endpoint.template().expect("routed");
            assert_eq!(Endpoint::of_template(template), Some(endpoint));
        }
        assert_eq!(Endpoint::of_template("/v1/cas/abc"), None);
    }

    #[test]
    fn paths_find_their_endpoint() {
        let digest = "a".repeat(64);
        for (path, endpoint) in [
            ("/healthz", Endpoint::Healthz),
            ("/", Endpoint::Dashboard),
            (&format!("/v1/cas/{digest}"), Endpoint::Cas),
            ("/v1/cas/missing", Endpoint::CasMissing),
            ("/v1/cas/batch", Endpoint::CasBatch),
            ("/v1/cas/batch-get", Endpoint::CasBatchGet),
            (&format!("/v1/ac/{digest}"), Endpoint::Ac),
            (&format!("/v1/leases/{digest}"), Endpoint::Lease),
            ("/v1/tokens", Endpoint::Tokens),
            ("/v1/tokens/ci", Endpoint::Token),
            ("/v1/events", Endpoint::Events),
            ("/v8/artifacts", Endpoint::TurboQuery),
            ("/v8/artifacts/status", Endpoint::TurboStatus),
            ("/v8/artifacts/events", Endpoint::TurboEvents),
            ("/v8/artifacts/abc123", Endpoint::TurboArtifact),
            ("/v1/cache/abc123", Endpoint::Nx),
            ("/cache/abc123", Endpoint::Gradle),
            ("/ccache/abcdef", Endpoint::CcacheFlat),
            ("/ccache/ab/cdef", Endpoint::CcacheSubdirs),
            (&format!("/bazel/ac/{digest}"), Endpoint::Fallback),
            ("/v1/cas/", Endpoint::Fallback),
            ("/nothing/here", Endpoint::Fallback),
        ] {
            assert_eq!(Endpoint::of(path), endpoint, "{path}");
        }
    }

    #[test]
    fn every_endpoint_has_its_scope() {
        use Scope::{Admin, Read, Write};
        let methods = [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::POST,
            Method::DELETE,
        ];
        // GET, HEAD, PUT, POST, DELETE.
        let table: [(Endpoint, [Option<Scope>; 5]); 23] = [
            (Endpoint::Healthz, [None; 5]),
            (Endpoint::Readyz, [None; 5]),
            (Endpoint::Metrics, [Some(Admin); 5]),
            (Endpoint::Stats, [Some(Admin); 5]),
            (Endpoint::Dashboard, [Some(Admin); 5]),
            (Endpoint::Tokens, [Some(Admin); 5]),
            (Endpoint::Token, [Some(Admin); 5]),
            (Endpoint::CasMissing, [Some(Read); 5]),
            (Endpoint::CasBatchGet, [Some(Read); 5]),
            (Endpoint::TurboQuery, [Some(Read); 5]),
            (Endpoint::TurboEvents, [Some(Read); 5]),
            (
                Endpoint::Cas,
                [
                    Some(Read),
                    Some(Read),
                    Some(Write),
                    Some(Write),
                    Some(Write),
                ],
            ),
            (
                Endpoint::CasBatch,
                [
                    Some(Read),
                    Some(Read),
                    Some(Write),
                    Some(Write),
                    Some(Write),
                ],
            ),
            (
                Endpoint::Ac,
                [
                    Some(Read),
                    Some(Read),
                    Some(Write),
                    Some(Write),
                    Some(Write),
                ],
            ),
            (
                Endpoint::Lease,
                [
                    Some(Read),
                    Some(Read),
                    Some(Write),
                    Some(Write),
                    Some(Write),
                ],
            ),
            (
                Endpoint::Events,
                [
                    Some(Read),
                    Some(Read),
                    Some(Write),
                    Some(Write),
                    Some(Write),
                ],
            ),
            (
                Endpoint::TurboStatus,
                [
                    Some(Read),
                    Some(Read),
                    Some(Write),
                    Some(Write),
                    Some(Write),
                ],
            ),
            (
                Endpoint::TurboArtifact,
                [
                    Some(Read),
                    Some(Read),
                    Some(Write),
                    Some(Write),
                    Some(Write),
                ],
            ),
            (
                Endpoint::Nx,
                [
                    Some(Read),
                    Some(Read),
                    Some(Write),
                    Some(Write),
                    Some(Write),
                ],
            ),
            (
                Endpoint::Gradle,
                [
                    Some(Read),
                    Some(Read),
                    Some(Write),
                    Some(Write),
                    Some(Write),
                ],
            ),
            (
                Endpoint::CcacheFlat,
                [
                    Some(Read),
                    Some(Read),
                    Some(Write),
                    Some(Write),
                    Some(Write),
                ],
            ),
            (
                Endpoint::CcacheSubdirs,
                [
                    Some(Read),
                    Some(Read),
                    Some(Write),
                    Some(Write),
                    Some(Write),
                ],
            ),
            (
                Endpoint::Fallback,
                [
                    Some(Read),
                    Some(Read),
                    Some(Write),
                    Some(Write),
                    Some(Write),
                ],
            ),
        ];
        let listed: Vec<Endpoint> = table.iter().map(|(endpoint, _)| *endpoint).collect();
        for endpoint in Endpoint::ROUTED.iter().chain([&Endpoint::Fallback]) {
            assert!(listed.contains(endpoint), "{endpoint:?} is not listed here");
        }
        for (endpoint, scopes) in table {
            for (method, scope) in methods.iter().zip(scopes) {
                assert_eq!(
                    endpoint.required_scope(method),
                    scope,
                    "{method} {endpoint:?}"
                );
            }
        }
        let propfind = Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(Endpoint::CcacheFlat.required_scope(&propfind), Some(Read));
        assert_eq!(
            Endpoint::CcacheFlat.required_scope(&Method::OPTIONS),
            Some(Read)
        );
    }
}
