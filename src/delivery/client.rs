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
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::egress::{self, EgressRules, ForbiddenDestination, GuardedResolver};
use super::oauth2::{self, Tokens};
use super::request::{self, Webhook};
use super::target::Target;
use super::tls::TlsMaterial;
use super::webhook_id::webhook_id;
use crate::domain::{
    Attempt, AttemptId, EndpointTls, Event, OAuth2, Outcome, SubscriptionId, WebhookId,
};
use crate::error::{
    find_cause, is_caused_by, source_chain, storable, MAX_STORED_ID, MAX_STORED_TEXT,
};
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

/// hyper-util's pool: plain HTTP and HTTPS (the webpki roots, as reqwest's),
/// names resolved through the egress rules.
type Direct = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>,
    Full<Bytes>,
>;

/// What an attempt's request goes through.
enum Pool<'a> {
    Direct(&'a Direct),
    Reqwest(reqwest::Client),
}

/// An endpoint's answer, read up to the cap.
struct Answer {
    status: u16,
    excerpt: Option<String>,
    retry_after: Option<Duration>,
}

/// The HTTP client webhooks go out through; one per role, its connections
/// reused.
#[derive(Debug)]
pub struct Client {
    /// What most deliveries go through; `None` with an egress proxy, which
    /// reqwest's pool speaks to. hyper-util's client sent about 30 % more
    /// signed webhooks/s than reqwest's to the same receiver (the bench's
    /// ceiling loop, 2 cores).
    direct: Option<Direct>,
    /// Deliveries through the egress proxy, and token requests.
    http: reqwest::Client,
    egress: Arc<EgressRules>,
    request_timeout: Duration,
    excerpts: Excerpts,
    tokens: Tokens,
    /// Pools of the subscriptions with TLS settings of their own, with the
    /// settings each was built for.
    tls_pools: Mutex<HashMap<SubscriptionId, (EndpointTls, reqwest::Client)>>,
}

/// Idle connections kept per host: a subscription's default in-flight cap
/// and then some.
const IDLE_PER_HOST: usize = 256;

impl Client {
    pub fn new(
        egress: Arc<EgressRules>,
        request_timeout: Duration,
        excerpts: Excerpts,
    ) -> reqwest::Result<Self> {
        let http = Self::builder(&egress, request_timeout)?.build()?;
        let direct = match egress.proxy {
            None => Self::direct(&egress, request_timeout),
            Some(_) => None,
        };
        let (tokens, tls_pools) = (Tokens::default(), Mutex::default());
        Ok(Self { direct, http, egress, request_timeout, excerpts, tokens, tls_pools })
    }

