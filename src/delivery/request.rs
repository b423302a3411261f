//! The signed webhook request, built without I/O: the Standard Webhooks
//! headers (`webhook-id`, `webhook-timestamp`, `webhook-signature` with
//! every secret still signing), the trace context, the subscription's custom
//! headers and the body. `client` sends what this builds.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderName, HeaderValue, Method};

use super::target::Target;
use crate::domain::WebhookId;
use crate::trace::{TraceHeaders, TRACEPARENT, TRACESTATE};

pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
pub const USER_AGENT_VALUE: &str = concat!("hookgate/", env!("CARGO_PKG_VERSION"));

/// One webhook, as it is signed and sent to a target.
#[derive(Debug, Clone)]
pub struct Webhook<'a> {
    pub id: &'a WebhookId,
    /// The Standard Webhooks body (`Event::webhook_body`).
    pub body: Bytes,
    /// Its `webhook-timestamp`; also which rotated-out secrets still sign.
    pub signed_at: DateTime<Utc>,
    /// The attempt span's context: the receiver's trace continues the
    /// publisher's.
    pub trace: Option<TraceHeaders>,
}

/// The POST of `webhook` to `target`; `None` when its URL does not parse.
/// Where it may go is for the client to check (`egress`).
pub fn build(target: &Target, webhook: &Webhook<'_>) -> Option<http::Request<Bytes>> {
    let mut request = http::Request::new(webhook.body.clone());
    *request.method_mut() = Method::POST;
    // Parsed per attempt (as reqwest did), not kept with the target: a
    // second copy of every cached subscription's URL cost more memory at
    // 100,000 subscriptions than the parse costs time.
    *request.uri_mut() = target.url()?.as_str().parse().ok()?;
    let timestamp = webhook.signed_at.timestamp();
    let signature = target.sign(webhook.id.as_str(), timestamp, &webhook.body, webhook.signed_at);
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    // Ids, digits and base64: always valid header values.
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(WEBHOOK_ID, webhook.id.as_str());
    set(WEBHOOK_TIMESTAMP, &timestamp.to_string());
    set(WEBHOOK_SIGNATURE, &signature);
    // A malformed context is left out, as everywhere trace context is read.
    if let Some(trace) = &webhook.trace {
        set(HeaderName::from_static(TRACEPARENT), &trace.traceparent);
        if let Some(state) = &trace.tracestate {
            set(HeaderName::from_static(TRACESTATE), state);
        }
    }
    // Appended: a subscription may repeat a header (names differing in case).
    for (name, value) in &target.headers {
        headers.append(name.clone(), value.clone());
    }
    Some(request)
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::domain::{PreviousSecret, SigningSecret, Subscription, TenantId};

    const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const NEW: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    fn target() -> Target {
        let mut subscription = Subscription::example(TenantId::default_tenant(), NEW);
        subscription.previous_secrets = vec![PreviousSecret {
            secret: OLD.to_owned(),
            expires_at: Utc::now() + Duration::hours(1),
        }];
        subscription.headers.insert("X-Custom".to_owned(), "custom value".to_owned());
        // Reserved: hookgate sets it, whatever the row says.
        subscription.headers.insert("webhook-id".to_owned(), "forged".to_owned());
        Target::new(subscription).expect("a valid target")
    }

    fn header<'a>(request: &'a http::Request<Bytes>, name: &str) -> Vec<&'a str> {
        let values = request.headers().get_all(name).iter();
        values.map(|v| v.to_str().expect("text")).collect()
    }

    #[test]
    fn a_webhook_is_a_post_signed_with_every_secret_still_signing() {
        let target = target();
        let id = WebhookId::from_trusted("msg_1".to_owned());
        let signed_at = Utc::now();
        let body = Bytes::from_static(br#"{"type":"a.b"}"#);
        let webhook = Webhook { id: &id, body: body.clone(), signed_at, trace: None };
        let request = build(&target, &webhook).expect("the URL parses");

        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "http://127.0.0.1:1/");
        assert_eq!(request.body(), &body);
        assert_eq!(header(&request, "content-type"), ["application/json"]);
        assert_eq!(header(&request, "user-agent"), [USER_AGENT_VALUE]);
        assert_eq!(header(&request, "webhook-id"), ["msg_1"], "never the row's");
        let timestamp = signed_at.timestamp();
        assert_eq!(header(&request, "webhook-timestamp"), [timestamp.to_string()]);
        let signature = header(&request, "webhook-signature")[0];
        assert_eq!(signature.split(' ').count(), 2, "the current and the rotated-out secret");
        for secret in [NEW, OLD] {
            let secret = SigningSecret::parse(secret).expect("a secret");
            assert!(secret.verify("msg_1", timestamp, &body, signature), "{signature}");
        }
        assert_eq!(header(&request, "x-custom"), ["custom value"]);
        assert!(header(&request, "traceparent").is_empty(), "no context, no header");
    }

    #[test]
    fn the_trace_context_goes_along_and_a_malformed_one_is_left_out() {
        let target = target();
        let id = WebhookId::from_trusted("msg_1".to_owned());
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let trace = TraceHeaders {
            traceparent: traceparent.to_owned(),
            tracestate: Some("vendor=1".to_owned()),
        };
        let webhook =
            Webhook { id: &id, body: Bytes::new(), signed_at: Utc::now(), trace: Some(trace) };
        let request = build(&target, &webhook).expect("the URL parses");
        assert_eq!(header(&request, "traceparent"), [traceparent]);
        assert_eq!(header(&request, "tracestate"), ["vendor=1"]);

        let broken = TraceHeaders { traceparent: "a\nb".to_owned(), tracestate: None };
        let webhook = Webhook { trace: Some(broken), ..webhook };
        let request = build(&target, &webhook).expect("the URL parses");
        assert!(header(&request, "traceparent").is_empty());
    }

    #[test]
    fn a_url_that_does_not_parse_builds_nothing() {
        let mut subscription = Subscription::example(TenantId::default_tenant(), NEW);
        subscription.url = "not a url".to_owned();
        let target = Target::new(subscription).expect("a valid target");
        let id = WebhookId::from_trusted("msg_1".to_owned());
        let webhook = Webhook { id: &id, body: Bytes::new(), signed_at: Utc::now(), trace: None };
        assert!(build(&target, &webhook).is_none());
    }
}
