//! `nfsprov db migrate-to`: copy the SQLite database of a data directory into an empty
//! PostgreSQL database, so the nodes that share it start with everything the one node had.
//!
//! Rules, each for a reason:
//! - The source is only read: no migration is applied to it and nothing is written, so going
//!   back is starting the old node again. Its schema must be this binary's (the same applied
//!   migrations), since the target gets this binary's PostgreSQL schema.
//! - The copy reads inside one SQLite write transaction (`BEGIN IMMEDIATE`): no writer can
//!   change the source between the first table and the last, and the counts compared at the
//!   end are the counts that were read. A node still running on the source is refused
//!   outright (it holds a live server lease): it would go on writing to SQLite after the copy.
//! - The target is written in one PostgreSQL transaction that first locks every table: it
//!   holds all rows or none, and no node on it (nor a second migrate-to) writes meanwhile.
//!   A target holding any row is refused, naming the table.
//! - Values are copied as stored (integers, text; JSON and times are text in both schemas),
//!   so the audit trail's hash chain verifies on the target; the audit table's highest id
//!   ever given (SQLite's `sqlite_sequence`) goes to `audit_head`, and every identity column
//!   continues after its table's highest id.
//! - The table list is checked against both schemas: a table or column that one has and the
//!   other lacks stops the copy instead of being left behind.
//! - The target's URL is shown only with its password replaced (`redacted_url`).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::TryStreamExt as _;
use sqlx::postgres::{PgArguments, Postgres};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, Connection as _, Row as _};

use super::leases::holder_is_dead;

/// Every table of nfsprov's schema, in an order that inserts a referenced row before the
/// rows that reference it. PostgreSQL's `audit_head` is filled from SQLite's
/// `sqlite_sequence` instead of being copied.
const TABLES: &[&str] = &[
    "servers",
    "root_paths",
    "users",
    "volumes",
    "api_tokens",
    "audit",
    "volume_usage",
    "root_path_usage",
    "snapshots",
    "restores",
    "server_leases",
];

/// Tables of the target that are not copied row by row: the migrations' own, and the audit
/// head (set from the source's sequence).
const PG_ONLY: &[&str] = &["_sqlx_migrations", "audit_head"];

/// Rows per INSERT statement (PostgreSQL takes at most 65535 binds per statement).
const ROWS_PER_INSERT: usize = 500;

/// What a migration copied.
#[derive(Debug)]
pub struct Migrated {
    /// The target, its password replaced.
    pub target: String,
    /// Each table and its rows, in the order copied (the same count on both sides).
    pub tables: Vec<(&'static str, i64)>,
    /// The highest audit id ever given (the next record gets this plus one).
    pub audit_seq: i64,
    /// Each identity column and the next value it gives.
    pub next_ids: Vec<(String, i64)>,
}

/// `url` as it may be shown: the password replaced by `***`. A URL that does not parse is not
/// shown at all (where its password would be is unknown).
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(the database URL given, not shown: it does not parse as a URL)".into(),
    }
}

