//! The admin listener: `GET /healthz` (the process serves), `GET /readyz` (every profile
//! holds a valid token; otherwise 503 naming the profiles that do not), `GET /metrics`
//! (Prometheus text, see `metrics.rs`).

use std::fmt::Write;

use http::{Method, Request, Response, StatusCode, header};

use crate::body::ResponseBody;
use crate::ims::Readiness;
use crate::proxy::Proxy;
use crate::server::Connections;

pub fn handle<B>(
    proxy: &Proxy,
    connections: &Connections,
    request: &Request<B>,
) -> Response<ResponseBody> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".to_owned());
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".to_owned()),
        "/metrics" => {
            let body = proxy.metrics().render(proxy.readiness(), connections);
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        "/readyz" => {
            let mut not_ready = String::new();
            let mut ready = String::new();
            for (profile, readiness) in proxy.readiness() {
                match readiness {
                    Readiness::Ready { expires_in } => {
                        let _ = writeln!(
                            ready,
                            "profile {profile}: token valid for {}s",
                            expires_in.as_secs()
                        );
                    }
                    Readiness::NotReady(why) => {
                        let _ = writeln!(not_ready, "profile {profile}: not ready: {why}");
                    }
                }
            }
            if not_ready.is_empty() {
                text(StatusCode::OK, format!("ready\n{ready}"))
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready\n{not_ready}{ready}"),
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
    }
}

fn text(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
