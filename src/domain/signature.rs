//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256("{id}.{ts}.{body}")>`
//! keyed by the base64-decoded part of a `whsec_` secret. A subscription's
//! secrets are parsed once, from the row's text, into `SigningKeys`; one
//! that does not parse is an error its caller reports, never skipped.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use super::subscription::PreviousSecret;

const PREFIX: &str = "whsec_";
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("a secret starts with `whsec_` followed by base64")]
    MissingPrefix,
    #[error("the part after `whsec_` is not valid base64")]
    NotBase64,
    #[error("a secret's key is 24 to 64 bytes long")]
    BadLength,
}

/// A signing secret with its HMAC key set up once, so that signing a delivery
/// only clones the prepared state.
#[derive(Clone)]
pub struct SigningSecret {
    text: String,
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

impl SigningSecret {
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let encoded = text.strip_prefix(PREFIX).ok_or(SignatureError::MissingPrefix)?;
        let key = B64.decode(encoded).map_err(|_| SignatureError::NotBase64)?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SignatureError::BadLength);
        }
        Ok(Self::from_key(text.to_owned(), &key))
    }

    /// Parses a secret without the length rule, for verifying what others
    /// (such as the specification's test vector) signed.
    pub fn parse_lenient(text: &str) -> Result<Self, SignatureError> {
        let encoded = text.strip_prefix(PREFIX).unwrap_or(text);
        let key = B64.decode(encoded).map_err(|_| SignatureError::NotBase64)?;
        if key.is_empty() {
            return Err(SignatureError::BadLength);
        }
        Ok(Self::from_key(text.to_owned(), &key))
    }

    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        Self::from_key(format!("{PREFIX}{}", B64.encode(key)), &key)
    }

    fn from_key(text: String, key: &[u8]) -> Self {
        #[allow(clippy::expect_used, reason = "HMAC takes keys of any length")]
        let mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
        Self { text, mac }
    }

    /// The `whsec_…` form, to store and to show once on create.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// One `v1,…` signature.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", B64.encode(self.digest(msg_id, timestamp, body)))
    }

    fn digest(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// True when any of the space-separated signatures in `header` is ours.
    pub fn verify(&self, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        let expected = self.digest(msg_id, timestamp, body);
        header.split(' ').any(|sig| {
            sig.strip_prefix("v1,").and_then(|b64| B64.decode(b64).ok()).is_some_and(|given| {
                use subtle::ConstantTimeEq;
                given.ct_eq(expected.as_slice()).into()
            })
        })
    }
}

/// A stored secret that does not parse: the subscription cannot be signed for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadSecret {
    #[error("its signing secret does not parse: {0}")]
    Current(#[source] SignatureError),
    /// `index`: its place among the rotated-out secrets, oldest first.
    #[error("its rotated-out secret #{index} does not parse: {error}")]
    Previous {
        index: usize,
        #[source]
        error: SignatureError,
    },
}

/// A subscription's secrets, parsed once: the current one, and those
/// replaced by rotations, each with the end of its grace period.
#[derive(Clone, Debug)]
pub struct SigningKeys {
    current: SigningSecret,
    previous: Vec<(SigningSecret, DateTime<Utc>)>,
}

impl SigningKeys {
    /// From the row's text; every secret must parse.
    pub fn parse(current: &str, previous: &[PreviousSecret]) -> Result<Self, BadSecret> {
        let current = SigningSecret::parse(current).map_err(BadSecret::Current)?;
        let previous = previous
            .iter()
            .enumerate()
            .map(|(index, p)| match SigningSecret::parse(&p.secret) {
                Ok(secret) => Ok((secret, p.expires_at)),
                Err(error) => Err(BadSecret::Previous { index, error }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { current, previous })
    }

    pub fn current(&self) -> &SigningSecret {
        &self.current
    }

    /// The `webhook-signature` header value: the current secret's
    /// signature, then one per rotated-out secret still in its grace period
    /// at `now`, space-separated.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8], now: DateTime<Utc>) -> String {
        let mut signature = self.current.sign(msg_id, timestamp, body);
        for (secret, expires_at) in &self.previous {
            if *expires_at > now {
                signature.push(' ');
                signature.push_str(&secret.sign(msg_id, timestamp, body));
            }
        }
        signature
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector published with the Standard Webhooks specification.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_specification_test_vector() {
        let secret = SigningSecret::parse(SPEC_SECRET).expect("spec secret parses");
        assert_eq!(secret.sign(SPEC_ID, SPEC_TS, SPEC_BODY.as_bytes()), SPEC_SIGNATURE);
    }

    #[test]
    fn verifies_any_of_several_signatures() {
        let secret = SigningSecret::parse(SPEC_SECRET).expect("spec secret parses");
        let other = SigningSecret::generate();
        let header =
            format!("{} {}", other.sign(SPEC_ID, SPEC_TS, SPEC_BODY.as_bytes()), SPEC_SIGNATURE);
        assert!(secret.verify(SPEC_ID, SPEC_TS, SPEC_BODY.as_bytes(), &header));
        assert!(!secret.verify(SPEC_ID, SPEC_TS + 1, SPEC_BODY.as_bytes(), &header));
        assert!(!secret.verify(SPEC_ID, SPEC_TS, b"{}", SPEC_SIGNATURE));
    }

    #[test]
    fn keys_parse_every_secret_of_the_row_or_say_which_one_is_bad() {
        let now = Utc::now();
        let previous = |secret: &str| PreviousSecret { secret: secret.to_owned(), expires_at: now };
        let keys = SigningKeys::parse(SPEC_SECRET, &[previous(SPEC_SECRET)]).expect("valid");
        assert_eq!(keys.current().expose(), SPEC_SECRET);
        assert_eq!(
            SigningKeys::parse("whsec_!!", &[]).unwrap_err(),
            BadSecret::Current(SignatureError::NotBase64)
        );
        let bad = [previous(SPEC_SECRET), previous("plain")];
        assert_eq!(
            SigningKeys::parse(SPEC_SECRET, &bad).unwrap_err(),
            BadSecret::Previous { index: 1, error: SignatureError::MissingPrefix }
        );
    }

    #[test]
    fn refuses_malformed_secrets() {
        assert_eq!(SigningSecret::parse("abc").unwrap_err(), SignatureError::MissingPrefix);
        assert_eq!(SigningSecret::parse("whsec_!!").unwrap_err(), SignatureError::NotBase64);
        assert_eq!(SigningSecret::parse("whsec_YWJj").unwrap_err(), SignatureError::BadLength);
        let generated = SigningSecret::generate();
        assert!(SigningSecret::parse(generated.expose()).is_ok());
    }
}
