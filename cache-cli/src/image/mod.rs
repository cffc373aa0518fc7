//! Where images go: an OCI registry (through `oci-client`) or a local OCI
//! image layout, behind one small set of operations.

pub mod compose;
pub mod config;
pub mod deploys;
pub mod digest_cache;
pub mod error;
pub mod hint_folder;
pub mod inventory;
pub mod known_layers;
pub mod layer_stream;
pub mod layout;
pub mod location;
pub mod manifest;
pub mod oci;
pub mod open_access;
pub mod publish;
pub mod pushed_trees;
pub mod registry;
pub mod retention;
pub mod target;
pub mod unpack;

pub use error::ImageError;
pub use layout::Layout;
pub use location::Location;
pub use registry::{Registry, RegistryError, RegistrySettings};
pub use target::ImageTarget;

/// The tag of the base built for a key: `base-{first 16 hex}`.
pub fn base_tag(key: &cache_proto::Key) -> String {
    format!("base-{}", key.short(16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registries_and_layouts() {
        assert_eq!(
            ImageTarget::parse("registry.example.com:5000/acme/web-base").unwrap(),
            ImageTarget::Registry("registry.example.com:5000/acme/web-base".into())
        );
        assert_eq!(
            ImageTarget::parse("oci:./build/oci:web-base").unwrap(),
            ImageTarget::Layout {
                dir: "./build/oci".into(),
                name: Some("web-base".into())
            }
        );
        assert_eq!(
            ImageTarget::parse("oci:./build/oci").unwrap(),
            ImageTarget::Layout {
                dir: "./build/oci".into(),
                name: None
            }
        );
        assert!(ImageTarget::parse("registry.example.com/acme/web:latest").is_err());
        assert!(ImageTarget::parse("registry.example.com/acme/web@sha256:00").is_err());
    }
}
