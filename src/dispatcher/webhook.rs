//! One signed HTTP POST to one subscription, and its record in the attempt log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

use super::cache::Target;
use super::egress::{self, EgressRules, ForbiddenDestination};
use crate::domain::{Attempt, AttemptId, Event, Outcome, SubscriptionId};
use crate::store::AttemptLog;
use crate::trace::TraceHeaders;

const USER_AGENT_VALUE: &str = concat!("hookgate/", env!("CARGO_PKG_VERSION"));

/// Why an attempt failed; what the attempt log and the next step read.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("the endpoint answered {status}")]
    Status { status: u16, retry_after: Option<Duration> },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("request failed: {0}")]
    Request(String),
}

impl DeliveryError {
    /// Whether trying again later can succeed: 408, 429, 5xx but 501,
    /// timeouts and connection errors can; other answers and refused
    /// destinations will not change by waiting.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                matches!(status, 408 | 429) || (*status >= 500 && *status != 501)
            }
            Self::Timeout(_) | Self::Connect(_) | Self::Request(_) => true,
            Self::Forbidden(_) => false,
        }
    }

    /// How long the endpoint asked us to wait (429 and 503 `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { status: 429 | 503, retry_after } => *retry_after,
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub struct Webhooks {
    client: reqwest::Client,
    log: AttemptLog,
    egress: Arc<EgressRules>,
    request_timeout: Duration,
    response_body_cap: usize,
}

impl Webhooks {
    pub fn new(
        log: AttemptLog,
        egress: Arc<EgressRules>,
        request_timeout: Duration,
        response_body_cap: usize,
    ) -> reqwest::Result<Self> {
        let mut builder = reqwest::Client::builder()
            // Never a proxy from the environment: it would resolve the
            // destination out of the egress rules' sight.
            .no_proxy()
            .dns_resolver(Arc::new(egress.resolver()))
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(10)))
            // A redirect is a failed attempt: following it would send the
            // signed payload somewhere the subscriber did not register.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true);
        if let Some(proxy) = &egress.proxy {
            builder = builder.proxy(reqwest::Proxy::all(proxy.clone())?);
        }
        let client = builder.build()?;
        Ok(Self { client, log, egress, request_timeout, response_body_cap })
    }

    /// The webhook id of an event for a subscription: the same for every
    /// attempt and replay, different across subscriptions.
    pub fn webhook_id(event_id: &str, target: &Target) -> String {
        webhook_id(event_id, &target.subscription.id)
    }

    /// Makes attempt number `attempt`, logs it, and answers how it went.
    pub async fn attempt(
        &self,
        event: &Event,
        target: &Target,
        attempt: u32,
    ) -> Result<(), DeliveryError> {
        let (record, result) = self.attempt_unlogged(event, target, attempt).await;
        self.log.record(record).await;
        result
    }

    /// Makes attempt number `attempt`; answers its record for the attempt
    /// log (unwritten) and how it went. The API's test send uses it too.
    pub async fn attempt_unlogged(
        &self,
        event: &Event,
        target: &Target,
        attempt: u32,
    ) -> (Attempt, Result<(), DeliveryError>) {
        let webhook_id = Self::webhook_id(event.id.as_str(), target);
        let body = Bytes::from(event.webhook_body());
        let started = Instant::now();
        let result = self.send(&webhook_id, &body, target).await;
        let latency_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);

        let (outcome, status_code, error, response_excerpt) = match result {
            Ok((status, excerpt, _)) if (200..300).contains(&status) => {
                (Outcome::Success, Some(status), None, excerpt)
            }
            Ok((status, excerpt, retry_after)) => (
                Outcome::Failed,
                Some(status),
                Some(DeliveryError::Status { status, retry_after }),
                excerpt,
            ),
            Err(error) => (Outcome::Failed, None, Some(error), None),
        };
        if let Some(error) = &error {
            tracing::debug!(subscription_id = %target.subscription.id, event_id = %event.id, attempt, %error, "delivery attempt failed");
        }
        let record = Attempt {
            id: AttemptId::generate(),
            event_id: storable(event.id.as_str(), MAX_STORED_ID),
            webhook_id,
            subscription_id: target.subscription.id.clone(),
            tenant_id: target.subscription.tenant_id.clone(),
            event_type: event.event_type.clone(),
            attempt,
            outcome,
            status_code,
            latency_ms,
            error: error.as_ref().map(|e| storable(&e.to_string(), MAX_STORED_TEXT)),
            response_excerpt: response_excerpt.map(|r| storable(&r, MAX_STORED_TEXT)),
            created_at: Utc::now(),
        };
        (record, error.map_or(Ok(()), Err))
    }

    /// Sends and reads at most `response_body_cap` bytes of the answer.
    async fn send(
        &self,
        webhook_id: &str,
        body: &Bytes,
        target: &Target,
    ) -> Result<(u16, Option<String>, Option<Duration>), DeliveryError> {
        // Names are checked by the resolver; literal addresses never reach
        // it, and it does not see ports.
        if !target.url().is_some_and(|url| self.egress.allows_url(url)) {
            return Err(DeliveryError::Forbidden(egress::REFUSED.to_owned()));
        }
        let timestamp = Utc::now().timestamp();
        let mut request = self
            .client
            .post(&target.subscription.url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", target.sign(webhook_id, timestamp, body, Utc::now()));
        // The attempt span's context: the receiver's trace continues the publisher's.
        if let Some(trace) = TraceHeaders::current() {
            request = request.header(crate::trace::TRACEPARENT, trace.traceparent);
            if let Some(state) = trace.tracestate {
                request = request.header(crate::trace::TRACESTATE, state);
            }
        }
        for (name, value) in &target.headers {
            request = request.header(name, value);
        }
        let mut response = request.body(body.clone()).send().await.map_err(|e| self.classify(e))?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let mut excerpt = Vec::new();
        while excerpt.len() < self.response_body_cap {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.response_body_cap - excerpt.len();
                    excerpt.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                // The status is what counts; a body cut short is still an answer.
                Ok(None) | Err(_) => break,
            }
        }
        let excerpt = (!excerpt.is_empty()).then(|| String::from_utf8_lossy(&excerpt).into_owned());
        Ok((status, excerpt, retry_after))
    }

    fn classify(&self, error: reqwest::Error) -> DeliveryError {
        // Without the URL: it may carry tokens, and it is in the subscription anyway.
        let error = error.without_url();
        if find_cause::<ForbiddenDestination>(&error).is_some() {
            return DeliveryError::Forbidden(egress::REFUSED.to_owned());
        }
        if error.is_timeout() {
            DeliveryError::Timeout(self.request_timeout)
        } else if error.is_connect() {
            DeliveryError::Connect(source_chain(&error))
        } else {
            DeliveryError::Request(source_chain(&error))
        }
    }
}

