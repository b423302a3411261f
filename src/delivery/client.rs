//! Sends one signed webhook and answers how it went (`Sent`): through the
//! egress rules, without a proxy from the environment or redirects, reading
//! at most the response body cap. Nothing is logged or recorded here: the
//! caller writes the attempt (`Sent::record`) where it keeps attempts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http::header::{ACCEPT, AUTHORIZATION, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::time::Instant;

use super::egress::{self, EgressRules, ForbiddenDestination};
use super::oauth2::{self, Tokens};
use super::request::{self, Webhook};
use super::target::Target;
use super::tls::TlsMaterial;
use super::webhook_id::webhook_id;
use crate::domain::{
    Attempt, AttemptId, EndpointTls, Event, OAuth2, Outcome, SubscriptionId, WebhookId,
};
use crate::error::{is_caused_by, source_chain, storable, MAX_STORED_ID, MAX_STORED_TEXT};
use crate::trace::TraceHeaders;

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
    /// No OAuth2 token to send: why, never the credentials.
    #[error("no OAuth2 token: {0}")]
    Token(String),
    /// The subscription's TLS settings do not load (written before a check,
    /// or by hand).
    #[error("the subscription's TLS settings do not load: {0}")]
    Tls(String),
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
            // A token endpoint that refuses may be fixed, or come back.
            Self::Timeout(_) | Self::Connect(_) | Self::Request(_) | Self::Token(_) => true,
            Self::Forbidden(_) | Self::Tls(_) => false,
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

/// How one send went.
#[derive(Debug)]
pub struct Sent {
    pub webhook_id: WebhookId,
    /// The endpoint's status; `None` when it did not answer.
    pub status: Option<u16>,
    pub latency: Duration,
    /// The start of the response body, up to the client's cap.
    pub excerpt: Option<String>,
    /// Why it failed; `None`: delivered (a 2xx).
    pub error: Option<DeliveryError>,
}

impl Sent {
    /// Its row in the attempt log, as attempt number `attempt` (unwritten).
    pub fn record(&self, event: &Event, target: &Target, attempt: u32) -> Attempt {
        Attempt {
            id: AttemptId::generate(),
            event_id: storable(event.id.as_str(), MAX_STORED_ID),
            webhook_id: self.webhook_id.clone(),
            subscription_id: target.subscription.id.clone(),
            tenant_id: target.subscription.tenant_id.clone(),
            event_type: event.event_type.clone(),
            attempt,
            outcome: match self.error {
                None => Outcome::Success,
                Some(_) => Outcome::Failed,
            },
            status_code: self.status,
            latency_ms: u32::try_from(self.latency.as_millis()).unwrap_or(u32::MAX),
            error: self.error.as_ref().map(|e| storable(&e.to_string(), MAX_STORED_TEXT)),
            response_excerpt: self.excerpt.as_deref().map(|r| storable(r, MAX_STORED_TEXT)),
            created_at: Utc::now(),
        }
    }

    pub fn into_result(self) -> Result<(), DeliveryError> {
        self.error.map_or(Ok(()), Err)
    }
}

/// How much of an answer's body a `Sent` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Excerpts {
    /// Bytes read of any answer, at most.
    pub cap: usize,
    /// Keep a 2xx's too; otherwise only the answers of failed attempts
    /// are kept, which are what a receiver's owner reads.
    pub of_successes: bool,
}

/// The HTTP client webhooks go out through; one per role, its connections
/// reused.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    egress: Arc<EgressRules>,
    request_timeout: Duration,
    excerpts: Excerpts,
    tokens: Tokens,
    /// Pools of the subscriptions with TLS settings of their own, with the
    /// settings each was built for.
    tls_pools: Mutex<HashMap<SubscriptionId, (EndpointTls, reqwest::Client)>>,
}

impl Client {
    pub fn new(
        egress: Arc<EgressRules>,
        request_timeout: Duration,
        excerpts: Excerpts,
    ) -> reqwest::Result<Self> {
        let http = Self::builder(&egress, request_timeout)?.build()?;
        let (tokens, tls_pools) = (Tokens::default(), Mutex::default());
        Ok(Self { http, egress, request_timeout, excerpts, tokens, tls_pools })
    }

