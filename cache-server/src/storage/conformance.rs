//! The behaviour every backend must show, as one suite.
//!
//! Called by this crate's unit tests for the in-memory and local stores and by
//! the end-to-end suite for S3 (against a real S3-compatible server), so the
//! three backends are held to the same contract. Panics on the first breach.

use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;

use super::{Storage, StorageOptions};

/// Options with a small part size, so that multipart paths run on small data.
pub fn small_parts() -> StorageOptions {
    StorageOptions {
        timeout: Duration::from_secs(10),
        part_size: 5 * 1024 * 1024,
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn read_all(storage: &Storage, path: &Path) -> Vec<u8> {
    let chunks: Vec<_> = storage
        .stream_from(path, 0)
        .await
        .expect("stream opens")
        .try_collect()
        .await
        .expect("stream reads");
    chunks.concat()
}

/// Whether a store honours conditional puts (`If-None-Match: *`, `If-Match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionalPuts {
    /// AWS S3, s3s-fs, the in-memory store.
    Honoured,
    /// Create-only puts are honoured, replace-if-unchanged ones are not
    /// implemented (the local folder; never shared by replicas).
    CreateOnly,
    /// Accepted but ignored: the put overwrites (Garage 2.5).
    Ignored,
}

/// Runs every check against `storage`, which must be empty under `conformance/`.
pub async fn check_store(storage: &Storage, conditional: ConditionalPuts) {
    let small = Path::from("conformance/small");
    let large = Path::from("conformance/large");
    let aborted = Path::from("conformance/aborted");

    // Absent objects.
    assert_eq!(storage.size(&small).await.unwrap(), None);
    assert!(storage.read_small(&small).await.unwrap().is_none());
    assert!(!storage.delete(&small).await.unwrap());

    // A small write is invisible until published, then readable.
    let mut writer = storage.writer(small.clone());
    writer.write(b"hello ").await.unwrap();
    writer.write(b"world").await.unwrap();
    assert_eq!(
        storage.size(&small).await.unwrap(),
        None,
        "visible before publish"
    );
    writer.publish().await.unwrap();
    assert_eq!(storage.size(&small).await.unwrap(), Some(11));
    assert_eq!(read_all(storage, &small).await, b"hello world");
    assert_eq!(
        &storage.read_range(&small, 6..11).await.unwrap()[..],
        b"world"
    );
    assert_eq!(
        &storage.read_small(&small).await.unwrap().unwrap()[..],
        b"hello world"
    );

    // Publishing the same name again keeps the existing object.
    let mut again = storage.writer(small.clone());
    again.write(b"hello world").await.unwrap();
    again.publish().await.unwrap();
    assert_eq!(read_all(storage, &small).await, b"hello world");

    // A multipart write (three parts) is invisible until published.
    let body = pattern(12 * 1024 * 1024 + 5, 7);
    let mut writer = storage.writer(large.clone());
    for chunk in body.chunks(1024 * 1024) {
        writer.write(chunk).await.unwrap();
    }
    assert_eq!(
        storage.size(&large).await.unwrap(),
        None,
        "visible before publish"
    );
    writer.publish().await.unwrap();
    assert_eq!(storage.size(&large).await.unwrap(), Some(body.len() as u64));
    assert!(
        read_all(storage, &large).await == body,
        "large object differs"
    );
    let tail: Vec<_> = storage
        .stream_range(&large, 1000..2000)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(tail.concat(), &body[1000..2000]);
    let offset: Vec<_> = storage
        .stream_from(&large, 12 * 1024 * 1024)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(offset.concat(), &body[12 * 1024 * 1024..]);

    // An aborted write, small or multipart, leaves nothing behind.
    let mut writer = storage.writer(aborted.clone());
    writer.write(&pattern(11 * 1024 * 1024, 3)).await.unwrap();
    writer.abort().await;
    let mut writer = storage.writer(aborted.clone());
    writer.write(b"tiny").await.unwrap();
    writer.abort().await;
    assert_eq!(storage.size(&aborted).await.unwrap(), None);

    // Listing shows exactly the published objects.
    let listed: Vec<_> = storage
        .list(&Path::from("conformance"))
        .try_collect()
        .await
        .unwrap();
    let mut sizes: Vec<_> = listed
        .into_iter()
        .map(|entry| (entry.path, entry.size))
        .collect();
    sizes.sort();
    assert_eq!(
        sizes,
        vec![(large.clone(), body.len() as u64), (small.clone(), 11)]
    );

    // Overwriting put, create-only put, delete.
    let value = Path::from("conformance/value");
    storage.put_small(&value, "one".into()).await.unwrap();
    storage.put_small(&value, "two".into()).await.unwrap();
    let read = storage.read_versioned(&value).await.unwrap().unwrap();
    assert_eq!(&read.bytes[..], b"two");
    match conditional {
        ConditionalPuts::Honoured => {
            assert!(!storage.create_small(&value, "three".into()).await.unwrap());
            let stale = object_store::UpdateVersion {
                e_tag: Some("\"0000\"".into()),
                version: None,
            };
            assert!(
                !storage
                    .replace_if(&value, "four".into(), stale)
                    .await
                    .unwrap()
            );
            assert_eq!(
                &storage.read_small(&value).await.unwrap().unwrap()[..],
                b"two"
            );
            assert!(
                storage
                    .replace_if(&value, "five".into(), read.version)
                    .await
                    .unwrap()
            );
            assert_eq!(
                &storage.read_small(&value).await.unwrap().unwrap()[..],
                b"five"
            );
        }
        ConditionalPuts::CreateOnly => {
            assert!(!storage.create_small(&value, "three".into()).await.unwrap());
            assert!(
                storage
                    .replace_if(&value, "four".into(), read.version)
                    .await
                    .is_err()
            );
        }
        ConditionalPuts::Ignored => {
            // The put lands; what matters is that it is not an error.
            storage.create_small(&value, "three".into()).await.unwrap();
        }
    }
    // Listings carry a modification time near now.
    let listed: Vec<_> = storage
        .list(&Path::from("conformance"))
        .try_collect()
        .await
        .unwrap();
    let now = crate::index::now_ms();
    assert!(
        listed
            .iter()
            .all(|entry| (entry.modified_ms - now).abs() < 10 * 60 * 1000),
        "{listed:?}"
    );
    for path in [&small, &large, &value] {
        assert!(storage.delete(path).await.unwrap());
        assert_eq!(storage.size(path).await.unwrap(), None);
    }
    storage.probe().await.unwrap();
}
