//! Tenants and their API keys (stored by the hash of their text).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::sql::SqlStore;
use super::{Page, Result};
use crate::domain::{ApiKey, ApiKeyId, Tenant, TenantId};

#[async_trait]
pub trait Tenants: Send + Sync {
    async fn tenant_exists(&self, id: &TenantId) -> Result<bool>;

    async fn create_tenant(&self, tenant: &Tenant) -> Result<()>;

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>>;

    async fn list_tenants(&self, page: Page<'_>) -> Result<Vec<Tenant>>;

    /// Stores a key by the hash of its text.
    async fn create_api_key(&self, key: &ApiKey, key_hash: &str) -> Result<()>;

    /// A tenant's keys, revoked ones included, by id.
    async fn list_api_keys(&self, tenant: &TenantId, page: Page<'_>) -> Result<Vec<ApiKey>>;

    /// Answers false when the tenant has no such key (revoking twice is fine).
    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        id: &ApiKeyId,
        at: DateTime<Utc>,
    ) -> Result<bool>;

    /// The tenant of an unrevoked key with this hash.
    async fn tenant_for_key(&self, key_hash: &str) -> Result<Option<TenantId>>;
}

const TENANT_COLUMNS: &str = "id, name, created_at";
const API_KEY_COLUMNS: &str = "id, tenant_id, name, prefix, created_at, revoked_at";

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: String,
    name: String,
    created_at: DateTime<Utc>,
}

impl From<TenantRow> for Tenant {
    fn from(row: TenantRow) -> Self {
        Self { id: TenantId::from_trusted(row.id), name: row.name, created_at: row.created_at }
    }
}

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: String,
    tenant_id: String,
    name: Option<String>,
    prefix: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyRow> for ApiKey {
    fn from(row: ApiKeyRow) -> Self {
        Self {
            id: ApiKeyId::from_trusted(row.id),
            tenant_id: TenantId::from_trusted(row.tenant_id),
            name: row.name,
            prefix: row.prefix,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        }
    }
}

/// `Tenants` on one backend (see `sql.rs`).
macro_rules! tenants_on {
    ($db:ty) => {
        #[async_trait]
        impl Tenants for SqlStore<$db> {
            async fn tenant_exists(&self, id: &TenantId) -> Result<bool> {
                let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(found.is_some())
            }

            async fn create_tenant(&self, tenant: &Tenant) -> Result<()> {
                sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
                    .bind(tenant.id.as_str())
                    .bind(&tenant.name)
                    .bind(tenant.created_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
                let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
                let row: Option<TenantRow> =
                    sqlx::query_as(&sql).bind(id.as_str()).fetch_optional(&self.pool).await?;
                Ok(row.map(Into::into))
            }

            async fn list_tenants(&self, page: Page<'_>) -> Result<Vec<Tenant>> {
                let sql = format!(
                    "SELECT {TENANT_COLUMNS} FROM tenants WHERE ($1 IS NULL OR id > $1) \
                     ORDER BY id LIMIT $2"
                );
                let rows: Vec<TenantRow> = sqlx::query_as(&sql)
                    .bind(page.after)
                    .bind(page.limit)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn create_api_key(&self, key: &ApiKey, key_hash: &str) -> Result<()> {
                sqlx::query(
                    "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(key.id.as_str())
                .bind(key.tenant_id.as_str())
                .bind(&key.name)
                .bind(&key.prefix)
                .bind(key_hash)
                .bind(key.created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_api_keys(
                &self,
                tenant: &TenantId,
                page: Page<'_>,
            ) -> Result<Vec<ApiKey>> {
                let sql = format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 \
                     AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
                );
                let rows: Vec<ApiKeyRow> = sqlx::query_as(&sql)
                    .bind(tenant.as_str())
                    .bind(page.after)
                    .bind(page.limit)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn revoke_api_key(
                &self,
                tenant: &TenantId,
                id: &ApiKeyId,
                at: DateTime<Utc>,
            ) -> Result<bool> {
                // COALESCE keeps the first revocation time.
                let done = sqlx::query(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.as_str())
                .bind(id.as_str())
                .bind(at)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn tenant_for_key(&self, key_hash: &str) -> Result<Option<TenantId>> {
                let tenant: Option<String> = sqlx::query_scalar(
                    "SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
                )
                .bind(key_hash)
                .fetch_optional(&self.pool)
                .await?;
                Ok(tenant.map(TenantId::from_trusted))
            }
        }
    };
}

tenants_on!(sqlx::Postgres);
tenants_on!(sqlx::Sqlite);
