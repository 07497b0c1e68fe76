//! The datastore: every SQL query nfsprov runs lives here. The database holds desired state;
//! reconcilers read it and record what the servers confirmed.
//!
//! Invariant: `users.used_gb` and `root_paths.allocated_gb` equal the sum of `size_gb` of the
//! owner's / root path's volumes that are not `deleting` or `deleted`. They change only inside
//! the write transaction that records a create or a delete, so concurrent requests can never
//! overcommit (no check-then-act outside a transaction).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};

use crate::error::{Error, Result};
use crate::model::*;
use crate::spec::{DirMode, RootDir, SubPath};

mod create;

/// Reads use a pool of connections; every write goes through one connection, so writers queue
/// in order inside the process instead of sleeping in SQLite's busy handler (which would put
/// tens of milliseconds on a request's tail latency).
#[derive(Clone)]
pub struct Datastore {
    pool: SqlitePool,
    writer: SqlitePool,
    creates: tokio::sync::mpsc::Sender<create::Job>,
}

pub fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// A validated request to create a volume.
#[derive(Debug, Clone)]
pub struct NewVolume {
    pub owner: UserId,
    pub root_path: RootPathId,
    pub sub_path: SubPath,
    pub size_gb: i64,
    pub clients: Vec<ClientRule>,
    pub mode: DirMode,
    pub uid: u32,
    pub gid: u32,
    /// Adopt a directory already at the path (admins only; checked by the API).
    pub adopt_existing: bool,
    pub idempotency_key: Option<String>,
    /// Fingerprint of the request body, to tell a retry from a different request reusing a key.
    pub request_hash: Option<String>,
}

pub enum Created {
    New(Volume),
    /// An earlier request with the same idempotency key created this volume.
    Replayed(Volume),
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewServer {
    pub name: String,
    pub ssh_host: String,
    #[serde(default = "default_ssh_port")]
    pub ssh_port: u16,
    #[serde(default = "default_ssh_user")]
    pub ssh_user: String,
    pub ssh_key: String,
    pub host_key: String,
    /// Address clients mount from; defaults to `ssh_host`.
    #[serde(default)]
    pub nfs_address: String,
    /// `knfsd` (default) or `ganesha`.
    #[serde(default = "default_backend")]
    pub backend: String,
}

fn default_backend() -> String {
    "knfsd".into()
}

fn default_ssh_port() -> u16 {
    22
}

fn default_ssh_user() -> String {
    "root".into()
}

/// A page of a listing: ids above `after`, at most `limit` rows (all when `None`), without
/// volumes being deleted if `hide_deleting` (hootie's view: a deleted volume is gone at once).
#[derive(Debug, Clone, Copy, Default)]
pub struct Page {
    pub after: i64,
    pub limit: Option<usize>,
    pub hide_deleting: bool,
}

#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub quota_gb: Option<i64>,
    pub locked: Option<bool>,
    pub is_admin: Option<bool>,
    pub password_hash: Option<String>,
}

const VOLUME_SELECT: &str = "SELECT v.id, v.owner_id, u.username, v.root_path_id, rp.path AS rp_path, \
     rp.delete_policy, v.server_id, s.nfs_address, v.sub_path, v.size_gb, v.clients, \
     v.applied_clients, v.mode, v.uid, v.gid, v.adopt_existing, v.state, v.export_id, v.generation, v.failed_generation, \
     v.last_error, v.created_at, v.updated_at \
     FROM volumes v JOIN users u ON u.id = v.owner_id \
     JOIN root_paths rp ON rp.id = v.root_path_id JOIN servers s ON s.id = v.server_id";

/// The columns of a result row by name, from sqlx or from rusqlite (see `raw`), so one
/// function turns a row of `VOLUME_SELECT` into a `Volume` on either path.
trait Columns {
    fn int(&self, col: &str) -> Result<i64>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
}

impl Columns for SqliteRow {
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
}

impl Columns for rusqlite::Row<'_> {
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
}

fn volume_from_row(row: &impl Columns) -> Result<Volume> {
    let applied = row.opt_text("applied_clients")?;
    let state = row.text("state")?;
    Ok(Volume {
        id: VolumeId(row.int("id")?),
        owner_id: UserId(row.int("owner_id")?),
        owner: row.text("username")?,
        root_path_id: RootPathId(row.int("root_path_id")?),
        root_path: RootDir::parse(&row.text("rp_path")?)
            .map_err(|e| anyhow::anyhow!("stored root path: {e}"))?,
        delete_policy: DeletePolicy::parse(&row.text("delete_policy")?).unwrap_or_default(),
        server_id: ServerId(row.int("server_id")?),
        nfs_address: row.text("nfs_address")?,
        sub_path: SubPath::parse(&row.text("sub_path")?)
            .map_err(|e| anyhow::anyhow!("stored sub path: {e}"))?,
        size_gb: row.int("size_gb")?,
        clients: clients_from_json(&row.text("clients")?)?,
        applied_clients: applied.as_deref().map(clients_from_json).transpose()?,
        mode: DirMode::parse(&row.text("mode")?)
            .map_err(|e| anyhow::anyhow!("stored mode: {e}"))?,
        uid: row.int("uid")? as u32,
        gid: row.int("gid")? as u32,
        adopt_existing: row.int("adopt_existing")? != 0,
        state: VolumeState::parse(&state)
            .ok_or_else(|| anyhow::anyhow!("stored volume state {state:?} is unknown"))?,
        export_id: row.opt_int("export_id")?.unwrap_or(0) as u32,
        generation: row.int("generation")?,
        failed_generation: row.opt_int("failed_generation")?,
        last_error: row.opt_text("last_error")?,
        created_at: parse_time(&row.text("created_at")?),
        updated_at: parse_time(&row.text("updated_at")?),
    })
}

/// How often the write-ahead log is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Checkpoint the write-ahead log now and then, on a read connection, while the datastore is
/// in use (`alive` is its create queue). A passive checkpoint waits for no reader or writer,
/// and commits no longer run one (`wal_autocheckpoint = 0`).
async fn checkpoints(pool: SqlitePool, alive: tokio::sync::mpsc::WeakSender<create::Job>) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if alive.upgrade().is_none() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!("checkpointing the database: {e}");
        }
    }
}

