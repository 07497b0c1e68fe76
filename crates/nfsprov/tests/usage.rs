//! Usage and resize (issue 12), on a real btrfs file system in the test bed server's mount
//! namespace: the reconciler samples what a volume holds (the qgroup's referenced bytes) and
//! the API shows it without asking the server; PATCH `size_gb` moves the qgroup limit (read
//! back on the server), reserves the quota and capacity difference or refuses with nothing
//! changed, and a shrink below what the volume holds is refused by the API (from the latest
//! sample) and, when the sample is stale, by the server (the size goes back to what the server
//! holds).

mod common;

use std::time::Duration;

use common::btrfs::*;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

/// One server, alice's quota `quota_gb`, and the service sampling usage and resyncing every
/// second.
async fn start_sampling(quota_gb: i64) -> Env {
    let mut env = Env::start(1, 100, quota_gb).await;
    env.restart_with(&[
        ("NFSPROV_USAGE_INTERVAL_SECS", "1"),
        ("NFSPROV_RESYNC_SECS", "1"),
    ])
    .await;
    env
}

async fn patch_size(env: &Env, id: i64, size_gb: i64) -> (StatusCode, Value) {
    env.req(
        Method::PATCH,
        Some(ALICE),
        &format!("/api/v1/volumes/{id}?wait=true"),
        Some(json!({"size_gb": size_gb})),
    )
    .await
}

async fn used_gb(env: &Env, user: &str) -> i64 {
    env.user_row(user).await["used_gb"].as_i64().unwrap()
}

async fn root_path(env: &Env, id: i64) -> Value {
    let (_, rps) = env
        .req(Method::GET, Some(ALICE), "/api/v1/rootpaths", None)
        .await;
    rps.as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no root path {id}: {rps}"))
}

/// Wait until the volume's latest usage sample satisfies `pred` (polled, bounded).
async fn wait_usage(env: &Env, id: i64, pred: impl Fn(&Value) -> bool) -> Value {
    env.wait_volume(id, Duration::from_secs(30), |v| pred(&v["usage"]))
        .await
}

