//! The SQL of the REST API's resources (tenants, keys, event types,
//! idempotency records, subscription writes and lists), shared by both
//! backends like `sql.rs`: these macros expand to methods inside `impl_store!`.

pub(super) const TENANT_COLUMNS: &str = "id, name, created_at";
pub(super) const API_KEY_COLUMNS: &str = "id, tenant_id, name, prefix, created_at, revoked_at";
pub(super) const EVENT_TYPE_COLUMNS: &str =
    "name, description, json_schema, visible_to, created_at";

/// What a guarded write that matched no row met: the subscription at
/// another version, or none (inside the write's transaction).
macro_rules! missed {
    ($tx:ident, $tenant:expr, $id:expr) => {{
        let current: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM subscriptions WHERE id = $1 AND deleted_at IS NULL \
             AND ($2 IS NULL OR tenant_id = $2)",
        )
        .bind($id.as_str())
        .bind($tenant.map(|t| t.as_str()))
        .fetch_optional(&mut *$tx)
        .await?;
        match current {
            Some(current) => $crate::store::Guarded::Stale { current },
            None => $crate::store::Guarded::NotFound,
        }
    }};
}

/// Expands `impl_store_with!` with the methods of the API's resources. The
/// methods go in as tokens, because `#[async_trait]` must see them expanded.
macro_rules! api_methods {
    ($store:ty, $db:ty) => {
        $crate::store::sql::impl_store_with!($store, $db, {
        async fn create_tenant(
            &self,
            tenant: &$crate::domain::Tenant,
        ) -> $crate::store::Result<()> {
            sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
                .bind(tenant.id.as_str())
                .bind(&tenant.name)
                .bind(tenant.created_at)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn get_tenant(
            &self,
            id: &$crate::domain::TenantId,
        ) -> $crate::store::Result<Option<$crate::domain::Tenant>> {
            let sql = format!(
                "SELECT {} FROM tenants WHERE id = $1",
                $crate::store::sql_api::TENANT_COLUMNS
            );
            let row: Option<$crate::store::rows::TenantRow> = sqlx::query_as(&sql)
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.map(Into::into))
        }

        async fn list_tenants(
            &self,
            page: $crate::store::Page<'_>,
        ) -> $crate::store::Result<Vec<$crate::domain::Tenant>> {
            let sql = format!(
                "SELECT {} FROM tenants WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2",
                $crate::store::sql_api::TENANT_COLUMNS
            );
            let rows: Vec<$crate::store::rows::TenantRow> = sqlx::query_as(&sql)
                .bind(page.after)
                .bind(page.limit)
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        }

        async fn create_api_key(
            &self,
            key: &$crate::domain::ApiKey,
            key_hash: &str,
        ) -> $crate::store::Result<()> {
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
            tenant: &$crate::domain::TenantId,
            page: $crate::store::Page<'_>,
        ) -> $crate::store::Result<Vec<$crate::domain::ApiKey>> {
            let sql = format!(
                "SELECT {} FROM api_keys WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) \
                 ORDER BY id LIMIT $3",
                $crate::store::sql_api::API_KEY_COLUMNS
            );
            let rows: Vec<$crate::store::rows::ApiKeyRow> = sqlx::query_as(&sql)
                .bind(tenant.as_str())
                .bind(page.after)
                .bind(page.limit)
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        }

        async fn revoke_api_key(
            &self,
            tenant: &$crate::domain::TenantId,
            id: &$crate::domain::ApiKeyId,
            at: chrono::DateTime<chrono::Utc>,
        ) -> $crate::store::Result<bool> {
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

        async fn tenant_for_key(
            &self,
            key_hash: &str,
        ) -> $crate::store::Result<Option<$crate::domain::TenantId>> {
            let tenant: Option<String> = sqlx::query_scalar(
                "SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
            )
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?;
            Ok(tenant.map($crate::domain::TenantId::from_trusted))
        }
        async fn list_subscriptions(
            &self,
            tenant: &$crate::domain::TenantId,
            status: Option<$crate::domain::SubscriptionStatus>,
            page: $crate::store::Page<'_>,
        ) -> $crate::store::Result<Vec<$crate::domain::Subscription>> {
            let sql = format!(
                "SELECT {} FROM subscriptions WHERE tenant_id = $1 AND deleted_at IS NULL \
                 AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR id > $3) \
                 ORDER BY id LIMIT $4",
                $crate::store::sql::SUBSCRIPTION_COLUMNS
            );
            let rows: Vec<$crate::store::rows::SubscriptionRow> = sqlx::query_as(&sql)
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
            tenant: Option<&$crate::domain::TenantId>,
            id: &$crate::domain::SubscriptionId,
            patch: &$crate::domain::SubscriptionPatch,
            expected: Option<i64>,
            at: chrono::DateTime<chrono::Utc>,
        ) -> $crate::store::Result<$crate::store::Guarded<$crate::domain::Subscription>> {
            use sqlx::types::Json;
            let mut tx = self.pool.begin().await?;
            let version: i64 = sqlx::query_scalar($crate::store::sql::BUMP_VERSION)
                .fetch_one(&mut *tx)
                .await?;
            // Only the columns the patch names: a concurrent rotation or
            // disable of the others stands.
            let mut update = sqlx::QueryBuilder::<$db>::new("UPDATE subscriptions SET version = ");
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
                let stored: Option<$crate::store::rows::StoredHeaders> = sqlx::query_as(
                    "SELECT headers, secret_headers, version FROM subscriptions \
                     WHERE id = $1 AND deleted_at IS NULL AND ($2 IS NULL OR tenant_id = $2)",
                )
                .bind(id.as_str())
                .bind(tenant.map(|t| t.as_str()))
                .fetch_optional(&mut *tx)
                .await?;
                let Some(stored) = stored else { return Ok($crate::store::Guarded::NotFound) };
                if expected.is_some_and(|v| v != stored.version()) {
                    return Ok($crate::store::Guarded::Stale { current: stored.version() });
                }
                match stored.patched(&self.keys, id.as_str(), patch)? {
                    $crate::store::rows::PatchedHeaders::Write { headers, secret_headers } => {
                        update
                            .push(", headers = ")
                            .push_bind(headers)
                            .push(", secret_headers = ")
                            .push_bind(secret_headers);
                    }
                    $crate::store::rows::PatchedHeaders::Stale { current } => {
                        return Ok($crate::store::Guarded::Stale { current });
                    }
                }
            }
            if let Some(status) = patch.status {
                update.push(", status = ").push_bind(status.as_str()).push(", disabled_reason = NULL");
            }
            if let Some(description) = &patch.description {
                update.push(", description = ").push_bind(description);
            }
            if let Some(metadata) = &patch.metadata {
                update.push(", metadata = ").push_bind(Json(metadata));
            }
            update.push(" WHERE id = ").push_bind(id.as_str()).push(" AND deleted_at IS NULL");
            if let Some(tenant) = tenant {
                update.push(" AND tenant_id = ").push_bind(tenant.as_str());
            }
            if let Some(expected) = expected {
                update.push(" AND version = ").push_bind(expected);
            }
            update.push(format!(" RETURNING {}", $crate::store::sql::SUBSCRIPTION_COLUMNS));
            let row: Option<$crate::store::rows::SubscriptionRow> =
                update.build_query_as().fetch_optional(&mut *tx).await?;
            let Some(row) = row else {
                // Dropping the transaction rolls the version bump back.
                return Ok($crate::store::sql_api::missed!(tx, tenant, id));
            };
            let subscription = row.into_change(&self.keys)?.subscription;
            tx.commit().await?;
            Ok($crate::store::Guarded::Written(subscription))
        }

        async fn rotate_subscription_secret(
            &self,
            tenant: Option<&$crate::domain::TenantId>,
            id: &$crate::domain::SubscriptionId,
            rotation: $crate::store::SecretRotation<'_>,
            expected: Option<i64>,
        ) -> $crate::store::Result<$crate::store::Guarded<$crate::domain::Subscription>> {
            use sqlx::types::Json;
            let mut tx = self.pool.begin().await?;
            // Taking the version row first orders this transaction after every
            // other subscription write (each takes it first), so the secrets
            // read below are the current ones until the commit.
            let version: i64 = sqlx::query_scalar($crate::store::sql::BUMP_VERSION)
                .fetch_one(&mut *tx)
                .await?;
            let sql = format!(
                "SELECT {} FROM subscriptions WHERE id = $1 AND deleted_at IS NULL \
                 AND ($2 IS NULL OR tenant_id = $2)",
                $crate::store::sql::SUBSCRIPTION_COLUMNS
            );
            let row: Option<$crate::store::rows::SubscriptionRow> = sqlx::query_as(&sql)
                .bind(id.as_str())
                .bind(tenant.map(|t| t.as_str()))
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else { return Ok($crate::store::Guarded::NotFound) };
            let mut s = row.into_change(&self.keys)?.subscription;
            if let Some(current) = expected.filter(|v| *v != s.version).map(|_| s.version) {
                return Ok($crate::store::Guarded::Stale { current });
            }
            if s.unreadable.is_some() {
                // The secret it would keep signing with is not readable.
                return Err($crate::store::Error::Unreadable(s.id.as_str().to_owned()));
            }
            if !s.rotate_secret(rotation.secret, rotation.grace_ends, rotation.now) {
                return Ok($crate::store::Guarded::SameSecret);
            }
            s.version = version;
            let secret = $crate::store::rows::seal_secret(&self.keys, id.as_str(), &s.secret)?;
            let previous =
                $crate::store::rows::seal_previous(&self.keys, id.as_str(), &s.previous_secrets)?;
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
            Ok($crate::store::Guarded::Written(s))
        }

        async fn delete_subscription(
            &self,
            tenant: Option<&$crate::domain::TenantId>,
            id: &$crate::domain::SubscriptionId,
            expected: Option<i64>,
            at: chrono::DateTime<chrono::Utc>,
        ) -> $crate::store::Result<$crate::store::Guarded<()>> {
            let mut tx = self.pool.begin().await?;
            let version: i64 = sqlx::query_scalar($crate::store::sql::BUMP_VERSION)
                .fetch_one(&mut *tx)
                .await?;
            let done = sqlx::query(
                "UPDATE subscriptions SET deleted_at = $3, updated_at = $3, version = $4 \
                 WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2) AND deleted_at IS NULL \
                 AND ($5 IS NULL OR version = $5)",
            )
            .bind(id.as_str())
            .bind(tenant.map(|t| t.as_str()))
            .bind(at)
            .bind(version)
            .bind(expected)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Ok($crate::store::sql_api::missed!(tx, tenant, id));
            }
            tx.commit().await?;
            Ok($crate::store::Guarded::Written(()))
        }

        async fn create_event_type(
            &self,
            t: &$crate::domain::EventType,
        ) -> $crate::store::Result<bool> {
            let visible_to: Option<Vec<&str>> =
                t.visible_to.as_ref().map(|ids| ids.iter().map(|id| id.as_str()).collect());
            // The version orders it among subscription changes, which the
            // dispatchers load in the same refresh.
            let mut tx = self.pool.begin().await?;
            let version: i64 = sqlx::query_scalar($crate::store::sql::BUMP_VERSION)
                .fetch_one(&mut *tx)
                .await?;
            let done = sqlx::query(
                "INSERT INTO event_types \
                 (name, description, json_schema, visible_to, version, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
            )
            .bind(&t.name)
            .bind(&t.description)
            .bind(t.schema.as_ref().map(sqlx::types::Json))
            .bind(visible_to.map(sqlx::types::Json))
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

        async fn update_event_type(
            &self,
            t: &$crate::domain::EventType,
        ) -> $crate::store::Result<bool> {
            let visible_to: Option<Vec<&str>> =
                t.visible_to.as_ref().map(|ids| ids.iter().map(|id| id.as_str()).collect());
            let mut tx = self.pool.begin().await?;
            let version: i64 = sqlx::query_scalar($crate::store::sql::BUMP_VERSION)
                .fetch_one(&mut *tx)
                .await?;
            let done = sqlx::query(
                "UPDATE event_types SET description = $2, json_schema = $3, visible_to = $4, \
                 version = $5 WHERE name = $1",
            )
            .bind(&t.name)
            .bind(&t.description)
            .bind(t.schema.as_ref().map(sqlx::types::Json))
            .bind(visible_to.map(sqlx::types::Json))
            .bind(version)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            tx.commit().await?;
            Ok(true)
        }

        async fn event_type_changes(
            &self,
            after: i64,
        ) -> $crate::store::Result<Vec<$crate::store::EventTypeChange>> {
            let rows: Vec<$crate::store::rows::EventTypeChangeRow> = sqlx::query_as(
                "SELECT version, name, visible_to FROM event_types WHERE version > $1 \
                 ORDER BY version",
            )
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        }

        async fn get_event_type(
            &self,
            name: &str,
        ) -> $crate::store::Result<Option<$crate::domain::EventType>> {
            let sql = format!(
                "SELECT {} FROM event_types WHERE name = $1",
                $crate::store::sql_api::EVENT_TYPE_COLUMNS
            );
            let row: Option<$crate::store::rows::EventTypeRow> = sqlx::query_as(&sql)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.map(Into::into))
        }

        async fn list_event_types(
            &self,
            page: $crate::store::Page<'_>,
        ) -> $crate::store::Result<Vec<$crate::domain::EventType>> {
            let sql = format!(
                "SELECT {} FROM event_types WHERE ($1 IS NULL OR name > $1) \
                 ORDER BY name LIMIT $2",
                $crate::store::sql_api::EVENT_TYPE_COLUMNS
            );
            let rows: Vec<$crate::store::rows::EventTypeRow> = sqlx::query_as(&sql)
                .bind(page.after)
                .bind(page.limit)
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        }

        async fn idempotency_claim(
            &self,
            scope: &str,
            key: &str,
            request_hash: &str,
            now: chrono::DateTime<chrono::Utc>,
            stale_before: chrono::DateTime<chrono::Utc>,
        ) -> $crate::store::Result<bool> {
            // The primary key makes exactly one of concurrent inserts win.
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (scope, idem_key, request_hash, status, created_at) \
                 VALUES ($1, $2, $3, 'in_progress', $4) ON CONFLICT (scope, idem_key) DO NOTHING",
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
        ) -> $crate::store::Result<Option<$crate::store::IdempotencyRecord>> {
            let row: Option<$crate::store::rows::IdempotencyRow> = sqlx::query_as(
                "SELECT request_hash, status, response_status, response_body, created_at \
                 FROM idempotency_keys WHERE scope = $1 AND idem_key = $2",
            )
            .bind(scope)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
            row.map(|r| r.into_record()).transpose()
        }

        async fn idempotency_complete(
            &self,
            scope: &str,
            key: &str,
            status: u16,
            body: &str,
        ) -> $crate::store::Result<()> {
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

        async fn idempotency_release(&self, scope: &str, key: &str) -> $crate::store::Result<()> {
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

        async fn purge_idempotency(
            &self,
            before: chrono::DateTime<chrono::Utc>,
        ) -> $crate::store::Result<u64> {
            let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected())
        }

        async fn list_attempts(
            &self,
            filter: &$crate::store::AttemptFilter<'_>,
            page: $crate::store::Page<'_>,
        ) -> $crate::store::Result<Vec<$crate::domain::Attempt>> {
            let sql = format!(
                "SELECT {} FROM attempts WHERE ($1 IS NULL OR tenant_id = $1) \
                 AND ($2 IS NULL OR subscription_id = $2) AND ($3 IS NULL OR event_id = $3) \
                 AND ($4 IS NULL OR id > $4) ORDER BY id LIMIT $5",
                $crate::store::sql::ATTEMPT_COLUMNS
            );
            let rows: Vec<$crate::store::rows::AttemptRow> = sqlx::query_as(&sql)
                .bind(filter.tenant.map(|t| t.as_str()))
                .bind(filter.subscription.map(|s| s.as_str()))
                .bind(filter.event_id)
                .bind(page.after)
                .bind(page.limit)
                .fetch_all(&self.pool)
                .await?;
            rows.into_iter().map(|r| r.into_attempt()).collect()
        }
        });
    };
}

pub(super) use {api_methods, missed};
