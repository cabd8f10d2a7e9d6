//! Outgoing connections, to Campaign and to IMS: TCP with the proxy's socket options, straight
//! or through an HTTP proxy (`CONNECT`, hyper-util's `Tunnel`) as [`Egress`] decides, TLS with
//! rustls (ring) trusting the system's roots plus any configured CA, and the text of the errors
//! they fail with.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use tower_service::Service;

/// Which connections go through an HTTP proxy: `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` (in
/// either case), or the config's `[egress]`, by hyper-util's rules. `None`: all go straight.
#[derive(Clone, Default)]
pub(crate) struct Egress {
    matcher: Option<Arc<Matcher>>,
}

impl std::fmt::Debug for Egress {
    // The matcher's proxy URL may hold a password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.matcher.is_some() {
            "Egress(proxy)"
        } else {
            "Egress(direct)"
        })
    }
}

impl Egress {
    /// Through `proxy` when it is set (but for `no_proxy`), else by the environment.
    pub(crate) fn new(proxy: Option<&str>, no_proxy: &[String]) -> Egress {
        match proxy {
            Some(proxy) => Egress::through(proxy, no_proxy),
            None => Egress::from_env(),
        }
    }

    /// By the environment's `*_PROXY` variables.
    pub(crate) fn from_env() -> Egress {
        Egress {
            matcher: Some(Arc::new(Matcher::from_env())),
        }
    }

    /// Through `proxy` (`http://user:password@host:port`), but for the hosts of `no_proxy`.
    pub(crate) fn through(proxy: &str, no_proxy: &[String]) -> Egress {
        let matcher = Matcher::builder()
            .all(proxy.to_owned())
            .no(no_proxy.join(","))
            .build();
        Egress {
            matcher: Some(Arc::new(matcher)),
        }
    }

    /// The proxy a connection to `dst` goes through, without its credentials; `None`: straight.
    pub(crate) fn route(&self, dst: &Uri) -> Option<String> {
        let intercept = self.matcher.as_ref()?.intercept(dst)?;
        let proxy = intercept.uri();
        Some(format!(
            "{}://{}",
            proxy.scheme_str().unwrap_or("http"),
            proxy
                .authority()
                .map_or("", |a| a.as_str().rsplit('@').next().unwrap_or(""))
        ))
    }
}

/// A TCP connector that goes through the proxy [`Egress`] names for the destination, if any.
#[derive(Clone)]
pub(crate) struct EgressConnector {
    direct: HttpConnector,
    egress: Egress,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service<Uri> for EgressConnector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let intercept = self
            .egress
            .matcher
            .as_ref()
            .and_then(|matcher| matcher.intercept(&dst));
        let mut direct = self.direct.clone();
        match intercept {
            None => Box::pin(async move { direct.call(dst).await.map_err(Into::into) }),
            Some(intercept) => {
                let mut tunnel = Tunnel::new(intercept.uri().clone(), direct);
                if let Some(auth) = intercept.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Box::pin(async move {
                    std::future::poll_fn(|cx| tunnel.poll_ready(cx)).await?;
                    tunnel.call(dst).await.map_err(Into::into)
                })
            }
        }
    }
}

/// Why the TLS client (or server) could not be set up: a start-up error, never a request's.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("no trusted root certificate for {0}: the system has none and no ca_file is set")]
    NoRoots(String),
}

/// The system's trusted roots, read once at start.
pub(crate) fn system_roots() -> Vec<CertificateDer<'static>> {
    rustls_native_certs::load_native_certs().certs
}

/// An HTTPS-or-HTTP connector over rustls (ring) trusting `roots`, through `egress`; its TCP
/// connections time out after `connect_timeout` (`None`: the caller bounds connecting).
pub(crate) fn https_connector(
    roots: &[CertificateDer<'static>],
    connect_timeout: Option<Duration>,
    egress: &Egress,
) -> Result<HttpsConnector<EgressConnector>, TlsSetupError> {
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
    http.set_connect_timeout(connect_timeout);
    http.set_keepalive(Some(Duration::from_secs(60)));
    let connector = EgressConnector {
        direct: http,
        egress: egress.clone(),
    };
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector))
}

/// An error with its causes, `a: b: c` (hyper's own texts say little without their sources:
/// "client error (Connect)").
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
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
