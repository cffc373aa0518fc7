//! A server state over memory storage and a throwaway index, built once per
//! fuzzing process, with the runtime that serves it.

use std::sync::OnceLock;

use cache_server::blob::upload::UploadSettings;
use cache_server::http::AppState;
use cache_server::index::Index;
use cache_server::storage::{Storage, StorageLocation, StorageOptions};

/// The runtime, the service built over the state, and the index's folder.
pub struct Fixture<S> {
    pub runtime: tokio::runtime::Runtime,
    pub service: S,
    _folder: tempfile::TempDir,
}

/// The fixture in `cell`, made on first use with `build` (given the state).
pub fn fixture<S: Send + Sync>(
    cell: &'static OnceLock<Fixture<S>>,
    build: impl FnOnce(AppState) -> S,
) -> &'static Fixture<S> {
    cell.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let folder = tempfile::tempdir().expect("folder");
        let service = runtime.block_on(async {
            let storage = Storage::open(&StorageLocation::Memory, StorageOptions::default())
                .expect("memory storage");
            let index = Index::open(&folder.path().join("index.sqlite")).expect("index");
            let upload = UploadSettings {
                max_size: 64 * 1024,
                zstd_level: 1,
            };
            build(AppState::new(storage, index, upload))
        });
        Fixture {
            runtime,
            service,
            _folder: folder,
        }
    })
}
