//! What only PostgreSQL needs, named in one place beside `sqlite` (see ARCHITECTURE.md,
//! "Databases"): opening the pool with its own migrations (`migrations_pg/`), the outcome
//! updates, which read their JSON array through `jsonb_array_elements` where SQLite uses
//! `json_each`, and the create path (one transaction per create, rows locked `FOR UPDATE`)
//! that stands in for SQLite's create thread.

use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::audit::append;
use super::create::{
    INSERT, INSERT_RESTORE, LIVE_EXPORT_IDS, Lookup, Outcome, SET_EXPORT_ID, Verdict, check,
    create_entry, created, lookup_sql, lowest_free, no_export_ids,
};
use super::sql::{Db, q};
use super::{Columns, MAX_EXPORT_ID, NewVolume, now};
use crate::audit::Context;
use crate::error::{Entity, Error, Result};
use crate::model::{VolumeId, clients_to_json};

/// How long a request waits for a connection of the pool before it is answered 503 (the
/// database unreachable or too busy): well inside the request timeout (90 s by default), so a
/// client hears "try again" rather than nothing while this node is cut off from PostgreSQL;
/// long enough that a storm of creates queueing for row locks on a loaded host (a 3-node,
/// 64-in-flight storm on a debug build waited about 6 s) is not turned away.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(20);

/// PostgreSQL ends a session of this node that sits in an open transaction this long: a node
/// stopped (SIGSTOP, a VM pause) or cut off from the database in the middle of a transaction
/// would otherwise keep its row locks (`FOR UPDATE` on users, root paths, servers, leases)
/// and stall every other node until it came back. Statements here take milliseconds.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "10s";

/// Connect to `url` and bring its schema up to date.
pub(super) async fn open(url: &str) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)
        .context("reading the PostgreSQL database URL")?
        .options([(
            "idle_in_transaction_session_timeout",
            IDLE_IN_TRANSACTION_TIMEOUT,
        )]);
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .context("connecting to the PostgreSQL database")?;
    sqlx::migrate!("./migrations_pg")
        .run(&pool)
        .await
        .context("applying PostgreSQL database migrations")?;
    Ok(pool)
}

// ---- outcome updates (`UPDATE … FROM jsonb_array_elements(?)`) ---------------------------
// The same statements as `sqlite::RECORD_*`: a JSON array (?2) of `[id, generation, …]`.

macro_rules! outcomes {
    ($fields:literal) => {
        concat!(
            "FROM (SELECT (e ->> 0)::BIGINT AS id, (e ->> 1)::BIGINT AS generation",
            $fields,
            " FROM jsonb_array_elements(CAST(?2 AS JSONB)) AS e) AS o"
        )
    };
}

pub(super) const RECORD_APPLIED: &str = concat!(
    "UPDATE volumes SET state = 'available', applied_clients = o.clients, \
     last_error = NULL, failed_generation = NULL, updated_at = ?1 ",
    outcomes!(", e ->> 2 AS clients"),
    " WHERE volumes.id = o.id AND volumes.generation = o.generation \
     AND volumes.state != 'deleting' AND volumes.state != 'deleted' \
     AND (volumes.state != 'available' OR volumes.applied_clients IS DISTINCT FROM o.clients \
          OR volumes.last_error IS NOT NULL)"
);
pub(super) const RECORD_DELETED: &str = concat!(
    "UPDATE volumes SET state = 'deleted', last_error = NULL, deleted_at = ?1, updated_at = ?1 ",
    outcomes!(""),
    " WHERE volumes.id = o.id AND volumes.generation = o.generation AND volumes.state = 'deleting'"
);
pub(super) const RECORD_REJECTED: &str = concat!(
    "UPDATE volumes SET \
     state = CASE WHEN volumes.state = 'deleting' THEN 'deleting' ELSE 'error' END, \
     failed_generation = o.generation, last_error = o.message, updated_at = ?1 ",
    outcomes!(", e ->> 2 AS message"),
    " WHERE volumes.id = o.id AND volumes.generation = o.generation"
);
pub(super) const RECORD_FAILED: &str = concat!(
    "UPDATE volumes SET \
     state = CASE WHEN volumes.state = 'deleting' THEN 'deleting' ELSE 'error' END, \
     failed_generation = NULL, last_error = o.message, updated_at = ?1 ",
    outcomes!(", e ->> 2 AS message"),
    " WHERE volumes.id = o.id AND volumes.generation = o.generation \
     AND volumes.state != 'deleted' \
     AND (volumes.state NOT IN ('error', 'deleting') OR volumes.last_error IS DISTINCT FROM o.message \
          OR volumes.failed_generation IS NOT NULL)"
);
pub(super) const RECORD_PENDING: &str = concat!(
    "UPDATE volumes SET last_error = o.message ",
    outcomes!(", e ->> 2 AS message"),
    " WHERE volumes.id = o.id AND volumes.generation = o.generation \
     AND volumes.last_error IS DISTINCT FROM o.message"
);

// ---- creates ----------------------------------------------------------------------------

