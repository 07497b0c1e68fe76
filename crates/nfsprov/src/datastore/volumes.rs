//! Volumes: what tenants ask for (create, read, list, change clients, delete).

use super::audit::append;
use super::root_paths::{apply_policy, stored_layout, stored_policy};
use super::sql::{Tx, no_limit, q};
use super::users::refuse_if_locked;
use super::{Columns, Creates, Datastore, create, now, parse_time};
use crate::audit::{Context, Entry};
use crate::error::{Clash, ClientPart, Entity, Error, Result};
use crate::model::*;
use crate::spec::{DirMode, RootDir, SubPath};

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
    /// Restore into this new volume: its subvolume is a writable snapshot of this snapshot.
    pub restore_from: Option<SnapshotId>,
}

pub enum Created {
    New(Volume),
    /// An earlier request with the same idempotency key created this volume.
    Replayed(Volume),
}

/// A page of a listing: ids above `after`, at most `limit` rows (all when `None`), without
/// volumes being deleted if `hide_deleting` (hootie's view: a deleted volume is gone at once).
#[derive(Debug, Clone, Copy, Default)]
pub struct Page {
    pub after: i64,
    pub limit: Option<usize>,
    pub hide_deleting: bool,
}

pub(super) const VOLUME_SELECT: &str = "SELECT v.id, v.owner_id, u.username, v.root_path_id, rp.path AS rp_path, \
     rp.delete_policy, rp.layout, v.server_id, s.nfs_address, v.sub_path, v.size_gb, v.clients, \
     v.applied_clients, v.mode, v.uid, v.gid, v.adopt_existing, v.state, v.export_id, v.generation, v.failed_generation, \
     v.last_error, v.created_at, v.updated_at \
     FROM volumes v JOIN users u ON u.id = v.owner_id \
     JOIN root_paths rp ON rp.id = v.root_path_id JOIN servers s ON s.id = v.server_id";

