//! Subscriptions, the changes dispatchers follow, and circuit states.
//!
//! Every write takes the version row first (`BUMP_VERSION`): that orders it
//! after every other subscription write, and gives it the version that
//! dispatchers load it by (`subscription_changes`). Deletes are soft, with a
//! new version, so that dispatchers see them go.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::QueryBuilder;

use super::sql::{column_list, push_scope, SqlStore, BUMP_VERSION};
use super::subscription_rows::{
    seal_oauth2, seal_previous, seal_secret, seal_tls, PatchedHeaders, SealedSecrets,
    StoredHeaders, SubscriptionRow,
};
use super::{Error, Page, Result};
use crate::domain::{
    CircuitRecord, Scope, Subscription, SubscriptionId, SubscriptionPatch, SubscriptionStatus,
    TenantId,
};

/// A subscription as it changed, for dispatcher caches.
#[derive(Debug, Clone)]
pub struct SubscriptionChange {
    pub version: i64,
    pub subscription: Subscription,
    pub deleted: bool,
}

/// How a write guarded by a version went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guarded<T> {
    Written(T),
    /// No such live subscription (in the scope asked).
    NotFound,
    /// The subscription is at `current`, not the version the write expected;
    /// nothing was written.
    Stale {
        current: i64,
    },
    /// A rotation to the secret it has already; nothing was written.
    SameSecret,
}

/// A secret rotation: `secret` becomes current; the replaced one keeps
/// signing until `grace_ends` (`None`: not at all).
#[derive(Debug, Clone, Copy)]
pub struct SecretRotation<'a> {
    pub secret: &'a str,
    pub grace_ends: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

#[async_trait]
pub trait Subscriptions: Send + Sync {
    /// Answers the version it was stored with.
    async fn create_subscription(&self, subscription: &Subscription) -> Result<i64>;

    /// Like `create_subscription`, unless its tenant has `max_per_tenant`
    /// live subscriptions already (`None`: nothing written). Concurrent
    /// creates are counted one after the other.
    async fn create_subscription_within(
        &self,
        subscription: &Subscription,
        max_per_tenant: u32,
    ) -> Result<Option<i64>>;

    /// The version of the last subscription write committed.
    async fn subscription_version(&self) -> Result<i64>;

