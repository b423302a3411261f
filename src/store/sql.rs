//! The SQL both backends run. PostgreSQL and SQLite accept the same `$N`
//! placeholders and `RETURNING`, so one body, expanded per backend by
//! `impl_store!`, keeps the two from drifting apart.

pub(super) const SUBSCRIPTION_COLUMNS: &str = "id, tenant_id, url, event_types, secret, \
     rate_limit_per_second, rate_limit_burst, max_in_flight, ordered, headers, status, \
     disabled_reason, description, metadata, version, created_at, updated_at, deleted_at, \
     previous_secrets, secret_headers";

pub(super) const ATTEMPT_COLUMNS: &str = "id, event_id, webhook_id, subscription_id, tenant_id, \
     event_type, attempt, outcome, status_code, latency_ms, error, response_excerpt, created_at";

pub(super) const BUMP_VERSION: &str =
    "UPDATE subscription_version SET version = version + 1 RETURNING version";

/// Expands the `Store` implementation for a backend struct holding
/// `pool: sqlx::Pool<$db>` and a `MIGRATOR`.
macro_rules! impl_store {
    ($store:ty, $db:ty) => {
        $crate::store::sql_api::api_methods!($store, $db);
    };
}

/// Inserts subscription `$s` at `$version` inside transaction `$tx`.
macro_rules! insert_subscription {
    ($tx:ident, $s:expr, $version:expr, $keys:expr) => {{
        use sqlx::types::Json;
        let s = $s;
        let sealed = $crate::store::rows::SealedSecrets::of($keys, s)?;
        let sql = format!(
            "INSERT INTO subscriptions ({}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
            $crate::store::sql::SUBSCRIPTION_COLUMNS
        );
        sqlx::query(&sql)
            .bind(s.id.as_str())
            .bind(s.tenant_id.as_str())
            .bind(&s.url)
            .bind(Json(&s.event_types))
            .bind(&sealed.secret)
            .bind(s.rate_limit.map(|r| i64::from(r.per_second)))
            .bind(s.rate_limit.map(|r| i64::from(r.burst)))
            .bind(s.max_in_flight.map(i64::from))
            .bind(s.ordered)
            .bind(&sealed.headers)
            .bind(s.status.as_str())
            .bind(&s.disabled_reason)
            .bind(&s.description)
            .bind(Json(&s.metadata))
            .bind($version)
            .bind(s.created_at)
            .bind(s.updated_at)
            .bind(None::<chrono::DateTime<chrono::Utc>>)
            .bind(&sealed.previous_secrets)
            .bind(Json(&s.secret_headers))
            .execute(&mut *$tx)
            .await?;
    }};
}

