//! OAuth 2.0 client-credentials tokens (RFC 6749 §4.4) for endpoints that
//! want them: one per subscription, fetched when first needed (one fetch
//! at a time per subscription, whatever the deliveries waiting), kept until
//! shortly before it expires, and fetched again when the endpoint refused
//! it. The client fetches through its own connection pool, so the egress
//! rules, the timeouts and the refusal of redirects hold for token URLs too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderValue;
use serde::Deserialize;
use tokio::time::Instant;

use crate::domain::{OAuth2, SubscriptionId};

/// How much of a token endpoint's answer is read, at most.
pub const MAX_TOKEN_ANSWER: usize = 64 * 1024;
/// The lifetime of a token whose answer gives none (RFC 6749 §5.1 leaves
/// `expires_in` optional).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// A token is fetched again this much before it expires, at most (a fifth
/// of its lifetime for short ones): a request in flight must not carry a
/// token that expires on the way.
const MAX_EARLY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Token {
    /// `Bearer …`, marked sensitive.
    authorization: HeaderValue,
    renew_at: Instant,
    /// What it was fetched with: changed credentials fetch anew.
    credentials: OAuth2,
}

type Slot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// The tokens of every subscription this client delivered for.
#[derive(Debug, Default)]
pub struct Tokens {
    slots: Mutex<HashMap<SubscriptionId, Slot>>,
}

impl Tokens {
    /// The `Authorization` value for `subscription`: the kept one while it
    /// is fresh, for these credentials, and not `refused`; otherwise what
    /// `fetch` gets (and keeps).
    pub async fn authorization<F, Fut>(
        &self,
        subscription: &SubscriptionId,
        credentials: &OAuth2,
        refused: Option<&HeaderValue>,
        fetch: F,
    ) -> Result<HeaderValue, String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(String, Option<u64>), String>>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(slots.entry(subscription.clone()).or_default())
        };
        let mut kept = slot.lock().await;
        if let Some(token) = kept.as_ref() {
            let usable = &token.credentials == credentials
                && Instant::now() < token.renew_at
                && refused != Some(&token.authorization);
            if usable {
                return Ok(token.authorization.clone());
            }
        }
        *kept = None;
        let (access_token, expires_in) = fetch().await?;
        let mut authorization =
            HeaderValue::try_from(format!("Bearer {access_token}")).map_err(|_| {
                "the token endpoint answered a token that cannot be a header".to_owned()
            })?;
        authorization.set_sensitive(true);
        let lifetime = expires_in.map_or(DEFAULT_LIFETIME, Duration::from_secs);
        let renew_at = Instant::now() + lifetime - MAX_EARLY.min(lifetime / 5);
        *kept = Some(Token {
            authorization: authorization.clone(),
            renew_at,
            credentials: credentials.clone(),
        });
        Ok(authorization)
    }
}

/// A token endpoint's answer (RFC 6749 §5.1), and its error (§5.2).
#[derive(Debug, Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    pub token_type: Option<String>,
    pub expires_in: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct TokenRefusal {
    pub error: String,
}

/// What a token endpoint's answer gives: the token and its lifetime, or
/// why not (without anything of the credentials).
pub fn read_answer(status: u16, body: &[u8]) -> Result<(String, Option<u64>), String> {
    if !(200..300).contains(&status) {
        let reason = serde_json::from_slice::<TokenRefusal>(body)
            .ok()
            .map(|r| format!(" ({})", crate::error::storable(&r.error, 64)))
            .unwrap_or_default();
        return Err(format!("the token endpoint answered {status}{reason}"));
    }
    let answer: TokenAnswer = serde_json::from_slice(body).map_err(|_| {
        "the token endpoint's answer is not a token (JSON with access_token)".to_owned()
    })?;
    if answer.token_type.as_deref().is_some_and(|t| !t.eq_ignore_ascii_case("bearer")) {
        return Err("the token endpoint answered a token that is not a bearer token".to_owned());
    }
    if answer.access_token.is_empty() {
        return Err("the token endpoint answered an empty token".to_owned());
    }
    Ok((answer.access_token, answer.expires_in))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn credentials(secret: &str) -> OAuth2 {
        OAuth2 {
            token_url: "http://127.0.0.1:1/token".into(),
            client_id: "hookgate".into(),
            client_secret: secret.into(),
            scope: None,
            audience: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_kept_until_shortly_before_it_expires_or_is_refused() {
        let tokens = Tokens::default();
        let id = SubscriptionId::generate();
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, Ordering::SeqCst);
            Ok((format!("token-{n}"), Some(100)))
        };
        let first = tokens.authorization(&id, &credentials("a"), None, fetch).await.expect("token");
        assert_eq!(first, "Bearer token-0");
        assert!(first.is_sensitive());
        let again = tokens.authorization(&id, &credentials("a"), None, fetch).await.expect("token");
        assert_eq!((again, fetches.load(Ordering::SeqCst)), (first.clone(), 1), "kept");
        // 100 s tokens are renewed 20 s early.
        tokio::time::advance(Duration::from_secs(81)).await;
        let renewed =
            tokens.authorization(&id, &credentials("a"), None, fetch).await.expect("token");
        assert_eq!(renewed, "Bearer token-1");
        let refused = tokens
            .authorization(&id, &credentials("a"), Some(&renewed), fetch)
            .await
            .expect("token");
        assert_eq!(refused, "Bearer token-2", "a refused token is fetched anew");
        let changed =
            tokens.authorization(&id, &credentials("b"), None, fetch).await.expect("token");
        assert_eq!(changed, "Bearer token-3", "new credentials, a new token");
        let failing = || async { Err::<(String, Option<u64>), _>("refused".to_owned()) };
        let other = SubscriptionId::generate();
        assert!(tokens.authorization(&other, &credentials("a"), None, failing).await.is_err());
    }

    #[test]
    fn an_answer_is_a_bearer_token_or_says_why_not() {
        let ok = br#"{"access_token":"abc","token_type":"Bearer","expires_in":60}"#;
        assert_eq!(read_answer(200, ok), Ok(("abc".to_owned(), Some(60))));
        assert_eq!(read_answer(200, br#"{"access_token":"abc"}"#), Ok(("abc".to_owned(), None)));
        let refused = read_answer(401, br#"{"error":"invalid_client"}"#).expect_err("refused");
        assert_eq!(refused, "the token endpoint answered 401 (invalid_client)");
        assert_eq!(read_answer(500, b"<html>"), Err("the token endpoint answered 500".to_owned()));
        assert!(read_answer(200, br#"{"access_token":"abc","token_type":"mac"}"#).is_err());
        assert!(read_answer(200, b"not json").is_err());
        assert!(read_answer(200, br#"{"access_token":""}"#).is_err());
    }
}
