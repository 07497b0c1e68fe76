//! Export policy per root path, in-process (fast tier: no root, no servers), through the real
//! router and front door on a real SQLite file, as `tests/api.rs` does.
//!
//! Every default rule: an ordinary user is refused with a 403 naming the option or client (both
//! APIs), on create and on PATCH, and nothing is recorded; an admin is not bound. An admin
//! changes the policy with `PATCH /api/v1/rootpaths/{id}`; the listing shows it.

mod inproc;

use axum::Router;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use inproc::{ADMIN, ALICE, HOST_KEY, Login, basic};
use nfsprov::reconcile::Hub;

struct Api {
    app: Router,
    _hub: Hub,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    json: Value,
}

impl Api {
    /// Servers `srv1` (knfsd) and `gsrv` (ganesha), both never reachable (a closed port);
    /// root path 1 on srv1 with the default policy; admin and alice (quota 100 GB).
    async fn start() -> Api {
        let (app, hub, dir) = inproc::start().await;
        inproc::add_srv1_pool1(&app, 1000).await;
        let gsrv = json!({"name": "gsrv", "ssh_host": "127.0.0.1", "ssh_port": inproc::closed_port(),
                          "ssh_key": "/nonexistent/id_ed25519", "host_key": HOST_KEY,
                          "backend": "ganesha"});
        let (status, v) = inproc::send(
            &app,
            Method::POST,
            &basic(ADMIN),
            "/api/v1/servers",
            Some(gsrv),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        inproc::add_user(&app, ALICE, json!({"quota_gb": 100})).await;
        Api {
            app,
            _hub: hub,
            _dir: dir,
        }
    }

    async fn req(&self, method: Method, login: Login, path: &str, body: Option<Value>) -> Reply {
        let (status, json) = inproc::send(&self.app, method, &basic(login), path, body).await;
        Reply { status, json }
    }

    async fn create(&self, login: Login, sub: &str, clients: Value) -> Reply {
        let body = json!({"root_path_id": 1, "sub_path": sub, "size_gb": 1, "clients": clients});
        self.req(Method::POST, login, "/api/v1/volumes", Some(body))
            .await
    }

    async fn hootie_create(&self, login: Login, sub: &str, hosts: &str, options: &str) -> Reply {
        let body = json!({"root_path": 1, "sub_path": sub, "size_GB": 1,
                          "allowed_hosts": hosts, "options": options});
        self.req(Method::POST, login, "/api/v1.0/volumes/", Some(body))
            .await
    }

    async fn set_policy(&self, login: Login, rp: i64, policy: Value) -> Reply {
        self.req(
            Method::PATCH,
            login,
            &format!("/api/v1/rootpaths/{rp}"),
            Some(json!({ "export_policy": policy })),
        )
        .await
    }

    /// Every volume (deleted ones too) and the users' usage: what a refused request must not
    /// change. What a reconciler writes when it fails to connect is left out.
    async fn snapshot(&self) -> Value {
        let mut vols = self
            .req(
                Method::GET,
                ADMIN,
                "/api/v1/volumes?include_deleted=true",
                None,
            )
            .await
            .json;
        for v in vols.as_array_mut().unwrap() {
            let v = v.as_object_mut().unwrap();
            v.remove("last_error");
            v.remove("updated_at");
        }
        let users = self
            .req(Method::GET, ADMIN, "/api/v1/users", None)
            .await
            .json;
        json!({"volumes": vols, "users": users})
    }
}

/// Each default rule, as (host, options, the field named, a word of the message).
const DEFAULT_RULES: &[(&str, &str, &str, &str)] = &[
    (
        "10.0.0.0/24",
        "rw,no_root_squash",
        "options",
        "no_root_squash",
    ),
    ("10.0.0.1", "ro,insecure", "options", "insecure"),
    ("10.0.0.1", "rw,anonuid=0", "options", "anonuid=0"),
    ("10.0.0.1", "rw,anongid=0", "options", "anongid=0"),
    ("10.0.0.1", "rw,crossmnt", "options", "crossmnt"),
    ("10.0.0.1", "rw,nohide", "options", "nohide"),
    ("10.0.0.1", "rw,insecure_locks", "options", "insecure_locks"),
    ("*", "rw", "host", "client * is world-wide"),
    (
        "0.0.0.0/0",
        "rw,sync",
        "host",
        "client 0.0.0.0/0 is world-wide",
    ),
    ("10.0.0.0/7", "rw", "host", "world-wide"),
    ("::/0", "rw", "host", "world-wide"),
    ("2001:db8::/31", "rw", "host", "world-wide"),
];

#[tokio::test]
async fn every_default_rule_refuses_a_user_naming_it_and_binds_no_admin() {
    let api = Api::start().await;
    let before = api.snapshot().await;
    for (i, (host, options, part, word)) in DEFAULT_RULES.iter().enumerate() {
        // The refused client is the second: the field names its index.
        let clients =
            json!([{"host": "10.9.9.9", "options": "ro"}, {"host": host, "options": options}]);
        let r = api.create(ALICE, &format!("u{i}"), clients.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{host} {options}: {}",
            r.json
        );
        assert_eq!(r.json["error"]["code"], "forbidden", "{}", r.json);
        assert_eq!(
            r.json["error"]["field"],
            format!("clients[1].{part}"),
            "{}",
            r.json
        );
        let msg = r.json["error"]["message"].as_str().unwrap();
        assert!(msg.contains(word), "{host} {options}: {msg}");

        // hootie: the same 403, in its field-error shape on its own field names.
        let r = api
            .hootie_create(ALICE, &format!("h{i}"), host, options)
            .await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{host} {options}: {}",
            r.json
        );
        let field = if *part == "host" {
            "allowed_hosts"
        } else {
            "options"
        };
        let msg = r.json[field][0]
            .as_str()
            .unwrap_or_else(|| panic!("{}", r.json));
        assert!(msg.contains(word), "{host} {options}: {msg}");
    }
    // hootie's own defaults (`*`, `rw,sync`) are world-wide write access.
    let r = api
        .req(
            Method::POST,
            ALICE,
            "/api/v1.0/volumes/",
            Some(json!({"root_path": 1, "sub_path": "d", "size_GB": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.json);
    assert!(r.json["allowed_hosts"][0].is_string(), "{}", r.json);
    assert_eq!(
        api.snapshot().await,
        before,
        "a refused request recorded something"
    );

    // Read-only to anyone, and a named network with rw, pass the defaults.
    let ok = json!([{"host": "*", "options": "ro"}, {"host": "10.0.0.0/8", "options": "rw,root_squash,secure"}]);
    let r = api.create(ALICE, "fine", ok).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);

    // An admin is not bound by the policy.
    for (i, (host, options, _, _)) in DEFAULT_RULES.iter().enumerate() {
        let r = api
            .create(
                ADMIN,
                &format!("a{i}"),
                json!([{"host": host, "options": options}]),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::ACCEPTED,
            "admin {host} {options}: {}",
            r.json
        );
    }
}

#[tokio::test]
async fn a_patch_is_checked_against_the_policy_too() {
    let api = Api::start().await;
    let r = api
        .create(ALICE, "p", json!([{"host": "10.0.0.1", "options": "rw"}]))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    let id = r.json["id"].as_i64().unwrap();
    let path = format!("/api/v1/volumes/{id}");
    let before = api.snapshot().await;
    for (host, options, part, word) in DEFAULT_RULES {
        let body = json!({"clients": [{"host": host, "options": options}]});
        let r = api.req(Method::PATCH, ALICE, &path, Some(body)).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{host} {options}: {}",
            r.json
        );
        assert_eq!(
            r.json["error"]["field"],
            format!("clients[0].{part}"),
            "{}",
            r.json
        );
        assert!(
            r.json["error"]["message"].as_str().unwrap().contains(word),
            "{}",
            r.json
        );
    }
    assert_eq!(
        api.snapshot().await,
        before,
        "a refused PATCH changed something"
    );
    // An admin may change alice's volume to anything.
    let body = json!({"clients": [{"host": "*", "options": "rw,no_root_squash,insecure"}]});
    let r = api.req(Method::PATCH, ADMIN, &path, Some(body)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    assert_eq!(
        r.json["clients"][0]["options"],
        "insecure,rw,no_root_squash"
    );
}

#[tokio::test]
async fn an_admin_sets_the_policy_and_the_listing_shows_it() {
    let api = Api::start().await;
    let rps = api
        .req(Method::GET, ALICE, "/api/v1/rootpaths", None)
        .await
        .json;
    assert_eq!(rps[0]["export_policy"]["allowed_options"], json!([]));
    assert_eq!(rps[0]["export_policy"]["world_writable"], false);
    let isolation = rps[0]["isolation"].as_str().unwrap();
    assert!(isolation.contains("Subdirectory Exports"), "{isolation}");
    assert!(isolation.contains("guess file handles"), "{isolation}");

    // Only an admin may set it; a malformed policy is a 400 naming its field.
    let r = api
        .set_policy(ALICE, 1, json!({"world_writable": true}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.json);
    for (policy, field) in [
        (
            json!({"allowed_options": ["rw"]}),
            "export_policy.allowed_options[0]",
        ),
        (
            json!({"allowed_clients": ["10.0.0.0/8", "a;b"]}),
            "export_policy.allowed_clients[1]",
        ),
        (json!({"max_volume_gb": 0}), "export_policy.max_volume_gb"),
        (json!({"subtree": true}), "export_policy"),
    ] {
        let r = api.set_policy(ADMIN, 1, policy.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{policy}: {}", r.json);
        let f = r.json["error"]["field"].as_str().unwrap();
        assert!(f.starts_with(field), "{policy}: {f}");
    }
    let r = api.set_policy(ADMIN, 99, json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.json);

    // Allowing options and world-wide write access lifts exactly those rules.
    let r = api
        .set_policy(
            ADMIN,
            1,
            json!({"allowed_options": ["no_root_squash"], "world_writable": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(
        r.json["export_policy"]["allowed_options"],
        json!(["no_root_squash"])
    );
    let r = api
        .create(
            ALICE,
            "w",
            json!([{"host": "*", "options": "rw,no_root_squash"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    let r = api
        .create(
            ALICE,
            "w2",
            json!([{"host": "*", "options": "rw,insecure"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.json);
    assert_eq!(r.json["error"]["field"], "clients[0].options");

    // Allowed clients, a size limit and a forced subtree_check.
    let r = api
        .set_policy(
            ADMIN,
            1,
            json!({"allowed_clients": ["10.1.0.0/16", "@lab"], "max_volume_gb": 5, "subtree_check": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert!(
        r.json["isolation"]
            .as_str()
            .unwrap()
            .contains("subtree_check")
    );
    let r = api
        .create(ALICE, "n", json!([{"host": "10.2.0.1", "options": "ro"}]))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.json);
    assert_eq!(r.json["error"]["field"], "clients[0].host");
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("10.2.0.1")
    );
    let body = json!({"root_path_id": 1, "sub_path": "big", "size_gb": 6,
                      "clients": [{"host": "10.1.2.3", "options": "rw"}]});
    let r = api
        .req(Method::POST, ALICE, "/api/v1/volumes", Some(body))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.json);
    assert_eq!(r.json["error"]["field"], "size_gb");
    let r = api.hootie_create(ALICE, "bigh", "10.1.2.3", "rw").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "1 GB fits: {}", r.json);
    let r = api
        .create(
            ALICE,
            "s",
            json!([{"host": "10.1.2.0/24", "options": "rw,no_subtree_check"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.json);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no_subtree_check")
    );
    let r = api
        .create(
            ALICE,
            "s",
            json!([{"host": "10.1.2.0/24", "options": "rw"}, {"host": "@lab", "options": "ro"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    assert_eq!(
        r.json["clients"][0]["options"], "rw,subtree_check",
        "{}",
        r.json
    );
    assert_eq!(
        r.json["clients"][1]["options"], "ro,subtree_check",
        "{}",
        r.json
    );
    // An admin's explicit choice stands.
    let r = api
        .create(
            ADMIN,
            "adm",
            json!([{"host": "10.1.2.0/24", "options": "rw,no_subtree_check"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    assert_eq!(r.json["clients"][0]["options"], "rw,no_subtree_check");
}

#[tokio::test]
async fn subtree_check_cannot_be_forced_on_a_ganesha_root_path() {
    let api = Api::start().await;
    let body = json!({"server": "gsrv", "path": "/srv/g", "capacity_gb": 10,
                      "export_policy": {"subtree_check": true}});
    let r = api
        .req(Method::POST, ADMIN, "/api/v1/rootpaths", Some(body))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    assert_eq!(r.json["error"]["field"], "export_policy.subtree_check");
    let body = json!({"server": "gsrv", "path": "/srv/g", "capacity_gb": 10,
                      "export_policy": {"allowed_options": ["insecure"]}});
    let r = api
        .req(Method::POST, ADMIN, "/api/v1/rootpaths", Some(body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let id = r.json["id"].as_i64().unwrap();
    assert_eq!(
        r.json["export_policy"]["allowed_options"],
        json!(["insecure"])
    );
    let r = api
        .set_policy(ADMIN, id, json!({"subtree_check": true}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    assert_eq!(r.json["error"]["field"], "export_policy.subtree_check");
}

/// The CLI sets a policy with the root path and replaces it; a bad one names its field.
#[test]
fn the_cli_sets_and_replaces_a_policy() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_nfsprov"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let out = run(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    ok(&[
        "server",
        "add",
        "s1",
        "--ssh-host",
        "127.0.0.1",
        "--ssh-key",
        "/k",
        "--host-key",
        HOST_KEY,
    ]);
    let out = run(&[
        "rootpath",
        "add",
        "--server",
        "s1",
        "/srv/p",
        "--capacity-gb",
        "10",
        "--export-policy",
        r#"{"allowed_options": ["no_root_squash", "bogus"]}"#,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("export_policy.allowed_options[1]"), "{err}");
    ok(&[
        "rootpath",
        "add",
        "--server",
        "s1",
        "/srv/p",
        "--capacity-gb",
        "10",
        "--export-policy",
        r#"{"allowed_options": ["no_root_squash"], "subtree_check": true}"#,
    ]);
    let list = ok(&["rootpath", "list"]);
    assert!(
        list.contains(r#""allowed_options":["no_root_squash"]"#),
        "{list}"
    );
    assert!(list.contains(r#""subtree_check":true"#), "{list}");
    ok(&["rootpath", "policy", "1", "{}"]);
    let list = ok(&["rootpath", "list"]);
    assert!(list.contains(r#""allowed_options":[]"#), "{list}");
    assert!(list.contains(r#""subtree_check":false"#), "{list}");
}
