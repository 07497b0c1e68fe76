//! Shared fixtures of the datastore's unit tests: a real SQLite file in a temporary directory.

use sqlx::{AssertSqlSafe, Row};

use super::{Created, Datastore, NewServer, NewVolume};
use crate::model::*;
use crate::spec::{ClientSpec, DirMode, ExportOptions, RootDir, SubPath};

/// The query plan's lines for `sql` with `binds` integer parameters.
pub async fn query_plan(db: &Datastore, sql: &str, binds: usize) -> Vec<String> {
    let mut q = sqlx::query(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
    for _ in 0..binds {
        q = q.bind(1_i64);
    }
    q.fetch_all(db.sqlite_pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("detail"))
        .collect()
}

pub async fn fixture() -> (tempfile::TempDir, Datastore, UserId, RootPathId) {
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
    let u = db
        .create_user("u", "x", crate::model::Role::User, 100)
        .await
        .unwrap();
    (dir, db, u.id, rp.id)
}

pub(super) fn new_volume(owner: UserId, rp: RootPathId, sub: &str) -> NewVolume {
    NewVolume {
        owner,
        root_path: rp,
        sub_path: SubPath::parse(sub).unwrap(),
        size_gb: 1,
        clients: vec![ClientRule {
            host: ClientSpec::parse("10.0.0.0/24").unwrap(),
            options: ExportOptions::parse("rw").unwrap(),
        }],
        mode: DirMode::default(),
        uid: 0,
        gid: 0,
        adopt_existing: false,
        idempotency_key: None,
        request_hash: None,
        restore_from: None,
    }
}

pub async fn create(db: &Datastore, owner: UserId, rp: RootPathId, sub: &str) -> Volume {
    match db.create_volume(&new_volume(owner, rp, sub)).await.unwrap() {
        Created::New(v) => v,
        Created::Replayed(_) => panic!("not a replay"),
    }
}
