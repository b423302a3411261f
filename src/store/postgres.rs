//! The PostgreSQL backend: production, the chart and the test suite.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::sql::PgStore;
use super::{redact, Backend, Error, Result, SecretKeys};

const MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl PgStore {
    pub async fn connect(url: &str, keys: SecretKeys) -> Result<Self> {
        Self::connect_with(url, None, keys).await
    }

    /// With `statement_timeout`, every connection of the pool cancels a
    /// statement that runs longer (SQLSTATE 57014): a slow query cannot
    /// hold a connection, nor the request waiting on it, for ever.
    pub async fn connect_with(
        url: &str,
        statement_timeout: Option<Duration>,
        keys: SecretKeys,
    ) -> Result<Self> {
        let mut options =
            PgPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(5));
        if let Some(timeout) = statement_timeout {
            // A SET after connecting rather than a startup parameter:
            // connection poolers (PgBouncer) refuse unknown startup options.
            let setting = format!("{}ms", timeout.as_millis());
            options = options.after_connect(move |connection, _| {
                let setting = setting.clone();
                Box::pin(async move {
                    sqlx::query("SELECT set_config('statement_timeout', $1, false)")
                        .bind(setting)
                        .execute(connection)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = options
            .connect(url)
            .await
            .map_err(|source| Error::Connect { url: redact(url), source })?;
        Ok(Self { pool, keys })
    }

    /// The pool, for tests that check what its connections do.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Backend for PgStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Migrations may outlast the statement timeout (an index built on a
    /// large table): they run on a connection of their own without it,
    /// which is closed afterwards instead of going back to the pool.
    async fn migrate(&self) -> Result<()> {
        let mut connection = self.pool.acquire().await?;
        connection.close_on_drop();
        sqlx::query("SET statement_timeout = 0").execute(&mut *connection).await?;
        MIGRATOR.run_direct(&mut *connection).await?;
        Ok(())
    }
}