/// `impl_store!`'s body, with the methods `sql_api` adds.
macro_rules! impl_store_with {
    ($store:ty, $db:ty, { $($more:tt)* }) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            $($more)*

            async fn ping(&self) -> $crate::store::Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn migrate(&self) -> $crate::store::Result<()> {
                self.run_migrations().await
            }

            async fn tenant_exists(
                &self,
                id: &$crate::domain::TenantId,
            ) -> $crate::store::Result<bool> {
                let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(found.is_some())
            }

            async fn create_subscription(
                &self,
                s: &$crate::domain::Subscription,
            ) -> $crate::store::Result<i64> {
                let mut tx = self.pool.begin().await?;
                let version: i64 = sqlx::query_scalar($crate::store::sql::BUMP_VERSION)
                    .fetch_one(&mut *tx)
                    .await?;
                $crate::store::sql::insert_subscription!(tx, s, version, &self.keys);
                tx.commit().await?;
                Ok(version)
            }

            async fn create_subscription_within(
                &self,
                s: &$crate::domain::Subscription,
                max_per_tenant: u32,
            ) -> $crate::store::Result<Option<i64>> {
                let mut tx = self.pool.begin().await?;
                // The version row orders every subscription write: from here
                // to the commit no other create can come between the count
                // and the insert.
                let version: i64 = sqlx::query_scalar($crate::store::sql::BUMP_VERSION)
                    .fetch_one(&mut *tx)
                    .await?;
                let live: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM subscriptions WHERE tenant_id = $1 AND deleted_at IS NULL",
                )
                .bind(s.tenant_id.as_str())
                .fetch_one(&mut *tx)
                .await?;
                if live >= i64::from(max_per_tenant) {
                    // Dropping the transaction rolls the version bump back.
                    return Ok(None);
                }
                $crate::store::sql::insert_subscription!(tx, s, version, &self.keys);
                tx.commit().await?;
                Ok(Some(version))
            }

            async fn subscription_version(&self) -> $crate::store::Result<i64> {
                let version: i64 =
                    sqlx::query_scalar("SELECT version FROM subscription_version")
                        .fetch_one(&self.pool)
                        .await?;
                Ok(version)
            }

            async fn live_subscriptions(
                &self,
                after: i64,
                upto: i64,
                limit: i64,
            ) -> $crate::store::Result<Vec<$crate::store::SubscriptionChange>> {
                let sql = format!(
                    "SELECT {} FROM subscriptions WHERE version > $1 AND version <= $2 \
                     AND deleted_at IS NULL ORDER BY version LIMIT $3",
                    $crate::store::sql::SUBSCRIPTION_COLUMNS
                );
                let rows: Vec<$crate::store::rows::SubscriptionRow> = sqlx::query_as(&sql)
                    .bind(after)
                    .bind(upto)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(|r| r.into_change(&self.keys)).collect()
            }

            async fn set_subscription_status(
                &self,
                id: &$crate::domain::SubscriptionId,
                status: $crate::domain::SubscriptionStatus,
                reason: Option<&str>,
            ) -> $crate::store::Result<()> {
                let mut tx = self.pool.begin().await?;
                let version: i64 = sqlx::query_scalar($crate::store::sql::BUMP_VERSION)
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE subscriptions SET status = $1, disabled_reason = $2, version = $3, \
                     updated_at = $4 WHERE id = $5 AND deleted_at IS NULL",
                )
                .bind(status.as_str())
                .bind(reason)
                .bind(version)
                .bind(chrono::Utc::now())
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn disable_gone(
                &self,
                id: &$crate::domain::SubscriptionId,
                url: &str,
                reason: &str,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::Result<bool> {
                let mut tx = self.pool.begin().await?;
                let version: i64 = sqlx::query_scalar($crate::store::sql::BUMP_VERSION)
                    .fetch_one(&mut *tx)
                    .await?;
                // A new URL is another endpoint, whose answer is yet to come;
                // disabled already keeps the first reason.
                let done = sqlx::query(
                    "UPDATE subscriptions SET status = 'disabled', disabled_reason = $1, \
                     version = $2, updated_at = $3 \
                     WHERE id = $4 AND url = $5 AND status <> 'disabled' AND deleted_at IS NULL",
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
                tenant: Option<&$crate::domain::TenantId>,
                id: &$crate::domain::SubscriptionId,
            ) -> $crate::store::Result<Option<$crate::domain::Subscription>> {
                let sql = format!(
                    "SELECT {} FROM subscriptions WHERE id = $1 AND deleted_at IS NULL \
                     AND ($2 IS NULL OR tenant_id = $2)",
                    $crate::store::sql::SUBSCRIPTION_COLUMNS
                );
                let row: Option<$crate::store::rows::SubscriptionRow> = sqlx::query_as(&sql)
                    .bind(id.as_str())
                    .bind(tenant.map(|t| t.as_str()))
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| r.into_change(&self.keys).map(|c| c.subscription)).transpose()
            }

            async fn subscription_changes(
                &self,
                after: i64,
                limit: i64,
            ) -> $crate::store::Result<Vec<$crate::store::SubscriptionChange>> {
                let sql = format!(
                    "SELECT {} FROM subscriptions WHERE version > $1 ORDER BY version LIMIT $2",
                    $crate::store::sql::SUBSCRIPTION_COLUMNS
                );
                let rows: Vec<$crate::store::rows::SubscriptionRow> = sqlx::query_as(&sql)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(|r| r.into_change(&self.keys)).collect()
            }

            async fn record_circuit(
                &self,
                id: &$crate::domain::SubscriptionId,
                circuit: &$crate::domain::CircuitRecord,
            ) -> $crate::store::Result<()> {
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

            async fn get_circuit(
                &self,
                id: &$crate::domain::SubscriptionId,
            ) -> $crate::store::Result<Option<$crate::domain::CircuitRecord>> {
                let row: Option<(bool, Option<i64>, Option<i64>, i64)> = sqlx::query_as(
                    "SELECT open, opened_ms, until_ms, changed_ms FROM subscription_circuits \
                     WHERE subscription_id = $1",
                )
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(open, opened_ms, until_ms, changed_ms)| {
                    $crate::domain::CircuitRecord { open, opened_ms, until_ms, changed_ms }
                }))
            }

            async fn insert_attempts(
                &self,
                attempts: &[$crate::domain::Attempt],
            ) -> $crate::store::Result<()> {
                if attempts.is_empty() {
                    return Ok(());
                }
                let mut insert = sqlx::QueryBuilder::<$db>::new(format!(
                    "INSERT INTO attempts ({}) ",
                    $crate::store::sql::ATTEMPT_COLUMNS
                ));
                insert.push_values(attempts, |mut row, a| {
                    row.push_bind(a.id.as_str())
                        .push_bind(&a.event_id)
                        .push_bind(a.webhook_id.as_str())
                        .push_bind(a.subscription_id.as_str())
                        .push_bind(a.tenant_id.as_str())
                        .push_bind(&a.event_type)
                        .push_bind(i64::from(a.attempt))
                        .push_bind(a.outcome.as_str())
                        .push_bind(a.status_code.map(i64::from))
                        .push_bind(i64::from(a.latency_ms))
                        .push_bind(&a.error)
                        .push_bind(&a.response_excerpt)
                        .push_bind(a.created_at);
                });
                // Replays of a batch after a failed write must not fail on
                // rows that did land.
                insert.push(" ON CONFLICT (id) DO NOTHING");
                insert.build().execute(&self.pool).await?;
                Ok(())
            }

            async fn attempts_for_event(
                &self,
                tenant: Option<&$crate::domain::TenantId>,
                event_id: &str,
            ) -> $crate::store::Result<Vec<$crate::domain::Attempt>> {
                let sql = format!(
                    "SELECT {} FROM attempts WHERE event_id = $1 \
                     AND ($2 IS NULL OR tenant_id = $2) ORDER BY created_at, id",
                    $crate::store::sql::ATTEMPT_COLUMNS
                );
                let rows: Vec<$crate::store::rows::AttemptRow> = sqlx::query_as(&sql)
                    .bind(event_id)
                    .bind(tenant.map(|t| t.as_str()))
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(|r| r.into_attempt()).collect()
            }
        }
    };
}

pub(super) use {impl_store, impl_store_with, insert_subscription};
