//! Shared fixtures of the datastore's unit tests: a real SQLite file in a temporary directory,
//! or a fresh database on the PostgreSQL server `NFSPROV_TEST_PG_URL` names (`pg_fixture`).

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
    let (u, rp) = populate(&db).await;
    (dir, db, u, rp)
}

/// The PostgreSQL server the datastore tests also run on, if any.
pub const PG_URL_VAR: &str = "NFSPROV_TEST_PG_URL";

/// `fixture` on a new database of the PostgreSQL server `NFSPROV_TEST_PG_URL` names
/// (`postgres://user@host:port/db`; the database is only used to create the new one), or
/// `None`, said on stderr, when it is not set. The databases are left on that server: it is
/// a throwaway one (the test bed's, or one started by hand).
pub async fn pg_fixture(test: &str) -> Option<(Datastore, UserId, RootPathId)> {
    let url = pg_database(test).await?;
    let db = Datastore::open_url(&url).await.unwrap();
    let (u, rp) = populate(&db).await;
    Some((db, u, rp))
}

/// The URL of a new, empty database on the server `NFSPROV_TEST_PG_URL` names (see
/// `pg_fixture`), or `None` when it is not set.
pub async fn pg_database(test: &str) -> Option<String> {
    use sqlx::Connection as _;
    let Ok(url) = std::env::var(PG_URL_VAR) else {
        eprintln!("{test}: skipped on PostgreSQL ({PG_URL_VAR} is not set)");
        return None;
    };
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("nfsprov_{test}_{}_{n}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let base = url.split('?').next().unwrap();
    let (server, _) = base.rsplit_once('/').unwrap();
    Some(format!("{server}/{name}"))
}

/// A server, a root path of 100 GB on it and a user `u` with a quota of 100 GB.
pub async fn populate(db: &Datastore) -> (UserId, RootPathId) {
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
    (u.id, rp.id)
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
