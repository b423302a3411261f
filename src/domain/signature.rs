//! Standard Webhooks signatures over `"{id}.{ts}.{body}"`: symmetric,
//! `v1,<base64 HMAC-SHA256>` keyed by the base64-decoded part of a `whsec_`
//! secret; or asymmetric, `v1a,<base64 Ed25519 signature>` by a `whsk_`
//! secret key, which receivers verify with its `whpk_` public key. The
//! prefix of a stored secret says its scheme. A subscription's secrets are
//! parsed once, from the row's text, into `SigningKeys`; one that does not
//! parse is an error its caller reports, never skipped.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use super::subscription::PreviousSecret;

const PREFIX: &str = "whsec_";
const SECRET_KEY_PREFIX: &str = "whsk_";
const PUBLIC_KEY_PREFIX: &str = "whpk_";
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("a secret starts with `whsec_` (hmac-sha256) or `whsk_` (ed25519) followed by base64")]
    MissingPrefix,
    #[error("the part after the prefix is not valid base64")]
    NotBase64,
    #[error("a secret's key is 24 to 64 bytes long")]
    BadLength,
    #[error("an Ed25519 secret key is 32 bytes (the seed), or 64 (the seed, then its public key)")]
    BadEd25519Length,
    #[error("the last 32 bytes of this Ed25519 secret key are not the public key of the first 32")]
    PublicKeyMismatch,
    #[error("a public key is `whpk_` followed by the base64 of 32 bytes, a valid Ed25519 point")]
    BadPublicKey,
}

/// How a subscription's webhooks are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum SignatureScheme {
    /// `v1`, with a shared `whsec_` secret.
    #[default]
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    /// `v1a`, with a `whsk_` secret key hookgate keeps; receivers hold the
    /// `whpk_` public key only.
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl SignatureScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::Ed25519 => "ed25519",
        }
    }

    /// The scheme of a stored secret, by its prefix.
    pub fn of(secret: &str) -> Option<Self> {
        if secret.starts_with(PREFIX) {
            Some(Self::HmacSha256)
        } else if secret.starts_with(SECRET_KEY_PREFIX) {
            Some(Self::Ed25519)
        } else {
            None
        }
    }
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

/// An Ed25519 secret key (`whsk_` and the base64 of its 32-byte seed, or
/// of the seed and its public key, 64 bytes, as libsodium keeps them).
#[derive(Clone)]
pub struct Ed25519Secret {
    text: String,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for Ed25519Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ed25519Secret(***)")
    }
}

impl Ed25519Secret {
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let encoded = text.strip_prefix(SECRET_KEY_PREFIX).ok_or(SignatureError::MissingPrefix)?;
        let bytes = B64.decode(encoded).map_err(|_| SignatureError::NotBase64)?;
        let seed: [u8; 32] = bytes
            .get(..32)
            .and_then(|b| b.try_into().ok())
            .ok_or(SignatureError::BadEd25519Length)?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        match bytes.len() {
            32 => {}
            64 if bytes[32..] == key.verifying_key().to_bytes() => {}
            64 => return Err(SignatureError::PublicKeyMismatch),
            _ => return Err(SignatureError::BadEd25519Length),
        }
        Ok(Self { text: text.to_owned(), key })
    }

    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut seed);
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        Self { text: format!("{SECRET_KEY_PREFIX}{}", B64.encode(key.to_keypair_bytes())), key }
    }

    /// The `whsk_…` form, to store; never shown.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The `whpk_…` form of its public key, for receivers.
    pub fn public_key(&self) -> String {
        format!("{PUBLIC_KEY_PREFIX}{}", B64.encode(self.key.verifying_key().to_bytes()))
    }

    /// One `v1a,…` signature.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        use ed25519_dalek::Signer;
        let signature = self.key.sign(&signed_content(msg_id, timestamp, body));
        format!("v1a,{}", B64.encode(signature.to_bytes()))
    }
}