    /// Live (not deleted) subscriptions with a version above `after` up to
    /// `upto`, oldest first, at most `limit`: a fresh dispatcher's first
    /// load, before it follows `subscription_changes` from `upto`.
    async fn live_subscriptions(
        &self,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<SubscriptionChange>>;

    /// Changes with a version above `after`, oldest first, at most `limit`.
    async fn subscription_changes(&self, after: i64, limit: i64)
        -> Result<Vec<SubscriptionChange>>;

    /// Sets a subscription's status (and why, for `disabled`), and nothing else.
    async fn set_subscription_status(
        &self,
        id: &SubscriptionId,
        status: SubscriptionStatus,
        reason: Option<&str>,
    ) -> Result<()>;

    /// Disables a subscription whose endpoint answered 410 Gone, unless it
    /// was disabled already or its URL is no longer `url` (changed since
    /// that endpoint answered). Writes only the status, its reason and the
    /// version; answers whether it disabled.
    async fn disable_gone(
        &self,
        id: &SubscriptionId,
        url: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool>;

    /// A live subscription in `scope`: another tenant's is not found.
    async fn get_subscription(
        &self,
        scope: Scope<'_>,
        id: &SubscriptionId,
    ) -> Result<Option<Subscription>>;

    /// A tenant's live subscriptions by id, optionally of one status.
    async fn list_subscriptions(
        &self,
        tenant: &TenantId,
        status: Option<SubscriptionStatus>,
        page: Page<'_>,
    ) -> Result<Vec<Subscription>>;

    /// Writes the columns the patch names (and a new version) in one
    /// statement, only while the subscription is at `expected` (when
    /// given); answers the subscription as it is after the write.
    async fn patch_subscription(
        &self,
        scope: Scope<'_>,
        id: &SubscriptionId,
        patch: &SubscriptionPatch,
        expected: Option<i64>,
        at: DateTime<Utc>,
    ) -> Result<Guarded<Subscription>>;

    /// Rotates the secret in one transaction that reads the current secrets
    /// and writes the new ones, so that no concurrent write comes between;
    /// only while the subscription is at `expected` (when given).
    async fn rotate_subscription_secret(
        &self,
        scope: Scope<'_>,
        id: &SubscriptionId,
        rotation: SecretRotation<'_>,
        expected: Option<i64>,
    ) -> Result<Guarded<Subscription>>;

    /// Soft-deletes with a new version, so dispatchers see it go; only
    /// while the subscription is at `expected` (when given).
    async fn delete_subscription(
        &self,
        scope: Scope<'_>,
        id: &SubscriptionId,
        expected: Option<i64>,
        at: DateTime<Utc>,
    ) -> Result<Guarded<()>>;

    /// Writes a subscription's circuit state, unless a newer one is there.
    async fn record_circuit(&self, id: &SubscriptionId, circuit: &CircuitRecord) -> Result<()>;

    /// The circuit state last written for a subscription.
    async fn get_circuit(&self, id: &SubscriptionId) -> Result<Option<CircuitRecord>>;
}

/// A subscription row's columns, in the order `insert` binds them (and
/// `SubscriptionRow` reads them, by name).
const SUBSCRIPTION_COLUMNS: [&str; 23] = [
    "id",
    "tenant_id",
    "url",
    "event_types",
    "secret",
    "rate_limit_per_second",
    "rate_limit_burst",
    "max_in_flight",
    "ordered",
    "headers",
    "status",
    "disabled_reason",
    "description",
    "metadata",
    "version",
    "created_at",
    "updated_at",
    "deleted_at",
    "previous_secrets",
    "secret_headers",
    "content_filter",
    "oauth2",
    "tls",
];

fn columns() -> String {
    SUBSCRIPTION_COLUMNS.join(", ")
}

/// `Subscriptions` on one backend (see `sql.rs`), with the statements its
/// methods share.
macro_rules! subscriptions_on {
    ($db:ty) => {
        impl SqlStore<$db> {
            /// The `INSERT` of `s` at `version`, its secrets sealed: every
            /// column bound here, once, in `SUBSCRIPTION_COLUMNS`' order.
            fn insert<'a>(
                s: &'a Subscription,
                sealed: &'a SealedSecrets,
                version: i64,
            ) -> QueryBuilder<'a, $db> {
                let mut insert = QueryBuilder::new(format!(
                    "INSERT INTO subscriptions {} ",
                    column_list(&SUBSCRIPTION_COLUMNS)
                ));
                insert.push_values([s], |mut row, s| {
                    row.push_bind(s.id.as_str())
                        .push_bind(s.tenant_id.as_str())
                        .push_bind(&s.url)
                        .push_bind(Json(&s.event_types))
                        .push_bind(&sealed.secret)
                        .push_bind(s.rate_limit.map(|r| i64::from(r.per_second)))
                        .push_bind(s.rate_limit.map(|r| i64::from(r.burst)))
                        .push_bind(s.max_in_flight.map(i64::from))
                        .push_bind(s.ordered)
                        .push_bind(&sealed.headers)
                        .push_bind(s.status.as_str())
                        .push_bind(&s.disabled_reason)
                        .push_bind(&s.description)
                        .push_bind(Json(&s.metadata))
                        .push_bind(version)
                        .push_bind(s.created_at)
                        .push_bind(s.updated_at)
                        .push_bind(None::<DateTime<Utc>>)
                        .push_bind(&sealed.previous_secrets)
                        .push_bind(Json(&s.secret_headers))
                        .push_bind(s.filter.as_ref().map(|f| Json(f.as_json())))
                        .push_bind(&sealed.oauth2)
                        .push_bind(&sealed.tls);
                });
                insert
            }

            /// `SELECT columns` of the live subscription `id` in `scope`.
            fn live_by_id<'a>(
                columns: &str,
                id: &'a SubscriptionId,
                scope: Scope<'a>,
            ) -> QueryBuilder<'a, $db> {
                let mut query =
                    QueryBuilder::new(format!("SELECT {columns} FROM subscriptions WHERE id = "));
                query.push_bind(id.as_str()).push(" AND deleted_at IS NULL");
                push_scope(&mut query, scope);
                query
            }

