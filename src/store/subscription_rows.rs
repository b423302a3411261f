//! A subscription row as both backends return it, and the conversions
//! between it and `Subscription`: secrets are sealed on the way in and
//! opened on the way out.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::sealing::{Field, FieldName, SealError, SecretKeys, SEALED_PREFIX};
use super::sql::to_u32;
use super::{Error, Result, SubscriptionChange};
use crate::domain::filter::Filter;
use crate::domain::subscription::{is_secret_header, REDACTED};
use crate::domain::{
    EndpointTls, OAuth2, PreviousSecret, RateLimit, Subscription, SubscriptionId,
    SubscriptionPatch, SubscriptionStatus, TenantId,
};

#[derive(sqlx::FromRow)]
pub(super) struct SubscriptionRow {
    id: String,
    tenant_id: String,
    url: String,
    event_types: Json<Vec<String>>,
    secret: String,
    rate_limit_per_second: Option<i64>,
    rate_limit_burst: Option<i64>,
    max_in_flight: Option<i64>,
    ordered: bool,
    headers: Json<BTreeMap<String, String>>,
    status: String,
    disabled_reason: Option<String>,
    description: Option<String>,
    metadata: Json<BTreeMap<String, String>>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    previous_secrets: Json<Vec<PreviousSecret>>,
    secret_headers: Json<Vec<String>>,
    content_filter: Option<Json<serde_json::Value>>,
    oauth2: Option<Json<OAuth2>>,
    tls: Option<Json<EndpointTls>>,
}

impl SubscriptionRow {
    /// The row with its secrets opened. One that does not open leaves the
    /// subscription `unreadable` rather than failing the read: lists and
    /// dispatcher refreshes go on for every other row, and nothing is
    /// signed or sent with a wrong value.
    pub(super) fn into_change(self, keys: &SecretKeys) -> Result<SubscriptionChange> {
        let rate_limit = match (self.rate_limit_per_second, self.rate_limit_burst) {
            (Some(per_second), Some(burst)) => Some(RateLimit {
                per_second: to_u32(per_second, "rate_limit_per_second")?,
                burst: to_u32(burst, "rate_limit_burst")?,
            }),
            _ => None,
        };
        let status = SubscriptionStatus::parse(&self.status)
            .ok_or_else(|| Error::Corrupt(format!("status = {}", self.status)))?;
        let mut unreadable: Option<SealError> = None;
        let id = self.id.as_str();
        let secret = keys
            .open(&self.secret, Field { subscription: id, name: FieldName::Secret })
            .unwrap_or_else(|e| {
                unreadable.get_or_insert(e);
                String::new()
            });
        let previous_secrets = self
            .previous_secrets
            .0
            .into_iter()
            .filter_map(|p| {
                let field = Field { subscription: id, name: FieldName::PreviousSecret };
                match keys.open(&p.secret, field) {
                    Ok(secret) => Some(PreviousSecret { secret, ..p }),
                    Err(e) => {
                        unreadable.get_or_insert(e);
                        None
                    }
                }
            })
            .collect();
        let headers = open_headers(keys, id, self.headers.0).unwrap_or_else(|(e, redacted)| {
            unreadable.get_or_insert(e);
            redacted
        });
        let oauth2 = self.oauth2.map(|Json(o)| {
            let field = Field { subscription: id, name: FieldName::OAuth2ClientSecret };
            let client_secret = keys.open(&o.client_secret, field).unwrap_or_else(|e| {
                unreadable.get_or_insert(e);
                REDACTED.to_owned()
            });
            OAuth2 { client_secret, ..o }
        });
        let tls = self.tls.map(|Json(tls)| {
            let field = Field { subscription: id, name: FieldName::TlsClientKey };
            let client_key = tls.client_key.as_deref().map(|key| {
                keys.open(key, field).unwrap_or_else(|e| {
                    unreadable.get_or_insert(e);
                    REDACTED.to_owned()
                })
            });
            EndpointTls { client_key, ..tls }
        });
        let filter = self.content_filter.map(|Json(json)| Arc::new(Filter::stored(json, id)));
        Ok(SubscriptionChange {
            version: self.version,
            deleted: self.deleted_at.is_some(),
            subscription: Subscription {
                id: SubscriptionId::from_trusted(self.id),
                tenant_id: TenantId::from_trusted(self.tenant_id),
                url: self.url,
                event_types: self.event_types.0,
                filter,
                secret,
                previous_secrets,
                rate_limit,
                max_in_flight: self
                    .max_in_flight
                    .map(|v| to_u32(v, "max_in_flight"))
                    .transpose()?,
                ordered: self.ordered,
                headers,
                secret_headers: self.secret_headers.0,
                status,
                disabled_reason: self.disabled_reason,
                description: self.description,
                metadata: self.metadata.0,
                created_at: self.created_at,
                updated_at: self.updated_at,
                version: self.version,
                unreadable: unreadable.map(|e| format!("a secret {e}")),
                oauth2,
                tls,
            },
        })
    }
}

