//! CI identity instead of shared secrets: the server accepts the ID tokens
//! of a trusted issuer (here a local one: `cachectl_e2e::oidc`), maps their
//! claims to namespaces by its `--oidc-config` rules, and refuses every
//! forged, stale or misdirected token with 401 and its reason in the log,
//! never the token.

use cachectl_e2e::oidc::{Issuer, SigningKey, now};
use cachectl_e2e::server::{Backend, CacheServer, ServerOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};

const AUDIENCE: &str = "https://cache.acme.test";

/// The rules of a team: main's pushes write main; a pull request writes
/// `pr-N` and reads main; anything else of the organisation reads main.
fn rules() -> &'static str {
    r#"
[[issuer.rule]]
when = { repository = "acme/web", event_name = "push", ref = "refs/heads/main" }
scope = "write"
write = ["main"]

[[issuer.rule]]
when = { repository = "acme/web", event_name = "pull_request" }
scope = "write"
write = ["pr-{pr}"]
read = ["main"]

[[issuer.rule]]
when = { repository = "acme/*" }
scope = "read"
read = ["main"]
"#
}

/// A server with auth required, `pr-*` falling back to main, trusting
/// `issuer` by `stanza` (its `[[issuer]]` table).
fn server_trusting(stanza: &str, folder: &std::path::Path) -> CacheServer {
    let config = folder.join("oidc.toml");
    std::fs::write(&config, format!("{stanza}{}", rules())).unwrap();
    CacheServer::start(
        Backend::Local,
        ServerOptions::args(&[
            "--auth",
            "required",
            "--namespace-fallback",
            "pr-*=main",
            "--oidc-config",
            config.to_str().unwrap(),
        ]),
    )
}

async fn put(server: &CacheServer, path: &str, token: &str, body: &str) -> StatusCode {
    server
        .client
        .put(server.url(path))
        .bearer_auth(token)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
}

async fn get(server: &CacheServer, path: &str, token: &str) -> (StatusCode, String) {
    let response = server
        .client
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn id_tokens_of_main_and_of_a_pull_request_get_the_namespaces_their_claims_map_to() {
    let issuer = Issuer::start();
    let folder = tempfile::tempdir().unwrap();
    let server = server_trusting(&issuer.config(AUDIENCE), folder.path());
    let job = |repository: &str, event: &str, reference: &str| {
        issuer.mint(&issuer.github_claims(AUDIENCE, repository, event, reference))
    };
    let main = job("acme/web", "push", "refs/heads/main");
    let pr = job("acme/web", "pull_request", "refs/pull/42/merge");
    let docs = job("acme/docs", "push", "refs/heads/main");
    let evil = job("evil/web", "push", "refs/heads/main");

    // Main writes main (its default namespace, from its rule).
    assert_eq!(put(&server, "/cache/0a1b2c", &main, "honest").await, 201);
    assert_eq!(put(&server, "/cache/0d0e0f", &main, "second").await, 201);
    // The pull request computes the same key and writes first in pr-42 ...
    assert_eq!(put(&server, "/cache/0a1b2c", &pr, "poisoned").await, 201);
    // ... never in main, by any path ...
    let aimed = put(&server, "/ns/main/cache/0a1b2c", &pr, "poisoned").await;
    assert_eq!(aimed, StatusCode::FORBIDDEN);
    // ... so main reads its own bytes.
    let read = get(&server, "/cache/0a1b2c", &main).await;
    assert_eq!(read, (StatusCode::OK, "honest".to_owned()));
    // The pull request reads its own entry first, and main's through the
    // fallback.
    let own = get(&server, "/cache/0a1b2c", &pr).await;
    assert_eq!(own, (StatusCode::OK, "poisoned".to_owned()));
    let fallback = get(&server, "/cache/0d0e0f", &pr).await;
    assert_eq!(fallback, (StatusCode::OK, "second".to_owned()));
    // Another repository of the organisation only reads main.
    let docs_read = get(&server, "/cache/0a1b2c", &docs).await;
    assert_eq!(docs_read, (StatusCode::OK, "honest".to_owned()));
    assert_eq!(
        put(&server, "/cache/0a1b2c", &docs, "x").await,
        StatusCode::FORBIDDEN
    );
    // A repository no rule names gets nothing.
    let (status, body) = get(&server, "/cache/0a1b2c", &evil).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("no rule"), "{body}");

    // Ten verified requests, one fetch of the issuer's keys.
    assert_eq!(issuer.key_fetches(), 1);
    let logs = server.logs();
    for token in [&main, &pr, &docs, &evil] {
        assert!(!logs.contains(token.as_str()), "a token reached the log");
    }
}

