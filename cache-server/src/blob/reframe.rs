//! Turning a zstd upload into the stored zstd layout without compressing
//! again what the client already compressed well.
//!
//! The stored layout is a sequence of independent frames of [`FRAME_SIZE`]
//! uncompressed bytes (the last one shorter). A client that compresses the
//! same way (`cachectl` does) sends frames that can be stored as they are:
//! each is decompressed only to hash it and to check its size. Anything else
//! (frames of other sizes, frames that do not declare their size, one frame
//! for the whole blob) is decompressed and cut into stored frames here,
//! compressed at the server's level. Skippable frames carry no content and
//! are dropped.
//!
//! [`Reframer`] does the CPU work and is driven by the upload with whole
//! compressed frames ([`Reframer::frame`]) or, once the input could not be
//! cut into frames of a bounded size, with plain bytes
//! ([`Reframer::plain`]); every output is ready to be written.

use std::io::Read;

use super::format::{self, Encoding, FRAME_SIZE, FrameEntry};

/// A compressed first frame must be at most this share of its size (in
/// tenths) for the blob to be stored compressed; otherwise it is stored as
/// its own bytes, like a plain upload that does not compress.
const WORTH_COMPRESSING_TENTHS: usize = 9;

/// Largest compressed frame the upload holds in memory to split the input:
/// a frame of [`FRAME_SIZE`] bytes that did not compress, plus headroom.
pub const MAX_HELD_FRAME: usize = FRAME_SIZE + 64 * 1024;

/// The length of the first complete frame at the start of `wire`, if it
/// holds one.
pub fn first_frame_len(wire: &[u8]) -> Option<usize> {
    zstd::zstd_safe::find_frame_compressed_size(wire)
        .ok()
        .filter(|&length| length > 0 && length <= wire.len())
}

/// Why an upload's zstd could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum ReframeError {
    /// The content is larger than the limit.
    #[error("the content exceeds {0} bytes")]
    TooLarge(u64),
    /// The bytes are not valid zstd.
    #[error("invalid zstd: {0}")]
    Invalid(String),
}

/// What to write next.
pub enum Output {
    /// A frame in the stored zstd layout, and its seek-table entry.
    Frame(Vec<u8>, FrameEntry),
    /// Content stored as it is (the blob did not compress).
    Plain(Vec<u8>),
}

/// The end of an upload.
pub struct Finished<H> {
    /// The last outputs.
    pub outputs: Vec<Output>,
    /// Plain bytes in all.
    pub size: u64,
    /// How the blob is stored; `None` when it is empty.
    pub encoding: Option<Encoding>,
    /// The sink that saw every plain byte.
    pub sink: H,
}

/// What sees every plain byte of the upload, in order (the upload's hash).
pub trait PlainSink {
    /// Takes the next plain bytes.
    fn update(&mut self, plain: &[u8]);
}

/// The state of one upload.
pub struct Reframer<H> {
    level: i32,
    max_size: u64,
    size: u64,
    hasher: H,
    /// Plain bytes not yet framed (fewer than [`FRAME_SIZE`]).
    pending: Vec<u8>,
    /// A short frame kept as sent if it turns out to be the last one.
    held: Option<(Vec<u8>, Vec<u8>)>,
    /// Decided by the first content: compressed or not.
    encoding: Option<Encoding>,
}

impl<H: PlainSink> Reframer<H> {
    /// A reframer compressing at `level`, refusing content over `max_size`
    /// bytes, passing every plain byte to `hasher` in order.
    pub fn new(level: i32, max_size: u64, hasher: H) -> Self {
        Self {
            level,
            max_size,
            size: 0,
            hasher,
            pending: Vec::new(),
            held: None,
            encoding: None,
        }
    }

    /// How the blob is stored, once the first content decided it.
    pub fn encoding(&self) -> Option<Encoding> {
        self.encoding
    }

    /// Plain bytes so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Takes one whole compressed frame (as cut by [`first_frame_len`]).
    pub fn frame(&mut self, frame: Vec<u8>) -> Result<Vec<Output>, ReframeError> {
        if is_skippable(&frame) {
            return Ok(Vec::new());
        }
        let declared = zstd::zstd_safe::get_frame_content_size(&frame)
            .ok()
            .flatten()
            .filter(|&size| size <= FRAME_SIZE as u64);
        let Some(declared) = declared else {
            // No size, or more than a stored frame: decompress it in pieces.
            let mut outputs = Vec::new();
            let mut decoder = zstd::stream::read::Decoder::with_buffer(&frame[..])
                .map_err(|e| ReframeError::Invalid(e.to_string()))?
                .single_frame();
            loop {
                let mut piece = Vec::with_capacity(FRAME_SIZE);
                let read = (&mut decoder)
                    .take(FRAME_SIZE as u64)
                    .read_to_end(&mut piece)
                    .map_err(|e| ReframeError::Invalid(e.to_string()))?;
                if read == 0 {
                    return Ok(outputs);
                }
                outputs.extend(self.plain(piece)?);
            }
        };
        let plain = zstd::bulk::decompress(&frame, declared as usize)
            .map_err(|e| ReframeError::Invalid(e.to_string()))?;
        if plain.len() as u64 != declared {
            return Err(ReframeError::Invalid(
                "a frame holds other than the size it declares".into(),
            ));
        }
        let mut outputs = self.release_held()?;
        self.count(&plain)?;
        if self.pending.is_empty() && plain.len() == FRAME_SIZE {
            outputs.push(self.emit(Some(frame), &plain)?);
        } else if self.pending.is_empty() {
            self.held = Some((frame, plain));
        } else {
            outputs.extend(self.frame_pending(plain)?);
        }
        Ok(outputs)
    }

