//! ByteStream resource names (REAPI v2):
//!
//! - reads: `{instance}/blobs/{function/}{hash}/{size}` and
//!   `{instance}/compressed-blobs/zstd/{function/}{hash}/{size}`;
//! - writes: `{instance}/uploads/{uuid}/blobs/{function/}{hash}/{size}{/metadata}`
//!   and the same with `compressed-blobs/zstd/`.
//!
//! The digest function segment is present only for functions whose hashes
//! cannot be told apart by length: `blake3` here; SHA-256 has none.

use std::fmt;

use crate::protocol_names::BazelHash;

/// A parsed resource name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceName {
    /// The instance name: everything before the reserved segment (may be empty).
    pub instance: String,
    /// The upload id of a write resource.
    pub upload: Option<String>,
    /// The bytes on the wire are zstd frames.
    pub zstd: bool,
    /// The digest's hash: BLAKE3 with a `blake3/` segment, else SHA-256.
    pub hash: BazelHash,
    /// The uncompressed size.
    pub size: u64,
}

/// Why a resource name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadResourceName(String);

impl fmt::Display for BadResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which form is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `.../blobs/...` or `.../compressed-blobs/...`.
    Read,
    /// `.../uploads/{uuid}/blobs/...`.
    Write,
}

/// Words an instance name may not hold as a segment.
const RESERVED: [&str; 7] = [
    "blobs",
    "uploads",
    "compressed-blobs",
    "actions",
    "actionResults",
    "operations",
    "capabilities",
];

/// The longest resource name taken (instance names are short paths).
const MAX_LENGTH: usize = 2048;

impl ResourceName {
    /// Parses `text` as a resource name of `kind`.
    pub fn parse(text: &str, kind: Kind) -> Result<Self, BadResourceName> {
        let bad = |why: &str| BadResourceName(format!("resource name {text:?}: {why}"));
        if text.len() > MAX_LENGTH {
            return Err(BadResourceName(format!(
                "a resource name of {} bytes is longer than the {MAX_LENGTH} taken",
                text.len()
            )));
        }
        let segments: Vec<&str> = text.split('/').collect();
        let (instance_end, upload, rest) = match kind {
            Kind::Read => {
                let at = segments
                    .iter()
                    .position(|s| *s == "blobs" || *s == "compressed-blobs")
                    .ok_or_else(|| bad("no blobs/ or compressed-blobs/ segment"))?;
                (at, None, &segments[at..])
            }
            Kind::Write => {
                let at = segments
                    .iter()
                    .position(|s| *s == "uploads")
                    .ok_or_else(|| bad("no uploads/ segment"))?;
                let id = segments
                    .get(at + 1)
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| bad("no upload id after uploads/"))?;
                (
                    at,
                    Some((*id).to_owned()),
                    &segments[(at + 2).min(segments.len())..],
                )
            }
        };
        if let Some(word) = segments[..instance_end]
            .iter()
            .find(|segment| RESERVED.contains(segment))
        {
            return Err(bad(&format!(
                "the instance name holds the reserved word {word:?}"
            )));
        }
        let instance = segments[..instance_end].join("/");
        let (zstd, rest) = match rest {
            ["blobs", rest @ ..] => (false, rest),
            ["compressed-blobs", "zstd", rest @ ..] => (true, rest),
            ["compressed-blobs", other, ..] => {
                return Err(bad(&format!(
                    "compressor {other:?} is not served (zstd is)"
                )));
            }
            _ => return Err(bad("blobs/ or compressed-blobs/zstd/ expected")),
        };
        let (blake3, rest) = match rest {
            ["blake3", rest @ ..] => (true, rest),
            ["sha256", rest @ ..] => (false, rest),
            rest => (false, rest),
        };
        let (hex, size, metadata) = match rest {
            [hex, size, metadata @ ..] => (*hex, *size, metadata),
            _ => return Err(bad("{hash}/{size} expected")),
        };
        if kind == Kind::Read && !metadata.is_empty() {
            return Err(bad("unexpected segments after the size"));
        }
        let hash = BazelHash::parse(hex, blake3)
            .map_err(|_| bad("the hash is not 64 lowercase hex digits"))?;
        let size = size
            .parse::<u64>()
            .ok()
            .filter(|_| size.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| bad("the size is not a decimal number"))?;
        Ok(Self {
            instance,
            upload,
            zstd,
            hash,
            size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn read_names_with_and_without_instance_compressor_and_function() {
        let plain = ResourceName::parse(&format!("blobs/{HEX}/0"), Kind::Read).unwrap();
        assert_eq!(plain.instance, "");
        assert!(!plain.zstd && !plain.hash.is_blake3());
        let named = ResourceName::parse(
            &format!("ns/team/compressed-blobs/zstd/blake3/{HEX}/42"),
            Kind::Read,
        )
        .unwrap();
        assert_eq!(named.instance, "ns/team");
        assert!(named.zstd && named.hash.is_blake3());
        assert_eq!(named.size, 42);
    }

    #[test]
    fn write_names_carry_the_upload_id_and_may_end_in_metadata() {
        let name = ResourceName::parse(
            &format!("main/uploads/5f1c/compressed-blobs/zstd/{HEX}/7/extra/meta"),
            Kind::Write,
        )
        .unwrap();
        assert_eq!(name.instance, "main");
        assert_eq!(name.upload.as_deref(), Some("5f1c"));
        assert!(name.zstd);
        assert_eq!(name.size, 7);
    }

    #[test]
    fn malformed_names_are_refused() {
        for text in [
            String::new(),
            format!("blobs/{HEX}"),
            format!("blobs/{HEX}/-1"),
            format!("blobs/{HEX}/+1"),
            format!("blobs/{}/1", HEX.to_uppercase()),
            format!("compressed-blobs/deflate/{HEX}/1"),
            format!("blobs/{HEX}/1/trailing"),
            format!("uploads/blobs/{HEX}/1"),
            "x/".repeat(2000),
        ] {
            let kind = if text.contains("uploads") {
                Kind::Write
            } else {
                Kind::Read
            };
            assert!(ResourceName::parse(&text, kind).is_err(), "{text:?}");
        }
        assert!(ResourceName::parse(&format!("uploads/u/blobs/{HEX}/1"), Kind::Read).is_err());
    }
}