/// `{id}.{ts}.{body}`: what both schemes sign.
fn signed_content(msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let timestamp = timestamp.to_string();
    let mut content = Vec::with_capacity(msg_id.len() + timestamp.len() + body.len() + 2);
    content.extend_from_slice(msg_id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// A receiver's `whpk_` public key.
#[derive(Debug, Clone)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let encoded = text.strip_prefix(PUBLIC_KEY_PREFIX).ok_or(SignatureError::BadPublicKey)?;
        let bytes: [u8; 32] = B64
            .decode(encoded)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(SignatureError::BadPublicKey)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| SignatureError::BadPublicKey)
    }

    /// True when any of the space-separated signatures in `header` is a
    /// `v1a` one this key verifies.
    pub fn verify(&self, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        let content = signed_content(msg_id, timestamp, body);
        header.split(' ').any(|sig| {
            let Some(bytes) = sig.strip_prefix("v1a,").and_then(|b64| B64.decode(b64).ok()) else {
                return false;
            };
            let Ok(signature) = ed25519_dalek::Signature::from_slice(&bytes) else { return false };
            self.0.verify_strict(&content, &signature).is_ok()
        })
    }
}

/// One key a subscription signs with, of either scheme.
#[derive(Clone, Debug)]
pub enum SigningKey {
    Hmac(SigningSecret),
    Ed25519(Ed25519Secret),
}

impl SigningKey {
    /// A stored or given secret, of the scheme its prefix names.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        match SignatureScheme::of(text) {
            Some(SignatureScheme::HmacSha256) => SigningSecret::parse(text).map(Self::Hmac),
            Some(SignatureScheme::Ed25519) => Ed25519Secret::parse(text).map(Self::Ed25519),
            None => Err(SignatureError::MissingPrefix),
        }
    }

    pub fn generate(scheme: SignatureScheme) -> Self {
        match scheme {
            SignatureScheme::HmacSha256 => Self::Hmac(SigningSecret::generate()),
            SignatureScheme::Ed25519 => Self::Ed25519(Ed25519Secret::generate()),
        }
    }

    pub fn scheme(&self) -> SignatureScheme {
        match self {
            Self::Hmac(_) => SignatureScheme::HmacSha256,
            Self::Ed25519(_) => SignatureScheme::Ed25519,
        }
    }

    /// The text to store.
    pub fn expose(&self) -> &str {
        match self {
            Self::Hmac(secret) => secret.expose(),
            Self::Ed25519(secret) => secret.expose(),
        }
    }

    /// What a receiver verifies with, when that is not the secret itself.
    pub fn public_key(&self) -> Option<String> {
        match self {
            Self::Hmac(_) => None,
            Self::Ed25519(secret) => Some(secret.public_key()),
        }
    }

    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        match self {
            Self::Hmac(secret) => secret.sign(msg_id, timestamp, body),
            Self::Ed25519(secret) => secret.sign(msg_id, timestamp, body),
        }
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
    current: SigningKey,
    previous: Vec<(SigningKey, DateTime<Utc>)>,
}

