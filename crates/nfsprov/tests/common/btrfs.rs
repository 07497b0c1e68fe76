//! A btrfs root path on a test bed server (issue 12), shared by the tests of sizes that hold
//! and of usage: the root path, small volumes on it, and commands inside the server.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{ADMIN, ALICE, Env, TestbedServer};

/// Where the tests mount their btrfs file system (`TestbedServer::mount_btrfs("btrfs", ..)`).
pub const BTRFS_ROOT: &str = "/srv/nfsprov/btrfs";

/// True, with the reason printed, where this machine cannot make a btrfs file system: the
/// test then passes without checking anything.
pub fn skip_without_btrfs() -> bool {
    match nfsprov_testbed::btrfs::unsupported() {
        Some(why) => {
            eprintln!("skipping: {why}");
            true
        }
        None => false,
    }
}

/// Root path `path` of srv1 with `layout`, 3 GB of capacity, purged on delete, added by the
/// administrator: the answer's status and body.
pub async fn add_root_path(env: &Env, path: &str, layout: &str) -> (StatusCode, Value) {
    env.req(
        Method::POST,
        Some(ADMIN),
        "/api/v1/rootpaths",
        Some(json!({"server": "srv1", "path": path, "capacity_gb": 3,
                    "delete_policy": "purge", "layout": layout})),
    )
    .await
}

/// A 1 GB volume of alice at `sub_path` of root path `rp_id`, exported read-write to
/// 127.0.0.1, created and waited for: the answer's status and body.
pub async fn create_1gb(env: &Env, rp_id: i64, sub_path: &str) -> (StatusCode, Value) {
    env.create(
        ALICE,
        rp_id,
        sub_path,
        1,
        json!([{"host": "127.0.0.1", "options": "rw"}]),
    )
    .await
}

/// `dd` of `mb` MiB into `file` inside the server, flushed: whether it worked, and its output.
/// A failed write is removed; a written one is kept if `keep`.
pub fn write_mb(srv: &TestbedServer, file: &str, mb: u32, keep: bool) -> (bool, String) {
    let remove = if keep {
        format!("[ $r -eq 0 ] || rm -f {file}")
    } else {
        format!("rm -f {file}")
    };
    let out = srv
        .run_inside(&format!(
            "dd if=/dev/zero of={file} bs=1M count={mb} conv=fsync 2>&1; r=$?; {remove}; exit $r"
        ))
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The output of `script` run inside the server, which must succeed.
pub fn inside(srv: &TestbedServer, script: &str) -> String {
    let out = srv.run_inside(script).unwrap();
    assert!(out.status.success(), "{script}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The qgroup limit (max referenced) of the subvolume at `path`, as btrfs reports it.
pub fn qgroup_limit(srv: &TestbedServer, path: &str) -> String {
    let rootid = inside(srv, &format!("btrfs inspect-internal rootid {path}"));
    let show = inside(srv, &format!("btrfs qgroup show -r --raw -f {path}"));
    show.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&format!("0/{}", rootid.trim()).as_str()))
        .and_then(|w| w.get(3).map(|s| s.to_string()))
        .unwrap_or_else(|| panic!("no qgroup for {path}: {show}"))
}
