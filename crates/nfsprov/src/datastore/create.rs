//! Recording new volumes, with group commit.
//!
//! Every create goes through one thread that owns the write path for creates: it takes all the
//! creates waiting at that moment (up to `MAX_BATCH`) and records them in one `BEGIN
//! IMMEDIATE` transaction, each with one combined read (owner, root path, server, idempotency
//! key, overlapping volumes) and one `INSERT`; the quota and capacity reservations of the whole
//! batch are one conditional `UPDATE` per owner and per root path before the one `COMMIT`.
//!
//! The checks see the transaction's own earlier inserts and the batch's pending reservations,
//! so a batch admits exactly what the same requests one by one would. A request refused (quota,
//! overlap, …) writes nothing; a database error rolls the batch back and its requests are
//! retried one by one, so one request cannot fail another.
//!
//! Why a thread and rusqlite: through sqlx, every statement is a hand-off to the connection's
//! worker thread and back, and on a busy machine each hand-off waits for a thread to be
//! scheduled. The batch instead runs its statements directly on the one write connection of
//! the pool (`lock_handle`), so a batch costs a few hand-offs whatever its size. Writes stay on
//! that single connection: nothing else contends for SQLite's write lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{OptionalExtension, params};
use sqlx::sqlite::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::audit::{Chain, insert_raw};
use super::root_paths::{apply_policy, stored_policy};
use super::sqlite::with_raw_connection;
use super::volumes::check_backend_options;
use super::{Columns, MAX_EXPORT_ID, NewVolume};
use super::{now, parse_time};
use crate::audit::Record;
use crate::error::{Amount, Clash, Entity, Error, Result};
use crate::fault;
use crate::model::*;
use crate::spec::{MAX_GB, RootDir};

/// Most creates recorded in one transaction.
pub(super) const MAX_BATCH: usize = 256;

pub(super) struct Job {
    pub(super) nv: NewVolume,
    /// Who asked: the create's audit record is written in the batch's transaction.
    pub(super) ctx: crate::audit::Context,
    pub(super) reply: oneshot::Sender<Result<Outcome>>,
}

pub(super) enum Outcome {
    New(Box<Volume>),
    /// An earlier request with the same idempotency key created this volume.
    Replayed(VolumeId),
}

/// What the create thread has done so far: batches taken, creates in them, the largest batch.
/// Read by tests (a batch's size is the point of group commit) and cheap to keep.
#[derive(Default)]
pub(super) struct Stats {
    batches: AtomicU64,
    creates: AtomicU64,
    largest: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// Batches recorded (each one transaction, or one per request after a database error).
    pub batches: u64,
    /// Creates in those batches (callers that went away before their batch are not counted).
    pub creates: u64,
    /// The most creates one batch held.
    pub largest: u64,
}

impl Stats {
    pub(super) fn snapshot(&self) -> BatchCounts {
        BatchCounts {
            batches: self.batches.load(Ordering::Relaxed),
            creates: self.creates.load(Ordering::Relaxed),
            largest: self.largest.load(Ordering::Relaxed),
        }
    }

    pub(super) fn note(&self, size: usize) {
        let size = size as u64;
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.creates.fetch_add(size, Ordering::Relaxed);
        self.largest.fetch_max(size, Ordering::Relaxed);
    }
}

/// Start the create thread on `writer`; it ends when every sender is gone.
pub(super) fn spawn(writer: SqlitePool, stats: Arc<Stats>) -> std::io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
    let rt = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("nfsprov-creates".into())
        .spawn(move || run(&rt, &writer, &stats, rx))?;
    Ok(tx)
}

/// Queue `nv` and wait for its outcome. Dropping the future before its batch is taken (the
/// caller went away) withdraws the request: it is not recorded.
pub(super) async fn submit(
    queue: &mpsc::Sender<Job>,
    nv: &NewVolume,
    ctx: &crate::audit::Context,
) -> Result<Outcome> {
    let (reply, outcome) = oneshot::channel();
    let stopped = || anyhow::anyhow!("the create queue has stopped (is the server shutting down?)");
    queue
        .send(Job {
            nv: nv.clone(),
            ctx: ctx.clone(),
            reply,
        })
        .await
        .map_err(|_| stopped())?;
    tracing::debug!(sub_path = %nv.sub_path.as_str(), "create queued");
    outcome.await.map_err(|_| stopped())?
}

