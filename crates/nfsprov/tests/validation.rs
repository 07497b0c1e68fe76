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

    // (field as sent, value, field the error must name)
    let long = "x".repeat(65);
    let native: Vec<(&str, Value, &str)> = vec![
        ("sub_path", json!("../etc"), "sub_path"),
        ("sub_path", json!(".."), "sub_path"),
        ("sub_path", json!("."), "sub_path"),
        ("sub_path", json!("/abs"), "sub_path"),
        ("sub_path", json!("a/../b"), "sub_path"),
        ("sub_path", json!("a/./b"), "sub_path"),
        ("sub_path", json!(".hidden"), "sub_path"),
        ("sub_path", json!(".nfsprov-trash"), "sub_path"),
        ("sub_path", json!("-rf"), "sub_path"),
        ("sub_path", json!("a//b"), "sub_path"),
        ("sub_path", json!("a b"), "sub_path"),
        ("sub_path", json!(";rm -rf /"), "sub_path"),
        ("sub_path", json!("$(reboot)"), "sub_path"),
        ("sub_path", json!("`id`"), "sub_path"),
        ("sub_path", json!("a|b"), "sub_path"),
        ("sub_path", json!("a'b"), "sub_path"),
        ("sub_path", json!("a\nb"), "sub_path"),
        ("sub_path", json!("a\u{0}b"), "sub_path"),
        ("sub_path", json!("ünïcode"), "sub_path"),
        ("sub_path", json!(""), "sub_path"),
        ("sub_path", json!(long), "sub_path"),
        ("sub_path", json!(42), "sub_path"),
        ("size_gb", json!(0), "size_gb"),
        ("size_gb", json!(-1), "size_gb"),
        ("size_gb", json!("5"), "size_gb"),
        ("size_gb", json!(1.5), "size_gb"),
        ("root_path_id", json!(999), "root_path_id"),
        ("root_path_id", json!("one"), "root_path_id"),
        ("clients", json!([]), "clients"),
        ("clients", json!("10.0.0.1"), "clients"),
        ("clients[0].host", json!("1.2.3.256"), "clients[0].host"),
        ("clients[0].host", json!("1.2.3.4/33"), "clients[0].host"),
        ("clients[0].host", json!("a b"), "clients[0].host"),
        ("clients[0].host", json!(";rm"), "clients[0].host"),
        ("clients[0].host", json!("$(x)"), "clients[0].host"),
        ("clients[0].host", json!(""), "clients[0].host"),
        ("clients[0].host", json!("host(rw)"), "clients[0].host"),
        ("clients[0].host", json!("10.0.0.*"), "clients[0].host"),
        ("clients[0].host", json!("fe80::1%eth0"), "clients[0].host"),
        (
            "clients[0].host",
            json!("2001:db8::/129"),
            "clients[0].host",
        ),
        ("clients[0].host", json!("@"), "clients[0].host"),
        ("clients[0].host", json!("a..b"), "clients[0].host"),
        ("clients[0].host", json!("-host"), "clients[0].host"),
        ("clients[0].host", json!("01.2.3.4"), "clients[0].host"),
        ("clients[0].options", json!("rw,ro"), "clients[0].options"),
        ("clients[0].options", json!("foo"), "clients[0].options"),
        ("clients[0].options", json!("fsid=0"), "clients[0].options"),
        (
            "clients[0].options",
            json!("anonuid=-1"),
            "clients[0].options",
        ),
        (
            "clients[0].options",
            json!("anonuid=x"),
            "clients[0].options",
        ),
        ("clients[0].options", json!("sec=foo"), "clients[0].options"),
        (
            "clients[0].options",
            json!("rw,,sync"),
            "clients[0].options",
        ),
        ("clients[0].options", json!("rw sync"), "clients[0].options"),
        (
            "clients[0].options",
            json!("refer=/x@y"),
            "clients[0].options",
        ),
        (
            "clients[0].options",
            json!("rw;reboot"),
            "clients[0].options",
        ),
        ("clients[0].options", json!("RW"), "clients[0].options"),
        (
            "clients[0].options",
            json!(["rw", "$(id)"]),
            "clients[0].options",
        ),
        ("mode", json!("4755"), "mode"),
        ("mode", json!("1777"), "mode"),
        ("mode", json!("abc"), "mode"),
        ("mode", json!("99999"), "mode"),
        ("uid", json!(-1), "uid"),
    ];
    assert!(native.len() >= 50);
    for (field, value, expect) in &native {
        let body = native_case((field, value.clone()));
        let (s, e) = env
            .req(Method::POST, Some(ALICE), "/api/v1/volumes", Some(body))
            .await;
        assert!(s.is_client_error(), "{field}={value}: status {s}, {e}");
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
            json!({"root_path": 1, "sub_path": "ok", "size_GB": 0}),
            "size_GB",
        ),
        (
            json!({"root_path": 1, "sub_path": "ok", "size_GB": "abc"}),
            "size_GB",
        ),
        (json!({"sub_path": "ok", "size_GB": 1}), "root_path"),
        (json!({"root_path": 1, "size_GB": 1}), "sub_path"),
        (json!({"root_path": 1, "sub_path": "ok"}), "size_GB"),
        (
            json!({"root_path": 999, "sub_path": "ok", "size_GB": 1}),
            "root_path",
        ),
        (
            json!({"root_path": 1, "sub_path": "ok", "size_GB": 1, "allowed_hosts": "1.2.3.256"}),
            "allowed_hosts",
        ),
        (
            json!({"root_path": 1, "sub_path": "ok", "size_GB": 1, "allowed_hosts": "a;b"}),
            "allowed_hosts",
        ),
        (
            json!({"root_path": 1, "sub_path": "ok", "size_GB": 1, "options": "rw,ro"}),
            "options",
        ),
        (
            json!({"root_path": 1, "sub_path": "ok", "size_GB": 1, "options": "no_such"}),
            "options",
        ),
        (
            json!({"root_path": 1, "sub_path": "ok", "size_GB": 1, "options": 5}),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_inputs_are_checked() {
    let env = Env::start(1, 100, 50).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/api/v1/rootpaths",
            json!({"server": "srv1", "path": "relative", "capacity_gb": 1}),
            "path",
        ),
        (
            "/api/v1/rootpaths",
            json!({"server": "srv1", "path": "/etc/x", "capacity_gb": 1}),
            "path",
        ),
        (
            "/api/v1/rootpaths",
            json!({"server": "srv1", "path": "/srv/nfsprov/pool1/inner", "capacity_gb": 1}),
            "path",
        ),
        (
            "/api/v1/rootpaths",
            json!({"server": "nope", "path": "/srv/x", "capacity_gb": 1}),
            "server",
        ),
        (
            "/api/v1/rootpaths",
            json!({"server": "srv1", "path": "/srv/y", "capacity_gb": 0}),
            "capacity_gb",
        ),
        (
            "/api/v1/servers",
            json!({"name": "Bad Name", "ssh_host": "127.0.0.1", "ssh_key": "/k", "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA"}),
            "name",
        ),
        (
            "/api/v1/servers",
            json!({"name": "s9", "ssh_host": "-oProxyCommand=x", "ssh_key": "/k", "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA"}),
            "ssh_host",
        ),
        (
            "/api/v1/servers",
            json!({"name": "s9", "ssh_host": "127.0.0.1", "ssh_key": "/k", "host_key": "nonsense"}),
            "host_key",
        ),
        (
            "/api/v1/servers",
            json!({"name": "s9", "ssh_host": "127.0.0.1", "ssh_key": "rel", "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA"}),
            "ssh_key",
        ),
        (
            "/api/v1/servers",
            json!({"name": "s9", "ssh_host": "127.0.0.1", "ssh_user": "-x", "ssh_key": "/k", "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA"}),
            "ssh_user",
        ),
        (
            "/api/v1/users",
            json!({"username": "Bad User", "password": "longenough"}),
            "username",
        ),
        (
            "/api/v1/users",
            json!({"username": "carol", "password": "short"}),
            "password",
        ),
        (
            "/api/v1/users",
            json!({"username": "carol", "password": "longenough", "quota_gb": -1}),
            "quota_gb",
        ),
    ];
    for (path, body, expect) in cases {
        let (s, e) = env
            .req(Method::POST, Some(ADMIN), path, Some(body.clone()))
            .await;
        assert!(s.is_client_error(), "{body}: {s} {e}");
        assert_eq!(e["error"]["field"], expect, "{body}: {e}");
    }
    let (_, servers) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/servers", None)
        .await;
    assert_eq!(servers.as_array().unwrap().len(), 1);
}
