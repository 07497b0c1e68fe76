//! Wake-ups across nodes on PostgreSQL (issue 13): a change sent to any node wakes the
//! reconciler of the node holding the server's lease at once (`NOTIFY` at commit, one listener
//! per node), and a request waiting for it (`?wait=true`, hootie's create) is answered by the
//! node it reached. The periodic resync is set to ten minutes, so nothing but the notification
//! can settle a change within these tests' waits: on a build without it, a create waiting on a
//! node that does not hold the lease answers 202 when its wait runs out.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// No periodic resync within a test: only a wake-up can start a pass.
const NODE_ENVS: &[(&str, &str)] = &[("NFSPROV_RESYNC_SECS", "600")];

/// The `?wait=true` bound of these requests: well under the resync, well over a pass.
const WAIT_SECS: u64 = 20;

/// The node (index) holding the lease of server 1, once one does.
async fn lease_holder(env: &Env) -> usize {
    let pg = env.pg.as_ref().expect("a PostgreSQL Env");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let holder = pg
            .query("SELECT holder FROM server_leases WHERE server_id = 1")
            .unwrap();
        let holder = holder.trim();
        // `host:pidns:pid:random` (`datastore::new_node_id`).
        let pid = holder.split(':').nth(2).and_then(|p| p.parse::<u32>().ok());
        if let Some(i) = (0..env.nodes.len()).find(|&i| pid.is_some() && env.node_pid(i) == pid) {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "no node holds server 1's lease: {holder:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A create of `sub` with `?wait=true` on node `i`: its status, body and how long it took.
async fn create_waiting(env: &Env, i: usize, sub: &str) -> (StatusCode, Value, Duration) {
    create_waiting_for(env, i, sub, WAIT_SECS).await
}

/// [`create_waiting`] with a `timeout` of `wait_secs`.
async fn create_waiting_for(
    env: &Env,
    i: usize,
    sub: &str,
    wait_secs: u64,
) -> (StatusCode, Value, Duration) {
    let began = Instant::now();
    let (s, v) = env
        .req_on(
            i,
            Method::POST,
            Some(ALICE),
            &format!("/api/v1/volumes?wait=true&timeout={wait_secs}"),
            Some(json!({"root_path_id": 1, "sub_path": sub, "size_gb": 1, "clients": [{"host": "127.0.0.1"}]})),
        )
        .await;
    (s, v, began.elapsed())
}

/// The options `srv1` exports `sub` with (one entry per export).
fn exported(env: &Env, sub: &str) -> Vec<String> {
    let etab = env.server("srv1").etab().unwrap();
    etab_entries(&etab, &format!("/srv/nfsprov/pool1/{sub}"))
}

/// Create, PATCH and DELETE with `?wait=true`, and hootie's create, each sent to a node that
/// does not hold the server's lease (three nodes: each request to another one), are answered
/// with their settled state (201/200) by that node, and the server has what they asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_on_nodes_without_the_lease_are_answered_when_the_holder_applies() {
    let env = Env::start_nodes(1, 3, 100, 50, Database::Postgres, NODE_ENVS).await;
    let holder = lease_holder(&env).await;
    let others: Vec<usize> = (0..3).filter(|&i| i != holder).collect();

    let (s, v, took) = create_waiting(&env, others[0], "made-elsewhere").await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "after {took:?} on node {}: {v}",
        others[0]
    );
    assert_eq!(v["state"], "available", "{v}");
    assert_eq!(exported(&env, "made-elsewhere").len(), 1);
    let id = v["id"].as_i64().unwrap();
    eprintln!("cross-node create ?wait=true answered in {took:?}");

    let began = Instant::now();
    let (s, v) = env
        .req_on(
            others[1],
            Method::PATCH,
            Some(ALICE),
            &format!("/api/v1/volumes/{id}?wait=true&timeout={WAIT_SECS}"),
            Some(json!({"clients": [{"host": "127.0.0.2", "options": ["ro"]}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "after {:?}: {v}", began.elapsed());
    assert_eq!(v["state"], "available", "{v}");
    let e = exported(&env, "made-elsewhere");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("127.0.0.2(ro,"), "{e:?}");
    eprintln!(
        "cross-node PATCH ?wait=true answered in {:?}",
        began.elapsed()
    );

    let began = Instant::now();
    let (s, v) = env
        .req_on(
            others[0],
            Method::DELETE,
            Some(ALICE),
            &format!("/api/v1/volumes/{id}?wait=true&timeout={WAIT_SECS}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "after {:?}: {v}", began.elapsed());
    assert_eq!(v["state"], "deleted", "{v}");
    assert!(exported(&env, "made-elsewhere").is_empty());
    eprintln!(
        "cross-node DELETE ?wait=true answered in {:?}",
        began.elapsed()
    );

    // hootie waits 5 s for the server, then answers 202: only a prompt wake-up makes it 201.
    let began = Instant::now();
    let (s, v) = env
        .req_on(
            others[1],
            Method::POST,
            Some(ALICE),
            "/api/v1.0/volumes/",
            Some(json!({"options": "rw,sync", "root_path": 1, "sub_path": "hootie-elsewhere", "size_GB": 1, "allowed_hosts": "127.0.0.1"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "after {:?}: {v}", began.elapsed());
    assert_eq!(v["error"], "None", "{v}");
    assert_eq!(exported(&env, "hootie-elsewhere").len(), 1);
    eprintln!("cross-node hootie create answered in {:?}", began.elapsed());

    // Nobody else took the lease meanwhile: the holder did the work.
    assert_eq!(lease_holder(&env).await, holder);
}

/// PostgreSQL restarted under two nodes: both listeners connect again (their logs say so), and
/// a create waiting on the node without the lease is still answered with the volume available
/// (only a notification can wake the holder within the wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_survive_a_postgresql_restart() {
    let mut env = Env::start_nodes(1, 2, 100, 50, Database::Postgres, NODE_ENVS).await;
    let holder = lease_holder(&env).await;
    let other = 1 - holder;
    let (s, v, _) = create_waiting(&env, other, "before-restart").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    env.pg
        .as_mut()
        .unwrap()
        .restart()
        .expect("PostgreSQL restarts");

    // Until the nodes' pools have connected again a request may fail (cleanly): wait until
    // both nodes read the database again, then create once.
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in [holder, other] {
        loop {
            let (s, v) = env
                .req_on(i, Method::GET, Some(ALICE), "/api/v1/volumes", None)
                .await;
            if s == StatusCode::OK {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i}: still {s} after the restart: {v}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (s, v, took) = create_waiting(&env, other, "after-restart").await;
    assert_eq!(s, StatusCode::CREATED, "after {took:?}: {v}");
    assert_eq!(v["state"], "available", "{v}");
    assert_eq!(exported(&env, "after-restart").len(), 1);
    assert_eq!(lease_holder(&env).await, holder);
    for i in [holder, other] {
        let logs = env.node_log(i);
        assert!(
            logs.contains("change listener connected again"),
            "node {i}'s listener connected again:\n{logs}"
        );
    }
}

/// The fallback where no notification comes: two nodes on one SQLite file (no listener), the
/// resync at 2 s. A create waiting (8 s) on the node without the lease is applied by the
/// holder's next resync, and the waiting node, which runs no pass itself and so hears of none,
/// still answers 201 because it reads the volume again every second, not only when woken.
/// (Without that re-read it answered 202 after 8 s: measured on the build before it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notifications_a_wait_reads_again_and_sees_the_resync() {
    let env = Env::start_nodes(
        1,
        2,
        100,
        50,
        Database::Sqlite,
        &[("NFSPROV_RESYNC_SECS", "2")],
    )
    .await;
    let holder = lease_holder_sqlite(&env).await;
    let (s, v, took) = create_waiting_for(&env, 1 - holder, "by-resync", 8).await;
    assert_eq!(s, StatusCode::CREATED, "after {took:?}: {v}");
    assert_eq!(v["state"], "available", "{v}");
    assert_eq!(exported(&env, "by-resync").len(), 1);
    eprintln!("cross-node create ?wait=true on SQLite answered in {took:?}");
}

/// The node holding server 1's lease on SQLite.
async fn lease_holder_sqlite(env: &Env) -> usize {
    let db = env.data_dir().join("nfsprov.db");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        let holder: String = conn
            .query_row(
                "SELECT holder FROM server_leases WHERE server_id = 1",
                [],
                |r| r.get(0),
            )
            .unwrap_or_default();
        let pid = holder.split(':').nth(2).and_then(|p| p.parse::<u32>().ok());
        if let Some(i) = (0..env.nodes.len()).find(|&i| pid.is_some() && env.node_pid(i) == pid) {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "no node holds server 1's lease: {holder:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