fn run(
    rt: &tokio::runtime::Handle,
    writer: &SqlitePool,
    stats: &Stats,
    mut rx: mpsc::Receiver<Job>,
) {
    // In the runtime's context: returning a pool connection spawns a task.
    let _in_runtime = rt.enter();
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rt.block_on(rx.recv_many(&mut jobs, MAX_BATCH)) > 0 {
        // A request whose caller went away is not recorded, as with a dropped transaction.
        let taken = jobs.len();
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.len() < taken {
            tracing::info!(
                withdrawn = taken - jobs.len(),
                "creates not recorded: their callers went away before their batch"
            );
        }
        if jobs.is_empty() {
            continue;
        }
        stats.note(jobs.len());
        tracing::debug!(creates = jobs.len(), "recording a batch of creates");
        // A bug that panics fails its batch, not every create after it.
        let recorded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            record_batch(rt, writer, &jobs)
        }));
        let outcomes = recorded.unwrap_or_else(|_| {
            let failed = || anyhow::anyhow!("internal error while recording the create").into();
            jobs.iter().map(|_| Err(failed())).collect()
        });
        for (job, outcome) in jobs.drain(..).zip(outcomes) {
            let _ = job.reply.send(outcome);
        }
    }
}

/// Record `jobs` in one transaction; if that fails, each in its own.
fn record_batch(
    rt: &tokio::runtime::Handle,
    writer: &SqlitePool,
    jobs: &[Job],
) -> Vec<Result<Outcome>> {
    match with_raw_connection(rt, writer, |db| apply(db, jobs)) {
        Ok(outcomes) => outcomes,
        Err(e) if jobs.len() == 1 => vec![Err(e)],
        Err(e) => {
            tracing::warn!(error = %e, batch = jobs.len(), "batch of creates rolled back; recording them one by one");
            jobs.iter()
                .map(|job| {
                    let one =
                        with_raw_connection(rt, writer, |db| apply(db, std::slice::from_ref(job)));
                    one.and_then(|mut o| o.pop().expect("one outcome per job"))
                })
                .collect()
        }
    }
}

/// Reservations and audit records made by the batch so far, written before the commit.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) used: HashMap<UserId, i64>,
    pub(super) allocated: HashMap<RootPathId, i64>,
    /// The audit chain's head, read at the batch's first record.
    chain: Option<Chain>,
    audit: Vec<Record>,
}

/// Record `jobs` in one transaction. `Err` means nothing was recorded; each inner `Err` is one
/// request refused.
fn apply(db: &rusqlite::Connection, jobs: &[Job]) -> Result<Vec<Result<Outcome>>> {
    // BEGIN IMMEDIATE takes SQLite's write lock up front: the checks below and the
    // reservations after them see no concurrent writer.
    db.execute_batch("BEGIN IMMEDIATE")?;
    // On an error, `with_raw_connection` rolls back.
    let outcomes = record_all(db, jobs)?;
    db.execute_batch("COMMIT")?;
    Ok(outcomes)
}

