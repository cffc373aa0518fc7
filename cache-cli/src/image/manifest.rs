//! The OCI values cachectl reads and writes: digests, descriptors, image
//! manifests and indexes. Each keeps what it does not model (a tool's own
//! fields, `urls`, `data`, ...) on the way through, so a value read and
//! written back carries everything it came with; and [`Parsed`] keeps the
//! bytes a value came as, so one that is not changed is written back as
//! exactly those bytes and its digest does not move.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::oci::{self, Platform};
use crate::invalid::Invalid;

/// A content digest, `algorithm:encoded`, as the OCI image spec defines
/// it: `sha256:` and 64 lowercase hex digits, `sha512:` and 128, or another
/// registered-looking algorithm with its encoded part.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OciDigest(String);

impl OciDigest {
    /// Parses and checks `text`.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let bad = |why: &str| Invalid(format!("digest {text:?}: {why}"));
        let (algorithm, encoded) = text
            .split_once(':')
            .ok_or_else(|| bad("no algorithm: prefix"))?;
        let algorithm_ok = !algorithm.is_empty()
            && algorithm.split(['+', '.', '_', '-']).all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        if !algorithm_ok {
            return Err(bad("the algorithm is not [a-z0-9] words"));
        }
        let lower_hex = |len: usize| {
            encoded.len() == len
                && encoded
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let encoded_ok = match algorithm {
            "sha256" => lower_hex(64),
            "sha512" => lower_hex(128),
            _ => {
                !encoded.is_empty()
                    && encoded
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
            }
        };
        if !encoded_ok {
            return Err(bad("the encoded part does not fit the algorithm"));
        }
        Ok(Self(text.to_owned()))
    }

    /// The `sha256:` digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        Self(super::oci::sha256_digest(bytes))
    }

    /// The `sha256:` digest of the file at `path`, read in 1 MiB pieces.
    pub fn sha256_of_file(path: &std::path::Path) -> std::io::Result<Self> {
        use sha2::Digest as _;
        use std::io::Read as _;
        let mut file = std::fs::File::open(path)?;
        let mut hasher = sha2::Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
        Ok(Self::from_sha256(hasher.finalize().into()))
    }

    /// The `sha256:` digest whose hash is `hash` (a SHA-256 computed here,
    /// e.g. while packing a layer).
    pub fn from_sha256(hash: [u8; 32]) -> Self {
        let hex: String = hash.iter().map(|byte| format!("{byte:02x}")).collect();
        Self(format!("sha256:{hex}"))
    }

    /// The whole text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The algorithm, e.g. `sha256`.
    pub fn algorithm(&self) -> &str {
        self.0
            .split_once(':')
            .map_or("", |(algorithm, _)| algorithm)
    }

    /// The encoded part (the hex of a `sha256:` digest).
    pub fn encoded(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, encoded)| encoded)
    }

    /// The hex of a `sha256:` digest; other algorithms are `None`.
    pub fn sha256_hex(&self) -> Option<&str> {
        (self.algorithm() == "sha256").then(|| self.encoded())
    }
}

impl fmt::Display for OciDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for OciDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OciDigest({})", self.0)
    }
}

impl Serialize for OciDigest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for OciDigest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The platform of an index entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlatformSpec {
    /// e.g. `amd64`.
    pub architecture: String,
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// `os.version`, `os.features`, `features`, ...: kept as they came.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl PlatformSpec {
    /// Whether this is `platform` (any variant when it names none).
    pub fn is(&self, platform: &Platform) -> bool {
        self.os == platform.os
            && self.architecture == platform.architecture
            && match &platform.variant {
                Some(variant) => self.variant.as_ref() == Some(variant),
                None => true,
            }
    }
}

/// A content descriptor: what a manifest or an index says of another blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Its media type.
    pub media_type: String,
    /// Its digest.
    pub digest: OciDigest,
    /// Its size in bytes.
    pub size: u64,
    /// The platform of an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSpec>,
    /// Its annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// `artifactType`, `urls`, `data` and any other field: kept.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Descriptor {
    /// A plain descriptor of `media_type`, `digest` and `size`.
    pub fn new(media_type: &str, digest: OciDigest, size: u64) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest,
            size,
            platform: None,
            annotations: None,
            other: Map::new(),
        }
    }
}

/// What an image manifest and an index both carry around what they list:
/// the schema version, the media type, a subject, annotations and every
/// field no spec names (`artifactType`, a tool's own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Always 2.
    pub schema_version: u32,
    /// Its media type, when it says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifest this one refers to (a signature's, an SBOM's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Its annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// `artifactType` and any other field: kept.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Envelope {
    /// The envelope of a new manifest or index of `media_type`.
    pub fn new(media_type: &str) -> Self {
        Self {
            schema_version: 2,
            media_type: Some(media_type.to_owned()),
            subject: None,
            annotations: None,
            other: Map::new(),
        }
    }
}