pub(super) fn volume_from_row(row: &impl Columns) -> Result<Volume> {
    let applied = row.opt_text("applied_clients")?;
    let state = row.text("state")?;
    Ok(Volume {
        id: row.id("id")?,
        owner_id: row.id("owner_id")?,
        owner: row.text("username")?,
        root_path_id: row.id("root_path_id")?,
        root_path: RootDir::parse(&row.text("rp_path")?)
            .map_err(|e| anyhow::anyhow!("stored root path: {e}"))?,
        delete_policy: DeletePolicy::parse(&row.text("delete_policy")?).unwrap_or_default(),
        layout: stored_layout(&row.text("layout")?)?,
        server_id: row.id("server_id")?,
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

impl Datastore {
    /// Record a new volume, reserving quota and capacity in the same transaction (shared with
    /// the other creates waiting at that moment: see `create`).
    pub async fn create_volume(&self, nv: &NewVolume) -> Result<Created> {
        self.create_volume_as(nv, &Context::internal()).await
    }

    /// `create_volume`, audited as asked by `ctx` (in the same transaction).
    pub async fn create_volume_as(&self, nv: &NewVolume, ctx: &Context) -> Result<Created> {
        let outcome = match &self.creates {
            Creates::Thread(queue) | Creates::Postgres(queue) => {
                create::submit(queue, nv, ctx).await?
            }
        };
        match outcome {
            create::Outcome::New(v) => Ok(Created::New(*v)),
            create::Outcome::Replayed(id) => Ok(Created::Replayed(self.volume(id).await?)),
        }
    }

    pub async fn volume(&self, id: VolumeId) -> Result<Volume> {
        let sql = format!("{VOLUME_SELECT} WHERE v.id = ?");
        let row = q(sql)
            .bind(id)
            .fetch_optional(self.db.read())
            .await?
            .ok_or_else(|| Error::not_found(Entity::Volume, id))?;
        volume_from_row(&row)
    }

    /// A volume as seen by `viewer`: someone else's volume is "not found" to a non-admin, so
    /// ids do not leak.
    pub async fn volume_for(&self, id: VolumeId, viewer: &User) -> Result<Volume> {
        let v = self.volume(id).await?;
        if v.owner_id != viewer.id && !viewer.sees_everything() {
            return Err(Error::not_found(Entity::Volume, id));
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
        let mut sql = format!("{VOLUME_SELECT} WHERE v.id > ?");
        if !viewer.sees_everything() {
            sql.push_str(" AND v.owner_id = ?");
        }
        if !include_deleted {
            sql.push_str(" AND v.state != 'deleted'");
        }
        if page.hide_deleting {
            sql.push_str(" AND v.state != 'deleting'");
        }
        sql.push_str(" ORDER BY v.id LIMIT ?");
        let mut query = q(sql).bind(page.after);
        if !viewer.sees_everything() {
            query = query.bind(viewer.id);
        }
        let limit = match page.limit {
            Some(l) => i64::try_from(l).unwrap_or(i64::MAX).into(),
            None => no_limit(&self.db),
        };
        query
            .bind(limit)
            .for_each(self.db.read(), |row| {
                f(volume_from_row(&row)?);
                Ok(())
            })
            .await
    }

    /// Change a volume's clients; the reconciler applies the new generation.
    pub async fn update_volume_clients(
        &self,
        id: VolumeId,
        viewer: &User,
        clients: &[ClientRule],
        ctx: &Context,
    ) -> Result<Volume> {
        let mut tx = self.db.begin_write().await?;
        refuse_if_locked(&mut tx, viewer).await?;
        let row = q(format!(
            "SELECT v.owner_id, v.state, v.clients, v.generation, \
             v.applied_clients IS NULL AS never_applied, s.backend, rp.export_policy FROM volumes v \
             JOIN servers s ON s.id = v.server_id JOIN root_paths rp ON rp.id = v.root_path_id \
             WHERE v.id = ?{}",
            tx.for_update_of("v")
        ))
        .bind(id)
        .fetch_optional(&mut tx)
        .await?;
        let Some(row) = row else {
            return Err(Error::not_found(Entity::Volume, id));
        };
        if row.id::<UserId>("owner_id")? != viewer.id && !viewer.is_admin() {
            return Err(Error::not_found(Entity::Volume, id));
        }
        let state: String = row.text("state")?;
        if state == "deleting" || state == "deleted" {
            return Err(Error::conflict(
                Clash::VolumeState,
                format!("volume {id} is {state} and can no longer be changed"),
            ));
        }
        check_backend_options(&row.text("backend")?, clients)?;
        // Read in this transaction: see `create::record`.
        let policy = stored_policy(&row.text("export_policy")?)?;
        let clients = &apply_policy(&policy, viewer.is_admin(), clients, None)?;
        let generation: i64 = row.int("generation")?;
        let new_state = if row.flag("never_applied")? {
            "creating"
        } else {
            "updating"
        };
        let new_clients = clients_to_json(clients);
        let fields = |clients: &str, state: &str, generation: i64| {
            serde_json::json!({
                "clients": serde_json::from_str::<serde_json::Value>(clients).unwrap_or_default(),
                "state": state,
                "generation": generation,
            })
        };
        let entry = Entry {
            action: "volume.update".into(),
            object: Some(format!("volume/{id}")),
            volume_id: Some(id.0),
            before: Some(fields(&row.text("clients")?, &state, generation)),
            after: Some(fields(&new_clients, new_state, generation + 1)),
            status: None,
            outcome: "recorded".into(),
        };
        q(
            "UPDATE volumes SET clients = ?, generation = generation + 1, last_error = NULL, \
             state = CASE WHEN applied_clients IS NULL THEN 'creating' ELSE 'updating' END, \
             updated_at = ? WHERE id = ?",
        )
        .bind(new_clients)
        .bind(now())
        .bind(id)
        .execute(&mut tx)
        .await?;
        append(&mut tx, ctx, &entry).await?;
        tx.commit().await?;
        self.volume(id).await
    }

    /// Mark a volume for deletion and release its quota and capacity at once.
    /// Refused while it has snapshots, unless `with_snapshots`: then they go too.
    pub async fn delete_volume(
        &self,
        id: VolumeId,
        viewer: &User,
        with_snapshots: bool,
        ctx: &Context,
    ) -> Result<Volume> {
        self.mark_deleting(id, viewer, true, with_snapshots, ctx)
            .await
    }

    /// Undo a create the server refused (hootie's API answers such a create with an error, so
    /// its caller must not be left holding it): delete it even if the owner was locked since.
    /// A volume never exported has its directory removed only if empty (`plan`).
    pub async fn roll_back_create(
        &self,
        id: VolumeId,
        owner: &User,
        ctx: &Context,
    ) -> Result<Volume> {
        self.mark_deleting(id, owner, false, true, ctx).await
    }

    async fn mark_deleting(
        &self,
        id: VolumeId,
        viewer: &User,
        check_lock: bool,
        with_snapshots: bool,
        ctx: &Context,
    ) -> Result<Volume> {
        let mut tx = self.db.begin_write().await?;
        if check_lock {
            refuse_if_locked(&mut tx, viewer).await?;
        }
        let row = q(format!(
            "SELECT owner_id, root_path_id, size_gb, state FROM volumes WHERE id = ?{}",
            tx.for_update()
        ))
        .bind(id)
        .fetch_optional(&mut tx)
        .await?;
        let Some(row) = row else {
            return Err(Error::not_found(Entity::Volume, id));
        };
        let owner: UserId = row.id("owner_id")?;
        if owner != viewer.id && !viewer.is_admin() {
            return Err(Error::not_found(Entity::Volume, id));
        }
        let state: String = row.text("state")?;
        if state == "deleted" {
            return Err(Error::not_found(Entity::Volume, id));
        }
        if state != "deleting" {
            let snapshots = super::snapshots::live_snapshot_names(&mut tx, id).await?;
            if !snapshots.is_empty() && !with_snapshots {
                return Err(Error::conflict(
                    Clash::Snapshots,
                    format!(
                        "volume {id} has snapshots ({}): delete them first, or delete the volume with ?with_snapshots=true",
                        snapshots.join(", ")
                    ),
                ));
            }
            q(
                "UPDATE snapshots SET state = 'deleting', last_error = NULL, updated_at = ? \
                 WHERE volume_id = ? AND state NOT IN ('deleted', 'deleting')",
            )
            .bind(now())
            .bind(id)
            .execute(&mut tx)
            .await?;
            let size: i64 = row.int("size_gb")?;
            let rp: RootPathId = row.id("root_path_id")?;
            q(
                "UPDATE volumes SET state = 'deleting', generation = generation + 1, \
                 last_error = NULL, updated_at = ? WHERE id = ?",
            )
            .bind(now())
            .bind(id)
            .execute(&mut tx)
            .await?;
            adjust_books(&mut tx, owner, rp, -size).await?;
            let entry = Entry {
                action: if check_lock {
                    "volume.delete"
                } else {
                    "volume.roll_back_create"
                }
                .into(),
                object: Some(format!("volume/{id}")),
                volume_id: Some(id.0),
                before: Some(serde_json::json!({"state": state, "size_gb": size})),
                // With `with_snapshots`, the snapshots marked for removal with it.
                after: Some(if snapshots.is_empty() {
                    serde_json::json!({"state": "deleting", "size_gb": size})
                } else {
                    serde_json::json!({"state": "deleting", "size_gb": size, "snapshots": snapshots})
                }),
                status: None,
                outcome: if check_lock {
                    "recorded; quota and capacity released"
                } else {
                    "the server refused the create; quota and capacity released"
                }
                .into(),
            };
            append(&mut tx, ctx, &entry).await?;
        }
        tx.commit().await?;
        self.volume(id).await
    }
}

/// Refuse clients and options the server's backend cannot honour (fields `clients[i].host`,
/// `clients[i].options`).
pub(super) fn check_backend_options(backend: &str, clients: &[ClientRule]) -> Result<()> {
    if BackendKind::parse(backend) == Some(BackendKind::Ganesha) {
        for (i, c) in clients.iter().enumerate() {
            crate::spec::ganesha::check_client(&c.host).map_err(|message| {
                Error::UnsupportedClient {
                    index: i,
                    part: ClientPart::Host,
                    message,
                }
            })?;
            crate::spec::ganesha::check_options(&c.options).map_err(|message| {
                Error::UnsupportedClient {
                    index: i,
                    part: ClientPart::Options,
                    message,
                }
            })?;
        }
    }
    Ok(())
}

/// Move `owner`'s quota use and root path `rp`'s allocation by `delta` GB, unconditionally, never
/// below zero (so a delete, shrink or charge-back cannot fail on the counters' CHECK). Growth
/// that must respect quota and capacity uses the conditional updates of create and resize.
pub(super) async fn adjust_books(
    tx: &mut Tx,
    owner: UserId,
    rp: RootPathId,
    delta: i64,
) -> Result<()> {
    let max = tx.greatest();
    q(format!(
        "UPDATE users SET used_gb = {max}(used_gb + ?, 0) WHERE id = ?"
    ))
    .bind(delta)
    .bind(owner)
    .execute(&mut *tx)
    .await?;
    q(format!(
        "UPDATE root_paths SET allocated_gb = {max}(allocated_gb + ?, 0) WHERE id = ?"
    ))
    .bind(delta)
    .bind(rp)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::test_fixture::*;
    use crate::datastore::*;

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
            db.update_volume_clients(v.id, &viewer, &clients, &Context::internal())
                .await,
            Err(Error::Locked(_))
        ));
        assert!(matches!(
            db.delete_volume(v.id, &viewer, false, &Context::internal())
                .await,
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
}
