//! Usage samples (migration 0009) and resizes. Samples are written by the reconciler
//! (`record_usage`) and read by the API, which never asks a server. Each volume and root path
//! keeps its newest [`KEEP_SAMPLES`]; older ones go as a new one is recorded, so the tables are
//! bounded by the number of volumes and root paths.
//!
//! A resize reserves the quota and capacity difference in the transaction that records it, by
//! conditional `UPDATE`s (as `create` does: no read-then-write), so concurrent resizes and
//! creates never overcommit. The server's limit follows in the reconciler's next pass
//! (`pending_resizes`, `record_resize`, `refuse_resize`).

use std::collections::HashMap;

use super::root_paths::{apply_policy, stored_policy};
use super::sql::{Row, q};
use super::users::refuse_if_locked;
use super::{Columns, Datastore, now, parse_time};
use crate::error::{Amount, Clash, Entity, Error, Result};
use crate::model::{
    PendingResize, RootPathId, RootUsage, RootUsageSample, ServerId, SizeState, UsageSample, User,
    UserId, Volume, VolumeId, VolumeUsage,
};

/// Samples kept per volume and per root path: at the default interval (15 min), five days.
pub const KEEP_SAMPLES: i64 = 480;

/// Bytes as stored (SQLite integers are signed).
fn stored(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn bytes(row: &Row, col: &str) -> Result<u64> {
    Ok(row.int(col)?.max(0) as u64)
}

/// Bytes in decimal GB, as the API counts sizes, to one decimal.
pub fn gb_text(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

impl Datastore {
    /// Record one sampling of a server: a sample per volume and root path, each table trimmed
    /// to the newest [`KEEP_SAMPLES`] of each.
    pub async fn record_usage(&self, volumes: &[VolumeUsage], roots: &[RootUsage]) -> Result<()> {
        if volumes.is_empty() && roots.is_empty() {
            return Ok(());
        }
        let ts = now();
        let mut tx = self.db.begin_write().await?;
        for v in volumes {
            q(
                "INSERT INTO volume_usage (volume_id, sampled_at, used_bytes, exclusive_bytes) \
                 VALUES (?, ?, ?, ?) ON CONFLICT (volume_id, sampled_at) DO UPDATE SET \
                 used_bytes = excluded.used_bytes, exclusive_bytes = excluded.exclusive_bytes",
            )
            .bind(v.id)
            .bind(&ts)
            .bind(stored(v.used_bytes))
            .bind(v.exclusive_bytes.map(stored))
            .execute(&mut tx)
            .await?;
            q(
                "DELETE FROM volume_usage WHERE volume_id = ?1 AND sampled_at <= \
                 (SELECT sampled_at FROM volume_usage WHERE volume_id = ?1 \
                  ORDER BY sampled_at DESC LIMIT 1 OFFSET ?2)",
            )
            .bind(v.id)
            .bind(KEEP_SAMPLES)
            .execute(&mut tx)
            .await?;
        }
        for r in roots {
            q(
                "INSERT INTO root_path_usage (root_path_id, sampled_at, size_bytes, used_bytes, \
                 free_bytes) VALUES (?, ?, ?, ?, ?) ON CONFLICT (root_path_id, sampled_at) DO UPDATE \
                 SET size_bytes = excluded.size_bytes, used_bytes = excluded.used_bytes, \
                 free_bytes = excluded.free_bytes",
            )
            .bind(r.id)
            .bind(&ts)
            .bind(stored(r.size_bytes))
            .bind(stored(r.used_bytes))
            .bind(stored(r.free_bytes))
            .execute(&mut tx)
            .await?;
            q(
                "DELETE FROM root_path_usage WHERE root_path_id = ?1 AND sampled_at <= \
                 (SELECT sampled_at FROM root_path_usage WHERE root_path_id = ?1 \
                  ORDER BY sampled_at DESC LIMIT 1 OFFSET ?2)",
            )
            .bind(r.id)
            .bind(KEEP_SAMPLES)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A volume's samples, oldest first, if `viewer` may see the volume (else not found).
    pub async fn volume_usage_for(&self, id: VolumeId, viewer: &User) -> Result<Vec<UsageSample>> {
        self.volume_for(id, viewer).await?;
        let rows = q(
            "SELECT sampled_at, used_bytes, exclusive_bytes FROM volume_usage \
             WHERE volume_id = ? ORDER BY sampled_at",
        )
        .bind(id)
        .fetch_all(self.db.read())
        .await?;
        rows.iter().map(sample_from_row).collect()
    }

    /// A volume's size as the server holds it and its latest usage sample.
    pub async fn size_state(&self, id: VolumeId) -> Result<SizeState> {
        let row = q(
            "SELECT v.applied_size_gb, v.size_error, u.sampled_at, u.used_bytes, u.exclusive_bytes \
             FROM volumes v LEFT JOIN volume_usage u ON u.volume_id = v.id AND u.sampled_at = \
             (SELECT MAX(sampled_at) FROM volume_usage WHERE volume_id = v.id) WHERE v.id = ?",
        )
        .bind(id)
        .fetch_optional(self.db.read())
        .await?
        .ok_or_else(|| Error::not_found(Entity::Volume, id))?;
        let latest = match row.opt_text("sampled_at")? {
            Some(_) => Some(sample_from_row(&row)?),
            None => None,
        };
        Ok(SizeState {
            applied_size_gb: row.opt_int("applied_size_gb")?,
            size_error: row.opt_text("size_error")?,
            latest,
        })
    }

    /// The latest sample of each root path that has one.
    pub async fn latest_root_usage(&self) -> Result<HashMap<RootPathId, RootUsageSample>> {
        let rows = q(
            "SELECT r.root_path_id, r.sampled_at, r.size_bytes, r.used_bytes, r.free_bytes \
             FROM root_path_usage r WHERE r.sampled_at = \
             (SELECT MAX(sampled_at) FROM root_path_usage WHERE root_path_id = r.root_path_id)",
        )
        .fetch_all(self.db.read())
        .await?;
        let mut m = HashMap::new();
        for row in &rows {
            m.insert(
                row.id("root_path_id")?,
                RootUsageSample {
                    sampled_at: parse_time(&row.text("sampled_at")?),
                    size_bytes: bytes(row, "size_bytes")?,
                    used_bytes: bytes(row, "used_bytes")?,
                    free_bytes: bytes(row, "free_bytes")?,
                },
            );
        }
        Ok(m)
    }

    /// Change a volume's size. The difference is reserved against the owner's quota and the
    /// root path's capacity by conditional updates in this transaction (refused, nothing
    /// changed, when it would exceed either); shrinking below the latest sample of what the
    /// volume holds is refused with that usage. A btrfs volume's new limit is applied by the
    /// reconciler (`pending_resizes`).
    pub async fn resize_volume(
        &self,
        id: VolumeId,
        viewer: &User,
        size_gb: i64,
        ctx: &crate::audit::Context,
    ) -> Result<Volume> {
        let mut tx = self.db.begin_write().await?;
        refuse_if_locked(&mut tx, viewer).await?;
        let row = q(format!(
            "SELECT v.owner_id, v.root_path_id, v.size_gb, v.state, u.used_bytes, u.sampled_at, \
             rp.export_policy FROM volumes v JOIN root_paths rp ON rp.id = v.root_path_id LEFT JOIN volume_usage u ON u.volume_id = v.id AND u.sampled_at = \
             (SELECT MAX(sampled_at) FROM volume_usage WHERE volume_id = v.id) WHERE v.id = ?{}",
            tx.for_update_of("v")
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
        if state == "deleting" || state == "deleted" {
            return Err(Error::conflict(
                Clash::VolumeState,
                format!("volume {id} is {state} and can no longer be changed"),
            ));
        }
        let old: i64 = row.int("size_gb")?;
        let rp: RootPathId = row.id("root_path_id")?;
        if let Some(used) = row.opt_int("used_bytes")? {
            let used = used.max(0) as u64;
            let at: String = row.text("sampled_at")?;
            if size_gb < old && used > crate::model::gb_bytes(size_gb) {
                return Err(Error::out_of_range(
                    Amount::Size,
                    format!(
                        "cannot shrink volume {id} to {size_gb} GB: it held {used} bytes ({}) when last sampled at {at}; free space in it first",
                        gb_text(used)
                    ),
                ));
            }
        }
        let delta = size_gb - old;
        if delta > 0 {
            // Read in this transaction: see `create::record`.
            let policy = stored_policy(&row.text("export_policy")?)?;
            apply_policy(&policy, viewer.is_admin(), &[], Some(size_gb))?;
            let grown = q(
                "UPDATE users SET used_gb = used_gb + ?1 WHERE id = ?2 AND ?1 <= quota_gb - used_gb",
            )
            .bind(delta)
            .bind(owner)
            .execute(&mut tx)
            .await?;
            if grown != 1 {
                let r = q("SELECT quota_gb, used_gb FROM users WHERE id = ?")
                    .bind(owner)
                    .fetch_one(&mut tx)
                    .await?;
                let (quota, used) = (r.int("quota_gb")?, r.int("used_gb")?);
                return Err(Error::QuotaExceeded {
                    message: format!(
                        "size_GB {size_gb}: growing volume {id} by {delta} GB exceeds its owner's quota by {} GB (quota {quota} GB, {used} GB in use, {} GB free)",
                        i128::from(used) + i128::from(delta) - i128::from(quota),
                        (quota - used).max(0)
                    ),
                });
            }
            let grown = q(
                "UPDATE root_paths SET allocated_gb = allocated_gb + ?1 WHERE id = ?2 \
                 AND ?1 <= capacity_gb - allocated_gb",
            )
            .bind(delta)
            .bind(rp)
            .execute(&mut tx)
            .await?;
            if grown != 1 {
                let r = q("SELECT capacity_gb, allocated_gb FROM root_paths WHERE id = ?")
                    .bind(rp)
                    .fetch_one(&mut tx)
                    .await?;
                let (cap, alloc): (i64, i64) = (r.int("capacity_gb")?, r.int("allocated_gb")?);
                return Err(Error::CapacityExceeded {
                    message: format!(
                        "size_GB {size_gb}: growing volume {id} by {delta} GB exceeds the free capacity of root path {rp} by {} GB (capacity {cap} GB, {alloc} GB allocated, {} GB free)",
                        i128::from(alloc) + i128::from(delta) - i128::from(cap),
                        (cap - alloc).max(0)
                    ),
                });
            }
        } else if delta < 0 {
            super::volumes::adjust_books(&mut tx, owner, rp, delta).await?;
        }
        if delta != 0 {
            // `applied_size_gb` NULL means "as created": keep that size as the one the server
            // holds until the reconciler applies the new one.
            q(
                "UPDATE volumes SET size_gb = ?, applied_size_gb = COALESCE(applied_size_gb, size_gb), \
                 size_error = NULL, updated_at = ? WHERE id = ?",
            )
            .bind(size_gb)
            .bind(now())
            .bind(id)
            .execute(&mut tx)
            .await?;
        }
        // In the change's own transaction, like the other volume changes.
        let entry = crate::audit::Entry {
            action: "volume.resize".into(),
            object: Some(format!("volume/{id}")),
            volume_id: Some(id.0),
            before: Some(serde_json::json!({ "size_gb": old })),
            after: Some(serde_json::json!({ "size_gb": size_gb })),
            status: None,
            outcome: "recorded".into(),
        };
        super::audit::append(&mut tx, ctx, &entry).await?;
        tx.commit().await?;
        self.volume(id).await
    }

    /// The btrfs and xfs-project volumes of `server` whose limit is not their size: those the server has
    /// (exported at least once, not being deleted). A resize that failed is tried again only
    /// when `retry_failed` (a full pass), not on every pass.
    pub async fn pending_resizes(
        &self,
        server: ServerId,
        retry_failed: bool,
    ) -> Result<Vec<PendingResize>> {
        let rows = q(
            "SELECT v.id, v.size_gb FROM volumes v JOIN root_paths rp ON rp.id = v.root_path_id \
             WHERE v.server_id = ? AND rp.layout IN ('btrfs', 'xfs-project') AND v.applied_size_gb IS NOT NULL \
             AND v.applied_size_gb != v.size_gb AND v.applied_clients IS NOT NULL \
             AND v.state NOT IN ('deleting', 'deleted') AND (? != 0 OR v.size_error IS NULL)",
        )
        .bind(server)
        .bind(retry_failed)
        .fetch_all(self.db.read())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PendingResize {
                    id: r.id("id")?,
                    size_gb: r.int("size_gb")?,
                })
            })
            .collect()
    }

    /// What the server said about applying `size_gb` to volume `id`: the size it now holds,
    /// or why not. Ignored if the size changed again meanwhile (the next pass applies that).
    pub async fn record_resize(
        &self,
        id: VolumeId,
        size_gb: i64,
        result: std::result::Result<(), String>,
    ) -> Result<()> {
        let query = match &result {
            Ok(()) => q(
                "UPDATE volumes SET applied_size_gb = ?2, size_error = NULL \
                 WHERE id = ?1 AND size_gb = ?2",
            )
            .bind(id)
            .bind(size_gb),
            Err(why) => q("UPDATE volumes SET size_error = ?3 WHERE id = ?1 AND size_gb = ?2")
                .bind(id)
                .bind(size_gb)
                .bind(why),
        };
        query.execute(self.db.write()).await?;
        Ok(())
    }

    /// The server refused to shrink volume `id` to `size_gb` (it holds more): the size goes
    /// back to the one the server holds, with the difference charged back to the owner's quota
    /// and the root path's capacity (the books follow the server, even past a quota used up
    /// meanwhile), and `why` is kept. Ignored if the size changed again meanwhile.
    pub async fn refuse_resize(&self, id: VolumeId, size_gb: i64, why: &str) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        let row = q(
            "UPDATE volumes SET size_gb = applied_size_gb, size_error = ?, updated_at = ? \
             WHERE id = ? AND size_gb = ? AND applied_size_gb IS NOT NULL \
             RETURNING owner_id, root_path_id, size_gb",
        )
        .bind(why)
        .bind(now())
        .bind(id)
        .bind(size_gb)
        .fetch_optional(&mut tx)
        .await?;
        if let Some(row) = row {
            let back = row.int("size_gb")? - size_gb;
            let owner: UserId = row.id("owner_id")?;
            let rp: RootPathId = row.id("root_path_id")?;
            super::volumes::adjust_books(&mut tx, owner, rp, back).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// What a full pass's check of a btrfs volume's subvolume and limit found, for `size_gb`
    /// (`bytes` on the server): `Ok(None)` it holds, `Ok(Some(was))` the limit was `was` and
    /// is put back, `Err(why)` the size does not hold. A problem is kept in `size_error`
    /// (prefixed [`SIZE_DRIFT`], cleared once the check passes again, other errors left as they
    /// are); a repair and a problem first seen are audited (`volume.size_drift`) in the same
    /// transaction. Ignored if the size changed meanwhile (the resize applies it). Returns
    /// whether anything was news (a repair, or a problem not recorded before).
    pub async fn record_size_check(
        &self,
        id: VolumeId,
        size_gb: i64,
        bytes: u64,
        found: std::result::Result<Option<&str>, &str>,
    ) -> Result<bool> {
        let mut tx = self.db.begin_write().await?;
        let entry = match found {
            Ok(was) => {
                q(
                    "UPDATE volumes SET size_error = NULL WHERE id = ? AND size_gb = ? \
                     AND substr(size_error, 1, length(?3)) = ?3",
                )
                .bind(id)
                .bind(size_gb)
                .bind(SIZE_DRIFT)
                .execute(&mut tx)
                .await?;
                was.map(|was| crate::audit::Entry {
                    action: "volume.size_drift".into(),
                    object: Some(format!("volume/{id}")),
                    volume_id: Some(id.0),
                    before: Some(serde_json::json!({ "qgroup_limit": was })),
                    after: Some(serde_json::json!({ "qgroup_limit": bytes.to_string() })),
                    status: None,
                    outcome: "repaired".into(),
                })
            }
            Err(why) => {
                let text = format!("{SIZE_DRIFT}{why}");
                let r = q(
                    "UPDATE volumes SET size_error = ?1 WHERE id = ?2 AND size_gb = ?3 \
                     AND (applied_size_gb IS NULL OR applied_size_gb = size_gb) \
                     AND size_error IS DISTINCT FROM ?1",
                )
                .bind(&text)
                .bind(id)
                .bind(size_gb)
                .execute(&mut tx)
                .await?;
                (r == 1).then(|| crate::audit::Entry {
                    action: "volume.size_drift".into(),
                    object: Some(format!("volume/{id}")),
                    volume_id: Some(id.0),
                    before: None,
                    after: Some(serde_json::json!({ "size_error": text })),
                    status: None,
                    outcome: "reported".into(),
                })
            }
        };
        let news = entry.is_some();
        if let Some(entry) = entry {
            super::audit::append(&mut tx, &crate::audit::Context::internal(), &entry).await?;
        }
        tx.commit().await?;
        Ok(news)
    }
}

/// How a full pass's limit check starts the `size_error` it records (`record_size_check`), so
/// that only its own messages are cleared when the size holds again.
pub const SIZE_DRIFT: &str = "size not enforced: ";

fn sample_from_row(row: &Row) -> Result<UsageSample> {
    Ok(UsageSample {
        sampled_at: parse_time(&row.text("sampled_at")?),
        used_bytes: bytes(row, "used_bytes")?,
        exclusive_bytes: row.opt_int("exclusive_bytes")?.map(|n| n.max(0) as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_fixture::{create, fixture};
    use super::*;
    use crate::model::Role;

    async fn counters(db: &Datastore, user: &str, rp: RootPathId) -> (i64, i64) {
        let u = db.user_by_name(user).await.unwrap();
        (u.used_gb, db.root_path(rp).await.unwrap().allocated_gb)
    }

    /// A resize is recorded in the audit trail, in its own transaction, with the size before
    /// and after; a refused one changes nothing there either.
    #[tokio::test]
    async fn a_resize_is_in_the_audit_trail() {
        let (_dir, db, owner, rp) = fixture().await;
        let u = db.user_by_name("u").await.unwrap();
        let v = create(&db, owner, rp, "a").await;
        let ctx = crate::audit::Context::internal();
        let resizes = |records: Vec<crate::audit::Record>| {
            records
                .into_iter()
                .filter(|r| r.action == "volume.resize")
                .map(|r| (r.before, r.after))
                .collect::<Vec<_>>()
        };
        db.resize_volume(v.id, &u, 7, &ctx).await.unwrap();
        db.resize_volume(v.id, &u, 1000, &ctx).await.unwrap_err();
        let records = db.audit_records(Some(v.id.0), 0, 100).await.unwrap();
        let before = v.size_gb.to_string();
        assert_eq!(
            resizes(records),
            vec![(
                Some(format!("{{\"size_gb\":{before}}}")),
                Some("{\"size_gb\":7}".to_string())
            )]
        );
        assert!(db.verify_audit().await.unwrap().is_ok());
    }

    /// A resized volume is handed to the reconciler on btrfs and xfs-project root paths (the
    /// server holds their size), never on a plain-directory one (bookkeeping only).
    #[tokio::test]
    async fn xfs_project_and_btrfs_resizes_are_pending_directory_ones_are_not() {
        let (_dir, db, owner, rp) = fixture().await;
        let u = db.user_by_name("u").await.unwrap();
        let v = create(&db, owner, rp, "a").await;
        sqlx::query("UPDATE volumes SET state = 'available', applied_clients = '[]'")
            .execute(db.sqlite_writer())
            .await
            .unwrap();
        db.resize_volume(v.id, &u, 7, &crate::audit::Context::internal())
            .await
            .unwrap();
        for (layout, pending) in [("directory", 0), ("xfs-project", 1), ("btrfs", 1)] {
            sqlx::query("UPDATE root_paths SET layout = ?")
                .bind(layout)
                .execute(db.sqlite_writer())
                .await
                .unwrap();
            let got = db.pending_resizes(v.server_id, true).await.unwrap();
            assert_eq!(got.len(), pending, "{layout}");
            if pending == 1 {
                assert_eq!((got[0].id, got[0].size_gb), (v.id, 7), "{layout}");
            }
        }
    }

    #[tokio::test]
    async fn a_resize_reserves_the_difference_or_changes_nothing() {
        let (_dir, db, owner, rp) = fixture().await;
        let u = db.user_by_name("u").await.unwrap();
        let v = create(&db, owner, rp, "a").await;
        let v = db
            .resize_volume(v.id, &u, 50, &crate::audit::Context::internal())
            .await
            .unwrap();
        assert_eq!(v.size_gb, 50);
        assert_eq!(counters(&db, "u", rp).await, (50, 50));
        // Quota 100: 51 more is 1 GB over.
        match db
            .resize_volume(v.id, &u, 101, &crate::audit::Context::internal())
            .await
        {
            Err(Error::QuotaExceeded { message }) => {
                assert!(message.contains("quota by 1 GB"), "{message}")
            }
            other => panic!("{:?}", other.map(|v| v.size_gb)),
        }
        assert_eq!(counters(&db, "u", rp).await, (50, 50));
        // Capacity 100: a user with room in their quota still cannot take more than is left.
        let big = db.create_user("big", "x", Role::User, 1000).await.unwrap();
        let w = create(&db, big.id, rp, "b").await;
        match db
            .resize_volume(w.id, &big, 51, &crate::audit::Context::internal())
            .await
        {
            Err(Error::CapacityExceeded { message }) => {
                assert!(
                    message.contains("capacity of root path 1 by 1 GB"),
                    "{message}"
                )
            }
            other => panic!("{:?}", other.map(|v| v.size_gb)),
        }
        assert_eq!(counters(&db, "big", rp).await, (1, 51));
        // Shrinking gives back.
        db.resize_volume(v.id, &u, 10, &crate::audit::Context::internal())
            .await
            .unwrap();
        assert_eq!(counters(&db, "u", rp).await, (10, 11));
        // Another user's volume is not found; a deleted one cannot change.
        assert!(matches!(
            db.resize_volume(w.id, &u, 2, &crate::audit::Context::internal())
                .await,
            Err(Error::NotFound { .. })
        ));
        db.delete_volume(v.id, &u, false, &crate::audit::Context::internal())
            .await
            .unwrap();
        assert!(matches!(
            db.resize_volume(v.id, &u, 2, &crate::audit::Context::internal())
                .await,
            Err(Error::Conflict { .. })
        ));
    }

    #[tokio::test]
    async fn a_shrink_below_the_latest_sample_is_refused_with_the_usage() {
        let (_dir, db, owner, rp) = fixture().await;
        let u = db.user_by_name("u").await.unwrap();
        let v = create(&db, owner, rp, "a").await;
        db.resize_volume(v.id, &u, 10, &crate::audit::Context::internal())
            .await
            .unwrap();
        let sample = |n| VolumeUsage {
            id: v.id,
            used_bytes: n,
            exclusive_bytes: None,
        };
        db.record_usage(&[sample(9_000_000_000)], &[])
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        db.record_usage(&[sample(5_000_000_000)], &[])
            .await
            .unwrap();
        match db
            .resize_volume(v.id, &u, 4, &crate::audit::Context::internal())
            .await
        {
            Err(Error::OutOfRange { amount, message }) => {
                assert_eq!(amount, Amount::Size);
                assert!(
                    message.contains("5000000000 bytes (5.0 GB)"),
                    "the latest sample: {message}"
                )
            }
            other => panic!("{:?}", other.map(|v| v.size_gb)),
        }
        assert_eq!(counters(&db, "u", rp).await, (10, 10));
        assert_eq!(
            db.resize_volume(v.id, &u, 5, &crate::audit::Context::internal())
                .await
                .unwrap()
                .size_gb,
            5
        );
        let s = db.size_state(v.id).await.unwrap();
        assert_eq!(
            s.applied_size_gb,
            Some(1),
            "the server still holds the size it was created with"
        );
        assert_eq!(s.latest.unwrap().used_bytes, 5_000_000_000);

        // The server refuses the shrink (its qgroup holds more): back to the size it holds,
        // the difference charged back.
        db.refuse_resize(v.id, 5, "holds more").await.unwrap();
        let back = db.volume(v.id).await.unwrap();
        assert_eq!(back.size_gb, 1);
        assert_eq!(counters(&db, "u", rp).await, (1, 1));
        assert_eq!(
            db.size_state(v.id).await.unwrap().size_error.as_deref(),
            Some("holds more")
        );
        // A refusal of a size since replaced changes nothing.
        db.resize_volume(v.id, &u, 7, &crate::audit::Context::internal())
            .await
            .unwrap();
        db.refuse_resize(v.id, 5, "stale").await.unwrap();
        assert_eq!(db.volume(v.id).await.unwrap().size_gb, 7);
        assert_eq!(counters(&db, "u", rp).await, (7, 7));
    }

    /// Resizes racing each other and a quota admit exactly what fits: the counters never
    /// overcommit and equal the sum of the sizes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_resizes_never_overcommit() {
        let (_dir, db, owner, rp) = fixture().await;
        let u = db.user_by_name("u").await.unwrap();
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(create(&db, owner, rp, &format!("v{i}")).await.id);
        }
        let tasks: Vec<_> = ids
            .iter()
            .map(|&id| {
                let (db, u) = (db.clone(), u.clone());
                tokio::spawn(async move {
                    db.resize_volume(id, &u, 10, &crate::audit::Context::internal())
                        .await
                        .is_ok()
                })
            })
            .collect();
        let mut grown = 0;
        for t in tasks {
            grown += usize::from(t.await.unwrap());
        }
        // 20 x 1 GB, quota 100: 8 grow by 9 GB each (92), a ninth would need 101.
        assert_eq!(grown, 8);
        assert_eq!(counters(&db, "u", rp).await, (92, 92));
    }

    #[tokio::test]
    async fn samples_are_bounded_per_volume() {
        let (_dir, db, owner, rp) = fixture().await;
        let u = db.user_by_name("u").await.unwrap();
        let v = create(&db, owner, rp, "a").await;
        for n in 0..(KEEP_SAMPLES as u64 + 5) {
            let s = VolumeUsage {
                id: v.id,
                used_bytes: n,
                exclusive_bytes: Some(n),
            };
            let root = RootUsage {
                id: rp,
                size_bytes: 100,
                used_bytes: n,
                free_bytes: 100 - n.min(100),
            };
            db.record_usage(&[s], &[root]).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let kept = db.volume_usage_for(v.id, &u).await.unwrap();
        assert_eq!(kept.len() as i64, KEEP_SAMPLES);
        assert_eq!(kept.last().unwrap().used_bytes, KEEP_SAMPLES as u64 + 4);
        assert_eq!(kept[0].used_bytes, 5, "the oldest went");
        let roots = db.latest_root_usage().await.unwrap();
        assert_eq!(roots[&rp].used_bytes, KEEP_SAMPLES as u64 + 4);
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM root_path_usage")
            .fetch_one(db.sqlite_pool())
            .await
            .unwrap();
        assert_eq!(n, KEEP_SAMPLES);
    }

    /// A full pass's limit check: a problem is kept (prefixed) and audited once, a repair is
    /// audited each time, and once it holds again only the check's own error is cleared.
    #[tokio::test]
    async fn size_checks_record_drift_once_and_clear_only_their_own_errors() {
        let (_dir, db, owner, rp) = fixture().await;
        let v = create(&db, owner, rp, "a").await;
        let (id, gb) = (v.id, v.size_gb);
        let error = |db: Datastore| async move { db.size_state(id).await.unwrap().size_error };
        let drift = |db: Datastore| async move {
            db.audit_records(Some(id.0), 0, 100)
                .await
                .unwrap()
                .into_iter()
                .filter(|r| r.action == "volume.size_drift")
                .map(|r| r.outcome)
                .collect::<Vec<_>>()
        };
        assert!(db.record_size_check(id, gb, 1, Err("gone")).await.unwrap());
        assert!(!db.record_size_check(id, gb, 1, Err("gone")).await.unwrap());
        assert_eq!(
            error(db.clone()).await.as_deref(),
            Some("size not enforced: gone")
        );
        assert!(
            db.record_size_check(id, gb, 1, Ok(Some("none")))
                .await
                .unwrap()
        );
        assert_eq!(error(db.clone()).await, None);
        assert!(!db.record_size_check(id, gb, 1, Ok(None)).await.unwrap());
        assert_eq!(drift(db.clone()).await, ["reported", "repaired"]);
        // A resize's error is not the check's to clear; a stale size is ignored.
        db.record_resize(id, gb, Err("not resized".into()))
            .await
            .unwrap();
        db.record_size_check(id, gb, 1, Ok(None)).await.unwrap();
        assert_eq!(error(db.clone()).await.as_deref(), Some("not resized"));
        assert!(!db.record_size_check(id, gb + 1, 1, Err("x")).await.unwrap());
        assert!(db.verify_audit().await.unwrap().is_ok());
    }
}
