//! Field rules of subscriptions, shared by create and update: the whole
//! candidate subscription is checked, so both answer the same errors.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::problem::FieldError;
use crate::config::{EgressRules, Quotas};
use crate::delivery::egress;
use crate::delivery::tls::TlsMaterial;
use crate::domain::filter::Filter;
use crate::domain::{
    subscription, EndpointTls, EventTypePattern, OAuth2, SignatureScheme, SigningKey, Subscription,
};
use crate::store::sealing::SEALED_PREFIX;

const MAX_URL_LEN: usize = 2048;
const MAX_EVENT_TYPES: usize = 100;
const MAX_HEADERS: usize = 20;
const MAX_HEADER_NAME_LEN: usize = 256;
pub const MAX_TEXT_LEN: usize = 1024;
/// Metadata as Stripe bounds it: 50 keys of up to 40 characters, values of
/// up to 500.
const MAX_METADATA: usize = 50;
const MAX_METADATA_KEY_CHARS: usize = 40;
const MAX_METADATA_VALUE_CHARS: usize = 500;
const MAX_RATE: u32 = 1_000_000;

/// What a subscription may hold on this server.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// `HOOKGATE_MAX_IN_FLIGHT_LIMIT`.
    pub max_in_flight: u32,
    /// `HOOKGATE_MAX_HEADER_BYTES`, `HOOKGATE_MAX_METADATA_BYTES`.
    pub header_bytes: u32,
    pub metadata_bytes: u32,
}

impl Rules {
    pub fn new(max_in_flight: u32, quotas: &Quotas) -> Self {
        Self {
            max_in_flight,
            header_bytes: quotas.header_bytes,
            metadata_bytes: quotas.metadata_bytes,
        }
    }
}

/// The key a create or rotation asks for: `secret` parsed, its prefix
/// agreeing with `scheme`; or one generated for `scheme`, by default
/// `fallback`'s.
pub fn signing_key(
    secret: Option<&str>,
    scheme: Option<SignatureScheme>,
    fallback: SignatureScheme,
) -> Result<SigningKey, FieldError> {
    let Some(secret) = secret else {
        return Ok(SigningKey::generate(scheme.unwrap_or(fallback)));
    };
    let key = SigningKey::parse(secret).map_err(|e| FieldError::new("secret", e.to_string()))?;
    match scheme {
        Some(scheme) if scheme != key.scheme() => Err(FieldError::new(
            "signature_scheme",
            format!(
                "the secret is a {} key: hmac-sha256 takes a `whsec_` secret, ed25519 a `whsk_` secret key",
                key.scheme().as_str()
            ),
        )),
        _ => Ok(key),
    }
}

/// A content filter, parsed; `None` (with the error, naming where in the
/// filter) when it is not one or over the bounds.
pub fn filter(json: serde_json::Value, errors: &mut Vec<FieldError>) -> Option<Arc<Filter>> {
    match Filter::parse(json) {
        Ok(filter) => Some(Arc::new(filter)),
        Err(e) => {
            errors.push(FieldError::new(format!("filter{}", e.at), e.message));
            None
        }
    }
}

/// `egress`: the rules the URL is checked against (`None`: it is not new).
pub fn subscription(
    s: &Subscription,
    rules: &Rules,
    egress: Option<&EgressRules>,
) -> Vec<FieldError> {
    let max_in_flight_limit = rules.max_in_flight;
    let mut errors = Vec::new();
    match egress {
        Some(egress) => url(&s.url, egress, &mut errors),
        None => url_form(&s.url, &mut errors),
    }
    event_types(&s.event_types, &mut errors);
    if let Some(limit) = s.rate_limit {
        for (field, value) in [("per_second", limit.per_second), ("burst", limit.burst)] {
            if !(1..=MAX_RATE).contains(&value) {
                errors.push(FieldError::new(
                    format!("rate_limit/{field}"),
                    format!("from 1 to {MAX_RATE}"),
                ));
            }
        }
    }
    if let Some(n) = s.max_in_flight {
        if !(1..=max_in_flight_limit).contains(&n) {
            errors.push(FieldError::new(
                "max_in_flight",
                format!("from 1 to {max_in_flight_limit} (this server's limit)"),
            ));
        }
    }
    headers(&s.headers, rules.header_bytes, &mut errors);
    secret_headers(&s.secret_headers, &mut errors);
    text("description", s.description.as_deref(), &mut errors);
    metadata(&s.metadata, rules.metadata_bytes, &mut errors);
    errors
}

