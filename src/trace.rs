//! W3C trace context along the data flow: the publishing request's
//! `traceparent` → the publish span → the event record's headers → the
//! fan-out span → each delivery record → the attempt span → the webhook's
//! `traceparent`. Spans become OpenTelemetry spans through the layer that
//! `telemetry::init` installs when an exporter is configured. Without it
//! hookgate passes the context on unchanged, as a proxy that takes no part
//! in tracing does: the webhook carries the publisher's `traceparent`.
//!
//! A malformed `traceparent` (from a client or a record) is ignored: a new
//! trace starts.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rdkafka::message::{Header, OwnedHeaders};

use crate::kafka::envelope::HeaderPair;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
/// The CloudEvents distributed-tracing extension in Kafka binary mode; read
/// when a producer set it instead of `traceparent`.
const CE_TRACEPARENT: &str = "ce_traceparent";
const CE_TRACESTATE: &str = "ce_tracestate";
/// Longer values are not trace context; they are not even parsed.
const MAX_LEN: usize = 512;

/// A trace context as carried in headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceHeaders {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

impl TraceHeaders {
    /// The context of `span`, when it has one (OpenTelemetry is on).
    pub fn of(span: &tracing::Span) -> Option<Self> {
        let context = span.context();
        if !context.span().span_context().is_valid() {
            return None;
        }
        let mut headers = Self::default();
        TraceContextPropagator::new().inject_context(&context, &mut headers);
        (!headers.traceparent.is_empty()).then_some(headers)
    }

    /// The context of the current span or, without OpenTelemetry spans,
    /// the one `scope` carries.
    pub fn current() -> Option<Self> {
        Self::of(&tracing::Span::current()).or_else(|| PASSED_ON.try_with(Clone::clone).ok())
    }

    /// Runs `work` with `trace` as `current()` wherever spans have no
    /// context of their own.
    pub async fn scope<F: std::future::Future>(trace: Self, work: F) -> F::Output {
        PASSED_ON.scope(trace, work).await
    }

    /// What `span`'s work passes on: its own context, else (OpenTelemetry
    /// off) a valid `parent` unchanged, else a new trace.
    pub fn onward(parent: Option<&Self>, span: &tracing::Span) -> Self {
        Self::of(span)
            .or_else(|| parent.filter(|parent| parent.is_valid()).cloned())
            .unwrap_or_else(Self::new_trace)
    }

    /// A new trace, sampled, of no span hookgate records.
    pub fn new_trace() -> Self {
        let trace_id = TraceId::from(rand::random::<u128>().max(1));
        let span_id = SpanId::from(rand::random::<u64>().max(1));
        Self { traceparent: format!("00-{trace_id}-{span_id}-01"), tracestate: None }
    }

    fn is_valid(&self) -> bool {
        let context = TraceContextPropagator::new().extract(self);
        context.span().span_context().is_valid()
    }