/// GitHub runs `pull_request_target`, `workflow_run` and `issue_comment`
/// jobs on the default branch: their ID tokens say `ref =
/// refs/heads/main` while the job acts on a pull request's input. Under the
/// documented rules (`event_name` in main's `when`) they only read main; a
/// rule that leaves `event_name` out would let them write it, and the
/// server says so when it starts.
#[tokio::test]
async fn id_tokens_of_events_on_main_acting_for_a_pull_request_never_write_main() {
    let issuer = Issuer::start();
    let folder = tempfile::tempdir().unwrap();
    let server = server_trusting(&issuer.config(AUDIENCE), folder.path());
    let job = |event: &str| {
        issuer.mint(&issuer.github_claims(AUDIENCE, "acme/web", event, "refs/heads/main"))
    };
    assert_eq!(
        put(&server, "/cache/0a1b2c", &job("push"), "honest").await,
        201
    );
    for event in ["pull_request_target", "workflow_run", "issue_comment"] {
        let token = job(event);
        for path in ["/cache/0a1b2c", "/ns/main/cache/0a1b2c"] {
            assert_eq!(
                put(&server, path, &token, "poisoned").await,
                StatusCode::FORBIDDEN,
                "{event} wrote {path}"
            );
        }
        let read = get(&server, "/cache/0a1b2c", &token).await;
        assert_eq!(read, (StatusCode::OK, "honest".to_owned()), "{event}");
    }
    assert!(
        !server.logs().contains("without event_name"),
        "the documented rules were warned about"
    );

    // The same rules without event_name in main's `when`: the server warns
    // at start, and the warning is right.
    let risky_folder = tempfile::tempdir().unwrap();
    let config = risky_folder.path().join("oidc.toml");
    let rules = rules().replacen(r#", event_name = "push""#, "", 1);
    assert_ne!(rules, self::rules());
    std::fs::write(&config, format!("{}{rules}", issuer.config(AUDIENCE))).unwrap();
    let risky = CacheServer::start(
        Backend::Local,
        ServerOptions::args(&[
            "--auth",
            "required",
            "--oidc-config",
            config.to_str().unwrap(),
        ]),
    );
    let logs = risky.logs();
    assert!(
        logs.contains(r#"rule 1: grants write on ref = "refs/heads/main" without event_name"#),
        "{logs}"
    );
    let target = job("pull_request_target");
    assert_eq!(
        put(&risky, "/cache/0a1b2c", &target, "poisoned").await,
        StatusCode::CREATED
    );
}

/// Each way a token can be wrong, with the reason the server must give.
fn forgeries(issuer: &Issuer) -> Vec<(&'static str, String, &'static str)> {
    let valid = || issuer.github_claims(AUDIENCE, "acme/web", "push", "refs/heads/main");
    let with = |changes: Value| {
        let mut claims = valid();
        for (name, value) in changes.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    };
    let rogue_same_kid = SigningKey::generate("key-1");
    let rogue_own_kid = SigningKey::generate("key-9");
    let now = now();
    let pr_token = issuer.mint(&with(json!({"event_name": "pull_request"})));
    let main_payload = issuer.mint(&valid());
    let tampered = {
        // A pull request's signed token with main's claims swapped in.
        let parts: Vec<&str> = pr_token.split('.').collect();
        let main_parts: Vec<&str> = main_payload.split('.').collect();
        format!("{}.{}.{}", parts[0], main_parts[1], parts[2])
    };
    let hmac_with_public_key = {
        // The algorithm confusion attack: HS256 keyed with the public JWK.
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": "key-1"});
        let b64 = |value: &Value| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
        };
        let message = format!("{}.{}", b64(&header), b64(&valid()));
        let key = aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            issuer.key.jwk().to_string().as_bytes(),
        );
        let tag = aws_lc_rs::hmac::sign(&key, message.as_bytes());
        use base64::Engine as _;
        format!(
            "{message}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    };
    vec![
        (
            "expired",
            issuer.mint(&with(
                json!({"iat": now - 900, "nbf": now - 900, "exp": now - 600}),
            )),
            "the token has expired",
        ),
        (
            "not yet valid",
            issuer.mint(&with(json!({"nbf": now + 900, "exp": now + 1200}))),
            "not valid yet",
        ),
        (
            "wrong audience",
            issuer.mint(&with(json!({"aud": "https://someone-else.test"}))),
            "audience is not one this server accepts",
        ),
        (
            "wrong issuer",
            issuer.mint(&with(
                json!({"iss": "https://token.actions.githubusercontent.com"}),
            )),
            "is not trusted by this server",
        ),
        (
            "bad signature",
            rogue_same_kid.sign(&valid()),
            "the signature does not verify",
        ),
        ("tampered claims", tampered, "the signature does not verify"),
        (
            "unknown key id",
            rogue_own_kid.sign(&valid()),
            "is not among",
        ),
        (
            "another repository",
            issuer.mint(&with(json!({"repository": "evil/web"}))),
            "no rule of",
        ),
        (
            "no expiry",
            issuer.mint(&{
                let mut claims = valid();
                claims.as_object_mut().unwrap().remove("exp");
                claims
            }),
            "the exp claim is missing",
        ),
        (
            "HS256 keyed with the public key",
            hmac_with_public_key,
            "algorithm HS256 is not accepted",
        ),
    ]
}

#[tokio::test]
async fn forged_stale_and_misdirected_id_tokens_are_refused_with_their_reason() {
    let issuer = Issuer::start();
    let folder = tempfile::tempdir().unwrap();
    let server = server_trusting(&issuer.config(AUDIENCE), folder.path());
    let valid = issuer.mint(&issuer.github_claims(AUDIENCE, "acme/web", "push", "refs/heads/main"));
    assert_eq!(put(&server, "/cache/0a1b2c", &valid, "honest").await, 201);

    for (case, token, reason) in forgeries(&issuer) {
        let before = server.logs().matches("ID token refused").count();
        assert_eq!(
            put(&server, "/cache/0a1b2c", &token, "poisoned").await,
            StatusCode::UNAUTHORIZED,
            "{case}"
        );
        let (status, body) = get(&server, "/cache/0a1b2c", &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}");
        assert!(body.contains(reason), "{case}: {body}");
        let refusals = |logs: &str| logs.matches("ID token refused").count();
        let logs = server.logs_once(|logs| refusals(logs) >= before + 2).await;
        assert!(refusals(&logs) >= before + 2, "{case}: no refusal logged");
        let logged = logs
            .lines()
            .rfind(|line| line.contains("ID token refused"))
            .unwrap_or_default();
        assert!(logged.contains(reason), "{case}: {logged}");
        assert!(!logs.contains(&token), "{case}: the token reached the log");
    }
    // Nothing a forgery sent was stored.
    let read = get(&server, "/cache/0a1b2c", &valid).await;
    assert_eq!(read, (StatusCode::OK, "honest".to_owned()));
}

#[tokio::test]
async fn an_air_gapped_server_verifies_with_a_key_file_and_never_calls_the_issuer() {
    let issuer = Issuer::start();
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("jwks.json"), issuer.jwks_document()).unwrap();
    let stanza = format!(
        "[[issuer]]\nurl = \"{}\"\naudience = [\"other\", \"{AUDIENCE}\"]\njwks_file = \"jwks.json\"\n",
        issuer.url
    );
    let server = server_trusting(&stanza, folder.path());
    let pr = issuer.mint(&issuer.github_claims(
        AUDIENCE,
        "acme/web",
        "pull_request",
        "refs/pull/7/merge",
    ));
    assert_eq!(put(&server, "/cache/0a1b2c", &pr, "seven").await, 201);
    let own = get(&server, "/ns/pr-7/cache/0a1b2c", &pr).await;
    assert_eq!(own, (StatusCode::OK, "seven".to_owned()));
    let other = get(&server, "/ns/pr-8/cache/0a1b2c", &pr).await;
    assert_eq!(other.0, StatusCode::FORBIDDEN, "pr-7 may not read pr-8");
    assert_eq!(issuer.key_fetches(), 0);
}

/// `cachectl cache save|restore` in GitHub Actions jobs that hold no
/// token, only `permissions: id-token: write`: cachectl requests the job's
/// ID token for `CACHECTL_OIDC_AUDIENCE` and the server's rules decide.
#[test]
fn cachectl_in_github_actions_jobs_uses_their_id_tokens() {
    use cachectl_e2e::cachectl::Project;
    let issuer = Issuer::start();
    let folder = tempfile::tempdir().unwrap();
    let server = server_trusting(&issuer.config(AUDIENCE), folder.path());
    let project = Project::new();
    project.write("lock.txt", "left-pad==1.3.0\n");
    let url = server.base_url();
    let request_url = issuer.request_url();
    // The folder cache of every run below.
    let folder = cachectl_e2e::cachectl::deps_cache_args(&url);
    let job = |event: &str, reference: &str, extra: &[&str]| {
        issuer.set_job_claims(issuer.github_claims("", "acme/web", event, reference));
        let mut args = vec!["cache"];
        args.extend_from_slice(extra);
        args.push("--json");
        args.extend_from_slice(&folder);
        project.cachectl(
            &args,
            &[
                ("GITHUB_ACTIONS", "true"),
                ("GITHUB_EVENT_NAME", event),
                ("GITHUB_REF", reference),
                ("ACTIONS_ID_TOKEN_REQUEST_URL", &request_url),
                ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &issuer.request_token),
                ("CACHECTL_OIDC_AUDIENCE", AUDIENCE),
            ],
        )
    };
    let pull_request = |extra: &[&str]| job("pull_request", "refs/pull/42/merge", extra);
    let main = |extra: &[&str]| job("push", "refs/heads/main", extra);
    let deps = project.path().join("deps/lib.txt");
    let fill = |content: &str| {
        let _ = std::fs::remove_dir_all(project.path().join("deps"));
        project.write("deps/lib.txt", content);
    };
    let clear = || {
        let _ = std::fs::remove_dir_all(project.path().join("deps"));
    };

    fill("poisoned");
    let saved = pull_request(&["save"]).success().json();
    assert!(saved["uploaded_bytes"].as_u64().unwrap() > 0, "{saved}");
    clear();
    assert_eq!(pull_request(&["restore"]).success().json()["hit"], "exact");
    assert_eq!(std::fs::read_to_string(&deps).unwrap(), "poisoned");

    clear();
    assert_eq!(main(&["restore"]).success().json()["hit"], "miss");
    fill("honest");
    main(&["save"]).success();

    // The pull request's job cannot save into main, whatever it names.
    fill("poisoned");
    issuer.set_job_claims(issuer.github_claims(
        "",
        "acme/web",
        "pull_request",
        "refs/pull/42/merge",
    ));
    let aimed = project.cachectl(
        &[
            &["--namespace", "main", "--require-cache", "cache", "save"][..],
            &folder,
        ]
        .concat(),
        &[
            ("ACTIONS_ID_TOKEN_REQUEST_URL", &request_url),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &issuer.request_token),
            ("CACHECTL_OIDC_AUDIENCE", AUDIENCE),
        ],
    );
    assert_eq!(aimed.code, 3, "{}", aimed.stderr);
    assert!(aimed.stderr.contains("403"), "{}", aimed.stderr);

    clear();
    assert_eq!(main(&["restore"]).success().json()["hit"], "exact");
    assert_eq!(std::fs::read_to_string(&deps).unwrap(), "honest");

    // Without id-token permission the job has no token: a required cache
    // fails with the fix named, an optional one is skipped.
    let without = project.cachectl(
        &[&["--require-cache", "cache", "restore"][..], &folder].concat(),
        &[("CACHECTL_OIDC_AUDIENCE", AUDIENCE)],
    );
    assert_eq!(without.code, 3, "{}", without.stderr);
    assert!(
        without.stderr.contains("id-token: write"),
        "{}",
        without.stderr
    );
    assert!(!server.logs().contains(&issuer.request_token));
}