/// A destination URL: well formed, and allowed by the egress rules as far as
/// it says by itself (its port, its address when literal; names are checked
/// when resolved).
pub fn url(raw: &str, rules: &EgressRules, errors: &mut Vec<FieldError>) {
    url_at("url", raw, rules, errors);
}

fn url_at(field: &str, raw: &str, rules: &EgressRules, errors: &mut Vec<FieldError>) {
    let before = errors.len();
    url_form_at(field, raw, errors);
    if errors.len() == before && url::Url::parse(raw).is_ok_and(|u| !rules.allows_url(&u)) {
        errors.push(FieldError::new(field, egress::REFUSED));
    }
}

fn url_form(raw: &str, errors: &mut Vec<FieldError>) {
    url_form_at("url", raw, errors);
}

fn url_form_at(field: &str, raw: &str, errors: &mut Vec<FieldError>) {
    let problem = if raw.len() > MAX_URL_LEN {
        Some(format!("at most {MAX_URL_LEN} characters"))
    } else if has_nul(raw) {
        Some(NUL_MESSAGE.to_owned())
    } else {
        match url::Url::parse(raw) {
            Err(e) => Some(format!("not a URL: {e}")),
            Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                Some("the scheme must be http or https".to_owned())
            }
            Ok(url) if url.host_str().is_none_or(str::is_empty) => {
                Some("the URL has no host".to_owned())
            }
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                Some("credentials do not go in the URL: use `headers`".to_owned())
            }
            Ok(_) => None,
        }
    };
    if let Some(message) = problem {
        errors.push(FieldError::new(field, message));
    }
}

/// OAuth 2.0 client credentials being written: the token URL obeys the
/// egress rules as the webhook URL does; the secret is the value itself.
pub fn oauth2(o: &OAuth2, rules: &EgressRules, errors: &mut Vec<FieldError>) {
    url_at("oauth2/token_url", &o.token_url, rules, errors);
    for (field, value) in [("client_id", &o.client_id), ("client_secret", &o.client_secret)] {
        if value.is_empty() {
            errors.push(FieldError::new(format!("oauth2/{field}"), "must not be empty"));
        }
    }
    if o.client_secret == subscription::REDACTED {
        errors.push(FieldError::new(
            "oauth2/client_secret",
            "`********` is how answers show it: send the client secret itself",
        ));
    }
    text("oauth2/client_id", Some(&o.client_id), errors);
    text("oauth2/client_secret", Some(&o.client_secret), errors);
    text("oauth2/scope", o.scope.as_deref(), errors);
    text("oauth2/audience", o.audience.as_deref(), errors);
}

/// TLS settings being written: they load (PEM that parses, a key that is
/// the certificate's), and the URL they are for is https.
pub fn tls(tls: &EndpointTls, url: &str, errors: &mut Vec<FieldError>) {
    if tls.client_key.as_deref() == Some(subscription::REDACTED) {
        errors.push(FieldError::new(
            "tls/client_key",
            "`********` is how answers show it: send the key itself",
        ));
        return;
    }
    if !url.starts_with("https://") {
        errors.push(FieldError::new("tls", "TLS settings are for an https URL"));
    }
    match TlsMaterial::parse(tls).and_then(|material| material.check()) {
        Ok(()) => {}
        Err(e) => errors.push(FieldError::new(format!("tls/{}", e.field), e.message)),
    }
}

/// A subscription sends its own `Authorization` header or OAuth2 tokens in
/// it, not both.
pub fn one_authorization(
    oauth2: Option<&OAuth2>,
    headers: &BTreeMap<String, String>,
    errors: &mut Vec<FieldError>,
) {
    if oauth2.is_some() && headers.keys().any(|name| name.eq_ignore_ascii_case("authorization")) {
        errors.push(FieldError::new(
            "oauth2",
            "the subscription sends its own Authorization header: remove it to send OAuth2 tokens",
        ));
    }
}

