//! Recording new volumes, with group commit.
//!
//! Every create goes through one task that owns the write path for creates: it takes all the
//! creates waiting at that moment (up to `MAX_BATCH`) and records them in one `BEGIN
//! IMMEDIATE` transaction, each with one combined read (owner, root path, server, idempotency
//! key, overlapping volumes) and one `INSERT`; the quota and capacity reservations of the whole
//! batch are two conditional `UPDATE`s per owner and root path before the one `COMMIT`.
//!
//! The checks see the transaction's own earlier inserts and the batch's pending reservations,
//! so a batch admits exactly what the same requests one by one would. A request refused (quota,
//! overlap, …) writes nothing; a database error rolls the batch back and its requests are
//! retried one by one, so one request cannot fail another.
//!
//! Why: each statement is a hand-off to sqlx's SQLite worker thread and back, and those
//! hand-offs, not SQLite, bounded accepted creates per second.

use std::collections::HashMap;

use sqlx::sqlite::SqlitePool;
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::{mpsc, oneshot};

use super::{MAX_EXPORT_ID, NewVolume};
use super::{check_backend_options, clients_to_json, lowest_free_export_id, now, parse_time};
use crate::error::{Error, Result};
use crate::model::*;
use crate::spec::RootDir;

/// Most creates recorded in one transaction.
const MAX_BATCH: usize = 256;

pub(super) struct Job {
    nv: NewVolume,
    reply: oneshot::Sender<Result<Outcome>>,
}

pub(super) enum Outcome {
    New(Box<Volume>),
    /// An earlier request with the same idempotency key created this volume.
    Replayed(VolumeId),
}

/// Start the create task on `writer`; it ends when every sender is gone.
pub(super) fn spawn(writer: SqlitePool) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
    tokio::spawn(run(writer, rx));
    tx
}

/// Queue `nv` and wait for its outcome.
pub(super) async fn submit(queue: &mpsc::Sender<Job>, nv: &NewVolume) -> Result<Outcome> {
    let (reply, outcome) = oneshot::channel();
    let stopped = || anyhow::anyhow!("the create queue has stopped (is the server shutting down?)");
    queue
        .send(Job {
            nv: nv.clone(),
            reply,
        })
        .await
        .map_err(|_| stopped())?;
    outcome.await.map_err(|_| stopped())?
}

async fn run(writer: SqlitePool, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        // A request whose caller went away is not recorded, as with a dropped transaction.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let outcomes = match apply(&writer, &jobs).await {
            Ok(outcomes) => outcomes,
            Err(e) if jobs.len() == 1 => vec![Err(e)],
            Err(e) => {
                tracing::warn!(error = %e, batch = jobs.len(), "batch of creates rolled back; recording them one by one");
                let mut outcomes = Vec::with_capacity(jobs.len());
                for job in &jobs {
                    outcomes.push(match apply(&writer, std::slice::from_ref(job)).await {
                        Ok(mut one) => one.pop().expect("one outcome per job"),
                        Err(e) => Err(e),
                    });
                }
                outcomes
            }
        };
        for (job, outcome) in jobs.drain(..).zip(outcomes) {
            let _ = job.reply.send(outcome);
        }
    }
}

/// Reservations made by the batch so far, written before the commit.
#[derive(Default)]
struct Pending {
    used: HashMap<i64, i64>,
    allocated: HashMap<i64, i64>,
}

