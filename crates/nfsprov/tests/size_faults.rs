//! Faults and drift of sizes (issue 12), on real btrfs file systems in the test bed server's
//! mount namespace: kill -9 between the server's change and the database's record in a resize
//! (`after-resize`) and in a restore (`after-restore`), then a restart that converges; a qgroup
//! limit changed or removed by hand, put back on the next full pass and audited; a subvolume
//! removed or replaced by hand, reported on the volume and never made again; quotas disabled on
//! a root path's file system, reported naming the root path with no spill to other root paths,
//! and limits back once quotas are enabled again.

mod common;

use std::time::{Duration, Instant};

use common::btrfs::*;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const GB: &str = "1000000000";

/// Poll until the qgroup limit of `path` reads `want` (bounded).
async fn wait_limit(srv: &TestbedServer, path: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = qgroup_limit(srv, path);
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the limit of {path} stays {now}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait for the killed `nfsprov serve` to exit on its fault point `name` (bounded).
async fn wait_fault(env: &mut Env, name: &str) {
    let mut child = env.serve.take().expect("serving");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the fault point {name} never fired: {}",
            env.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    assert!(env.log().contains(&format!("NFSPROV_FAULT={name}")));
}

/// One server, alice's quota `quota_gb`, full passes every second, a btrfs root path of 3 GB
/// on a fresh file system: the environment, the mount and the root path's id.
async fn start_btrfs(quota_gb: i64) -> (Env, nfsprov_testbed::btrfs::BtrfsMount, i64) {
    let mut env = Env::start(1, 100, quota_gb).await;
    env.restart_with(&[("NFSPROV_RESYNC_SECS", "1")]).await;
    let fs = env
        .server("srv1")
        .mount_btrfs("btrfs", 4 << 30, true)
        .unwrap();
    let (s, rp) = add_root_path(&env, BTRFS_ROOT, "btrfs").await;
    assert_eq!(s, StatusCode::CREATED, "{rp}");
    (env, fs, rp["id"].as_i64().unwrap())
}

async fn books(env: &Env, rp_id: i64) -> (i64, i64) {
    let used = env.user_row("alice").await["used_gb"].as_i64().unwrap();
    let (_, rps) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/rootpaths", None)
        .await;
    let rp = rps
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == rp_id)
        .cloned()
        .unwrap();
    (used, rp["allocated_gb"].as_i64().unwrap())
}

fn says(v: &Value, field: &str, words: &str) -> bool {
    v[field].as_str().is_some_and(|m| m.contains(words))
}