    /// How every pool is set up.
    fn builder(
        egress: &Arc<EgressRules>,
        request_timeout: Duration,
    ) -> reqwest::Result<reqwest::ClientBuilder> {
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
        Ok(builder)
    }

    /// The pool `target` goes through: its own when it has TLS settings.
    fn pool(&self, target: &Target) -> Result<reqwest::Client, DeliveryError> {
        let Some(tls) = &target.subscription.tls else { return Ok(self.http.clone()) };
        let id = &target.subscription.id;
        let mut pools = self.tls_pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((built_for, pool)) = pools.get(id) {
            if built_for == tls {
                return Ok(pool.clone());
            }
        }
        let material = TlsMaterial::parse(tls).map_err(|e| DeliveryError::Tls(e.to_string()))?;
        let builder = Self::builder(&self.egress, self.request_timeout)
            .map_err(|e| DeliveryError::Tls(source_chain(&e)))?;
        let pool = material
            .apply(builder)
            .build()
            .map_err(|e| DeliveryError::Tls(source_chain(&e.without_url())))?;
        pools.insert(id.clone(), (tls.clone(), pool.clone()));
        Ok(pool)
    }

    /// Sends `event` to `target` once, signed now, with `trace` as its
    /// `traceparent`.
    pub async fn send(&self, event: &Event, target: &Target, trace: Option<TraceHeaders>) -> Sent {
        let webhook_id = webhook_id(event.id.as_str(), &target.subscription.id);
        let webhook = Webhook {
            id: &webhook_id,
            body: Bytes::from(event.webhook_body()),
            signed_at: Utc::now(),
            trace,
        };
        let started = Instant::now();
        let answer = self.post(target, &webhook).await;
        let latency = started.elapsed();
        let (status, excerpt, error) = match answer {
            Ok((status, excerpt, _)) if (200..300).contains(&status) => {
                (Some(status), excerpt, None)
            }
            Ok((status, excerpt, retry_after)) => {
                (Some(status), excerpt, Some(DeliveryError::Status { status, retry_after }))
            }
            Err(error) => (None, None, Some(error)),
        };
        Sent { webhook_id, status, latency, excerpt, error }
    }