/// The rules of a GitLab team: protected main's push pipelines write main;
/// a merge request's pipeline writes the namespace of its source branch,
/// folded one to one (`{ref|slug}`), and reads main.
const GITLAB_RULES: &str = r#"
[[issuer.rule]]
when = { project_path = "acme/web", ref = "main", ref_protected = "true", pipeline_source = "push" }
scope = "write"
write = ["main"]

[[issuer.rule]]
when = { project_path = "acme/web", pipeline_source = "merge_request_event" }
scope = "write"
write = ["branch-{ref|slug}"]
read = ["main"]
"#;

/// A server trusting `issuer` for GitLab jobs by [`GITLAB_RULES`], with
/// branch namespaces falling back to main.
fn gitlab_server(issuer: &Issuer, folder: &std::path::Path) -> CacheServer {
    let config = folder.join("oidc.toml");
    std::fs::write(
        &config,
        format!("{}{GITLAB_RULES}", issuer.config(AUDIENCE)),
    )
    .unwrap();
    CacheServer::start(
        Backend::Local,
        ServerOptions::args(&[
            "--auth",
            "required",
            "--namespace-fallback",
            "branch-*=main",
            "--oidc-config",
            config.to_str().unwrap(),
        ]),
    )
}

/// The namespace the docs promise a branch: `branch-` and the name as it
/// is when plain, else folded and marked with 16 hex digits of its BLAKE3
/// hash. Computed here from the documented rule, not by the code under test.
fn branch_namespace(branch: &str, folded: &str) -> String {
    let hash = blake3::hash(branch.as_bytes()).to_hex();
    format!("branch-{folded}-{}", &hash[..16])
}

