//! The `--oidc-config` file: which CI platforms' ID tokens the server
//! accepts, and the rules that turn their claims into a scope and a
//! namespace policy.
//!
//! ```toml
//! [[issuer]]
//! url = "https://token.actions.githubusercontent.com"
//! audience = "https://cache.example.com"
//!
//! [[issuer.rule]]
//! when = { repository = "acme/web", event_name = "push", ref = "refs/heads/main" }
//! scope = "write"
//! write = ["main"]
//!
//! [[issuer.rule]]
//! when = { repository = "acme/web", event_name = "pull_request" }
//! scope = "write"
//! write = ["pr-{pr}"]
//! read = ["main"]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cache_proto::Invalid;
use serde::Deserialize;
use url::Url;

use super::rules::Rule;
use super::template::{Template, TemplateError};
use crate::index::Scope;

/// Why the OIDC configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not the TOML this module reads.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A value that parses but cannot be used.
    #[error("{path}: issuer {issuer:?}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The issuer it is about.
        issuer: String,
        /// What is wrong.
        problem: Invalid,
    },
}

/// One or several strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(one) => vec![one],
            Self::Many(many) => many,
        }
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    issuer: Vec<IssuerFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerFile {
    url: String,
    audience: OneOrMany,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default)]
    jwks_file: Option<PathBuf>,
    #[serde(default)]
    leeway_seconds: Option<u64>,
    #[serde(default)]
    rule: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    when: BTreeMap<String, String>,
    scope: String,
    #[serde(default)]
    write: Vec<String>,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    default: Option<String>,
}

/// Where an issuer's signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The issuer's discovery document names its JWKS URL.
    Discovery(Url),
    /// A JWKS URL given in the configuration.
    Url(Url),
    /// A JWKS file on disk, for servers that cannot reach the issuer.
    File(PathBuf),
}

/// One trusted issuer.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The `iss` claim, exactly.
    pub issuer: String,
    /// Accepted `aud` values (at least one).
    pub audience: Vec<String>,
    /// Where its keys come from.
    pub keys: KeySource,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway_seconds: u64,
    /// First match wins; no match is a refusal.
    pub rules: Vec<Rule>,
}

/// Every trusted issuer.
#[derive(Debug, Clone, Default)]
pub struct OidcConfig {
    /// In file order.
    pub issuers: Vec<IssuerConfig>,
}

/// Clock skew allowed when the file says nothing.
const DEFAULT_LEEWAY_SECONDS: u64 = 60;

impl OidcConfig {
    /// Reads and checks `path`; a relative `jwks_file` is relative to it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses the file's `text`; `path` names it in errors and anchors
    /// relative `jwks_file`s.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: File = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        let folder = path.parent().unwrap_or(Path::new("."));
        let issuers = file
            .issuer
            .into_iter()
            .map(|issuer| {
                let name = issuer.url.clone();
                issuer_config(issuer, folder).map_err(|problem| ConfigError::Invalid {
                    path: path.to_owned(),
                    issuer: name,
                    problem,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { issuers })
    }
}

/// Claims that name the ref a job runs on.
const REF_CLAIMS: [&str; 2] = ["ref", "ref_path"];
/// Claims that name what started a job: GitHub's and GitLab's.
const EVENT_CLAIMS: [&str; 2] = ["event_name", "pipeline_source"];
/// Ref patterns only pull and merge request jobs (or tags) carry.
const NOT_BRANCH_REFS: [&str; 3] = ["refs/pull/", "refs/merge-requests/", "refs/tags/"];

impl OidcConfig {
    /// What in the rules is accepted but likely unsafe, one line each: a
    /// rule that grants write on a branch's `ref` without naming the event.
    /// GitHub's `pull_request_target`, `workflow_run` and `issue_comment`
    /// jobs carry the default branch's `ref` (`refs/heads/main`) while they
    /// act on a pull request's input, and GitLab's `api`, `trigger` and
    /// `pipeline` pipelines carry the branch they were started on; only
    /// `event_name` (GitHub) or `pipeline_source` (GitLab) tells them from
    /// a push.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for issuer in &self.issuers {
            for (at, rule) in issuer.rules.iter().enumerate() {
                if rule.scope != Scope::Write
                    || EVENT_CLAIMS
                        .iter()
                        .any(|claim| rule.when.contains_key(*claim))
                {
                    continue;
                }
                let branch_ref = REF_CLAIMS.iter().find_map(|claim| {
                    let pattern = rule.when.get(*claim)?;
                    let only_pulls = NOT_BRANCH_REFS
                        .iter()
                        .any(|prefix| pattern.starts_with(prefix));
                    (!only_pulls).then_some((claim, pattern))
                });
                if let Some((claim, pattern)) = branch_ref {
                    warnings.push(format!(
                        "issuer {} rule {}: grants write on {claim} = {pattern:?} without \
                         event_name (GitHub) or pipeline_source (GitLab) in its `when`: \
                         GitHub's pull_request_target, workflow_run and issue_comment jobs \
                         carry the default branch's ref while acting for a pull request, so \
                         they would write there; add event_name = \"push\" (GitLab: \
                         pipeline_source = \"push\")",
                        issuer.issuer,
                        at + 1
                    ));
                }
            }
        }
        warnings
    }
}

