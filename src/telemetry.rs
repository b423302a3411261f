//! Logs and traces: `tracing` with an `EnvFilter` (`RUST_LOG`, default
//! `info`) to stderr as text or JSON lines, and hookgate's spans as
//! OpenTelemetry spans, exported with OTLP over HTTP/protobuf when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set. Without an endpoint there is no OpenTelemetry layer, whose spans
//! would cost every delivery for nothing; `crate::trace` still passes a
//! publisher's `traceparent` on to the webhook.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

const DEFAULT_FILTER: &str = "info,librdkafka=warn,rdkafka=warn,sqlx=warn";
const DEFAULT_SERVICE_NAME: &str = "hookgate";

/// Flushes the spans not yet exported when dropped (at exit).
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let Some(provider) = &self.provider else { return };
        if let Err(error) = provider.shutdown() {
            eprintln!("hookgate: exporting the last traces failed: {error}");
        }
    }
}

/// Installs the subscriber. Call outside the async runtime: the OTLP
/// exporter's HTTP client runs a runtime of its own. An endpoint that is
/// not a URL is a configuration error.
pub fn init(format: LogFormat) -> Result<Telemetry, String> {
    let provider = tracer_provider()?;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        // One object a line, the event's fields at the top level.
        LogFormat::Json => logs.json().flatten_event(true).with_span_list(false).boxed(),
    };
    // Only hookgate's own spans become OpenTelemetry spans: not those of
    // the HTTP client, the database driver or the exporter itself.
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("hookgate"))
            .with_filter(filter_fn(exported))
    });
    let _ = tracing_subscriber::registry().with(logs.with_filter(filter)).with(spans).try_init();
    Ok(Telemetry { provider })
}

/// What the OpenTelemetry layer sees: hookgate's spans down to `DEBUG`
/// (the per-record spans of publish, fan-out and delivery are `DEBUG`, so
/// that the log layer, at its default `info`, never formats their fields
/// for every record: it showed as 3 % of the process at full rate) and its
/// events from `INFO` up.
fn exported(metadata: &tracing::Metadata<'_>) -> bool {
    let least = if metadata.is_span() { Level::DEBUG } else { Level::INFO };
    metadata.target().starts_with("hookgate") && *metadata.level() <= least
}

/// The provider that exports, when an endpoint is configured.
fn tracer_provider() -> Result<Option<SdkTracerProvider>, String> {
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    let builder = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service).build());
    let mut configured = false;
    for name in ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] {
        let Some(value) = std::env::var(name).ok().filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        // The exporter takes any string and fails at each export: check at
        // start instead (without repeating the value: it may hold credentials).
        match url::Url::parse(value.trim()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
            _ => return Err(format!("invalid {name}: expected an http:// or https:// URL")),
        }
        configured = true;
    }
    if !configured {
        return Ok(None);
    }
    // Reads the standard OTEL_EXPORTER_OTLP_* variables (endpoint, headers,
    // timeout); the batch processor reads OTEL_BSP_*.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|error| format!("cannot set up the OTLP exporter: {error}"))?;
    Ok(Some(builder.with_batch_exporter(exporter).build()))
}
