//! The datastore: every SQL query nfsprov runs lives here. The database holds desired state;
//! reconcilers read it and record what the servers confirmed.
//!
//! Invariant: `users.used_gb` and `root_paths.allocated_gb` equal the sum of `size_gb` of the
//! owner's / root path's volumes that are not `deleting` or `deleted`. They change only inside
//! the write transaction that records a create, a resize (`usage`) or a delete, so concurrent requests can never
//! overcommit (no check-then-act outside a transaction).
//!
//! One module per entity: `servers`, `root_paths`, `users`, `volumes` (requests), `outcomes`
//! (what a reconcile pass reads and records), `create` (the group-committing create thread), `usage` (usage samples and resizes).
//! Every query runs through `sql` (one layer for SQLite and PostgreSQL); what only SQLite
//! understands is in `sqlite` (see ARCHITECTURE.md, "Databases").

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use sql::Db;

use crate::error::Result;
use sqlite::{checkpoints, fresh_transaction_state};

mod audit;
mod create;
mod leases;
mod migrate;
mod notify;
mod outcomes;
#[cfg(test)]
mod portable_tests;
mod postgres;
mod root_paths;
mod servers;
mod snapshots;
mod sql;
mod sqlite;
#[cfg(test)]
mod test_fixture;
mod tokens;
mod usage;
mod users;
mod volumes;

pub use create::BatchCounts;
pub use leases::{LeaseHolder, holder_is_dead, new_node_id};
pub use migrate::{Migrated, migrate_to, redacted_url};
pub use notify::Change;
pub use servers::NewServer;
pub use tokens::{MAX_LIVE_TOKENS, Token, TokenRefusal};
pub use usage::{KEEP_SAMPLES, SIZE_DRIFT, gb_text};
pub use users::{LOCKED_MESSAGE, UserChange};
pub use volumes::{Created, NewVolume, Page};

/// The datastore on SQLite or PostgreSQL (`sql::Db`). On SQLite, reads use a pool of
/// connections and every write goes through one connection, so writers queue in order inside
/// the process instead of sleeping in SQLite's busy handler (which would put tens of
/// milliseconds on a request's tail latency).
#[derive(Clone)]
pub struct Datastore {
    db: Db,
    /// Where `leases` runs its statements: `db` on SQLite, a pool of its own on PostgreSQL
    /// (`postgres::open_leases`).
    leases: Db,
    creates: Creates,
    /// Background checkpoints that copied the whole log back (the next write starts it over).
    checkpointed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// What the create thread has recorded, in batches.
    create_stats: std::sync::Arc<create::Stats>,
}

/// Where a create is recorded: the group-committing create thread on SQLite (rusqlite on the
/// one write connection), or on PostgreSQL one transaction per create with its rows locked
/// (`postgres::create`).
#[derive(Clone)]
enum Creates {
    Thread(tokio::sync::mpsc::Sender<create::Job>),
    /// The node's create queue on PostgreSQL (`postgres::spawn`).
    Postgres(tokio::sync::mpsc::Sender<create::Job>),
}

