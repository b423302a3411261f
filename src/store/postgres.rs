//! The PostgreSQL backend: production, the chart and the test suite.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

use super::dead_letters::dead_letter_methods;
use super::sql::impl_store;
use super::{redact, Error, Result};

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    const MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|source| Error::Connect { url: redact(url), source })?;
        Ok(Self { pool })
    }
}

impl_store!(PgStore, sqlx::Postgres);
dead_letter_methods!(PgStore, sqlx::Postgres);