    /// Takes plain (decompressed) bytes.
    pub fn plain(&mut self, plain: Vec<u8>) -> Result<Vec<Output>, ReframeError> {
        let mut outputs = self.release_held()?;
        self.count(&plain)?;
        outputs.extend(self.frame_pending(plain)?);
        Ok(outputs)
    }

    /// The last outputs, once the input has ended; the plain size, the
    /// encoding (none for an empty blob) and the sink.
    pub fn finish(mut self) -> Result<Finished<H>, ReframeError> {
        let mut outputs = Vec::new();
        match self.held.take() {
            Some((frame, plain)) if self.pending.is_empty() && !plain.is_empty() => {
                outputs.push(self.emit(Some(frame), &plain)?);
            }
            Some((_, plain)) => self.pending.extend_from_slice(&plain),
            None => {}
        }
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            outputs.push(self.emit(None, &rest)?);
        }
        Ok(Finished {
            outputs,
            size: self.size,
            encoding: self.encoding,
            sink: self.hasher,
        })
    }

    fn count(&mut self, plain: &[u8]) -> Result<(), ReframeError> {
        self.size += plain.len() as u64;
        if self.size > self.max_size {
            return Err(ReframeError::TooLarge(self.max_size));
        }
        self.hasher.update(plain);
        Ok(())
    }

    /// A held frame was not the last: its bytes join the pending ones.
    fn release_held(&mut self) -> Result<Vec<Output>, ReframeError> {
        match self.held.take() {
            Some((_, plain)) => self.frame_pending(plain),
            None => Ok(Vec::new()),
        }
    }

    /// Adds `plain` (already counted) to the pending bytes and frames every
    /// full [`FRAME_SIZE`] of them.
    fn frame_pending(&mut self, plain: Vec<u8>) -> Result<Vec<Output>, ReframeError> {
        if self.pending.is_empty() {
            self.pending = plain;
        } else {
            self.pending.extend_from_slice(&plain);
        }
        let mut outputs = Vec::new();
        let mut start = 0;
        let pending = std::mem::take(&mut self.pending);
        while pending.len() - start >= FRAME_SIZE {
            outputs.push(self.emit(None, &pending[start..start + FRAME_SIZE])?);
            start += FRAME_SIZE;
        }
        self.pending = pending;
        self.pending.drain(..start);
        Ok(outputs)
    }

    /// The output for `plain` (one stored frame's worth): `frame` as sent
    /// when there is one, else compressed here; or the bytes themselves
    /// once the first frame showed the blob does not compress.
    fn emit(&mut self, frame: Option<Vec<u8>>, plain: &[u8]) -> Result<Output, ReframeError> {
        if matches!(self.encoding, Some(Encoding::Bare | Encoding::Raw)) {
            return Ok(Output::Plain(plain.to_vec()));
        }
        let frame = match frame {
            Some(frame) => frame,
            None => zstd::bulk::compress(plain, self.level)
                .map_err(|e| ReframeError::Invalid(e.to_string()))?,
        };
        let encoding = *self.encoding.get_or_insert_with(|| {
            if frame.len() * 10 <= plain.len() * WORTH_COMPRESSING_TENTHS {
                Encoding::Zstd
            } else if format::starts_like_header(plain) {
                Encoding::Raw
            } else {
                Encoding::Bare
            }
        });
        Ok(match encoding {
            Encoding::Zstd => {
                let entry = FrameEntry {
                    compressed: frame.len() as u32,
                    decompressed: plain.len() as u32,
                };
                Output::Frame(frame, entry)
            }
            Encoding::Bare | Encoding::Raw => Output::Plain(plain.to_vec()),
        })
    }
}

/// Whether `frame` is a skippable frame (magic `0x184D2A5?`).
fn is_skippable(frame: &[u8]) -> bool {
    frame
        .get(..4)
        .and_then(|magic| magic.try_into().ok())
        .is_some_and(|magic: [u8; 4]| u32::from_le_bytes(magic) & 0xFFFF_FFF0 == 0x184D_2A50)
}

#[cfg(test)]
mod tests {
    use super::*;

    impl PlainSink for Vec<u8> {
        fn update(&mut self, plain: &[u8]) {
            self.extend_from_slice(plain);
        }
    }