impl Datastore {
    /// How many background checkpoints copied the whole write-ahead log back so far.
    pub fn checkpoints_completed(&self) -> u64 {
        self.checkpointed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The create thread's batches so far.
    pub fn create_batches(&self) -> BatchCounts {
        self.create_stats.snapshot()
    }
}

pub fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// The columns of a result row by name, from sqlx or from rusqlite (see `sqlite::with_raw_connection`), so one
/// function turns a row of `VOLUME_SELECT` into a `Volume` on either path.
trait Columns {
    fn id<T: RowId>(&self, col: &str) -> Result<T>;
    fn int(&self, col: &str) -> Result<i64>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    /// A 0/1 flag (or a computed boolean).
    fn flag(&self, col: &str) -> Result<bool>;
}

/// A typed id (`model::VolumeId`, ...) as every database path reads it.
trait RowId:
    for<'r> sqlx::Decode<'r, sqlx::Sqlite>
    + sqlx::Type<sqlx::Sqlite>
    + for<'r> sqlx::Decode<'r, sqlx::Postgres>
    + sqlx::Type<sqlx::Postgres>
    + rusqlite::types::FromSql
{
}

impl<T> RowId for T where
    T: for<'r> sqlx::Decode<'r, sqlx::Sqlite>
        + sqlx::Type<sqlx::Sqlite>
        + for<'r> sqlx::Decode<'r, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>
        + rusqlite::types::FromSql
{
}

impl Columns for SqliteRow {
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
    fn flag(&self, col: &str) -> Result<bool> {
        Ok(self.try_get(col)?)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn id<T: RowId>(&self, col: &str) -> Result<T> {
        Ok(self.get(col)?)
    }
    fn int(&self, col: &str) -> Result<i64> {
        Ok(self.get(col)?)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        Ok(self.get(col)?)
    }
    fn text(&self, col: &str) -> Result<String> {
        Ok(self.get(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        Ok(self.get(col)?)
    }
    fn flag(&self, col: &str) -> Result<bool> {
        Ok(self.get(col)?)
    }
}

impl Datastore {
    /// Open the database `url` names: `postgres://…` (or `postgresql://…`) a PostgreSQL
    /// database, `sqlite://PATH` or a plain path a SQLite file (created if needed). Either
    /// gets its migrations applied.
    pub async fn open_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = postgres::open(url).await?;
            let db = Db::Postgres { pool };
            let create_stats = std::sync::Arc::default();
            let creates = Creates::Postgres(postgres::spawn(
                db.clone(),
                std::sync::Arc::clone(&create_stats),
            ));
            let leases = Db::Postgres {
                pool: postgres::open_leases(url)?,
            };
            return Ok(Datastore {
                db,
                leases,
                creates,
                checkpointed: std::sync::Arc::default(),
                create_stats,
            });
        }
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        Self::open(Path::new(path)).await
    }

    /// Open (creating if needed) the SQLite database at `path` and apply migrations.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let url = format!("sqlite://{}", path.display());
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // No checkpoint inside a commit: it would stall the creates queued behind it (and
            // it fsyncs). `checkpoints` runs them on a read connection instead.
            .pragma("wal_autocheckpoint", "0")
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        // No ping before each use: an in-process SQLite connection does not go stale as a
        // network one does, and the ping is one more hand-off to its worker thread per query.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .before_acquire(|conn, _| Box::pin(fresh_transaction_state(conn)))
            .connect_with(options.clone())
            .await
            .with_context(|| format!("opening database {}", path.display()))?;
        sqlx::migrate!("./migrations")
            .run(&writer)
            .await
            .context("applying database migrations")?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .with_context(|| format!("opening database {}", path.display()))?;
        let create_stats = std::sync::Arc::default();
        let creates = create::spawn(writer.clone(), std::sync::Arc::clone(&create_stats))
            .context("starting the create thread")?;
        let checkpointed = std::sync::Arc::default();
        tokio::spawn(checkpoints(
            pool.clone(),
            creates.downgrade(),
            std::sync::Arc::clone(&checkpointed),
        ));
        let db = Db::Sqlite { pool, writer };
        Ok(Datastore {
            leases: db.clone(),
            db,
            creates: Creates::Thread(creates),
            checkpointed,
            create_stats,
        })
    }

    /// SQLite's read pool and write connection, for what only SQLite has (the create thread,
    /// rusqlite reads, the checkpoint, tests of SQLite itself).
    fn sqlite(&self) -> Option<(&SqlitePool, &SqlitePool)> {
        match &self.db {
            Db::Sqlite { pool, writer } => Some((pool, writer)),
            Db::Postgres { .. } => None,
        }
    }

    #[cfg(test)]
    fn sqlite_pool(&self) -> &SqlitePool {
        self.sqlite().expect("a SQLite datastore").0
    }

    #[cfg(test)]
    fn sqlite_writer(&self) -> &SqlitePool {
        self.sqlite().expect("a SQLite datastore").1
    }
}

/// Largest export id nfs-ganesha accepts.
const MAX_EXPORT_ID: i64 = 65_535;
