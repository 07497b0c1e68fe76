//! Snapshots of btrfs volumes (issue 12, migration 0010): what owners ask for (create, list,
//! delete, restore into a new volume), what the reconciler reads and records, and what they
//! are charged.
//!
//! Charging: a snapshot counts against its owner's quota by its exclusive size as last read
//! from its qgroup (right after it is made, then on each full pass); until read it counts 0 (a
//! fresh snapshot shares all its data with the volume, so its exclusive size is near 0
//! anyway). The owner's snapshots' exclusive bytes are added up and rounded up to whole GB:
//! that is `users.snapshot_gb`, and it is part of `users.used_gb`, so volume creates see it.

use std::collections::{BTreeSet, HashMap};

use super::audit::append;
use super::sql::{On, Row, Tx, q};
use super::users::refuse_if_locked;
use super::{Columns, Datastore, now, parse_time};
use crate::audit::{Context, Entry};
use crate::error::{Clash, Entity, Error, Result};
use crate::model::*;
use crate::spec::SnapshotName;

macro_rules! snapshot_select {
    () => {
        "SELECT s.id, s.volume_id, s.name, s.state, s.exclusive_bytes, s.last_error, \
         s.created_at, s.updated_at FROM snapshots s"
    };
}

fn snapshot_from_row(row: &Row) -> Result<Snapshot> {
    let state = row.text("state")?;
    Ok(Snapshot {
        id: row.id("id")?,
        volume_id: row.id("volume_id")?,
        name: SnapshotName::parse(&row.text("name")?)
            .map_err(|e| anyhow::anyhow!("stored snapshot name: {e}"))?,
        state: SnapshotState::parse(&state)
            .ok_or_else(|| anyhow::anyhow!("stored snapshot state {state:?}"))?,
        exclusive_bytes: row.opt_int("exclusive_bytes")?,
        last_error: row.opt_text("last_error")?,
        created_at: parse_time(&row.text("created_at")?),
        updated_at: parse_time(&row.text("updated_at")?),
    })
}

/// The volume a snapshot request is about, as its caller may see it.
struct Owned {
    owner: UserId,
    state: String,
    layout: String,
    root_path: String,
}

/// On PostgreSQL, hold volume `id`'s row until the transaction ends: a snapshot's checks
/// (count, name, the volume's state) and its write then take turns with every other change of
/// the volume, from any node or account. Nothing on SQLite (one writer at a time).
async fn lock_volume(tx: &mut Tx, id: VolumeId) -> Result<()> {
    if tx.is_postgres() {
        q(format!(
            "SELECT id FROM volumes WHERE id = ?{}",
            tx.for_update()
        ))
        .bind(id)
        .fetch_optional(tx)
        .await?;
    }
    Ok(())
}

async fn visible_volume<'a>(on: impl Into<On<'a>>, id: VolumeId, viewer: &User) -> Result<Owned> {
    let row = q(
        "SELECT v.owner_id, v.state, rp.layout, rp.path FROM volumes v \
         JOIN root_paths rp ON rp.id = v.root_path_id WHERE v.id = ?",
    )
    .bind(id)
    .fetch_optional(on)
    .await?;
    let Some(row) = row else {
        return Err(Error::not_found(Entity::Volume, id));
    };
    let owned = Owned {
        owner: row.id("owner_id")?,
        state: row.text("state")?,
        layout: row.text("layout")?,
        root_path: row.text("path")?,
    };
    if (owned.owner != viewer.id && !viewer.sees_everything()) || owned.state == "deleted" {
        return Err(Error::not_found(Entity::Volume, id));
    }
    Ok(owned)
}

fn snapshot_not_found(volume: VolumeId, sid: SnapshotId) -> Error {
    Error::not_found(Entity::Snapshot, format!("{sid} of volume {volume}"))
}