/// Record `jobs` in one transaction. `Err` means nothing was recorded; each inner `Err` is one
/// request refused.
async fn apply(writer: &SqlitePool, jobs: &[Job]) -> Result<Vec<Result<Outcome>>> {
    // BEGIN IMMEDIATE takes SQLite's write lock up front: the checks below and the
    // reservations after them see no concurrent writer.
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    let mut pending = Pending::default();
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        outcomes.push(record(&mut tx, &job.nv, &mut pending).await?);
    }
    // Conditional updates keep the invariant even on an engine without a global write lock.
    for (user, gb) in &pending.used {
        let u = sqlx::query(
            "UPDATE users SET used_gb = used_gb + ? WHERE id = ? AND used_gb + ? <= quota_gb",
        )
        .bind(gb)
        .bind(user)
        .bind(gb)
        .execute(&mut *tx)
        .await?;
        if u.rows_affected() != 1 {
            return Err(anyhow::anyhow!("quota of user {user} changed during a create").into());
        }
    }
    for (rp, gb) in &pending.allocated {
        let r = sqlx::query(
            "UPDATE root_paths SET allocated_gb = allocated_gb + ? WHERE id = ? AND allocated_gb + ? <= capacity_gb",
        )
        .bind(gb)
        .bind(rp)
        .bind(gb)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Err(
                anyhow::anyhow!("capacity of root path {rp} changed during a create").into(),
            );
        }
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// The owner, root path and server of a create, the volume an idempotency key already made, and
/// a live volume the new path would equal, sit in, or contain (as "state:sub_path"), in one
/// statement.
///
/// Binds: ?1 owner, ?2 root path, ?3 idempotency key, ?4 "{sub}/", ?5 "{sub}0" ('0' is the byte
/// after '/'), then the sub path and its ancestors from ?6 on. The overlap check is two index
/// range arms, not one `OR`: SQLite serves the `OR` form with a scan of the whole root path,
/// which made every create cost O(volumes).
pub(super) fn lookup_sql(ancestors: usize) -> String {
    let placeholders: Vec<String> = (0..ancestors).map(|i| format!("?{}", i + 6)).collect();
    let placeholders = placeholders.join(", ");
    format!(
        "SELECT u.username, u.quota_gb, u.used_gb, u.locked, rp.server_id, rp.path, \
         rp.capacity_gb, rp.allocated_gb, rp.delete_policy, s.backend, s.nfs_address, \
         (SELECT id FROM volumes WHERE owner_id = ?1 AND idempotency_key = ?3) AS prior_id, \
         (SELECT request_hash FROM volumes WHERE owner_id = ?1 AND idempotency_key = ?3) AS prior_hash, \
         (SELECT state || ':' || sub_path FROM volumes WHERE root_path_id = ?2 AND state != 'deleted' \
            AND sub_path IN ({placeholders}) \
          UNION ALL SELECT state || ':' || sub_path FROM volumes WHERE root_path_id = ?2 \
            AND state != 'deleted' AND sub_path >= ?4 AND sub_path < ?5 LIMIT 1) AS clash \
         FROM users u LEFT JOIN root_paths rp ON rp.id = ?2 \
         LEFT JOIN servers s ON s.id = rp.server_id WHERE u.id = ?1"
    )
}

