//! What one tenant may send and see: numbers that could overflow the books, locked accounts,
//! other tenants' paths in error messages, huge client lists, and hootie creates the server
//! refused. Each test replays an attack an ordinary user made against the real API.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Alice's native create with `size_gb`, sent as raw JSON (the value may be any JSON).
fn native_body(sub_path: &str, size: Value) -> Value {
    json!({"root_path_id": 1, "sub_path": sub_path, "size_gb": size,
           "clients": [{"host": "10.0.0.1"}]})
}

/// A user's name and password.
type Login = (&'static str, &'static str);

async fn root_path_allocated(env: &Env) -> i64 {
    let (_, rps) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/rootpaths", None)
        .await;
    rps[0]["allocated_gb"].as_i64().unwrap()
}

/// Several creates of `2^63-1` GB land in one batch; with 1 GB already in use, the sum used to
/// overflow (a 500 in a debug build, negative counters in a release one). Every number an
/// ordinary user or an admin can send is a 4xx naming its field; the books stay right and
/// everything can be deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_numbers_racing_in_one_batch_are_refused_and_the_books_stay_right() {
    let env = Env::start(1, 100, 50).await;
    let small = env
        .create_available("small", json!([{"host": "10.0.0.1"}]))
        .await;

    let huge = [
        json!(i64::MAX),
        json!(i64::MAX),
        json!(i64::MAX - 1),
        json!(1_i64 << 62),
        json!(1_i64 << 41),
        json!(u64::MAX),
        json!(1e30),
    ];
    let mut tasks = Vec::new();
    for (k, size) in huge.iter().cycle().take(24).enumerate() {
        let (http, url) = (env.http.clone(), format!("{}/api/v1/volumes", env.base()));
        let body = native_body(&format!("huge{k}"), size.clone());
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .basic_auth(ALICE.0, Some(ALICE.1))
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }));
        let (http, url) = (
            env.http.clone(),
            format!("{}/api/v1.0/volumes/", env.base()),
        );
        let body = json!({"root_path": 1, "sub_path": format!("hhuge{k}"), "size_GB": size});
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .basic_auth(ALICE.0, Some(ALICE.1))
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }));
    }
    for t in tasks {
        let (s, e) = t.await.unwrap();
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
        assert!(
            e["error"]["field"] == "size_gb" || e["size_GB"][0].is_string(),
            "{e}"
        );
    }

    // Every other number field, in both APIs and the admin API: a 4xx naming it, never a 500.
    let cases: Vec<(Method, Login, String, Value, &str)> = vec![
        (
            Method::POST,
            ALICE,
            "/api/v1/volumes".into(),
            native_body("n1", json!(-1)),
            "size_gb",
        ),
        (
            Method::POST,
            ALICE,
            "/api/v1/volumes".into(),
            native_body("n2", json!("5")),
            "size_gb",
        ),
        (
            Method::POST,
            ALICE,
            "/api/v1/volumes".into(),
            native_body("n3", json!(1.5)),
            "size_gb",
        ),
        (
            Method::POST,
            ALICE,
            "/api/v1/volumes".into(),
            json!({"root_path_id": 1, "sub_path": "n4", "size_gb": 1, "uid": 4294967295_u64,
                   "clients": [{"host": "10.0.0.1"}]}),
            "uid",
        ),
        (
            Method::POST,
            ALICE,
            "/api/v1/volumes".into(),
            json!({"root_path_id": 1, "sub_path": "n5", "size_gb": 1, "gid": 1e10,
                   "clients": [{"host": "10.0.0.1"}]}),
            "gid",
        ),
        (
            Method::POST,
            ALICE,
            "/api/v1/volumes".into(),
            json!({"root_path_id": 99999999999999999999_u128 as f64, "sub_path": "n6",
                   "size_gb": 1, "clients": [{"host": "10.0.0.1"}]}),
            "root_path_id",
        ),
        (
            Method::POST,
            ALICE,
            "/api/v1/volumes?wait=true&timeout=-1".into(),
            native_body("n7", json!(1)),
            "timeout",
        ),
        (
            Method::POST,
            ADMIN,
            "/api/v1/users".into(),
            json!({"username": "carol", "password": "longenough", "quota_gb": i64::MAX}),
            "quota_gb",
        ),
        (
            Method::PATCH,
            ADMIN,
            "/api/v1/users/bob".into(),
            json!({"quota_gb": 1_i64 << 62}),
            "quota_gb",
        ),
        (
            Method::PATCH,
            ADMIN,
            "/api/v1/users/bob".into(),
            json!({"quota_gb": "9"}),
            "quota_gb",
        ),
        (
            Method::POST,
            ADMIN,
            "/api/v1/rootpaths".into(),
            json!({"server": "srv1", "path": "/srv/other", "capacity_gb": i64::MAX}),
            "capacity_gb",
        ),
        // Strings without a natural bound have one too.
        (
            Method::POST,
            ADMIN,
            "/api/v1/servers".into(),
            json!({"name": "s9", "ssh_host": "127.0.0.1", "ssh_key": format!("/{}", "k".repeat(5000)),
                   "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA"}),
            "ssh_key",
        ),
        (
            Method::PATCH,
            ADMIN,
            "/api/v1/servers/srv1".into(),
            json!({"host_key": format!("ssh-ed25519 {}", "A".repeat(10_000))}),
            "host_key",
        ),
    ];
    let lists_before = admin_lists(&env).await;
    for (m, user, path, body, field) in cases {
        let (s, e) = env.req(m, Some(user), &path, Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {body}: {e}");
        assert_eq!(e["error"]["field"], field, "{path} {body}: {e}");
        // Refused admin posts leave the servers, root paths and users as they were.
        assert_eq!(admin_lists(&env).await, lists_before, "{path} {body}");
    }
    let (s, e) = env
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1.0/volumes/",
            Some(json!({"root_path": "99999999999999999999", "sub_path": "h", "size_GB": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    // Ids in paths that are no volume's: 404, never 500.
    for id in ["99999999999999999999", "-1", "0", "1e3", "abc"] {
        for m in [Method::GET, Method::DELETE] {
            let (s, e) = env
                .req(
                    m.clone(),
                    Some(ALICE),
                    &format!("/api/v1/volumes/{id}"),
                    None,
                )
                .await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{m} {id}: {e}");
            let (s, e) = env
                .req(
                    m.clone(),
                    Some(ALICE),
                    &format!("/api/v1.0/volumes/{id}/"),
                    None,
                )
                .await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{m} {id}: {e}");
        }
    }

    // The books are untouched, and what was created can be deleted.
    assert_eq!(env.user_row("alice").await["used_gb"], 1);
    assert_eq!(env.user_row("bob").await["quota_gb"], 50);
    assert_eq!(root_path_allocated(&env).await, 1);
    assert_eq!(env.all_volumes().await.len(), 1);
    let (s, v) = env.delete_wait(ALICE, small).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "deleted");
    assert_eq!(env.user_row("alice").await["used_gb"], 0);
    assert_eq!(root_path_allocated(&env).await, 0);
}

/// A locked account changes nothing through either API: every mutating endpoint is a 403,
/// and the volume is as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_account_can_change_nothing() {
    let env = Env::start(1, 100, 50).await;
    let id = env
        .create_available("mine", json!([{"host": "10.0.0.1"}]))
        .await;
    let before = env.volume(id).await;
    env.cli_stdin_ok(&["user", "add", "root2", "--admin"], "root2-pass-1");
    for who in ["alice", "root2"] {
        let (s, e) = env
            .req(
                Method::PATCH,
                Some(ADMIN),
                &format!("/api/v1/users/{who}"),
                Some(json!({"locked": true})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{e}");
    }
    let root2 = ("root2", "root2-pass-1");
    let attempts: Vec<(Method, Login, String, Option<Value>)> = vec![
        (
            Method::PATCH,
            ALICE,
            format!("/api/v1/volumes/{id}"),
            Some(json!({"clients": [{"host": "*", "options": "rw,no_root_squash"}]})),
        ),
        (Method::DELETE, ALICE, format!("/api/v1/volumes/{id}"), None),
        (
            Method::POST,
            ALICE,
            "/api/v1/volumes".into(),
            Some(native_body("other", json!(1))),
        ),
        (
            Method::DELETE,
            ALICE,
            format!("/api/v1.0/volumes/{id}/"),
            None,
        ),
        (
            Method::POST,
            ALICE,
            "/api/v1.0/volumes/".into(),
            Some(json!({"root_path": 1, "sub_path": "h", "size_GB": 1})),
        ),
        // A locked administrator changes nothing either.
        (Method::DELETE, root2, format!("/api/v1/volumes/{id}"), None),
        // Every admin route a locked administrator might use is in the fast tier
        // (tests/api.rs); here what would reach the server.
    ];
    for (m, user, path, body) in attempts {
        let (s, e) = env.req(m.clone(), Some(user), &path, body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{} {m} {path}: {e}", user.0);
    }
    // Reading is still allowed.
    let (s, _) = env
        .req(
            Method::GET,
            Some(ALICE),
            &format!("/api/v1/volumes/{id}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let after = env.volume(id).await;
    assert_eq!(after, before);
    assert_eq!(env.all_volumes().await.len(), 1);
    assert_eq!(env.user_row("alice").await["locked"], true);
    let (_, users) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/users", None)
        .await;
    assert_eq!(users.as_array().unwrap().len(), 4, "{users}");
    let etab = env.server("srv1").etab().unwrap();
    assert_eq!(
        etab_entries(&etab, "/srv/nfsprov/pool1/mine")
            .iter()
            .filter(|e| e.starts_with("10.0.0.1("))
            .count(),
        1,
        "{etab}"
    );
    assert!(!etab.contains("no_root_squash"), "{etab}");
}

/// Bob's volume is his business: alice's conflicting creates are refused without naming his
/// path or its state, and his Idempotency-Key is not hers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_do_not_reveal_another_tenants_volumes() {
    let env = Env::start(1, 100, 50).await;
    let (s, bob_vol) = env
        .req(
            Method::POST,
            Some(BOB),
            "/api/v1/volumes?wait=true",
            Some(
                json!({"root_path_id": 1, "sub_path": "team/bob-secret", "size_gb": 1,
                        "clients": [{"host": "10.0.0.1"}]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{bob_vol}");

    for sub in ["team", "team/bob-secret", "team/bob-secret/x"] {
        let (s, e) = env
            .req(
                Method::POST,
                Some(ALICE),
                "/api/v1/volumes",
                Some(native_body(sub, json!(1))),
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT, "{e}");
        let msg = e["error"]["message"].as_str().unwrap();
        assert_eq!(e["error"]["field"], "sub_path");
        assert!(
            msg.contains("the path overlaps an existing volume"),
            "{msg}"
        );
        // Only what she sent: not his path, name or state.
        assert_eq!(
            msg,
            format!(
                "/srv/nfsprov/pool1/{sub}: the path overlaps an existing volume; choose another sub_path"
            )
        );

        let (s, e) = env
            .req(
                Method::POST,
                Some(ALICE),
                "/api/v1.0/volumes/",
                Some(json!({"root_path": 1, "sub_path": sub, "size_GB": 1})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
        assert_eq!(e["sub_path"][0], msg, "{e}");
    }
    // Her own volumes she may be told about.
    env.create_available("mine", json!([{"host": "10.0.0.1"}]))
        .await;
    let (s, e) = env
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1/volumes",
            Some(native_body("mine/sub", json!(1))),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("overlaps your volume /srv/nfsprov/pool1/mine"),
        "{e}"
    );

    // The same Idempotency-Key from two users: two volumes, neither sees the other's.
    let post_keyed = |user: (&'static str, &'static str), sub: &'static str| {
        let (http, url) = (env.http.clone(), format!("{}/api/v1/volumes", env.base()));
        async move {
            let r = http
                .post(url)
                .basic_auth(user.0, Some(user.1))
                .header("Idempotency-Key", "shared-key")
                .json(&native_body(sub, json!(1)))
                .send()
                .await
                .unwrap();
            let replayed = r.headers().contains_key("idempotent-replayed");
            (r.status(), replayed, r.json::<Value>().await.unwrap())
        }
    };
    let (s, replayed, bobs) = post_keyed(BOB, "bob-keyed").await;
    assert_eq!((s, replayed), (StatusCode::ACCEPTED, false), "{bobs}");
    let (s, replayed, alices) = post_keyed(ALICE, "alice-keyed").await;
    assert_eq!((s, replayed), (StatusCode::ACCEPTED, false), "{alices}");
    assert_ne!(alices["id"], bobs["id"]);
    assert_eq!(alices["owner"], "alice");
}

/// A hootie `allowed_hosts` of thousands of clients used to be de-duplicated in quadratic time
/// on an async worker, stalling every request, and was then accepted. It is refused at once
/// with a 400 naming the field while `/api/v1/health` keeps answering; a list at the limit is
/// accepted and exported on the real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_lists_over_the_limit_are_refused_quickly_and_the_limit_is_served() {
    let env = Env::start(1, 100, 50).await;
    let ip = |i: usize| format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    let hosts = |n: usize| (0..n).map(ip).collect::<Vec<_>>();

    // Health is polled all along; its slowest answer is the stall everyone else would see.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (http, url, stop) = (
            env.http.clone(),
            format!("{}/api/v1/health", env.base()),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let t = Instant::now();
                let r = http.get(&url).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                slowest = slowest.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            slowest
        })
    };
    let big = hosts(3000).join(" ");
    for _ in 0..3 {
        let t = Instant::now();
        let (s, e) = env
            .req(
                Method::POST,
                Some(ALICE),
                "/api/v1.0/volumes/",
                Some(json!({"root_path": 1, "sub_path": "big", "size_GB": 1,
                            "allowed_hosts": big})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
        let msg = e["allowed_hosts"][0].as_str().unwrap_or_default();
        assert!(msg.contains("at most 64"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }
    // Native create and PATCH: the same limit, naming `clients`.
    let clients = |n: usize| -> Value {
        hosts(n)
            .into_iter()
            .map(|h| json!({"host": h}))
            .collect::<Vec<_>>()
            .into()
    };
    let (s, e) = env
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1/volumes",
            Some(json!({"root_path_id": 1, "sub_path": "big", "size_gb": 1,
                        "clients": clients(65)})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["field"], "clients", "{e}");
    let (s, e) = env
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1/volumes",
            Some(json!({"root_path_id": 1, "sub_path": "dup", "size_gb": 1,
                        "clients": [{"host": "A.example"}, {"host": "10.0.0.1"}, {"host": "a.EXAMPLE"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["field"], "clients[2].host", "{e}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let slowest = poller.await.unwrap();
    assert!(
        slowest < Duration::from_secs(3),
        "health stalled for {slowest:?}"
    );
    assert!(env.all_volumes().await.is_empty());

    // At the limit: accepted and exported to all 64 clients.
    let (s, v) = env
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1.0/volumes/",
            Some(json!({"root_path": 1, "sub_path": "wide", "size_GB": 1,
                        "allowed_hosts": hosts(64).join(", ")})),
        )
        .await;
    // 201 once applied; 202 if a slow server took longer than hootie's wait.
    assert!(s == StatusCode::CREATED || s == StatusCode::ACCEPTED, "{v}");
    let id = v["pk"].as_i64().unwrap();
    let vol = env
        .wait_volume(id, Duration::from_secs(30), |v| v["state"] == "available")
        .await;
    assert_eq!(vol["clients"].as_array().unwrap().len(), 64);
    let etab = env.server("srv1").etab().unwrap();
    assert_eq!(
        etab_entries(&etab, "/srv/nfsprov/pool1/wide").len(),
        64,
        "{etab}"
    );
    let (s, e) = env.patch_clients(ALICE, id, clients(65)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["field"], "clients", "{e}");
    let (s, v) = env.patch_clients(ALICE, id, clients(64)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// hootie saved a volume only after the server had it. A hootie create the server cannot
/// export (a client name its resolver does not know) is a 502 with the server's message and leaves
/// nothing: not listed, quota and capacity free, its empty directory gone. Data in a
/// directory that was already there is kept. The native API keeps its `error` volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hootie_create_the_server_refuses_leaves_nothing_behind() {
    let env = Env::start(1, 100, 50).await;
    let srv = env.server("srv1");
    let (s, e) = env
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1.0/volumes/",
            Some(
                json!({"root_path": 1, "sub_path": "refused/deep", "size_GB": 7,
                        "allowed_hosts": "nosuchhost.test"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{e}");
    let err = e["error"].as_str().unwrap();
    assert!(err.contains("nosuchhost.test"), "{err}");
    assert!(
        err.contains("did not resolve on server srv1"),
        "what the server's resolver said: {err}"
    );

    let (_, list) = env
        .req(Method::GET, Some(ALICE), "/api/v1.0/volumes/", None)
        .await;
    assert_eq!(list, json!([]));
    assert_eq!(env.user_row("alice").await["used_gb"], 0);
    assert_eq!(root_path_allocated(&env).await, 0);
    assert!(!srv.host_path("/srv/nfsprov/pool1/refused/deep").exists());
    assert!(!env.managed_file("srv1").contains("refused"));

    // A directory with data in it is never removed (the root path retains it).
    let pre = srv.host_path("/srv/nfsprov/pool1/had-data");
    std::fs::create_dir_all(&pre).unwrap();
    std::fs::write(pre.join("precious"), "keep me").unwrap();
    let (s, e) = env
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1.0/volumes/",
            Some(json!({"root_path": 1, "sub_path": "had-data", "size_GB": 1,
                        "allowed_hosts": "nosuchhost.test"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{e}");
    let kept: Vec<_> = [pre.join("precious")]
        .into_iter()
        .chain(
            std::fs::read_dir(srv.host_path("/srv/nfsprov/pool1/.nfsprov-trash"))
                .into_iter()
                .flatten()
                .map(|d| d.unwrap().path().join("precious")),
        )
        .filter(|p| p.exists())
        .collect();
    assert_eq!(
        kept.len(),
        1,
        "the data is kept once, in place or in the trash"
    );
    assert_eq!(std::fs::read_to_string(&kept[0]).unwrap(), "keep me");
    assert_eq!(env.user_row("alice").await["used_gb"], 0);

    // The native API keeps the volume, in `error`, for its owner to fix.
    let (s, v) = env
        .create(ALICE, 1, "native", 1, json!([{"host": "nosuchhost.test"}]))
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(v["state"], "error");
    assert_eq!(
        env.volume(v["id"].as_i64().unwrap()).await["state"],
        "error"
    );
    assert_eq!(env.user_row("alice").await["used_gb"], 1);

    // In hootie's view a volume is gone once its DELETE is answered, even while a server that
    // is down keeps it `deleting`.
    let kept = env
        .create_available("kept", json!([{"host": "10.0.0.1"}]))
        .await;
    env.server("srv1").stop().unwrap();
    let (s, _) = env
        .req(
            Method::DELETE,
            Some(ALICE),
            &format!("/api/v1.0/volumes/{kept}/"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(env.volume(kept).await["state"], "deleting");
    let (_, list) = env
        .req(Method::GET, Some(ALICE), "/api/v1.0/volumes/", None)
        .await;
    assert!(
        !list.as_array().unwrap().iter().any(|v| v["pk"] == kept),
        "{list}"
    );
    let (s, _) = env
        .req(
            Method::GET,
            Some(ALICE),
            &format!("/api/v1.0/volumes/{kept}/"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// The operator's limits are the ones enforced (`NFSPROV_MAX_VOLUME_GB`,
/// `NFSPROV_MAX_CLIENTS`), and a listing is one bounded page at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_limits_are_enforced_and_listings_are_paged() {
    let mut env = Env::start(1, 100, 50).await;
    env.restart_with(&[
        ("NFSPROV_MAX_VOLUME_GB", "10"),
        ("NFSPROV_MAX_CLIENTS", "3"),
    ])
    .await;
    let (s, e) = env
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1/volumes",
            Some(native_body("eleven", json!(11))),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["field"], "size_gb");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("10 GB"),
        "{e}"
    );
    let (s, e) = env
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1.0/volumes/",
            Some(json!({"root_path": 1, "sub_path": "four", "size_GB": 1,
                        "allowed_hosts": "10.0.0.1 10.0.0.2 10.0.0.3 10.0.0.4"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["allowed_hosts"][0]
            .as_str()
            .unwrap()
            .contains("at most 3"),
        "{e}"
    );
    let (s, v) = env
        .create(
            ALICE,
            1,
            "ten",
            10,
            json!([{"host": "10.0.0.1"}, {"host": "10.0.0.2"}, {"host": "10.0.0.3"}]),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "available");

    // Listings come in pages of at most 10,000 (a deleted history grows without bound),
    // linked by a `Link: <...>; rel="next"` header.
    for sub in ["p2", "p3"] {
        let id = env
            .create_accepted(sub, json!([{"host": "10.0.0.1"}]))
            .await;
        if sub == "p3" {
            let (s, _) = env
                .req(
                    Method::DELETE,
                    Some(ALICE),
                    &format!("/api/v1/volumes/{id}"),
                    None,
                )
                .await;
            assert_eq!(s, StatusCode::ACCEPTED);
        }
    }
    let page = |path: String| {
        let (http, url) = (env.http.clone(), format!("{}{path}", env.base()));
        async move {
            let r = http
                .get(url)
                .basic_auth(ALICE.0, Some(ALICE.1))
                .send()
                .await
                .unwrap();
            let link = r
                .headers()
                .get("link")
                .map(|l| l.to_str().unwrap().to_string());
            (r.status(), link, r.json::<Value>().await.unwrap())
        }
    };
    let (s, link, first) = page("/api/v1/volumes?include_deleted=true&limit=2".into()).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(first.as_array().unwrap().len(), 2, "{first}");
    let link = link.expect("a full page links to the next");
    let next = link
        .strip_prefix('<')
        .and_then(|l| l.split_once('>'))
        .unwrap()
        .0
        .to_string();
    let (s, link, second) = page(next).await;
    assert_eq!(s, StatusCode::OK, "{second}");
    assert_eq!(second.as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second[0]["sub_path"], "p3");
    assert!(link.is_none(), "{link:?}");
    for bad in ["limit=0", "limit=10001", "limit=-1", "after=x"] {
        let (s, _, e) = page(format!("/api/v1/volumes?{bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {e}");
        assert!(e["error"]["field"].is_string(), "{bad}: {e}");
    }
}
