//! The audit table: appending a record inside the transaction of the change it describes
//! (rusqlite for the create thread, sqlx for the rest), reading pages of it, and walking the
//! whole chain for `nfsprov audit verify` / `export`.
//!
//! A record's id and `prev_hash` come from the table inside the writing transaction: every
//! write holds SQLite's one write lock (`BEGIN IMMEDIATE`, one write connection), and on
//! PostgreSQL the row of `audit_head` is locked (`FOR UPDATE`) until the transaction ends, so
//! two records can never be chained to the same predecessor.

use super::sql::{Row, Tx, q};
use super::{Columns, Datastore, now};
use crate::audit::{Broken, Context, Entry, GENESIS, Record, Verified, Walk};
use crate::error::Result;

/// The next id (one above the highest the table ever gave: removed newest records leave a
/// gap the walk reports) and the hash of the newest record.
const HEAD: &str = "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'audit'), 0) + 1, \
     (SELECT hash FROM audit ORDER BY id DESC LIMIT 1)";

/// PostgreSQL's `HEAD`: the highest id ever given is kept in the one row of `audit_head`,
/// locked by this read until the appending transaction ends (`SET_HEAD_PG` moves it).
const HEAD_PG: &str = "SELECT h.seq + 1, (SELECT hash FROM audit ORDER BY id DESC LIMIT 1)      FROM audit_head h FOR UPDATE";
const SET_HEAD_PG: &str = "UPDATE audit_head SET seq = ?";

const INSERT: &str = "INSERT INTO audit (id, at, actor, actor_id, source, request_id, method, path, \
     action, object, volume_id, before, after, status, outcome, prev_hash, hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";

const SELECT: &str = "SELECT id, at, actor, actor_id, source, request_id, method, path, action, \
     object, volume_id, before, after, status, outcome, prev_hash, hash FROM audit";

/// The head of the chain inside one open transaction of the create thread (rusqlite): read
/// once, then advanced in memory for every record the batch seals, so a batch of creates
/// costs one read of the head however many records it writes (`insert_raw` writes them).
pub(super) struct Chain {
    next_id: i64,
    prev_hash: String,
}

impl Chain {
    /// The head as the open transaction sees it; it holds the write lock, so no one else
    /// appends until it ends.
    pub(super) fn read_raw(db: &rusqlite::Connection) -> Result<Chain> {
        let (next_id, prev): (i64, Option<String>) = db
            .prepare_cached(HEAD)?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(Chain {
            next_id,
            prev_hash: prev.unwrap_or_else(|| GENESIS.into()),
        })
    }

    /// The next record of the chain, sealed (not yet written).
    pub(super) fn seal(&mut self, ctx: &Context, e: &Entry) -> Record {
        let r = Record::seal(self.next_id, now(), self.prev_hash.clone(), ctx, e);
        self.next_id += 1;
        self.prev_hash.clone_from(&r.hash);
        r
    }
}

/// Write records sealed by one [`Chain`], in order, inside the same transaction.
pub(super) fn insert_raw(db: &rusqlite::Connection, records: &[Record]) -> Result<()> {
    let mut insert = db.prepare_cached(INSERT)?;
    for r in records {
        insert.execute(rusqlite::params![
            r.id,
            r.at,
            r.actor,
            r.actor_id,
            r.source,
            r.request_id,
            r.method,
            r.path,
            r.action,
            r.object,
            r.volume_id,
            r.before,
            r.after,
            r.status,
            r.outcome,
            r.prev_hash,
            r.hash,
        ])?;
    }
    Ok(())
}

/// Append a record inside the caller's open transaction (on the write connection).
pub(super) async fn append(tx: &mut Tx, ctx: &Context, e: &Entry) -> Result<()> {
    append_all(tx, &[(ctx, e)]).await
}

