//! The portal's links and sessions (`domain::portal`), by the hash of their
//! secret. Opening a link marks it used in the statement that reads it, and
//! starts its session in the same transaction: a link opens one session
//! however many browsers race for it, and is never spent without one.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::sql::SqlStore;
use super::Result;
use crate::domain::portal::{PortalLink, PortalScope, PortalSession};
use crate::domain::TenantId;

#[async_trait]
pub trait Portal: Send + Sync {
    async fn create_portal_link(&self, token_hash: &str, link: &PortalLink) -> Result<()>;

    /// Uses the link up, if it is unused and unexpired at `now`, and opens
    /// its session (`session_hash`, `csrf_token`, until `expires_at`) in the
    /// same transaction, so that a link is never spent without a session.
    async fn open_portal_session(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
        session_hash: &str,
        csrf_token: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<PortalSession>>;

    async fn create_portal_session(&self, id_hash: &str, session: &PortalSession) -> Result<()>;

    /// The session, if unexpired at `now`.
    async fn portal_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<PortalSession>>;

    async fn end_portal_session(&self, id_hash: &str) -> Result<()>;

    /// Ends a tenant's sessions and unused links (its portal access is
    /// withdrawn); answers how many.
    async fn revoke_portal_access(&self, tenant: &TenantId) -> Result<u64>;

    /// Removes links and sessions that expired before `before`; answers how many.
    async fn purge_portal(&self, before: DateTime<Utc>) -> Result<u64>;
}

/// A session row, whichever way it is opened.
const INSERT_SESSION: &str = "INSERT INTO portal_sessions (id_hash, tenant_id, admin_token_hash, \
     read_only, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";

#[derive(sqlx::FromRow)]
struct LinkRow {
    tenant_id: String,
    read_only: bool,
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    tenant_id: Option<String>,
    admin_token_hash: Option<String>,
    read_only: bool,
    csrf_token: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl From<SessionRow> for PortalSession {
    fn from(row: SessionRow) -> Self {
        let scope = match row.tenant_id {
            Some(tenant) => PortalScope::Tenant {
                tenant: TenantId::from_trusted(tenant),
                read_only: row.read_only,
            },
            None => PortalScope::Admin { token_hash: row.admin_token_hash.unwrap_or_default() },
        };
        Self {
            scope,
            csrf_token: row.csrf_token,
            created_at: row.created_at,
            expires_at: row.expires_at,
        }
    }
}

/// `Portal` on one backend (see `sql.rs`).
macro_rules! portal_on {
    ($db:ty) => {
        #[async_trait]
        impl Portal for SqlStore<$db> {
            async fn create_portal_link(&self, token_hash: &str, link: &PortalLink) -> Result<()> {
                sqlx::query(
                    "INSERT INTO portal_links (token_hash, tenant_id, read_only, created_at, \
                     expires_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(token_hash)
                .bind(link.tenant_id.as_str())
                .bind(link.read_only)
                .bind(link.created_at)
                .bind(link.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn open_portal_session(
                &self,
                token_hash: &str,
                now: DateTime<Utc>,
                session_hash: &str,
                csrf_token: &str,
                expires_at: DateTime<Utc>,
            ) -> Result<Option<PortalSession>> {
                let mut tx = self.pool.begin().await?;
                let row: Option<LinkRow> = sqlx::query_as(
                    "UPDATE portal_links SET used_at = $2 \
                     WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 \
                     RETURNING tenant_id, read_only",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(link) = row else { return Ok(None) };
                sqlx::query(
INSERT_SESSION)
                .bind(session_hash)
                .bind(&link.tenant_id)
                .bind(None::<&str>)
                .bind(link.read_only)
                .bind(csrf_token)
                .bind(now)
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some(PortalSession {
                    scope: PortalScope::Tenant {
                        tenant: TenantId::from_trusted(link.tenant_id),
                        read_only: link.read_only,
                    },
                    csrf_token: csrf_token.to_owned(),
                    created_at: now,
                    expires_at,
                }))
            }

            async fn create_portal_session(
                &self,
                id_hash: &str,
                session: &PortalSession,
            ) -> Result<()> {
                let (tenant, admin, read_only) = match &session.scope {
                    PortalScope::Tenant { tenant, read_only } => {
                        (Some(tenant.as_str()), None, *read_only)
                    }
                    PortalScope::Admin { token_hash } => (None, Some(token_hash.as_str()), false),
                };
                sqlx::query(INSERT_SESSION)
                .bind(id_hash)
                .bind(tenant)
                .bind(admin)
                .bind(read_only)
                .bind(&session.csrf_token)
                .bind(session.created_at)
                .bind(session.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn portal_session(
                &self,
                id_hash: &str,
                now: DateTime<Utc>,
            ) -> Result<Option<PortalSession>> {
                let row: Option<SessionRow> = sqlx::query_as(
                    "SELECT tenant_id, admin_token_hash, read_only, csrf_token, created_at, expires_at \
                     FROM portal_sessions WHERE id_hash = $1 AND expires_at > $2",
                )
                .bind(id_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Into::into))
            }

            async fn end_portal_session(&self, id_hash: &str) -> Result<()> {
                sqlx::query("DELETE FROM portal_sessions WHERE id_hash = $1")
                    .bind(id_hash)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn revoke_portal_access(&self, tenant: &TenantId) -> Result<u64> {
                let links = sqlx::query(
                    "DELETE FROM portal_links WHERE tenant_id = $1 AND used_at IS NULL",
                )
                .bind(tenant.as_str())
                .execute(&self.pool)
                .await?;
                let sessions = sqlx::query("DELETE FROM portal_sessions WHERE tenant_id = $1")
                    .bind(tenant.as_str())
                    .execute(&self.pool)
                    .await?;
                Ok(links.rows_affected() + sessions.rows_affected())
            }

            async fn purge_portal(&self, before: DateTime<Utc>) -> Result<u64> {
                let links = sqlx::query("DELETE FROM portal_links WHERE expires_at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await?;
                let sessions = sqlx::query("DELETE FROM portal_sessions WHERE expires_at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await?;
                Ok(links.rows_affected() + sessions.rows_affected())
            }
        }
    };
}

portal_on!(sqlx::Postgres);
portal_on!(sqlx::Sqlite);
