//! The framing of batched blobs (`POST /v1/cas/batch` uploads, the answer
//! of `POST /v1/cas/batch-get`): many small blobs in one body, so ten
//! thousand tiny files are a handful of requests, not ten thousand.
//!
//! A body is a sequence of records, each the blob's 32-byte BLAKE3 digest,
//! its length as 4 bytes little-endian, then its bytes. The whole body may
//! be sent with `Content-Encoding: zstd`.

use crate::Digest;

/// Largest blob that travels in a batch; larger ones go on their own.
pub const MAX_BLOB: u64 = 1024 * 1024;
/// Largest batch body, uncompressed.
pub const MAX_BODY: u64 = 32 * 1024 * 1024;
/// Most digests one `batch-get` may ask for.
pub const MAX_DIGESTS: usize = 10_000;

/// Appends one record to `body`.
pub fn push(body: &mut Vec<u8>, digest: &Digest, content: &[u8]) {
    body.extend_from_slice(digest.as_bytes());
    body.extend_from_slice(&(content.len() as u32).to_le_bytes());
    body.extend_from_slice(content);
}

/// Why a body is not a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// It ends inside a record.
    #[error("the batch is cut short inside a record")]
    Truncated,
    /// A record is larger than [`MAX_BLOB`].
    #[error("a batched blob is larger than {MAX_BLOB} bytes")]
    TooLarge,
}

/// The records of `body`, in order: `(digest named, content)`. The content
/// is not checked against the digest here.
pub fn parse(mut body: &[u8]) -> Result<Vec<(Digest, &[u8])>, BatchError> {
    let mut records = Vec::new();
    while !body.is_empty() {
        if body.len() < 36 {
            return Err(BatchError::Truncated);
        }
        let (head, rest) = body.split_at(36);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&head[..32]);
        let mut length = [0u8; 4];
        length.copy_from_slice(&head[32..]);
        let length = u32::from_le_bytes(length) as u64;
        if length > MAX_BLOB {
            return Err(BatchError::TooLarge);
        }
        let length = length as usize;
        if rest.len() < length {
            return Err(BatchError::Truncated);
        }
        let (content, rest) = rest.split_at(length);
        records.push((Digest::from_bytes(digest), content));
        body = rest;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_bodies_are_refused() {
        let mut body = Vec::new();
        push(&mut body, &Digest::of(b"a"), b"a");
        push(&mut body, &Digest::of(b""), b"");
        let records = parse(&body).unwrap();
        assert_eq!(
            records,
            vec![(Digest::of(b"a"), &b"a"[..]), (Digest::of(b""), &b""[..])]
        );
        assert_eq!(parse(&body[..body.len() - 1]), Err(BatchError::Truncated));
        assert_eq!(parse(&body[..10]), Err(BatchError::Truncated));
        let mut huge = Digest::of(b"x").as_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(&huge), Err(BatchError::TooLarge));
        assert!(parse(&[]).unwrap().is_empty());
    }
}