impl SigningKeys {
    /// From the row's text; every secret must parse.
    pub fn parse(current: &str, previous: &[PreviousSecret]) -> Result<Self, BadSecret> {
        let current = SigningKey::parse(current).map_err(BadSecret::Current)?;
        let previous = previous
            .iter()
            .enumerate()
            .map(|(index, p)| match SigningKey::parse(&p.secret) {
                Ok(secret) => Ok((secret, p.expires_at)),
                Err(error) => Err(BadSecret::Previous { index, error }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { current, previous })
    }

    pub fn current(&self) -> &SigningKey {
        &self.current
    }

    /// The `webhook-signature` header value: the current secret's
    /// signature, then one per rotated-out secret still in its grace period
    /// at `now` (of its own scheme: a rotation may change the scheme),
    /// space-separated.
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

    // RFC 8032, section 7.1, test 1: a seed and its public key.
    const RFC_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn an_ed25519_secret_key_has_the_rfc_public_key_in_either_form() {
        let public = format!("whpk_{}", B64.encode(hex(RFC_PUBLIC)));
        let seed =
            Ed25519Secret::parse(&format!("whsk_{}", B64.encode(hex(RFC_SEED)))).expect("seed");
        assert_eq!(seed.public_key(), public);
        let pair = [hex(RFC_SEED), hex(RFC_PUBLIC)].concat();
        let pair = Ed25519Secret::parse(&format!("whsk_{}", B64.encode(pair))).expect("pair");
        assert_eq!(pair.public_key(), public);
        let wrong = [hex(RFC_SEED), hex(RFC_SEED)].concat();
        let wrong = format!("whsk_{}", B64.encode(wrong));
        assert_eq!(Ed25519Secret::parse(&wrong).unwrap_err(), SignatureError::PublicKeyMismatch);
        let short = format!("whsk_{}", B64.encode([1u8; 31]));
        assert_eq!(Ed25519Secret::parse(&short).unwrap_err(), SignatureError::BadEd25519Length);
        let generated = Ed25519Secret::generate();
        let again = Ed25519Secret::parse(generated.expose()).expect("a generated key parses");
        assert_eq!(again.public_key(), generated.public_key());
    }

    #[test]
    fn a_v1a_signature_verifies_with_the_public_key_only() {
        let secret = Ed25519Secret::generate();
        let public = PublicKey::parse(&secret.public_key()).expect("public key");
        let body = SPEC_BODY.as_bytes();
        let signature = secret.sign(SPEC_ID, SPEC_TS, body);
        assert!(signature.starts_with("v1a,"));
        assert!(public.verify(SPEC_ID, SPEC_TS, body, &signature));
        let both = format!("{SPEC_SIGNATURE} {signature}");
        assert!(public.verify(SPEC_ID, SPEC_TS, body, &both), "among other signatures");
        assert!(!public.verify(SPEC_ID, SPEC_TS + 1, body, &signature));
        assert!(!public.verify(SPEC_ID, SPEC_TS, b"{}", &signature));
        let other = PublicKey::parse(&Ed25519Secret::generate().public_key()).expect("key");
        assert!(!other.verify(SPEC_ID, SPEC_TS, body, &signature));
        assert!(!public.verify(SPEC_ID, SPEC_TS, body, "v1a,!!! v1a,AAAA"));
        assert!(PublicKey::parse("whpk_AAAA").is_err());
        assert!(PublicKey::parse(SPEC_SECRET).is_err());
    }

    #[test]
    fn a_rotation_across_schemes_signs_with_both_until_the_grace_ends() {
        let now = Utc::now();
        let old = PreviousSecret {
            secret: SPEC_SECRET.to_owned(),
            expires_at: now + chrono::Duration::hours(1),
        };
        let new = SigningKey::generate(SignatureScheme::Ed25519);
        let keys = SigningKeys::parse(new.expose(), &[old]).expect("keys");
        assert_eq!(keys.current().scheme(), SignatureScheme::Ed25519);
        let header = keys.sign(SPEC_ID, SPEC_TS, SPEC_BODY.as_bytes(), now);
        let signatures: Vec<&str> = header.split(' ').collect();
        assert_eq!(signatures.len(), 2, "{header}");
        assert!(signatures[0].starts_with("v1a,"));
        assert_eq!(signatures[1], SPEC_SIGNATURE);
        let later =
            keys.sign(SPEC_ID, SPEC_TS, SPEC_BODY.as_bytes(), now + chrono::Duration::hours(2));
        assert_eq!(later.split(' ').count(), 1, "the old one stops at the end of its grace");
        assert_eq!(SignatureScheme::of(new.expose()), Some(SignatureScheme::Ed25519));
        assert_eq!(SignatureScheme::of(SPEC_SECRET), Some(SignatureScheme::HmacSha256));
        assert_eq!(SigningKey::parse("whpk_x").unwrap_err(), SignatureError::MissingPrefix);
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