    /// Runs `wire` through a reframer the way the upload does; returns the
    /// outputs and the plain bytes it saw.
    fn run(wire: &[u8]) -> (Vec<Output>, Vec<u8>) {
        let mut reframer = Reframer::new(3, u64::MAX, Vec::new());
        let mut outputs = Vec::new();
        let mut rest = wire;
        while let Some(length) = first_frame_len(rest) {
            outputs.extend(reframer.frame(rest[..length].to_vec()).unwrap());
            rest = &rest[length..];
        }
        assert!(rest.is_empty());
        let finished = reframer.finish().unwrap();
        outputs.extend(finished.outputs);
        let seen = finished.sink;
        assert_eq!(finished.size, seen.len() as u64);
        (outputs, seen)
    }

    fn content(length: usize) -> Vec<u8> {
        (0..length)
            .map(|i| (i % 251) as u8 ^ (i / 7919) as u8)
            .collect()
    }

    fn decompressed(outputs: &[Output]) -> Vec<u8> {
        let mut plain = Vec::new();
        for (index, output) in outputs.iter().enumerate() {
            let Output::Frame(frame, entry) = output else {
                panic!("a compressible blob stored plain");
            };
            let part = zstd::bulk::decompress(frame, FRAME_SIZE).unwrap();
            assert_eq!(part.len(), entry.decompressed as usize);
            assert_eq!(frame.len(), entry.compressed as usize);
            if index + 1 < outputs.len() {
                assert_eq!(part.len(), FRAME_SIZE, "only the last frame is short");
            }
            plain.extend(part);
        }
        plain
    }

    #[test]
    fn frames_in_the_stored_layout_are_kept_as_sent() {
        let plain = content(2 * FRAME_SIZE + 1000);
        let frames: Vec<Vec<u8>> = plain
            .chunks(FRAME_SIZE)
            .map(|chunk| zstd::bulk::compress(chunk, 1).unwrap())
            .collect();
        let (outputs, hashed) = run(&frames.concat());
        assert_eq!(hashed, plain);
        let kept: Vec<&Vec<u8>> = outputs
            .iter()
            .filter_map(|output| match output {
                Output::Frame(frame, _) => Some(frame),
                Output::Plain(_) => None,
            })
            .collect();
        assert_eq!(kept, frames.iter().collect::<Vec<_>>());
    }

    #[test]
    fn other_framings_are_cut_into_stored_frames() {
        let plain = content(3 * FRAME_SIZE + 77);
        // One frame for everything, with and without a declared size.
        let whole = zstd::bulk::compress(&plain, 3).unwrap();
        let streamed = zstd::stream::encode_all(&plain[..], 3).unwrap();
        // Small frames, a skippable frame among them.
        let mut small = Vec::new();
        for (index, chunk) in plain.chunks(300_000).enumerate() {
            small.extend(zstd::bulk::compress(chunk, 3).unwrap());
            if index == 2 {
                small.extend(0x184D_2A53u32.to_le_bytes());
                small.extend(4u32.to_le_bytes());
                small.extend(b"skip");
            }
        }
        for wire in [whole, streamed, small] {
            let (outputs, hashed) = run(&wire);
            assert_eq!(hashed, plain);
            assert_eq!(outputs.len(), 4);
            assert_eq!(decompressed(&outputs), plain);
        }
    }

    #[test]
    fn content_that_does_not_compress_is_stored_as_it_is() {
        let mut state = 7u64;
        let noise: Vec<u8> = (0..FRAME_SIZE + 5000)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 33) as u8
            })
            .collect();
        let wire = zstd::stream::encode_all(&noise[..], 3).unwrap();
        let mut reframer = Reframer::new(3, u64::MAX, Vec::new());
        let mut outputs = reframer.frame(wire).unwrap();
        outputs.extend(reframer.finish().unwrap().outputs);
        let mut stored = Vec::new();
        for output in outputs {
            match output {
                Output::Plain(bytes) => stored.extend(bytes),
                Output::Frame(..) => panic!("noise stored compressed"),
            }
        }
        assert!(stored == noise);
    }

    #[test]
    fn empty_content_and_limits() {
        let (outputs, hashed) = run(&zstd::bulk::compress(b"", 3).unwrap());
        assert!(outputs.is_empty() && hashed.is_empty());
        let bomb = zstd::bulk::compress(&vec![0u8; 8 * FRAME_SIZE], 3).unwrap();
        let mut reframer = Reframer::new(3, 2 * FRAME_SIZE as u64, Vec::new());
        assert!(matches!(
            reframer.frame(bomb),
            Err(ReframeError::TooLarge(_))
        ));
        let mut lying = zstd::bulk::compress(&content(1000), 3).unwrap();
        let last = lying.len() - 1;
        lying[last] ^= 0xff;
        let mut reframer = Reframer::new(3, u64::MAX, Vec::new());
        assert!(reframer.frame(lying).is_err());
    }
}