/// Copy the SQLite database at `sqlite` into the empty PostgreSQL database `url` (see the
/// module's rules).
pub async fn migrate_to(sqlite: &Path, url: &str) -> anyhow::Result<Migrated> {
    let target = redacted_url(url);
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!(
            "the target must be a PostgreSQL URL (postgres://user:password@host/database), not {target}"
        );
    }
    if !sqlite.is_file() {
        bail!(
            "no SQLite database at {}: nothing to migrate (give the data directory of the node, --data-dir or NFSPROV_DATA_DIR)",
            sqlite.display()
        );
    }
    let options = SqliteConnectOptions::new()
        .filename(sqlite)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(30));
    let mut src = SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("opening the SQLite database {}", sqlite.display()))?;
    same_schema_version(&mut src, sqlite).await?;
    let mut src = src
        .begin_with("BEGIN IMMEDIATE")
        .await
        .with_context(|| format!("taking the write lock of {}", sqlite.display()))?;
    no_running_node(&mut src).await?;
    let sqlite_tables = sqlite_tables(&mut src).await?;

    // One connection first: its error names the cause (refused, unknown host, password),
    // where the pool's would only say that it timed out.
    let options = super::postgres::connect_options(url)?;
    sqlx::PgConnection::connect_with(&options)
        .await
        .map_err(|e| super::postgres::connect_error(e, &options))
        .with_context(|| format!("target {target}: connecting"))?
        .close()
        .await
        .ok();
    let pool = super::postgres::open(url)
        .await
        .with_context(|| format!("target {target}"))?;
    let mut dst = pool
        .begin()
        .await
        .with_context(|| format!("target {target}: starting a transaction"))?;
    let pg_tables = pg_tables(&mut dst).await?;
    let ours: BTreeSet<String> = TABLES.iter().map(|t| t.to_string()).collect();
    for (side, tables) in [("SQLite", &sqlite_tables), ("PostgreSQL", &pg_tables)] {
        if let Some(t) = tables.symmetric_difference(&ours).next() {
            bail!(
                "the {side} schema and this nfsprov's list of tables differ at table {t}: nothing was copied (a bug: report it)"
            );
        }
    }
    // Every table at once, before reading any: nothing on the target writes until the commit.
    let all = TABLES.iter().chain(&["audit_head"]).copied();
    let lock = format!(
        "LOCK TABLE {} IN EXCLUSIVE MODE",
        all.map(quoted).collect::<Vec<_>>().join(", ")
    );
    sqlx::query(AssertSqlSafe(lock))
        .execute(&mut *dst)
        .await
        .with_context(|| format!("target {target}: locking its tables"))?;
    empty_target(&mut dst).await?;

    let mut tables = Vec::with_capacity(TABLES.len());
    for &table in TABLES {
        let columns = columns(&mut src, &mut dst, table).await?;
        let copied = copy_table(&mut src, &mut dst, table, &columns).await?;
        let source_rows = count_source(&mut src, table).await?;
        let target_rows = count_target(&mut dst, table).await?;
        if i64::try_from(copied).ok() != Some(source_rows) || target_rows != source_rows {
            bail!(
                "table {table}: {source_rows} rows in SQLite, {copied} copied, {target_rows} in PostgreSQL; nothing was kept"
            );
        }
        tables.push((table, source_rows));
    }

    let audit_seq: i64 = sqlx::query_scalar(
        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'audit'), 0)",
    )
    .fetch_one(&mut *src)
    .await
    .context("reading the audit trail's sequence")?;
    sqlx::query("UPDATE audit_head SET seq = $1")
        .bind(audit_seq)
        .execute(&mut *dst)
        .await
        .context("setting the audit trail's sequence")?;
    let next_ids = reset_identities(&mut dst).await?;

    dst.commit()
        .await
        .with_context(|| format!("target {target}: committing the copy"))?;
    // Only read: let go of the lock without writing.
    src.rollback().await.ok();
    pool.close().await;
    Ok(Migrated {
        target,
        tables,
        audit_seq,
        next_ids,
    })
}

/// Refuse a source whose applied migrations are not exactly this binary's.
async fn same_schema_version(src: &mut SqliteConnection, path: &Path) -> anyhow::Result<()> {
    let ours: Vec<i64> = sqlx::migrate!("./migrations")
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
        .collect();
    let theirs: Vec<i64> = sqlx::query_scalar(
        "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(&mut *src)
    .await
    .with_context(|| {
        format!(
            "{} has no nfsprov schema (no table _sqlx_migrations): is it nfsprov's database?",
            path.display()
        )
    })?;
    if theirs != ours {
        let last = |v: &[i64]| v.last().map_or("none".to_string(), i64::to_string);
        bail!(
            "{} has schema version {} and this nfsprov {}: migrate with the nfsprov that wrote it, or first run this one's `nfsprov serve` on it once to bring it up to date (migrate-to changes nothing in the source)",
            path.display(),
            last(&theirs),
            last(&ours)
        );
    }
    Ok(())
}

/// Refuse while a node holds a live server lease on the source (a clean stop gives them up;
/// a crashed node's lease is ignored once its process is known to be gone).
async fn no_running_node(src: &mut SqliteConnection) -> anyhow::Result<()> {
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX);
    let leases: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT server_id, holder, expires_at FROM server_leases WHERE expires_at > ? ORDER BY server_id",
    )
    .bind(now_ms)
    .fetch_all(&mut *src)
    .await
    .context("reading the server leases")?;
    for (server, holder, expires_at) in leases {
        if holder_is_dead(&holder) {
            continue;
        }
        let secs = (expires_at - now_ms + 999) / 1000;
        bail!(
            "a node is running on this database: node {holder} holds the lease of server {server} for {secs} s more. Stop every `nfsprov serve` on this data directory first (a clean stop gives its leases up; a crashed node's lapses after NFSPROV_LEASE_SECS), then run migrate-to again"
        );
    }
    Ok(())
}