    /// Sends and reads at most `excerpts.cap` bytes of the answer.
    async fn post(
        &self,
        target: &Target,
        webhook: &Webhook<'_>,
    ) -> Result<(u16, Option<String>, Option<Duration>), DeliveryError> {
        let refused = || DeliveryError::Forbidden(egress::REFUSED.to_owned());
        let mut request = request::build(target, webhook).ok_or_else(refused)?;
        // Names are checked by the resolver; literal addresses never reach
        // it, and it does not see ports.
        if !self.egress.allows_url(request.url()) {
            return Err(refused());
        }
        let http = self.pool(target)?;
        let mut response = match &target.subscription.oauth2 {
            None => http.execute(request).await.map_err(|e| self.classify(e))?,
            Some(credentials) => {
                let id = &target.subscription.id;
                let token = self.token(id, credentials, None).await?;
                let again = request.try_clone();
                request.headers_mut().insert(AUTHORIZATION, token.clone());
                let response = http.execute(request).await.map_err(|e| self.classify(e))?;
                match again {
                    // The token may have been revoked, or expired early:
                    // one new token, one more try.
                    Some(mut again) if response.status() == StatusCode::UNAUTHORIZED => {
                        let token = self.token(id, credentials, Some(&token)).await?;
                        again.headers_mut().insert(AUTHORIZATION, token);
                        http.execute(again).await.map_err(|e| self.classify(e))?
                    }
                    _ => response,
                }
            }
        };
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let keep = self.excerpts.of_successes || !(200..300).contains(&status);
        let mut excerpt = Vec::new();
        // Read even what is not kept: an answer read to its end leaves the
        // connection reusable.
        let mut read = 0;
        while read < self.excerpts.cap {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let taken = &chunk[..chunk.len().min(self.excerpts.cap - read)];
                    read += taken.len();
                    if keep {
                        excerpt.extend_from_slice(taken);
                    }
                }
                // The status is what counts; a body cut short is still an answer.
                Ok(None) | Err(_) => break,
            }
        }
        let excerpt = (!excerpt.is_empty()).then(|| String::from_utf8_lossy(&excerpt).into_owned());
        Ok((status, excerpt, retry_after))
    }

    /// The `Authorization` value for the subscription's endpoint.
    async fn token(
        &self,
        id: &SubscriptionId,
        credentials: &OAuth2,
        refused: Option<&HeaderValue>,
    ) -> Result<HeaderValue, DeliveryError> {
        let fetch = || self.fetch_token(credentials);
        self.tokens
            .authorization(id, credentials, refused, fetch)
            .await
            .map_err(DeliveryError::Token)
    }

    /// Asks the token endpoint (HTTP Basic with the client's id and
    /// secret, RFC 6749 §2.3.1): the token and its lifetime, or why not.
    async fn fetch_token(&self, credentials: &OAuth2) -> Result<(String, Option<u64>), String> {
        let url = url::Url::parse(&credentials.token_url)
            .map_err(|_| "the token URL does not parse".to_owned())?;
        if !self.egress.allows_url(&url) {
            return Err(format!("the token URL: {}", egress::REFUSED));
        }
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &credentials.scope {
            form.push(("scope", scope));
        }
        if let Some(audience) = &credentials.audience {
            form.push(("audience", audience));
        }
        let sent = self
            .http
            .post(url)
            .basic_auth(&credentials.client_id, Some(&credentials.client_secret))
            .header(ACCEPT, "application/json")
            .form(&form)
            .send()
            .await;
        let mut response =
            sent.map_err(|e| format!("the token request failed: {}", self.classify(e)))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while body.len() < oauth2::MAX_TOKEN_ANSWER {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    return Err(format!("the token answer was cut short: {}", self.classify(e)))
                }
            }
        }
        if body.len() > oauth2::MAX_TOKEN_ANSWER {
            return Err(format!(
                "the token endpoint answered more than {} KiB",
                oauth2::MAX_TOKEN_ANSWER / 1024
            ));
        }
        oauth2::read_answer(status, &body)
    }

    fn classify(&self, error: reqwest::Error) -> DeliveryError {
        // Without the URL: it may carry tokens, and it is in the subscription anyway.
        let error = error.without_url();
        if is_caused_by::<ForbiddenDestination>(&error) {
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

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use serde_json::value::RawValue;

    use super::*;
    use crate::domain::{Audience, Subscription, TenantId};

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

    fn event() -> Event {
        Event {
            id: "evt_1".into(),
            event_type: "order.created".to_owned(),
            source: "test".to_owned(),
            time: Utc::now(),
            key: None,
            data: RawValue::from_string("{}".to_owned()).expect("JSON").into(),
            audience: Audience::Tenant(TenantId::default_tenant()),
        }
    }

    #[tokio::test]
    async fn a_refused_destination_is_an_outcome_and_nothing_is_sent() {
        // The default rules refuse loopback: the literal address is refused
        // before any connection is tried.
        let excerpts = Excerpts { cap: 16, of_successes: false };
        let client =
            Client::new(Arc::default(), Duration::from_secs(1), excerpts).expect("a client");
        let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let target = Target::new(Subscription::example(TenantId::default_tenant(), secret))
            .expect("a valid target");
        let event = event();
        let sent = client.send(&event, &target, None).await;
        assert_eq!(sent.status, None);
        assert!(matches!(sent.error, Some(DeliveryError::Forbidden(_))), "{:?}", sent.error);
        assert_eq!(sent.webhook_id, webhook_id(event.id.as_str(), &target.subscription.id));

        let attempt = sent.record(&event, &target, 3);
        assert_eq!(attempt.outcome, Outcome::Failed);
        assert_eq!(attempt.attempt, 3);
        assert_eq!(attempt.webhook_id, sent.webhook_id);
        assert_eq!(attempt.error.as_deref(), Some(egress::REFUSED));
        assert!(sent.into_result().is_err());
    }
}