/// The columns of one record in `INSERT`'s order, as placeholders.
const ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Append records in order inside the caller's open transaction: the head is read (and on
/// PostgreSQL locked) once, the records are chained in memory and written in one statement.
pub(super) async fn append_all(tx: &mut Tx, entries: &[(&Context, &Entry)]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let pg = tx.is_postgres();
    let head = q(if pg { HEAD_PG } else { HEAD })
        .fetch_one(&mut *tx)
        .await?;
    let (id, prev) = match &head {
        Row::Sqlite(h) => {
            use sqlx::Row as _;
            (h.try_get::<i64, _>(0)?, h.try_get::<Option<String>, _>(1)?)
        }
        Row::Pg(h) => {
            use sqlx::Row as _;
            (h.try_get::<i64, _>(0)?, h.try_get::<Option<String>, _>(1)?)
        }
    };
    let mut chain = Chain {
        next_id: id,
        prev_hash: prev.unwrap_or_else(|| GENESIS.into()),
    };
    let records: Vec<Record> = entries.iter().map(|(ctx, e)| chain.seal(ctx, e)).collect();
    let sql = format!(
        "{} VALUES {}",
        INSERT
            .split_once(" VALUES ")
            .map_or(INSERT, |(cols, _)| cols),
        vec![ROW; records.len()].join(", ")
    );
    let mut insert = q(sql);
    for r in &records {
        insert = insert
            .bind(r.id)
            .bind(&r.at)
            .bind(&r.actor)
            .bind(r.actor_id)
            .bind(&r.source)
            .bind(&r.request_id)
            .bind(&r.method)
            .bind(&r.path)
            .bind(&r.action)
            .bind(&r.object)
            .bind(r.volume_id)
            .bind(&r.before)
            .bind(&r.after)
            .bind(r.status)
            .bind(&r.outcome)
            .bind(&r.prev_hash)
            .bind(&r.hash);
    }
    insert.execute(&mut *tx).await?;
    if pg {
        q(SET_HEAD_PG)
            .bind(chain.next_id - 1)
            .execute(&mut *tx)
            .await?;
    }
    for (ctx, _) in entries {
        ctx.mark_recorded();
    }
    Ok(())
}

fn record_from_row(row: &Row) -> Result<Record> {
    Ok(Record {
        id: row.int("id")?,
        at: row.text("at")?,
        actor: row.opt_text("actor")?,
        actor_id: row.opt_int("actor_id")?,
        source: row.opt_text("source")?,
        request_id: row.opt_text("request_id")?,
        method: row.text("method")?,
        path: row.text("path")?,
        action: row.text("action")?,
        object: row.opt_text("object")?,
        volume_id: row.opt_int("volume_id")?,
        before: row.opt_text("before")?,
        after: row.opt_text("after")?,
        status: row.opt_int("status")?,
        outcome: row.text("outcome")?,
        prev_hash: row.text("prev_hash")?,
        hash: row.text("hash")?,
    })
}

impl Datastore {
    /// Record something that changed nothing (a denied attempt), in its own transaction.
    pub async fn record_audit(&self, ctx: &Context, e: &Entry) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        append(&mut tx, ctx, e).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records with an id above `after`, oldest first, at most `limit`; only those of
    /// `volume` if given.
    pub async fn audit_records(
        &self,
        volume: Option<i64>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match volume {
            Some(v) => {
                q(format!(
                    "{SELECT} WHERE volume_id = ? AND id > ? ORDER BY id LIMIT ?"
                ))
                .bind(v)
                .bind(after)
                .bind(limit)
                .fetch_all(self.db.read())
                .await?
            }
            None => {
                q(format!("{SELECT} WHERE id > ? ORDER BY id LIMIT ?"))
                    .bind(after)
                    .bind(limit)
                    .fetch_all(self.db.read())
                    .await?
            }
        };
        rows.iter().map(record_from_row).collect()
    }

    /// Every record with an id above `since`, oldest first, one at a time.
    pub async fn each_audit_record(
        &self,
        since: i64,
        mut f: impl FnMut(Record) -> Result<()>,
    ) -> Result<()> {
        q(format!("{SELECT} WHERE id > ? ORDER BY id"))
            .bind(since)
            .for_each(self.db.read(), |row| f(record_from_row(&row)?))
            .await
    }

