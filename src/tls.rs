//! TLS on the listener, with rustls: the server certificate and key, and with `client_ca`,
//! mutual TLS (a client certificate signed by that CA is required). What a client certificate
//! names, and how a caller is bound to it, is in `tls/identity.rs`.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::secret::Secret;

mod identity;

#[cfg(test)]
pub(crate) use identity::tests::certificate_for_tests;
pub(crate) use identity::{AltName, CertIdentity, SubjectName};

/// The listener's rustls config. Errors say which file and why, never what a key holds.
pub(crate) fn server_config(
    cert: &Path,
    key: &Secret,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(std::iter::Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("cert: {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("cert: {} holds no PEM certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(key.expose().as_bytes())
        .map_err(|_| "key: not a PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(std::iter::Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| format!("client_ca: {}: {e}", path.display()))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("client_ca: {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "client_ca: {} holds no PEM certificate",
                    path.display()
                ));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("client_ca: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("key: does not go with the certificate ({e})"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
