//! One SQL layer for SQLite and PostgreSQL: the datastore's modules write a query once
//! (`q(SQL).bind(v)`, `?` or `?N` placeholders) and run it on either database.
//!
//! - `Db`: SQLite's read pool and one-connection write pool, or a PostgreSQL pool.
//! - `Q`: the SQL text and its typed binds (`Val`); `?`/`?N` become `$n` for PostgreSQL, once
//!   per SQL text (`pg_sql`, cached). SQL texts never embed values (they are bound), so the
//!   cache holds one entry per query shape the code has.
//! - `Row`: a result row of either database, read through `Columns`.
//! - `Tx`: a write transaction of either (`Db::begin_write`: SQLite `BEGIN IMMEDIATE`, which
//!   takes the database's write lock; PostgreSQL `BEGIN`, where a check that precedes a write
//!   locks its rows with `FOR UPDATE` (`for_update`)).
//!
//! Where the dialects differ, a function here names both (`greatest`, `no_limit`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgPool, PgRow};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{AssertSqlSafe, Row as _};

use super::{Columns, RowId};
use crate::error::Result;

/// The layer's statements fail as sqlx does, so callers still tell a unique violation apart.
type DbResult<T> = std::result::Result<T, sqlx::Error>;
use crate::model::{RootPathId, ServerId, SnapshotId, TokenId, UserId, VolumeId};

/// The database a datastore runs on.
#[derive(Clone)]
pub(super) enum Db {
    /// Reads use a pool of connections; every write goes through one connection, so writers
    /// queue in order inside the process instead of sleeping in SQLite's busy handler.
    Sqlite {
        pool: SqlitePool,
        writer: SqlitePool,
    },
    Postgres {
        pool: PgPool,
    },
}

/// Where a statement runs: a read or a write outside a transaction, or inside one.
pub(super) enum On<'a> {
    Read(&'a Db),
    Write(&'a Db),
    Tx(&'a mut Tx),
}

impl<'a> From<&'a mut Tx> for On<'a> {
    fn from(tx: &'a mut Tx) -> Self {
        On::Tx(tx)
    }
}

impl<'a> From<&'a mut &mut Tx> for On<'a> {
    fn from(tx: &'a mut &mut Tx) -> Self {
        On::Tx(tx)
    }
}

impl Db {
    /// A statement that only reads.
    pub(super) fn read(&self) -> On<'_> {
        On::Read(self)
    }

    /// A statement that writes, in a transaction of its own.
    pub(super) fn write(&self) -> On<'_> {
        On::Write(self)
    }

    pub(super) fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres { .. })
    }

    /// A transaction that will write: on SQLite it holds the write lock from its first
    /// statement (`BEGIN IMMEDIATE`), so a check inside it cannot be overtaken by another
    /// writer; on PostgreSQL lock the rows a check reads (`for_update`).
    pub(super) async fn begin_write(&self) -> DbResult<Tx> {
        Ok(match self {
            Db::Sqlite { writer, .. } => Tx::Sqlite(writer.begin_with("BEGIN IMMEDIATE").await?),
            Db::Postgres { pool } => Tx::Postgres(pool.begin().await?),
        })
    }
}

/// The longest a PostgreSQL statement (or a transaction's commit) is waited for once it has
/// its connection (taking one from the pool has the pool's own acquire timeout, which also
/// checks the connection it hands out). PostgreSQL answers in milliseconds or not at all: a
/// node cut off from it (a partition, a server that stopped answering) would otherwise wait on
/// a dead connection until the request timed out, holding the request and the connection. The timeout ends as a timed-out I/O
/// error, which `Error::from` answers as the database unreachable (503).
pub(super) const PG_STATEMENT_WAIT: Duration = Duration::from_secs(10);

async fn bounded<T>(fut: impl Future<Output = DbResult<T>>) -> DbResult<T> {
    tokio::time::timeout(PG_STATEMENT_WAIT, fut)
        .await
        .unwrap_or_else(|_| {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("PostgreSQL did not answer within {PG_STATEMENT_WAIT:?}"),
            )))
        })
}

/// A `LIMIT` bind meaning "no limit": SQLite takes a negative one, PostgreSQL `NULL`.
pub(super) fn no_limit(db: &Db) -> Val {
    if db.is_postgres() {
        Val::OptInt(None)
    } else {
        Val::Int(-1)
    }
}