/// GitLab's ID tokens name a merge request's source branch, `/` and all,
/// and no merge-request number: each branch gets its own namespace, reads
/// main, and cannot write (or read) another's, even one whose name folds
/// alike.
#[tokio::test]
async fn gitlab_merge_requests_from_any_branch_get_their_own_namespace_and_read_main() {
    let issuer = Issuer::start();
    let folder = tempfile::tempdir().unwrap();
    let server = gitlab_server(&issuer, folder.path());
    let job = |source: &str, branch: &str, protected: bool| {
        issuer.mint(&issuer.gitlab_claims(AUDIENCE, "acme/web", source, branch, protected))
    };
    let merge_request = |branch: &str| job("merge_request_event", branch, false);
    let main = job("push", "main", true);
    assert_eq!(put(&server, "/cache/0a1b2c", &main, "honest").await, 201);
    assert_eq!(put(&server, "/cache/0d0e0f", &main, "second").await, 201);
    // Unprotected main, or main through the API, is not main.
    for (source, protected) in [("push", false), ("api", true)] {
        let (status, body) = get(&server, "/cache/0a1b2c", &job(source, "main", protected)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{source}");
        assert!(body.contains("no rule"), "{body}");
    }

    let login = merge_request("feature/login");
    assert_eq!(put(&server, "/cache/0a1b2c", &login, "login").await, 201);
    let login_ns = branch_namespace("feature/login", "feature-login");
    let aimed = format!("/ns/{login_ns}/cache/0a1b2c");
    assert_eq!(
        get(&server, &aimed, &login).await,
        (StatusCode::OK, "login".to_owned()),
        "feature/login writes {login_ns}"
    );
    assert_eq!(
        get(&server, "/cache/0d0e0f", &login).await,
        (StatusCode::OK, "second".to_owned()),
        "feature/login reads main"
    );
    assert_eq!(
        put(&server, "/ns/main/cache/0a1b2c", &login, "poisoned").await,
        StatusCode::FORBIDDEN
    );

    let plain = "Feature-Login_2.0";
    let long = format!("feature/{}", "x".repeat(92));
    for branch in [
        "feature-login",
        "feature.login",
        "feature_login",
        "Feature/Login",
        "feature//login",
        plain,
        long.as_str(),
    ] {
        let token = merge_request(branch);
        // Its own namespace is empty: it reads main's bytes, not login's.
        assert_eq!(
            get(&server, "/cache/0a1b2c", &token).await,
            (StatusCode::OK, "honest".to_owned()),
            "{branch}"
        );
        assert_eq!(
            put(&server, &aimed, &token, "poisoned").await,
            StatusCode::FORBIDDEN,
            "{branch} wrote {login_ns}"
        );
        assert_eq!(get(&server, &aimed, &token).await.0, 403, "{branch}");
        assert_eq!(put(&server, "/cache/0a1b2c", &token, branch).await, 201);
    }
    // A plain branch name is its namespace as it is.
    let own = format!("/ns/branch-{plain}/cache/0a1b2c");
    assert_eq!(
        get(&server, &own, &merge_request(plain)).await,
        (StatusCode::OK, plain.to_owned())
    );
    // A long one is folded to fit.
    let long_ns = branch_namespace(&long, &format!("feature-{}", "x".repeat(32)));
    assert_eq!(long_ns.len(), 64);
    let own = format!("/ns/{long_ns}/cache/0a1b2c");
    assert_eq!(
        get(&server, &own, &merge_request(&long)).await,
        (StatusCode::OK, long.clone())
    );
    // Nothing any of them did reached main or feature/login.
    assert_eq!(
        get(&server, "/cache/0a1b2c", &main).await,
        (StatusCode::OK, "honest".to_owned())
    );
    assert_eq!(
        get(&server, "/cache/0a1b2c", &login).await,
        (StatusCode::OK, "login".to_owned())
    );
}

/// `cachectl cache save|restore` in GitLab merge request pipelines whose
/// cache token is the job's ID token (`id_tokens: CACHECTL_CACHE_TOKEN`):
/// cachectl detects `pr-<iid>`, but the token's rule decides the
/// namespace, so the job reads main and writes its branch's own.
#[test]
fn cachectl_in_gitlab_merge_request_pipelines_uses_their_id_tokens() {
    use cachectl_e2e::cachectl::Project;
    let issuer = Issuer::start();
    let folder = tempfile::tempdir().unwrap();
    let server = gitlab_server(&issuer, folder.path());
    let project = Project::new();
    let url = server.base_url();
    let folder = cachectl_e2e::cachectl::deps_cache_args(&url);
    let pipeline = |token: &str, vars: &[(&str, &str)], action: &str| {
        let mut env = vec![
            ("GITLAB_CI", "true"),
            ("CI_DEFAULT_BRANCH", "main"),
            ("CACHECTL_CACHE_TOKEN", token),
        ];
        env.extend_from_slice(vars);
        project.cachectl(&[&["cache", action, "--json"][..], &folder].concat(), &env)
    };
    let main_token = issuer.mint(&issuer.gitlab_claims(AUDIENCE, "acme/web", "push", "main", true));
    let main = |action: &str| {
        pipeline(
            &main_token,
            &[("CI_PIPELINE_SOURCE", "push"), ("CI_COMMIT_BRANCH", "main")],
            action,
        )
    };
    let merge_request = |branch: &str, iid: &str, action: &str| {
        let claims =
            issuer.gitlab_claims(AUDIENCE, "acme/web", "merge_request_event", branch, false);
        pipeline(
            &issuer.mint(&claims),
            &[
                ("CI_PIPELINE_SOURCE", "merge_request_event"),
                ("CI_MERGE_REQUEST_IID", iid),
                ("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", branch),
            ],
            action,
        )
    };
    let deps = project.path().join("deps/lib.txt");
    let fill = |content: &str| {
        let _ = std::fs::remove_dir_all(project.path().join("deps"));
        project.write("deps/lib.txt", content);
    };
    // What a restore found, and the folder it left.
    let restored = |restore: &dyn Fn() -> cachectl_e2e::cachectl::Run| {
        let _ = std::fs::remove_dir_all(project.path().join("deps"));
        let hit = restore().success().json()["hit"]
            .as_str()
            .unwrap()
            .to_owned();
        let content = std::fs::read_to_string(&deps).unwrap_or_default();
        let _ = std::fs::remove_dir_all(project.path().join("deps"));
        (hit, content)
    };
    let found = |hit: &str, content: &str| (hit.to_owned(), content.to_owned());

    project.write("lock.txt", "left-pad==1.3.0\n");
    fill("main's");
    main("save").success();
    // The merge request reads main's folder.
    assert_eq!(
        restored(&|| merge_request("feature/login", "7", "restore")),
        found("exact", "main's")
    );

    // It bumps a dependency and saves into its own namespace ...
    project.write("lock.txt", "left-pad==1.3.1\n");
    fill("login's");
    let saved = merge_request("feature/login", "7", "save").success().json();
    assert!(saved["uploaded_bytes"].as_u64().unwrap() > 0, "{saved}");
    assert_eq!(
        restored(&|| merge_request("feature/login", "7", "restore")),
        found("exact", "login's")
    );
    // ... which neither main nor a branch that folds alike reads: they get
    // main's older folder.
    assert_eq!(restored(&|| main("restore")), found("partial", "main's"));
    assert_eq!(
        restored(&|| merge_request("feature-login", "8", "restore")),
        found("partial", "main's")
    );
    // Naming main on purpose is refused for the merge request.
    fill("poisoned");
    let aimed = project.cachectl(
        &[
            &["--namespace", "main", "--require-cache", "cache", "save"][..],
            &folder,
        ]
        .concat(),
        &[
            ("GITLAB_CI", "true"),
            (
                "CACHECTL_CACHE_TOKEN",
                &issuer.mint(&issuer.gitlab_claims(
                    AUDIENCE,
                    "acme/web",
                    "merge_request_event",
                    "feature/login",
                    false,
                )),
            ),
        ],
    );
    assert_eq!(aimed.code, 3, "{}", aimed.stderr);
    assert!(aimed.stderr.contains("403"), "{}", aimed.stderr);
    assert_eq!(restored(&|| main("restore")), found("partial", "main's"));
}
