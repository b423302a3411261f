//! The SQLite backend: the embedded store of `hookgate dev`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use super::dead_letters::dead_letter_methods;
use super::resealing::secret_methods;
use super::sql::impl_store;
use super::{Error, Result};

pub struct SqliteStore {
    pool: SqlitePool,
    /// Seal secrets before they are written, open them when read.
    keys: super::SecretKeys,
}

impl SqliteStore {
    const MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

    pub async fn connect(url: &str, keys: super::SecretKeys) -> Result<Self> {
        let connect_error = |source| Error::Connect { url: url.to_owned(), source };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(connect_error)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        Ok(Self { pool, keys })
    }

    async fn run_migrations(&self) -> Result<()> {
        Self::MIGRATOR.run(&self.pool).await?;
        Ok(())
    }
}

impl_store!(SqliteStore, sqlx::Sqlite);
dead_letter_methods!(SqliteStore, sqlx::Sqlite);
secret_methods!(SqliteStore, sqlx::Sqlite);
