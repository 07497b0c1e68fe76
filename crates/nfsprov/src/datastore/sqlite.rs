//! What only SQLite understands, named in one place so that a second database is an addition:
//! the background WAL checkpoint, the write connection's recovery, running statements through
//! rusqlite on a pooled connection, and the outcome updates (`UPDATE … FROM json_each`).
//! The other SQLite-isms are listed in ARCHITECTURE.md ("Databases").

use std::time::Duration;

use sqlx::sqlite::SqlitePool;

use super::create;
use crate::error::Result;

/// How often the write-ahead log is copied back into the database file.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Checkpoint the write-ahead log now and then, on a read connection, while the datastore is
/// in use (`alive` is its create queue). A passive checkpoint waits for no reader or writer,
/// and commits no longer run one (`wal_autocheckpoint = 0`). `complete` counts the
/// checkpoints that copied every frame of the log back.
pub(super) async fn checkpoints(
    pool: SqlitePool,
    alive: tokio::sync::mpsc::WeakSender<create::Job>,
    complete: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if alive.upgrade().is_none() {
            return;
        }
        // One row: busy (0/1), frames in the log, frames copied back.
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await
        {
            Ok((0, log, copied)) if log == copied => {
                complete.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("checkpointing the database: {e}"),
        }
    }
}

/// Whether the write connection may be used again. A COMMIT that fails for lack of disk space
/// can end SQLite's transaction while sqlx still counts it as open; every later `BEGIN` on
/// that connection then fails, until a restart. Such a connection is closed (the pool opens a
/// new one), so the service recovers by itself once space returns.
pub(super) async fn fresh_transaction_state(
    conn: &mut sqlx::SqliteConnection,
) -> Result<bool, sqlx::Error> {
    use sqlx::Connection as _;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // The rollback a dropped transaction queued may not have run yet: let it through first.
    sqlx::query("SELECT 1").execute(&mut *conn).await?;
    if conn.is_in_transaction() {
        tracing::warn!("the write connection was left inside a failed transaction; reopening it");
        return Ok(false);
    }
    Ok(true)
}

/// Run `f` on a connection of `pool` through rusqlite, with the connection's sqlx worker
/// thread set aside: statements then cost no thread hand-off each (and rows none each). Call
/// it from a thread outside the runtime (`spawn_blocking`, the create thread): it blocks.
pub(super) fn with_raw_connection<T>(
    rt: &tokio::runtime::Handle,
    pool: &SqlitePool,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T>,
) -> Result<T> {
    let mut conn = rt.block_on(pool.acquire())?;
    let mut locked = rt.block_on(conn.lock_handle())?;
    // SAFETY: the handle is the pool connection's, held locked (its worker waits) until
    // `locked` drops, after `db`; `from_handle` borrows it without closing it on drop.
    let db = unsafe { rusqlite::Connection::from_handle(locked.as_raw_handle().as_ptr()) }?;
    let out = {
        // The connection goes back to the pool as it was found, even if `f` failed or
        // panicked inside a transaction.
        let _rollback = RollbackOpenTransaction(&db);
        f(&db)
    };
    drop(db);
    drop(locked);
    out
}

struct RollbackOpenTransaction<'a>(&'a rusqlite::Connection);

impl Drop for RollbackOpenTransaction<'_> {
    fn drop(&mut self) {
        if !self.0.is_autocommit()
            && let Err(e) = self.0.execute_batch("ROLLBACK")
        {
            tracing::error!("rolling back an unfinished transaction: {e}");
        }
    }
}

// ---- outcome updates (`UPDATE … FROM json_each(?)`) ------------------------------------

pub(super) const RECORD_APPLIED: &str = "UPDATE volumes SET state = 'available', applied_clients = o.clients, \
     last_error = NULL, failed_generation = NULL, updated_at = ?1 \
     FROM (SELECT value ->> 0 AS id, value ->> 1 AS generation, value ->> 2 AS clients FROM json_each(?2)) AS o \
     WHERE volumes.id = o.id AND volumes.generation = o.generation \
     AND volumes.state != 'deleting' AND volumes.state != 'deleted' \
     AND (volumes.state != 'available' OR volumes.applied_clients IS NOT o.clients \
          OR volumes.last_error IS NOT NULL)";
pub(super) const RECORD_DELETED: &str = "UPDATE volumes SET state = 'deleted', last_error = NULL, \
     deleted_at = ?1, updated_at = ?1 \
     FROM (SELECT value ->> 0 AS id, value ->> 1 AS generation FROM json_each(?2)) AS o \
     WHERE volumes.id = o.id AND volumes.generation = o.generation AND volumes.state = 'deleting'";
