//! `nfsprov db migrate-to` (issue 13): a node on SQLite with real servers, users, volumes in
//! several states, a snapshot, an API token, audit records and an idempotency key is stopped,
//! its database copied into a real PostgreSQL (the test bed's), and served from there: the
//! same state is listed, the audit chain verifies with the same head, the servers' managed
//! files are left as they were by the first pass (nothing re-created), the lease tokens go
//! on from where they were (the servers' fences admit the new node), and new rows get fresh
//! ids. Refusals: a running node, a target that holds data (named), a wrong password or port
//! (named causes, never the password).

mod common;

use std::time::{Duration, Instant};

use common::btrfs::*;
use common::*;
use nfsprov_testbed::postgres::Postgres;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A create of alice's with an idempotency key, not waited for: status, replay header, body.
async fn keyed_create(env: &Env, key: &str) -> (StatusCode, Option<String>, Value) {
    let r = env
        .http
        .post(format!("{}/api/v1/volumes", env.base()))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .header("idempotency-key", key)
        .json(
            &json!({"root_path_id": 1, "sub_path": "keyed", "size_gb": 1,
                      "clients": [{"host": "127.0.0.1", "options": "rw"}]}),
        )
        .send()
        .await
        .unwrap();
    let status = r.status();
    let replayed = r
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_string());
    (status, replayed, r.json().await.unwrap())
}

/// The snapshots of volume `vol` (none without btrfs), without what is measured again on the
/// servers' schedule (their exclusive size).
async fn snapshot_list(env: &Env, vol: Option<i64>) -> Value {
    let Some(vol) = vol else { return Value::Null };
    let (s, list) = env
        .req(
            Method::GET,
            Some(ALICE),
            &format!("/api/v1/volumes/{vol}/snapshots"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| json!([s["id"], s["name"], s["state"], s["created_at"]]))
        .collect()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Each server's `last_reconciled_at`, by name.
async fn reconciled_at(env: &Env) -> Vec<(String, Value)> {
    let (s, servers) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/servers", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{servers}");
    servers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["last_reconciled_at"].clone(),
            )
        })
        .collect()
}