fn record_all(db: &rusqlite::Connection, jobs: &[Job]) -> Result<Vec<Result<Outcome>>> {
    let mut pending = Pending::default();
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        outcomes.push(record(db, job, &mut pending)?);
        // After a first insert, inside the transaction: a panic here must leave nothing.
        fault::panic_once("create-batch-panic-once");
    }
    // Conditional updates keep the invariant even on an engine without a global write lock.
    // `?1 <= quota_gb - used_gb` rather than `used_gb + ?1 <= quota_gb`: SQLite turns an
    // integer overflow into a REAL, and a subtraction of two non-negative counters cannot
    // overflow.
    let mut quota = db.prepare_cached(
        "UPDATE users SET used_gb = used_gb + ?1 WHERE id = ?2 AND ?1 >= 0 AND ?1 <= quota_gb - used_gb",
    )?;
    for (user, gb) in &pending.used {
        if quota.execute(params![gb, user])? != 1 {
            return Err(anyhow::anyhow!("quota of user {user} changed during a create").into());
        }
    }
    let mut capacity = db.prepare_cached(
        "UPDATE root_paths SET allocated_gb = allocated_gb + ?1 WHERE id = ?2 AND ?1 >= 0 AND ?1 <= capacity_gb - allocated_gb",
    )?;
    for (rp, gb) in &pending.allocated {
        if capacity.execute(params![gb, rp])? != 1 {
            return Err(
                anyhow::anyhow!("capacity of root path {rp} changed during a create").into(),
            );
        }
    }
    // In the batch's transaction: a create is never recorded without its audit record.
    insert_raw(db, &pending.audit)?;
    for (job, outcome) in jobs.iter().zip(&outcomes) {
        if let Ok(Outcome::New(_)) = outcome {
            job.ctx.mark_recorded();
        }
    }
    Ok(outcomes)
}

/// The owner, root path and server of a create, the volume an idempotency key already made, and
/// a live volume the new path would equal, sit in, or contain (as "state:owner_id:sub_path"),
/// in one statement.
///
/// Binds: ?1 owner, ?2 root path, ?3 idempotency key, ?4 "{sub}/", ?5 "{sub}0" ('0' is the byte
/// after '/'), then the sub path and its ancestors from ?6 on. The overlap check is two index
/// range arms, not one `OR`: SQLite serves the `OR` form with a scan of the whole root path,
/// which made every create cost O(volumes).
///
/// `collate` follows `sub_path` in the range arm: PostgreSQL must compare it byte-wise
/// (`COLLATE "C"`, as SQLite does) for the range to be the paths below `{sub}/`.
pub(super) fn lookup_sql(ancestors: usize, collate: &str) -> String {
    let placeholders: Vec<String> = (0..ancestors).map(|i| format!("?{}", i + 6)).collect();
    let placeholders = placeholders.join(", ");
    format!(
        "SELECT u.username, u.quota_gb, u.used_gb, u.locked, rp.server_id, rp.path, \
         rp.capacity_gb, rp.allocated_gb, rp.delete_policy, s.backend, s.nfs_address, \
         (SELECT id FROM volumes WHERE owner_id = ?1 AND idempotency_key = ?3) AS prior_id, \
         (SELECT request_hash FROM volumes WHERE owner_id = ?1 AND idempotency_key = ?3) AS prior_hash, \
         (SELECT state || ':' || owner_id || ':' || sub_path FROM volumes WHERE root_path_id = ?2 \
            AND state != 'deleted' AND sub_path IN ({placeholders}) \
          UNION ALL SELECT state || ':' || owner_id || ':' || sub_path FROM volumes WHERE root_path_id = ?2 \
            AND state != 'deleted' AND sub_path{collate} >= ?4 AND sub_path{collate} < ?5 LIMIT 1) AS clash, \
         u.is_admin, rp.export_policy, rp.layout \
         FROM users u LEFT JOIN root_paths rp ON rp.id = ?2 \
         LEFT JOIN servers s ON s.id = rp.server_id WHERE u.id = ?1"
    )
}

/// What the lookup read for one create.
pub(super) struct Lookup {
    username: String,
    quota: i64,
    used: i64,
    locked: bool,
    server_id: Option<ServerId>,
    rp_path: Option<String>,
    capacity: Option<i64>,
    allocated: Option<i64>,
    delete_policy: Option<String>,
    backend: Option<String>,
    nfs_address: Option<String>,
    prior_id: Option<VolumeId>,
    prior_hash: Option<String>,
    clash: Option<String>,
    is_admin: bool,
    export_policy: Option<String>,
    layout: Option<String>,
}