fn event_types(types: &[String], errors: &mut Vec<FieldError>) {
    if types.is_empty() || types.len() > MAX_EVENT_TYPES {
        errors.push(FieldError::new(
            "event_types",
            format!("list 1 to {MAX_EVENT_TYPES} event types"),
        ));
    }
    for (i, pattern) in types.iter().enumerate() {
        if EventTypePattern::parse(pattern).is_none() {
            errors.push(FieldError::new(
                format!("event_types/{i}"),
                "not an event type name, `prefix.*` or `*`",
            ));
        }
    }
}

/// Names and values together, as they weigh on every webhook.
fn bytes_of(map: &BTreeMap<String, String>) -> usize {
    map.iter().map(|(k, v)| k.len() + v.len()).sum()
}

fn headers(headers: &BTreeMap<String, String>, max_bytes: u32, errors: &mut Vec<FieldError>) {
    if headers.len() > MAX_HEADERS {
        errors.push(FieldError::new("headers", format!("at most {MAX_HEADERS} headers")));
    } else if bytes_of(headers) > max_bytes as usize {
        errors.push(FieldError::new(
            "headers",
            format!("at most {max_bytes} bytes of names and values together (this server's quota)"),
        ));
    }
    for (name, value) in headers {
        let field = format!("headers/{}", pointer_escape(name));
        if name.len() > MAX_HEADER_NAME_LEN {
            errors.push(FieldError::new(
                field,
                format!("a header name has at most {MAX_HEADER_NAME_LEN} bytes"),
            ));
        } else if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.push(FieldError::new(field, "not a valid header name"));
        } else if !subscription::is_custom_header_allowed(name) {
            errors.push(FieldError::new(
                field,
                "hookgate sets this header, or it is a hop-by-hop or proxy header",
            ));
        } else if value.len() > MAX_TEXT_LEN || http::HeaderValue::from_str(value).is_err() {
            errors.push(FieldError::new(field, "not a valid header value"));
        } else if value.starts_with(SEALED_PREFIX) {
            // Stored values with it are taken for encrypted ones.
            errors.push(FieldError::new(field, "a header value must not start with `enc:v1:`"));
        }
    }
}

fn secret_headers(names: &[String], errors: &mut Vec<FieldError>) {
    if names.len() > MAX_HEADERS {
        errors.push(FieldError::new("secret_headers", format!("at most {MAX_HEADERS} names")));
    }
    for (i, name) in names.iter().enumerate() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.push(FieldError::new(format!("secret_headers/{i}"), "not a valid header name"));
        }
    }
}

fn metadata(metadata: &BTreeMap<String, String>, max_bytes: u32, errors: &mut Vec<FieldError>) {
    if metadata.len() > MAX_METADATA {
        errors.push(FieldError::new("metadata", format!("at most {MAX_METADATA} entries")));
    } else if bytes_of(metadata) > max_bytes as usize {
        errors.push(FieldError::new(
            "metadata",
            format!("at most {max_bytes} bytes of keys and values together (this server's quota)"),
        ));
    }
    for (key, value) in metadata {
        let key_chars = key.chars().count();
        if key_chars == 0
            || key_chars > MAX_METADATA_KEY_CHARS
            || value.chars().count() > MAX_METADATA_VALUE_CHARS
            || has_nul(key)
            || has_nul(value)
        {
            errors.push(FieldError::new(
                format!("metadata/{}", pointer_escape(key)),
                format!(
                    "keys have 1 to {MAX_METADATA_KEY_CHARS} characters and values at most \
                     {MAX_METADATA_VALUE_CHARS}, without NUL"
                ),
            ));
        }
    }
}

pub fn text(field: &str, value: Option<&str>, errors: &mut Vec<FieldError>) {
    if value.is_some_and(|v| v.len() > MAX_TEXT_LEN) {
        errors.push(FieldError::new(field, format!("at most {MAX_TEXT_LEN} bytes")));
    } else if value.is_some_and(has_nul) {
        errors.push(FieldError::new(field, NUL_MESSAGE));
    }
}

pub const NUL_MESSAGE: &str = "must not contain NUL characters";

/// PostgreSQL stores no NUL in text (nor `\u0000` in JSON).
pub fn has_nul(value: &str) -> bool {
    value.contains('\0')
}

/// Map keys inside a field path, as JSON Pointer escapes them.
pub fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}
