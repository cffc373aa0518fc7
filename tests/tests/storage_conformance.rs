//! The storage conformance suite (also run by `cache-server`'s unit tests for
//! the in-memory and local stores) against the real S3-compatible servers:
//! s3s-fs, and a three-node Garage cluster (which ignores conditional puts).

use std::sync::Arc;

use cache_server::storage::Storage;
use cache_server::storage::conformance::{ConditionalPuts, check_store, small_parts};
use cachectl_e2e::s3::BUCKET;
use cachectl_e2e::{GarageCluster, S3Server};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_conforms() {
    let s3 = S3Server::start();
    check_store(&storage(s3.env()), ConditionalPuts::Honoured).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garage_store_conforms() {
    let cluster = GarageCluster::start();
    check_store(&storage(cluster.env(1)), ConditionalPuts::Ignored).await;
}

fn storage(env: Vec<(String, String)>) -> Storage {
    let mut builder = AmazonS3Builder::new().with_bucket_name(BUCKET);
    for (name, value) in env {
        let key: AmazonS3ConfigKey = name.to_ascii_lowercase().parse().unwrap();
        builder = builder.with_config(key, value);
    }
    let store = object_store::prefix::PrefixStore::new(builder.build().unwrap(), "conformance");
    Storage::from_store(Arc::new(store), small_parts())
}