/// A write transaction on either database. Dropped without `commit`, it rolls back.
pub(super) enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    pub(super) async fn commit(self) -> DbResult<()> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => bounded(tx.commit()).await?,
        }
        Ok(())
    }

    pub(super) fn is_postgres(&self) -> bool {
        matches!(self, Tx::Postgres(_))
    }

    /// `FOR UPDATE` where the database locks rows (PostgreSQL); nothing on SQLite, whose
    /// write transaction already excludes every other writer.
    pub(super) fn for_update(&self) -> &'static str {
        if self.is_postgres() {
            " FOR UPDATE"
        } else {
            ""
        }
    }

    /// `FOR UPDATE OF alias` on PostgreSQL: lock only that table's rows of a join.
    pub(super) fn for_update_of(&self, alias: &str) -> String {
        if self.is_postgres() {
            format!(" FOR UPDATE OF {alias}")
        } else {
            String::new()
        }
    }

    /// The larger of two values as a scalar: SQLite's `MAX(a, b)`, PostgreSQL's `GREATEST`.
    pub(super) fn greatest(&self) -> &'static str {
        if self.is_postgres() {
            "GREATEST"
        } else {
            "MAX"
        }
    }
}

/// A bound value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    Int(i64),
    OptInt(Option<i64>),
    Text(String),
    OptText(Option<String>),
    Real(f64),
    /// Stored as an integer 0/1 on both databases (SQLite has no boolean type; the PostgreSQL
    /// schema keeps the same columns), so `flag = 1` reads the same on either.
    Bool(bool),
    OptBool(Option<bool>),
}

macro_rules! val_from {
    ($($t:ty => |$v:ident| $e:expr),* $(,)?) => {$(
        impl From<$t> for Val {
            fn from($v: $t) -> Self {
                $e
            }
        }
    )*};
}

val_from! {
    i64 => |v| Val::Int(v),
    Option<i64> => |v| Val::OptInt(v),
    String => |v| Val::Text(v),
    &String => |v| Val::Text(v.clone()),
    &str => |v| Val::Text(v.to_owned()),
    Option<String> => |v| Val::OptText(v),
    Option<&str> => |v| Val::OptText(v.map(str::to_owned)),
    &Option<String> => |v| Val::OptText(v.clone()),
    &Option<i64> => |v| Val::OptInt(*v),
    &i64 => |v| Val::Int(*v),
    f64 => |v| Val::Real(v),
    bool => |v| Val::Bool(v),
    Option<bool> => |v| Val::OptBool(v),
}

macro_rules! val_from_id {
    ($($t:ty),*) => {$(
        impl From<$t> for Val {
            fn from(v: $t) -> Self {
                Val::Int(v.0)
            }
        }
        impl From<&$t> for Val {
            fn from(v: &$t) -> Self {
                Val::Int(v.0)
            }
        }
        impl From<Option<$t>> for Val {
            fn from(v: Option<$t>) -> Self {
                Val::OptInt(v.map(|v| v.0))
            }
        }
    )*};
}

val_from_id!(ServerId, RootPathId, UserId, VolumeId, TokenId, SnapshotId);

/// A query: its SQL text and binds.
#[must_use]
pub(super) struct Q {
    sql: Cow<'static, str>,
    binds: Vec<Val>,
}

/// A query of `sql`, with `?` (in order) or `?N` (numbered) placeholders.
pub(super) fn q(sql: impl Into<Cow<'static, str>>) -> Q {
    Q {
        sql: sql.into(),
        binds: Vec::new(),
    }
}

type SqliteQuery = sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;
type PgQuery = sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>;

impl Q {
    pub(super) fn bind(mut self, v: impl Into<Val>) -> Self {
        self.binds.push(v.into());
        self
    }

    fn sqlite(self) -> SqliteQuery {
        let mut q = sqlx::query(AssertSqlSafe(self.sql));
        for v in self.binds {
            q = match v {
                Val::Int(v) => q.bind(v),
                Val::OptInt(v) => q.bind(v),
                Val::Text(v) => q.bind(v),
                Val::OptText(v) => q.bind(v),
                Val::Real(v) => q.bind(v),
                Val::Bool(v) => q.bind(v),
                Val::OptBool(v) => q.bind(v),
            };
        }
        q
    }

