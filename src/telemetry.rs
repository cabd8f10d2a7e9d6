//! Traces over OTLP/HTTP (`[telemetry] otlp_endpoint`), with the `opentelemetry` crates and
//! `tracing-opentelemetry`: a span per request (continuing an incoming W3C `traceparent`) and
//! one per stage (`prefix`, `caller check`, `token`, `upstream`), and the `traceparent` of the
//! upstream stage sent to Campaign. The spans carry names, actions, callers and statuses, never
//! a credential or a token.
//!
//! Off by default. The spans are on the target [`TARGET`], which only the OTLP layer listens
//! to: without it no subscriber is interested, and a span costs a check of a cached flag.

use std::time::Duration;

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of the spans exported.
pub const TARGET: &str = "imsbridge::trace";
/// Spans are sent in batches at least this often.
const EXPORT_EVERY: Duration = Duration::from_secs(2);

/// The exporter and its tracer; [`Traces::shutdown`] sends what is left.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Sends spans to `endpoint` (`http://collector:4318`; the traces go to `/v1/traces`).
    pub fn start(endpoint: &str) -> Result<Traces, String> {
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
            .with_endpoint(url)
            .with_timeout(Duration::from_secs(10))
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
        Ok(Traces { provider })
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
