//! How a blob is laid out in storage.
//!
//! Every stored blob starts with a 16-byte header that is itself a zstd
//! *skippable frame* (so zstd decoders pass over it) naming the encoding:
//!
//! ```text
//! header  = 0x184D2A5B (u32 LE) | 8 (u32 LE) | "CCB1" | encoding (u8) | 0 0 0
//! bare    = content                       (content not starting like a header)
//! raw     = header | content              (content that does)
//! zstd    = header | frame 0 | frame 1 | ... | seek table
//! ```
//!
//! Content stored uncompressed is written *bare*, exactly the blob's bytes,
//! so that the object store can serve it itself (a presigned URL, a CDN).
//! The rare content that starts with the header's first 12 bytes is written
//! with a raw header instead, so that a stored object starts with a header
//! if and only if it has one.
//!
//! In the zstd encoding every frame is an independent zstd frame of
//! [`FRAME_SIZE`] uncompressed bytes (the last may be shorter), and the seek
//! table is the standard zstd *seekable format* trailer (a skippable frame
//! listing each frame's compressed and decompressed size). The stored object
//! is therefore a valid zstd stream as a whole: it is sent as-is to clients
//! that accept zstd, and a `Range` read decompresses only the frames it
//! touches. The header makes the object self-describing, so the index can be
//! rebuilt from storage alone.

use std::ops::Range;

/// Uncompressed bytes per zstd frame.
pub const FRAME_SIZE: usize = cache_proto::headers::ZSTD_FRAME_BYTES;
/// Length of the header in front of every stored blob.
pub const HEADER_LEN: u64 = 16;

const HEADER_MAGIC: u32 = 0x184D_2A5B;
const HEADER_TAG: &[u8; 4] = b"CCB1";
const SEEK_TABLE_MAGIC: u32 = 0x184D_2A5E;
const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
const SEEK_FOOTER_LEN: usize = 9;
const SEEK_ENTRY_LEN: usize = 8;

/// How the content after the header is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The content as uploaded, with no header: the object is the blob.
    Bare,
    /// The content as uploaded, after a header.
    Raw,
    /// Independent zstd frames followed by a seek table.
    Zstd,
}

impl Encoding {
    /// The name stored in the index.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bare => "bare",
            Self::Raw => "raw",
            Self::Zstd => "zstd",
        }
    }

    /// Parses the name stored in the index.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "bare" => Some(Self::Bare),
            "raw" => Some(Self::Raw),
            "zstd" => Some(Self::Zstd),
            _ => None,
        }
    }
}

/// A stored object that does not follow the layout.
#[derive(Debug, thiserror::Error)]
#[error("stored blob is malformed: {0}")]
pub struct FormatError(pub &'static str);

/// The header for `encoding`.
pub fn header(encoding: Encoding) -> [u8; HEADER_LEN as usize] {
    let mut out = [0u8; HEADER_LEN as usize];
    out[0..4].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
    out[4..8].copy_from_slice(&8u32.to_le_bytes());
    out[8..12].copy_from_slice(HEADER_TAG);
    out[12] = match encoding {
        Encoding::Bare | Encoding::Raw => 0,
        Encoding::Zstd => 1,
    };
    out
}

/// Bytes of the header that mark it as one.
const HEADER_PREFIX_LEN: usize = 12;

/// Whether `content` starts like a header, and so must not be stored bare.
pub fn starts_like_header(content: &[u8]) -> bool {
    content.len() >= HEADER_PREFIX_LEN
        && content[..HEADER_PREFIX_LEN] == header(Encoding::Raw)[..HEADER_PREFIX_LEN]
}

/// The encoding of a stored object from its first bytes (up to
/// [`HEADER_LEN`]): a header's, or bare when it has none.
pub fn stored_encoding(start: &[u8]) -> Result<Encoding, FormatError> {
    if start.len() >= HEADER_LEN as usize && starts_like_header(start) {
        parse_header(start)
    } else {
        Ok(Encoding::Bare)
    }
}

/// Where the content starts in a stored object of `encoding`.
pub fn content_offset(encoding: Encoding) -> u64 {
    match encoding {
        Encoding::Bare => 0,
        Encoding::Raw | Encoding::Zstd => HEADER_LEN,
    }
}

/// Reads the encoding from a header.
pub fn parse_header(bytes: &[u8]) -> Result<Encoding, FormatError> {
    if bytes.len() < HEADER_LEN as usize
        || bytes[0..4] != HEADER_MAGIC.to_le_bytes()
        || bytes[8..12] != *HEADER_TAG
    {
        return Err(FormatError("missing header"));
    }
    match bytes[12] {
        0 => Ok(Encoding::Raw),
        1 => Ok(Encoding::Zstd),
        _ => Err(FormatError("unknown encoding")),
    }
}

/// One frame of a zstd-encoded blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameEntry {
    /// Compressed length in storage.
    pub compressed: u32,
    /// Uncompressed length.
    pub decompressed: u32,
}

/// The seek-table trailer for `frames`.
pub fn seek_table(frames: &[FrameEntry]) -> Vec<u8> {
    let content_len = frames.len() * SEEK_ENTRY_LEN + SEEK_FOOTER_LEN;
    let mut out = Vec::with_capacity(8 + content_len);
    out.extend_from_slice(&SEEK_TABLE_MAGIC.to_le_bytes());
    out.extend_from_slice(&(content_len as u32).to_le_bytes());
    for frame in frames {
        out.extend_from_slice(&frame.compressed.to_le_bytes());
        out.extend_from_slice(&frame.decompressed.to_le_bytes());
    }
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    out.push(0); // descriptor: no checksums
    out.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
    out
}

