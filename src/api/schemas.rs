//! The OpenAPI schemas of the domain types the API shows as they are
//! (`RateLimit`, `SubscriptionStatus`, `RecordHeader`), so that `domain`
//! stays free of the documentation framework. Each mirror below is matched
//! against its type field by field at compile time: a field added there
//! does not compile here until its schema says it.

use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::domain::{
    EndpointTls, OAuth2, RateLimit, RecordHeader, SignatureScheme, SubscriptionStatus,
};

/// Deliveries per second, with bursts up to `burst`; absent: unlimited.
// Only its schema is used.
#[allow(dead_code)]
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct RateLimitSchema {
    #[schema(minimum = 1)]
    per_second: u32,
    #[schema(minimum = 1)]
    burst: u32,
}

#[allow(dead_code)]
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
enum SubscriptionStatusSchema {
    Active,
    Paused,
    Disabled,
    Suspended,
}

/// How webhooks are signed: `hmac-sha256` (`v1`, a shared `whsec_`
/// secret) or `ed25519` (`v1a`; receivers verify with the `whpk_` public key).
#[allow(dead_code)]
#[derive(ToSchema)]
enum SignatureSchemeSchema {
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    #[serde(rename = "ed25519")]
    Ed25519,
}

/// OAuth 2.0 client credentials for the endpoint (RFC 6749 §4.4): hookgate
/// asks `token_url` for a token (HTTP Basic with the client id and secret,
/// `grant_type=client_credentials`, and `scope` and `audience` when set),
/// keeps it until shortly before it expires (and fetches a new one once
/// when the endpoint answers 401), and sends it as `Authorization: Bearer`.
/// The token URL obeys the egress rules as the webhook URL does.
#[allow(dead_code)]
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct OAuth2Schema {
    #[schema(example = "https://auth.example.com/oauth/token", max_length = 2048)]
    token_url: String,
    #[schema(max_length = 1024)]
    client_id: String,
    /// Write-only: answers show `********`. Encrypted at rest when the
    /// server has a secret key.
    #[schema(max_length = 1024)]
    client_secret: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    audience: Option<String>,
}

/// TLS to the endpoint (its URL is https): a client certificate (PEM, the
/// chain from the leaf) and its key (PEM: PKCS #8, PKCS #1 or SEC1;
/// write-only, answers show `********`, encrypted at rest) for mutual TLS,
/// and CA certificates (PEM) trusted for this endpoint besides the system's.
#[allow(dead_code)]
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct EndpointTlsSchema {
    #[serde(default)]
    client_certificate: Option<String>,
    #[serde(default)]
    client_key: Option<String>,
    #[serde(default)]
    ca_certificates: Option<String>,
}

/// A Kafka record header as kept: text when it is text PostgreSQL can hold,
/// base64 otherwise.
#[allow(dead_code)]
#[derive(ToSchema)]
struct RecordHeaderSchema {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
}

// The field-by-field match: exhaustive patterns, so that each mirror names
// every field (and variant) of its type.
const _: fn(RateLimit) -> RateLimitSchema =
    |RateLimit { per_second, burst }| RateLimitSchema { per_second, burst };
const _: fn(RecordHeader) -> RecordHeaderSchema =
    |RecordHeader { name, value, value_base64 }| RecordHeaderSchema { name, value, value_base64 };
const _: fn(OAuth2) -> OAuth2Schema =
    |OAuth2 { token_url, client_id, client_secret, scope, audience }| OAuth2Schema {
        token_url,
        client_id,
        client_secret,
        scope,
        audience,
    };
const _: fn(EndpointTls) -> EndpointTlsSchema =
    |EndpointTls { client_certificate, client_key, ca_certificates }| EndpointTlsSchema {
        client_certificate,
        client_key,
        ca_certificates,
    };
const _: fn(SignatureScheme) -> SignatureSchemeSchema = |scheme| match scheme {
    SignatureScheme::HmacSha256 => SignatureSchemeSchema::HmacSha256,
    SignatureScheme::Ed25519 => SignatureSchemeSchema::Ed25519,
};
const _: fn(SubscriptionStatus) -> SubscriptionStatusSchema = |status| match status {
    SubscriptionStatus::Active => SubscriptionStatusSchema::Active,
    SubscriptionStatus::Paused => SubscriptionStatusSchema::Paused,
    SubscriptionStatus::Disabled => SubscriptionStatusSchema::Disabled,
    SubscriptionStatus::Suspended => SubscriptionStatusSchema::Suspended,
};

/// Documents `$domain` with the schema of `$mirror`, under the domain
/// type's own name.
macro_rules! schema_of {
    ($domain:ty, $mirror:ty) => {
        impl PartialSchema for $domain {
            fn schema() -> RefOr<Schema> {
                <$mirror as PartialSchema>::schema()
            }
        }

        impl ToSchema for $domain {}
    };
}

schema_of!(RateLimit, RateLimitSchema);
schema_of!(SubscriptionStatus, SubscriptionStatusSchema);
schema_of!(RecordHeader, RecordHeaderSchema);
schema_of!(SignatureScheme, SignatureSchemeSchema);
schema_of!(OAuth2, OAuth2Schema);
schema_of!(EndpointTls, EndpointTlsSchema);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_types_keep_their_names_in_the_document() {
        assert_eq!(RateLimit::name(), "RateLimit");
        assert_eq!(SubscriptionStatus::name(), "SubscriptionStatus");
        assert_eq!(RecordHeader::name(), "RecordHeader");
        assert_eq!(SignatureScheme::name(), "SignatureScheme");
        assert_eq!(OAuth2::name(), "OAuth2");
        assert_eq!(EndpointTls::name(), "EndpointTls");
    }
}
