//! Bad input: each case is a 4xx that names the field, and nothing reaches the server.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn native_case(field_override: (&str, Value)) -> Value {
    let mut body = json!({"root_path_id": 1, "sub_path": "ok", "size_gb": 1,
                          "clients": [{"host": "10.0.0.1", "options": "rw"}]});
    let (k, v) = field_override;
    if let Some(rest) = k.strip_prefix("clients[0].") {
        body["clients"][0][rest] = v;
    } else {
        body[k] = v;
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_refused_with_the_field_named_and_nothing_applied() {
    let env = Env::start(1, 100, 50).await;
    let srv = env.server("srv1");
    let pool = srv.host_path("/srv/nfsprov/pool1");
    let listing = |p: &std::path::Path| {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before_dirs = listing(&pool);
    let before_file = env.managed_file("srv1");
    let before_etab = srv.etab().unwrap();

    // (field as sent, value, field the error must name). Every validator's cases are in the
    // fast tier (tests/api.rs); here the ones a shell or exportfs would act on, sent to the
    // real binary in front of a real server, which must see none of them.
    let native: Vec<(&str, Value, &str)> = vec![
        ("sub_path", json!("../etc"), "sub_path"),
        ("sub_path", json!(";rm -rf /"), "sub_path"),
        ("sub_path", json!("$(reboot)"), "sub_path"),
        ("sub_path", json!("`id`"), "sub_path"),
        ("sub_path", json!("a\nb"), "sub_path"),
        ("sub_path", json!("-rf"), "sub_path"),
        ("sub_path", json!(".nfsprov-trash"), "sub_path"),
        ("clients[0].host", json!(";rm"), "clients[0].host"),
        ("clients[0].host", json!("$(x)"), "clients[0].host"),
        ("clients[0].host", json!("host(rw)"), "clients[0].host"),
        ("clients[0].host", json!("-host"), "clients[0].host"),
        (
            "clients[0].options",
            json!("rw;reboot"),
            "clients[0].options",
        ),
        ("clients[0].options", json!("rw sync"), "clients[0].options"),
        ("clients[0].options", json!("fsid=0"), "clients[0].options"),
        (
            "clients[0].options",
            json!(["rw", "$(id)"]),
            "clients[0].options",
        ),
        ("mode", json!("4755"), "mode"),
        ("size_gb", json!(i64::MAX), "size_gb"),
        ("root_path_id", json!(999), "root_path_id"),
    ];
    for (field, value, expect) in &native {
        let body = native_case((field, value.clone()));
        let (s, e) = env
            .req(Method::POST, Some(ALICE), "/api/v1/volumes", Some(body))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{field}={value}: {e}");
        assert_eq!(e["error"]["field"], *expect, "{field}={value}: {e}");
        let msg = e["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.len() > 5,
            "{field}={value}: message should explain: {e}"
        );
    }

    // hootie's API: DRF-style {"field": ["message"]}.
    let hootie: Vec<(Value, &str)> = vec![
        (
            json!({"root_path": 1, "sub_path": "../x", "size_GB": 1}),
            "sub_path",
        ),
        (
            json!({"root_path": 999, "sub_path": "ok", "size_GB": 1}),
            "root_path",
        ),
        (
            json!({"root_path": 1, "sub_path": "ok", "size_GB": 1, "allowed_hosts": "a;b"}),
            "allowed_hosts",
        ),
        (
            json!({"root_path": 1, "sub_path": "ok", "size_GB": 1, "options": "rw;reboot"}),
            "options",
        ),
    ];
    for (body, expect) in &hootie {
        let (s, e) = env
            .req(
                Method::POST,
                Some(ALICE),
                "/api/v1.0/volumes/",
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {e}");
        assert!(
            e[*expect][0].is_string(),
            "{body}: expected a {expect} error, got {e}"
        );
    }

    // Malformed JSON is a 400 too.
    let r = env
        .http
        .post(format!("{}/api/v1/volumes", env.base()))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Nothing was recorded, reserved or sent to the server.
    assert!(env.all_volumes().await.is_empty());
    for u in ["alice", "bob"] {
        assert_eq!(env.user_row(u).await["used_gb"], 0);
    }
    assert_eq!(listing(&pool), before_dirs);
    assert_eq!(env.managed_file("srv1"), before_file);
    assert_eq!(srv.etab().unwrap(), before_etab);
    assert!(!srv.host_path("/srv/nfsprov/etc").exists());
}

/// Bad admin posts against the real binary: the exact status, the field named, and afterwards
/// the server, root path and user lists are as before and nothing appeared on the server. (Every
/// admin validator's cases are in the fast tier: tests/api.rs `admin_inputs_name_their_field`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_posts_change_nothing() {
    let env = Env::start(1, 100, 50).await;
    let srv = env.server("srv1");
    let before = admin_lists(&env).await;
    let host_key = srv.host_key.clone();
    let key = "/nonexistent/id_ed25519";
    let cases: Vec<(Method, &str, Value, &str, StatusCode)> = vec![
        (
            Method::POST,
            "/api/v1/rootpaths",
            json!({"server": "srv1", "path": "relative", "capacity_gb": 1}),
            "path",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/rootpaths",
            json!({"server": "srv1", "path": "/srv/nfsprov/pool1/inner", "capacity_gb": 1}),
            "path",
            StatusCode::CONFLICT,
        ),
        (
            Method::POST,
            "/api/v1/rootpaths",
            json!({"server": "nope", "path": "/srv/nfsprov/x", "capacity_gb": 1}),
            "server",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/rootpaths",
            json!({"server": "srv1", "path": "/srv/nfsprov/y", "capacity_gb": 0}),
            "capacity_gb",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/servers",
            json!({"name": "srv1", "ssh_host": "127.0.0.1", "ssh_key": key, "host_key": host_key}),
            "name",
            StatusCode::CONFLICT,
        ),
        (
            Method::POST,
            "/api/v1/servers",
            json!({"name": "s9", "ssh_host": "-oProxyCommand=touch /tmp/nfsprov-pwned", "ssh_key": key,
                   "host_key": host_key}),
            "ssh_host",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PATCH,
            "/api/v1/servers/srv1",
            json!({"host_key": "ssh-ed25519 not base64!"}),
            "host_key",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/users",
            json!({"username": "Bad User", "password": "longenough"}),
            "username",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/users",
            json!({"username": "carol", "password": "longenough", "quota_gb": -1}),
            "quota_gb",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PATCH,
            "/api/v1/users/alice",
            json!({"password": "short"}),
            "password",
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (m, path, body, field, status) in cases {
        let (s, e) = env
            .req(m.clone(), Some(ADMIN), path, Some(body.clone()))
            .await;
        assert_eq!(s, status, "{m} {path} {body}: {e}");
        assert_eq!(e["error"]["field"], field, "{m} {path} {body}: {e}");
        assert_eq!(admin_lists(&env).await, before, "{m} {path} {body}");
    }
    // alice's password was not changed by the refused PATCH, and srv1's pinned key still works:
    // a create as alice is applied on the server.
    env.create_available("after-admin", json!([{"host": "10.0.0.1"}]))
        .await;
    assert!(!srv.host_path("/srv/nfsprov/x").exists());
    assert!(!srv.host_path("/srv/nfsprov/y").exists());
    assert!(!srv.host_path("/srv/nfsprov/pool1/inner").exists());
    assert!(!std::path::Path::new("/tmp/nfsprov-pwned").exists());
}
