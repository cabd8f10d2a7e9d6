//! Outgoing connections, to Campaign and to IMS: TCP with the proxy's socket options, TLS with
//! rustls (ring) trusting the system's roots plus any configured CA, and the text of the errors
//! they fail with.

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_pki_types::CertificateDer;

/// Why the TLS client (or server) could not be set up: a start-up error, never a request's.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("no trusted root certificate for {0}: the system has none and no ca_file is set")]
    NoRoots(&'static str),
}

/// The system's trusted roots, read once at start.
pub fn system_roots() -> Vec<CertificateDer<'static>> {
    rustls_native_certs::load_native_certs().certs
}

/// An HTTPS-or-HTTP connector over rustls (ring) trusting `roots`.
pub fn https_connector(
    roots: &[CertificateDer<'static>],
    connect_timeout: Duration,
) -> Result<HttpsConnector<HttpConnector>, TlsSetupError> {
    let mut store = rustls::RootCertStore::empty();
    let (_added, _unparsable) = store.add_parsable_certificates(roots.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// An error with its causes, `a: b: c` (hyper's own texts say little without their sources:
/// "client error (Connect)").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    #[test]
    fn error_chain_names_every_cause_once() {
        let error = Layer {
            text: "client error (Connect)",
            source: Some(Box::new(Layer {
                text: "tcp connect error",
                source: Some(Box::new(Layer {
                    // Already said by the layer above: not repeated.
                    text: "tcp connect error",
                    source: Some(Box::new(Layer {
                        text: "Connection refused (os error 111)",
                        source: None,
                    })),
                })),
            })),
        };
        assert_eq!(
            error_chain(&error),
            "client error (Connect): tcp connect error: Connection refused (os error 111)"
        );
    }
}
