//! Traces over OTLP/HTTP (`[telemetry] otlp_endpoint`), with the `opentelemetry` crates and
//! `tracing-opentelemetry`: a span per request (continuing an incoming W3C `traceparent`) and
//! one per stage (`prefix`, `caller check`, `token`, `upstream`), and the `traceparent` of the
//! upstream stage sent to Campaign. The spans carry names, actions, callers and statuses, never
//! a credential or a token.
//!
//! Off by default. The spans are on the target [`TARGET`], which only the OTLP layer listens
//! to: without it no subscriber is interested, and a span costs a check of a cached flag.
//!
//! The spans go out through the proxy's own HTTP stack: hyper's client over the rustls
//! connector of `connect.rs` (an `https` collector is trusted on the system's roots and
//! `telemetry.ca_file`'s), on a runtime of its own thread, since the SDK's batch processor
//! exports from a thread of its own where no runtime runs.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::TelemetrySettings;
use crate::connect::{Egress, EgressConnector, https_connector, system_roots};

/// The target of the spans exported.
pub const TARGET: &str = "imsbridge::trace";
/// Spans are sent in batches at least this often.
const EXPORT_EVERY: Duration = Duration::from_secs(2);

/// A collector gets this long to take a batch.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The exporter and its tracer; [`Traces::shutdown`] sends what is left.
pub struct Traces {
    provider: SdkTracerProvider,
    /// Ends the transport's runtime when dropped, once the last spans went.
    _transport: std::sync::mpsc::Sender<()>,
}

impl Traces {
    /// Sends spans to the collector of `settings` (`http://collector:4318`; the traces go to
    /// `/v1/traces`).
    pub fn start(settings: &TelemetrySettings) -> Result<Traces, String> {
        let url = format!("{}/v1/traces", settings.endpoint.trim_end_matches('/'));
        let roots = [system_roots().as_slice(), &settings.extra_roots].concat();
        let connector = https_connector(&roots, Some(EXPORT_TIMEOUT), &Egress::default())
            .map_err(|e| format!("telemetry: {e}"))?;
        let (transport, stop) = Transport::start(connector)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(transport)
            .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .with_headers(Default::default())
            .build()
            .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
        let batch = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                opentelemetry_sdk::trace::BatchConfigBuilder::default()
                    .with_scheduled_delay(EXPORT_EVERY)
                    .build(),
            )
            .build();
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("imsbridge")
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batch)
            .with_resource(resource)
            .build();
        Ok(Traces {
            provider,
            _transport: stop,
        })
    }

    /// The `tracing` layer that turns the spans of [`TARGET`] into OpenTelemetry ones.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        use tracing_subscriber::Layer;
        let tracer = self.provider.tracer("imsbridge");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(TARGET, tracing::Level::TRACE),
            )
    }

    /// Sends the spans still waiting (blocking: off the runtime's threads).
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("imsbridge: the last spans were not sent: {error}");
        }
    }
}

/// OTLP's transport: hyper's client over the proxy's connector, on a current-thread runtime of
/// its own thread (see the module documentation).
struct Transport {
    client: Client<HttpsConnector<EgressConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transport")
    }
}

impl Transport {
    /// The transport, and what ends its runtime's thread when dropped.
    fn start(
        connector: HttpsConnector<EgressConnector>,
    ) -> Result<(Transport, std::sync::mpsc::Sender<()>), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("telemetry: {e}"))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("otlp".to_owned())
            .spawn(move || {
                // The runtime's tasks run while this thread waits in it; `recv` returns once the
                // sender is dropped.
                runtime.block_on(async {
                    let _ = tokio::task::spawn_blocking(move || stopped.recv()).await;
                });
            })
            .map_err(|e| format!("telemetry: {e}"))?;
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok((
            Transport {
                client,
                runtime: handle,
            },
            stop,
        ))
    }
}

#[async_trait::async_trait]
impl HttpClient for Transport {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let exchange = async move {
            let response = client.request(request.map(Full::new)).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        // The timer is made on the runtime's thread: this one has none.
        self.runtime
            .spawn(async move { tokio::time::timeout(EXPORT_TIMEOUT, exchange).await })
            .await??
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Makes `span` continue the trace an incoming request's `traceparent` names, if any.
pub(crate) fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let _ = span.set_parent(parent);
}

/// Puts `span`'s `traceparent` (and `tracestate`) in the headers of a request to Campaign, in
/// place of the caller's.
pub(crate) fn send_trace(span: &tracing::Span, headers: &mut HeaderMap) {
    headers.remove("traceparent");
    headers.remove("tracestate");
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeadersMut(headers));
}
