//! Event types admins register: a JSON Schema for `data`, and who may see
//! them. Each write takes a subscription version, so that dispatchers load
//! a type's audience in the same refresh as the subscription changes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::sql::{SqlStore, BUMP_VERSION};
use super::{Page, Result};
use crate::domain::{EventType, TenantId};

/// An event type as the dispatchers need it, in the order types were made.
#[derive(Debug, Clone)]
pub struct EventTypeChange {
    pub version: i64,
    pub name: String,
    /// The only tenants that may see it; `None`: every tenant.
    pub visible_to: Option<Vec<TenantId>>,
}

#[async_trait]
pub trait EventTypes: Send + Sync {
    /// False when an event type of that name exists.
    async fn create_event_type(&self, event_type: &EventType) -> Result<bool>;

    /// Rewrites an event type's description, schema and audience (the name
    /// and creation time stay) and moves it to a new version, so that the
    /// dispatchers load its audience in their next refresh; false when it
    /// does not exist.
    async fn update_event_type(&self, event_type: &EventType) -> Result<bool>;

    async fn get_event_type(&self, name: &str) -> Result<Option<EventType>>;

    async fn list_event_types(&self, page: Page<'_>) -> Result<Vec<EventType>>;

    /// Event types made after version `after`, oldest first.
    async fn event_type_changes(&self, after: i64) -> Result<Vec<EventTypeChange>>;
}

const EVENT_TYPE_COLUMNS: &str = "name, description, json_schema, visible_to, created_at";

#[derive(sqlx::FromRow)]
struct EventTypeRow {
    name: String,
    description: Option<String>,
    json_schema: Option<Json<serde_json::Value>>,
    visible_to: Option<Json<Vec<String>>>,
    created_at: DateTime<Utc>,
}

/// Tenant ids as stored; one that no longer parses is dropped, which can
/// only narrow who sees the type.
fn tenants(ids: Option<Json<Vec<String>>>) -> Option<Vec<TenantId>> {
    ids.map(|ids| ids.0.iter().filter_map(|id| TenantId::parse(id)).collect())
}

impl From<EventTypeRow> for EventType {
    fn from(row: EventTypeRow) -> Self {
        Self {
            name: row.name,
            description: row.description,
            schema: row.json_schema.map(|j| j.0),
            visible_to: tenants(row.visible_to),
            created_at: row.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct EventTypeChangeRow {
    version: i64,
    name: String,
    visible_to: Option<Json<Vec<String>>>,
}

impl From<EventTypeChangeRow> for EventTypeChange {
    fn from(row: EventTypeChangeRow) -> Self {
        Self { version: row.version, name: row.name, visible_to: tenants(row.visible_to) }
    }
}

/// The audience as stored: a JSON array of tenant ids.
fn visible_to(event_type: &EventType) -> Option<Json<Vec<&str>>> {
    event_type.visible_to.as_ref().map(|ids| Json(ids.iter().map(TenantId::as_str).collect()))
}

/// `EventTypes` on one backend (see `sql.rs`).
macro_rules! event_types_on {
    ($db:ty) => {
        #[async_trait]
        impl EventTypes for SqlStore<$db> {
            async fn create_event_type(&self, t: &EventType) -> Result<bool> {
                // The version orders it among subscription changes, which the
                // dispatchers load in the same refresh.
                let mut tx = self.pool.begin().await?;
                let version: i64 = sqlx::query_scalar(BUMP_VERSION).fetch_one(&mut *tx).await?;
                let done = sqlx::query(
                    "INSERT INTO event_types \
                     (name, description, json_schema, visible_to, version, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
                )
                .bind(&t.name)
                .bind(&t.description)
                .bind(t.schema.as_ref().map(Json))
                .bind(visible_to(t))
                .bind(version)
                .bind(t.created_at)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn update_event_type(&self, t: &EventType) -> Result<bool> {
                let mut tx = self.pool.begin().await?;
                let version: i64 = sqlx::query_scalar(BUMP_VERSION).fetch_one(&mut *tx).await?;
                let done = sqlx::query(
                    "UPDATE event_types SET description = $2, json_schema = $3, \
                     visible_to = $4, version = $5 WHERE name = $1",
                )
                .bind(&t.name)
                .bind(&t.description)
                .bind(t.schema.as_ref().map(Json))
                .bind(visible_to(t))
                .bind(version)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn get_event_type(&self, name: &str) -> Result<Option<EventType>> {
                let sql = format!("SELECT {EVENT_TYPE_COLUMNS} FROM event_types WHERE name = $1");
                let row: Option<EventTypeRow> =
                    sqlx::query_as(&sql).bind(name).fetch_optional(&self.pool).await?;
                Ok(row.map(Into::into))
            }

            async fn list_event_types(&self, page: Page<'_>) -> Result<Vec<EventType>> {
                let sql = format!(
                    "SELECT {EVENT_TYPE_COLUMNS} FROM event_types \
                     WHERE ($1 IS NULL OR name > $1) ORDER BY name LIMIT $2"
                );
                let rows: Vec<EventTypeRow> = sqlx::query_as(&sql)
                    .bind(page.after)
                    .bind(page.limit)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn event_type_changes(&self, after: i64) -> Result<Vec<EventTypeChange>> {
                let rows: Vec<EventTypeChangeRow> = sqlx::query_as(
                    "SELECT version, name, visible_to FROM event_types WHERE version > $1 \
                     ORDER BY version",
                )
                .bind(after)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }
        }
    };
}

event_types_on!(sqlx::Postgres);
event_types_on!(sqlx::Sqlite);