async fn sqlite_tables(src: &mut SqliteConnection) -> anyhow::Result<BTreeSet<String>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name != '_sqlx_migrations'",
    )
    .fetch_all(&mut *src)
    .await
    .context("listing the SQLite tables")?;
    Ok(names.into_iter().collect())
}

async fn pg_tables(dst: &mut sqlx::PgConnection) -> anyhow::Result<BTreeSet<String>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::TEXT FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut *dst)
    .await
    .context("listing the PostgreSQL tables")?;
    Ok(names
        .into_iter()
        .filter(|n| !PG_ONLY.contains(&n.as_str()))
        .collect())
}

/// Refuse a target with any row in any nfsprov table.
async fn empty_target(dst: &mut sqlx::PgConnection) -> anyhow::Result<()> {
    for &table in TABLES {
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", quoted(table));
        let any: bool = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&mut *dst)
            .await
            .with_context(|| format!("reading table {table} of the target"))?;
        if any {
            bail!(
                "the target database already holds data (table {table} has rows): migrate-to fills an empty database only. Give the URL of a new database (createdb), or, if this one holds only an earlier copy that nothing uses, drop it and create it again"
            );
        }
    }
    let seq: i64 = sqlx::query_scalar("SELECT seq FROM audit_head")
        .fetch_one(&mut *dst)
        .await
        .context("reading table audit_head of the target")?;
    if seq != 0 {
        bail!(
            "the target database already holds data (table audit_head: audit records were written to it): migrate-to fills an empty database only; give the URL of a new database"
        );
    }
    Ok(())
}

/// How a column's values are bound on PostgreSQL.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Int,
    Text,
    Real,
    Bool,
}

struct Column {
    name: String,
    kind: Kind,
}

/// The columns copied: the target's, without generated ones (computed there from the
/// others); the source must have exactly these (its generated ones aside).
async fn columns(
    src: &mut SqliteConnection,
    dst: &mut sqlx::PgConnection,
    table: &str,
) -> anyhow::Result<Vec<Column>> {
    let pg: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 AND is_generated = 'NEVER' \
         ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut *dst)
    .await
    .with_context(|| format!("reading the columns of {table} on PostgreSQL"))?;
    // `hidden` 0 is an ordinary column; 2 and 3 are generated ones.
    let sqlite: BTreeSet<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_xinfo(?) WHERE hidden = 0")
            .bind(table)
            .fetch_all(&mut *src)
            .await
            .with_context(|| format!("reading the columns of {table} on SQLite"))?
            .into_iter()
            .collect();
    let names: BTreeSet<String> = pg.iter().map(|(n, _)| n.clone()).collect();
    if let Some(c) = names.symmetric_difference(&sqlite).next() {
        bail!(
            "table {table}: column {c} is in one schema and not the other: nothing was copied (a bug: report it)"
        );
    }
    pg.into_iter()
        .map(|(name, ty)| {
            let kind = match ty.as_str() {
                "bigint" | "integer" | "smallint" => Kind::Int,
                "text" | "character varying" => Kind::Text,
                "double precision" | "real" => Kind::Real,
                "boolean" => Kind::Bool,
                other => bail!(
                    "table {table}, column {name}: type {other} is not copied (a bug: report it)"
                ),
            };
            Ok(Column { name, kind })
        })
        .collect()
}

