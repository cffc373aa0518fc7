//! Image references as Docker reads them, and which hosts are this machine.

use oci_client::Reference;

use super::error::RegistryError;

/// Whether `host` (with or without a port) names this machine.
pub(super) fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map(|(name, _)| name).unwrap_or(host);
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

/// Parses `[registry/]repository[:tag][@digest]` the way Docker does
/// (`busybox` is `docker.io/library/busybox:latest`).
///
/// Written here rather than through `Reference::from_str`, whose Unicode
/// regex takes ~40 ms to compile on every start: most of a warm
/// `ensure-base`.
pub fn parse_reference(text: &str) -> Result<Reference, RegistryError> {
    let invalid = |why: &str| RegistryError::Invalid {
        registry: text.to_owned(),
        message: format!("invalid image reference: {why}"),
    };
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (text, None),
    };
    let last_slash = rest.rfind('/');
    let (name, tag) = match rest.rfind(':') {
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
            (&rest[..colon], Some(&rest[colon + 1..]))
        }
        _ => (rest, None),
    };
    let (registry, repository) = match name.split_once('/') {
        Some((first, remainder))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_owned(), remainder.to_owned())
        }
        _ if name.contains('/') => ("docker.io".to_owned(), name.to_owned()),
        _ => ("docker.io".to_owned(), format!("library/{name}")),
    };
    let repository_ok = !repository.is_empty()
        && repository.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
    if !repository_ok {
        return Err(invalid(
            "the repository must be lowercase letters, digits, '.', '_', '-' and '/'",
        ));
    }
    if let Some(tag) = tag
        && (tag.is_empty()
            || tag.len() > 128
            || !tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
    {
        return Err(invalid(
            "the tag must be 1 to 128 letters, digits, '.', '_' or '-'",
        ));
    }
    match digest {
        Some(digest) => {
            let valid = digest.split_once(':').is_some_and(|(algorithm, hex)| {
                !algorithm.is_empty()
                    && hex.len() >= 32
                    && hex.bytes().all(|b| b.is_ascii_hexdigit())
            });
            if !valid {
                return Err(invalid("the digest must be algorithm:hex"));
            }
            Ok(Reference::with_digest(
                registry,
                repository,
                digest.to_owned(),
            ))
        }
        None => Ok(Reference::with_tag(
            registry,
            repository,
            tag.unwrap_or("latest").to_owned(),
        )),
    }
}
