//! `hookgate secrets re-encrypt` in the store: every subscription's secrets
//! sealed anew with the first key, in batches, while the service runs. One
//! SQL body for both backends (see `sql.rs`).
//!
//! A rewrite keeps the row's version: the plain text does not change, so
//! dispatcher copies stay right and clients' `ETag`s stay valid. It applies
//! only while the row is at the version it read; a write in between (each
//! bumps the version) makes it read the row again, so no update is lost.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::types::Json;

use super::sealing::{Field, FieldName, SealError, SecretKeys, SEALED_PREFIX};
use super::sql::SqlStore;
use super::subscription_rows::{seal_headers, seal_oauth2, seal_previous, seal_secret, seal_tls};
use super::Result;
use crate::domain::subscription::is_secret_header;
use crate::domain::{EndpointTls, OAuth2, PreviousSecret};

/// How often a row that changes under the rewrite is read again.
const TRIES: usize = 3;

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResealBatch {
    /// The last id read: the next batch starts after it; `None`: no rows.
    pub last_id: Option<String>,
    pub scanned: u64,
    pub rewritten: u64,
    /// Already sealed as they would be now.
    pub current: u64,
    /// Rows whose secrets do not open with the configured keys, with why.
    pub unreadable: Vec<(String, String)>,
    /// Rows that changed under every try.
    pub busy: Vec<String>,
}

#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Seals anew the secrets of up to `limit` subscriptions (deleted ones
    /// too: their rows still hold secrets) with an id above `after`.
    async fn reseal_subscriptions(&self, after: Option<&str>, limit: i64) -> Result<ResealBatch>;
}

const SECRET_COLUMNS: &str =
    "id, secret, previous_secrets, headers, secret_headers, oauth2, tls, version";

#[derive(sqlx::FromRow)]
struct SecretsRow {
    id: String,
    secret: String,
    previous_secrets: Json<Vec<PreviousSecret>>,
    headers: Json<BTreeMap<String, String>>,
    secret_headers: Json<Vec<String>>,
    oauth2: Option<Json<OAuth2>>,
    tls: Option<Json<EndpointTls>>,
    version: i64,
}

/// What to do with one row.
enum Reseal {
    Current,
    Rewrite(Box<Resealed>),
    Unreadable(SealError),
}

/// A row's secret columns, sealed anew.
struct Resealed {
    secret: String,
    previous_secrets: Json<Vec<PreviousSecret>>,
    headers: Json<BTreeMap<String, String>>,
    oauth2: Option<Json<OAuth2>>,
    tls: Option<Json<EndpointTls>>,
}

impl SecretsRow {
    fn is_current(&self, keys: &SecretKeys) -> bool {
        keys.is_current(&self.secret)
            && self.previous_secrets.0.iter().all(|p| keys.is_current(&p.secret))
            && self.headers.0.iter().all(|(name, value)| {
                if is_secret_header(name, &self.secret_headers.0) {
                    keys.is_current(value)
                } else {
                    !value.starts_with(SEALED_PREFIX)
                }
            })
            && self.oauth2.as_ref().is_none_or(|o| keys.is_current(&o.client_secret))
            && self
                .tls
                .as_ref()
                .and_then(|t| t.client_key.as_deref())
                .is_none_or(|key| keys.is_current(key))
    }

    fn reseal(&self, keys: &SecretKeys) -> Reseal {
        if self.is_current(keys) {
            return Reseal::Current;
        }
        match self.rewrite(keys) {
            Ok(rewrite) => rewrite,
            Err(super::Error::Secret { source, .. }) => Reseal::Unreadable(source),
            Err(_) => Reseal::Unreadable(SealError::Seal),
        }
    }