/// Copy every row of `table`; how many.
async fn copy_table(
    src: &mut SqliteConnection,
    dst: &mut sqlx::PgConnection,
    table: &str,
    columns: &[Column],
) -> anyhow::Result<u64> {
    let list = columns
        .iter()
        .map(|c| quoted(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let select = format!("SELECT {list} FROM {}", quoted(table));
    let mut rows = sqlx::query(AssertSqlSafe(select)).fetch(&mut *src);
    let mut batch: Vec<SqliteRow> = Vec::with_capacity(ROWS_PER_INSERT);
    let mut copied = 0_u64;
    while let Some(row) = rows
        .try_next()
        .await
        .with_context(|| format!("reading table {table} of the source"))?
    {
        batch.push(row);
        if batch.len() == ROWS_PER_INSERT {
            copied += insert(dst, table, &list, columns, &batch).await?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        copied += insert(dst, table, &list, columns, &batch).await?;
    }
    Ok(copied)
}

async fn insert(
    dst: &mut sqlx::PgConnection,
    table: &str,
    list: &str,
    columns: &[Column],
    rows: &[SqliteRow],
) -> anyhow::Result<u64> {
    let mut sql = format!("INSERT INTO {} ({list}) VALUES ", quoted(table));
    let mut n = 0;
    for (i, _) in rows.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for j in 0..columns.len() {
            if j > 0 {
                sql.push_str(", ");
            }
            n += 1;
            sql.push_str(&format!("${n}"));
        }
        sql.push(')');
    }
    let mut query: sqlx::query::Query<'_, Postgres, PgArguments> = sqlx::query(AssertSqlSafe(sql));
    for row in rows {
        for (j, c) in columns.iter().enumerate() {
            // The source's value as stored: a type that does not fit the column is an error
            // naming it, never a conversion.
            let bad = |e: sqlx::Error| anyhow::anyhow!("table {table}, column {}: {e}", c.name);
            query = match c.kind {
                Kind::Int => query.bind(row.try_get::<Option<i64>, _>(j).map_err(bad)?),
                Kind::Text => query.bind(row.try_get::<Option<String>, _>(j).map_err(bad)?),
                Kind::Real => query.bind(row.try_get::<Option<f64>, _>(j).map_err(bad)?),
                Kind::Bool => query.bind(row.try_get::<Option<bool>, _>(j).map_err(bad)?),
            };
        }
    }
    let done = query
        .execute(&mut *dst)
        .await
        .with_context(|| format!("writing table {table} on the target"))?;
    Ok(done.rows_affected())
}

async fn count_source(src: &mut SqliteConnection, table: &str) -> anyhow::Result<i64> {
    let sql = format!("SELECT COUNT(*) FROM {}", quoted(table));
    sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(&mut *src)
        .await
        .with_context(|| format!("counting the rows of {table} in the source"))
}

async fn count_target(dst: &mut sqlx::PgConnection, table: &str) -> anyhow::Result<i64> {
    let sql = format!("SELECT COUNT(*) FROM {}", quoted(table));
    sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(&mut *dst)
        .await
        .with_context(|| format!("counting the rows of {table} in the target"))
}

/// Set every identity column to continue after its table's highest id (as SQLite gives
/// max(rowid) + 1); each column and its next value.
async fn reset_identities(dst: &mut sqlx::PgConnection) -> anyhow::Result<Vec<(String, i64)>> {
    let identities: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::TEXT, column_name::TEXT FROM information_schema.columns \
         WHERE table_schema = current_schema() AND is_identity = 'YES' ORDER BY table_name",
    )
    .fetch_all(&mut *dst)
    .await
    .context("listing the identity columns")?;
    let mut next = Vec::with_capacity(identities.len());
    for (table, column) in identities {
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence($1, $2), COALESCE(MAX({c}), 0) + 1, false) FROM {t}",
            c = quoted(&column),
            t = quoted(&table)
        );
        let value: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(&table)
            .bind(&column)
            .fetch_one(&mut *dst)
            .await
            .with_context(|| format!("resetting the sequence of {table}.{column}"))?;
        next.push((format!("{table}.{column}"), value));
    }
    Ok(next)
}