/// The volume's history: (action, outcome, before, after) of each record of a change.
async fn history(env: &Env, id: i64) -> Vec<(String, String, Value, Value)> {
    let (s, h) = env
        .req(
            Method::GET,
            Some(ADMIN),
            &format!("/api/v1/volumes/{id}/history"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{h}");
    h.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default().to_string(),
                r["outcome"].as_str().unwrap_or_default().to_string(),
                r["before"].clone(),
                r["after"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_after_the_server_took_a_resize_converges_on_restart() {
    if skip_without_btrfs() {
        return;
    }
    let (mut env, fs, rp_id) = start_btrfs(5).await;
    let srv = env.server("srv1").clone();
    let (s, v) = create_1gb(&env, rp_id, "data").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_i64().unwrap();
    let vol = format!("{BTRFS_ROOT}/data");
    assert_eq!(books(&env, rp_id).await, (1, 1));

    // kill -9 right after the server set the new limit, before the database recorded it.
    env.restart_with(&[
        ("NFSPROV_FAULT", "after-resize"),
        ("NFSPROV_RESYNC_SECS", "1"),
    ])
    .await;
    let (s, r) = env
        .req(
            Method::PATCH,
            Some(ALICE),
            &format!("/api/v1/volumes/{id}"),
            Some(json!({"size_gb": 2})),
        )
        .await;
    assert!(s.is_success(), "{s} {r}");
    wait_fault(&mut env, "after-resize").await;
    assert_eq!(qgroup_limit(&srv, &vol), "2000000000", "the server changed");

    // The next process applies it again (the same limit) and records it: the API and the
    // server agree, and the books hold the new size once.
    env.start_serve_with(&[("NFSPROV_RESYNC_SECS", "1")]).await;
    let v = env
        .wait_volume(id, Duration::from_secs(30), |v| {
            v["size_on_server_gb"] == 2 && v["size_error"].is_null()
        })
        .await;
    assert_eq!(v["size_gb"], 2, "{v}");
    assert_eq!(qgroup_limit(&srv, &vol), "2000000000");
    assert_eq!(books(&env, rp_id).await, (2, 2));
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_in_the_middle_of_a_restore_leaves_one_subvolume_and_one_charge() {
    if skip_without_btrfs() {
        return;
    }
    let (mut env, fs, rp_id) = start_btrfs(10).await;
    let srv = env.server("srv1").clone();
    let (s, v) = create_1gb(&env, rp_id, "v").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_i64().unwrap();
    inside(&srv, &format!("printf 'kept\\n' > {BTRFS_ROOT}/v/file"));
    let (s, snap) = env
        .req(
            Method::POST,
            Some(ALICE),
            &format!("/api/v1/volumes/{id}/snapshots?wait=true"),
            Some(json!({"name": "s1"})),
        )
        .await;
    assert!(s.is_success(), "{snap}");
    assert_eq!(snap["state"], "available", "{snap}");
    let sid = snap["id"].as_i64().unwrap();
    let (used, allocated) = books(&env, rp_id).await;
    // Every subvolume of the file system (the test's own), by path.
    let subvolumes = || {
        let list = inside(&srv, &format!("btrfs subvolume list {BTRFS_ROOT}"));
        let mut paths: Vec<String> = list
            .lines()
            .filter_map(|l| l.split(" path ").nth(1).map(str::to_string))
            .collect();
        paths.sort();
        paths
    };
    let snap_path = format!(".nfsprov-snapshots/{id}/s1");
    assert_eq!(
        subvolumes(),
        [snap_path.clone(), "v".into()],
        "the volume and its snapshot"
    );

    // kill -9 after the server made the restored subvolume, before the database heard.
    env.restart_with(&[
        ("NFSPROV_FAULT", "after-restore"),
        ("NFSPROV_RESYNC_SECS", "1"),
    ])
    .await;
    let (s, r) = env
        .req(
            Method::POST,
            Some(ALICE),
            &format!("/api/v1/volumes/{id}/snapshots/{sid}/restore"),
            Some(json!({"sub_path": "restored",
                        "clients": [{"host": "127.0.0.1", "options": "rw"}]})),
        )
        .await;
    assert!(s.is_success(), "{s} {r}");
    let rid = r["id"].as_i64().unwrap();
    wait_fault(&mut env, "after-restore").await;
    let restored = format!("{BTRFS_ROOT}/restored");
    assert_eq!(inside(&srv, &format!("cat {restored}/file")), "kept\n");

    // The next process takes the subvolume it finds (the new volume's mark) as its own: one
    // subvolume, limited, exported; one charge.
    env.start_serve_with(&[("NFSPROV_RESYNC_SECS", "1")]).await;
    let v = env
        .wait_volume(rid, Duration::from_secs(30), |v| v["state"] != "creating")
        .await;
    assert_eq!(v["state"], "available", "{v}");
    assert_eq!(
        subvolumes(),
        [snap_path, "restored".into(), "v".into()],
        "no orphan: the volume, its snapshot, the restored volume"
    );
    assert_eq!(qgroup_limit(&srv, &restored), GB);
    assert!(!etab_entries(&srv.etab().unwrap(), &restored).is_empty());
    assert_eq!(inside(&srv, &format!("cat {restored}/file")), "kept\n");
    assert_eq!(books(&env, rp_id).await, (used + 1, allocated + 1));
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_changed_by_hand_are_put_back_and_subvolumes_removed_by_hand_are_reported() {
    if skip_without_btrfs() {
        return;
    }
    let (env, fs, rp_id) = start_btrfs(10).await;
    let srv = env.server("srv1").clone();
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        let (s, v) = create_1gb(&env, rp_id, name).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        ids.push(v["id"].as_i64().unwrap());
    }
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    let at = |n: &str| format!("{BTRFS_ROOT}/{n}");

    // A limit raised by hand, then removed by hand: each put back on the next full pass,
    // logged and in the volume's history with the limit found.
    inside(&srv, &format!("btrfs qgroup limit 5000000000 {}", at("a")));
    wait_limit(&srv, &at("a"), GB).await;
    inside(&srv, &format!("btrfs qgroup limit none {}", at("a")));
    wait_limit(&srv, &at("a"), GB).await;
    assert!(env.log().contains("drift repaired: btrfs subvolume"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let drift = loop {
        let drift: Vec<_> = history(&env, a)
            .await
            .into_iter()
            .filter(|(action, ..)| action == "volume.size_drift")
            .collect();
        if drift.len() >= 2 || Instant::now() >= deadline {
            break drift;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(drift.len(), 2, "{drift:?}");
    assert_eq!(drift[0].1, "repaired", "{drift:?}");
    assert_eq!(drift[0].2["qgroup_limit"], "5000000000", "{drift:?}");
    assert_eq!(drift[0].3["qgroup_limit"], GB, "{drift:?}");
    assert_eq!(drift[1].2["qgroup_limit"], "none", "{drift:?}");

    // A subvolume deleted by hand: reported on the volume (its state, like a directory
    // removed by hand, and why its size does not hold), never made again.
    inside(
        &srv,
        &format!("btrfs subvolume delete {} >/dev/null", at("b")),
    );
    let v = env
        .wait_volume(b, Duration::from_secs(30), |v| {
            says(v, "size_error", "is missing on the server")
        })
        .await;
    assert!(says(&v, "size_error", &at("b")), "{v}");
    let v = env
        .wait_volume(b, Duration::from_secs(30), |v| v["state"] == "error")
        .await;
    assert!(says(&v, "last_error", "does not exist"), "{v}");
    inside(&srv, &format!("test ! -e {}", at("b")));

    // Replaced by a plain directory by hand: the directory is there (the export holds), but
    // no limit can: reported, and the directory left as it is.
    inside(
        &srv,
        &format!(
            "btrfs subvolume delete {p} >/dev/null && mkdir {p} && touch {p}/theirs",
            p = at("c")
        ),
    );
    let v = env
        .wait_volume(c, Duration::from_secs(30), |v| {
            says(v, "size_error", "no longer a btrfs subvolume")
        })
        .await;
    assert!(says(&v, "size_error", &at("c")), "{v}");
    inside(&srv, &format!("test -f {}/theirs", at("c")));
    assert_ne!(
        inside(&srv, &format!("stat -c %i {}", at("c"))).trim(),
        "256"
    );
    let reported: Vec<_> = history(&env, c)
        .await
        .into_iter()
        .filter(|(action, outcome, ..)| action == "volume.size_drift" && outcome == "reported")
        .collect();
    assert_eq!(
        reported.len(),
        1,
        "reported once, not every pass: {reported:?}"
    );

    // The volume whose limit was put back holds with no error.
    let v = env.volume(a).await;
    assert!(v["size_error"].is_null(), "{v}");
    assert_eq!(v["state"], "available", "{v}");
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_disabled_on_a_root_path_are_reported_there_alone_and_limits_come_back() {
    if skip_without_btrfs() {
        return;
    }
    let (env, fs, rp_id) = start_btrfs(10).await;
    let srv = env.server("srv1").clone();
    let other_root = "/srv/nfsprov/btrfs2";
    let fs2 = srv.mount_btrfs("btrfs2", 4 << 30, true).unwrap();
    let (s, rp2) = add_root_path(&env, other_root, "btrfs").await;
    assert_eq!(s, StatusCode::CREATED, "{rp2}");
    let rp2_id = rp2["id"].as_i64().unwrap();
    let (s, v) = create_1gb(&env, rp_id, "v1").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let v1 = v["id"].as_i64().unwrap();
    let (s, w) = create_1gb(&env, rp2_id, "w1").await;
    assert_eq!(s, StatusCode::CREATED, "{w}");
    let w1 = w["id"].as_i64().unwrap();

    inside(&srv, &format!("btrfs quota disable {BTRFS_ROOT}"));
    // The volume says its size does not hold, naming the root path and what to do.
    let v = env
        .wait_volume(v1, Duration::from_secs(30), |v| {
            says(v, "size_error", "quotas are disabled")
        })
        .await;
    assert!(says(&v, "size_error", BTRFS_ROOT), "{v}");
    assert!(says(&v, "size_error", "btrfs quota enable"), "{v}");
    // Its enforcement no longer claims a limit that does not hold.
    assert!(says(&v, "size_enforcement", "not enforced"), "{v}");
    // The same full pass checked the other root path's volume: it holds.
    let w = env.volume(w1).await;
    assert!(w["size_error"].is_null(), "{w}");
    assert!(
        says(&w, "size_enforcement", "enforced: a btrfs subvolume"),
        "{w}"
    );
    assert_eq!(qgroup_limit(&srv, &format!("{other_root}/w1")), GB);

    // A create there fails saying so; on the other root paths creates work.
    let (s, v2) = create_1gb(&env, rp_id, "v2").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v2}");
    assert_eq!(v2["state"], "error", "{v2}");
    assert!(says(&v2, "last_error", "quota not enabled"), "{v2}");
    assert!(says(&v2, "last_error", BTRFS_ROOT), "{v2}");
    let v2 = v2["id"].as_i64().unwrap();
    let (s, w2) = create_1gb(&env, rp2_id, "w2").await;
    assert_eq!(s, StatusCode::CREATED, "{w2}");
    assert_eq!(w2["state"], "available", "{w2}");
    let (s, d) = create_1gb(&env, 1, "plain").await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert_eq!(d["state"], "available", "{d}");

    // Quotas enabled again (every qgroup back, without limits): the limits are put back, the
    // error goes, the waiting create finishes.
    inside(&srv, &format!("btrfs quota enable {BTRFS_ROOT}"));
    let v = env
        .wait_volume(v1, Duration::from_secs(30), |v| v["size_error"].is_null())
        .await;
    assert!(
        says(&v, "size_enforcement", "enforced: a btrfs subvolume"),
        "{v}"
    );
    wait_limit(&srv, &format!("{BTRFS_ROOT}/v1"), GB).await;
    let v = env
        .wait_volume(v2, Duration::from_secs(30), |v| v["state"] == "available")
        .await;
    assert!(v["size_error"].is_null(), "{v}");
    assert_eq!(qgroup_limit(&srv, &format!("{BTRFS_ROOT}/v2")), GB);
    drop(fs2);
    drop(fs);
}