/// Check and insert one create inside the batch's transaction.
async fn record(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    nv: &NewVolume,
    pending: &mut Pending,
) -> Result<Result<Outcome>> {
    let sub = nv.sub_path.as_str();
    let ancestors: Vec<String> = {
        let parts: Vec<&str> = sub.split('/').collect();
        (1..=parts.len()).map(|k| parts[..k].join("/")).collect()
    };
    let mut q = sqlx::query(AssertSqlSafe(lookup_sql(ancestors.len())))
        .bind(nv.owner.0)
        .bind(nv.root_path.0)
        .bind(nv.idempotency_key.as_deref())
        .bind(format!("{sub}/"))
        .bind(format!("{sub}0"));
    for a in &ancestors {
        q = q.bind(a);
    }
    let Some(row) = q.fetch_optional(&mut **tx).await? else {
        return Ok(Err(Error::NotFound(format!("user {}", nv.owner))));
    };

    if let Some(prior) = row.try_get::<Option<i64>, _>("prior_id")? {
        if row.try_get::<Option<String>, _>("prior_hash")? != nv.request_hash {
            return Ok(Err(Error::conflict(
                Some("Idempotency-Key"),
                "this Idempotency-Key was already used for a different request",
            )));
        }
        return Ok(Ok(Outcome::Replayed(VolumeId(prior))));
    }
    if row.try_get::<bool, _>("locked")? {
        return Ok(Err(Error::Locked(
            "your account is locked; ask an administrator to unlock it".into(),
        )));
    }
    let Some(server_id) = row.try_get::<Option<i64>, _>("server_id")? else {
        return Ok(Err(Error::invalid(
            "root_path",
            format!("root path {} does not exist", nv.root_path),
        )));
    };
    let rp_path: String = row.try_get("path")?;
    if let Err(e) = check_backend_options(&row.try_get::<String, _>("backend")?, &nv.clients) {
        return Ok(Err(e));
    }

    // A volume may not be nested in, or contain, another live volume of the same root path:
    // deleting one would move the other's data.
    if let Some(clash) = row.try_get::<Option<String>, _>("clash")? {
        let (state, other) = clash.split_once(':').unwrap_or(("", &clash));
        let what = if other == sub {
            format!("{rp_path}/{sub} is already a volume")
        } else {
            format!("{rp_path}/{sub} overlaps the existing volume {rp_path}/{other}")
        };
        let hint = if state == "deleting" {
            " that is still being deleted; retry when it is gone"
        } else {
            ""
        };
        return Ok(Err(Error::conflict(
            Some("sub_path"),
            format!("{what}{hint}"),
        )));
    }

    let quota: i64 = row.try_get("quota_gb")?;
    let used = row.try_get::<i64, _>("used_gb")? + pending.used.get(&nv.owner.0).unwrap_or(&0);
    if used + nv.size_gb > quota {
        return Ok(Err(Error::QuotaExceeded {
            message: format!(
                "size_GB {} exceeds your quota by {} GB (quota {} GB, {} GB in use, {} GB free)",
                nv.size_gb,
                used + nv.size_gb - quota,
                quota,
                used,
                (quota - used).max(0)
            ),
        }));
    }
    let capacity: i64 = row.try_get("capacity_gb")?;
    let allocated = row.try_get::<i64, _>("allocated_gb")?
        + pending.allocated.get(&nv.root_path.0).unwrap_or(&0);
    if allocated + nv.size_gb > capacity {
        return Ok(Err(Error::CapacityExceeded {
            message: format!(
                "size_GB {} exceeds the free capacity of root path {} by {} GB (capacity {} GB, {} GB allocated, {} GB free)",
                nv.size_gb,
                nv.root_path,
                allocated + nv.size_gb - capacity,
                capacity,
                allocated,
                (capacity - allocated).max(0)
            ),
        }));
    }

    let ts = now();
    let inserted = sqlx::query(
        "INSERT INTO volumes (owner_id, root_path_id, server_id, sub_path, size_gb, clients, mode, uid, gid, \
         state, idempotency_key, request_hash, export_id, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'creating', ?, ?, \
                 (SELECT COALESCE(MAX(export_id), 0) + 1 FROM volumes WHERE server_id = ?), ?, ?) \
         RETURNING id, export_id",
    )
    .bind(nv.owner.0)
    .bind(nv.root_path.0)
    .bind(server_id)
    .bind(sub)
    .bind(nv.size_gb)
    .bind(clients_to_json(&nv.clients))
    .bind(nv.mode.as_octal_string())
    .bind(nv.uid as i64)
    .bind(nv.gid as i64)
    .bind(nv.idempotency_key.as_deref())
    .bind(nv.request_hash.as_deref())
    .bind(server_id)
    .bind(&ts)
    .bind(&ts)
    .fetch_one(&mut **tx)
    .await?;
    let id = VolumeId(inserted.try_get("id")?);
    let mut export_id: i64 = inserted.try_get("export_id")?;
    if export_id > MAX_EXPORT_ID {
        // Ids ran past ganesha's range: take the lowest one free (rare).
        export_id = lowest_free_export_id(tx, server_id).await?;
        sqlx::query("UPDATE volumes SET export_id = ? WHERE id = ?")
            .bind(export_id)
            .bind(id.0)
            .execute(&mut **tx)
            .await?;
    }
    *pending.used.entry(nv.owner.0).or_default() += nv.size_gb;
    *pending.allocated.entry(nv.root_path.0).or_default() += nv.size_gb;

    // Everything is known: no need to read the row back.
    Ok(Ok(Outcome::New(Box::new(Volume {
        id,
        owner_id: nv.owner,
        owner: row.try_get("username")?,
        root_path_id: nv.root_path,
        root_path: RootDir::parse(&rp_path)
            .map_err(|e| anyhow::anyhow!("stored root path: {e}"))?,
        delete_policy: DeletePolicy::parse(&row.try_get::<String, _>("delete_policy")?)
            .unwrap_or_default(),
        server_id: ServerId(server_id),
        nfs_address: row.try_get("nfs_address")?,
        sub_path: nv.sub_path.clone(),
        size_gb: nv.size_gb,
        clients: nv.clients.clone(),
        applied_clients: None,
        mode: nv.mode,
        uid: nv.uid,
        gid: nv.gid,
        state: VolumeState::Creating,
        export_id: export_id as u32,
        generation: 1,
        failed_generation: None,
        last_error: None,
        created_at: parse_time(&ts),
        updated_at: parse_time(&ts),
    }))))
}