/// An identifier quoted for SQL (both databases take double quotes).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::Datastore;
    use crate::datastore::test_fixture::*;
    use crate::model::ServerId;

    /// A target nothing listens on: the refusals below come before any connection.
    const NOWHERE: &str = "postgres://nfsprov:s3cret-pw@127.0.0.1:1/nfsprov";

    #[test]
    fn a_url_is_shown_without_its_password() {
        let shown = redacted_url("postgres://nfsprov:s3cret%40x@db.example:5432/nfsprov");
        assert_eq!(shown, "postgres://nfsprov:***@db.example:5432/nfsprov");
        assert_eq!(
            redacted_url("postgres://db.example/nfsprov"),
            "postgres://db.example/nfsprov"
        );
        assert!(!redacted_url("postgres://u:s3cret@[bad").contains("s3cret"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_source_of_another_schema_version_is_refused() {
        let (dir, db, _, _) = fixture().await;
        let newest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(db.sqlite_writer())
            .await
            .unwrap();
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = ?")
            .bind(newest)
            .execute(db.sqlite_writer())
            .await
            .unwrap();
        let err = migrate_to(&dir.path().join("t.db"), NOWHERE)
            .await
            .unwrap_err();
        let err = format!("{err:#}");
        let older: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(db.sqlite_writer())
            .await
            .unwrap();
        assert!(
            err.contains(&format!("schema version {older} and this nfsprov {newest}")),
            "{err}"
        );
        assert!(!err.contains("s3cret-pw"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_source_a_node_still_runs_on_is_refused() {
        let (dir, db, _, _) = fixture().await;
        // A holder on another host: not known to be gone.
        let holder = "elsewhere.example:4026531836:4242:abcd";
        let token = db
            .acquire_lease(ServerId(1), holder, Duration::from_secs(60), None)
            .await
            .unwrap();
        assert!(token.is_some());
        let err = migrate_to(&dir.path().join("t.db"), NOWHERE)
            .await
            .unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("a node is running on this database"), "{err}");
        assert!(err.contains(holder), "{err}");
        // Once given up (a clean stop), the check passes and the copy goes on to the target.
        db.release_lease(ServerId(1), holder, token.unwrap())
            .await
            .unwrap();
        let err = migrate_to(&dir.path().join("t.db"), NOWHERE)
            .await
            .unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("connecting"), "{err}");
        assert!(!err.contains("s3cret-pw"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_database_and_no_postgres_url_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = migrate_to(&dir.path().join("t.db"), NOWHERE)
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("no SQLite database at"),
            "{err:#}"
        );
        let err = migrate_to(&dir.path().join("t.db"), "mysql://u:s3cret-pw@h/db")
            .await
            .unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("must be a PostgreSQL URL"), "{err}");
        assert!(!err.contains("s3cret-pw"), "{err}");
    }

    /// With `NFSPROV_TEST_PG_URL`: the copy on a real PostgreSQL, read back through the
    /// datastore (the e2e test `tests/migrate.rs` serves it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_copy_reads_back_the_same_on_postgres() {
        let (dir, db, owner, rp) = fixture().await;
        let Some(url) = pg_database("migrate_copy").await else {
            return;
        };
        for k in 0..3 {
            create(&db, owner, rp, &format!("v{k}")).await;
        }
        let verified = db.verify_audit().await.unwrap().unwrap();
        let users = db.users().await.unwrap();
        let done = migrate_to(&dir.path().join("t.db"), &url).await.unwrap();
        let rows = |t: &str| done.tables.iter().find(|(n, _)| *n == t).unwrap().1;
        assert_eq!(rows("volumes"), 3);
        assert_eq!(done.audit_seq, i64::try_from(verified.records).unwrap());
        let pg = Datastore::open_url(&url).await.unwrap();
        let again = pg.verify_audit().await.unwrap().unwrap();
        assert_eq!(
            (again.records, &again.head),
            (verified.records, &verified.head)
        );
        assert_eq!(
            format!("{:?}", pg.users().await.unwrap()),
            format!("{users:?}")
        );
        let fourth = create(&pg, owner, rp, "v3").await;
        assert_eq!(fourth.id.0, 4);
        let err = migrate_to(&dir.path().join("t.db"), &url)
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("already holds data (table servers has rows)"),
            "{err:#}"
        );
    }
}