/// Length of the seek table of a blob of `size` uncompressed bytes.
pub fn seek_table_len(size: u64) -> u64 {
    let frames = size.div_ceil(FRAME_SIZE as u64);
    8 + frames * SEEK_ENTRY_LEN as u64 + SEEK_FOOTER_LEN as u64
}

/// The number of frames a seek table holds, read from its last
/// [`SEEK_FOOTER_LEN`] bytes.
pub fn seek_footer_frames(footer: &[u8]) -> Result<u32, FormatError> {
    let footer = footer
        .get(footer.len().saturating_sub(SEEK_FOOTER_LEN)..)
        .filter(|f| f.len() == SEEK_FOOTER_LEN)
        .ok_or(FormatError("seek table footer too short"))?;
    if footer[5..9] != SEEKABLE_MAGIC.to_le_bytes() {
        return Err(FormatError("seek table magic missing"));
    }
    Ok(u32::from_le_bytes([
        footer[0], footer[1], footer[2], footer[3],
    ]))
}

/// Parses a whole seek table (as returned by [`seek_table`]).
pub fn parse_seek_table(table: &[u8]) -> Result<Vec<FrameEntry>, FormatError> {
    let frames = seek_footer_frames(table)? as usize;
    let expected = 8 + frames * SEEK_ENTRY_LEN + SEEK_FOOTER_LEN;
    if table.len() != expected || table[0..4] != SEEK_TABLE_MAGIC.to_le_bytes() {
        return Err(FormatError("seek table length or magic wrong"));
    }
    Ok(table[8..8 + frames * SEEK_ENTRY_LEN]
        .chunks_exact(SEEK_ENTRY_LEN)
        .map(|entry| FrameEntry {
            compressed: u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]),
            decompressed: u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]),
        })
        .collect())
}

/// What to read from storage to serve an uncompressed byte range of a
/// zstd-encoded blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramePlan {
    /// The stored bytes holding the frames that cover the range.
    pub stored: Range<u64>,
    /// Uncompressed bytes to drop from the start of the decoded frames.
    pub skip: u64,
    /// Uncompressed bytes to keep after that.
    pub take: u64,
}

/// Plans the read of uncompressed `range` (non-empty, within the blob).
pub fn plan_range(frames: &[FrameEntry], range: Range<u64>) -> Option<FramePlan> {
    let mut stored_offset = HEADER_LEN;
    let mut plain_offset = 0u64;
    let mut start: Option<(u64, u64)> = None;
    for frame in frames {
        let plain_end = plain_offset + u64::from(frame.decompressed);
        let stored_end = stored_offset + u64::from(frame.compressed);
        if start.is_none() && range.start < plain_end {
            start = Some((stored_offset, plain_offset));
        }
        if let Some((stored_start, plain_start)) = start
            && range.end <= plain_end
        {
            return Some(FramePlan {
                stored: stored_start..stored_end,
                skip: range.start - plain_start,
                take: range.end - range.start,
            });
        }
        plain_offset = plain_end;
        stored_offset = stored_end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_foreign_bytes() {
        assert_eq!(parse_header(&header(Encoding::Raw)).unwrap(), Encoding::Raw);
        assert_eq!(
            parse_header(&header(Encoding::Zstd)).unwrap(),
            Encoding::Zstd
        );
        let zstd_magic = [0x28, 0xB5, 0x2F, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(parse_header(&zstd_magic).is_err());
        assert!(parse_header(&header(Encoding::Raw)[..8]).is_err());
    }

    #[test]
    fn seek_table_round_trips() {
        let frames = vec![
            FrameEntry {
                compressed: 10,
                decompressed: FRAME_SIZE as u32,
            },
            FrameEntry {
                compressed: 7,
                decompressed: 5,
            },
        ];
        let table = seek_table(&frames);
        assert_eq!(table.len() as u64, seek_table_len(FRAME_SIZE as u64 + 5));
        assert_eq!(parse_seek_table(&table).unwrap(), frames);
        assert_eq!(seek_footer_frames(&table).unwrap(), 2);
    }

    #[test]
    fn range_plan_touches_only_covering_frames() {
        let frames = vec![
            FrameEntry {
                compressed: 100,
                decompressed: 1000,
            },
            FrameEntry {
                compressed: 50,
                decompressed: 1000,
            },
            FrameEntry {
                compressed: 20,
                decompressed: 10,
            },
        ];
        let h = HEADER_LEN;
        assert_eq!(
            plan_range(&frames, 0..1),
            Some(FramePlan {
                stored: h..h + 100,
                skip: 0,
                take: 1
            })
        );
        assert_eq!(
            plan_range(&frames, 1500..2005),
            Some(FramePlan {
                stored: h + 100..h + 170,
                skip: 500,
                take: 505
            })
        );
        assert_eq!(
            plan_range(&frames, 999..1001),
            Some(FramePlan {
                stored: h..h + 150,
                skip: 999,
                take: 2
            })
        );
        assert_eq!(plan_range(&frames, 2000..2011), None);
    }

    #[test]
    fn a_zstd_blob_is_one_valid_zstd_stream() {
        let content = b"abcabcabc".repeat(1000);
        let frame = zstd::bulk::compress(&content, 3).unwrap();
        let mut stored = header(Encoding::Zstd).to_vec();
        stored.extend_from_slice(&frame);
        stored.extend(seek_table(&[FrameEntry {
            compressed: frame.len() as u32,
            decompressed: content.len() as u32,
        }]));
        assert_eq!(zstd::stream::decode_all(&stored[..]).unwrap(), content);
    }
}