            /// What a guarded write that matched no row met: the
            /// subscription at another version, or none (read inside the
            /// write's transaction).
            async fn missed<T>(
                tx: &mut <$db as sqlx::Database>::Connection,
                scope: Scope<'_>,
                id: &SubscriptionId,
            ) -> Result<Guarded<T>> {
                let current: Option<i64> = Self::live_by_id("version", id, scope)
                    .build_query_scalar()
                    .fetch_optional(&mut *tx)
                    .await?;
                Ok(match current {
                    Some(current) => Guarded::Stale { current },
                    None => Guarded::NotFound,
                })
            }

            async fn changes(
                &self,
                mut query: QueryBuilder<'_, $db>,
            ) -> Result<Vec<SubscriptionChange>> {
                let rows: Vec<SubscriptionRow> =
                    query.build_query_as().fetch_all(&self.pool).await?;
                rows.into_iter().map(|r| r.into_change(&self.keys)).collect()
            }
        }

        #[async_trait]
        impl Subscriptions for SqlStore<$db> {
            async fn create_subscription(&self, s: &Subscription) -> Result<i64> {
                let sealed = SealedSecrets::of(&self.keys, s)?;
                let mut tx = self.pool.begin().await?;
                let version: i64 = sqlx::query_scalar(BUMP_VERSION).fetch_one(&mut *tx).await?;
                Self::insert(s, &sealed, version).build().execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(version)
            }

            async fn create_subscription_within(
                &self,
                s: &Subscription,
                max_per_tenant: u32,
            ) -> Result<Option<i64>> {
                let sealed = SealedSecrets::of(&self.keys, s)?;
                let mut tx = self.pool.begin().await?;
                // The version row orders every subscription write: from here
                // to the commit no other create can come between the count
                // and the insert.
                let version: i64 = sqlx::query_scalar(BUMP_VERSION).fetch_one(&mut *tx).await?;
                let live: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM subscriptions \
                     WHERE tenant_id = $1 AND deleted_at IS NULL",
                )
                .bind(s.tenant_id.as_str())
                .fetch_one(&mut *tx)
                .await?;
                if live >= i64::from(max_per_tenant) {
                    // Dropping the transaction rolls the version bump back.
                    return Ok(None);
                }
                Self::insert(s, &sealed, version).build().execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(Some(version))
            }

            async fn subscription_version(&self) -> Result<i64> {
                let version: i64 = sqlx::query_scalar("SELECT version FROM subscription_version")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(version)
            }

            async fn live_subscriptions(
                &self,
                after: i64,
                upto: i64,
                limit: i64,
            ) -> Result<Vec<SubscriptionChange>> {
                let mut query = QueryBuilder::new(format!(
                    "SELECT {} FROM subscriptions WHERE version > ",
                    columns()
                ));
                query
                    .push_bind(after)
                    .push(" AND version <= ")
                    .push_bind(upto)
                    .push(" AND deleted_at IS NULL ORDER BY version LIMIT ")
                    .push_bind(limit);
                self.changes(query).await
            }

            async fn subscription_changes(
                &self,
                after: i64,
                limit: i64,
            ) -> Result<Vec<SubscriptionChange>> {
                let mut query = QueryBuilder::new(format!(
                    "SELECT {} FROM subscriptions WHERE version > ",
                    columns()
                ));
                query.push_bind(after).push(" ORDER BY version LIMIT ").push_bind(limit);
                self.changes(query).await
            }

            async fn set_subscription_status(
                &self,
                id: &SubscriptionId,
                status: SubscriptionStatus,
                reason: Option<&str>,
            ) -> Result<()> {
                let mut tx = self.pool.begin().await?;
                let version: i64 = sqlx::query_scalar(BUMP_VERSION).fetch_one(&mut *tx).await?;
                sqlx::query(
                    "UPDATE subscriptions SET status = $1, disabled_reason = $2, version = $3, \
                     updated_at = $4 WHERE id = $5 AND deleted_at IS NULL",
                )
                .bind(status.as_str())
                .bind(reason)
                .bind(version)
                .bind(Utc::now())
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn disable_gone(
                &self,
                id: &SubscriptionId,
                url: &str,
                reason: &str,
                at: DateTime<Utc>,
            ) -> Result<bool> {
                let mut tx = self.pool.begin().await?;
                let version: i64 = sqlx::query_scalar(BUMP_VERSION).fetch_one(&mut *tx).await?;
                // A new URL is another endpoint, whose answer is yet to come;
                // disabled already keeps the first reason.
                let done = sqlx::query(
                    "UPDATE subscriptions SET status = 'disabled', disabled_reason = $1, \
                     version = $2, updated_at = $3 WHERE id = $4 AND url = $5 \
                     AND status NOT IN ('disabled', 'suspended') AND deleted_at IS NULL",
                )
                .bind(reason)
                .bind(version)
                .bind(at)
                .bind(id.as_str())
                .bind(url)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    // Dropping the transaction rolls the version bump back.
                    return Ok(false);
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn get_subscription(
                &self,
                scope: Scope<'_>,
                id: &SubscriptionId,
            ) -> Result<Option<Subscription>> {
                let row: Option<SubscriptionRow> = Self::live_by_id(&columns(), id, scope)
                    .build_query_as()
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| r.into_change(&self.keys).map(|c| c.subscription)).transpose()
            }

            async fn list_subscriptions(
                &self,
                tenant: &TenantId,
                status: Option<SubscriptionStatus>,
                page: Page<'_>,
            ) -> Result<Vec<Subscription>> {
                let sql = format!(
                    "SELECT {} FROM subscriptions WHERE tenant_id = $1 AND deleted_at IS NULL \
                     AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR id > $3) \
                     ORDER BY id LIMIT $4",
                    columns()
                );
                let rows: Vec<SubscriptionRow> = sqlx::query_as(&sql)
                    .bind(tenant.as_str())
                    .bind(status.map(|s| s.as_str()))
                    .bind(page.after)
                    .bind(page.limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter()
                    .map(|r| r.into_change(&self.keys).map(|c| c.subscription))
                    .collect()
            }

            async fn patch_subscription(
                &self,
                scope: Scope<'_>,
                id: &SubscriptionId,
                patch: &SubscriptionPatch,
                expected: Option<i64>,
                at: DateTime<Utc>,
            ) -> Result<Guarded<Subscription>> {
                let mut tx = self.pool.begin().await?;
                let version: i64 = sqlx::query_scalar(BUMP_VERSION).fetch_one(&mut *tx).await?;
                // Only the columns the patch names: a concurrent rotation or
                // disable of the others stands.
                let mut update = QueryBuilder::<$db>::new("UPDATE subscriptions SET version = ");
                update.push_bind(version).push(", updated_at = ").push_bind(at);
                if let Some(url) = &patch.url {
                    update.push(", url = ").push_bind(url);
                }
                if let Some(event_types) = &patch.event_types {
                    update.push(", event_types = ").push_bind(Json(event_types));
                }
                if let Some(rate_limit) = patch.rate_limit {
                    update
                        .push(", rate_limit_per_second = ")
                        .push_bind(rate_limit.map(|r| i64::from(r.per_second)))
                        .push(", rate_limit_burst = ")
                        .push_bind(rate_limit.map(|r| i64::from(r.burst)));
                }
                if let Some(max_in_flight) = patch.max_in_flight {
                    update.push(", max_in_flight = ").push_bind(max_in_flight.map(i64::from));
                }
                if let Some(ordered) = patch.ordered {
                    update.push(", ordered = ").push_bind(ordered);
                }
                if patch.headers.is_some() || patch.secret_headers.is_some() {
                    // Read in this transaction, after the version row: what
                    // `REDACTED` keeps, and the values to seal anew when
                    // `secret_headers` changes, are the current ones.
                    let stored: Option<StoredHeaders> =
                        Self::live_by_id("headers, secret_headers, version", id, scope)
                            .build_query_as()
                            .fetch_optional(&mut *tx)
                            .await?;
                    let Some(stored) = stored else { return Ok(Guarded::NotFound) };
                    if expected.is_some_and(|v| v != stored.version()) {
                        return Ok(Guarded::Stale { current: stored.version() });
                    }
                    match stored.patched(&self.keys, id.as_str(), patch)? {
                        PatchedHeaders::Write { headers, secret_headers } => {
                            update
                                .push(", headers = ")
                                .push_bind(headers)
                                .push(", secret_headers = ")
                                .push_bind(secret_headers);
                        }
                        PatchedHeaders::Stale { current } => {
                            return Ok(Guarded::Stale { current });
                        }
                    }
                }
                if let Some(status) = patch.status {
                    update
                        .push(", status = ")
                        .push_bind(status.as_str())
                        .push(", disabled_reason = ")
                        .push_bind(patch.status_reason.as_deref());
                }
                if let Some(description) = &patch.description {
                    update.push(", description = ").push_bind(description);
                }
                if let Some(metadata) = &patch.metadata {
                    update.push(", metadata = ").push_bind(Json(metadata));
                }
                if let Some(tls) = &patch.tls {
                    let sealed = seal_tls(&self.keys, id.as_str(), tls.as_ref())?;
                    update.push(", tls = ").push_bind(sealed);
                }
                if let Some(oauth2) = &patch.oauth2 {
                    let sealed = seal_oauth2(&self.keys, id.as_str(), oauth2.as_ref())?;
                    update.push(", oauth2 = ").push_bind(sealed);
                }
                if let Some(filter) = &patch.filter {
                    let filter = filter.as_ref().map(|f| Json(f.as_json()));
                    update.push(", content_filter = ").push_bind(filter);
                }
                update.push(" WHERE id = ").push_bind(id.as_str()).push(" AND deleted_at IS NULL");
                if patch.status.is_some() && patch.unless_suspended {
                    update.push(" AND status <> 'suspended'");
                }
                push_scope(&mut update, scope);
                if let Some(expected) = expected {
                    update.push(" AND version = ").push_bind(expected);
                }
                update.push(format!(" RETURNING {}", columns()));
                let row: Option<SubscriptionRow> =
                    update.build_query_as().fetch_optional(&mut *tx).await?;
                let Some(row) = row else {
                    // Dropping the transaction rolls the version bump back.
                    return Self::missed(&mut *tx, scope, id).await;
                };
                let subscription = row.into_change(&self.keys)?.subscription;
                tx.commit().await?;
                Ok(Guarded::Written(subscription))
            }

            async fn rotate_subscription_secret(
                &self,
                scope: Scope<'_>,
                id: &SubscriptionId,
                rotation: SecretRotation<'_>,
                expected: Option<i64>,
            ) -> Result<Guarded<Subscription>> {
                let mut tx = self.pool.begin().await?;
                // Taking the version row first orders this transaction after
                // every other subscription write (each takes it first), so
                // the secrets read below are the current ones until the commit.
                let version: i64 = sqlx::query_scalar(BUMP_VERSION).fetch_one(&mut *tx).await?;
                let row: Option<SubscriptionRow> = Self::live_by_id(&columns(), id, scope)
                    .build_query_as()
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else { return Ok(Guarded::NotFound) };
                let mut s = row.into_change(&self.keys)?.subscription;
                if let Some(current) = expected.filter(|v| *v != s.version).map(|_| s.version) {
                    return Ok(Guarded::Stale { current });
                }
                if s.unreadable.is_some() {
                    // The secret it would keep signing with is not readable.
                    return Err(Error::Unreadable(s.id.as_str().to_owned()));
                }
                if !s.rotate_secret(rotation.secret, rotation.grace_ends, rotation.now) {
                    return Ok(Guarded::SameSecret);
                }
                s.version = version;
                let secret = seal_secret(&self.keys, id.as_str(), &s.secret)?;
                let previous = seal_previous(&self.keys, id.as_str(), &s.previous_secrets)?;
                sqlx::query(
                    "UPDATE subscriptions SET secret = $1, previous_secrets = $2, version = $3, \
                     updated_at = $4 WHERE id = $5",
                )
                .bind(&secret)
                .bind(Json(&previous))
                .bind(version)
                .bind(s.updated_at)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Guarded::Written(s))
            }

            async fn delete_subscription(
                &self,
                scope: Scope<'_>,
                id: &SubscriptionId,
                expected: Option<i64>,
                at: DateTime<Utc>,
            ) -> Result<Guarded<()>> {
                let mut tx = self.pool.begin().await?;
                let version: i64 = sqlx::query_scalar(BUMP_VERSION).fetch_one(&mut *tx).await?;
                let mut delete = QueryBuilder::<$db>::new("UPDATE subscriptions SET deleted_at = ");
                delete
                    .push_bind(at)
                    .push(", updated_at = ")
                    .push_bind(at)
                    .push(", version = ")
                    .push_bind(version)
                    .push(" WHERE id = ")
                    .push_bind(id.as_str())
                    .push(" AND deleted_at IS NULL");
                push_scope(&mut delete, scope);
                if let Some(expected) = expected {
                    delete.push(" AND version = ").push_bind(expected);
                }
                let done = delete.build().execute(&mut *tx).await?;
                if done.rows_affected() == 0 {
                    return Self::missed(&mut *tx, scope, id).await;
                }
                tx.commit().await?;
                Ok(Guarded::Written(()))
            }

            async fn record_circuit(
                &self,
                id: &SubscriptionId,
                circuit: &CircuitRecord,
            ) -> Result<()> {
                sqlx::query(
                    "INSERT INTO subscription_circuits \
                     (subscription_id, open, opened_ms, until_ms, changed_ms) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (subscription_id) DO UPDATE SET open = excluded.open, \
                     opened_ms = excluded.opened_ms, until_ms = excluded.until_ms, \
                     changed_ms = excluded.changed_ms \
                     WHERE subscription_circuits.changed_ms <= excluded.changed_ms",
                )
                .bind(id.as_str())
                .bind(circuit.open)
                .bind(circuit.opened_ms)
                .bind(circuit.until_ms)
                .bind(circuit.changed_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn get_circuit(&self, id: &SubscriptionId) -> Result<Option<CircuitRecord>> {
                let row: Option<(bool, Option<i64>, Option<i64>, i64)> = sqlx::query_as(
                    "SELECT open, opened_ms, until_ms, changed_ms FROM subscription_circuits \
                     WHERE subscription_id = $1",
                )
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(open, opened_ms, until_ms, changed_ms)| CircuitRecord {
                    open,
                    opened_ms,
                    until_ms,
                    changed_ms,
                }))
            }
        }
    };
}

subscriptions_on!(sqlx::Postgres);
subscriptions_on!(sqlx::Sqlite);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SecretKeys;

    fn subscription() -> Subscription {
        Subscription::new(
            TenantId::default_tenant(),
            "https://example.com/hook".to_owned(),
            vec!["order.*".to_owned()],
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
            Utc::now(),
        )
    }

    #[test]
    fn the_insert_binds_one_value_per_column() {
        let s = subscription();
        let sealed = SealedSecrets::of(&SecretKeys::none(), &s).expect("plain");
        let insert = SqlStore::<sqlx::Postgres>::insert(&s, &sealed, 1);
        let last = format!("${}", SUBSCRIPTION_COLUMNS.len());
        let after_last = format!("${}", SUBSCRIPTION_COLUMNS.len() + 1);
        assert!(insert.sql().ends_with(&format!("{last})")), "{}", insert.sql());
        assert!(!insert.sql().contains(&after_last), "{}", insert.sql());
        let sqlite = SqlStore::<sqlx::Sqlite>::insert(&s, &sealed, 1);
        assert_eq!(sqlite.sql().matches('?').count(), SUBSCRIPTION_COLUMNS.len());
    }
}
