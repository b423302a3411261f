//! The two migration sets (`migrations/` for PostgreSQL, `migrations/sqlite/`)
//! differ only in type names: migrated from scratch, they make the same
//! tables, columns (name, nullability, a matching type) and indexes.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::Connection;

use crate::harness::TestDb;

/// Table → column → (type, nullable).
type Columns = BTreeMap<String, BTreeMap<String, (String, bool)>>;
/// (table, index) made by `CREATE INDEX`.
type Indexes = BTreeSet<(String, String)>;

/// The SQLite declared types that hold what a PostgreSQL type holds: times
/// and JSON are stored as text there, booleans as integers.
fn sqlite_types_for(postgres: &str) -> &'static [&'static str] {
    match postgres {
        "text" | "timestamp with time zone" | "jsonb" => &["TEXT"],
        "bigint" | "integer" => &["INTEGER", "BIGINT"],
        "boolean" => &["BOOLEAN", "INTEGER"],
        "bytea" => &["BLOB"],
        // A type the sets do not use yet: add its SQLite counterpart here.
        _ => &[],
    }
}

async fn postgres_schema(url: &str) -> (Columns, Indexes) {
    let mut db = sqlx::PgConnection::connect(url).await.expect("connect");
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text \
         FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut db)
    .await
    .expect("columns");
    let mut columns = Columns::new();
    for (table, column, data_type, nullable) in rows {
        columns.entry(table).or_default().insert(column, (data_type, nullable == "YES"));
    }
    // Those of primary keys and UNIQUE constraints are named by PostgreSQL.
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT tablename::text, indexname::text FROM pg_indexes \
         WHERE schemaname = current_schema() AND tablename <> '_sqlx_migrations' \
         AND indexname NOT IN (SELECT conname FROM pg_constraint)",
    )
    .fetch_all(&mut db)
    .await
    .expect("indexes");
    (columns, indexes.into_iter().collect())
}

async fn sqlite_schema(url: &str) -> (Columns, Indexes) {
    let mut db = sqlx::SqliteConnection::connect(url).await.expect("connect");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut db)
    .await
    .expect("tables");
    let mut columns = Columns::new();
    for table in tables {
        let rows: Vec<(String, String, i64, i64)> =
            sqlx::query_as("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?)")
                .bind(&table)
                .fetch_all(&mut db)
                .await
                .expect("columns");
        let of_table = columns.entry(table).or_default();
        for (column, declared, not_null, pk) in rows {
            // A primary key column is NOT NULL in PostgreSQL whether or not
            // it says so; SQLite takes it at its word.
            of_table.insert(column, (declared.to_uppercase(), not_null == 0 && pk == 0));
        }
    }
    // Automatic indexes (of keys and UNIQUE) have no SQL.
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT tbl_name, name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
    )
    .fetch_all(&mut db)
    .await
    .expect("indexes");
    (columns, indexes.into_iter().collect())
}

/// Every way the two schemas differ, one line each.
fn differences(postgres: &Columns, sqlite: &Columns) -> Vec<String> {
    let mut found = Vec::new();
    let tables: BTreeSet<&String> = postgres.keys().chain(sqlite.keys()).collect();
    let none = BTreeMap::new();
    for table in tables {
        let (pg, lite) = (postgres.get(table).unwrap_or(&none), sqlite.get(table).unwrap_or(&none));
        let columns: BTreeSet<&String> = pg.keys().chain(lite.keys()).collect();
        for column in columns {
            match (pg.get(column), lite.get(column)) {
                (Some(_), None) => found.push(format!("{table}.{column}: only in PostgreSQL")),
                (None, Some(_)) => found.push(format!("{table}.{column}: only in SQLite")),
                (Some((pg_type, pg_null)), Some((lite_type, lite_null))) => {
                    if !sqlite_types_for(pg_type).contains(&lite_type.as_str()) {
                        found.push(format!(
                            "{table}.{column}: {pg_type} in PostgreSQL, {lite_type} in SQLite"
                        ));
                    }
                    if pg_null != lite_null {
                        found.push(format!(
                            "{table}.{column}: nullable {pg_null} in PostgreSQL, \
                             {lite_null} in SQLite"
                        ));
                    }
                }
                (None, None) => {}
            }
        }
    }
    found
}

#[tokio::test]
async fn both_migration_sets_make_the_same_tables_columns_and_indexes() {
    let (postgres, sqlite) = (TestDb::postgres().await, TestDb::sqlite());
    postgres.store().await;
    sqlite.store().await;
    let (pg_columns, pg_indexes) = postgres_schema(&postgres.url).await;
    let (lite_columns, lite_indexes) = sqlite_schema(&sqlite.url).await;

    assert!(pg_columns.contains_key("subscriptions"), "the schema is read: {pg_columns:?}");
    assert_eq!(
        pg_columns.keys().collect::<Vec<_>>(),
        lite_columns.keys().collect::<Vec<_>>(),
        "the same tables"
    );
    let found = differences(&pg_columns, &lite_columns);
    assert!(found.is_empty(), "the migration sets differ:\n{}", found.join("\n"));
    assert_eq!(pg_indexes, lite_indexes, "the same indexes, by table and name");
}
