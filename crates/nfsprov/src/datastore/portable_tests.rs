//! The datastore's behaviour on both databases: each test runs its body on a SQLite file, then
//! on a fresh PostgreSQL database when `NFSPROV_TEST_PG_URL` is set (and says it skipped that
//! half when not). What these show on PostgreSQL is what the SQL layer (`sql`), the
//! PostgreSQL schema (`migrations_pg/`) and the create path (`postgres::create`) must get
//! right: constraint errors told apart, conditional reservations, row locks, the audit chain.

use std::future::Future;

use super::test_fixture::*;
use super::*;
use crate::audit::Context;
use crate::error::{Clash, Error};
use crate::model::*;
use crate::spec::{RootDir, SnapshotName};

async fn on_both<F, Fut>(test: &str, body: F)
where
    F: Fn(Datastore, UserId, RootPathId) -> Fut,
    Fut: Future<Output = ()>,
{
    let (_dir, db, u, rp) = fixture().await;
    body(db, u, rp).await;
    if let Some((db, u, rp)) = pg_fixture(test).await {
        body(db, u, rp).await;
    }
}

fn server(name: &str) -> NewServer {
    NewServer {
        name: name.into(),
        ssh_host: "127.0.0.1".into(),
        ssh_port: 22,
        ssh_user: "root".into(),
        ssh_key: "/k".into(),
        host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA".into(),
        nfs_address: "127.0.0.1".into(),
        backend: "knfsd".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_servers_root_paths_and_tokens() {
    on_both("accounts", |db, _owner, _rp| async move {
        let s = db.server_by_name("s1").await.unwrap();
        assert!(matches!(
            db.create_server(&server("s1")).await,
            Err(Error::Conflict {
                with: Clash::ServerName,
                ..
            })
        ));
        db.set_server_status(s.id, ServerStatus::Reachable, Some("fine"))
            .await
            .unwrap();
        let s = db.server(s.id).await.unwrap();
        assert_eq!(
            (s.status, s.status_message.as_deref()),
            (ServerStatus::Reachable, Some("fine"))
        );
        db.set_server_host_key(
            s.id,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5BBBB",
            &Context::internal(),
        )
        .await
        .unwrap();
        assert_eq!(db.servers().await.unwrap().len(), 1);

        let nested = RootDir::parse("/srv/p/inner").unwrap();
        assert!(matches!(
            db.create_root_path(s.id, &nested, 10, DeletePolicy::Retain)
                .await,
            Err(Error::Conflict {
                with: Clash::RootPathOverlap,
                ..
            })
        ));
        assert!(matches!(
            db.create_root_path(ServerId(999), &nested, 10, DeletePolicy::Retain)
                .await,
            Err(Error::UnknownServer(_))
        ));
        let other = db
            .create_root_path(
                s.id,
                &RootDir::parse("/srv/q").unwrap(),
                5,
                DeletePolicy::Purge,
            )
            .await
            .unwrap();
        assert_eq!((other.capacity_gb, other.allocated_gb), (5, 0));
        assert_eq!(db.root_paths().await.unwrap().len(), 2);

        assert!(matches!(
            db.create_user("u", "y", Role::User, 1).await,
            Err(Error::Conflict {
                with: Clash::Username,
                ..
            })
        ));
        let flag = |v| UserChange {
            is_admin: Some(v),
            ..UserChange::default()
        };
        assert_eq!(
            db.update_user("u", &flag(true)).await.unwrap().role,
            Role::Admin
        );
        assert_eq!(
            db.update_user("u", &flag(false)).await.unwrap().role,
            Role::User
        );
        let lock = UserChange {
            locked: Some(true),
            quota_gb: Some(7),
            ..UserChange::default()
        };
        let u = db.update_user("u", &lock).await.unwrap();
        assert!(u.locked && u.quota_gb == 7);
        let unlock = UserChange {
            locked: Some(false),
            ..UserChange::default()
        };
        let u = db.update_user("u", &unlock).await.unwrap();

        let later = chrono::Utc::now() + chrono::Duration::days(1);
        let t = db.create_token(&u, "ci", "h1", later).await.unwrap();
        assert!(matches!(
            db.create_token(&u, "ci", "h2", later).await,
            Err(Error::Conflict {
                with: Clash::TokenName,
                ..
            })
        ));
        assert_eq!(db.user_by_token("h1").await.unwrap().unwrap().id, u.id);
        assert_eq!(db.tokens_of(&u).await.unwrap().len(), 1);
        db.revoke_token(&u, t.id).await.unwrap();
        assert!(db.tokens_of(&u).await.unwrap().is_empty());
        assert!(db.verify_audit().await.unwrap().is_ok());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_reserve_refuse_replay_and_deletes_release() {
    on_both("creates", |db, owner, rp| async move {
        let a = create(&db, owner, rp, "a").await;
        let b = create(&db, owner, rp, "b").await;
        assert_eq!((a.export_id, b.export_id), (1, 2));
        assert_eq!(db.volume(a.id).await.unwrap().sub_path.as_str(), "a");
        // Inside, or around, a live volume: refused.
        for sub in ["a", "a/x"] {
            assert!(matches!(
                db.create_volume(&new_volume(owner, rp, sub)).await,
                Err(Error::Conflict {
                    with: Clash::SubPath,
                    ..
                })
            ));
        }
        let mut big = new_volume(owner, rp, "big");
        big.size_gb = 99;
        assert!(matches!(
            db.create_volume(&big).await,
            Err(Error::QuotaExceeded { .. })
        ));
        db.update_user(
            "u",
            &UserChange {
                quota_gb: Some(1000),
                ..UserChange::default()
            },
        )
        .await
        .unwrap();
        assert!(matches!(
            db.create_volume(&big).await,
            Err(Error::CapacityExceeded { .. })
        ));
        // An idempotency key replays its volume; used for another request, it is refused.
        let mut keyed = new_volume(owner, rp, "k");
        keyed.idempotency_key = Some("key-1".into());
        keyed.request_hash = Some("h".into());
        let first = create_keyed(&db, &keyed).await;
        match db.create_volume(&keyed).await.unwrap() {
            Created::Replayed(v) => assert_eq!(v.id, first),
            Created::New(_) => panic!("not replayed"),
        }
        keyed.request_hash = Some("other".into());
        keyed.sub_path = crate::spec::SubPath::parse("k2").unwrap();
        assert!(matches!(
            db.create_volume(&keyed).await,
            Err(Error::Conflict {
                with: Clash::IdempotencyKey,
                ..
            })
        ));
        let u = db.user_by_name("u").await.unwrap();
        assert_eq!(u.used_gb, 3);
        assert_eq!(db.root_path(rp).await.unwrap().allocated_gb, 3);
        // Listing: all, and a page.
        assert_eq!(db.volumes_for(&u, false).await.unwrap().len(), 3);
        let mut page = Vec::new();
        let limit = Page {
            after: a.id.0,
            limit: Some(1),
            hide_deleting: false,
        };
        db.each_volume_for(&u, false, limit, |v| page.push(v.id))
            .await
            .unwrap();
        assert_eq!(page, vec![b.id]);
        // A delete releases at once; the path is free again once the volume is deleted.
        let gone = db
            .delete_volume(a.id, &u, false, &Context::internal())
            .await
            .unwrap();
        assert_eq!(gone.state, VolumeState::Deleting);
        assert_eq!(db.user_by_name("u").await.unwrap().used_gb, 2);
        assert_eq!(db.root_path(rp).await.unwrap().allocated_gb, 2);
        db.record_outcomes(&[Outcome::Deleted {
            id: a.id,
            generation: gone.generation,
        }])
        .await
        .unwrap();
        assert_eq!(db.volume(a.id).await.unwrap().state, VolumeState::Deleted);
        let again = create(&db, owner, rp, "a").await;
        assert_eq!(again.export_id, 4, "export ids are not reused");
        let audit = db.verify_audit().await.unwrap().unwrap();
        // Three creates, a delete, a create again.
        assert_eq!(audit.records, 5, "{audit:?}");
    })
    .await;
}

async fn create_keyed(db: &Datastore, nv: &NewVolume) -> VolumeId {
    match db.create_volume(nv).await.unwrap() {
        Created::New(v) => v.id,
        Created::Replayed(_) => panic!("not a replay"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_never_overcommit() {
    on_both("storm", |db, owner, rp| async move {
        // 100 GB of quota and capacity, 150 requests of 1 GB at once.
        let reqs: Vec<NewVolume> = (0..150)
            .map(|k| new_volume(owner, rp, &format!("v{k}")))
            .collect();
        let results =
            futures_util::future::join_all(reqs.iter().map(|nv| db.create_volume(nv))).await;
        let made = results
            .iter()
            .filter(|r| matches!(r, Ok(Created::New(_))))
            .count();
        let refused = results
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    Err(Error::QuotaExceeded { .. } | Error::CapacityExceeded { .. })
                )
            })
            .count();
        assert_eq!((made, refused), (100, 50));
        assert_eq!(db.user_by_name("u").await.unwrap().used_gb, 100);
        assert_eq!(db.root_path(rp).await.unwrap().allocated_gb, 100);
        let mut ids: Vec<u32> = results
            .into_iter()
            .filter_map(|r| match r {
                Ok(Created::New(v)) => Some(v.export_id),
                _ => None,
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 100, "export ids are unique");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_clients_resizes_usage_and_snapshots() {
    on_both("outcomes", |db, owner, rp| async move {
        let u = db.user_by_name("u").await.unwrap();
        let a = create(&db, owner, rp, "a").await;
        let b = create(&db, owner, rp, "b").await;
        let clients = clients_to_json(&a.clients);
        db.record_outcomes(&[
            Outcome::Applied {
                id: a.id,
                generation: 1,
                clients: clients.clone(),
            },
            // Stale: not recorded.
            Outcome::Applied {
                id: b.id,
                generation: 2,
                clients: clients.clone(),
            },
            Outcome::Pending {
                id: b.id,
                generation: 1,
                message: "down".into(),
            },
        ])
        .await
        .unwrap();
        let a1 = db.volume(a.id).await.unwrap();
        assert_eq!(a1.state, VolumeState::Available);
        let b1 = db.volume(b.id).await.unwrap();
        assert_eq!(
            (b1.state, b1.last_error.as_deref()),
            (VolumeState::Creating, Some("down"))
        );
        assert_eq!(db.server_volumes(a.server_id).await.unwrap().len(), 2);
        // A change of clients is a new generation; a verdict on it is recorded.
        let changed = db
            .update_volume_clients(a.id, &u, &a.clients, &Context::internal())
            .await
            .unwrap();
        assert_eq!(
            (changed.state, changed.generation),
            (VolumeState::Updating, 2)
        );
        db.record_outcomes(&[Outcome::Rejected {
            id: a.id,
            generation: 2,
            message: "no".into(),
        }])
        .await
        .unwrap();
        let a2 = db.volume(a.id).await.unwrap();
        assert_eq!(
            (a2.state, a2.failed_generation),
            (VolumeState::Error, Some(2))
        );
        db.record_outcomes(&[Outcome::Failed {
            id: b.id,
            generation: 1,
            message: "x".into(),
        }])
        .await
        .unwrap();
        assert_eq!(db.volume(b.id).await.unwrap().state, VolumeState::Error);

        // Resize: grows within quota, refused past it.
        let grown = db
            .resize_volume(b.id, &u, 5, &Context::internal())
            .await
            .unwrap();
        assert_eq!(grown.size_gb, 5);
        assert!(matches!(
            db.resize_volume(b.id, &u, 500, &Context::internal()).await,
            Err(Error::QuotaExceeded { .. })
        ));
        assert_eq!(db.user_by_name("u").await.unwrap().used_gb, 6);
        // Usage samples: recorded twice at most once per instant, read back.
        let sample = VolumeUsage {
            id: b.id,
            used_bytes: 10,
            exclusive_bytes: Some(5),
        };
        let root = RootUsage {
            id: rp,
            size_bytes: 100,
            used_bytes: 10,
            free_bytes: 90,
        };
        db.record_usage(&[sample], &[root]).await.unwrap();
        db.record_usage(&[sample], &[root]).await.unwrap();
        let state = db.size_state(b.id).await.unwrap();
        assert_eq!(state.latest.map(|l| l.used_bytes), Some(10));
        assert_eq!(db.latest_root_usage().await.unwrap()[&rp].free_bytes, 90);

        // Snapshots of a btrfs volume: charged by their exclusive size, rounded up.
        let s = db.server_by_name("s1").await.unwrap();
        let brp = db
            .create_root_path_with(
                s.id,
                &RootDir::parse("/srv/b").unwrap(),
                50,
                DeletePolicy::Retain,
                &crate::spec::ExportPolicy::default(),
                Layout::Btrfs,
            )
            .await
            .unwrap();
        let v = create(&db, owner, brp.id, "v").await;
        db.record_outcomes(&[Outcome::Applied {
            id: v.id,
            generation: 1,
            clients,
        }])
        .await
        .unwrap();
        let name = SnapshotName::parse("s1").unwrap();
        let snap = db
            .create_snapshot(v.id, &u, &name, 2, &Context::internal())
            .await
            .unwrap();
        assert!(matches!(
            db.create_snapshot(v.id, &u, &name, 2, &Context::internal())
                .await,
            Err(Error::Conflict {
                with: Clash::SnapshotName,
                ..
            })
        ));
        assert_eq!(db.server_snapshot_tasks(s.id, true).await.unwrap().len(), 1);
        db.record_snapshot_outcomes(&[SnapshotOutcome::Available {
            id: snap.id,
            exclusive_bytes: Some(1_500_000_000),
        }])
        .await
        .unwrap();
        assert_eq!(db.user_by_name("u").await.unwrap().used_gb, 7 + 2);
        assert!(matches!(
            db.delete_volume(v.id, &u, false, &Context::internal())
                .await,
            Err(Error::Conflict {
                with: Clash::Snapshots,
                ..
            })
        ));
        db.delete_snapshot(v.id, snap.id, &u, &Context::internal())
            .await
            .unwrap();
        db.record_snapshot_outcomes(&[SnapshotOutcome::Deleted { id: snap.id }])
            .await
            .unwrap();
        assert_eq!(db.user_by_name("u").await.unwrap().used_gb, 7);
        assert!(db.snapshots_for(v.id, &u).await.unwrap().is_empty());
        // Snapshots of one volume asked for at once (on PostgreSQL each on its own
        // connection, as from several nodes or admins): the count limit holds. Without the volume's row
        // lock, all of them passed the count check before any had inserted its row.
        let w = create(&db, owner, brp.id, "w").await;
        db.record_outcomes(&[Outcome::Applied {
            id: w.id,
            generation: 1,
            clients: clients_to_json(&w.clients),
        }])
        .await
        .unwrap();
        let names: Vec<SnapshotName> = (0..8)
            .map(|k| SnapshotName::parse(&format!("r{k}")).unwrap())
            .collect();
        // Each by an admin of its own: one account's changes already take turns on its row.
        let mut admins = Vec::new();
        for k in 0..names.len() {
            admins.push(
                db.create_user(&format!("adm{k}"), "x", Role::Admin, 0)
                    .await
                    .unwrap(),
            );
        }
        let ctx = Context::internal();
        let raced = futures_util::future::join_all(
            names
                .iter()
                .zip(&admins)
                .map(|(n, a)| db.create_snapshot(w.id, a, n, 2, &ctx)),
        )
        .await;
        let made = raced.iter().filter(|r| r.is_ok()).count();
        assert_eq!(made, 2, "{raced:?}");
        assert!(
            raced.iter().all(|r| r.is_ok()
                || matches!(
                    r,
                    Err(Error::Conflict {
                        with: Clash::SnapshotCount,
                        ..
                    })
                )),
            "{raced:?}"
        );
        assert_eq!(db.snapshots_for(w.id, &u).await.unwrap().len(), 2);
        let records = db.audit_records(Some(v.id.0), 0, 100).await.unwrap();
        assert!(records.len() >= 3, "{records:?}");
        assert!(db.verify_audit().await.unwrap().is_ok());
    })
    .await;
}

/// Several nodes on one PostgreSQL database (each its own `Datastore`, its own pool): a storm
/// of creates spread over them admits exactly the quota, gives each export id once, and a
/// retry of one idempotency key sent to every node at once makes one volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_a_postgres_database_never_overcommit_nor_double_a_key() {
    let Some(url) = pg_database("nodes").await else {
        return;
    };
    let first = Datastore::open_url(&url).await.unwrap();
    let (owner, rp) = populate(&first).await;
    let mut nodes = vec![first];
    for _ in 0..2 {
        nodes.push(Datastore::open_url(&url).await.unwrap());
    }
    let reqs: Vec<NewVolume> = (0..150)
        .map(|k| new_volume(owner, rp, &format!("v{k}")))
        .collect();
    let results = futures_util::future::join_all(
        reqs.iter()
            .enumerate()
            .map(|(k, nv)| nodes[k % nodes.len()].create_volume(nv)),
    )
    .await;
    let made = results
        .iter()
        .filter(|r| matches!(r, Ok(Created::New(_))))
        .count();
    let error = results.iter().find_map(|r| r.as_ref().err());
    assert_eq!(made, 100, "{error:?}");
    for node in &nodes {
        assert_eq!(node.user_by_name("u").await.unwrap().used_gb, 100);
    }
    let mut ids: Vec<u32> = results
        .into_iter()
        .filter_map(|r| r.ok())
        .map(|c| match c {
            Created::New(v) | Created::Replayed(v) => v.export_id,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 100);

    // One key, the same request, to every node at once.
    nodes[0]
        .update_user(
            "u",
            &UserChange {
                quota_gb: Some(200),
                ..UserChange::default()
            },
        )
        .await
        .unwrap();
    nodes[0]
        .create_root_path(
            nodes[0].server_by_name("s1").await.unwrap().id,
            &RootDir::parse("/srv/k").unwrap(),
            10,
            DeletePolicy::Retain,
        )
        .await
        .unwrap();
    let krp = nodes[0].root_paths().await.unwrap()[1].id;
    let mut keyed = new_volume(owner, krp, "k");
    keyed.idempotency_key = Some("once".into());
    keyed.request_hash = Some("h".into());
    let results =
        futures_util::future::join_all(nodes.iter().map(|n| n.create_volume(&keyed))).await;
    let ids: Vec<(bool, VolumeId)> = results
        .into_iter()
        .map(|r| match r.unwrap() {
            Created::New(v) => (true, v.id),
            Created::Replayed(v) => (false, v.id),
        })
        .collect();
    assert_eq!(ids.iter().filter(|(new, _)| *new).count(), 1, "{ids:?}");
    assert!(ids.iter().all(|(_, id)| *id == ids[0].1), "{ids:?}");
    assert_eq!(nodes[1].root_path(krp).await.unwrap().allocated_gb, 1);
    assert!(nodes[2].verify_audit().await.unwrap().is_ok());
}

/// A create on PostgreSQL reads the root path under its row lock: while another transaction
/// holds that row, the create waits, and it is judged on what that transaction committed
/// (capacity taken away: a capacity refusal, not an internal error from a reservation that
/// fails later, which is what it gets without the lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_create_waits_for_the_root_path_row_and_judges_what_was_committed() {
    use sqlx::Connection as _;
    let Some(url) = pg_database("locks").await else {
        return;
    };
    let db = Datastore::open_url(&url).await.unwrap();
    let (owner, rp) = populate(&db).await;
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT id FROM root_paths WHERE id = $1 FOR UPDATE")
        .bind(rp)
        .execute(&mut holder)
        .await
        .unwrap();
    let mut nv = new_volume(owner, rp, "late");
    nv.size_gb = 2;
    let creating = tokio::spawn({
        let db = db.clone();
        async move { db.create_volume(&nv).await }
    });
    // Until the create's transaction waits for a lock (a condition, polled).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        assert!(
            !creating.is_finished(),
            "the create did not wait for the root path's row"
        );
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut holder)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no create waited for a lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    sqlx::query("UPDATE root_paths SET capacity_gb = 1 WHERE id = $1")
        .bind(rp)
        .execute(&mut holder)
        .await
        .unwrap();
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    let refused = creating.await.unwrap();
    assert!(
        matches!(refused, Err(Error::CapacityExceeded { .. })),
        "{:?}",
        refused.err()
    );
    assert_eq!(db.root_path(rp).await.unwrap().allocated_gb, 0);
}

/// The create lookup's overlap check seeks an index on PostgreSQL too: its byte-order range
/// (`sub_path COLLATE "C"`) cannot use `volumes_live_path` in the database's collation, and
/// without `volumes_live_path_c` every create read every live volume of its root path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_create_lookup_seeks_the_overlap_range() {
    use sqlx::Connection as _;
    let Some(url) = pg_database("lookup_plan").await else {
        return;
    };
    let db = Datastore::open_url(&url).await.unwrap();
    let (owner, rp) = populate(&db).await;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    // A root path with as many live volumes as a busy one, and the planner's statistics.
    sqlx::query(
        "INSERT INTO volumes (owner_id, root_path_id, server_id, sub_path, size_gb, clients, \
         mode, uid, gid, state, created_at, updated_at) \
         SELECT $1, rp.id, rp.server_id, 'v' || i, 1, '[]', '0755', 0, 0, 'creating', 'x', 'x' \
         FROM root_paths rp, generate_series(1, 2000) AS i WHERE rp.id = $2",
    )
    .bind(owner)
    .bind(rp)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("ANALYZE volumes")
        .execute(&mut conn)
        .await
        .unwrap();
    let sql = format!(
        "EXPLAIN {}",
        super::sql::pg_sql(&super::create::lookup_sql(2, " COLLATE \"C\""))
    );
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(owner)
        .bind(rp)
        .bind(Some("key"))
        .bind("v1/")
        .bind("v10")
        .bind("v")
        .bind("v/x")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let range = |l: &&String| l.contains("sub_path") && l.contains(">=");
    assert!(
        plan.iter()
            .filter(range)
            .all(|l| l.trim_start().starts_with("Index Cond:")),
        "the overlap range is filtered, not sought: {plan:#?}"
    );
    assert!(plan.iter().any(|l| range(&l)), "{plan:#?}");
    assert!(!plan.iter().any(|l| l.contains("Seq Scan")), "{plan:#?}");
}

/// Leases on both databases (their clock expression differs): one holder at a time, renewals
/// keep the token, an expired or released lease is taken with a greater one, racing takers of
/// a free lease get one winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_have_one_holder_and_tokens_only_grow() {
    on_both("leases", |db, _owner, _rp| async move {
        use std::time::Duration;
        let long = Duration::from_secs(60);
        let s = db.server_by_name("s1").await.unwrap().id;
        assert_eq!(db.lease_holder(s).await.unwrap(), None);
        let takers: Vec<_> = (0..8)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move { db.acquire_lease(s, &format!("n{i}"), long, None).await })
            })
            .collect();
        let mut won = Vec::new();
        for (i, t) in takers.into_iter().enumerate() {
            if let Some(token) = t.await.unwrap().unwrap() {
                won.push((i, token));
            }
        }
        assert_eq!(won.len(), 1, "{won:?}");
        let (w, token) = won[0];
        assert_eq!(token, 1);
        let me = format!("n{w}");
        let other = format!("n{}", (w + 1) % 8);
        assert_eq!(db.acquire_lease(s, &me, long, None).await.unwrap(), Some(1));
        assert!(db.renew_lease(s, &me, 1, long).await.unwrap());
        assert!(!db.renew_lease(s, &other, 1, long).await.unwrap());
        let h = db.lease_holder(s).await.unwrap().unwrap();
        assert_eq!((h.holder.as_str(), h.token), (me.as_str(), 1));
        assert!(h.remaining_ms > 50_000, "{h:?}");
        // Released: the next taker goes on from the token; the old holder cannot renew.
        db.release_lease(s, &me, 1).await.unwrap();
        assert_eq!(
            db.acquire_lease(s, &other, long, None).await.unwrap(),
            Some(2)
        );
        assert!(!db.renew_lease(s, &me, 1, long).await.unwrap());
        // A short lease runs out by the database's clock and is taken with token 3.
        db.release_lease(s, &other, 2).await.unwrap();
        let short = Duration::from_millis(50);
        assert_eq!(
            db.acquire_lease(s, &me, short, None).await.unwrap(),
            Some(3)
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let taken = loop {
            if let Some(t) = db.acquire_lease(s, &other, long, None).await.unwrap() {
                break t;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the lease never expired"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(taken, 4);
    })
    .await;
}

/// Changes across nodes (`notify`): SQLite has no listener; on PostgreSQL a second node
/// hears, at commit, each change another node makes, as `want` (desired state: a create, a
/// PATCH of clients, a delete) or `done` (an outcome recorded), and nothing for a statement
/// that changed no row (a stale outcome). When its connection is killed, it reports a gap
/// and hears later changes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_nodes_hear_changes_at_commit_and_after_losing_the_connection() {
    use notify::Change;
    let (_dir, sqlite, _, _) = fixture().await;
    assert!(sqlite.changes().is_none());
    let Some(url) = pg_database("notify").await else {
        return;
    };
    let writer = Datastore::open_url(&url).await.unwrap();
    let (owner, rp) = populate(&writer).await;
    let u = writer.user_by_name("u").await.unwrap();
    let listener = Datastore::open_url(&url).await.unwrap();
    let mut changes = listener.changes().unwrap();
    assert_eq!(
        next(&mut changes).await,
        Change::Gap,
        "listening starts with a gap"
    );

    let a = create(&writer, owner, rp, "a").await;
    let s = a.server_id;
    assert_eq!(next(&mut changes).await, Change::Wanted(s));
    let applied = |generation| Outcome::Applied {
        id: a.id,
        generation,
        clients: clients_to_json(&a.clients),
    };
    writer.record_outcomes(&[applied(1)]).await.unwrap();
    assert_eq!(next(&mut changes).await, Change::Settled(s));
    // A stale outcome changes no row: no notification, so the next one is the PATCH's.
    writer.record_outcomes(&[applied(5)]).await.unwrap();
    writer
        .update_volume_clients(a.id, &u, &a.clients, &Context::internal())
        .await
        .unwrap();
    assert_eq!(next(&mut changes).await, Change::Wanted(s));
    writer.record_outcomes(&[applied(2)]).await.unwrap();
    assert_eq!(next(&mut changes).await, Change::Settled(s));

    // The listener's connection is killed (as by a database restart): a gap, then changes
    // are heard again.
    let Db::Postgres { pool } = &writer.db else {
        unreachable!()
    };
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(killed, [true], "one listening session");
    assert_eq!(next(&mut changes).await, Change::Gap);
    writer
        .delete_volume(a.id, &u, false, &Context::internal())
        .await
        .unwrap();
    assert_eq!(next(&mut changes).await, Change::Wanted(s));
}

/// The next change `changes` reports, within 10 s.
async fn next(changes: &mut tokio::sync::mpsc::Receiver<notify::Change>) -> notify::Change {
    tokio::time::timeout(std::time::Duration::from_secs(10), changes.recv())
        .await
        .expect("a change within 10 s")
        .expect("the listener runs")
}

/// A name with a NUL character (a `%00` in a URL) is looked up as any other name that is not
/// there: PostgreSQL refuses to take such text at all, which must reach the caller as its
/// request's fault (4xx), never as the service's (500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_with_a_nul_character_is_the_request_s_fault() {
    on_both("nul_text", |db, _owner, _rp| async move {
        let client_error = |e: &Error| matches!(e, Error::NotFound { .. } | Error::Invalid { .. });
        let e = db.user_by_name("a\0b").await.unwrap_err();
        assert!(client_error(&e), "{e:?}");
        let e = db.server_by_name("s1\0").await.unwrap_err();
        assert!(client_error(&e), "{e:?}");
    })
    .await;
}