pub(super) const RECORD_REJECTED: &str = "UPDATE volumes SET \
     state = CASE WHEN volumes.state = 'deleting' THEN 'deleting' ELSE 'error' END, \
     failed_generation = o.generation, last_error = o.message, updated_at = ?1 \
     FROM (SELECT value ->> 0 AS id, value ->> 1 AS generation, value ->> 2 AS message FROM json_each(?2)) AS o \
     WHERE volumes.id = o.id AND volumes.generation = o.generation";
// A failure that is not a verdict: `error` without `failed_generation`, so the volume keeps
// its desired export and is re-verified on every pass (and becomes `available` again once the
// live state matches). Written only when something changes.
pub(super) const RECORD_FAILED: &str = "UPDATE volumes SET \
     state = CASE WHEN volumes.state = 'deleting' THEN 'deleting' ELSE 'error' END, \
     failed_generation = NULL, last_error = o.message, updated_at = ?1 \
     FROM (SELECT value ->> 0 AS id, value ->> 1 AS generation, value ->> 2 AS message FROM json_each(?2)) AS o \
     WHERE volumes.id = o.id AND volumes.generation = o.generation \
     AND volumes.state != 'deleted' \
     AND (volumes.state NOT IN ('error', 'deleting') OR volumes.last_error IS NOT o.message \
          OR volumes.failed_generation IS NOT NULL)";
pub(super) const RECORD_PENDING: &str = "UPDATE volumes SET last_error = o.message \
     FROM (SELECT value ->> 0 AS id, value ->> 1 AS generation, value ->> 2 AS message FROM json_each(?2)) AS o \
     WHERE volumes.id = o.id AND volumes.generation = o.generation \
     AND volumes.last_error IS NOT o.message";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::test_fixture::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_raw_transaction_left_open_is_rolled_back() {
        let (_dir, db, _owner, _rp) = fixture().await;
        let (pool, rt) = (
            db.sqlite_writer().clone(),
            tokio::runtime::Handle::current(),
        );
        tokio::task::spawn_blocking(move || {
            let failed = with_raw_connection(&rt, &pool, |c| -> Result<()> {
                c.execute_batch("BEGIN IMMEDIATE; UPDATE users SET quota_gb = 1")?;
                Err(anyhow::anyhow!("fails half way").into())
            });
            assert!(failed.is_err());
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                with_raw_connection(&rt, &pool, |c| -> Result<()> {
                    c.execute_batch("BEGIN IMMEDIATE; UPDATE users SET quota_gb = 2")?;
                    panic!("a bug half way")
                })
            }));
            assert!(panicked.is_err());
        })
        .await
        .unwrap();
        // Neither change was kept, and the write connection takes a new transaction.
        assert_eq!(db.user_by_name("u").await.unwrap().quota_gb, 100);
        let tx = db
            .sqlite_writer()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .unwrap();
        tx.rollback().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_write_ahead_log_is_checkpointed_in_the_background() {
        let (dir, db, owner, rp) = fixture().await;
        sqlx::query("UPDATE users SET quota_gb = 10000")
            .execute(db.sqlite_writer())
            .await
            .unwrap();
        sqlx::query("UPDATE root_paths SET capacity_gb = 10000")
            .execute(db.sqlite_writer())
            .await
            .unwrap();
        // Commits do not checkpoint ...
        let auto: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(db.sqlite_writer())
            .await
            .unwrap();
        assert_eq!(auto, 0);
        // ... yet the log does not grow with every round of writes: the background checkpoint
        // lets the writer start it over.
        let wal = dir.path().join("t.db-wal");
        let mut sizes = Vec::new();
        let complete = || db.checkpoints_completed();
        for round in 0..5 {
            for k in 0..100 {
                create(&db, owner, rp, &format!("r{round}-{k}")).await;
            }
            // Until the background task has copied this round's log back (a condition, not a
            // time: a busy machine only makes it later).
            let before = complete();
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while complete() < before + 2 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no complete background checkpoint within 60 s"
                );
                tokio::time::sleep(CHECKPOINT_EVERY / 4).await;
            }
            sizes.push(std::fs::metadata(&wal).unwrap().len());
        }
        assert!(
            sizes[4] < 2 * sizes[0],
            "the log grew with every round: {sizes:?}"
        );
    }
}