    fn postgres(self) -> PgQuery {
        let mut q = sqlx::query(AssertSqlSafe(pg_sql(&self.sql)));
        for v in self.binds {
            q = match v {
                Val::Int(v) => q.bind(v),
                Val::OptInt(v) => q.bind(v),
                Val::Text(v) => q.bind(v),
                Val::OptText(v) => q.bind(v),
                Val::Real(v) => q.bind(v),
                Val::Bool(v) => q.bind(i64::from(v)),
                Val::OptBool(v) => q.bind(v.map(i64::from)),
            };
        }
        q
    }

    /// Run a statement; the number of rows it changed.
    pub(super) async fn execute<'a>(self, on: impl Into<On<'a>>) -> DbResult<u64> {
        Ok(match on.into() {
            On::Read(Db::Sqlite { pool, .. }) => self.sqlite().execute(pool).await?.rows_affected(),
            On::Write(Db::Sqlite { writer, .. }) => {
                self.sqlite().execute(writer).await?.rows_affected()
            }
            On::Read(Db::Postgres { pool }) | On::Write(Db::Postgres { pool }) => {
                bounded(self.postgres().execute(&mut *pool.acquire().await?))
                    .await?
                    .rows_affected()
            }
            On::Tx(Tx::Sqlite(tx)) => self.sqlite().execute(&mut **tx).await?.rows_affected(),
            On::Tx(Tx::Postgres(tx)) => bounded(self.postgres().execute(&mut **tx))
                .await?
                .rows_affected(),
        })
    }

    pub(super) async fn fetch_all<'a>(self, on: impl Into<On<'a>>) -> DbResult<Vec<Row>> {
        Ok(match on.into() {
            On::Read(Db::Sqlite { pool, .. }) => sqlite_rows(self.sqlite().fetch_all(pool).await?),
            On::Write(Db::Sqlite { writer, .. }) => {
                sqlite_rows(self.sqlite().fetch_all(writer).await?)
            }
            On::Read(Db::Postgres { pool }) | On::Write(Db::Postgres { pool }) => {
                pg_rows(bounded(self.postgres().fetch_all(&mut *pool.acquire().await?)).await?)
            }
            On::Tx(Tx::Sqlite(tx)) => sqlite_rows(self.sqlite().fetch_all(&mut **tx).await?),
            On::Tx(Tx::Postgres(tx)) => {
                pg_rows(bounded(self.postgres().fetch_all(&mut **tx)).await?)
            }
        })
    }

    pub(super) async fn fetch_optional<'a>(self, on: impl Into<On<'a>>) -> DbResult<Option<Row>> {
        Ok(match on.into() {
            On::Read(Db::Sqlite { pool, .. }) => {
                self.sqlite().fetch_optional(pool).await?.map(Row::Sqlite)
            }
            On::Write(Db::Sqlite { writer, .. }) => {
                self.sqlite().fetch_optional(writer).await?.map(Row::Sqlite)
            }
            On::Read(Db::Postgres { pool }) | On::Write(Db::Postgres { pool }) => {
                bounded(self.postgres().fetch_optional(&mut *pool.acquire().await?))
                    .await?
                    .map(Row::Pg)
            }
            On::Tx(Tx::Sqlite(tx)) => self
                .sqlite()
                .fetch_optional(&mut **tx)
                .await?
                .map(Row::Sqlite),
            On::Tx(Tx::Postgres(tx)) => bounded(self.postgres().fetch_optional(&mut **tx))
                .await?
                .map(Row::Pg),
        })
    }

    pub(super) async fn fetch_one<'a>(self, on: impl Into<On<'a>>) -> DbResult<Row> {
        self.fetch_optional(on)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// Each row in turn, without holding them all in memory.
    pub(super) async fn for_each<'a>(
        self,
        on: impl Into<On<'a>>,
        mut f: impl FnMut(Row) -> Result<()>,
    ) -> Result<()> {
        use futures_util::TryStreamExt;
        match on.into() {
            On::Read(Db::Sqlite { pool, .. }) => {
                let mut rows = self.sqlite().fetch(pool);
                while let Some(row) = rows.try_next().await? {
                    f(Row::Sqlite(row))?;
                }
            }
            On::Read(Db::Postgres { pool }) => {
                let mut rows = self.postgres().fetch(pool);
                while let Some(row) = rows.try_next().await? {
                    f(Row::Pg(row))?;
                }
            }
            other => {
                for row in self.fetch_all(other).await? {
                    f(row)?;
                }
            }
        }
        Ok(())
    }
}

