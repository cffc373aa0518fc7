//! Atomic, streaming object writes.
//!
//! Bytes are buffered up to one part. An object that fits is written with one
//! create-only put (`If-None-Match: *` on S3, a hard link of a staged file
//! locally). A larger one becomes a multipart upload under its final name,
//! completed only by [`ObjectWriter::publish`]; until then nothing is visible
//! (S3 shows no object before completion, the local backend writes a staged
//! `name#N` file that listings skip and renames it on completion). Dropping or
//! aborting the writer discards what was sent.

use bytes::{Bytes, BytesMut};
use object_store::path::Path;
use object_store::{ObjectStoreExt, WriteMultipart};

use super::{Storage, StorageError};

/// How many parts may be in flight per upload; bounds memory per upload to
/// about `(MAX_PARTS_IN_FLIGHT + 1) * part_size`.
pub const MAX_PARTS_IN_FLIGHT: usize = 2;

/// An object being written; see the module documentation.
pub struct ObjectWriter {
    storage: Storage,
    path: Path,
    buffer: BytesMut,
    upload: Option<WriteMultipart>,
    written: u64,
    replace: bool,
}

impl Storage {
    /// Starts writing an object that becomes visible only on
    /// [`ObjectWriter::publish`].
    pub fn writer(&self, path: Path) -> ObjectWriter {
        ObjectWriter::new(self.clone(), path)
    }
}

impl ObjectWriter {
    pub(super) fn new(storage: Storage, path: Path) -> Self {
        Self {
            storage,
            path,
            buffer: BytesMut::new(),
            upload: None,
            written: 0,
            replace: false,
        }
    }

    /// Publishing replaces an existing object (atomically: readers see the
    /// old or the new one) instead of keeping it.
    pub fn replace_existing(&mut self) {
        self.replace = true;
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `data`, waiting while too many parts are in flight.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.written += data.len() as u64;
        let part_size = self.storage.options.part_size;
        if self.upload.is_none() {
            if self.buffer.len() + data.len() <= part_size {
                self.buffer.extend_from_slice(data);
                return Ok(());
            }
            let upload = self
                .storage
                .timed(self.storage.inner.put_multipart(&self.path))
                .await?;
            let mut upload = WriteMultipart::new_with_chunk_size(upload, part_size);
            upload.put(self.buffer.split().freeze());
            self.upload = Some(upload);
        }
        if let Some(upload) = self.upload.as_mut() {
            upload.write(data);
            let timeout = self.storage.options.timeout;
            match tokio::time::timeout(timeout, upload.wait_for_capacity(MAX_PARTS_IN_FLIGHT)).await
            {
                Ok(result) => result?,
                Err(_) => return Err(StorageError::Timeout(timeout)),
            }
        }
        Ok(())
    }

    /// Makes the object visible under its name. An object that already
    /// existed is left as it was (names are content addresses, so it holds
    /// the same bytes), unless [`ObjectWriter::replace_existing`] was asked.
    pub async fn publish(self) -> Result<(), StorageError> {
        match self.upload {
            None if self.replace => {
                self.storage
                    .put_small(&self.path, self.buffer.freeze())
                    .await?;
            }
            None => {
                let bytes: Bytes = self.buffer.freeze();
                self.storage.create_small(&self.path, bytes).await?;
            }
            Some(upload) => {
                self.storage.timed(upload.finish()).await?;
            }
        }
        Ok(())
    }

    /// Discards everything written; nothing becomes visible.
    pub async fn abort(self) {
        if let Some(upload) = self.upload
            && let Err(error) = self.storage.timed(upload.abort()).await
        {
            tracing::warn!(path = %self.path, %error, "could not abort multipart upload");
        }
    }
}
