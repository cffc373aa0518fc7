//! Where the bytes live, parsed from `--storage`.

use std::fmt;
use std::path::PathBuf;

/// A storage location as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageLocation {
    /// A folder on the local disk (the embedded default).
    Local(PathBuf),
    /// A bucket of an S3-compatible object store, with an optional key prefix.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix without leading or trailing slash (may be empty).
        prefix: String,
    },
    /// Process memory; for unit tests, lost on exit.
    Memory,
}

/// Why a `--storage` value could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("invalid storage location {value:?}: {reason}")]
pub struct LocationError {
    value: String,
    reason: &'static str,
}

impl StorageLocation {
    /// Parses a folder path, `file:///abs/path`, `s3://bucket[/prefix]` or `memory://`.
    pub fn parse(value: &str) -> Result<Self, LocationError> {
        let error = |reason| LocationError {
            value: value.to_owned(),
            reason,
        };
        if let Some(rest) = value.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(error("the bucket name is missing"));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        if let Some(path) = value.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(error("a file:// URL needs an absolute path"));
            }
            return Ok(Self::Local(PathBuf::from(path)));
        }
        if value == "memory://" {
            return Ok(Self::Memory);
        }
        if value.contains("://") {
            return Err(error(
                "unsupported scheme (use a folder path, file://, s3:// or memory://)",
            ));
        }
        if value.is_empty() {
            return Err(error("the path is empty"));
        }
        Ok(Self::Local(PathBuf::from(value)))
    }

    /// The local folder, when the storage is local.
    pub fn local_folder(&self) -> Option<&PathBuf> {
        match self {
            Self::Local(path) => Some(path),
            _ => None,
        }
    }
}

impl fmt::Display for StorageLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Self::Memory => write!(f, "memory://"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        assert_eq!(
            StorageLocation::parse("./cache-data").unwrap(),
            StorageLocation::Local("./cache-data".into())
        );
        assert_eq!(
            StorageLocation::parse("file:///var/cache").unwrap(),
            StorageLocation::Local("/var/cache".into())
        );
        assert_eq!(
            StorageLocation::parse("s3://team-cache/ci/").unwrap(),
            StorageLocation::S3 {
                bucket: "team-cache".into(),
                prefix: "ci".into()
            }
        );
        assert_eq!(
            StorageLocation::parse("s3://team-cache").unwrap(),
            StorageLocation::S3 {
                bucket: "team-cache".into(),
                prefix: String::new()
            }
        );
    }

    #[test]
    fn rejects_unknown_schemes_and_relative_file_urls() {
        assert!(StorageLocation::parse("gs://bucket").is_err());
        assert!(StorageLocation::parse("file://relative").is_err());
        assert!(StorageLocation::parse("s3://").is_err());
    }
}