/// Whether the write connection may be used again. A COMMIT that fails for lack of disk space
/// can end SQLite's transaction while sqlx still counts it as open; every later `BEGIN` on
/// that connection then fails, until a restart. Such a connection is closed (the pool opens a
/// new one), so the service recovers by itself once space returns.
async fn fresh_transaction_state(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
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
fn with_raw_connection<T>(
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

fn server_from_row(row: &SqliteRow) -> Result<Server> {
    Ok(Server {
        id: ServerId(row.try_get("id")?),
        name: row.try_get("name")?,
        ssh_host: row.try_get("ssh_host")?,
        ssh_port: row.try_get::<i64, _>("ssh_port")? as u16,
        ssh_user: row.try_get("ssh_user")?,
        ssh_key: row.try_get("ssh_key")?,
        host_key: row.try_get("host_key")?,
        nfs_address: row.try_get("nfs_address")?,
        backend: {
            let b: String = row.try_get("backend")?;
            crate::backend::Kind::parse(&b)
                .ok_or_else(|| anyhow::anyhow!("stored backend {b:?} is unknown"))?
        },
        status: {
            let s: String = row.try_get("status")?;
            ServerStatus::parse(&s)
                .ok_or_else(|| anyhow::anyhow!("stored server status {s:?} is unknown"))?
        },
        status_message: row.try_get("status_message")?,
        last_reconciled_at: row.try_get("last_reconciled_at")?,
        created_at: row.try_get("created_at")?,
    })
}

const ROOT_PATH_SELECT: &str = "SELECT rp.id, rp.server_id, s.name, s.nfs_address, rp.path, \
     rp.capacity_gb, rp.allocated_gb, rp.delete_policy FROM root_paths rp \
     JOIN servers s ON s.id = rp.server_id";

fn root_path_from_row(row: &SqliteRow) -> Result<RootPath> {
    let path: String = row.try_get("path")?;
    let policy: String = row.try_get("delete_policy")?;
    Ok(RootPath {
        id: RootPathId(row.try_get("id")?),
        server_id: ServerId(row.try_get("server_id")?),
        server_name: row.try_get("name")?,
        nfs_address: row.try_get("nfs_address")?,
        path: RootDir::parse(&path).map_err(|e| anyhow::anyhow!("stored root path: {e}"))?,
        capacity_gb: row.try_get("capacity_gb")?,
        allocated_gb: row.try_get("allocated_gb")?,
        delete_policy: DeletePolicy::parse(&policy).unwrap_or_default(),
    })
}

fn user_from_row(row: &SqliteRow) -> Result<User> {
    Ok(User {
        id: UserId(row.try_get("id")?),
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        is_admin: row.try_get("is_admin")?,
        quota_gb: row.try_get("quota_gb")?,
        used_gb: row.try_get("used_gb")?,
        locked: row.try_get("locked")?,
    })
}

impl Datastore {
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
        let creates = create::spawn(writer.clone()).context("starting the create thread")?;
        tokio::spawn(checkpoints(pool.clone(), creates.downgrade()));
        Ok(Datastore {
            pool,
            writer,
            creates,
        })
    }

    // ---- servers -------------------------------------------------------------------------

    pub async fn create_server(&self, s: &NewServer) -> Result<Server> {
        let res = sqlx::query(
            "INSERT INTO servers (name, ssh_host, ssh_port, ssh_user, ssh_key, host_key, nfs_address, backend, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&s.name)
        .bind(&s.ssh_host)
        .bind(s.ssh_port as i64)
        .bind(&s.ssh_user)
        .bind(&s.ssh_key)
        .bind(&s.host_key)
        .bind(&s.nfs_address)
        .bind(&s.backend)
        .bind(now())
        .fetch_one(&self.writer)
        .await;
        match res {
            Ok(row) => self.server(ServerId(row.try_get("id")?)).await,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(Error::conflict(
                Some("name"),
                format!("a server named {:?} already exists", s.name),
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn server(&self, id: ServerId) -> Result<Server> {
        let row = sqlx::query("SELECT * FROM servers WHERE id = ?")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("server {id}")))?;
        server_from_row(&row)
    }

    pub async fn server_by_name(&self, name: &str) -> Result<Server> {
        let row = sqlx::query("SELECT * FROM servers WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("server {name:?}")))?;
        server_from_row(&row)
    }

    pub async fn servers(&self) -> Result<Vec<Server>> {
        let rows = sqlx::query("SELECT * FROM servers ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(server_from_row).collect()
    }

    pub async fn set_server_status(
        &self,
        id: ServerId,
        status: ServerStatus,
        message: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE servers SET status = ?, status_message = ?, last_reconciled_at = ? WHERE id = ?",
        )
        .bind(status.as_str())
        .bind(message)
        .bind(now())
        .bind(id.0)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn set_server_host_key(&self, id: ServerId, host_key: &str) -> Result<()> {
        sqlx::query("UPDATE servers SET host_key = ? WHERE id = ?")
            .bind(host_key)
            .bind(id.0)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    // ---- root paths ----------------------------------------------------------------------

    pub async fn create_root_path(
        &self,
        server: ServerId,
        path: &RootDir,
        capacity_gb: i64,
        policy: DeletePolicy,
    ) -> Result<RootPath> {
        crate::spec::gb_amount(capacity_gb, 1).map_err(|e| Error::invalid("capacity_gb", e.0))?;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let exists = sqlx::query("SELECT 1 FROM servers WHERE id = ?")
            .bind(server.0)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(Error::invalid(
                "server",
                format!("server {server} does not exist"),
            ));
        }
        let others = sqlx::query("SELECT path FROM root_paths WHERE server_id = ?")
            .bind(server.0)
            .fetch_all(&mut *tx)
            .await?;
        for row in others {
            let other: String = row.try_get("path")?;
            if let Ok(other) = RootDir::parse(&other)
                && other.overlaps(path)
            {
                return Err(Error::conflict(
                    Some("path"),
                    format!("{path} overlaps root path {other} on the same server"),
                ));
            }
        }
        let row = sqlx::query(
            "INSERT INTO root_paths (server_id, path, capacity_gb, delete_policy, created_at) \
             VALUES (?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(server.0)
        .bind(path.as_str())
        .bind(capacity_gb)
        .bind(policy.as_str())
        .bind(now())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        self.root_path(RootPathId(row.try_get("id")?)).await
    }

    pub async fn root_path(&self, id: RootPathId) -> Result<RootPath> {
        let sql = format!("{ROOT_PATH_SELECT} WHERE rp.id = ?");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("root path {id}")))?;
        root_path_from_row(&row)
    }

    pub async fn root_paths(&self) -> Result<Vec<RootPath>> {
        let sql = format!("{ROOT_PATH_SELECT} ORDER BY rp.id");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(root_path_from_row).collect()
    }

    // ---- users ---------------------------------------------------------------------------

    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        is_admin: bool,
        quota_gb: i64,
    ) -> Result<User> {
        crate::spec::gb_amount(quota_gb, 0).map_err(|e| Error::invalid("quota_gb", e.0))?;
        let res = sqlx::query(
            "INSERT INTO users (username, password_hash, is_admin, quota_gb, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(username)
        .bind(password_hash)
        .bind(is_admin)
        .bind(quota_gb)
        .bind(now())
        .execute(&self.writer)
        .await;
        match res {
            Ok(_) => self.user_by_name(username).await,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(Error::conflict(
                Some("username"),
                format!("a user named {username:?} already exists"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn user_by_name(&self, username: &str) -> Result<User> {
        let row = sqlx::query("SELECT * FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("user {username:?}")))?;
        user_from_row(&row)
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Change a user (the CLI: no caller to check).
    pub async fn update_user(&self, username: &str, change: &UserChange) -> Result<User> {
        self.change_user(None, username, change).await
    }

    /// Change a user on behalf of `by`, refused if `by` is locked when it is recorded.
    pub async fn update_user_as(
        &self,
        by: &User,
        username: &str,
        change: &UserChange,
    ) -> Result<User> {
        self.change_user(Some(by), username, change).await
    }

    async fn change_user(
        &self,
        by: Option<&User>,
        username: &str,
        change: &UserChange,
    ) -> Result<User> {
        if let Some(q) = change.quota_gb {
            crate::spec::gb_amount(q, 0).map_err(|e| Error::invalid("quota_gb", e.0))?;
        }
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(by) = by {
            refuse_if_locked(&mut tx, by).await?;
        }
        let res = sqlx::query(
            "UPDATE users SET quota_gb = COALESCE(?, quota_gb), locked = COALESCE(?, locked), \
             is_admin = COALESCE(?, is_admin), password_hash = COALESCE(?, password_hash) \
             WHERE username = ?",
        )
        .bind(change.quota_gb)
        .bind(change.locked)
        .bind(change.is_admin)
        .bind(change.password_hash.as_deref())
        .bind(username)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(Error::NotFound(format!("user {username:?}")));
        }
        tx.commit().await?;
        self.user_by_name(username).await
    }

    // ---- volumes: requests ---------------------------------------------------------------

    /// Record a new volume, reserving quota and capacity in the same transaction (shared with
    /// the other creates waiting at that moment: see `create`).
    pub async fn create_volume(&self, nv: &NewVolume) -> Result<Created> {
        match create::submit(&self.creates, nv).await? {
            create::Outcome::New(v) => Ok(Created::New(*v)),
            create::Outcome::Replayed(id) => Ok(Created::Replayed(self.volume(id).await?)),
        }
    }

    pub async fn volume(&self, id: VolumeId) -> Result<Volume> {
        let sql = format!("{VOLUME_SELECT} WHERE v.id = ?");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("volume {id}")))?;
        volume_from_row(&row)
    }

    /// A volume as seen by `viewer`: someone else's volume is "not found" to a non-admin, so
    /// ids do not leak.
    pub async fn volume_for(&self, id: VolumeId, viewer: &User) -> Result<Volume> {
        let v = self.volume(id).await?;
        if v.owner_id != viewer.id && !viewer.is_admin {
            return Err(Error::NotFound(format!("volume {id}")));
        }
        Ok(v)
    }

    /// Volumes visible to `viewer` (all for an admin), oldest first.
    pub async fn volumes_for(&self, viewer: &User, include_deleted: bool) -> Result<Vec<Volume>> {
        let mut out = Vec::new();
        self.each_volume_for(viewer, include_deleted, Page::default(), |v| out.push(v))
            .await?;
        Ok(out)
    }

    /// Like `volumes_for`, one volume at a time, without holding them all in memory: those
    /// with an id above `page.after`, at most `page.limit` of them.
    pub async fn each_volume_for(
        &self,
        viewer: &User,
        include_deleted: bool,
        page: Page,
        mut f: impl FnMut(Volume),
    ) -> Result<()> {
        use futures_util::TryStreamExt;
        let mut sql = format!("{VOLUME_SELECT} WHERE v.id > ?");
        if !viewer.is_admin {
            sql.push_str(" AND v.owner_id = ?");
        }
        if !include_deleted {
            sql.push_str(" AND v.state != 'deleted'");
        }
        if page.hide_deleting {
            sql.push_str(" AND v.state != 'deleting'");
        }
        sql.push_str(" ORDER BY v.id LIMIT ?");
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(page.after);
        if !viewer.is_admin {
            q = q.bind(viewer.id.0);
        }
        // SQLite: a negative LIMIT is no limit.
        let limit = page
            .limit
            .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        q = q.bind(limit);
        let mut rows = q.fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            f(volume_from_row(&row)?);
        }
        Ok(())
    }

    /// Change a volume's clients; the reconciler applies the new generation.
    pub async fn update_volume_clients(
        &self,
        id: VolumeId,
        viewer: &User,
        clients: &[ClientRule],
    ) -> Result<Volume> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        refuse_if_locked(&mut tx, viewer).await?;
        let row = sqlx::query(
            "SELECT v.owner_id, v.state, s.backend FROM volumes v \
             JOIN servers s ON s.id = v.server_id WHERE v.id = ?",
        )
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(Error::NotFound(format!("volume {id}")));
        };
        if row.try_get::<i64, _>("owner_id")? != viewer.id.0 && !viewer.is_admin {
            return Err(Error::NotFound(format!("volume {id}")));
        }
        let state: String = row.try_get("state")?;
        if state == "deleting" || state == "deleted" {
            return Err(Error::conflict(
                None,
                format!("volume {id} is {state} and can no longer be changed"),
            ));
        }
        check_backend_options(&row.try_get::<String, _>("backend")?, clients)?;
        sqlx::query(
            "UPDATE volumes SET clients = ?, generation = generation + 1, last_error = NULL, \
             state = CASE WHEN applied_clients IS NULL THEN 'creating' ELSE 'updating' END, \
             updated_at = ? WHERE id = ?",
        )
        .bind(clients_to_json(clients))
        .bind(now())
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.volume(id).await
    }

    /// Mark a volume for deletion and release its quota and capacity at once.
    pub async fn delete_volume(&self, id: VolumeId, viewer: &User) -> Result<Volume> {
        self.mark_deleting(id, viewer, true).await
    }

    /// Undo a create the server refused (hootie's API answers such a create with an error, so
    /// its caller must not be left holding it): delete it even if the owner was locked since.
    /// A volume never exported has its directory removed only if empty (`plan`).
    pub async fn roll_back_create(&self, id: VolumeId, owner: &User) -> Result<Volume> {
        self.mark_deleting(id, owner, false).await
    }

    async fn mark_deleting(&self, id: VolumeId, viewer: &User, check_lock: bool) -> Result<Volume> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        if check_lock {
            refuse_if_locked(&mut tx, viewer).await?;
        }
        let row =
            sqlx::query("SELECT owner_id, root_path_id, size_gb, state FROM volumes WHERE id = ?")
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else {
            return Err(Error::NotFound(format!("volume {id}")));
        };
        let owner: i64 = row.try_get("owner_id")?;
        if owner != viewer.id.0 && !viewer.is_admin {
            return Err(Error::NotFound(format!("volume {id}")));
        }
        let state: String = row.try_get("state")?;
        if state == "deleted" {
            return Err(Error::NotFound(format!("volume {id}")));
        }
        if state != "deleting" {
            let size: i64 = row.try_get("size_gb")?;
            let rp: i64 = row.try_get("root_path_id")?;
            sqlx::query(
                "UPDATE volumes SET state = 'deleting', generation = generation + 1, \
                 last_error = NULL, updated_at = ? WHERE id = ?",
            )
            .bind(now())
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
            // Never below zero, so a delete cannot fail on the counters' CHECK.
            sqlx::query("UPDATE users SET used_gb = MAX(used_gb - ?, 0) WHERE id = ?")
                .bind(size)
                .bind(owner)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE root_paths SET allocated_gb = MAX(allocated_gb - ?, 0) WHERE id = ?",
            )
            .bind(size)
            .bind(rp)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.volume(id).await
    }

    // ---- volumes: reconciler ---------------------------------------------------------------

    /// Every volume of a server the reconciler must look after (all but `deleted`).
    pub async fn server_volumes(&self, server: ServerId) -> Result<Vec<Volume>> {
        // Read through rusqlite off the runtime: a pass reads every volume of its server, and
        // through sqlx each row is a hand-off between threads (5x slower at 10,000 volumes).
        let (pool, rt) = (self.pool.clone(), tokio::runtime::Handle::current());
        tokio::task::spawn_blocking(move || {
            with_raw_connection(&rt, &pool, |db| {
                let mut q = db.prepare_cached(&format!(
                    "{VOLUME_SELECT} WHERE v.server_id = ?1 AND v.state != 'deleted' ORDER BY v.id"
                ))?;
                let mut rows = q.query([server.0])?;
                let mut volumes = Vec::new();
                while let Some(row) = rows.next()? {
                    volumes.push(volume_from_row(row)?);
                }
                Ok(volumes)
            })
        })
        .await
        .map_err(|e| anyhow::anyhow!("reading the volumes of server {server}: {e}"))?
    }

    /// Record what one reconcile pass confirmed. Each outcome is recorded only if the volume is
    /// still at the generation that was applied; a newer request is left for the next pass.
    pub async fn record_outcomes(&self, outcomes: &[Outcome]) -> Result<()> {
        // Short transactions of one statement per kind of outcome: a pass over thousands of
        // volumes must not hold the one write connection (and the creates queued behind it)
        // for as long as thousands of single-row statements take.
        for chunk in outcomes.chunks(OUTCOMES_PER_TRANSACTION) {
            let (mut applied, mut deleted, mut rejected, mut failed, mut pending) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for o in chunk {
                match o {
                    Outcome::Applied {
                        id,
                        generation,
                        clients,
                    } => applied.push(serde_json::json!([id.0, generation, clients])),
                    Outcome::Deleted { id, generation } => {
                        deleted.push(serde_json::json!([id.0, generation]))
                    }
                    Outcome::Rejected {
                        id,
                        generation,
                        message,
                    } => rejected.push(serde_json::json!([id.0, generation, message])),
                    Outcome::Failed {
                        id,
                        generation,
                        message,
                    } => failed.push(serde_json::json!([id.0, generation, message])),
                    Outcome::Pending {
                        id,
                        generation,
                        message,
                    } => pending.push(serde_json::json!([id.0, generation, message])),
                }
            }
            let ts = now();
            let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
            for (rows, sql) in [
                (applied, RECORD_APPLIED),
                (deleted, RECORD_DELETED),
                (rejected, RECORD_REJECTED),
                (failed, RECORD_FAILED),
                (pending, RECORD_PENDING),
            ] {
                if !rows.is_empty() {
                    sqlx::query(sql)
                        .bind(&ts)
                        .bind(serde_json::Value::Array(rows).to_string())
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
        }
        Ok(())
    }
}

/// Outcomes recorded per write transaction.
const OUTCOMES_PER_TRANSACTION: usize = 500;

// Each records a JSON array (?2) of outcomes `[id, generation, …]` at time ?1 (unused by
// RECORD_PENDING), one row lookup by id each; the generation guard drops an outcome for a state that has changed since.
const RECORD_APPLIED: &str = "UPDATE volumes SET state = 'available', applied_clients = o.clients, \
     last_error = NULL, failed_generation = NULL, updated_at = ?1 \
     FROM (SELECT value ->> 0 AS id, value ->> 1 AS generation, value ->> 2 AS clients FROM json_each(?2)) AS o \
     WHERE volumes.id = o.id AND volumes.generation = o.generation \
     AND volumes.state != 'deleting' AND volumes.state != 'deleted' \
     AND (volumes.state != 'available' OR volumes.applied_clients IS NOT o.clients \
          OR volumes.last_error IS NOT NULL)";
const RECORD_DELETED: &str = "UPDATE volumes SET state = 'deleted', last_error = NULL, \
     deleted_at = ?1, updated_at = ?1 \
     FROM (SELECT value ->> 0 AS id, value ->> 1 AS generation FROM json_each(?2)) AS o \
     WHERE volumes.id = o.id AND volumes.generation = o.generation AND volumes.state = 'deleting'";
const RECORD_REJECTED: &str = "UPDATE volumes SET \
     state = CASE WHEN volumes.state = 'deleting' THEN 'deleting' ELSE 'error' END, \
     failed_generation = o.generation, last_error = o.message, updated_at = ?1 \
     FROM (SELECT value ->> 0 AS id, value ->> 1 AS generation, value ->> 2 AS message FROM json_each(?2)) AS o \
     WHERE volumes.id = o.id AND volumes.generation = o.generation";
// A failure that is not a verdict: `error` without `failed_generation`, so the volume keeps
// its desired export and is re-verified on every pass (and becomes `available` again once the
// live state matches). Written only when something changes.
const RECORD_FAILED: &str = "UPDATE volumes SET \
     state = CASE WHEN volumes.state = 'deleting' THEN 'deleting' ELSE 'error' END, \
     failed_generation = NULL, last_error = o.message, updated_at = ?1 \
     FROM (SELECT value ->> 0 AS id, value ->> 1 AS generation, value ->> 2 AS message FROM json_each(?2)) AS o \
     WHERE volumes.id = o.id AND volumes.generation = o.generation \
     AND volumes.state != 'deleted' \
     AND (volumes.state NOT IN ('error', 'deleting') OR volumes.last_error IS NOT o.message \
          OR volumes.failed_generation IS NOT NULL)";
const RECORD_PENDING: &str = "UPDATE volumes SET last_error = o.message \
     FROM (SELECT value ->> 0 AS id, value ->> 1 AS generation, value ->> 2 AS message FROM json_each(?2)) AS o \
     WHERE volumes.id = o.id AND volumes.generation = o.generation \
     AND volumes.last_error IS NOT o.message";

/// Refuse a change by a locked account, inside the transaction that would record it: a lock
/// set after the request was authenticated still stops it.
async fn refuse_if_locked(tx: &mut sqlx::SqliteConnection, viewer: &User) -> Result<()> {
    let locked: Option<bool> = sqlx::query_scalar("SELECT locked FROM users WHERE id = ?")
        .bind(viewer.id.0)
        .fetch_optional(&mut *tx)
        .await?;
    match locked {
        Some(false) => Ok(()),
        Some(true) => Err(Error::Locked(LOCKED_MESSAGE.into())),
        None => Err(Error::Unauthenticated(
            "your account no longer exists".into(),
        )),
    }
}

/// What a locked account is told when it tries to change anything.
pub const LOCKED_MESSAGE: &str = "your account is locked; ask an administrator to unlock it";

/// Refuse clients and options the server's backend cannot honour (fields `clients[i].host`,
/// `clients[i].options`).
fn check_backend_options(backend: &str, clients: &[ClientRule]) -> Result<()> {
    if crate::backend::Kind::parse(backend) == Some(crate::backend::Kind::Ganesha) {
        for (i, c) in clients.iter().enumerate() {
            crate::backend::ganesha::check_client(&c.host)
                .map_err(|m| Error::invalid(format!("clients[{i}].host"), m))?;
            crate::backend::ganesha::check_options(&c.options)
                .map_err(|m| Error::invalid(format!("clients[{i}].options"), m))?;
        }
    }
    Ok(())
}

/// Largest export id nfs-ganesha accepts.
const MAX_EXPORT_ID: i64 = 65_535;

/// What the reconciler learned about one volume at one generation.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Exported and verified on the server with these clients (JSON as stored).
    Applied {
        id: VolumeId,
        generation: i64,
        clients: String,
    },
    /// Unexported and its data retained or purged, verified.
    Deleted { id: VolumeId, generation: i64 },
    /// The server refused this generation (its own message about the volume's own request,
    /// e.g. its options or client syntax): a verdict, not retried until the request changes.
    Rejected {
        id: VolumeId,
        generation: i64,
        message: String,
    },
    /// Could not be applied or verified for a reason outside the request (a directory
    /// missing or on a read-only file system, a host name that does not resolve): shown as
    /// `error` with the reason, and re-verified on every pass until the live state matches.
    Failed {
        id: VolumeId,
        generation: i64,
        message: String,
    },
    /// Could not be applied for a passing reason (server unreachable): state unchanged, the
    /// message shows why it is still pending; retried.
    Pending {
        id: VolumeId,
        generation: i64,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ClientSpec, ExportOptions};

    /// The query plan's lines for `sql` with `binds` integer parameters.
    async fn query_plan(db: &Datastore, sql: &str, binds: usize) -> Vec<String> {
        let mut q = sqlx::query(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
        for _ in 0..binds {
            q = q.bind(1_i64);
        }
        q.fetch_all(&db.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect()
    }

    #[tokio::test]
    async fn the_create_lookup_seeks_indexes_and_scans_nothing() {
        // A scan here makes every create cost O(volumes of the root path): the overlap check
        // once did, written as one `OR`.
        let (_d, db, _u, _rp) = fixture().await;
        let plan = query_plan(&db, &create::lookup_sql(3), 8).await;
        assert!(!plan.iter().any(|l| l.starts_with("SCAN")), "{plan:#?}");
        for index in [
            "volumes_idempotency (owner_id=? AND idempotency_key=?)",
            "volumes_live_path (root_path_id=? AND sub_path=?)",
            "volumes_live_path (root_path_id=? AND sub_path>? AND sub_path<?)",
        ] {
            assert!(
                plan.iter().any(|l| l.ends_with(index)),
                "{index}: {plan:#?}"
            );
        }
    }

    async fn fixture() -> (tempfile::TempDir, Datastore, UserId, RootPathId) {
        let dir = tempfile::tempdir().unwrap();
        let db = Datastore::open(&dir.path().join("t.db")).await.unwrap();
        let s = db
            .create_server(&NewServer {
                name: "s1".into(),
                ssh_host: "127.0.0.1".into(),
                ssh_port: 22,
                ssh_user: "root".into(),
                ssh_key: "/k".into(),
                host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA".into(),
                nfs_address: "127.0.0.1".into(),
                backend: "ganesha".into(),
            })
            .await
            .unwrap();
        let rp = db
            .create_root_path(
                s.id,
                &RootDir::parse("/srv/p").unwrap(),
                100,
                DeletePolicy::Retain,
            )
            .await
            .unwrap();
        let u = db.create_user("u", "x", false, 100).await.unwrap();
        (dir, db, u.id, rp.id)
    }

    fn new_volume(owner: UserId, rp: RootPathId, sub: &str) -> NewVolume {
        NewVolume {
            owner,
            root_path: rp,
            sub_path: SubPath::parse(sub).unwrap(),
            size_gb: 1,
            clients: vec![ClientRule {
                host: ClientSpec::parse("*").unwrap(),
                options: ExportOptions::parse("rw").unwrap(),
            }],
            mode: DirMode::default(),
            uid: 0,
            gid: 0,
            adopt_existing: false,
            idempotency_key: None,
            request_hash: None,
        }
    }

    async fn create(db: &Datastore, owner: UserId, rp: RootPathId, sub: &str) -> Volume {
        match db.create_volume(&new_volume(owner, rp, sub)).await.unwrap() {
            Created::New(v) => v,
            Created::Replayed(_) => panic!("not a replay"),
        }
    }

    #[tokio::test]
    async fn export_ids_are_stable_and_wrap_to_the_lowest_free_one() {
        let (_dir, db, owner, rp) = fixture().await;
        let a = create(&db, owner, rp, "a").await;
        let b = create(&db, owner, rp, "b").await;
        assert_eq!((a.export_id, b.export_id), (1, 2));
        // The returned volume is what a read gives back.
        let read = db.volume(b.id).await.unwrap();
        assert_eq!(read.export_id, 2);
        assert_eq!(read.owner, "u");
        assert_eq!(read.root_path.as_str(), "/srv/p");
        // Ids are not reused after a delete while they are below the limit.
        let viewer = db.user_by_name("u").await.unwrap();
        db.delete_volume(b.id, &viewer).await.unwrap();
        assert_eq!(create(&db, owner, rp, "c").await.export_id, 3);
        // At the top of ganesha's range, the lowest id no live volume holds is taken.
        sqlx::query("UPDATE volumes SET export_id = 65535 WHERE id = ?")
            .bind(a.id.0)
            .execute(&db.writer)
            .await
            .unwrap();
        sqlx::query("UPDATE volumes SET state = 'deleted' WHERE id = ?")
            .bind(b.id.0)
            .execute(&db.writer)
            .await
            .unwrap();
        let d = create(&db, owner, rp, "d").await;
        assert_eq!(d.export_id, 1);
        assert_eq!(db.volume(d.id).await.unwrap().export_id, 1);
        let e = create(&db, owner, rp, "e").await;
        assert_eq!(e.export_id, 2, "b's id is free again: b is deleted");
        let f = create(&db, owner, rp, "f").await;
        assert_eq!(f.export_id, 4, "3 is held by c");
    }

    #[tokio::test]
    async fn quota_capacity_and_overlap_are_checked_in_the_transaction() {
        let (_dir, db, owner, rp) = fixture().await;
        create(&db, owner, rp, "team/a").await;
        for (sub, want) in [
            ("team", "overlaps"),
            ("team/a", "already a volume"),
            ("team/a/b", "overlaps"),
        ] {
            match db.create_volume(&new_volume(owner, rp, sub)).await {
                Err(Error::Conflict { message, .. }) => {
                    assert!(message.contains(want), "{sub}: {message}")
                }
                other => panic!("{sub}: {:?}", other.map(|_| ())),
            }
        }
        // Siblings whose names share a prefix do not overlap.
        create(&db, owner, rp, "team-b").await;
        create(&db, owner, rp, "team.c").await;
        let mut big = new_volume(owner, rp, "big");
        big.size_gb = 98;
        match db.create_volume(&big).await {
            Err(Error::QuotaExceeded { message }) => {
                assert!(message.contains("exceeds your quota by 1 GB"), "{message}")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        let viewer = db.user_by_name("u").await.unwrap();
        assert_eq!(viewer.used_gb, 3);
    }

    #[tokio::test]
    async fn a_batch_admits_exactly_what_one_by_one_would() {
        // Quotas 100 GB, capacity 110 GB. All 46 creates below are queued before the create task
        // runs, so they are recorded as one batch; its checks must see each other.
        let (_dir, db, owner, rp) = fixture().await;
        sqlx::query("UPDATE root_paths SET capacity_gb = 110")
            .execute(&db.writer)
            .await
            .unwrap();
        let other = db.create_user("v", "x", false, 100).await.unwrap().id;
        let mut reqs = Vec::new();
        for k in 0..20 {
            // u: 20 x 3 GB against a 100 GB quota: all 20 (60 GB) are admitted.
            let mut nv = new_volume(owner, rp, &format!("u{k}"));
            nv.size_gb = 3;
            reqs.push(nv);
        }
        for k in 0..20 {
            // v: 20 x 3 GB, but only 50 GB of capacity is left after u: 16 fit (48 GB).
            let mut nv = new_volume(other, rp, &format!("v{k}"));
            nv.size_gb = 3;
            reqs.push(nv);
        }
        // Overlaps inside the batch (the last 2 GB of capacity go to "n" and "k1"): "n" first,
        // then its child and a second "n".
        reqs.push(new_volume(owner, rp, "n"));
        reqs.push(new_volume(owner, rp, "n/child"));
        reqs.push(new_volume(owner, rp, "n"));
        // One idempotency key used twice with the same body, once with another body.
        for (sub, hash) in [("k1", "h"), ("k1", "h"), ("k2", "other")] {
            let mut nv = new_volume(owner, rp, sub);
            nv.idempotency_key = Some("key".into());
            nv.request_hash = Some(hash.into());
            reqs.push(nv);
        }
        let results =
            futures_util::future::join_all(reqs.iter().map(|nv| db.create_volume(nv))).await;

        let ok = |r: &Result<Created>| matches!(r, Ok(Created::New(_)));
        assert!(results[..20].iter().all(ok));
        assert!(results[20..36].iter().all(ok));
        for r in &results[36..40] {
            assert!(
                matches!(r, Err(Error::CapacityExceeded { .. })),
                "{:?}",
                r.as_ref().map(|_| ())
            );
        }
        assert!(ok(&results[40]));
        for r in &results[41..43] {
            assert!(
                matches!(r, Err(Error::Conflict { .. })),
                "{:?}",
                r.as_ref().map(|_| ())
            );
        }
        let first = match &results[43] {
            Ok(Created::New(v)) => v.id,
            other => panic!("{:?}", other.as_ref().map(|_| ())),
        };
        match &results[44] {
            Ok(Created::Replayed(v)) => assert_eq!(v.id, first),
            other => panic!("{:?}", other.as_ref().map(|_| ())),
        }
        assert!(matches!(results[45], Err(Error::Conflict { .. })));

        // The counters equal the sum of what was admitted, and export ids are distinct.
        let admitted: Vec<Volume> = results
            .iter()
            .filter_map(|r| match r {
                Ok(Created::New(v)) => Some(v.clone()),
                _ => None,
            })
            .collect();
        let sum = |o: UserId| -> i64 {
            admitted
                .iter()
                .filter(|v| v.owner_id == o)
                .map(|v| v.size_gb)
                .sum()
        };
        assert_eq!(db.user_by_name("u").await.unwrap().used_gb, sum(owner));
        assert_eq!(db.user_by_name("v").await.unwrap().used_gb, sum(other));
        let rp_row = db.root_path(rp).await.unwrap();
        assert_eq!(rp_row.allocated_gb, sum(owner) + sum(other));
        assert_eq!(
            rp_row.allocated_gb, 110,
            "capacity used to the last GB, never past it"
        );
        let mut ids: Vec<u32> = admitted.iter().map(|v| v.export_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), admitted.len());
    }

    #[tokio::test]
    async fn huge_sizes_in_one_batch_are_refused_and_counters_never_overflow() {
        let (_dir, db, owner, rp) = fixture().await;
        create(&db, owner, rp, "small").await;
        // Quota and capacity as large as an admin may set, so only overflow could admit these.
        for sql in [
            "UPDATE users SET quota_gb = 1099511627776",
            "UPDATE root_paths SET capacity_gb = 1099511627776",
        ] {
            sqlx::query(sql).execute(&db.writer).await.unwrap();
        }
        let mut reqs = Vec::new();
        for (k, size) in [i64::MAX, i64::MAX, i64::MAX - 1, 1 << 62, 0, -5, i64::MIN]
            .into_iter()
            .enumerate()
        {
            let mut nv = new_volume(owner, rp, &format!("huge{k}"));
            nv.size_gb = size;
            reqs.push(nv);
        }
        let results =
            futures_util::future::join_all(reqs.iter().map(|nv| db.create_volume(nv))).await;
        for r in &results {
            assert!(
                matches!(
                    r,
                    Err(Error::Invalid { .. }
                        | Error::QuotaExceeded { .. }
                        | Error::CapacityExceeded { .. })
                ),
                "{:?}",
                r.as_ref().map(|_| ())
            );
        }
        assert_eq!(db.user_by_name("u").await.unwrap().used_gb, 1);
        assert_eq!(db.root_path(rp).await.unwrap().allocated_gb, 1);
    }

    #[tokio::test]
    async fn overlap_errors_name_only_the_callers_own_volumes() {
        let (_dir, db, owner, rp) = fixture().await;
        let other = db.create_user("v", "x", false, 100).await.unwrap().id;
        create(&db, other, rp, "secret/project").await;
        create(&db, owner, rp, "mine").await;
        for sub in ["secret", "secret/project", "secret/project/x"] {
            match db.create_volume(&new_volume(owner, rp, sub)).await {
                Err(Error::Conflict { message, .. }) => {
                    // Only what the caller sent: not the other volume's path, owner or state.
                    assert_eq!(
                        message,
                        format!(
                            "/srv/p/{sub}: the path overlaps an existing volume; choose another sub_path"
                        )
                    );
                }
                other => panic!("{sub}: {:?}", other.map(|_| ())),
            }
        }
        match db.create_volume(&new_volume(owner, rp, "mine/sub")).await {
            Err(Error::Conflict { message, .. }) => {
                assert!(
                    message.contains("overlaps your volume /srv/p/mine"),
                    "{message}"
                )
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[tokio::test]
    async fn a_locked_account_changes_nothing_even_if_locked_after_authenticating() {
        let (_dir, db, owner, rp) = fixture().await;
        let v = create(&db, owner, rp, "a").await;
        // Authenticated (read) before the lock was set.
        let viewer = db.user_by_name("u").await.unwrap();
        db.update_user(
            "u",
            &UserChange {
                locked: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let clients = new_volume(owner, rp, "x").clients;
        assert!(matches!(
            db.update_volume_clients(v.id, &viewer, &clients).await,
            Err(Error::Locked(_))
        ));
        assert!(matches!(
            db.delete_volume(v.id, &viewer).await,
            Err(Error::Locked(_))
        ));
        assert!(matches!(
            db.create_volume(&new_volume(owner, rp, "b")).await,
            Err(Error::Locked(_))
        ));
        // A locked administrator cannot unlock anyone, itself included.
        assert!(matches!(
            db.update_user_as(
                &viewer,
                "u",
                &UserChange {
                    locked: Some(false),
                    ..Default::default()
                }
            )
            .await,
            Err(Error::Locked(_))
        ));
        assert!(db.user_by_name("u").await.unwrap().locked);
        let after = db.volume(v.id).await.unwrap();
        assert_eq!((after.state, after.generation), (VolumeState::Creating, 1));
        assert_eq!(db.user_by_name("u").await.unwrap().used_gb, 1);
    }

    #[tokio::test]
    async fn outcomes_are_recorded_only_for_the_generation_applied() {
        let (_dir, db, owner, rp) = fixture().await;
        let reqs: Vec<NewVolume> = (0..1200)
            .map(|k| new_volume(owner, rp, &format!("v{k}")))
            .collect();
        sqlx::query("UPDATE users SET quota_gb = 2000")
            .execute(&db.writer)
            .await
            .unwrap();
        sqlx::query("UPDATE root_paths SET capacity_gb = 2000")
            .execute(&db.writer)
            .await
            .unwrap();
        let vols: Vec<Volume> =
            futures_util::future::join_all(reqs.iter().map(|nv| db.create_volume(nv)))
                .await
                .into_iter()
                .map(|r| match r.unwrap() {
                    Created::New(v) => v,
                    Created::Replayed(_) => panic!("not a replay"),
                })
                .collect();
        let viewer = db.user_by_name("u").await.unwrap();
        let deleting = db.delete_volume(vols[4].id, &viewer).await.unwrap();
        let clients = clients_to_json(&vols[0].clients);
        let mut outcomes = vec![
            Outcome::Applied {
                id: vols[0].id,
                generation: 1,
                clients: clients.clone(),
            },
            // A stale generation: a newer request came in since the pass read it.
            Outcome::Applied {
                id: vols[1].id,
                generation: 2,
                clients: clients.clone(),
            },
            Outcome::Rejected {
                id: vols[2].id,
                generation: 1,
                message: "bad option".into(),
            },
            Outcome::Deleted {
                id: deleting.id,
                generation: deleting.generation,
            },
        ];
        // More than one transaction's worth of pending outcomes.
        outcomes.extend(vols[5..].iter().map(|v| Outcome::Pending {
            id: v.id,
            generation: 1,
            message: "server down".into(),
        }));
        db.record_outcomes(&outcomes).await.unwrap();

        let read = |k: usize| db.volume(vols[k].id);
        let a = read(0).await.unwrap();
        assert_eq!(a.state, VolumeState::Available);
        assert_eq!(a.applied_clients.as_deref(), Some(&vols[0].clients[..]));
        let b = read(1).await.unwrap();
        assert_eq!((b.state, b.applied_clients), (VolumeState::Creating, None));
        let c = read(2).await.unwrap();
        assert_eq!(c.state, VolumeState::Error);
        assert_eq!(
            (c.failed_generation, c.last_error.as_deref()),
            (Some(1), Some("bad option"))
        );
        assert_eq!(read(3).await.unwrap().state, VolumeState::Creating);
        assert_eq!(read(4).await.unwrap().state, VolumeState::Deleted);
        for k in [5, 600, 1199] {
            let v = read(k).await.unwrap();
            assert_eq!(
                (v.state, v.last_error.as_deref()),
                (VolumeState::Creating, Some("server down"))
            );
        }
        // A failure of the moment: `error`, but no verdict (still desired), and a later
        // verification brings it back.
        db.record_outcomes(&[Outcome::Failed {
            id: vols[3].id,
            generation: 1,
            message: "directory missing".into(),
        }])
        .await
        .unwrap();
        let d = read(3).await.unwrap();
        assert_eq!(
            (d.state, d.failed_generation, d.last_error.as_deref()),
            (VolumeState::Error, None, Some("directory missing"))
        );
        db.record_outcomes(&[Outcome::Applied {
            id: vols[3].id,
            generation: 1,
            clients,
        }])
        .await
        .unwrap();
        let d = read(3).await.unwrap();
        assert_eq!((d.state, d.last_error), (VolumeState::Available, None));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_raw_transaction_left_open_is_rolled_back() {
        let (_dir, db, _owner, _rp) = fixture().await;
        let (pool, rt) = (db.writer.clone(), tokio::runtime::Handle::current());
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
        let tx = db.writer.begin_with("BEGIN IMMEDIATE").await.unwrap();
        tx.rollback().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_write_ahead_log_is_checkpointed_in_the_background() {
        let (dir, db, owner, rp) = fixture().await;
        sqlx::query("UPDATE users SET quota_gb = 10000")
            .execute(&db.writer)
            .await
            .unwrap();
        sqlx::query("UPDATE root_paths SET capacity_gb = 10000")
            .execute(&db.writer)
            .await
            .unwrap();
        // Commits do not checkpoint ...
        let auto: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&db.writer)
            .await
            .unwrap();
        assert_eq!(auto, 0);
        // ... yet the log does not grow with every round of writes: the background checkpoint
        // lets the writer start it over.
        let wal = dir.path().join("t.db-wal");
        let mut sizes = Vec::new();
        for round in 0..5 {
            for k in 0..100 {
                create(&db, owner, rp, &format!("r{round}-{k}")).await;
            }
            tokio::time::sleep(CHECKPOINT_EVERY * 3).await;
            sizes.push(std::fs::metadata(&wal).unwrap().len());
        }
        assert!(
            sizes[4] < 2 * sizes[0],
            "the log grew with every round: {sizes:?}"
        );
    }
}
