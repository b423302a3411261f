//! The PostgreSQL backend: production, the chart and the test suite.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

use super::dead_letters::dead_letter_methods;
use super::resealing::secret_methods;
use super::sql::impl_store;
use super::{redact, Error, Result};

pub struct PgStore {
    pool: PgPool,
    /// Seal secrets before they are written, open them when read.
    keys: super::SecretKeys,
}

impl PgStore {
    const MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

    pub async fn connect(url: &str, keys: super::SecretKeys) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|source| Error::Connect { url: redact(url), source })?;
        Ok(Self { pool, keys })
    }
}

impl_store!(PgStore, sqlx::Postgres);
dead_letter_methods!(PgStore, sqlx::Postgres);
secret_methods!(PgStore, sqlx::Postgres);