/// The webhook id of an event for a subscription: the same for every
/// attempt and replay, different across subscriptions.
pub fn webhook_id(event_id: &str, subscription: &SubscriptionId) -> String {
    let mut hash = Sha256::new();
    hash.update(event_id.as_bytes());
    hash.update([0]);
    hash.update(subscription.as_str().as_bytes());
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

/// Longest event id kept in the attempt log (ids from Kafka may be anything;
/// the log's index takes a few KiB at most).
pub(crate) const MAX_STORED_ID: usize = 512;
pub(crate) const MAX_STORED_TEXT: usize = 8 * 1024;

/// Text PostgreSQL will take: no NUL characters, at most `max` bytes.
pub(crate) fn storable(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].replace('\0', "\u{fffd}")
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

fn find_cause<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_outcomes() {
        let status = |status| DeliveryError::Status { status, retry_after: None };
        for retryable in [408, 429, 500, 502, 503, 504] {
            assert!(status(retryable).is_retryable(), "{retryable}");
        }
        for final_status in [301, 302, 400, 401, 404, 410, 422, 501] {
            assert!(!status(final_status).is_retryable(), "{final_status}");
        }
        assert!(DeliveryError::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(!DeliveryError::Forbidden("x".into()).is_retryable());
    }

    #[test]
    fn stored_text_has_no_nul_and_is_bounded() {
        assert_eq!(storable("a\0b", 10), "a\u{fffd}b");
        assert_eq!(storable("héllo", 2), "h");
        assert_eq!(storable("plain", 100), "plain");
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(120)));
        let later = std::time::SystemTime::now() + Duration::from_secs(90);
        headers.insert(RETRY_AFTER, httpdate::fmt_http_date(later).parse().expect("valid"));
        let parsed = retry_after(&headers).expect("a date parses");
        assert!(parsed <= Duration::from_secs(90) && parsed >= Duration::from_secs(85));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }
}