    /// Walk the whole chain: `Ok(Err(broken))` names the first bad record.
    pub async fn verify_audit(&self) -> Result<std::result::Result<Verified, Broken>> {
        let mut walk = Walk::default();
        let mut broken = None;
        self.each_audit_record(0, |r| {
            if broken.is_none()
                && let Err(b) = walk.step(&r)
            {
                broken = Some(b);
            }
            Ok(())
        })
        .await?;
        if let Some(b) = broken {
            return Ok(Err(b));
        }
        let seq = q(if self.db.is_postgres() {
            "SELECT seq FROM audit_head WHERE seq > 0"
        } else {
            "SELECT seq FROM sqlite_sequence WHERE name = 'audit'"
        })
        .fetch_optional(self.db.read())
        .await?
        .map(|row| row.int("seq"))
        .transpose()?;
        Ok(walk.finish(seq))
    }
}

/// The fields of a volume an audit record shows (before -> after).
pub(super) fn volume_fields(v: &crate::model::Volume) -> serde_json::Value {
    serde_json::json!({
        "owner": v.owner,
        "root_path_id": v.root_path_id.0,
        "sub_path": v.sub_path.as_str(),
        "size_gb": v.size_gb,
        "clients": serde_json::from_str::<serde_json::Value>(&crate::model::clients_to_json(&v.clients))
            .unwrap_or_default(),
        "mode": v.mode.as_octal_string(),
        "uid": v.uid,
        "gid": v.gid,
        "adopt_existing": v.adopt_existing,
        "state": v.state.as_str(),
        "generation": v.generation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::test_fixture::*;
    use crate::model::*;

    /// A database with six records: a create, a patch and a delete of a volume, a re-pinned
    /// host key, a denied attempt, a second create.
    async fn six_records() -> (tempfile::TempDir, Datastore) {
        let (dir, db, owner, rp) = fixture().await;
        let ctx = || {
            let mut c = Context::new("POST", "/api/v1/volumes");
            c.actor = Some("u".into());
            c.source = Some("127.0.0.1".into());
            c.request_id = Some("r1".into());
            c
        };
        let v = match db
            .create_volume_as(&new_volume(owner, rp, "a"), &ctx())
            .await
            .unwrap()
        {
            crate::datastore::Created::New(v) => v,
            _ => unreachable!(),
        };
        let viewer = db.user_by_name("u").await.unwrap();
        let clients = new_volume(owner, rp, "x").clients;
        db.update_volume_clients(v.id, &viewer, &clients, &ctx())
            .await
            .unwrap();
        db.delete_volume(v.id, &viewer, false, &ctx())
            .await
            .unwrap();
        db.set_server_host_key(ServerId(1), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5BBBB", &ctx())
            .await
            .unwrap();
        db.record_audit(
            &ctx(),
            &Entry {
                action: "denied".into(),
                status: Some(403),
                outcome: "Forbidden".into(),
                ..Entry::default()
            },
        )
        .await
        .unwrap();
        create(&db, owner, rp, "b").await;
        (dir, db)
    }

    /// The database file opened behind the service's back, its triggers dropped, as someone
    /// with access to the file would.
    fn tamper(dir: &tempfile::TempDir, sql: &str) {
        let c = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        c.execute_batch(
            "DROP TRIGGER IF EXISTS audit_append_only_update; \
             DROP TRIGGER IF EXISTS audit_append_only_delete;",
        )
        .unwrap();
        c.execute_batch(sql).unwrap();
    }

    async fn first_bad(db: &Datastore) -> i64 {
        match db.verify_audit().await.unwrap() {
            Ok(v) => panic!("verified: {v:?}"),
            Err(b) => b.id,
        }
    }

    #[tokio::test]
    async fn every_change_is_recorded_with_who_what_and_before_after() {
        let (_dir, db) = six_records().await;
        let v = db.verify_audit().await.unwrap().unwrap();
        assert_eq!(v.records, 6);
        let all = db.audit_records(None, 0, 100).await.unwrap();
        let actions: Vec<&str> = all.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "volume.create",
                "volume.update",
                "volume.delete",
                "server.host_key",
                "denied",
                "volume.create"
            ]
        );
        assert_eq!(all[0].actor.as_deref(), Some("u"));
        assert_eq!(all[0].request_id.as_deref(), Some("r1"));
        assert!(
            all[0]
                .after
                .as_deref()
                .unwrap()
                .contains("\"sub_path\":\"a\"")
        );
        assert!(
            all[1]
                .before
                .as_deref()
                .unwrap()
                .contains("\"generation\":1")
        );
        assert!(
            all[1]
                .after
                .as_deref()
                .unwrap()
                .contains("\"generation\":2")
        );
        assert!(all[2].after.as_deref().unwrap().contains("deleting"));
        // The key's fingerprints, not the keys.
        assert!(all[3].before.as_deref().unwrap().contains("SHA256:"));
        assert_ne!(all[3].before, all[3].after);
        // The last create went through `create_volume` without a context: still recorded.
        assert_eq!(all[5].method, "INTERNAL");
        // The history of the first volume is its three records.
        let history = db.audit_records(Some(1), 0, 100).await.unwrap();
        assert_eq!(history.len(), 3);
    }

    #[tokio::test]
    async fn the_service_cannot_change_or_remove_a_record() {
        let (_dir, db) = six_records().await;
        for sql in [
            "UPDATE audit SET outcome = 'x' WHERE id = 1",
            "DELETE FROM audit WHERE id = 6",
        ] {
            let e = sqlx::query(sql)
                .execute(db.sqlite_writer())
                .await
                .unwrap_err();
            assert!(e.to_string().contains("append-only"), "{e}");
        }
        assert!(db.verify_audit().await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_changed_field_is_found() {
        let (dir, db) = six_records().await;
        tamper(&dir, "UPDATE audit SET actor = 'someone-else' WHERE id = 3");
        assert_eq!(first_bad(&db).await, 3);
    }

    #[tokio::test]
    async fn a_removed_record_is_found() {
        let (dir, db) = six_records().await;
        tamper(&dir, "DELETE FROM audit WHERE id = 2");
        assert_eq!(first_bad(&db).await, 3);
    }

    #[tokio::test]
    async fn removed_newest_records_are_found() {
        let (dir, db) = six_records().await;
        tamper(&dir, "DELETE FROM audit WHERE id >= 5");
        assert_eq!(first_bad(&db).await, 4);
    }

    #[tokio::test]
    async fn an_inserted_record_is_found() {
        let (dir, db) = six_records().await;
        // Records 4.. moved up by one to make room, and a record placed at 4 that claims to
        // follow record 3.
        tamper(
            &dir,
            "UPDATE audit SET id = -id WHERE id >= 4; \
             UPDATE audit SET id = 1 - id WHERE id < 0; \
             INSERT INTO audit (id, at, method, path, action, outcome, prev_hash, hash) \
             SELECT 4, at, 'DELETE', '/api/v1/volumes/1', 'volume.delete', 'recorded', hash, \
                    'ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff' \
             FROM audit WHERE id = 3;",
        );
        assert_eq!(first_bad(&db).await, 4);
    }

    #[tokio::test]
    async fn swapped_records_are_found() {
        let (dir, db) = six_records().await;
        tamper(
            &dir,
            "UPDATE audit SET id = 100 WHERE id = 2; \
             UPDATE audit SET id = 2 WHERE id = 3; \
             UPDATE audit SET id = 3 WHERE id = 100;",
        );
        assert_eq!(first_bad(&db).await, 2);
    }

    #[tokio::test]
    async fn a_create_refused_in_its_batch_leaves_no_record() {
        // The record is written in the create's transaction: a rolled-back create has none.
        let (_dir, db, owner, rp) = fixture().await;
        create(&db, owner, rp, "a").await;
        assert!(db.create_volume(&new_volume(owner, rp, "a")).await.is_err());
        sqlx::query(
            "CREATE TRIGGER refuse_bad BEFORE INSERT ON volumes WHEN NEW.sub_path = 'bad' \
             BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END",
        )
        .execute(db.sqlite_writer())
        .await
        .unwrap();
        assert!(
            db.create_volume(&new_volume(owner, rp, "bad"))
                .await
                .is_err()
        );
        let all = db.audit_records(None, 0, 100).await.unwrap();
        assert_eq!(all.len(), 1);
        assert!(db.verify_audit().await.unwrap().is_ok());
    }
}
