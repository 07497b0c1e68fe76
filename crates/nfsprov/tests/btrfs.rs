//! Sizes that hold (issue 12, first slice): a root path with the btrfs layout, on a real btrfs
//! file system (a loop device in the test bed server's mount namespace), gives each volume a
//! subvolume whose qgroup limit is its size. Writing past the size fails with "Disk quota
//! exceeded"; on a plain-directory root path of the same server it does not. Adding a btrfs
//! root path is checked on the server first.

mod common;

use std::time::Duration;

use common::btrfs::*;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn refused_for_layout(s: StatusCode, v: &Value, says: &str) {
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["field"], "layout", "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(says), "{msg:?} should say {says:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn btrfs_volume_is_held_to_its_size_and_a_directory_volume_is_not() {
    if skip_without_btrfs() {
        return;
    }
    let env = Env::start(1, 100, 50).await;
    let srv = env.server("srv1");
    let fs = srv.mount_btrfs("btrfs", 4 << 30, false).unwrap();

    // The layout is checked on the server before anything is recorded.
    let (s, v) = add_root_path(&env, "/srv/nfsprov/pool2", "btrfs").await;
    refused_for_layout(s, &v, "not btrfs");
    let (s, v) = add_root_path(&env, BTRFS_ROOT, "btrfs").await;
    refused_for_layout(s, &v, "btrfs quota enable /srv/nfsprov/btrfs");
    let (s, v) = add_root_path(&env, BTRFS_ROOT, "xfs-project").await;
    refused_for_layout(s, &v, "on a btrfs file system, not xfs");
    let (s, v) = add_root_path(&env, BTRFS_ROOT, "zfs").await;
    refused_for_layout(s, &v, "unknown layout");
    // The CLI asks the server the same question.
    let out = env.cli(&[
        "rootpath",
        "add",
        "--server",
        "srv1",
        "/srv/nfsprov/pool2",
        "--capacity-gb",
        "3",
        "--layout",
        "btrfs",
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("not btrfs"),
        "{said}"
    );
    let (_, rps) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/rootpaths", None)
        .await;
    assert_eq!(rps.as_array().unwrap().len(), 1, "nothing recorded: {rps}");

    fs.enable_quota().unwrap();
    let (s, rp) = add_root_path(&env, BTRFS_ROOT, "btrfs").await;
    assert_eq!(s, StatusCode::CREATED, "{rp}");
    assert_eq!(rp["layout"], "btrfs");
    let rp_id = rp["id"].as_i64().unwrap();

    // A 1 GB volume on it: a subvolume whose qgroup limit is 10^9 bytes.
    let (s, v) = create_1gb(&env, rp_id, "team/small").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "available", "{v}");
    assert_eq!(v["layout"], "btrfs");
    assert!(
        v["size_enforcement"]
            .as_str()
            .unwrap()
            .starts_with("enforced"),
        "{v}"
    );
    let id = v["id"].as_i64().unwrap();
    let vol = format!("{BTRFS_ROOT}/team/small");
    assert_eq!(inside(srv, &format!("stat -c %i {vol}")).trim(), "256");
    let qgroups = inside(srv, &format!("btrfs qgroup show -r --raw -f {vol}"));
    assert!(
        qgroups
            .lines()
            .any(|l| l.split_whitespace().nth(3) == Some("1000000000")),
        "{qgroups}"
    );

    // Writing past the size fails for the writer; within it works.
    let (ok, said) = write_mb(srv, &format!("{vol}/fill"), 1100, false);
    assert!(!ok && said.contains("Disk quota exceeded"), "{said}");
    let (ok, said) = write_mb(srv, &format!("{vol}/fill"), 500, false);
    assert!(ok, "{said}");

    // A 1 GB plain-directory volume on the same server is not held to its size, and says so.
    let (s, d) = create_1gb(&env, 1, "plain").await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert_eq!(d["layout"], "directory");
    assert!(
        d["size_enforcement"]
            .as_str()
            .unwrap()
            .starts_with("size reserved, not enforced"),
        "{d}"
    );
    let (ok, said) = write_mb(srv, "/srv/nfsprov/pool1/plain/fill", 1100, false);
    assert!(ok, "{said}");

    // A subvolume nfsprov did not create is never taken over.
    inside(
        srv,
        &format!("btrfs subvolume create {BTRFS_ROOT}/taken >/dev/null"),
    );
    let (_, t) = create_1gb(&env, rp_id, "taken").await;
    let t = env
        .wait_volume(
            t["id"].as_i64().expect("a volume id"),
            Duration::from_secs(20),
            |t| t["state"] == "error",
        )
        .await;
    assert!(
        t["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("not created by nfsprov"),
        "{t}"
    );

    // Nor is a symbolic link at a volume's path followed.
    inside(srv, &format!("ln -s /srv/nfsprov/pool1 {BTRFS_ROOT}/link"));
    let (_, l) = create_1gb(&env, rp_id, "link").await;
    let l = env
        .wait_volume(
            l["id"].as_i64().expect("a volume id"),
            Duration::from_secs(20),
            |l| l["state"] == "error",
        )
        .await;
    assert!(
        l["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("symbolic link"),
        "{l}"
    );
    assert!(!srv.host_path("/srv/nfsprov/pool1/link").exists());

    // Delete (purge): the subvolume goes.
    let (s, v) = env.delete_wait(ALICE, id).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "deleted", "{v}");
    let list = inside(srv, &format!("btrfs subvolume list -o {BTRFS_ROOT}"));
    assert!(!list.contains("team/small"), "{list}");
    assert!(list.contains("taken"), "{list}");
    drop(fs);
}