fn issuer_config(file: IssuerFile, folder: &Path) -> Result<IssuerConfig, Invalid> {
    let url = secure_url(&file.url, "url")?;
    let audience = file.audience.into_vec();
    if audience.is_empty() || audience.iter().any(String::is_empty) {
        return Err(Invalid::new(
            "audience must name at least one non-empty value",
        ));
    }
    let keys = match (file.jwks_url, file.jwks_file) {
        (Some(_), Some(_)) => return Err(Invalid::new("give jwks_url or jwks_file, not both")),
        (Some(jwks), None) => KeySource::Url(secure_url(&jwks, "jwks_url")?),
        (None, Some(path)) => KeySource::File(folder.join(path)),
        (None, None) => KeySource::Discovery(url),
    };
    if file.rule.is_empty() {
        return Err(Invalid::new(
            "no [[issuer.rule]]: every token would be refused",
        ));
    }
    let rules = file
        .rule
        .into_iter()
        .enumerate()
        .map(|(at, rule)| rule_config(rule).map_err(|e| Invalid(format!("rule {}: {e}", at + 1))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(IssuerConfig {
        issuer: file.url,
        audience,
        keys,
        leeway_seconds: file.leeway_seconds.unwrap_or(DEFAULT_LEEWAY_SECONDS),
        rules,
    })
}

fn rule_config(file: RuleFile) -> Result<Rule, Invalid> {
    if file.when.is_empty() {
        return Err(Invalid::new(
            "`when` names no claim: it would admit every token of the issuer",
        ));
    }
    let scope = match Scope::parse(&file.scope) {
        Some(Scope::Admin) => return Err(Invalid::new("an ID token is never granted admin")),
        Some(scope) => scope,
        None => return Err(Invalid(format!("scope {:?} is read or write", file.scope))),
    };
    let templates = |texts: Vec<String>| {
        texts
            .iter()
            .map(|text| Template::parse(text))
            .collect::<Result<Vec<_>, TemplateError>>()
    };
    let write = templates(file.write).map_err(|e| Invalid(e.to_string()))?;
    let read = templates(file.read).map_err(|e| Invalid(e.to_string()))?;
    if write.is_empty() && read.is_empty() {
        return Err(Invalid::new(
            "the rule grants no namespace: give write or read",
        ));
    }
    if scope == Scope::Read && !write.is_empty() {
        return Err(Invalid::new("a read rule cannot grant write namespaces"));
    }
    let default = file
        .default
        .as_deref()
        .map(Template::parse)
        .transpose()
        .map_err(|e| Invalid(e.to_string()))?;
    Ok(Rule {
        when: file.when,
        scope,
        write,
        read,
        default,
    })
}

/// `text` as a URL that is HTTPS, or HTTP on a loopback host (a test
/// issuer); anything else could be read or changed on the way.
fn secure_url(text: &str, field: &str) -> Result<Url, Invalid> {
    let url = Url::parse(text).map_err(|e| Invalid(format!("{field} {text:?}: {e}")))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        _ => Err(Invalid(format!(
            "{field} {text:?} must be https (http only on a loopback address)"
        ))),
    }
}

/// Whether `url` names this machine.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OidcConfig, String> {
        OidcConfig::parse(text, Path::new("/etc/cache/oidc.toml")).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
        [[issuer]]
        url = "https://token.actions.githubusercontent.com"
        audience = "https://cache.example.com"

        [[issuer.rule]]
        when = { repository = "acme/web", ref = "refs/heads/main", event_name = "push" }
        scope = "write"
        write = ["main"]

        [[issuer.rule]]
        when = { repository = "acme/web", event_name = "pull_request" }
        scope = "write"
        write = ["pr-{pr}"]
        read = ["main"]

        [[issuer]]
        url = "https://gitlab.example.com"
        audience = ["a", "b"]
        jwks_file = "gitlab-jwks.json"

        [[issuer.rule]]
        when = { project_path = "acme/*" }
        scope = "read"
        read = ["main"]
    "#;

    #[test]
    fn a_write_rule_on_a_branch_ref_without_the_event_is_warned_about() {
        assert_eq!(parse(GOOD).unwrap().warnings(), Vec::<String>::new());
        let risky = parse(
            r#"
            [[issuer]]
            url = "https://token.actions.githubusercontent.com"
            audience = "https://cache.example.com"

            [[issuer.rule]]
            when = { repository = "acme/web", ref = "refs/heads/main" }
            scope = "write"
            write = ["main"]

            [[issuer.rule]]
            when = { repository = "acme/web", ref = "refs/pull/*" }
            scope = "write"
            write = ["pr-{pr}"]

            [[issuer.rule]]
            when = { repository = "acme/*", ref = "refs/heads/*" }
            scope = "read"
            read = ["main"]

            [[issuer]]
            url = "https://gitlab.example.com"
            audience = "a"

            [[issuer.rule]]
            when = { project_path = "acme/web", ref = "main", ref_protected = "true" }
            scope = "write"
            write = ["main"]

            [[issuer.rule]]
            when = { project_path = "acme/web", ref = "main", pipeline_source = "push" }
            scope = "write"
            write = ["main"]
            "#,
        )
        .unwrap()
        .warnings();
        assert_eq!(risky.len(), 2, "{risky:#?}");
        assert!(
            risky[0].starts_with("issuer https://token.actions.githubusercontent.com rule 1:")
                && risky[0].contains(r#"ref = "refs/heads/main""#)
                && risky[0].contains("pull_request_target"),
            "{}",
            risky[0]
        );
        assert!(
            risky[1].starts_with("issuer https://gitlab.example.com rule 1:"),
            "{}",
            risky[1]
        );
    }

    #[test]
    fn a_configuration_with_two_issuers_loads() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.issuers.len(), 2);
        let github = &config.issuers[0];
        assert_eq!(
            github.keys,
            KeySource::Discovery(
                Url::parse("https://token.actions.githubusercontent.com").unwrap()
            )
        );
        assert_eq!(github.rules.len(), 2);
        assert_eq!(github.leeway_seconds, 60);
        let gitlab = &config.issuers[1];
        assert_eq!(gitlab.audience, ["a", "b"]);
        assert_eq!(
            gitlab.keys,
            KeySource::File(PathBuf::from("/etc/cache/gitlab-jwks.json"))
        );
    }

    #[test]
    fn unsafe_or_empty_configurations_are_refused() {
        let issuer = |rest: &str| {
            format!("[[issuer]]\nurl = \"https://ci.example.com\"\naudience = \"cache\"\n{rest}")
        };
        let rule = |body: &str| issuer(&format!("[[issuer.rule]]\n{body}"));
        for (text, expected) in [
            (
                "[[issuer]]\nurl = \"http://ci.example.com\"\naudience = \"x\"\n[[issuer.rule]]\nwhen = {a = \"b\"}\nscope = \"read\"\nread = [\"main\"]".to_owned(),
                "must be https",
            ),
            (issuer(""), "no [[issuer.rule]]"),
            (
                rule("when = {}\nscope = \"read\"\nread = [\"main\"]"),
                "names no claim",
            ),
            (
                rule("when = {a = \"b\"}\nscope = \"admin\"\nwrite = [\"main\"]"),
                "never granted admin",
            ),
            (
                rule("when = {a = \"b\"}\nscope = \"read\"\nwrite = [\"main\"]"),
                "cannot grant write",
            ),
            (rule("when = {a = \"b\"}\nscope = \"write\""), "grants no namespace"),
            (
                rule("when = {a = \"b\"}\nscope = \"write\"\nwrite = [\"pr-{nope!}\"]"),
                "placeholder",
            ),
            (
                issuer("jwks_url = \"https://x\"\njwks_file = \"y\"\n[[issuer.rule]]\nwhen = {a = \"b\"}\nscope = \"read\"\nread = [\"main\"]"),
                "not both",
            ),
            (
                rule("when = {a = \"b\"}\nscope = \"read\"\nread = [\"main\"]\nsurprise = 1"),
                "unknown field",
            ),
        ] {
            let error = parse(&text).unwrap_err();
            assert!(error.contains(expected), "{text}\n=> {error}");
        }
    }

    #[test]
    fn http_is_accepted_on_loopback_only() {
        assert!(secure_url("http://127.0.0.1:8080", "url").is_ok());
        assert!(secure_url("http://localhost:8080", "url").is_ok());
        assert!(secure_url("http://[::1]:8080", "url").is_ok());
        assert!(secure_url("http://10.0.0.1", "url").is_err());
        assert!(secure_url("ftp://127.0.0.1", "url").is_err());
    }
}