    /// hyper-util's pool, set up as `builder` sets up reqwest's: no
    /// redirects (hyper follows none), no proxy from the environment (it
    /// reads none), the connect timeout, `TCP_NODELAY`; the request timeout
    /// is `exchange`'s. `None` when rustls refuses its settings, which ring's
    /// provider never makes it do: reqwest's pool then takes every delivery.
    fn direct(egress: &Arc<EgressRules>, request_timeout: Duration) -> Option<Direct> {
        let mut http = HttpConnector::new_with_resolver(egress.resolver());
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(request_timeout.min(Duration::from_secs(10))));
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .inspect_err(|error| tracing::warn!(%error, "deliveries go through reqwest's pool"))
            .ok()?;
        let tls = versions.with_root_certificates(roots).with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .build(https);
        Some(client)
    }

    /// How every reqwest pool is set up.
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
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .tcp_nodelay(true);
        if let Some(proxy) = &egress.proxy {
            builder = builder.proxy(reqwest::Proxy::all(proxy.clone())?);
        }
        Ok(builder)
    }

    /// The pool `target` goes through: its own when it has TLS settings.
    fn pool(&self, target: &Target) -> Result<Pool<'_>, DeliveryError> {
        let Some(tls) = &target.subscription.tls else {
            return Ok(match &self.direct {
                Some(direct) => Pool::Direct(direct),
                None => Pool::Reqwest(self.http.clone()),
            });
        };
        let id = &target.subscription.id;
        let mut pools = self.tls_pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((built_for, pool)) = pools.get(id) {
            if built_for == tls {
                return Ok(Pool::Reqwest(pool.clone()));
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
        Ok(Pool::Reqwest(pool))
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
            Ok(Answer { status, excerpt, .. }) if (200..300).contains(&status) => {
                (Some(status), excerpt, None)
            }
            Ok(Answer { status, excerpt, retry_after }) => {
                (Some(status), excerpt, Some(DeliveryError::Status { status, retry_after }))
            }
            Err(error) => (None, None, Some(error)),
        };
        Sent { webhook_id, status, latency, excerpt, error }
    }

    /// Sends and reads at most `excerpts.cap` bytes of the answer.
    async fn post(&self, target: &Target, webhook: &Webhook<'_>) -> Result<Answer, DeliveryError> {
        let refused = || DeliveryError::Forbidden(egress::REFUSED.to_owned());
        // Names are checked by the resolver; literal addresses never reach
        // it, and it does not see ports.
        if !target.url().is_some_and(|url| self.egress.allows_url(url)) {
            return Err(refused());
        }
        let request = request::build(target, webhook).ok_or_else(refused)?;
        let pool = self.pool(target)?;
        let Some(credentials) = &target.subscription.oauth2 else {
            return self.exchange(&pool, request).await;
        };
        let id = &target.subscription.id;
        let token = self.token(id, credentials, None).await?;
        let again = copy(&request);
        let answer = self.exchange(&pool, authorized(request, token.clone())).await?;
        if answer.status != StatusCode::UNAUTHORIZED.as_u16() {
            return Ok(answer);
        }
        // The token may have been revoked, or expired early: one new token,
        // one more try.
        let token = self.token(id, credentials, Some(&token)).await?;
        self.exchange(&pool, authorized(again, token)).await
    }

    /// One request through `pool`, its answer read, within the request
    /// timeout (a token fetch has a timeout of its own).
    async fn exchange(
        &self,
        pool: &Pool<'_>,
        request: http::Request<Bytes>,
    ) -> Result<Answer, DeliveryError> {
        let exchange = async {
            match pool {
                Pool::Direct(direct) => {
                    let request = request.map(Full::new);
                    let response = direct.request(request).await.map_err(|e| self.classify(&e))?;
                    Ok(self.read(response).await)
                }
                Pool::Reqwest(http) => {
                    let request = reqwest::Request::try_from(request)
                        .map_err(|e| DeliveryError::Request(source_chain(&e.without_url())))?;
                    let response =
                        http.execute(request).await.map_err(|e| self.classify_reqwest(e))?;
                    Ok(self.read(http::Response::from(response)).await)
                }
            }
        };
        tokio::time::timeout(self.request_timeout, exchange)
            .await
            .map_err(|_| DeliveryError::Timeout(self.request_timeout))?
    }

    /// The status, `Retry-After` and at most `excerpts.cap` bytes of the body.
    async fn read<B>(&self, response: http::Response<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
    {
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let keep = self.excerpts.of_successes || !(200..300).contains(&status);
        let mut body = response.into_body();
        let mut excerpt = Vec::new();
        // Read even what is not kept: an answer read to its end leaves the
        // connection reusable.
        let mut read = 0;
        while read < self.excerpts.cap {
            match body.frame().await {
                Some(Ok(frame)) => {
                    let Ok(chunk) = frame.into_data() else { continue };
                    let taken = &chunk[..chunk.len().min(self.excerpts.cap - read)];
                    read += taken.len();
                    if keep {
                        excerpt.extend_from_slice(taken);
                    }
                }
                // The status is what counts; a body cut short is still an answer.
                None | Some(Err(_)) => break,
            }
        }
        let excerpt = (!excerpt.is_empty()).then(|| String::from_utf8_lossy(&excerpt).into_owned());
        Answer { status, excerpt, retry_after }
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
            sent.map_err(|e| format!("the token request failed: {}", self.classify_reqwest(e)))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while body.len() < oauth2::MAX_TOKEN_ANSWER {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    let error = self.classify_reqwest(e);
                    return Err(format!("the token answer was cut short: {error}"));
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

    fn classify_reqwest(&self, error: reqwest::Error) -> DeliveryError {
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

    /// hyper-util's errors name no URL.
    fn classify(&self, error: &hyper_util::client::legacy::Error) -> DeliveryError {
        if is_caused_by::<ForbiddenDestination>(error) {
            return DeliveryError::Forbidden(egress::REFUSED.to_owned());
        }
        // The connect timeout, as reqwest counts it.
        let timed_out = find_cause::<std::io::Error>(error)
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
        if timed_out {
            DeliveryError::Timeout(self.request_timeout)
        } else if error.is_connect() {
            DeliveryError::Connect(source_chain(error))
        } else {
            DeliveryError::Request(source_chain(error))
        }
    }
}

/// `request` again, for the one retry with a new token.
fn copy(request: &http::Request<Bytes>) -> http::Request<Bytes> {
    let mut again = http::Request::new(request.body().clone());
    *again.method_mut() = request.method().clone();
    *again.uri_mut() = request.uri().clone();
    *again.headers_mut() = request.headers().clone();
    again
}

fn authorized(mut request: http::Request<Bytes>, token: HeaderValue) -> http::Request<Bytes> {
    request.headers_mut().insert(AUTHORIZATION, token);
    request
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