/// Recompute what `owner`'s snapshots are charged (see the module's doc) and move `used_gb`
/// by the difference.
pub(super) async fn recharge(tx: &mut Tx, owner: UserId) -> Result<()> {
    // CAST: PostgreSQL's SUM of BIGINT is NUMERIC.
    let total = q(
        "SELECT CAST(COALESCE(SUM(COALESCE(s.exclusive_bytes, 0)), 0) AS BIGINT) AS total \
         FROM snapshots s JOIN volumes v ON v.id = s.volume_id \
         WHERE v.owner_id = ? AND s.state != 'deleted'",
    )
    .bind(owner)
    .fetch_one(&mut *tx)
    .await?
    .int("total")?;
    let gb = snapshot_gb(total);
    q(format!(
        "UPDATE users SET used_gb = {}(used_gb + ?1 - snapshot_gb, 0), snapshot_gb = ?1 WHERE id = ?2",
        tx.greatest()
    ))
    .bind(gb)
    .bind(owner)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Exclusive bytes charged as whole GB (10^9 bytes), rounded up.
fn snapshot_gb(bytes: i64) -> i64 {
    let bytes = bytes.max(0);
    bytes / 1_000_000_000 + i64::from(bytes % 1_000_000_000 != 0)
}

impl Datastore {
    /// Ask for a read-only snapshot of volume `id` named `name`. Only a volume of a btrfs root
    /// path that is available can have one; at most `max` live snapshots per volume; an owner
    /// over quota (snapshots grew) can take no more.
    pub async fn create_snapshot(
        &self,
        id: VolumeId,
        viewer: &User,
        name: &SnapshotName,
        max: usize,
        ctx: &Context,
    ) -> Result<Snapshot> {
        let mut tx = self.db.begin_write().await?;
        refuse_if_locked(&mut tx, viewer).await?;
        lock_volume(&mut tx, id).await?;
        let vol = visible_volume(&mut tx, id, viewer).await?;
        if vol.owner != viewer.id && !viewer.is_admin() {
            return Err(Error::not_found(Entity::Volume, id));
        }
        if vol.layout != Layout::Btrfs.as_str() {
            return Err(Error::invalid(
                "layout",
                format!(
                    "volume {id} is on root path {} with the {} layout; snapshots need the btrfs layout",
                    vol.root_path, vol.layout
                ),
            ));
        }
        if vol.state != "available" {
            return Err(Error::conflict(
                Clash::VolumeState,
                format!(
                    "volume {id} is {}; a snapshot can be taken of an available volume only",
                    vol.state
                ),
            ));
        }
        let names =
            q("SELECT name FROM snapshots WHERE volume_id = ? AND state != 'deleted' ORDER BY id")
                .bind(id)
                .fetch_all(&mut tx)
                .await?
                .iter()
                .map(|r| r.text("name"))
                .collect::<Result<Vec<_>>>()?;
        if names.iter().any(|n| n == name.as_str()) {
            return Err(Error::conflict(
                Clash::SnapshotName,
                format!("volume {id} already has a snapshot named {name}"),
            ));
        }
        if names.len() >= max {
            return Err(Error::conflict(
                Clash::SnapshotCount,
                format!(
                    "volume {id} has {} snapshots, the most allowed ({max}); delete one first",
                    names.len()
                ),
            ));
        }
        // Not locked: the owner may be another account than the caller's (locked above), and
        // a second row lock taken in no fixed order could deadlock; this is a refusal of an
        // owner already over quota, not a reservation.
        let r = q("SELECT quota_gb, used_gb FROM users WHERE id = ?")
            .bind(vol.owner)
            .fetch_one(&mut tx)
            .await?;
        let (quota, used) = (r.int("quota_gb")?, r.int("used_gb")?);
        if used > quota {
            return Err(Error::QuotaExceeded {
                message: format!(
                    "the owner of volume {id} is over quota ({used} GB in use, quota {quota} GB, snapshots included): delete snapshots or volumes first"
                ),
            });
        }
        let ts = now();
        let sid: SnapshotId = q(
            "INSERT INTO snapshots (volume_id, name, state, created_at, updated_at) \
             VALUES (?1, ?2, 'creating', ?3, ?3) RETURNING id",
        )
        .bind(id)
        .bind(name.as_str())
        .bind(&ts)
        .fetch_one(&mut tx)
        .await?
        .id("id")?;
        // In the change's own transaction, like the volume changes.
        let entry = Entry {
            action: "snapshot.create".into(),
            object: Some(format!("snapshot/{sid}")),
            volume_id: Some(id.0),
            before: None,
            after: Some(serde_json::json!({"name": name.as_str(), "state": "creating"})),
            status: None,
            outcome: "recorded".into(),
        };
        append(&mut tx, ctx, &entry).await?;
        tx.commit().await?;
        self.snapshot(sid).await
    }

    pub async fn snapshot(&self, sid: SnapshotId) -> Result<Snapshot> {
        let row = q(concat!(snapshot_select!(), " WHERE s.id = ?"))
            .bind(sid)
            .fetch_one(self.db.read())
            .await?;
        snapshot_from_row(&row)
    }

    /// The live snapshots of volume `id` (not the deleted ones), oldest first.
    pub async fn snapshots_for(&self, id: VolumeId, viewer: &User) -> Result<Vec<Snapshot>> {
        visible_volume(self.db.read(), id, viewer).await?;
        let rows = q(concat!(
            snapshot_select!(),
            " WHERE s.volume_id = ? AND s.state != 'deleted' ORDER BY s.id"
        ))
        .bind(id)
        .fetch_all(self.db.read())
        .await?;
        rows.iter().map(snapshot_from_row).collect()
    }

    pub async fn snapshot_for(
        &self,
        id: VolumeId,
        sid: SnapshotId,
        viewer: &User,
    ) -> Result<Snapshot> {
        visible_volume(self.db.read(), id, viewer).await?;
        let row = q(concat!(
            snapshot_select!(),
            " WHERE s.id = ? AND s.volume_id = ? AND s.state != 'deleted'"
        ))
        .bind(sid)
        .bind(id)
        .fetch_optional(self.db.read())
        .await?;
        match row {
            Some(row) => snapshot_from_row(&row),
            None => Err(snapshot_not_found(id, sid)),
        }
    }

    /// Mark snapshot `sid` of volume `id` for removal (the reconciler removes it). Refused
    /// while a volume is being restored from it.
    pub async fn delete_snapshot(
        &self,
        id: VolumeId,
        sid: SnapshotId,
        viewer: &User,
        ctx: &Context,
    ) -> Result<Snapshot> {
        let mut tx = self.db.begin_write().await?;
        refuse_if_locked(&mut tx, viewer).await?;
        lock_volume(&mut tx, id).await?;
        let vol = visible_volume(&mut tx, id, viewer).await?;
        if vol.owner != viewer.id && !viewer.is_admin() {
            return Err(Error::not_found(Entity::Volume, id));
        }
        let found = q("SELECT name, state FROM snapshots \
             WHERE id = ? AND volume_id = ? AND state != 'deleted'")
        .bind(sid)
        .bind(id)
        .fetch_optional(&mut tx)
        .await?;
        let Some(found) = found else {
            return Err(snapshot_not_found(id, sid));
        };
        let (name, state) = (found.text("name")?, found.text("state")?);
        let restoring: Option<VolumeId> = q(
            "SELECT r.volume_id FROM restores r JOIN volumes v ON v.id = r.volume_id \
             WHERE r.snapshot_id = ? AND v.state = 'creating' LIMIT 1",
        )
        .bind(sid)
        .fetch_optional(&mut tx)
        .await?
        .map(|r| r.id("volume_id"))
        .transpose()?;
        if let Some(v) = restoring {
            return Err(Error::conflict(
                Clash::VolumeState,
                format!(
                    "volume {v} is being restored from snapshot {sid}; try again when it is available"
                ),
            ));
        }
        q(
            "UPDATE snapshots SET state = 'deleting', last_error = NULL, updated_at = ? WHERE id = ?",
        )
        .bind(now())
        .bind(sid)
        .execute(&mut tx)
        .await?;
        let entry = Entry {
            action: "snapshot.delete".into(),
            object: Some(format!("snapshot/{sid}")),
            volume_id: Some(id.0),
            before: Some(serde_json::json!({"name": name, "state": state})),
            after: Some(serde_json::json!({"name": name, "state": "deleting"})),
            status: None,
            outcome: "recorded".into(),
        };
        append(&mut tx, ctx, &entry).await?;
        tx.commit().await?;
        self.snapshot(sid).await
    }

    /// The snapshots of `server`'s volumes that wait for it (made, removed, or retried after
    /// an error), and on a `full` pass the available ones too (checked, their size read).
    pub async fn server_snapshot_tasks(
        &self,
        server: ServerId,
        full: bool,
    ) -> Result<Vec<SnapshotTask>> {
        let rows = q(
            "SELECT s.id, s.volume_id, s.name, s.state, rp.path, v.sub_path FROM snapshots s \
             JOIN volumes v ON v.id = s.volume_id JOIN root_paths rp ON rp.id = v.root_path_id \
             WHERE v.server_id = ?1 AND (s.state IN ('creating', 'deleting', 'error') \
                   OR (?2 != 0 AND s.state = 'available')) ORDER BY s.id",
        )
        .bind(server)
        .bind(full)
        .fetch_all(self.db.read())
        .await?;
        rows.iter()
            .map(|r| {
                let state = r.text("state")?;
                Ok(SnapshotTask {
                    id: r.id("id")?,
                    volume: r.id("volume_id")?,
                    name: r.text("name")?,
                    state: SnapshotState::parse(&state)
                        .ok_or_else(|| anyhow::anyhow!("stored snapshot state {state:?}"))?,
                    root: r.text("path")?,
                    sub: r.text("sub_path")?,
                })
            })
            .collect()
    }

    /// Record what a pass found; owners whose snapshots changed size are charged anew.
    /// An available snapshot that fails its check stays available with the error shown (it is
    /// never made again from the volume's current data); a failed make is `error`, retried.
    pub async fn record_snapshot_outcomes(&self, outcomes: &[SnapshotOutcome]) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write().await?;
        let ts = now();
        let mut owners = BTreeSet::new();
        for o in outcomes {
            let id = match o {
                SnapshotOutcome::Available {
                    id,
                    exclusive_bytes,
                } => {
                    q(
                        "UPDATE snapshots SET state = 'available', last_error = NULL, \
                         exclusive_bytes = COALESCE(?1, exclusive_bytes), updated_at = ?2 \
                         WHERE id = ?3 AND state IN ('creating', 'error', 'available')",
                    )
                    .bind(exclusive_bytes)
                    .bind(&ts)
                    .bind(id)
                    .execute(&mut tx)
                    .await?;
                    id
                }
                SnapshotOutcome::Deleted { id } => {
                    q(
                        "UPDATE snapshots SET state = 'deleted', last_error = NULL, updated_at = ?1 \
                         WHERE id = ?2 AND state = 'deleting'",
                    )
                    .bind(&ts)
                    .bind(id)
                    .execute(&mut tx)
                    .await?;
                    id
                }
                SnapshotOutcome::Failed { id, message } => {
                    q("UPDATE snapshots SET last_error = ?1, updated_at = ?2, \
                         state = CASE WHEN state = 'creating' THEN 'error' ELSE state END \
                         WHERE id = ?3 AND state != 'deleted'")
                    .bind(message)
                    .bind(&ts)
                    .bind(id)
                    .execute(&mut tx)
                    .await?;
                    id
                }
            };
            let owner: Option<UserId> = q(
                "SELECT v.owner_id FROM snapshots s JOIN volumes v ON v.id = s.volume_id WHERE s.id = ?",
            )
            .bind(id)
            .fetch_optional(&mut tx)
            .await?
            .map(|r| r.id("owner_id"))
            .transpose()?;
            owners.extend(owner);
        }
        for owner in owners {
            recharge(&mut tx, owner).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The volumes of `server` still being created from a snapshot: volume -> (the snapshot's
    /// volume id, its name), for the plan's subvolume steps.
    pub async fn restore_sources(
        &self,
        server: ServerId,
    ) -> Result<HashMap<VolumeId, (String, String)>> {
        let rows = q(
            "SELECT r.volume_id, s.volume_id AS source, s.name FROM restores r \
             JOIN volumes v ON v.id = r.volume_id JOIN snapshots s ON s.id = r.snapshot_id \
             WHERE v.server_id = ? AND v.state IN ('creating', 'error')",
        )
        .bind(server)
        .fetch_all(self.db.read())
        .await?;
        rows.iter()
            .map(|r| {
                let source: VolumeId = r.id("source")?;
                Ok((r.id("volume_id")?, (source.to_string(), r.text("name")?)))
            })
            .collect()
    }

    /// The snapshot a restore copies, checked: it exists, is available, and belongs to a
    /// volume `viewer` may change. Returns the source volume.
    pub async fn restore_source(
        &self,
        id: VolumeId,
        sid: SnapshotId,
        viewer: &User,
    ) -> Result<Volume> {
        let snap = self.snapshot_for(id, sid, viewer).await?;
        let vol = self.volume_for(id, viewer).await?;
        if vol.owner_id != viewer.id && !viewer.is_admin() {
            return Err(Error::not_found(Entity::Volume, id));
        }
        if snap.state != SnapshotState::Available {
            return Err(Error::conflict(
                Clash::VolumeState,
                format!(
                    "snapshot {sid} of volume {id} is {}; only an available snapshot can be restored",
                    snap.state.as_str()
                ),
            ));
        }
        Ok(vol)
    }
}

/// The names of volume `id`'s live snapshots, for a delete refused because of them.
pub(super) async fn live_snapshot_names(tx: &mut Tx, id: VolumeId) -> Result<Vec<String>> {
    q(
        "SELECT name FROM snapshots WHERE volume_id = ? AND state NOT IN ('deleted', 'deleting') ORDER BY id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| r.text("name"))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::test_fixture::*;

    async fn used_gb(db: &Datastore, user: UserId) -> i64 {
        sqlx::query_scalar("SELECT used_gb FROM users WHERE id = ?")
            .bind(user)
            .fetch_one(db.sqlite_pool())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn checks_charges_and_the_volume_delete_guard() {
        let (_dir, db, owner, rp) = fixture().await;
        let v = create(&db, owner, rp, "a").await;
        let viewer = db.user_by_name("u").await.unwrap();
        let name = SnapshotName::parse("s1").unwrap();
        // A directory layout root path: 400 naming layout.
        match db
            .create_snapshot(v.id, &viewer, &name, 2, &Context::internal())
            .await
        {
            Err(Error::Invalid { field, message }) => {
                assert_eq!(field, "layout");
                assert!(message.contains("directory layout"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        sqlx::query("UPDATE root_paths SET layout = 'btrfs'")
            .execute(db.sqlite_writer())
            .await
            .unwrap();
        // Not available yet.
        assert!(matches!(
            db.create_snapshot(v.id, &viewer, &name, 2, &Context::internal())
                .await,
            Err(Error::Conflict {
                with: Clash::VolumeState,
                ..
            })
        ));
        sqlx::query("UPDATE volumes SET state = 'available'")
            .execute(db.sqlite_writer())
            .await
            .unwrap();
        let s = db
            .create_snapshot(v.id, &viewer, &name, 2, &Context::internal())
            .await
            .unwrap();
        assert_eq!(s.state, SnapshotState::Creating);
        assert!(matches!(
            db.create_snapshot(v.id, &viewer, &name, 2, &Context::internal())
                .await,
            Err(Error::Conflict {
                with: Clash::SnapshotName,
                ..
            })
        ));
        let s2 = SnapshotName::parse("s2").unwrap();
        assert!(matches!(
            db.create_snapshot(v.id, &viewer, &s2, 1, &Context::internal())
                .await,
            Err(Error::Conflict {
                with: Clash::SnapshotCount,
                ..
            })
        ));
        // Charged by exclusive bytes, rounded up to GB, on top of the volume's 1 GB.
        assert_eq!(used_gb(&db, owner).await, 1);
        db.record_snapshot_outcomes(&[SnapshotOutcome::Available {
            id: s.id,
            exclusive_bytes: Some(1_500_000_000),
        }])
        .await
        .unwrap();
        assert_eq!(used_gb(&db, owner).await, 3);
        // The volume is kept while it has snapshots, unless they go too.
        match db
            .delete_volume(v.id, &viewer, false, &crate::audit::Context::internal())
            .await
        {
            Err(Error::Conflict {
                with: Clash::Snapshots,
                message,
            }) => assert!(message.contains("s1"), "{message}"),
            other => panic!("{other:?}"),
        }
        db.delete_volume(v.id, &viewer, true, &crate::audit::Context::internal())
            .await
            .unwrap();
        assert_eq!(
            db.snapshot(s.id).await.unwrap().state,
            SnapshotState::Deleting
        );
        assert_eq!(used_gb(&db, owner).await, 2);
        db.record_snapshot_outcomes(&[SnapshotOutcome::Deleted { id: s.id }])
            .await
            .unwrap();
        assert_eq!(used_gb(&db, owner).await, 0);
    }

    /// Each snapshot change appends its record in its own transaction (create, delete, a
    /// restore, a volume delete with its snapshots), in the volume's history, and the chain
    /// still verifies.
    #[tokio::test]
    async fn each_change_leaves_its_audit_record() {
        let (_dir, db, owner, rp) = fixture().await;
        let v = create(&db, owner, rp, "a").await;
        sqlx::query("UPDATE root_paths SET layout = 'btrfs'")
            .execute(db.sqlite_writer())
            .await
            .unwrap();
        sqlx::query("UPDATE volumes SET state = 'available'")
            .execute(db.sqlite_writer())
            .await
            .unwrap();
        let viewer = db.user_by_name("u").await.unwrap();
        let ctx = |method: &str, path: &str| {
            let mut c = Context::new(method, path);
            c.actor = Some("u".into());
            c
        };
        let last = |vol: VolumeId| {
            let db = &db;
            async move {
                let recs = db.audit_records(Some(vol.0), 0, 1000).await.unwrap();
                recs.last().cloned().unwrap()
            }
        };
        let path = format!("/api/v1/volumes/{}/snapshots", v.id);
        let s1 = SnapshotName::parse("s1").unwrap();
        let s = db
            .create_snapshot(v.id, &viewer, &s1, 4, &ctx("POST", &path))
            .await
            .unwrap();
        let r = last(v.id).await;
        assert_eq!(r.action, "snapshot.create");
        assert_eq!(
            r.object.as_deref(),
            Some(format!("snapshot/{}", s.id).as_str())
        );
        assert_eq!(r.actor.as_deref(), Some("u"));
        assert!(r.after.as_deref().unwrap().contains("\"s1\""), "{r:?}");
        // A refused create leaves no record of a change.
        let before = db.audit_records(None, 0, 1000).await.unwrap().len();
        assert!(
            db.create_snapshot(v.id, &viewer, &s1, 4, &ctx("POST", &path))
                .await
                .is_err()
        );
        assert_eq!(db.audit_records(None, 0, 1000).await.unwrap().len(), before);
        db.record_snapshot_outcomes(&[SnapshotOutcome::Available {
            id: s.id,
            exclusive_bytes: Some(16_384),
        }])
        .await
        .unwrap();
        // A restore is a create of a new volume, recorded as a restore naming the snapshot.
        let mut nv = new_volume(owner, rp, "copy");
        nv.restore_from = Some(s.id);
        let restored = match db
            .create_volume_as(&nv, &ctx("POST", &format!("{path}/{}/restore", s.id)))
            .await
            .unwrap()
        {
            crate::datastore::Created::New(v) => v,
            crate::datastore::Created::Replayed(_) => panic!("not a replay"),
        };
        let r = last(restored.id).await;
        assert_eq!(r.action, "snapshot.restore");
        let after: serde_json::Value = serde_json::from_str(r.after.as_deref().unwrap()).unwrap();
        assert_eq!(after["restored_from_snapshot"], serde_json::json!(s.id));
        // The restore is done: the snapshot may go.
        sqlx::query("UPDATE volumes SET state = 'available' WHERE id = ?")
            .bind(restored.id)
            .execute(db.sqlite_writer())
            .await
            .unwrap();
        let s2 = SnapshotName::parse("s2").unwrap();
        let t = db
            .create_snapshot(v.id, &viewer, &s2, 4, &ctx("POST", &path))
            .await
            .unwrap();
        db.delete_snapshot(
            v.id,
            s.id,
            &viewer,
            &ctx("DELETE", &format!("{path}/{}", s.id)),
        )
        .await
        .unwrap();
        let r = last(v.id).await;
        assert_eq!(r.action, "snapshot.delete");
        assert_eq!(
            r.object.as_deref(),
            Some(format!("snapshot/{}", s.id).as_str())
        );
        assert!(r.before.as_deref().unwrap().contains("available"), "{r:?}");
        assert!(r.after.as_deref().unwrap().contains("deleting"), "{r:?}");
        // The volume with its remaining snapshot: one record naming it.
        db.delete_volume(
            v.id,
            &viewer,
            true,
            &ctx("DELETE", &format!("/api/v1/volumes/{}", v.id)),
        )
        .await
        .unwrap();
        assert_eq!(
            db.snapshot(t.id).await.unwrap().state,
            SnapshotState::Deleting
        );
        let r = last(v.id).await;
        assert_eq!(r.action, "volume.delete");
        let after: serde_json::Value = serde_json::from_str(r.after.as_deref().unwrap()).unwrap();
        assert_eq!(after["snapshots"], serde_json::json!(["s2"]));
        let actions: Vec<String> = db
            .audit_records(Some(v.id.0), 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.action)
            .collect();
        assert_eq!(
            actions,
            [
                "volume.create",
                "snapshot.create",
                "snapshot.create",
                "snapshot.delete",
                "volume.delete"
            ]
        );
        assert!(db.verify_audit().await.unwrap().is_ok());
    }

    #[test]
    fn charged_in_whole_gb_rounded_up() {
        assert_eq!(snapshot_gb(0), 0);
        assert_eq!(snapshot_gb(-5), 0);
        assert_eq!(snapshot_gb(16_384), 1);
        assert_eq!(snapshot_gb(1_000_000_000), 1);
        assert_eq!(snapshot_gb(1_000_000_001), 2);
    }
}