impl Lookup {
    /// A row of `lookup_sql` read by column name (the PostgreSQL path; the create thread reads
    /// rusqlite's row by position).
    pub(super) fn from_columns(r: &impl Columns) -> Result<Lookup> {
        Ok(Lookup {
            username: r.text("username")?,
            quota: r.int("quota_gb")?,
            used: r.int("used_gb")?,
            locked: r.flag("locked")?,
            server_id: r.opt_int("server_id")?.map(ServerId),
            rp_path: r.opt_text("path")?,
            capacity: r.opt_int("capacity_gb")?,
            allocated: r.opt_int("allocated_gb")?,
            delete_policy: r.opt_text("delete_policy")?,
            backend: r.opt_text("backend")?,
            nfs_address: r.opt_text("nfs_address")?,
            prior_id: r.opt_int("prior_id")?.map(VolumeId),
            prior_hash: r.opt_text("prior_hash")?,
            clash: r.opt_text("clash")?,
            is_admin: r.flag("is_admin")?,
            export_policy: r.opt_text("export_policy")?,
            layout: r.opt_text("layout")?,
        })
    }
}

/// Check and insert one create inside the batch's transaction.
fn record(db: &rusqlite::Connection, job: &Job, pending: &mut Pending) -> Result<Result<Outcome>> {
    let nv = &job.nv;
    let sub = nv.sub_path.as_str();
    let ancestors: Vec<String> = {
        let parts: Vec<&str> = sub.split('/').collect();
        (1..=parts.len()).map(|k| parts[..k].join("/")).collect()
    };
    let mut lookup = db.prepare_cached(&lookup_sql(ancestors.len(), ""))?;
    let (above, below) = (format!("{sub}/"), format!("{sub}0"));
    let mut args: Vec<&dyn rusqlite::ToSql> = vec![
        &nv.owner,
        &nv.root_path,
        &nv.idempotency_key,
        &above,
        &below,
    ];
    args.extend(ancestors.iter().map(|a| a as &dyn rusqlite::ToSql));
    let row = lookup
        .query_row(args.as_slice(), |r| {
            Ok(Lookup {
                username: r.get(0)?,
                quota: r.get(1)?,
                used: r.get(2)?,
                locked: r.get(3)?,
                server_id: r.get(4)?,
                rp_path: r.get(5)?,
                capacity: r.get(6)?,
                allocated: r.get(7)?,
                delete_policy: r.get(8)?,
                backend: r.get(9)?,
                nfs_address: r.get(10)?,
                prior_id: r.get(11)?,
                prior_hash: r.get(12)?,
                clash: r.get(13)?,
                is_admin: r.get(14)?,
                export_policy: r.get(15)?,
                layout: r.get(16)?,
            })
        })
        .optional()?;
    let Some(row) = row else {
        return Ok(Err(Error::not_found(Entity::User, nv.owner)));
    };
    let (server_id, clients) = match check(&row, nv, pending)? {
        Verdict::Replay(prior) => return Ok(Ok(Outcome::Replayed(prior))),
        Verdict::Refused(e) => return Ok(Err(e)),
        Verdict::Go { server_id, clients } => (server_id, clients),
    };
    let ts = now();
    let mut insert = db.prepare_cached(INSERT)?;
    let (id, mut export_id): (VolumeId, i64) = insert.query_row(
        params![
            nv.owner,
            nv.root_path,
            server_id,
            sub,
            nv.size_gb,
            clients_to_json(&clients),
            nv.mode.as_octal_string(),
            nv.uid,
            nv.gid,
            nv.idempotency_key,
            nv.request_hash,
            ts,
            nv.adopt_existing,
        ],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if let Some(sid) = nv.restore_from {
        db.execute(INSERT_RESTORE, params![id, sid])?;
    }
    if export_id > MAX_EXPORT_ID {
        // Ids ran past ganesha's range: take the lowest one free (rare).
        export_id = match lowest_free_export_id(db, server_id)? {
            Some(free) => free,
            None => return Err(no_export_ids()),
        };
        db.execute(SET_EXPORT_ID, params![export_id, id])?;
    }
    reserve(pending, nv)?;
    let v = created(row, nv, id, export_id, server_id, clients, &ts)?;
    // Sealed now, written with the batch's reservations (`record_all`).
    let chain = match &mut pending.chain {
        Some(chain) => chain,
        None => pending.chain.insert(Chain::read_raw(db)?),
    };
    pending
        .audit
        .push(chain.seal(&job.ctx, &create_entry(nv, &v)));
    Ok(Ok(Outcome::New(Box::new(v))))
}

/// What the checks of a create decided.
pub(super) enum Verdict {
    /// An earlier request with the same idempotency key made this volume.
    Replay(VolumeId),
    Refused(Error),
    Go {
        server_id: ServerId,
        /// As the root path's policy exports them.
        clients: Vec<ClientRule>,
    },
}

/// The checks of a create, on what the lookup read in the recording transaction (pure, the
/// same on either database): `pending` holds the reservations of the batch so far.
pub(super) fn check(row: &Lookup, nv: &NewVolume, pending: &Pending) -> Result<Verdict> {
    let pending_used = *pending.used.get(&nv.owner).unwrap_or(&0);
    let pending_allocated = *pending.allocated.get(&nv.root_path).unwrap_or(&0);
    let sub = nv.sub_path.as_str();
    if let Some(prior) = row.prior_id {
        if row.prior_hash != nv.request_hash {
            return Ok(Verdict::Refused(Error::conflict(
                Clash::IdempotencyKey,
                "this Idempotency-Key was already used for a different request",
            )));
        }
        return Ok(Verdict::Replay(prior));
    }
    if row.locked {
        return Ok(Verdict::Refused(Error::Locked(
            super::LOCKED_MESSAGE.into(),
        )));
    }
    let (Some(server_id), Some(rp_path), Some(capacity), Some(allocated)) =
        (row.server_id, &row.rp_path, row.capacity, row.allocated)
    else {
        return Ok(Verdict::Refused(Error::UnknownRootPath(nv.root_path)));
    };
    if let Err(e) = check_backend_options(row.backend.as_deref().unwrap_or_default(), &nv.clients) {
        return Ok(Verdict::Refused(e));
    }
    // The policy is read in this transaction, so a policy change commits either before this
    // create (and binds it) or after it (and binds later requests): no check-then-act.
    let policy = stored_policy(row.export_policy.as_deref().unwrap_or("{}"))?;
    let clients = match apply_policy(&policy, row.is_admin, &nv.clients, Some(nv.size_gb)) {
        Ok(clients) => clients,
        Err(e) => return Ok(Verdict::Refused(e)),
    };

    // A volume may not be nested in, or contain, another live volume of the same root path:
    // deleting one would move the other's data. Another user's volume is not named: its path
    // and state are theirs.
    if let Some(clash) = &row.clash {
        return Ok(Verdict::Refused(overlap_error(
            rp_path, sub, nv.owner, clash,
        )));
    }
    if !(1..=MAX_GB).contains(&nv.size_gb) {
        return Ok(Verdict::Refused(Error::out_of_range(
            Amount::Size,
            format!("the size must be 1 to {MAX_GB} GB"),
        )));
    }

    // In i128: no sum of stored counters and a request can overflow, whatever is stored.
    let size = i128::from(nv.size_gb);
    let quota = i128::from(row.quota);
    let used = i128::from(row.used) + i128::from(pending_used);
    if used + size > quota {
        return Ok(Verdict::Refused(Error::QuotaExceeded {
            message: format!(
                "size_GB {} exceeds your quota by {} GB (quota {} GB, {} GB in use, {} GB free)",
                nv.size_gb,
                used + size - quota,
                quota,
                used,
                (quota - used).max(0)
            ),
        }));
    }
    let capacity = i128::from(capacity);
    let allocated = i128::from(allocated) + i128::from(pending_allocated);
    if allocated + size > capacity {
        return Ok(Verdict::Refused(Error::CapacityExceeded {
            message: format!(
                "size_GB {} exceeds the free capacity of root path {} by {} GB (capacity {} GB, {} GB allocated, {} GB free)",
                nv.size_gb,
                nv.root_path,
                allocated + size - capacity,
                capacity,
                allocated,
                (capacity - allocated).max(0)
            ),
        }));
    }

    Ok(Verdict::Go { server_id, clients })
}

/// Count `nv`'s size in the batch's reservations (written before the commit).
pub(super) fn reserve(pending: &mut Pending, nv: &NewVolume) -> Result<()> {
    // Both fit in i64: they are at most the quota and the capacity (checked).
    let add = |sum: &mut i64| {
        *sum = sum
            .checked_add(nv.size_gb)
            .ok_or_else(|| anyhow::anyhow!("a batch's reservations overflowed"))?;
        Ok::<_, Error>(())
    };
    add(pending.used.entry(nv.owner).or_default())?;
    add(pending.allocated.entry(nv.root_path).or_default())
}

/// The volume just recorded: everything is known, no need to read the row back.
pub(super) fn created(
    row: Lookup,
    nv: &NewVolume,
    id: VolumeId,
    export_id: i64,
    server_id: ServerId,
    clients: Vec<ClientRule>,
    ts: &str,
) -> Result<Volume> {
    let rp_path = row.rp_path.as_deref().unwrap_or_default();
    Ok(Volume {
        id,
        owner_id: nv.owner,
        owner: row.username,
        root_path_id: nv.root_path,
        root_path: RootDir::parse(rp_path).map_err(|e| anyhow::anyhow!("stored root path: {e}"))?,
        delete_policy: DeletePolicy::parse(row.delete_policy.as_deref().unwrap_or_default())
            .unwrap_or_default(),
        layout: super::root_paths::stored_layout(row.layout.as_deref().unwrap_or_default())?,
        server_id,
        nfs_address: row.nfs_address.unwrap_or_default(),
        sub_path: nv.sub_path.clone(),
        size_gb: nv.size_gb,
        clients,
        applied_clients: None,
        mode: nv.mode,
        uid: nv.uid,
        gid: nv.gid,
        adopt_existing: nv.adopt_existing,
        state: VolumeState::Creating,
        export_id: export_id as u32,
        generation: 1,
        failed_generation: None,
        last_error: None,
        created_at: parse_time(ts),
        updated_at: parse_time(ts),
    })
}

/// The audit record of a create. A restore is a create: recorded as one, naming the
/// snapshot it is made from.
pub(super) fn create_entry(nv: &NewVolume, v: &Volume) -> crate::audit::Entry {
    let mut after = super::audit::volume_fields(v);
    if let (Some(sid), Some(fields)) = (nv.restore_from, after.as_object_mut()) {
        fields.insert("restored_from_snapshot".into(), serde_json::json!(sid));
    }
    crate::audit::Entry {
        action: if nv.restore_from.is_some() {
            "snapshot.restore"
        } else {
            "volume.create"
        }
        .into(),
        object: Some(format!("volume/{}", v.id)),
        volume_id: Some(v.id.0),
        before: None,
        after: Some(after),
        status: None,
        outcome: "recorded".into(),
    }
}

pub(super) const INSERT: &str = "INSERT INTO volumes (owner_id, root_path_id, server_id, sub_path, size_gb, clients, mode, uid, gid, \
     state, idempotency_key, request_hash, export_id, created_at, updated_at, adopt_existing) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'creating', ?10, ?11, \
             (SELECT COALESCE(MAX(export_id), 0) + 1 FROM volumes WHERE server_id = ?3), ?12, ?12, ?13) \
     RETURNING id, export_id";
pub(super) const INSERT_RESTORE: &str =
    "INSERT INTO restores (volume_id, snapshot_id) VALUES (?1, ?2)";
pub(super) const SET_EXPORT_ID: &str = "UPDATE volumes SET export_id = ?1 WHERE id = ?2";
pub(super) const LIVE_EXPORT_IDS: &str = "SELECT export_id FROM volumes WHERE server_id = ?1 \
     AND state != 'deleted' AND export_id <= ?2 ORDER BY export_id";

pub(super) fn no_export_ids() -> Error {
    Error::conflict(
        Clash::ExportIds,
        "this server has no free export ids left (65535 live volumes)",
    )
}

/// The lowest of 1..=MAX_EXPORT_ID not in `used` (ascending).
pub(super) fn lowest_free(used: impl IntoIterator<Item = i64>) -> Option<i64> {
    let mut candidate = 1;
    for id in used {
        if id == candidate {
            candidate += 1;
        } else if id > candidate {
            break;
        }
    }
    (candidate <= MAX_EXPORT_ID).then_some(candidate)
}

/// Why a create clashes with the live volume `clash` ("state:owner_id:sub_path" from the
/// lookup): the caller's own volume is named, with its state; another user's is not.
fn overlap_error(rp_path: &str, sub: &str, caller: UserId, clash: &str) -> Error {
    let mut parts = clash.splitn(3, ':');
    let (state, owner, other) = (parts.next(), parts.next(), parts.next());
    let own = owner.and_then(|o| o.parse().ok()).map(UserId) == Some(caller);
    let message = match other {
        Some(other) if own => {
            let what = if other == sub {
                format!("{rp_path}/{sub} is already a volume of yours")
            } else {
                format!("{rp_path}/{sub} overlaps your volume {rp_path}/{other}")
            };
            let hint = if state == Some("deleting") {
                " that is still being deleted; retry when it is gone"
            } else {
                ""
            };
            format!("{what}{hint}")
        }
        _ => format!(
            "{rp_path}/{sub}: the path overlaps an existing volume; choose another sub_path"
        ),
    };
    Error::conflict(Clash::SubPath, message)
}

/// The lowest export id no live volume of `server` holds, if any is left in ganesha's range;
/// for when one past the highest ever used is out of that range.
fn lowest_free_export_id(db: &rusqlite::Connection, server: ServerId) -> Result<Option<i64>> {
    let mut used = db.prepare(LIVE_EXPORT_IDS)?;
    let used = used
        .query_map(params![server, MAX_EXPORT_ID], |r| r.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(lowest_free(used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::test_fixture::*;
    use crate::datastore::*;

    #[tokio::test]
    async fn the_create_lookup_seeks_indexes_and_scans_nothing() {
        // A scan here makes every create cost O(volumes of the root path): the overlap check
        // once did, written as one `OR`.
        let (_d, db, _u, _rp) = fixture().await;
        let plan = query_plan(&db, &lookup_sql(3, ""), 8).await;
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
        db.delete_volume(b.id, &viewer, false, &crate::audit::Context::internal())
            .await
            .unwrap();
        assert_eq!(create(&db, owner, rp, "c").await.export_id, 3);
        // At the top of ganesha's range, the lowest id no live volume holds is taken.
        sqlx::query("UPDATE volumes SET export_id = 65535 WHERE id = ?")
            .bind(a.id)
            .execute(db.sqlite_writer())
            .await
            .unwrap();
        sqlx::query("UPDATE volumes SET state = 'deleted' WHERE id = ?")
            .bind(b.id)
            .execute(db.sqlite_writer())
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

    /// Polls `cond` every millisecond for at most 10 s.
    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Run `reqs` as one batch of the create thread, and return their results in order.
    ///
    /// The test holds the one write connection, so the thread stops in a first batch (one
    /// create for an unknown root path: refused, it writes nothing) waiting for it; `reqs` are
    /// queued meanwhile, all of them, before the connection is released. The thread then
    /// takes them together. Checked with the thread's own counts.
    async fn as_one_batch(
        db: &Datastore,
        owner: UserId,
        reqs: Vec<NewVolume>,
    ) -> Vec<Result<Created>> {
        let before = db.create_batches();
        let held = db.sqlite_writer().acquire().await.unwrap();
        let blocker = {
            let db = db.clone();
            tokio::spawn(async move {
                let nv = new_volume(owner, RootPathId(999_999), "blocker");
                db.create_volume(&nv).await.map(|_| ())
            })
        };
        until("the create thread takes the first batch", || {
            db.create_batches().batches == before.batches + 1
        })
        .await;
        let n = reqs.len();
        let all = {
            let db = db.clone();
            tokio::spawn(async move {
                futures_util::future::join_all(reqs.iter().map(|nv| db.create_volume(nv))).await
            })
        };
        let crate::datastore::Creates::Thread(thread) = &db.creates else {
            unreachable!("a SQLite datastore")
        };
        let queued = || thread.max_capacity() - thread.capacity();
        until("every request is queued", || queued() == n).await;
        drop(held);
        assert!(matches!(
            blocker.await.unwrap(),
            Err(Error::UnknownRootPath(_))
        ));
        let results = all.await.unwrap();
        let after = db.create_batches();
        assert_eq!(after.batches, before.batches + 2, "{before:?} {after:?}");
        assert_eq!(after.creates, before.creates + 1 + n as u64);
        assert_eq!(after.largest, before.largest.max(n as u64));
        results
    }

    #[tokio::test]
    async fn a_batch_admits_exactly_what_one_by_one_would() {
        // Quotas 100 GB, capacity 110 GB. All 46 creates below are recorded as one batch
        // (`as_one_batch` checks it); its checks must see each other.
        let (_dir, db, owner, rp) = fixture().await;
        sqlx::query("UPDATE root_paths SET capacity_gb = 110")
            .execute(db.sqlite_writer())
            .await
            .unwrap();
        let other = db
            .create_user("v", "x", crate::model::Role::User, 100)
            .await
            .unwrap()
            .id;
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
        assert_eq!(reqs.len(), 46);
        let results = as_one_batch(&db, owner, reqs).await;

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
            sqlx::query(sql).execute(db.sqlite_writer()).await.unwrap();
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
        let results = as_one_batch(&db, owner, reqs).await;
        for r in &results {
            assert!(
                matches!(
                    r,
                    Err(Error::OutOfRange {
                        amount: Amount::Size,
                        ..
                    } | Error::QuotaExceeded { .. }
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
    async fn a_database_error_in_a_batch_fails_only_its_own_request() {
        // A real database error on one request of a batch: SQLite refuses its INSERT (a
        // trigger). The batch's transaction is rolled back whole; its requests are then
        // recorded one by one, so the others are recorded and only that one fails.
        let (_dir, db, owner, rp) = fixture().await;
        sqlx::query(
            "CREATE TRIGGER refuse_bad BEFORE INSERT ON volumes WHEN NEW.sub_path = 'bad' \
             BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END",
        )
        .execute(db.sqlite_writer())
        .await
        .unwrap();
        let reqs = ["first", "bad", "last"]
            .map(|sub| new_volume(owner, rp, sub))
            .to_vec();
        let results = as_one_batch(&db, owner, reqs).await;

        let new_id = |r: &Result<Created>| match r {
            Ok(Created::New(v)) => v.id,
            other => panic!("{:?}", other.as_ref().map(|_| ())),
        };
        let (first, last) = (new_id(&results[0]), new_id(&results[2]));
        match &results[1] {
            Err(e) => assert!(
                format!("{e:#}").contains("refused by a test trigger"),
                "{e:#}"
            ),
            Ok(_) => panic!("the bad request was recorded"),
        }
        // Nothing of the rolled-back batch is left half-written: the two others once each,
        // the books count exactly them.
        let viewer = db.user_by_name("u").await.unwrap();
        let subs: Vec<String> = db
            .volumes_for(&viewer, true)
            .await
            .unwrap()
            .iter()
            .map(|v| v.sub_path.as_str().to_string())
            .collect();
        assert_eq!(subs, ["first", "last"]);
        assert_eq!(db.volume(first).await.unwrap().sub_path.as_str(), "first");
        assert_eq!(db.volume(last).await.unwrap().sub_path.as_str(), "last");
        assert_eq!(viewer.used_gb, 2);
        assert_eq!(db.root_path(rp).await.unwrap().allocated_gb, 2);
    }

    #[tokio::test]
    async fn overlap_errors_name_only_the_callers_own_volumes() {
        let (_dir, db, owner, rp) = fixture().await;
        let other = db
            .create_user("v", "x", crate::model::Role::User, 100)
            .await
            .unwrap()
            .id;
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
}