    /// Reads `traceparent` (or `ce_traceparent`) and `tracestate` from a
    /// record's headers (`envelope::listed`); `None` when absent or not
    /// UTF-8. Validity is checked when a span adopts it or passes it on.
    pub fn from_pairs(pairs: &[HeaderPair<'_>]) -> Option<Self> {
        let find = |names: [&str; 2]| {
            names.iter().find_map(|name| {
                pairs
                    .iter()
                    .find(|(key, _)| key == name)
                    .and_then(|(_, value)| *value)
                    .filter(|value| value.len() <= MAX_LEN)
                    .and_then(|value| std::str::from_utf8(value).ok())
            })
        };
        let traceparent = find([TRACEPARENT, CE_TRACEPARENT])?.to_owned();
        let tracestate = find([TRACESTATE, CE_TRACESTATE]).map(str::to_owned);
        Some(Self { traceparent, tracestate })
    }

    /// Reads them from HTTP request headers.
    pub fn from_http(headers: &http::HeaderMap) -> Option<Self> {
        let get = |name: &str| {
            headers
                .get(name)
                .filter(|value| value.len() <= MAX_LEN)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        Some(Self { traceparent: get(TRACEPARENT)?, tracestate: get(TRACESTATE) })
    }

    /// Adds them to a record's headers.
    pub fn write(&self, headers: OwnedHeaders) -> OwnedHeaders {
        let headers =
            headers.insert(Header { key: TRACEPARENT, value: Some(self.traceparent.as_str()) });
        match &self.tracestate {
            Some(state) => headers.insert(Header { key: TRACESTATE, value: Some(state.as_str()) }),
            None => headers,
        }
    }

    /// Makes `span` a child of this context, when it is a valid one (and
    /// spans are OpenTelemetry spans).
    pub fn adopt(this: Option<&Self>, span: &tracing::Span) {
        let Some(this) = this else { return };
        let context = TraceContextPropagator::new().extract(this);
        if context.span().span_context().is_valid() {
            let _ = span.set_parent(context);
        }
    }
}

tokio::task_local! {
    static PASSED_ON: TraceHeaders;
}

impl Extractor for TraceHeaders {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(&self.traceparent),
            TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

impl Injector for TraceHeaders {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = value,
            TRACESTATE if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_record_headers_and_writes_them_back() {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "ce_type", value: Some("a.b") })
            .insert(Header {
                key: CE_TRACEPARENT,
                value: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            });
        let from_record = |headers: &OwnedHeaders| {
            TraceHeaders::from_pairs(&crate::kafka::envelope::listed(Some(headers)).expect("names"))
        };
        let trace = from_record(&headers).expect("found");
        assert_eq!(trace.traceparent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        assert_eq!(trace.tracestate, None);
        let written = trace.write(OwnedHeaders::new());
        assert_eq!(from_record(&written), Some(trace));
        assert_eq!(from_record(&OwnedHeaders::new()), None);
    }

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[tokio::test]
    async fn without_opentelemetry_spans_a_valid_context_passes_on_unchanged() {
        let span = tracing::info_span!("no layer");
        let parent = TraceHeaders { traceparent: VALID.into(), tracestate: Some("v=1".into()) };
        TraceHeaders::adopt(Some(&parent), &span);
        assert_eq!(TraceHeaders::onward(Some(&parent), &span), parent);

        let malformed = TraceHeaders { traceparent: "00-zz-yy-01".into(), tracestate: None };
        for parent in [Some(&malformed), None] {
            let fresh = TraceHeaders::onward(parent, &span);
            assert!(fresh.is_valid(), "{fresh:?}");
            assert_ne!(fresh, malformed);
        }
        assert_ne!(TraceHeaders::new_trace(), TraceHeaders::new_trace());

        assert_eq!(TraceHeaders::current(), None, "no span context, no scope");
        let inside = TraceHeaders::scope(parent.clone(), async { TraceHeaders::current() }).await;
        assert_eq!(inside, Some(parent));
    }

    /// Runs `f` with an OpenTelemetry layer (no exporter), as the binary does
    /// with one.
    fn with_otel<T>(f: impl FnOnce() -> T) -> T {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f)
    }

    #[test]
    fn spans_continue_a_valid_trace_and_ignore_a_malformed_one() {
        with_otel(|| {
            let parent = TraceHeaders {
                traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                tracestate: Some("vendor=1".into()),
            };
            let span = tracing::info_span!("child");
            TraceHeaders::adopt(Some(&parent), &span);
            let child = TraceHeaders::of(&span).expect("a context");
            assert!(child.traceparent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
            assert!(!child.traceparent.contains("b7ad6b7169203331"), "a span of its own");
            assert_eq!(child.tracestate.as_deref(), Some("vendor=1"));

            let long = "x".repeat(100);
            for garbage in [
                "00-zz-yy-01",
                "",
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
                long.as_str(),
            ] {
                let span = tracing::info_span!("fresh");
                let bad = TraceHeaders { traceparent: garbage.into(), tracestate: None };
                TraceHeaders::adopt(Some(&bad), &span);
                let fresh = TraceHeaders::of(&span).expect("a new trace");
                assert!(!fresh.traceparent.contains("0af7651916cd43dd8448eb211c80319c"));
            }
        });
    }
}
