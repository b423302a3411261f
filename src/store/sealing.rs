//! Secrets at rest: signing secrets and secret header values are sealed with
//! XChaCha20-Poly1305 under the keys of `HOOKGATE_SECRET_KEY` before they
//! reach a row, and opened when read.
//!
//! Stored form: `enc:v1:<key id>:<base64 of nonce ‖ ciphertext ‖ tag>`. The
//! key id says which key opens it, so keys can be rotated: several are
//! configured, the first seals, all open, and `hookgate secrets re-encrypt`
//! moves rows to the first. A value without the prefix is plain text
//! (written before a key was set) and reads as it is. The associated data
//! names the subscription and the field, so a sealed value copied into
//! another row or field does not open.

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::XChaCha20Poly1305;

/// What marks a sealed value; the version names the format and the cipher.
pub const SEALED_PREFIX: &str = "enc:v1:";
/// The id of a key given without one (`HOOKGATE_SECRET_KEY=<base64>`).
pub const IMPLIED_KEY_ID: &str = "default";
const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
const MAX_KEY_ID_LEN: usize = 32;

/// The configured keys; the first seals. Empty: values are stored plain.
#[derive(Clone, Default)]
pub struct SecretKeys {
    keys: Arc<Vec<Key>>,
}

struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

/// Key ids only: the keys themselves never reach a log.
impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SecretKeys").field(&self.ids().collect::<Vec<_>>()).finish()
    }
}

/// Why `HOOKGATE_SECRET_KEY` does not parse; never repeats a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("entry {0} is empty")]
    Empty(usize),
    #[error("entry {0}: a key id is 1 to 32 letters, digits, `-` or `_`")]
    BadId(usize),
    #[error("entry {0}: the key is not base64")]
    NotBase64(usize),
    #[error("entry {0}: a key is 32 bytes (base64 of 32 random bytes, e.g. `openssl rand -base64 32`), not {1}")]
    BadLength(usize, usize),
    #[error("key id `{0}` is given twice")]
    DuplicateId(String),
}

/// Why a stored value does not open (or seal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("sealed with key id `{0}`, which HOOKGATE_SECRET_KEY does not hold")]
    UnknownKey(String),
    #[error("not a sealed value of a form hookgate knows")]
    Malformed,
    #[error("does not open with key `{0}`: altered, or moved from another row or field")]
    Forged(String),
    #[error("cannot be sealed")]
    Seal,
}

/// Which value of which subscription: the associated data of its seal.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub subscription: &'a str,
    pub name: FieldName<'a>,
}

#[derive(Debug, Clone, Copy)]
pub enum FieldName<'a> {
    Secret,
    PreviousSecret,
    /// A header, by its lower-cased name.
    Header(&'a str),
    OAuth2ClientSecret,
    TlsClientKey,
}

impl Field<'_> {
    fn associated_data(&self) -> Vec<u8> {
        let name = match self.name {
            FieldName::Secret => "secret".to_owned(),
            FieldName::PreviousSecret => "previous_secret".to_owned(),
            FieldName::Header(header) => format!("header:{}", header.to_ascii_lowercase()),
            FieldName::OAuth2ClientSecret => "oauth2_client_secret".to_owned(),
            FieldName::TlsClientKey => "tls_client_key".to_owned(),
        };
        format!("hookgate:subscriptions:{}:{name}", self.subscription).into_bytes()
    }
}

impl SecretKeys {
    /// No key: values are written plain and sealed ones do not open.
    pub fn none() -> Self {
        Self::default()
    }

