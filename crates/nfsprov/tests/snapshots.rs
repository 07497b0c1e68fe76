//! Snapshots of btrfs volumes (issue 12) on a real btrfs file system (a loop device in the
//! test bed server's mount namespace): a snapshot is read-only and keeps the data of the moment
//! it was taken, lives outside the volume (`<root>/.nfsprov-snapshots/<volume>/<name>`), is
//! restored into a new exported volume with that data, and keeps its volume from being deleted
//! unless the delete asks for the snapshots to go too; each change is in the volume's history
//! (audit trail). A volume of a plain-directory root path has no snapshots.

mod common;

use common::btrfs::*;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Run `script` inside the server expecting it to fail: what it printed (stdout and stderr).
fn inside_fails(srv: &TestbedServer, script: &str) -> String {
    let out = srv.run_inside(&format!("{{ {script}; }} 2>&1")).unwrap();
    assert!(!out.status.success(), "{script} should fail: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn snapshot(env: &Env, vol: i64, name: &str) -> (StatusCode, Value) {
    env.req(
        Method::POST,
        Some(ALICE),
        &format!("/api/v1/volumes/{vol}/snapshots?wait=true"),
        Some(json!({ "name": name })),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_keeps_old_data_read_only_restores_and_guards_delete() {
    if skip_without_btrfs() {
        return;
    }
    let env = Env::start(1, 100, 50).await;
    let srv = env.server("srv1");
    let fs = srv.mount_btrfs("btrfs", 4 << 30, true).unwrap();
    let (s, rp) = add_root_path(&env, BTRFS_ROOT, "btrfs").await;
    assert_eq!(s, StatusCode::CREATED, "{rp}");
    let rp_id = rp["id"].as_i64().unwrap();
    let clients = json!([{"host": "127.0.0.1", "options": "rw"}]);
    let (s, v) = env.create(ALICE, rp_id, "data", 1, clients.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_i64().unwrap();
    let vol = format!("{BTRFS_ROOT}/data");

    // A file, a snapshot, a change: the snapshot holds the old content.
    inside(srv, &format!("printf 'before\\n' > {vol}/file"));
    let (s, snap) = snapshot(&env, id, "daily.1").await;
    assert_eq!(s, StatusCode::CREATED, "{snap}");
    assert_eq!(snap["state"], "available", "{snap}");
    assert_eq!(snap["name"], "daily.1");
    assert!(snap["exclusive_bytes"].is_i64(), "size read: {snap}");
    let sid = snap["id"].as_i64().unwrap();
    inside(srv, &format!("printf 'after\\n' > {vol}/file"));
    let at = format!("{BTRFS_ROOT}/.nfsprov-snapshots/{id}/daily.1");
    assert_eq!(inside(srv, &format!("cat {at}/file")), "before\n");
    assert_eq!(inside(srv, &format!("cat {vol}/file")), "after\n");
    // Read-only: even root cannot write into it.
    let said = inside_fails(srv, &format!("printf x > {at}/file"));
    assert!(said.contains("Read-only file system"), "{said}");
    assert_eq!(
        inside(srv, &format!("btrfs property get -ts {at} ro")).trim(),
        "ro=true"
    );
    // Outside the exported volume, root's own.
    assert_eq!(
        inside(
            srv,
            &format!("stat -c '%a %u' {BTRFS_ROOT}/.nfsprov-snapshots")
        )
        .trim(),
        "700 0"
    );

    // Listed; a second of the same name is refused naming the field.
    let (s, list) = env
        .req(
            Method::GET,
            Some(ALICE),
            &format!("/api/v1/volumes/{id}/snapshots"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], sid, "{list}");
    let (s, dup) = snapshot(&env, id, "daily.1").await;
    assert_eq!(s, StatusCode::CONFLICT, "{dup}");
    assert_eq!(dup["error"]["field"], "name", "{dup}");
    let (s, bad) = snapshot(&env, id, "../escape").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    assert_eq!(bad["error"]["field"], "name", "{bad}");

    // Restore into a new volume: the old content, writable, exported.
    let (s, r) = env
        .req(
            Method::POST,
            Some(ALICE),
            &format!("/api/v1/volumes/{id}/snapshots/{sid}/restore?wait=true"),
            Some(json!({"sub_path": "restored", "clients": clients})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["state"], "available", "{r}");
    let rid = r["id"].as_i64().unwrap();
    let restored = format!("{BTRFS_ROOT}/restored");
    assert_eq!(inside(srv, &format!("cat {restored}/file")), "before\n");
    inside(srv, &format!("printf 'new\\n' > {restored}/file"));
    assert_eq!(inside(srv, &format!("cat {at}/file")), "before\n");
    assert!(
        !etab_entries(&srv.etab().unwrap(), &restored).is_empty(),
        "restored volume exported"
    );
    // Its own subvolume, with its own mark only, limited to the volume's size.
    assert_eq!(inside(srv, &format!("stat -c %i {restored}")).trim(), "256");
    let marks = inside(srv, &format!("ls -A {restored}"));
    let has = |m: String| marks.lines().any(|l| l == m);
    assert!(
        has(format!(".nfsprov-volume-{rid}")) && !has(format!(".nfsprov-volume-{id}")),
        "{marks}"
    );
    let qgroups = inside(srv, &format!("btrfs qgroup show -r --raw -f {restored}"));
    assert!(
        qgroups
            .lines()
            .any(|l| l.split_whitespace().nth(3) == Some("1000000000")),
        "{qgroups}"
    );

    // Deleting the volume is refused while it has snapshots, naming them...
    let (s, refused) = env
        .req(
            Method::DELETE,
            Some(ALICE),
            &format!("/api/v1/volumes/{id}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{refused}");
    let msg = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("daily.1") && msg.contains("with_snapshots=true"),
        "{msg}"
    );
    assert_eq!(env.volume(id).await["state"], "available");
    // ...and allowed with them: the snapshot goes too.
    let (s, gone) = env
        .req(
            Method::DELETE,
            Some(ALICE),
            &format!("/api/v1/volumes/{id}?with_snapshots=true&wait=true"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{gone}");
    assert_eq!(gone["state"], "deleted", "{gone}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, sn) = env
            .req(
                Method::GET,
                Some(ADMIN),
                &format!("/api/v1/volumes/{rid}"),
                None,
            )
            .await;
        assert_eq!(sn["state"], "available", "the restored volume stays: {sn}");
        let list = inside(srv, &format!("btrfs subvolume list -o {BTRFS_ROOT}"));
        if !list.contains("daily.1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "snapshot still there: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(inside(srv, &format!("cat {restored}/file")), "new\n");

    // Each change is in the volume's history (the audit trail), the restore in the new one's.
    let changes = |h: &Value| -> Vec<(String, Value)> {
        h.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] != "denied" && r["action"] != "request")
            .map(|r| {
                (
                    r["action"].as_str().unwrap().to_string(),
                    r["after"].clone(),
                )
            })
            .collect()
    };
    let (s, h) = env
        .req(
            Method::GET,
            Some(ALICE),
            &format!("/api/v1/volumes/{id}/history"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{h}");
    let h = changes(&h);
    let actions: Vec<&str> = h.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        ["volume.create", "snapshot.create", "volume.delete"],
        "{h:?}"
    );
    assert_eq!(h[1].1["name"], "daily.1", "{h:?}");
    assert_eq!(h[2].1["snapshots"], json!(["daily.1"]), "{h:?}");
    let (s, h) = env
        .req(
            Method::GET,
            Some(ALICE),
            &format!("/api/v1/volumes/{rid}/history"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{h}");
    let h = changes(&h);
    assert_eq!(h[0].0, "snapshot.restore", "{h:?}");
    assert_eq!(h[0].1["restored_from_snapshot"], sid, "{h:?}");

    // A volume of a plain-directory root path has no snapshots: 400 naming the layout.
    let (s, d) = env.create(ALICE, 1, "plain", 1, clients.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let (s, refused) = snapshot(&env, d["id"].as_i64().unwrap(), "x").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"]["field"], "layout", "{refused}");
    let msg = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("directory layout"), "{msg}");
    drop(fs);
}

/// alice's `used_gb` once it reads `want` (the reconciler records sizes after its passes).
async fn wait_used_gb(env: &Env, want: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let u = env.user_row(ALICE.0).await;
        if u["used_gb"] == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "used_gb should become {want}: {u}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_count_against_quota_by_exclusive_size_and_their_number_is_limited() {
    if skip_without_btrfs() {
        return;
    }
    let mut env = Env::start(1, 100, 50).await;
    env.restart_with(&[("NFSPROV_MAX_SNAPSHOTS", "1"), ("NFSPROV_RESYNC_SECS", "1")])
        .await;
    let srv = env.server("srv1");
    let fs = srv.mount_btrfs("btrfs", 4 << 30, true).unwrap();
    let (s, rp) = add_root_path(&env, BTRFS_ROOT, "btrfs").await;
    assert_eq!(s, StatusCode::CREATED, "{rp}");
    let clients = json!([{"host": "127.0.0.1", "options": "rw"}]);
    let (s, v) = env
        .create(ALICE, rp["id"].as_i64().unwrap(), "big", 2, clients)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_i64().unwrap();
    wait_used_gb(&env, 2).await;
    let vol = format!("{BTRFS_ROOT}/big");
    inside(
        srv,
        &format!("dd if=/dev/zero of={vol}/data bs=1M count=1200 conv=fsync 2>/dev/null"),
    );

    // A fresh snapshot shares everything with its volume: a few KB exclusive, charged as
    // 1 GB (whole GB, rounded up).
    let (s, snap) = snapshot(&env, id, "one").await;
    assert_eq!(s, StatusCode::CREATED, "{snap}");
    assert!(
        snap["exclusive_bytes"].as_i64().unwrap() < 1_000_000,
        "{snap}"
    );
    wait_used_gb(&env, 3).await;
    // The limit per volume (NFSPROV_MAX_SNAPSHOTS=1).
    let (s, two) = snapshot(&env, id, "two").await;
    assert_eq!(s, StatusCode::CONFLICT, "{two}");
    let msg = two["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("the most allowed (1)"), "{msg}");

    // The volume's data removed: the snapshot alone holds the 1.2 GB, read again on a full
    // pass: charged 2 GB.
    inside(srv, &format!("rm {vol}/data && sync"));
    wait_used_gb(&env, 4).await;
    let (_, list) = env
        .req(
            Method::GET,
            Some(ALICE),
            &format!("/api/v1/volumes/{id}/snapshots"),
            None,
        )
        .await;
    let excl = list[0]["exclusive_bytes"].as_i64().unwrap();
    assert!(excl > 1_200_000_000, "{list}");

    // Deleting the snapshot gives it back.
    let sid = snap["id"].as_i64().unwrap();
    let (s, d) = env
        .req(
            Method::DELETE,
            Some(ALICE),
            &format!("/api/v1/volumes/{id}/snapshots/{sid}?wait=true"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["state"], "deleted", "{d}");
    wait_used_gb(&env, 2).await;
    let list = inside(srv, &format!("btrfs subvolume list -o {BTRFS_ROOT}"));
    assert!(!list.contains("one"), "{list}");
    drop(fs);
}

/// The snapshot row of `sid` once `done` holds for it.
async fn wait_snapshot(env: &Env, vol: i64, sid: i64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, s) = env
            .req(
                Method::GET,
                Some(ADMIN),
                &format!("/api/v1/volumes/{vol}/snapshots/{sid}"),
                None,
            )
            .await;
        if done(&s) {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "{s}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_snapshot_and_things_in_the_way_are_handled() {
    if skip_without_btrfs() {
        return;
    }
    let mut env = Env::start(1, 100, 50).await;
    let srv = env.server("srv1").clone();
    let fs = srv.mount_btrfs("btrfs", 4 << 30, true).unwrap();
    let (s, rp) = add_root_path(&env, BTRFS_ROOT, "btrfs").await;
    assert_eq!(s, StatusCode::CREATED, "{rp}");
    let rp_id = rp["id"].as_i64().unwrap();
    let clients = json!([{"host": "127.0.0.1", "options": "rw"}]);
    let (s, v) = env.create(ALICE, rp_id, "v", 1, clients.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_i64().unwrap();
    inside(&srv, &format!("printf 'kept\\n' > {BTRFS_ROOT}/v/file"));
    let dir = format!("{BTRFS_ROOT}/.nfsprov-snapshots/{id}");

    // kill -9 right after the server made the snapshot, before the database heard: the next
    // process finds it made (read-only, the volume's mark) and takes it as done.
    env.restart_with(&[("NFSPROV_FAULT", "after-snapshot")])
        .await;
    let (s, snap) = env
        .req(
            Method::POST,
            Some(ALICE),
            &format!("/api/v1/volumes/{id}/snapshots"),
            Some(json!({"name": "crash"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{snap}");
    let sid = snap["id"].as_i64().unwrap();
    let mut child = env.serve.take().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fault point never fired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    assert!(env.log().contains("NFSPROV_FAULT=after-snapshot"));
    assert_eq!(inside(&srv, &format!("cat {dir}/crash/file")), "kept\n");
    env.start_serve().await;
    let s = wait_snapshot(&env, id, sid, |s| s["state"] != "creating").await;
    assert_eq!(s["state"], "available", "{s}");
    assert_eq!(inside(&srv, &format!("cat {dir}/crash/file")), "kept\n");

    // Something nfsprov did not make at the name is not taken over, nor touched.
    inside(
        &srv,
        &format!("btrfs subvolume create {dir}/foreign >/dev/null && touch {dir}/foreign/theirs"),
    );
    let (s, f) = snapshot(&env, id, "foreign").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{f}");
    assert_eq!(f["state"], "error", "{f}");
    let msg = f["last_error"].as_str().unwrap_or_default();
    assert!(msg.contains("not a snapshot nfsprov made"), "{msg}");
    inside(&srv, &format!("test -f {dir}/foreign/theirs"));
    // Deleting that record leaves the foreign subvolume in place.
    let fid = f["id"].as_i64().unwrap();
    let (s, d) = env
        .req(
            Method::DELETE,
            Some(ALICE),
            &format!("/api/v1/volumes/{id}/snapshots/{fid}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{d}");
    let d = wait_snapshot(&env, id, fid, |s| !s["last_error"].is_null()).await;
    assert_eq!(d["state"], "deleting", "{d}");
    assert!(
        d["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("left in place"),
        "{d}"
    );
    inside(&srv, &format!("test -f {dir}/foreign/theirs"));

    // A snapshot removed by hand is reported on the next full pass, never made again from the
    // volume's current data.
    inside(&srv, &format!("printf 'changed\\n' > {BTRFS_ROOT}/v/file"));
    inside(
        &srv,
        &format!("btrfs subvolume delete {dir}/crash >/dev/null"),
    );
    env.restart_with(&[]).await;
    let s = wait_snapshot(&env, id, sid, |s| !s["last_error"].is_null()).await;
    assert_eq!(s["state"], "available", "{s}");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("missing on the server"),
        "{s}"
    );
    inside(&srv, &format!("test ! -e {dir}/crash"));
    drop(fs);
}
