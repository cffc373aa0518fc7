//! The server's zstd upload framing (`blob::reframe`): a zstd body, cut into
//! frames as the upload cuts them. The input is a recipe, so that most runs
//! reach the framing rather than dying on a bad magic number: a mode byte,
//! a position, then content; the content (repeated up to a few MiB) is sent
//! raw, as one frame, as frames of a size the mode picks, or streamed, and
//! one byte at the position may be flipped. Never a panic; the plain size
//! stays under the limit; and when the body is accepted, the outputs hold
//! exactly the plain bytes the hash saw, each stored frame (all but the last
//! full) decoding to its seek-table entry.

#![no_main]

use cache_server::blob::format::FRAME_SIZE;
use cache_server::blob::reframe::{self, Output, PlainSink, Reframer};
use libfuzzer_sys::fuzz_target;

/// Limit of the plain content (a bomb must stop here).
const LIMIT: u64 = 3 * FRAME_SIZE as u64;

struct Seen(Vec<u8>);

impl PlainSink for Seen {
    fn update(&mut self, plain: &[u8]) {
        self.0.extend_from_slice(plain);
    }
}

fn run(wire: &[u8]) -> Option<(Vec<Output>, Vec<u8>)> {
    let mut reframer = Reframer::new(1, LIMIT, Seen(Vec::new()));
    let mut outputs = Vec::new();
    let mut rest = wire;
    while let Some(length) = reframe::first_frame_len(rest) {
        outputs.extend(reframer.frame(rest[..length].to_vec()).ok()?);
        rest = &rest[length..];
    }
    if !rest.is_empty() {
        // The upload hands what cannot be cut into frames to a stream decoder.
        let plain = zstd::stream::decode_all(rest).ok()?;
        for chunk in plain.chunks(FRAME_SIZE) {
            outputs.extend(reframer.plain(chunk.to_vec()).ok()?);
        }
    }
    let finished = reframer.finish().ok()?;
    assert!(finished.size <= LIMIT);
    assert_eq!(finished.size, finished.sink.0.len() as u64);
    outputs.extend(finished.outputs);
    Some((outputs, finished.sink.0))
}

/// The zstd body the recipe `input` describes.
fn body(input: &[u8]) -> Vec<u8> {
    let [mode, at_high, at_low, content @ ..] = input else {
        return input.to_vec();
    };
    let repeat = 1 + usize::from(mode >> 5) * 700;
    let plain: Vec<u8> = content
        .iter()
        .copied()
        .cycle()
        .take((content.len() * repeat).min(4 << 20))
        .collect();
    let mut wire = match mode & 3 {
        0 => content.to_vec(),
        1 => zstd::bulk::compress(&plain, 1).unwrap_or_default(),
        2 => {
            let size = match (mode >> 2) & 7 {
                0 => FRAME_SIZE,
                n => usize::from(n) * 97_000,
            };
            plain
                .chunks(size.max(1))
                .flat_map(|chunk| zstd::bulk::compress(chunk, 1).unwrap_or_default())
                .collect()
        }
        _ => zstd::stream::encode_all(&plain[..], 1).unwrap_or_default(),
    };
    let at = usize::from(*at_high) << 8 | usize::from(*at_low);
    if mode & 0x10 != 0 && !wire.is_empty() {
        let index = at % wire.len();
        wire[index] ^= at_low | 1;
    }
    wire
}

fuzz_target!(|input: &[u8]| {
    let wire = body(input);
    let Some((outputs, seen)) = run(&wire) else {
        return;
    };
    let count = outputs.len();
    let mut stored = Vec::new();
    for (index, output) in outputs.into_iter().enumerate() {
        match output {
            Output::Frame(frame, entry) => {
                let plain =
                    zstd::bulk::decompress(&frame, FRAME_SIZE).expect("a stored frame decodes");
                assert_eq!(plain.len(), entry.decompressed as usize);
                assert_eq!(frame.len(), entry.compressed as usize);
                if index + 1 < count {
                    assert_eq!(plain.len(), FRAME_SIZE, "only the last frame is short");
                }
                stored.extend(plain);
            }
            Output::Plain(bytes) => stored.extend(bytes),
        }
    }
    assert!(stored == seen, "what is stored is not what was hashed");
});
