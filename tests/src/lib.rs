//! The end-to-end harness: starts the real `cache-server` binary and the real
//! services it talks to (an S3-compatible server) as child processes on free
//! loopback ports, waits until they answer, and kills them on drop, also when
//! a test panics.
//!
//! Services the harness needs are installed by `scripts/install-test-deps`
//! into `~/.cache/cachectl-test-deps` (or `$CACHECTL_TEST_DEPS`).

pub mod api;
pub mod bins;
pub mod buildah;
pub mod cachectl;
pub mod clients;
pub mod cpu_load;
pub mod data;
pub mod fault_proxy;
pub mod file_tree;
pub mod garage;
pub mod grpc;
pub mod machine;
pub mod nginx;
pub mod oidc;
pub mod process;
pub mod python;
pub mod raw_http;
pub mod registry;
pub mod run_image;
pub mod s3;
pub mod server;

pub use fault_proxy::{Fault, FaultProxy};
pub use garage::GarageCluster;
pub use nginx::Nginx;
pub use s3::S3Server;
pub use server::{Backend, CacheServer, ServerOptions};
