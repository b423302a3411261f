//! `Idempotency-Key` records per caller: claimed first (the primary key
//! decides which of concurrent requests publishes), then completed with
//! the answer that the key replays from then on.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::sql::SqlStore;
use super::{Error, Result};

/// The stored state of an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub request_hash: String,
    /// The saved answer; `None` while the first request is still at work.
    pub response: Option<(u16, String)>,
    pub created_at: DateTime<Utc>,
}

#[async_trait]
pub trait Idempotency: Send + Sync {
    /// Claims `key` for this request: true when it is ours to do (a new key,
    /// or one whose earlier claim is `in_progress` since before
    /// `stale_before`, its holder presumably dead); false when it exists.
    async fn idempotency_claim(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool>;

    async fn idempotency_get(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>>;

    /// Saves the answer the key replays from now on.
    async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<()>;

    /// Forgets a claim whose request failed, so that a retry can run.
    async fn idempotency_release(&self, scope: &str, key: &str) -> Result<()>;

    /// Deletes records created before `before`; answers how many.
    async fn purge_idempotency(&self, before: DateTime<Utc>) -> Result<u64>;
}

#[derive(sqlx::FromRow)]
struct IdempotencyRow {
    request_hash: String,
    status: String,
    response_status: Option<i64>,
    response_body: Option<String>,
    created_at: DateTime<Utc>,
}

impl IdempotencyRow {
    fn into_record(self) -> Result<IdempotencyRecord> {
        let response = match (self.status.as_str(), self.response_status, self.response_body) {
            ("done", Some(status), Some(body)) => Some((
                u16::try_from(status)
                    .map_err(|_| Error::Corrupt(format!("response_status = {status}")))?,
                body,
            )),
            ("in_progress", _, _) => None,
            (other, _, _) => return Err(Error::Corrupt(format!("idempotency status = {other}"))),
        };
        Ok(IdempotencyRecord {
            request_hash: self.request_hash,
            response,
            created_at: self.created_at,
        })
    }
}

/// `Idempotency` on one backend (see `sql.rs`).
macro_rules! idempotency_on {
    ($db:ty) => {
        #[async_trait]
        impl Idempotency for SqlStore<$db> {
            async fn idempotency_claim(
                &self,
                scope: &str,
                key: &str,
                request_hash: &str,
                now: DateTime<Utc>,
                stale_before: DateTime<Utc>,
            ) -> Result<bool> {
                // The primary key makes exactly one of concurrent inserts win.
                let inserted = sqlx::query(
                    "INSERT INTO idempotency_keys \
                     (scope, idem_key, request_hash, status, created_at) \
                     VALUES ($1, $2, $3, 'in_progress', $4) \
                     ON CONFLICT (scope, idem_key) DO NOTHING",
                )
                .bind(scope)
                .bind(key)
                .bind(request_hash)
                .bind(now)
                .execute(&self.pool)
                .await?;
                if inserted.rows_affected() > 0 {
                    return Ok(true);
                }
                // A claim left by a request that died: the first to update takes it.
                let taken = sqlx::query(
                    "UPDATE idempotency_keys SET request_hash = $3, created_at = $4 \
                     WHERE scope = $1 AND idem_key = $2 AND status = 'in_progress' \
                     AND created_at < $5",
                )
                .bind(scope)
                .bind(key)
                .bind(request_hash)
                .bind(now)
                .bind(stale_before)
                .execute(&self.pool)
                .await?;
                Ok(taken.rows_affected() > 0)
            }

            async fn idempotency_get(
                &self,
                scope: &str,
                key: &str,
            ) -> Result<Option<IdempotencyRecord>> {
                let row: Option<IdempotencyRow> = sqlx::query_as(
                    "SELECT request_hash, status, response_status, response_body, created_at \
                     FROM idempotency_keys WHERE scope = $1 AND idem_key = $2",
                )
                .bind(scope)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
                row.map(IdempotencyRow::into_record).transpose()
            }

            async fn idempotency_complete(
                &self,
                scope: &str,
                key: &str,
                status: u16,
                body: &str,
            ) -> Result<()> {
                sqlx::query(
                    "UPDATE idempotency_keys SET status = 'done', response_status = $3, \
                     response_body = $4 WHERE scope = $1 AND idem_key = $2",
                )
                .bind(scope)
                .bind(key)
                .bind(i64::from(status))
                .bind(body)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn idempotency_release(&self, scope: &str, key: &str) -> Result<()> {
                sqlx::query(
                    "DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 \
                     AND status = 'in_progress'",
                )
                .bind(scope)
                .bind(key)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn purge_idempotency(&self, before: DateTime<Utc>) -> Result<u64> {
                let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}

idempotency_on!(sqlx::Postgres);
idempotency_on!(sqlx::Sqlite);
