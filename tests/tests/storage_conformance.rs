//! The storage conformance suite (also run by `cache-server`'s unit tests for
//! the in-memory and local stores) against a real S3-compatible server.

use std::sync::Arc;

use cache_server::storage::Storage;
use cache_server::storage::conformance::{check_store, small_parts};
use cachectl_e2e::S3Server;
use cachectl_e2e::s3::BUCKET;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_conforms() {
    let s3 = S3Server::start();
    let mut builder = AmazonS3Builder::new().with_bucket_name(BUCKET);
    for (name, value) in s3.env() {
        let key: AmazonS3ConfigKey = name.to_ascii_lowercase().parse().unwrap();
        builder = builder.with_config(key, value);
    }
    let store = object_store::prefix::PrefixStore::new(builder.build().unwrap(), "conformance");
    let storage = Storage::from_store(Arc::new(store), small_parts());
    check_store(&storage).await;
}
