//! The reconciler's side: the volumes a pass reads and the outcomes it records.

use super::sql::q;
use super::sqlite::with_raw_connection;
use super::volumes::{VOLUME_SELECT, volume_from_row};
use super::{Datastore, now, postgres, sqlite};
use crate::error::Result;
use crate::model::{Outcome, ServerId, Volume};

impl Datastore {
    /// Every volume of a server the reconciler must look after (all but `deleted`).
    pub async fn server_volumes(&self, server: ServerId) -> Result<Vec<Volume>> {
        let Some((pool, _)) = self.sqlite() else {
            return q(format!(
                "{VOLUME_SELECT} WHERE v.server_id = ? AND v.state != 'deleted' ORDER BY v.id"
            ))
            .bind(server)
            .fetch_all(self.db.read())
            .await?
            .iter()
            .map(volume_from_row)
            .collect();
        };
        // Read through rusqlite off the runtime: a pass reads every volume of its server, and
        // through sqlx each row is a hand-off between threads (5x slower at 10,000 volumes).
        let (pool, rt) = (pool.clone(), tokio::runtime::Handle::current());
        tokio::task::spawn_blocking(move || {
            with_raw_connection(&rt, &pool, |db| {
                let mut q = db.prepare_cached(&format!(
                    "{VOLUME_SELECT} WHERE v.server_id = ?1 AND v.state != 'deleted' ORDER BY v.id"
                ))?;
                let mut rows = q.query([server])?;
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
                    } => applied.push(serde_json::json!([id, generation, clients])),
                    Outcome::Deleted { id, generation } => {
                        deleted.push(serde_json::json!([id, generation]))
                    }
                    Outcome::Rejected {
                        id,
                        generation,
                        message,
                    } => rejected.push(serde_json::json!([id, generation, message])),
                    Outcome::Failed {
                        id,
                        generation,
                        message,
                    } => failed.push(serde_json::json!([id, generation, message])),
                    Outcome::Pending {
                        id,
                        generation,
                        message,
                    } => pending.push(serde_json::json!([id, generation, message])),
                }
            }
            let ts = now();
            let mut tx = self.db.begin_write().await?;
            let sql = if tx.is_postgres() {
                [
                    postgres::RECORD_APPLIED,
                    postgres::RECORD_DELETED,
                    postgres::RECORD_REJECTED,
                    postgres::RECORD_FAILED,
                    postgres::RECORD_PENDING,
                ]
            } else {
                [
                    sqlite::RECORD_APPLIED,
                    sqlite::RECORD_DELETED,
                    sqlite::RECORD_REJECTED,
                    sqlite::RECORD_FAILED,
                    sqlite::RECORD_PENDING,
                ]
            };
            for (rows, sql) in [applied, deleted, rejected, failed, pending]
                .into_iter()
                .zip(sql)
            {
                if !rows.is_empty() {
                    q(sql)
                        .bind(&ts)
                        .bind(serde_json::Value::Array(rows).to_string())
                        .execute(&mut tx)
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

#[cfg(test)]
mod tests {
    use crate::datastore::test_fixture::*;
    use crate::datastore::*;
    use crate::model::*;

    #[tokio::test]
    async fn outcomes_are_recorded_only_for_the_generation_applied() {
        let (_dir, db, owner, rp) = fixture().await;
        let reqs: Vec<NewVolume> = (0..1200)
            .map(|k| new_volume(owner, rp, &format!("v{k}")))
            .collect();
        sqlx::query("UPDATE users SET quota_gb = 2000")
            .execute(db.sqlite_writer())
            .await
            .unwrap();
        sqlx::query("UPDATE root_paths SET capacity_gb = 2000")
            .execute(db.sqlite_writer())
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
        let deleting = db
            .delete_volume(
                vols[4].id,
                &viewer,
                false,
                &crate::audit::Context::internal(),
            )
            .await
            .unwrap();
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
}
