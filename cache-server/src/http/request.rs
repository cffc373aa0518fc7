//! Requests parsed into data before any I/O: identifiers, encodings, ranges
//! and preconditions. A value that does not parse is a 400 here, so handlers
//! never touch storage with it.

use axum::http::{HeaderMap, header};
use cache_proto::{Digest, Key};

use super::error::ApiError;
pub use crate::cache::object::{BodyEncoding, RangeSpec};

/// Parses a digest from a path segment.
pub fn digest(raw: &str) -> Result<Digest, ApiError> {
    Digest::parse(raw).map_err(|error| {
        ApiError::bad_request("invalid_digest", format!("invalid digest: {error}"))
    })
}

/// Parses an action-cache key from a path segment.
pub fn key(raw: &str) -> Result<Key, ApiError> {
    Key::parse(raw)
        .map_err(|error| ApiError::bad_request("invalid_key", format!("invalid key: {error}")))
}

/// Reads `Content-Encoding`: absent, `identity` or `zstd`.
pub fn body_encoding(headers: &HeaderMap) -> Result<BodyEncoding, ApiError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(BodyEncoding::Identity);
    };
    let text = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match text.as_str() {
        "" | "identity" => Ok(BodyEncoding::Identity),
        "zstd" => Ok(BodyEncoding::Zstd),
        _ => Err(ApiError::UnsupportedEncoding(
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        )),
    }
}

/// The declared `Content-Length`, if any. A malformed one is a 400.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("bad_header", "invalid Content-Length"))
        })
        .transpose()
}

/// Whether `Accept-Encoding` lists zstd with a non-zero quality.
pub fn accepts_zstd(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let zero_quality = parts.any(|param| {
                param
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            coding.eq_ignore_ascii_case("zstd") && !zero_quality
        })
}

/// Reads a `Range` header. Absent, malformed and multi-range headers give
/// `None`, which serves the whole representation (RFC 9110 allows ignoring
/// them).
pub fn range(headers: &HeaderMap) -> Option<RangeSpec> {
    let text = headers.get(header::RANGE)?.to_str().ok()?.trim();
    let spec = text.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = (start.trim(), end.trim());
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (start.is_empty(), end.is_empty()) {
        (true, false) => number(end).map(RangeSpec::Suffix),
        (false, true) => number(start).map(RangeSpec::From),
        (false, false) => {
            let (a, b) = (number(start)?, number(end)?);
            (a <= b).then_some(RangeSpec::Bounded(a, b))
        }
        (true, true) => None,
    }
}

/// `If-Match` / `If-None-Match` of a write, for compare-and-set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    if_match: Option<Vec<String>>,
    if_none_match: Option<Vec<String>>,
}

fn entity_tags(headers: &HeaderMap, name: header::HeaderName) -> Option<Vec<String>> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/").to_owned())
        .filter(|tag| !tag.is_empty())
        .collect();
    (!values.is_empty()).then_some(values)
}

impl Preconditions {
    /// Reads the two headers.
    pub fn parse(headers: &HeaderMap) -> Self {
        Self {
            if_match: entity_tags(headers, header::IF_MATCH),
            if_none_match: entity_tags(headers, header::IF_NONE_MATCH),
        }
    }

    /// Whether the request carries `If-Match` or `If-None-Match`.
    pub fn any(&self) -> bool {
        self.if_match.is_some() || self.if_none_match.is_some()
    }

    /// Checks the preconditions against the current entity tag (`None` when
    /// the entry does not exist).
    pub fn check(&self, current: Option<&str>) -> Result<(), ApiError> {
        let matches = |tags: &[String]| {
            current.is_some_and(|etag| tags.iter().any(|tag| tag == "*" || tag == etag))
        };
        if let Some(tags) = &self.if_match
            && !matches(tags)
        {
            return Err(ApiError::PreconditionFailed(
                "If-Match does not match the current entry".into(),
            ));
        }
        if let Some(tags) = &self.if_none_match
            && matches(tags)
        {
            return Err(ApiError::PreconditionFailed(
                "If-None-Match matches the current entry".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn ranges_parse_and_resolve_like_rfc_9110() {
        let r = |v: &str| range(&headers(&[(header::RANGE, v)]));
        assert_eq!(r("bytes=0-9"), Some(RangeSpec::Bounded(0, 9)));
        assert_eq!(r("bytes=5-"), Some(RangeSpec::From(5)));
        assert_eq!(r("bytes=-3"), Some(RangeSpec::Suffix(3)));
        for ignored in [
            "bytes=9-0",
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
        ] {
            assert_eq!(r(ignored), None, "{ignored}");
        }
        assert_eq!(RangeSpec::Bounded(0, 99).resolve(10), Some(0..10));
        assert_eq!(RangeSpec::From(10).resolve(10), None);
        assert_eq!(RangeSpec::Suffix(3).resolve(10), Some(7..10));
        assert_eq!(RangeSpec::Suffix(30).resolve(10), Some(0..10));
        assert_eq!(RangeSpec::Suffix(0).resolve(10), None);
        assert_eq!(RangeSpec::From(0).resolve(0), None);
    }

    #[test]
    fn zstd_acceptance_honours_quality() {
        let a = |v: &str| accepts_zstd(&headers(&[(header::ACCEPT_ENCODING, v)]));
        assert!(a("zstd"));
        assert!(a("gzip, zstd;q=0.5"));
        assert!(!a("gzip, zstd;q=0"));
        assert!(!a("gzip"));
        assert!(!accepts_zstd(&HeaderMap::new()));
    }

    #[test]
    fn content_encoding_accepts_only_identity_and_zstd() {
        let e = |v: &str| body_encoding(&headers(&[(header::CONTENT_ENCODING, v)]));
        assert_eq!(e("zstd").unwrap(), BodyEncoding::Zstd);
        assert_eq!(e("identity").unwrap(), BodyEncoding::Identity);
        assert!(matches!(e("gzip"), Err(ApiError::UnsupportedEncoding(_))));
    }

    #[test]
    fn preconditions_implement_compare_and_set() {
        let p = |pairs: &[(header::HeaderName, &str)]| Preconditions::parse(&headers(pairs));
        let create_only = p(&[(header::IF_NONE_MATCH, "*")]);
        assert!(create_only.check(None).is_ok());
        assert!(create_only.check(Some("\"a\"")).is_err());
        let replace = p(&[(header::IF_MATCH, "\"a\"")]);
        assert!(replace.check(Some("\"a\"")).is_ok());
        assert!(replace.check(Some("\"b\"")).is_err());
        assert!(replace.check(None).is_err());
        assert!(Preconditions::default().check(None).is_ok());
    }

    #[test]
    fn identifiers_are_rejected_before_io() {
        assert!(digest("../etc/passwd").is_err());
        assert!(key(&"A".repeat(64)).is_err());
        assert!(key(&"a".repeat(64)).is_ok());
    }
}