fn refused(s: StatusCode, v: &Value, status: StatusCode, code: &str, says: &str) {
    assert_eq!(s, status, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert_eq!(v["error"]["field"], "size_gb", "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(says), "{msg:?} should say {says:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn btrfs_usage_is_sampled_and_resize_moves_the_limit_within_quota_and_capacity() {
    if skip_without_btrfs() {
        return;
    }
    // alice: a 5 GB quota; the btrfs root path: 3 GB of capacity.
    let mut env = start_sampling(5).await;
    let srv = env.server("srv1");
    let fs = srv.mount_btrfs("btrfs", 4 << 30, true).unwrap();
    let (s, rp) = add_root_path(&env, BTRFS_ROOT, "btrfs").await;
    assert_eq!(s, StatusCode::CREATED, "{rp}");
    let rp_id = rp["id"].as_i64().unwrap();
    let (s, v) = create_1gb(&env, rp_id, "data").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "available", "{v}");
    let id = v["id"].as_i64().unwrap();
    let vol = format!("{BTRFS_ROOT}/data");

    // 300 MiB written: a sampling pass shows it, through the API, without a request to the
    // server; the samples are kept; the root path shows its file system.
    let (ok, said) = write_mb(srv, &format!("{vol}/a"), 300, true);
    assert!(ok, "{said}");
    let v = wait_usage(&env, id, |u| u["used_bytes"].as_u64() >= Some(300 * MIB)).await;
    let used = v["usage"]["used_bytes"].as_u64().unwrap();
    assert!(used < 310 * MIB, "about 300 MiB: {v}");
    assert!(
        v["usage"]["exclusive_bytes"].as_u64() >= Some(300 * MIB),
        "{v}"
    );
    assert_eq!(v["size_on_server_gb"], 1, "{v}");
    // Samples pile up, one per interval (1 s here), oldest first.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let u = loop {
        let (s, u) = env
            .req(
                Method::GET,
                Some(ALICE),
                &format!("/api/v1/volumes/{id}/usage"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{u}");
        if u["samples"].as_array().unwrap().len() >= 3 {
            break u;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no growth over time: {u}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let samples = u["samples"].as_array().unwrap();
    assert!(
        samples[0]["sampled_at"].as_str() < samples[1]["sampled_at"].as_str(),
        "{u}"
    );
    let r = root_path(&env, rp_id).await;
    let df = &r["usage"];
    assert!(df["size_bytes"].as_u64() > Some(3 << 30), "{r}");
    assert!(df["used_bytes"].as_u64() >= Some(300 * MIB), "{r}");
    assert!(df["free_bytes"].as_u64() > Some(0), "{r}");
    assert_eq!(r["allocated_gb"], 1, "{r}");
    inside(srv, &format!("rm -f {vol}/a && sync"));

    // 1 GB: a 1.5 GB write fails. Resized to 2 GB (limit read back on the server), it goes.
    let (ok, said) = write_mb(srv, &format!("{vol}/big"), 1500, true);
    assert!(!ok && said.contains("Disk quota exceeded"), "{said}");
    let (s, v) = patch_size(&env, id, 2).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["size_gb"], 2, "{v}");
    assert_eq!(v["size_on_server_gb"], 2, "{v}");
    assert_eq!(qgroup_limit(srv, &vol), "2000000000");
    assert_eq!(used_gb(&env, "alice").await, 2);
    assert_eq!(root_path(&env, rp_id).await["allocated_gb"], 2);
    let (ok, said) = write_mb(srv, &format!("{vol}/big"), 1500, true);
    assert!(ok, "{said}");

    // Shrinking below what the latest sample saw is refused, with the usage in the message.
    wait_usage(&env, id, |u| u["used_bytes"].as_u64() >= Some(1500 * MIB)).await;
    let (s, v) = patch_size(&env, id, 1).await;
    refused(s, &v, StatusCode::BAD_REQUEST, "invalid", "bytes (1.");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot shrink"),
        "{v}"
    );

    // Growing past the quota (5 GB) or the root path's capacity (3 GB): refused, nothing
    // changed in the books or on the server.
    let (s, v) = patch_size(&env, id, 6).await;
    refused(
        s,
        &v,
        StatusCode::CONFLICT,
        "quota_exceeded",
        "quota by 1 GB",
    );
    let (s, v) = patch_size(&env, id, 4).await;
    refused(s, &v, StatusCode::CONFLICT, "capacity_exceeded", "by 1 GB");
    let (_, v) = env
        .req(
            Method::GET,
            Some(ALICE),
            &format!("/api/v1/volumes/{id}"),
            None,
        )
        .await;
    assert_eq!(v["size_gb"], 2, "{v}");
    assert_eq!(used_gb(&env, "alice").await, 2);
    assert_eq!(root_path(&env, rp_id).await["allocated_gb"], 2);
    assert_eq!(qgroup_limit(srv, &vol), "2000000000");

    // A stale sample lets a shrink through the API; the server re-checks the qgroup in the
    // script that would apply the limit, refuses, and the volume says why.
    inside(srv, &format!("rm -f {vol}/big && sync"));
    let before = env
        .wait_volume(id, Duration::from_secs(30), |v| {
            v["usage"]["used_bytes"].as_u64() < Some(10 * MIB)
        })
        .await;
    env.restart_with(&[("NFSPROV_USAGE_INTERVAL_SECS", "3600")])
        .await;
    let srv = env.server("srv1");
    // The sample of the first pass after the restart, then nothing for an hour.
    let after = env
        .wait_volume(id, Duration::from_secs(30), |v| {
            v["usage"]["sampled_at"] != before["usage"]["sampled_at"]
        })
        .await;
    let (ok, said) = write_mb(srv, &format!("{vol}/big"), 1500, true);
    assert!(ok, "{said}");
    let (s, v) = patch_size(&env, id, 1).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    let why = v["size_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("the server refused") && why.contains("bytes (1."),
        "{v}"
    );
    assert_eq!(v["size_on_server_gb"], 2, "{v}");
    assert_eq!(v["size_gb"], 2, "back to the size the server holds: {v}");
    assert_eq!(
        v["usage"]["sampled_at"], after["usage"]["sampled_at"],
        "{v}"
    );
    assert_eq!(qgroup_limit(srv, &vol), "2000000000");
    assert_eq!(used_gb(&env, "alice").await, 2);
    assert_eq!(root_path(&env, rp_id).await["allocated_gb"], 2);
    drop(fs);
}

/// A directory volume's size is bookkeeping: a resize changes the books only and says so;
/// its usage is sampled with `du`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_usage_is_sampled_by_du_and_resize_is_bookkeeping() {
    let env = start_sampling(50).await;
    let srv = env.server("srv1");
    let mut ids = Vec::new();
    for sub in ["d/one", "d/two.x"] {
        let (s, v) = create_1gb(&env, 1, sub).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        ids.push(v["id"].as_i64().unwrap());
    }
    let (ok, said) = write_mb(srv, "/srv/nfsprov/pool1/d/two.x/f", 20, true);
    assert!(ok, "{said}");
    let v = wait_usage(&env, ids[1], |u| u["used_bytes"].as_u64() >= Some(20 * MIB)).await;
    assert!(v["usage"]["used_bytes"].as_u64() < Some(21 * MIB), "{v}");
    assert_eq!(v["usage"]["exclusive_bytes"], Value::Null, "{v}");
    let one = wait_usage(&env, ids[0], |u| !u.is_null()).await;
    assert!(one["usage"]["used_bytes"].as_u64() < Some(MIB), "{one}");

    let (s, v) = patch_size(&env, ids[0], 7).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["size_gb"], 7, "{v}");
    assert_eq!(v["size_on_server_gb"], Value::Null, "{v}");
    assert!(
        v["size_enforcement"]
            .as_str()
            .unwrap()
            .starts_with("size reserved, not enforced"),
        "{v}"
    );
    assert_eq!(used_gb(&env, "alice").await, 8);
    assert_eq!(root_path(&env, 1).await["allocated_gb"], 8);
    // Size and clients in one request: refused, naming the field.
    let (s, v) = env
        .req(
            Method::PATCH,
            Some(ALICE),
            &format!("/api/v1/volumes/{}", ids[0]),
            Some(json!({"size_gb": 2, "clients": []})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["field"], "size_gb", "{v}");
    // Another tenant's volume is not found.
    let (s, _) = env
        .req(
            Method::PATCH,
            Some(BOB),
            &format!("/api/v1/volumes/{}", ids[0]),
            Some(json!({"size_gb": 2})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