    fn rewrite(&self, keys: &SecretKeys) -> Result<Reseal> {
        let id = self.id.as_str();
        let open = |value: &str, name| {
            keys.open(value, Field { subscription: id, name })
                .map_err(|source| super::Error::Secret { subscription: id.to_owned(), source })
        };
        let secret = open(&self.secret, FieldName::Secret)?;
        let previous = self
            .previous_secrets
            .0
            .iter()
            .map(|p| {
                let secret = open(&p.secret, FieldName::PreviousSecret)?;
                Ok(PreviousSecret { secret, expires_at: p.expires_at })
            })
            .collect::<Result<Vec<_>>>()?;
        let headers = self
            .headers
            .0
            .iter()
            .map(|(name, value)| Ok((name.clone(), open(value, FieldName::Header(name))?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        let oauth2 = match &self.oauth2 {
            None => None,
            Some(Json(o)) => {
                let client_secret = open(&o.client_secret, FieldName::OAuth2ClientSecret)?;
                Some(OAuth2 { client_secret, ..o.clone() })
            }
        };
        let tls = match &self.tls {
            None => None,
            Some(Json(t)) => {
                let client_key = match &t.client_key {
                    Some(key) => Some(open(key, FieldName::TlsClientKey)?),
                    None => None,
                };
                Some(EndpointTls { client_key, ..t.clone() })
            }
        };
        Ok(Reseal::Rewrite(Box::new(Resealed {
            secret: seal_secret(keys, id, &secret)?,
            previous_secrets: Json(seal_previous(keys, id, &previous)?),
            headers: Json(seal_headers(keys, id, &headers, &self.secret_headers.0)?),
            oauth2: seal_oauth2(keys, id, oauth2.as_ref())?,
            tls: seal_tls(keys, id, tls.as_ref())?,
        })))
    }
}

/// `SecretStore` on one backend (see `sql.rs`).
macro_rules! secret_store_on {
    ($db:ty) => {
        #[async_trait]
        impl SecretStore for SqlStore<$db> {
            async fn reseal_subscriptions(
                &self,
                after: Option<&str>,
                limit: i64,
            ) -> Result<ResealBatch> {
                let sql = format!(
                    "SELECT {SECRET_COLUMNS} FROM subscriptions WHERE ($1 IS NULL OR id > $1) \
                     ORDER BY id LIMIT $2"
                );
                let rows: Vec<SecretsRow> =
                    sqlx::query_as(&sql).bind(after).bind(limit).fetch_all(&self.pool).await?;
                let mut batch = ResealBatch {
                    last_id: rows.last().map(|r| r.id.clone()),
                    scanned: rows.len() as u64,
                    ..Default::default()
                };
                let one = format!("SELECT {SECRET_COLUMNS} FROM subscriptions WHERE id = $1");
                for first in rows {
                    let id = first.id.clone();
                    let mut row = Some(first);
                    let mut tries = 0;
                    while let Some(current) = row.take() {
                        tries += 1;
                        let resealed = match current.reseal(&self.keys) {
                            Reseal::Current => {
                                batch.current += 1;
                                break;
                            }
                            Reseal::Unreadable(error) => {
                                batch.unreadable.push((id.clone(), error.to_string()));
                                break;
                            }
                            Reseal::Rewrite(resealed) => resealed,
                        };
                        let done = sqlx::query(
                            "UPDATE subscriptions SET secret = $1, previous_secrets = $2, \
                             headers = $3, oauth2 = $4, tls = $5 WHERE id = $6 AND version = $7",
                        )
                        .bind(&resealed.secret)
                        .bind(&resealed.previous_secrets)
                        .bind(&resealed.headers)
                        .bind(&resealed.oauth2)
                        .bind(&resealed.tls)
                        .bind(&id)
                        .bind(current.version)
                        .execute(&self.pool)
                        .await?;
                        if done.rows_affected() > 0 {
                            batch.rewritten += 1;
                            break;
                        }
                        if tries >= TRIES {
                            batch.busy.push(id.clone());
                            break;
                        }
                        // Written since it was read: read it again.
                        row = sqlx::query_as(&one).bind(&id).fetch_optional(&self.pool).await?;
                    }
                }
                Ok(batch)
            }
        }
    };
}

secret_store_on!(sqlx::Postgres);
secret_store_on!(sqlx::Sqlite);
