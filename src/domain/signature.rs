//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256("{id}.{ts}.{body}")>`
//! keyed by the base64-decoded part of a `whsec_` secret.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

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
    fn refuses_malformed_secrets() {
        assert_eq!(SigningSecret::parse("abc").unwrap_err(), SignatureError::MissingPrefix);
        assert_eq!(SigningSecret::parse("whsec_!!").unwrap_err(), SignatureError::NotBase64);
        assert_eq!(SigningSecret::parse("whsec_YWJj").unwrap_err(), SignatureError::BadLength);
        let generated = SigningSecret::generate();
        assert!(SigningSecret::parse(generated.expose()).is_ok());
    }
}
