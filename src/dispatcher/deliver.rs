//! One signed HTTP POST to one subscription, and its record in the attempt log.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::HeaderValue;
use sha2::{Digest, Sha256};

use super::cache::Target;
use crate::domain::{Attempt, AttemptId, Event, Outcome};
use crate::store::AttemptLog;

const USER_AGENT_VALUE: &str = concat!("hookgate/", env!("CARGO_PKG_VERSION"));

pub struct Deliverer {
    sender: WebhookSender,
    log: AttemptLog,
}

/// Signs and sends one webhook and describes the attempt; the dispatcher and
/// the API's `POST /v1/subscriptions/{id}/test` both send through it.
#[derive(Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    request_timeout: Duration,
    response_body_cap: usize,
}

/// Why an attempt failed; what the attempt log and the retry decision read.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("the endpoint answered {0}")]
    Status(u16),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
}

impl Deliverer {
    pub fn new(
        log: AttemptLog,
        request_timeout: Duration,
        response_body_cap: usize,
    ) -> reqwest::Result<Self> {
        Ok(Self { sender: WebhookSender::new(request_timeout, response_body_cap)?, log })
    }

    /// The webhook id of an event for a subscription: the same for every
    /// attempt and replay, different across subscriptions.
    pub fn webhook_id(event_id: &str, target: &Target) -> String {
        let mut hash = Sha256::new();
        hash.update(event_id.as_bytes());
        hash.update([0]);
        hash.update(target.subscription.id.as_str().as_bytes());
        let digest = hash.finalize();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("msg_{hex}")
    }

    pub async fn deliver(
        &self,
        event: &Event,
        body: &Bytes,
        target: &Target,
        attempt: u32,
    ) -> Outcome {
        let attempt = self.sender.send(event, body, target, attempt).await;
        let outcome = attempt.outcome;
        self.log.record(attempt).await;
        outcome
    }
}

impl WebhookSender {
    pub fn new(request_timeout: Duration, response_body_cap: usize) -> reqwest::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(10)))
            // A redirect is a failed attempt: following it would send the
            // signed payload somewhere the subscriber did not register.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self { client, request_timeout, response_body_cap })
    }

    /// One signed POST of `body` (the event's webhook body); answers the
    /// attempt for the log, without logging it.
    pub async fn send(
        &self,
        event: &Event,
        body: &Bytes,
        target: &Target,
        attempt: u32,
    ) -> Attempt {
        let webhook_id = Deliverer::webhook_id(&event.id, target);
        let now = Utc::now();
        let timestamp = now.timestamp();
        let signature = target.signature(&webhook_id, timestamp, body, now);
        let mut request = self
            .client
            .post(&target.subscription.url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .header("webhook-id", &webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature);
        for (name, value) in &target.headers {
            request = request.header(name, value);
        }

        let started = Instant::now();
        let result = self.exchange(request.body(body.clone())).await;
        let latency_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);

        let (outcome, status_code, error, response_excerpt) = match result {
            Ok((status, excerpt)) if (200..300).contains(&status) => {
                (Outcome::Success, Some(status), None, excerpt)
            }
            Ok((status, excerpt)) => {
                (Outcome::Failed, Some(status), Some(DeliveryError::Status(status)), excerpt)
            }
            Err(error) => (Outcome::Failed, None, Some(error), None),
        };
        if let Some(error) = &error {
            tracing::debug!(subscription_id = %target.subscription.id, event_id = %event.id, %error, "delivery attempt failed");
        }
        Attempt {
            id: AttemptId::generate(),
            event_id: event.id.clone(),
            webhook_id,
            subscription_id: target.subscription.id.clone(),
            tenant_id: target.subscription.tenant_id.clone(),
            event_type: event.event_type.clone(),
            attempt,
            outcome,
            status_code,
            latency_ms,
            error: error.map(|e| e.to_string()),
            response_excerpt,
            created_at: Utc::now(),
        }
    }

    /// Sends and reads at most `response_body_cap` bytes of the answer.
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Option<String>), DeliveryError> {
        let mut response = request.send().await.map_err(|e| classify(e, self.request_timeout))?;
        let status = response.status().as_u16();
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
        Ok((status, excerpt))
    }
}

fn classify(error: reqwest::Error, timeout: Duration) -> DeliveryError {
    // Without the URL: it may carry tokens, and it is in the subscription anyway.
    let error = error.without_url();
    if error.is_timeout() {
        DeliveryError::Timeout(timeout)
    } else if error.is_connect() {
        DeliveryError::Connect(source_chain(&error))
    } else {
        DeliveryError::Request(source_chain(&error))
    }
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
