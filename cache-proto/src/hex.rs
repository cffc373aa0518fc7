//! 32-byte identifiers written as 64 lowercase hex characters.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid digest or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// The string does not have exactly 64 characters.
    #[error("expected 64 lowercase hex characters, got {0} characters")]
    Length(usize),
    /// The string has a character outside `0-9a-f`.
    #[error("expected 64 lowercase hex characters, found {0:?} at position {1}")]
    Character(char, usize),
}

/// The value of each lowercase hex digit, [`NOT_HEX`] for every other byte.
const NIBBLES: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut digit = 0;
    while digit < 16 {
        table[b"0123456789abcdef"[digit] as usize] = digit as u8;
        digit += 1;
    }
    table
};
const NOT_HEX: u8 = 0xff;

/// Parses 64 lowercase hex characters, a table lookup per character (this
/// runs for every blob request).
fn parse_hex64(text: &str) -> Result<[u8; 32], HexError> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return Err(HexError::Length(text.chars().count()));
    }
    let mut out = [0u8; 32];
    let mut invalid = 0u8;
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let (high, low) = (NIBBLES[usize::from(pair[0])], NIBBLES[usize::from(pair[1])]);
        invalid |= (high | low) & 0xf0;
        *byte = (high << 4) | (low & 0x0f);
    }
    if invalid != 0 {
        let (position, bad) = text
            .char_indices()
            .find(|(_, c)| !matches!(c, '0'..='9' | 'a'..='f'))
            .unwrap_or((0, '?'));
        return Err(HexError::Character(bad, position));
    }
    Ok(out)
}

/// The 64 lowercase hex characters of `bytes`, without allocating: this
/// runs for every ETag and path.
fn encode_hex(bytes: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, byte) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(byte >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(byte & 0x0f)];
    }
    out
}

fn write_hex(bytes: &[u8; 32], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    // Only ASCII hex digits were written.
    f.write_str(std::str::from_utf8(&encode_hex(bytes)).map_err(|_| fmt::Error)?)
}

macro_rules! hex64_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Parses exactly 64 lowercase hex characters.
            pub fn parse(text: &str) -> Result<Self, HexError> {
                parse_hex64(text).map(Self)
            }

            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The 64 lowercase hex characters, as ASCII bytes (no
            /// allocation, unlike `to_string`).
            pub fn hex_bytes(&self) -> [u8; 64] {
                encode_hex(&self.0)
            }

            /// Builds the value from raw bytes.
            pub fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The first `n` hex characters (at most 64), e.g. for short tags.
            pub fn short(&self, n: usize) -> String {
                let mut text = self.to_string();
                text.truncate(n.min(64));
                text
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl FromStr for $name {
            type Err = HexError;
            fn from_str(text: &str) -> Result<Self, HexError> {
                Self::parse(text)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

hex64_type!(
    /// The BLAKE3 hash of a blob's uncompressed content: its name in the CAS.
    Digest
);

hex64_type!(
    /// An action-cache key: an opaque 32-byte name chosen by the client
    /// (typically itself a BLAKE3 hash of the inputs of an action).
    Key
);

hex64_type!(
    /// The SHA-256 of a blob's content, as Bazel and the Remote Execution
    /// API name blobs by default.
    Sha256
);

impl Digest {
    /// The digest of `content`.
    pub fn of(content: &[u8]) -> Self {
        Self(*blake3::hash(content).as_bytes())
    }
}

impl From<blake3::Hash> for Digest {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

    #[test]
    fn parses_lowercase_hex_and_prints_it_back() {
        let digest = Digest::parse(EMPTY).unwrap();
        assert_eq!(digest.to_string(), EMPTY);
        assert_eq!(digest, Digest::of(b""));
        assert_eq!(digest.short(16), &EMPTY[..16]);
    }

    #[test]
    fn every_digit_parses_in_both_halves_of_a_byte_and_a_late_bad_one_is_found() {
        let text = "0123456789abcdef".repeat(4);
        let digest = Digest::parse(&text).unwrap();
        assert_eq!(digest.to_string(), text);
        assert_eq!(&digest.hex_bytes()[..], text.as_bytes());
        let late = format!("{}g", &text[..63]);
        assert_eq!(Digest::parse(&late), Err(HexError::Character('g', 63)));
        let high = format!("{}\u{7f}", &text[..63]);
        assert_eq!(Digest::parse(&high), Err(HexError::Character('\u{7f}', 63)));
    }

    #[test]
    fn rejects_uppercase_wrong_length_and_traversal() {
        assert_eq!(
            Digest::parse(&EMPTY.to_uppercase()),
            Err(HexError::Character('A', 0))
        );
        assert_eq!(Digest::parse(&EMPTY[..63]), Err(HexError::Length(63)));
        let traversal = format!("../{}", &EMPTY[3..]);
        assert_eq!(Key::parse(&traversal), Err(HexError::Character('.', 0)));
        let unicode = format!("é{}", &EMPTY[2..]);
        assert!(matches!(
            Key::parse(&unicode),
            Err(HexError::Character('é', 0))
        ));
    }

    #[test]
    fn json_round_trip_validates() {
        let json = format!("\"{EMPTY}\"");
        let digest: Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&digest).unwrap(), json);
        assert!(serde_json::from_str::<Digest>("\"abc\"").is_err());
    }
}
