//! TLS for the HTTP and gRPC ports: a rustls acceptor from PEM files.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no PEM certificate.
    #[error("reading the certificate chain {path}: {reason}")]
    Certificate {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The key file is unreadable or holds no PEM private key.
    #[error("reading the private key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS acceptor for the PEM certificate chain `cert` and private key `key`
/// (PKCS#8, PKCS#1 or SEC1), speaking HTTP/1.1 over TLS 1.2 and 1.3.
pub fn load_tls(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    load_tls_for(cert, key, b"http/1.1")
}

/// The same acceptor offering `protocol` by ALPN (`h2` for gRPC).
pub fn load_tls_for(cert: &Path, key: &Path, protocol: &[u8]) -> Result<TlsAcceptor, TlsError> {
    let certificates = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| TlsError::Certificate {
            path: cert.display().to_string(),
            reason: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Certificate {
            path: cert.display().to_string(),
            reason: "no PEM certificate in the file".into(),
        });
    }
    // The key's bytes never go into an error message.
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|error| TlsError::Key {
        path: key.display().to_string(),
        reason: match error {
            rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key in the file".into(),
            rustls::pki_types::pem::Error::Io(error) => error.to_string(),
            _ => "not a PEM private key".into(),
        },
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certificates, private_key)?;
    config.alpn_protocols = vec![protocol.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_errors_name_the_file_and_never_the_key() {
        let folder = tempfile::tempdir().unwrap();
        let cert = folder.path().join("cert.pem");
        let key = folder.path().join("key.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let error = load_tls(&cert, &key).err().unwrap().to_string();
        assert!(error.contains("cert.pem"), "{error}");
        let missing = load_tls(&folder.path().join("absent.pem"), &key)
            .err()
            .unwrap()
            .to_string();
        assert!(missing.contains("absent.pem"), "{missing}");
    }
}