    /// `id:base64key` entries, comma-separated, the one that seals first; a
    /// single entry may leave out its id (it is then `default`).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let entries: Vec<&str> = text.split(',').map(str::trim).collect();
        let mut keys: Vec<Key> = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let n = index + 1;
            if entry.is_empty() {
                return Err(KeyError::Empty(n));
            }
            let (id, encoded) = match entry.split_once(':') {
                Some((id, encoded)) => (id.trim(), encoded.trim()),
                None if entries.len() == 1 => (IMPLIED_KEY_ID, *entry),
                // Two keys without ids would share one: which opens what?
                None => return Err(KeyError::BadId(n)),
            };
            if id.is_empty()
                || id.len() > MAX_KEY_ID_LEN
                || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(KeyError::BadId(n));
            }
            let bytes = decode_key(encoded).ok_or(KeyError::NotBase64(n))?;
            if bytes.len() != KEY_BYTES {
                return Err(KeyError::BadLength(n, bytes.len()));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyError::DuplicateId(id.to_owned()));
            }
            let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
                .map_err(|_| KeyError::BadLength(n, bytes.len()))?;
            keys.push(Key { id: id.to_owned(), cipher });
        }
        Ok(Self { keys: Arc::new(keys) })
    }

    pub fn is_set(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> Option<&str> {
        self.keys.first().map(|k| k.id.as_str())
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// `plain` sealed with the first key; plain itself when no key is set.
    pub fn seal(&self, plain: &str, field: Field<'_>) -> Result<String, SealError> {
        let Some(key) = self.keys.first() else { return Ok(plain.to_owned()) };
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = field.associated_data();
        let sealed = key
            .cipher
            .encrypt(&nonce, Payload { msg: plain.as_bytes(), aad: &aad })
            .map_err(|_| SealError::Seal)?;
        let mut bytes = Vec::with_capacity(NONCE_BYTES + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        Ok(format!("{SEALED_PREFIX}{}:{}", key.id, STANDARD.encode(bytes)))
    }

    /// The plain text of a stored value: opened when sealed, as it is when not.
    pub fn open(&self, stored: &str, field: Field<'_>) -> Result<String, SealError> {
        let Some(rest) = stored.strip_prefix(SEALED_PREFIX) else { return Ok(stored.to_owned()) };
        let (id, encoded) = rest.split_once(':').ok_or(SealError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let bytes = STANDARD.decode(encoded).map_err(|_| SealError::Malformed)?;
        if bytes.len() < NONCE_BYTES {
            return Err(SealError::Malformed);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let aad = field.associated_data();
        let plain = key
            .cipher
            .decrypt(
                chacha20poly1305::XNonce::from_slice(nonce),
                Payload { msg: sealed, aad: &aad },
            )
            .map_err(|_| SealError::Forged(id.to_owned()))?;
        String::from_utf8(plain).map_err(|_| SealError::Forged(id.to_owned()))
    }

    /// Whether a stored value is as `seal` would write it now: sealed with
    /// the first key, or plain when no key is set.
    pub fn is_current(&self, stored: &str) -> bool {
        match (self.current_id(), sealed_key_id(stored)) {
            (Some(current), Some(id)) => current == id,
            (None, None) => true,
            _ => false,
        }
    }
}

/// The key id of a sealed value; `None` for a plain one.
pub fn sealed_key_id(stored: &str) -> Option<&str> {
    stored.strip_prefix(SEALED_PREFIX)?.split_once(':').map(|(id, _)| id)
}

/// Keys are base64 as tools print it: standard or URL-safe, padded or not.
fn decode_key(text: &str) -> Option<Vec<u8>> {
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    fn keys(text: &str) -> SecretKeys {
        SecretKeys::parse(text).expect("valid keys")
    }

    fn secret_of(id: &str) -> Field<'_> {
        Field { subscription: id, name: FieldName::Secret }
    }

    #[test]
    fn a_sealed_value_opens_to_what_was_sealed_and_shows_nothing_of_it() {
        let keys = keys(&format!("a:{KEY_A}"));
        let sealed = keys.seal("whsec_plain", secret_of("sub_1")).expect("seal");
        assert!(sealed.starts_with("enc:v1:a:"), "{sealed}");
        assert!(!sealed.contains("whsec_plain"));
        assert_ne!(
            sealed,
            keys.seal("whsec_plain", secret_of("sub_1")).expect("seal"),
            "a fresh nonce each time"
        );
        assert_eq!(keys.open(&sealed, secret_of("sub_1")).expect("open"), "whsec_plain");
        assert!(keys.is_current(&sealed));
        assert!(!keys.is_current("whsec_plain"), "plain text is to be sealed");
    }

    #[test]
    fn a_value_moved_to_another_row_or_field_does_not_open() {
        let keys = keys(&format!("a:{KEY_A}"));
        let sealed = keys.seal("whsec_plain", secret_of("sub_1")).expect("seal");
        assert_eq!(keys.open(&sealed, secret_of("sub_2")), Err(SealError::Forged("a".into())));
        let header = Field { subscription: "sub_1", name: FieldName::Header("authorization") };
        assert_eq!(keys.open(&sealed, header), Err(SealError::Forged("a".into())));
        let previous = Field { subscription: "sub_1", name: FieldName::PreviousSecret };
        assert!(keys.open(&sealed, previous).is_err());
        // Header names are case-insensitive, and so is their associated data.
        let upper = Field { subscription: "sub_1", name: FieldName::Header("Authorization") };
        let sealed = keys.seal("Bearer x", upper).expect("seal");
        assert_eq!(keys.open(&sealed, header).expect("open"), "Bearer x");
    }

    #[test]
    fn an_altered_value_does_not_open() {
        let keys = keys(&format!("a:{KEY_A}"));
        let sealed = keys.seal("whsec_plain", secret_of("sub_1")).expect("seal");
        let body = sealed.strip_prefix("enc:v1:a:").expect("prefix");
        let mut bytes = STANDARD.decode(body).expect("base64");
        for at in [0, NONCE_BYTES, bytes.len() - 1] {
            bytes[at] ^= 1;
            let altered = format!("enc:v1:a:{}", STANDARD.encode(&bytes));
            assert_eq!(keys.open(&altered, secret_of("sub_1")), Err(SealError::Forged("a".into())));
            bytes[at] ^= 1;
        }
        assert_eq!(keys.open("enc:v1:a:!!", secret_of("sub_1")), Err(SealError::Malformed));
        assert_eq!(keys.open("enc:v1:a", secret_of("sub_1")), Err(SealError::Malformed));
        assert_eq!(keys.open("enc:v1:a:AAAA", secret_of("sub_1")), Err(SealError::Malformed));
    }

    #[test]
    fn rotation_seals_with_the_first_key_and_opens_with_any() {
        let old = keys(&format!("a:{KEY_A}"));
        let sealed_a = old.seal("whsec_a", secret_of("sub_1")).expect("seal");
        let rotated = keys(&format!("b:{KEY_B}, a:{KEY_A}"));
        assert_eq!(rotated.open(&sealed_a, secret_of("sub_1")).expect("open"), "whsec_a");
        assert!(!rotated.is_current(&sealed_a), "to be re-encrypted");
        let sealed_b = rotated.seal("whsec_a", secret_of("sub_1")).expect("seal");
        assert_eq!(sealed_key_id(&sealed_b), Some("b"));
        let only_b = keys(&format!("b:{KEY_B}"));
        assert_eq!(only_b.open(&sealed_b, secret_of("sub_1")).expect("open"), "whsec_a");
        assert_eq!(
            only_b.open(&sealed_a, secret_of("sub_1")),
            Err(SealError::UnknownKey("a".into()))
        );
        // The same id with another key: it does not open, and says so.
        let wrong = keys(&format!("a:{KEY_B}"));
        assert_eq!(wrong.open(&sealed_a, secret_of("sub_1")), Err(SealError::Forged("a".into())));
    }

    #[test]
    fn without_a_key_values_stay_plain_and_sealed_ones_do_not_open() {
        let none = SecretKeys::none();
        assert_eq!(none.seal("whsec_x", secret_of("sub_1")).expect("seal"), "whsec_x");
        assert_eq!(none.open("whsec_x", secret_of("sub_1")).expect("open"), "whsec_x");
        let sealed = keys(KEY_A).seal("whsec_x", secret_of("sub_1")).expect("seal");
        assert_eq!(
            none.open(&sealed, secret_of("sub_1")),
            Err(SealError::UnknownKey("default".into()))
        );
        assert!(none.is_current("whsec_x"));
    }

    #[test]
    fn key_lists_parse_and_errors_never_repeat_a_key() {
        let parsed = keys(&format!(" b:{KEY_B} ,a:{KEY_A}"));
        assert_eq!(parsed.ids().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(parsed.current_id(), Some("b"));
        assert_eq!(keys(KEY_A).current_id(), Some(IMPLIED_KEY_ID));
        let url_safe = URL_SAFE_NO_PAD.encode([0xfbu8; 32]);
        assert!(SecretKeys::parse(&format!("u:{url_safe}")).is_ok());
        assert_eq!(format!("{parsed:?}"), r#"SecretKeys(["b", "a"])"#);

        let short = STANDARD.encode([7u8; 16]);
        for (text, error) in [
            (format!("a:{KEY_A},"), KeyError::Empty(2)),
            (format!("a b:{KEY_A}"), KeyError::BadId(1)),
            (format!(":{KEY_A}"), KeyError::BadId(1)),
            (format!("{KEY_A},{KEY_B}"), KeyError::BadId(1)),
            ("a:not base64!".to_owned(), KeyError::NotBase64(1)),
            (format!("a:{short}"), KeyError::BadLength(1, 16)),
            (format!("a:{KEY_A},a:{KEY_B}"), KeyError::DuplicateId("a".into())),
        ] {
            let got = SecretKeys::parse(&text).expect_err(&text);
            assert_eq!(got, error, "{text}");
            let message = got.to_string();
            assert!(!message.contains(KEY_A) && !message.contains(&short), "{message}");
        }
    }
}