/// An image manifest (OCI, or Docker schema 2, which has the same shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Version, media type, subject, annotations, other fields.
    #[serde(flatten)]
    pub envelope: Envelope,
    /// The image config.
    pub config: Descriptor,
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
}

impl Manifest {
    /// A new image manifest of `media_type`: `config` and `layers`.
    pub fn new(media_type: &str, config: Descriptor, layers: Vec<Descriptor>) -> Self {
        Self {
            envelope: Envelope::new(media_type),
            config,
            layers,
        }
    }
}

/// An image index (OCI, or a Docker manifest list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// Version, media type, subject, annotations, other fields.
    #[serde(flatten)]
    pub envelope: Envelope,
    /// The manifests it lists.
    pub manifests: Vec<Descriptor>,
}

impl Index {
    /// A new index of `media_type` listing `manifests`.
    pub fn new(media_type: &str, manifests: Vec<Descriptor>) -> Self {
        Self {
            envelope: Envelope::new(media_type),
            manifests,
        }
    }

    /// The entry for `platform`, if the index has one.
    pub fn entry_for(&self, platform: &Platform) -> Option<&Descriptor> {
        self.manifests.iter().find(|entry| {
            entry
                .platform
                .as_ref()
                .is_some_and(|spec| spec.is(platform))
        })
    }
}

/// What a manifest body is.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    /// One image.
    Image(Box<Manifest>),
    /// An index of images, one per platform.
    Index(Box<Index>),
}

/// A manifest or an index as a registry or a layout holds it: the bytes
/// (pushed again as they are, so its digest never moves), its digest and
/// media type, and what it says.
#[derive(Debug, Clone)]
pub struct PulledManifest {
    /// Its bytes.
    pub bytes: Bytes,
    /// Its digest.
    pub digest: OciDigest,
    /// Its media type (the one it names, else what its shape says).
    pub media_type: String,
    /// Parsed.
    pub document: Document,
}

impl PulledManifest {
    /// Parses `bytes` stored under `digest`; `what` names the image in the
    /// error. A body without `mediaType` is an index when it lists
    /// `manifests`, as the OCI spec lets a reader tell.
    pub fn parse(bytes: Bytes, digest: &str, what: &str) -> Result<Self, Invalid> {
        let digest = OciDigest::parse(digest).map_err(|e| Invalid(format!("{what}: {e}")))?;
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Shape {
            media_type: Option<String>,
            manifests: Option<serde::de::IgnoredAny>,
        }
        let shape: Shape = serde_json::from_slice(&bytes)
            .map_err(|e| Invalid(format!("{what}: the manifest is not JSON: {e}")))?;
        let is_index = match &shape.media_type {
            Some(media_type) => oci::is_index(media_type),
            None => shape.manifests.is_some(),
        };
        let media_type = shape.media_type.unwrap_or_else(|| {
            if is_index {
                oci::OCI_INDEX.to_owned()
            } else {
                oci::OCI_MANIFEST.to_owned()
            }
        });
        let document = if is_index {
            Document::Index(Box::new(read_value(&bytes, what)?))
        } else {
            Document::Image(Box::new(read_value(&bytes, what)?))
        };
        Ok(Self {
            bytes,
            digest,
            media_type,
            document,
        })
    }

    /// The image manifest, unless this is an index.
    pub fn image(&self) -> Option<&Manifest> {
        match &self.document {
            Document::Image(manifest) => Some(manifest),
            Document::Index(_) => None,
        }
    }

    /// The index, if this is one.
    pub fn index(&self) -> Option<&Index> {
        match &self.document {
            Document::Index(index) => Some(index),
            Document::Image(_) => None,
        }
    }
}

fn read_value<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, Invalid> {
    serde_json::from_slice(bytes).map_err(|e| {
        Invalid(format!(
            "{what}: not a valid manifest, index or config: {e}"
        ))
    })
}

/// A value with the bytes it was read from: written back unchanged as
/// those bytes, so its digest stays what it was.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed<T> {
    /// The value.
    pub value: T,
    /// The bytes it came as.
    pub bytes: Vec<u8>,
}

impl<T: for<'de> Deserialize<'de>> Parsed<T> {
    /// Parses `bytes`; `what` names them in the error (e.g. the image).
    pub fn read(bytes: Vec<u8>, what: &str) -> Result<Self, Invalid> {
        let value = read_value(&bytes, what)?;
        Ok(Self { value, bytes })
    }

    /// The digest of the bytes.
    pub fn digest(&self) -> OciDigest {
        OciDigest::sha256_of(&self.bytes)
    }
}