fn secret_error(subscription: &str) -> impl Fn(SealError) -> Error + '_ {
    move |source| Error::Secret { subscription: subscription.to_owned(), source }
}

/// Header values as stored opened; on failure, the first error and the
/// headers with the values that did not open `REDACTED`. Every sealed
/// value opens, whatever the header: whether a header is secret may have
/// changed since it was written.
fn open_headers(
    keys: &SecretKeys,
    id: &str,
    headers: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, (SealError, BTreeMap<String, String>)> {
    let mut error = None;
    let opened = headers
        .into_iter()
        .map(|(name, value)| {
            if !value.starts_with(SEALED_PREFIX) {
                return (name, value);
            }
            let field = Field { subscription: id, name: FieldName::Header(&name) };
            let value = keys.open(&value, field).unwrap_or_else(|e| {
                error.get_or_insert(e);
                REDACTED.to_owned()
            });
            (name, value)
        })
        .collect();
    match error {
        None => Ok(opened),
        Some(e) => Err((e, opened)),
    }
}

/// A subscription's secrets as they are written: sealed with the first key
/// (plain when none is set), secret headers only.
pub(super) struct SealedSecrets {
    pub secret: String,
    pub previous_secrets: Json<Vec<PreviousSecret>>,
    pub headers: Json<BTreeMap<String, String>>,
    pub oauth2: Option<Json<OAuth2>>,
    pub tls: Option<Json<EndpointTls>>,
}

impl SealedSecrets {
    pub(super) fn of(keys: &SecretKeys, s: &Subscription) -> Result<Self> {
        let id = s.id.as_str();
        if s.unreadable.is_some() {
            // Its empty secret and placeholders must not replace what is stored.
            return Err(Error::Unreadable(id.to_owned()));
        }
        Ok(Self {
            secret: seal_secret(keys, id, &s.secret)?,
            previous_secrets: Json(seal_previous(keys, id, &s.previous_secrets)?),
            headers: Json(seal_headers(keys, id, &s.headers, &s.secret_headers)?),
            oauth2: seal_oauth2(keys, id, s.oauth2.as_ref())?,
            tls: seal_tls(keys, id, s.tls.as_ref())?,
        })
    }
}

pub(super) fn seal_tls(
    keys: &SecretKeys,
    id: &str,
    tls: Option<&EndpointTls>,
) -> Result<Option<Json<EndpointTls>>> {
    let Some(tls) = tls else { return Ok(None) };
    let field = Field { subscription: id, name: FieldName::TlsClientKey };
    let client_key = match &tls.client_key {
        Some(key) => Some(keys.seal(key, field).map_err(secret_error(id))?),
        None => None,
    };
    Ok(Some(Json(EndpointTls { client_key, ..tls.clone() })))
}

pub(super) fn seal_oauth2(
    keys: &SecretKeys,
    id: &str,
    oauth2: Option<&OAuth2>,
) -> Result<Option<Json<OAuth2>>> {
    let Some(oauth2) = oauth2 else { return Ok(None) };
    let field = Field { subscription: id, name: FieldName::OAuth2ClientSecret };
    let client_secret = keys.seal(&oauth2.client_secret, field).map_err(secret_error(id))?;
    Ok(Some(Json(OAuth2 { client_secret, ..oauth2.clone() })))
}

pub(super) fn seal_secret(keys: &SecretKeys, id: &str, secret: &str) -> Result<String> {
    keys.seal(secret, Field { subscription: id, name: FieldName::Secret }).map_err(secret_error(id))
}

pub(super) fn seal_previous(
    keys: &SecretKeys,
    id: &str,
    previous: &[PreviousSecret],
) -> Result<Vec<PreviousSecret>> {
    previous
        .iter()
        .map(|p| {
            let field = Field { subscription: id, name: FieldName::PreviousSecret };
            let secret = keys.seal(&p.secret, field).map_err(secret_error(id))?;
            Ok(PreviousSecret { secret, expires_at: p.expires_at })
        })
        .collect()
}

pub(super) fn seal_headers(
    keys: &SecretKeys,
    id: &str,
    headers: &BTreeMap<String, String>,
    marked: &[String],
) -> Result<BTreeMap<String, String>> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = if is_secret_header(name, marked) {
                let field = Field { subscription: id, name: FieldName::Header(name) };
                keys.seal(value, field).map_err(secret_error(id))?
            } else {
                value.clone()
            };
            Ok((name.clone(), value))
        })
        .collect()
}