/// Record one create on PostgreSQL, in a transaction of its own, with the same checks as the
/// SQLite create thread (`create::check`). What SQLite's one write lock gives there, row
/// locks give here: the owner's row, then the root path's, then its server's are locked
/// `FOR UPDATE` (always in this order, so two creates cannot deadlock) before the lookup, so
/// the quota, capacity, overlap, idempotency key and next export id it reads stay true until
/// the commit, across any number of nodes. The reservations are conditional updates as well.
pub(super) async fn create(db: &Db, nv: &NewVolume, ctx: &Context) -> Result<Outcome> {
    match try_create(db, nv, ctx).await? {
        Some(outcome) => Ok(outcome),
        // A unique index refused the insert (a race the locks should make impossible): the
        // lookup, run again, now sees the volume that won and replays or refuses.
        None => try_create(db, nv, ctx).await?.ok_or_else(|| {
            anyhow::anyhow!("a create kept clashing with a unique index; try again").into()
        }),
    }
}

async fn try_create(db: &Db, nv: &NewVolume, ctx: &Context) -> Result<Option<Outcome>> {
    let mut tx = db.begin_write().await?;
    q("SELECT id FROM users WHERE id = ? FOR UPDATE")
        .bind(nv.owner)
        .fetch_optional(&mut tx)
        .await?;
    q("SELECT id FROM root_paths WHERE id = ? FOR UPDATE")
        .bind(nv.root_path)
        .fetch_optional(&mut tx)
        .await?;
    q(
        "SELECT s.id FROM servers s JOIN root_paths rp ON rp.server_id = s.id WHERE rp.id = ? \
       FOR UPDATE OF s",
    )
    .bind(nv.root_path)
    .fetch_optional(&mut tx)
    .await?;

    let sub = nv.sub_path.as_str();
    let parts: Vec<&str> = sub.split('/').collect();
    let mut lookup = q(lookup_sql(parts.len(), " COLLATE \"C\""))
        .bind(nv.owner)
        .bind(nv.root_path)
        .bind(nv.idempotency_key.as_deref())
        .bind(format!("{sub}/"))
        .bind(format!("{sub}0"));
    for k in 1..=parts.len() {
        lookup = lookup.bind(parts[..k].join("/"));
    }
    let Some(row) = lookup.fetch_optional(&mut tx).await? else {
        return Err(Error::not_found(Entity::User, nv.owner));
    };
    let row = Lookup::from_columns(&row)?;
    let (server_id, clients) = match check(&row, nv, 0, 0)? {
        Verdict::Replay(prior) => return Ok(Some(Outcome::Replayed(prior))),
        Verdict::Refused(e) => return Err(e),
        Verdict::Go { server_id, clients } => (server_id, clients),
    };

    let ts = now();
    let inserted = q(INSERT)
        .bind(nv.owner)
        .bind(nv.root_path)
        .bind(server_id)
        .bind(sub)
        .bind(nv.size_gb)
        .bind(clients_to_json(&clients))
        .bind(nv.mode.as_octal_string())
        .bind(i64::from(nv.uid))
        .bind(i64::from(nv.gid))
        .bind(nv.idempotency_key.as_deref())
        .bind(nv.request_hash.as_deref())
        .bind(&ts)
        .bind(nv.adopt_existing)
        .fetch_one(&mut tx)
        .await;
    let inserted = match inserted {
        Ok(row) => row,
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let id: VolumeId = inserted.id("id")?;
    let mut export_id = inserted.int("export_id")?;
    if let Some(sid) = nv.restore_from {
        q(INSERT_RESTORE)
            .bind(id)
            .bind(sid)
            .execute(&mut tx)
            .await?;
    }
    if export_id > MAX_EXPORT_ID {
        let used = q(LIVE_EXPORT_IDS)
            .bind(server_id)
            .bind(MAX_EXPORT_ID)
            .fetch_all(&mut tx)
            .await?
            .iter()
            .map(|r| r.int("export_id"))
            .collect::<Result<Vec<_>>>()?;
        export_id = lowest_free(used).ok_or_else(no_export_ids)?;
        q(SET_EXPORT_ID)
            .bind(export_id)
            .bind(id)
            .execute(&mut tx)
            .await?;
    }
    // Conditional, as on SQLite: the invariant holds even if a lock above were missing.
    let quota =
        q("UPDATE users SET used_gb = used_gb + ?1 WHERE id = ?2 AND ?1 <= quota_gb - used_gb")
            .bind(nv.size_gb)
            .bind(nv.owner)
            .execute(&mut tx)
            .await?;
    let capacity = q(
        "UPDATE root_paths SET allocated_gb = allocated_gb + ?1 WHERE id = ?2 \
         AND ?1 <= capacity_gb - allocated_gb",
    )
    .bind(nv.size_gb)
    .bind(nv.root_path)
    .execute(&mut tx)
    .await?;
    if quota != 1 || capacity != 1 {
        return Err(anyhow::anyhow!("quota or capacity changed during a create").into());
    }
    let v = created(row, nv, id, export_id, server_id, clients, &ts)?;
    append(&mut tx, ctx, &create_entry(nv, &v)).await?;
    tx.commit().await?;
    ctx.mark_recorded();
    Ok(Some(Outcome::New(Box::new(v))))
}