/// `value` as the JSON bytes of a new manifest, index or config: its keys
/// in sorted order, as cachectl has always written them, so the same image
/// keeps its digest across versions.
pub fn to_bytes<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&serde_json::to_value(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest as a signing or SBOM tool writes it: an artifact type, a
    /// subject, annotations everywhere, and fields no spec names.
    const FOREIGN: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.dev.cosign.artifact.sig.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"data":"e30="},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"sha256:0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9","size":241,"annotations":{"dev.cosignproject.cosign/signature":"MEUCIQ"},"urls":["https://example.com/blob"]}],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100","size":1234},"annotations":{"org.opencontainers.image.created":"2026-12-07T00:00:00Z"},"io.example.tool":{"run":42}}"#;

    #[test]
    fn a_foreign_manifest_keeps_every_field_and_its_bytes() {
        let parsed = Parsed::<Manifest>::read(FOREIGN.as_bytes().to_vec(), "test").unwrap();
        let manifest = &parsed.value;
        assert_eq!(manifest.layers.len(), 1);
        assert!(manifest.envelope.subject.is_some());
        assert_eq!(
            manifest.envelope.other["artifactType"],
            "application/vnd.dev.cosign.artifact.sig.v1+json"
        );
        assert_eq!(manifest.envelope.other["io.example.tool"]["run"], 42);
        assert_eq!(manifest.config.other["data"], "e30=");
        assert_eq!(
            manifest.layers[0].other["urls"][0],
            "https://example.com/blob"
        );
        // Unchanged: the same bytes, the same digest.
        assert_eq!(parsed.bytes, FOREIGN.as_bytes());
        assert_eq!(parsed.digest(), OciDigest::sha256_of(FOREIGN.as_bytes()));
        // Written anew, nothing is lost: it reads back equal.
        let again: Manifest = serde_json::from_slice(&to_bytes(manifest).unwrap()).unwrap();
        assert_eq!(&again, manifest);
    }

    #[test]
    fn a_layer_without_a_digest_or_a_size_is_an_error_naming_the_image() {
        let no_digest = br#"{"schemaVersion":2,"config":{"mediaType":"c","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[{"mediaType":"l","size":3}]}"#;
        let error = Parsed::<Manifest>::read(no_digest.to_vec(), "r.io/acme/base:1").unwrap_err();
        assert!(error.0.contains("r.io/acme/base:1"), "{error}");
        assert!(error.0.contains("digest"), "{error}");
        let no_size = br#"{"schemaVersion":2,"config":{"mediaType":"c","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[{"mediaType":"l","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}]}"#;
        let error = Parsed::<Manifest>::read(no_size.to_vec(), "r.io/acme/base:1").unwrap_err();
        assert!(error.0.contains("size"), "{error}");
    }

    #[test]
    fn digests_are_checked_by_algorithm() {
        let hex = "ab".repeat(32);
        assert!(OciDigest::parse(&format!("sha256:{hex}")).is_ok());
        assert!(OciDigest::parse(&format!("sha512:{}", "ab".repeat(64))).is_ok());
        assert!(
            OciDigest::parse("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8")
                .is_ok()
        );
        for bad in [
            "",
            "sha256",
            &format!("sha256:{}", "AB".repeat(32)),
            "sha256:abc",
            &format!("SHA256:{hex}"),
            &format!(":{hex}"),
            "sha256:../../etc",
        ] {
            assert!(OciDigest::parse(bad).is_err(), "{bad}");
        }
        let digest = OciDigest::sha256_of(b"");
        assert_eq!(digest.algorithm(), "sha256");
        assert_eq!(
            digest.encoded(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn index_entries_are_found_by_platform() {
        let spec = |text: &str| serde_json::from_str::<PlatformSpec>(text).unwrap();
        let arm = Platform::parse("linux/arm64/v8").unwrap();
        assert!(spec(r#"{"os": "linux", "architecture": "arm64", "variant": "v8"}"#).is(&arm));
        assert!(!spec(r#"{"os": "linux", "architecture": "amd64"}"#).is(&arm));
        let any_arm = Platform::parse("linux/arm64").unwrap();
        assert!(spec(r#"{"os": "linux", "architecture": "arm64", "variant": "v8"}"#).is(&any_arm));
    }

    #[test]
    fn an_index_keeps_its_annotations_and_each_entry_its_platform() {
        let text = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":7,"platform":{"architecture":"arm64","os":"linux","variant":"v8","os.features":["x"]},"annotations":{"a":"b"}}],"annotations":{"org.opencontainers.image.source":"https://example.com"}}"#;
        let index: Index = serde_json::from_str(text).unwrap();
        let entry = &index.manifests[0];
        let platform = entry.platform.as_ref().unwrap();
        assert_eq!(platform.variant.as_deref(), Some("v8"));
        assert_eq!(platform.other["os.features"][0], "x");
        assert_eq!(index.envelope.annotations.as_ref().unwrap().len(), 1);
        let again: Index = serde_json::from_slice(&to_bytes(&index).unwrap()).unwrap();
        assert_eq!(again, index);
    }
}