/// The stored headers of a row a patch is about to change, read in its
/// transaction.
#[derive(sqlx::FromRow)]
pub(super) struct StoredHeaders {
    headers: Json<BTreeMap<String, String>>,
    secret_headers: Json<Vec<String>>,
    version: i64,
}

/// What a patch of `headers` or `secret_headers` writes to both columns.
pub(super) enum PatchedHeaders {
    Write {
        headers: Json<BTreeMap<String, String>>,
        secret_headers: Json<Vec<String>>,
    },
    /// A `REDACTED` value names a header with no stored secret value (gone
    /// since the request read it): the row is at `current`.
    Stale {
        current: i64,
    },
}

impl StoredHeaders {
    pub(super) fn version(&self) -> i64 {
        self.version
    }

    /// Both columns are written whenever either changes, so that the
    /// stored values are always sealed as the current `secret_headers`
    /// say; `REDACTED` keeps a stored value. Runs after the version row is
    /// taken, so nothing writes the row in between.
    pub(super) fn patched(
        self,
        keys: &SecretKeys,
        id: &str,
        patch: &SubscriptionPatch,
    ) -> Result<PatchedHeaders> {
        let marked = patch.secret_headers.clone().unwrap_or(self.secret_headers.0);
        let stored = || {
            open_headers(keys, id, self.headers.0.clone())
                .map_err(|(source, _)| Error::Secret { subscription: id.to_owned(), source })
        };
        let headers = match &patch.headers {
            None => stored()?,
            Some(wanted) => {
                let mut headers = BTreeMap::new();
                let mut opened = None;
                for (name, value) in wanted {
                    let value = if value == REDACTED && is_secret_header(name, &marked) {
                        if opened.is_none() {
                            opened = Some(stored()?);
                        }
                        let kept =
                            opened.iter().flatten().find(|(n, _)| n.eq_ignore_ascii_case(name));
                        match kept {
                            Some((_, value)) => value.clone(),
                            None => return Ok(PatchedHeaders::Stale { current: self.version }),
                        }
                    } else {
                        value.clone()
                    };
                    headers.insert(name.clone(), value);
                }
                headers
            }
        };
        Ok(PatchedHeaders::Write {
            headers: Json(seal_headers(keys, id, &headers, &marked)?),
            secret_headers: Json(marked),
        })
    }
}
