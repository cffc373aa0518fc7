//! Real Bazel (Debian's `bazel-bootstrap`, 4.2.3) against the server's
//! gRPC cache (`--remote_cache=grpc://`): a C++ workspace (a library, a
//! binary on it, a genrule running the binary) built, cleaned and rebuilt
//! from the cache alone; a second machine (output base) hitting too; a
//! read-only token downloading without uploading; and entries shared
//! both ways with Bazel's HTTP cache protocol.

use std::path::Path;

use cachectl_e2e::clients::{BazelMode, bazel_build, bazel_cc_workspace, bazel_clean, bazel_main};
use cachectl_e2e::process::free_port;
use cachectl_e2e::server::{Backend, CacheServer, ServerOptions};

/// What one build reports about its actions.
struct Built {
    log: String,
}

impl Built {
    /// The count before `what` in Bazel's "N processes: ..." line.
    fn count(&self, what: &str) -> u32 {
        self.log
            .lines()
            .filter(|line| line.contains(" processes: ") || line.contains(" process: "))
            .flat_map(|line| line.split([':', ',']))
            .filter_map(|part| part.trim().trim_end_matches('.').strip_suffix(what))
            .filter_map(|number| number.trim().parse::<u32>().ok())
            .sum()
    }

    fn hits(&self) -> u32 {
        self.count("remote cache hit")
    }

    fn local(&self) -> u32 {
        self.count("local")
    }
}

struct Setup {
    server: CacheServer,
    grpc: String,
    work: tempfile::TempDir,
    workspace: std::path::PathBuf,
    overrides: Vec<String>,
    writer: String,
    reader: String,
}

impl Setup {
    fn start() -> Self {
        Self::start_with(&[], "grpc")
    }

    /// A server with `extra` flags, its gRPC cache reached by `scheme`.
    fn start_with(extra: &[&str], scheme: &str) -> Self {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["--auth", "required", "--grpc-listen", &listen];
        args.extend_from_slice(extra);
        let server = CacheServer::start(Backend::Local, ServerOptions::args(&args));
        let writer = server.create_token("write", "ci", &[]);
        let reader = server.create_token("read", "pull-requests", &[]);
        let work = tempfile::tempdir().unwrap();
        let workspace = work.path().join("ws");
        let overrides = bazel_cc_workspace(&workspace);
        Self {
            server,
            grpc: format!("{scheme}://{listen}"),
            work,
            workspace,
            overrides,
            writer,
            reader,
        }
    }

    /// Builds `//:banner` on `machine` against `remote` with `token`.
    fn build(&self, machine: &str, remote: &str, token: &str) -> Built {
        self.build_with(machine, remote, token, &[])
    }

    /// The same with `extra` flags.
    fn build_with(&self, machine: &str, remote: &str, token: &str, extra: &[&str]) -> Built {
        let mut flags = self.overrides.clone();
        flags.extend(extra.iter().map(|flag| flag.to_string()));
        flags.push(format!("--remote_cache={remote}"));
        flags.push(format!("--remote_header=Authorization=Bearer {token}"));
        let (ok, log) = bazel_build(
            &self.workspace,
            &self.machine(machine),
            &["//:banner"],
            &flags,
        );
        assert!(ok, "{log}");
        Built { log }
    }

    fn machine(&self, name: &str) -> std::path::PathBuf {
        self.work.path().join("machines").join(name)
    }

    fn banner(&self) -> String {
        std::fs::read_to_string(self.workspace.join("bazel-bin/banner.txt")).unwrap()
    }

    fn http(&self) -> String {
        self.server.base_url()
    }
}

fn assert_all_hits(built: &Built, actions: u32, what: &str) {
    assert_eq!(
        (built.hits(), built.local()),
        (actions, 0),
        "{what}: {}",
        built.log
    );
}

#[test]
fn bazel_builds_from_the_grpc_cache_shares_it_with_http_and_a_reader_cannot_upload() {
    let setup = Setup::start();
    // A cold build runs the four actions and uploads them.
    let cold = setup.build("ci-1", &setup.grpc, &setup.writer);
    assert_eq!(cold.local(), 4, "{}", cold.log);
    assert_eq!(setup.banner(), "hello from a cached build (hello)\n");
    // Cleaned, every action is a remote cache hit.
    bazel_clean(BazelMode::Batch, &setup.workspace, &setup.machine("ci-1"));
    let clean = setup.build("ci-1", &setup.grpc, &setup.writer);
    assert_all_hits(&clean, 4, "clean rebuild");
    assert_eq!(setup.banner(), "hello from a cached build (hello)\n");
    // A second CI machine (its own output base) too.
    let second = setup.build("ci-2", &setup.grpc, &setup.writer);
    assert_all_hits(&second, 4, "second machine");

    // A read-only token downloads what is there and uploads nothing: the
    // library is a hit, the changed binary and genrule run locally, and a
    // writer building the same change afterwards finds none of them.
    bazel_main(&setup.workspace, "pull request");
    // The capabilities tell Bazel that this token may not update the
    // action cache: it refuses to start unless told not to upload.
    let mut flags = setup.overrides.clone();
    flags.push(format!("--remote_cache={}", setup.grpc));
    flags.push(format!(
        "--remote_header=Authorization=Bearer {}",
        setup.reader
    ));
    let (ok, log) = bazel_build(
        &setup.workspace,
        &setup.machine("pr-0"),
        &["//:banner"],
        &flags,
    );
    assert!(!ok && log.contains("not authorized to write"), "{log}");
    let read_only = setup.build_with(
        "pr-1",
        &setup.grpc,
        &setup.reader,
        &["--noremote_upload_local_results"],
    );
    assert_eq!(
        (read_only.hits(), read_only.local()),
        (1, 3),
        "{}",
        read_only.log
    );
    assert_eq!(setup.banner(), "hello from a cached build (pull request)\n");
    let after = setup.build("ci-3", &setup.grpc, &setup.writer);
    assert_eq!((after.hits(), after.local()), (1, 3), "{}", after.log);

    // Written over gRPC, found over HTTP.
    let over_http = setup.build("http-1", &setup.http(), &setup.writer);
    assert_all_hits(&over_http, 4, "gRPC entries over HTTP");
    // Written over HTTP, found over gRPC.
    bazel_main(&setup.workspace, "over http");
    let http_cold = setup.build("http-2", &setup.http(), &setup.writer);
    assert_eq!(http_cold.local(), 3, "{}", http_cold.log);
    let over_grpc = setup.build("grpc-2", &setup.grpc, &setup.writer);
    assert_all_hits(&over_grpc, 4, "HTTP entries over gRPC");
    assert_eq!(setup.banner(), "hello from a cached build (over http)\n");

    // The tokens never reach the log.
    let logs = setup.server.logs();
    assert!(!logs.contains(&setup.writer) && !logs.contains(&setup.reader));
    assert!(Path::new(&setup.workspace).exists());
}