/// The fencing token a server stored last (`backend::fence`).
fn fence_token(env: &Env, server: &str) -> i64 {
    let f = env.server(server).exports_d().join(".nfsprov.fence");
    std::fs::read_to_string(&f)
        .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_node_moves_to_postgres_and_serves_the_same_state() {
    let mut env = Env::start_nodes(2, 1, 100, 50, Database::Sqlite, &[]).await;
    let rw = json!([{"host": "127.0.0.1", "options": "rw"}]);

    // Volumes in several states: available, deleted, changed (generation 2) on the second
    // server, one made with an idempotency key.
    let kept = env.create_available("kept", rw.clone()).await;
    let gone = env.create_available("gone", rw.clone()).await;
    let (s, v) = env.delete_wait(ALICE, gone).await;
    assert!(s.is_success(), "{v}");
    let (s, v) = env.create(BOB, 2, "bobs", 2, rw.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let bobs = v["id"].as_i64().unwrap();
    let (s, v) = env
        .patch_clients(BOB, bobs, json!([{"host": "127.0.0.2", "options": "ro"}]))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, replayed, v) = keyed_create(&env, "migrate-key-1").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(replayed, None);
    let keyed = v["id"].as_i64().unwrap();
    env.wait_volume(keyed, Duration::from_secs(30), |v| {
        v["state"] == "available"
    })
    .await;
    // An API token of alice's (only its hash is stored: it works after the move or not at all).
    let (s, token) = env
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1/tokens",
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{token}");
    let secret = token["secret"].as_str().unwrap().to_string();
    // A snapshot, where this machine has btrfs.
    let mut _btrfs = None;
    let mut snapshot_of = None;
    if !skip_without_btrfs() {
        _btrfs = Some(
            env.server("srv1")
                .mount_btrfs("btrfs", 4 << 30, true)
                .unwrap(),
        );
        let (s, rp) = add_root_path(&env, BTRFS_ROOT, "btrfs").await;
        assert_eq!(s, StatusCode::CREATED, "{rp}");
        let (s, v) = create_1gb(&env, rp["id"].as_i64().unwrap(), "snapped").await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let vol = v["id"].as_i64().unwrap();
        let (s, snap) = env
            .req(
                Method::POST,
                Some(ALICE),
                &format!("/api/v1/volumes/{vol}/snapshots?wait=true"),
                Some(json!({"name": "before-move"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{snap}");
        snapshot_of = Some(vol);
    }
    let volumes_before = env.all_volumes().await;
    let lists_before = admin_lists(&env).await;
    let snapshots_before = snapshot_list(&env, snapshot_of).await;
    let audit_before = env.cli_ok(&["audit", "verify"]);
    assert!(
        audit_before.starts_with("audit trail intact"),
        "{audit_before}"
    );
    let managed_before: Vec<String> = ["srv1", "srv2"]
        .iter()
        .map(|s| env.managed_file(s))
        .collect();
    let fences_before: Vec<i64> = ["srv1", "srv2"]
        .iter()
        .map(|s| fence_token(&env, s))
        .collect();
    let reconciled_before = reconciled_at(&env).await;
    let max_volume = volumes_before
        .iter()
        .map(|v| v["id"].as_i64().unwrap())
        .max()
        .unwrap();

    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .unwrap()
        .expect("PostgreSQL starts");
    let url = pg.url();
    let password = url
        .strip_prefix("postgres://")
        .and_then(|r| r.split_once('@'))
        .and_then(|(user, _)| user.split_once(':'))
        .map(|(_, pw)| pw.to_string())
        .expect("the test bed's URL has a password");

    // Refused while the node runs (it holds the servers' leases): it would go on writing to
    // SQLite after the copy.
    let out = env.cli(&["db", "migrate-to", &url]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("a node is running on this database"),
        "{}",
        stderr(&out)
    );

    env.kill_node(0);

    // A wrong password and a wrong port: the cause named, the password never shown.
    let wrong = url.replace(&password, "Wrong-Secret-77");
    let out = env.cli(&["db", "migrate-to", &wrong]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(
        !err.contains("Wrong-Secret-77") && !err.contains(&password),
        "{err}"
    );
    let closed = url.replace(&format!(":{}/", pg.port), ":1/");
    let out = env.cli(&["db", "migrate-to", &closed]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("Connection refused"), "{err}");
    assert!(!err.contains(&password), "{err}");

    // The copy, with the URL from the environment (kept off the process list).
    let mut cmd = std::process::Command::new(nfsprov_bin());
    let out = cmd
        .args(["db", "migrate-to"])
        .env("NFSPROV_DATA_DIR", env.data_dir())
        .env("NFSPROV_LOG", "warn")
        .env(DATABASE_URL_ENV, &url)
        .output()
        .unwrap();
    let (printed, err) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{err}");
    assert!(
        !printed.contains(&password) && !err.contains(&password),
        "{printed}{err}"
    );
    let volumes_line = printed
        .lines()
        .find(|l| l.trim_start().starts_with("volumes "))
        .unwrap_or_else(|| panic!("no volumes row: {printed}"));
    assert!(
        volumes_line.contains(&format!(" {} rows", volumes_before.len())),
        "{printed}"
    );

    // A second copy into the same database is refused, naming the table.
    let out = env.cli(&["db", "migrate-to", &url]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("already holds data (table servers has rows)"),
        "{err}"
    );

    // From here on every command and the node use PostgreSQL.
    env.database_url = Some(url.clone());
    let audit_after = env.cli_ok(&["audit", "verify"]);
    assert_eq!(audit_after, audit_before, "same records, same newest hash");

    env.start_node(0, &[(DATABASE_URL_ENV, &url)]).await;
    // The first pass on each server from the new node.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = reconciled_at(&env).await;
        let all_new = now.iter().all(|(name, at)| {
            !at.is_null()
                && reconciled_before
                    .iter()
                    .any(|(n, before)| n == name && before != at)
        });
        if all_new {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new pass on every server: {now:?} (before: {reconciled_before:?})\n{}",
            env.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.wait_servers_reachable().await;
    for (i, s) in ["srv1", "srv2"].iter().enumerate() {
        assert_eq!(env.managed_file(s), managed_before[i], "{s}'s managed file");
        // The leases' tokens went on from SQLite's: the server's fence admitted the new node.
        assert!(
            fence_token(&env, s) > fences_before[i],
            "{s}: fence {} after, {} before",
            fence_token(&env, s),
            fences_before[i]
        );
    }
    assert_eq!(env.all_volumes().await, volumes_before);
    assert_eq!(admin_lists(&env).await, lists_before);
    assert_eq!(snapshot_list(&env, snapshot_of).await, snapshots_before);
    assert_eq!(env.volume(kept).await["state"], "available");

    // The idempotency key replays the same volume.
    let (s, replayed, v) = keyed_create(&env, "migrate-key-1").await;
    assert!(s.is_success(), "{v}");
    assert_eq!(replayed.as_deref(), Some("true"), "{v}");
    assert_eq!(v["id"], keyed, "{v}");
    // The token still signs alice in.
    let r = env
        .http
        .get(format!("{}/api/v1/volumes", env.base()))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // New rows continue after the copied ids, and the chain goes on.
    let fresh = env.create_available("fresh", rw).await;
    assert_eq!(fresh, max_volume + 1);
    let audit_end = env.cli_ok(&["audit", "verify"]);
    assert!(audit_end.starts_with("audit trail intact"), "{audit_end}");
    assert_ne!(audit_end, audit_before);
    env.kill_node(0);
    drop(pg);
}