fn sqlite_rows(rows: Vec<SqliteRow>) -> Vec<Row> {
    rows.into_iter().map(Row::Sqlite).collect()
}

fn pg_rows(rows: Vec<PgRow>) -> Vec<Row> {
    rows.into_iter().map(Row::Pg).collect()
}

/// A result row of either database.
pub(super) enum Row {
    Sqlite(SqliteRow),
    Pg(PgRow),
}

impl Columns for Row {
    fn id<T: RowId>(&self, col: &str) -> Result<T> {
        match self {
            Row::Sqlite(r) => r.id(col),
            Row::Pg(r) => r.id(col),
        }
    }
    fn int(&self, col: &str) -> Result<i64> {
        match self {
            Row::Sqlite(r) => r.int(col),
            Row::Pg(r) => r.int(col),
        }
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        match self {
            Row::Sqlite(r) => r.opt_int(col),
            Row::Pg(r) => r.opt_int(col),
        }
    }
    fn text(&self, col: &str) -> Result<String> {
        match self {
            Row::Sqlite(r) => r.text(col),
            Row::Pg(r) => r.text(col),
        }
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        match self {
            Row::Sqlite(r) => r.opt_text(col),
            Row::Pg(r) => r.opt_text(col),
        }
    }
    fn flag(&self, col: &str) -> Result<bool> {
        match self {
            Row::Sqlite(r) => r.flag(col),
            Row::Pg(r) => r.flag(col),
        }
    }
}

impl Columns for PgRow {
    fn id<T: RowId>(&self, col: &str) -> Result<T> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> Result<i64> {
        Ok(self.try_get(col)?)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        Ok(self.try_get(col)?)
    }
    fn text(&self, col: &str) -> Result<String> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        Ok(self.try_get(col)?)
    }
    /// A stored flag is a BIGINT 0/1; a computed one (`x IS NULL AS f`) is a boolean.
    fn flag(&self, col: &str) -> Result<bool> {
        match self.try_get::<bool, _>(col) {
            Ok(b) => Ok(b),
            Err(_) => Ok(self.try_get::<i64, _>(col)? != 0),
        }
    }
}

/// `sql` with its `?` / `?N` placeholders as PostgreSQL's `$n`, computed once per text.
/// Placeholders inside quoted literals or identifiers are left alone.
pub(super) fn pg_sql(sql: &str) -> Arc<str> {
    static CACHE: LazyLock<Mutex<HashMap<Box<str>, Arc<str>>>> = LazyLock::new(Mutex::default);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(done) = cache.get(sql) {
        return Arc::clone(done);
    }
    let done: Arc<str> = numbered_placeholders(sql).into();
    cache.insert(sql.into(), Arc::clone(&done));
    done
}

fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 0_usize;
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (Some(_), c) => out.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (None, '?') => {
                let mut digits = String::new();
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    digits.push(d);
                }
                out.push('$');
                if digits.is_empty() {
                    next += 1;
                    out.push_str(&next.to_string());
                } else {
                    out.push_str(&digits);
                }
            }
            (None, c) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_numbered_outside_quotes() {
        let cases = [
            ("SELECT 1", "SELECT 1"),
            (
                "SELECT * FROM t WHERE a = ? AND b = ?",
                "SELECT * FROM t WHERE a = $1 AND b = $2",
            ),
            (
                "UPDATE t SET a = ?1, b = COALESCE(?2, b) WHERE c = ?1 OR d = ?12",
                "UPDATE t SET a = $1, b = COALESCE($2, b) WHERE c = $1 OR d = $12",
            ),
            // Quoted text keeps its question marks, doubled quotes included.
            (
                "SELECT '?', 'it''s ?', \"a?b\" FROM t WHERE x = ?",
                "SELECT '?', 'it''s ?', \"a?b\" FROM t WHERE x = $1",
            ),
            ("x ->> 0 = ?", "x ->> 0 = $1"),
        ];
        for (sqlite, pg) in cases {
            assert_eq!(numbered_placeholders(sqlite), pg, "{sqlite}");
            assert_eq!(&*pg_sql(sqlite), pg);
        }
        // Cached: the same text gives the same allocation.
        let a = pg_sql("SELECT ? -- cached");
        assert!(Arc::ptr_eq(&a, &pg_sql("SELECT ? -- cached")));
    }
}
