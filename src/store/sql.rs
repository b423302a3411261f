//! What both backends share: the store struct, and the helpers every table
//! group's SQL uses.
//!
//! PostgreSQL and SQLite accept the same SQL here (`$N` placeholders,
//! `RETURNING`, `ON CONFLICT`), so each group writes its statements once,
//! in one `macro_rules!` that expands its `impl` for each backend
//! (`sqlx::Postgres` and `sqlx::Sqlite`). A macro rather than a body generic
//! over `sqlx::Database`: such a body would need a bound for every type it
//! binds or reads. Long rows are bound with `sqlx::QueryBuilder`, which
//! writes the placeholders.

use sqlx::{Database, Encode, QueryBuilder, Type};

use super::{Error, Result, SecretKeys};
use crate::domain::Scope;

/// The store on one sqlx database: a pool, and the keys that seal secrets
/// before they are written and open them when read.
#[derive(Debug)]
pub struct SqlStore<DB: Database> {
    pub(super) pool: sqlx::Pool<DB>,
    pub(super) keys: SecretKeys,
}

/// The PostgreSQL backend: production, the chart and the test suite.
pub type PgStore = SqlStore<sqlx::Postgres>;

/// The SQLite backend: the embedded store of `hookgate dev`.
pub type SqliteStore = SqlStore<sqlx::Sqlite>;

/// Taken first by every transaction that writes a subscription (or an event
/// type): its row lock orders the writers, and the version it answers
/// orders their changes.
pub(super) const BUMP_VERSION: &str =
    "UPDATE subscription_version SET version = version + 1 RETURNING version";

/// `AND tenant_id = …` when the scope is one tenant's; nothing for all.
pub(super) fn push_scope<'a, DB: Database>(query: &mut QueryBuilder<'a, DB>, scope: Scope<'a>)
where
    &'a str: Encode<'a, DB> + Type<DB>,
{
    match scope {
        Scope::All => {}
        Scope::Tenant(tenant) => {
            query.push(" AND tenant_id = ").push_bind(tenant.as_str());
        }
    }
}

/// A count as the domain keeps it; a stored value out of range is corrupt.
pub(super) fn to_u32(value: i64, column: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::Corrupt(format!("{column} = {value}")))
}

/// `(a, b, c)` from a column list, for an `INSERT`.
pub(super) fn column_list(columns: &[&str]) -> String {
    format!("({})", columns.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TenantId;

    #[test]
    fn a_tenant_scope_adds_one_bound_condition_and_all_adds_none() {
        let tenant = TenantId::default_tenant();
        let mut query = QueryBuilder::<sqlx::Postgres>::new("SELECT 1 WHERE 1 = 1");
        push_scope(&mut query, Scope::All);
        assert_eq!(query.sql(), "SELECT 1 WHERE 1 = 1");
        push_scope(&mut query, Scope::Tenant(&tenant));
        assert_eq!(query.sql(), "SELECT 1 WHERE 1 = 1 AND tenant_id = $1");
        let mut query = QueryBuilder::<sqlx::Sqlite>::new("SELECT 1 WHERE 1 = 1");
        push_scope(&mut query, Scope::Tenant(&tenant));
        assert_eq!(query.sql(), "SELECT 1 WHERE 1 = 1 AND tenant_id = ?");
    }
}
