//! Resumable ByteStream writes. A write streams straight into the object
//! core (no spool file); when its stream breaks before `finish_write`
//! (a dropped connection, a deadline), the unfinished write is parked for
//! [`PARK_FOR`] with what it received, and a `Write` of the same resource
//! name by the same namespace continues it from `committed_size`. A parked
//! write that is not resumed in time is abandoned: nothing is stored.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use cache_proto::Namespace;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::blob::download::BodyStream;
use crate::cache::object::Written;
use crate::error::ApiError;

/// How long an interrupted write waits to be resumed.
pub const PARK_FOR: Duration = Duration::from_secs(120);
/// At most this many interrupted writes wait at once; beyond, an
/// interrupted write is abandoned at once.
const MAX_PARKED: usize = 256;
/// Chunks in flight between a `Write` call and its object write.
const CHANNEL_CHUNKS: usize = 8;

/// What an upload is known by: the namespace writing it and its resource
/// name (which holds the client's upload id). Another namespace cannot
/// resume, query or disturb it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadKey {
    /// The namespace the writer's credentials store into.
    pub owner: Namespace,
    /// The full resource name of the first `WriteRequest`.
    pub resource: String,
}

/// The object write behind an upload: where its bytes go, and its outcome.
struct Sink {
    sender: mpsc::Sender<io::Result<Bytes>>,
    task: JoinHandle<Result<Written, ApiError>>,
}

enum Slot {
    /// A `Write` call is feeding it now.
    Busy { committed: Arc<AtomicU64> },
    /// Interrupted, waiting to be resumed.
    Parked { id: u64, committed: u64, sink: Sink },
}

/// The uploads in progress or parked.
#[derive(Default)]
pub struct Uploads {
    table: Mutex<HashMap<UploadKey, Slot>>,
    next_id: AtomicU64,
}

/// Why an upload cannot be fed by this call.
#[derive(Debug)]
pub enum BeginError {
    /// Another `Write` call is feeding the same upload.
    Busy,
}

impl Uploads {
    fn table(&self) -> MutexGuard<'_, HashMap<UploadKey, Slot>> {
        // The table holds no invariant a panicking holder could break.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims `key` for one `Write` call: the returned upload has the
    /// parked write's sink and committed size when it was interrupted
    /// earlier, else nothing received yet.
    pub fn begin(self: &Arc<Self>, key: UploadKey) -> Result<Active, BeginError> {
        let mut table = self.table();
        let committed = Arc::new(AtomicU64::new(0));
        let previous = table.insert(
            key.clone(),
            Slot::Busy {
                committed: committed.clone(),
            },
        );
        let sink = match previous {
            Some(busy @ Slot::Busy { .. }) => {
                table.insert(key, busy);
                return Err(BeginError::Busy);
            }
            Some(Slot::Parked {
                committed: size,
                sink,
                ..
            }) => {
                committed.store(size, Ordering::Relaxed);
                Some(sink)
            }
            None => None,
        };
        Ok(Active {
            uploads: self.clone(),
            key,
            committed,
            sink,
            finished: false,
        })
    }

    /// The bytes received so far of the upload `key`, if it is in progress
    /// or parked.
    pub fn committed(&self, key: &UploadKey) -> Option<u64> {
        match self.table().get(key)? {
            Slot::Busy { committed } => Some(committed.load(Ordering::Relaxed)),
            Slot::Parked { committed, .. } => Some(*committed),
        }
    }

    fn park(self: &Arc<Self>, key: UploadKey, committed: u64, sink: Sink) {
        let mut table = self.table();
        let parked = table
            .values()
            .filter(|slot| matches!(slot, Slot::Parked { .. }))
            .count();
        if parked >= MAX_PARKED {
            table.remove(&key);
            abandon(sink);
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        table.insert(
            key.clone(),
            Slot::Parked {
                id,
                committed,
                sink,
            },
        );
        drop(table);
        let uploads = self.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(PARK_FOR).await;
                uploads.expire(&key, id);
            });
        }
    }

    fn expire(&self, key: &UploadKey, id: u64) {
        let mut table = self.table();
        if matches!(table.get(key), Some(Slot::Parked { id: parked, .. }) if *parked == id)
            && let Some(Slot::Parked { sink, .. }) = table.remove(key)
        {
            tracing::debug!(resource = %key.resource, "an interrupted upload was not resumed: abandoned");
            abandon(sink);
        }
    }
}

/// Ends an object write without storing anything.
fn abandon(sink: Sink) {
    // An error item aborts the write; if the channel is full, closing it
    // ends the body short, which fails verification just the same.
    let _ = sink
        .sender
        .try_send(Err(io::Error::other("the upload was abandoned")));
    drop(sink.sender);
    // The task then ends on its own; its outcome is of no interest.
    drop(sink.task);
}

/// An upload claimed by one `Write` call. Dropped unfinished (the call
/// failed, its stream broke, its deadline passed), it is parked for a
/// resume.
pub struct Active {
    uploads: Arc<Uploads>,
    key: UploadKey,
    committed: Arc<AtomicU64>,
    sink: Option<Sink>,
    finished: bool,
}

impl Active {
    /// Bytes received so far.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Whether an object write is under way (a fresh upload has none).
    pub fn is_started(&self) -> bool {
        self.sink.is_some()
    }

    /// Starts the object write: `start` gets the body to write from.
    pub fn start<E>(
        &mut self,
        start: impl FnOnce(BodyStream) -> Result<JoinHandle<Result<Written, ApiError>>, E>,
    ) -> Result<(), E> {
        let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
        let body = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        });
        let task = start(Box::pin(body))?;
        self.restart(Sink { sender, task });
        Ok(())
    }

    fn restart(&mut self, sink: Sink) {
        if let Some(old) = self.sink.replace(sink) {
            abandon(old);
        }
        self.committed.store(0, Ordering::Relaxed);
    }

    /// Passes `data` to the object write. `Err` with the write's outcome
    /// when it ended early (it refused the bytes).
    pub async fn send(&mut self, data: Bytes) -> Result<(), Result<Written, ApiError>> {
        let length = data.len() as u64;
        let Some(sink) = &self.sink else {
            return Err(Err(ApiError::Internal(
                "the upload has no object write".into(),
            )));
        };
        if sink.sender.send(Ok(data)).await.is_err() {
            return Err(self.outcome().await);
        }
        self.committed.fetch_add(length, Ordering::Relaxed);
        Ok(())
    }

    /// Ends the body and waits for the object write's outcome; the upload
    /// is over either way.
    pub async fn finish(mut self) -> Result<Written, ApiError> {
        self.finished = true;
        self.outcome().await
    }

    /// Gives the upload up: nothing is stored, it cannot be resumed.
    pub fn abort(mut self) {
        self.finished = true;
        if let Some(sink) = self.sink.take() {
            abandon(sink);
        }
    }

    async fn outcome(&mut self) -> Result<Written, ApiError> {
        let Some(sink) = self.sink.take() else {
            return Err(ApiError::Internal("the upload has no object write".into()));
        };
        drop(sink.sender);
        match sink.task.await {
            Ok(outcome) => outcome,
            Err(error) => Err(ApiError::Internal(format!(
                "the object write failed: {error}"
            ))),
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let sink = self.sink.take();
        match sink {
            Some(sink) if !self.finished => {
                self.uploads.park(self.key.clone(), self.committed(), sink);
            }
            other => {
                self.uploads.table().remove(&self.key);
                if let Some(sink) = other {
                    abandon(sink);
                }
            }
        }
    }
}
