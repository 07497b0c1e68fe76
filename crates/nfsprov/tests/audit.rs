//! The audit trail through the API and the CLI, in-process (fast tier: no root, no servers):
//! the real router behind the real front door (`serve::app`) on a real SQLite file, and the
//! real `nfsprov` binary on the same file (`audit verify`, `audit export`), which the tests
//! tamper with directly.
//!
//! Shown: a create, a patch, a delete and a host-key re-pinning each leave a record (who, from
//! where, request id, before -> after), so do administrators' changes through the API and the
//! CLI and API tokens made and revoked (never a secret); denied attempts too (with the user
//! they claimed; export-policy 403s and rate-limit 429s included), within their bound; a volume's history is its owner's, the whole trail the admins'; and
//! `nfsprov audit verify` names the first record changed behind its back.

mod inproc;

use std::net::SocketAddr;

use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};

use nfsprov::serve::HttpLimits;

use inproc::{ADMIN, ALICE, Api, BOB, Login, Reply, basic};

const NEW_HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

/// What these tests add to the shared [`inproc::Api`].
impl Api {
    fn db_file(&self) -> std::path::PathBuf {
        self.dir.path().join("data/nfsprov.db")
    }

    /// A request from 127.0.0.1 (as `serve` sees its peers).
    async fn req(
        &self,
        method: Method,
        login: Option<Login>,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        self.req_from("127.0.0.1", method, login, path, body).await
    }

    async fn req_from(
        &self,
        source: &str,
        method: Method,
        login: Option<Login>,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let peer: SocketAddr = format!("{source}:40000").parse().unwrap();
        let authorization = login.map(basic);
        // A client's own request id is replaced by the server's.
        let headers = [("x-request-id", "chosen-by-the-client")];
        inproc::request_from(
            &self.app,
            peer,
            method,
            authorization.as_deref(),
            path,
            &headers,
            body,
        )
        .await
    }

    /// Every record, as an administrator reads them.
    async fn trail(&self) -> Vec<Value> {
        let r = self
            .req(Method::GET, Some(ADMIN), "/api/v1/audit", None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        r.json.as_array().unwrap().clone()
    }
}

fn request_id(r: &Reply) -> String {
    let id = r.headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert_ne!(id, "chosen-by-the-client");
    id
}

fn find<'a>(trail: &'a [Value], request_id: &str) -> &'a Value {
    trail
        .iter()
        .find(|r| r["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no record of request {request_id}: {trail:#?}"))
}

#[tokio::test]
async fn changes_and_denied_attempts_each_leave_a_record() {
    let api = Api::start(100, 10).await;
    let body = json!({"root_path_id": 1, "sub_path": "a", "size_gb": 2,
                      "clients": [{"host": "10.0.0.1", "options": "rw"}]});
    let created = api
        .req_from(
            "127.0.0.7",
            Method::POST,
            Some(ALICE),
            "/api/v1/volumes",
            Some(body),
        )
        .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.json);
    let id = created.json["id"].as_i64().unwrap();
    let vol = format!("/api/v1/volumes/{id}");
    let patched = api
        .req(
            Method::PATCH,
            Some(ALICE),
            &vol,
            Some(json!({"clients": [{"host": "10.0.0.2", "options": "ro"}]})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::ACCEPTED, "{}", patched.json);
    let probed = api.req(Method::DELETE, Some(BOB), &vol, None).await;
    assert_eq!(probed.status, StatusCode::NOT_FOUND);
    let over_quota = api
        .req(
            Method::POST,
            Some(BOB),
            "/api/v1/volumes",
            Some(json!({"root_path_id": 1, "sub_path": "b", "size_gb": 11,
                        "clients": [{"host": "10.0.0.1"}]})),
        )
        .await;
    assert_eq!(over_quota.status, StatusCode::CONFLICT);
    let guessed = api
        .req(
            Method::GET,
            Some(("alice", "wrong-password")),
            "/api/v1/volumes",
            None,
        )
        .await;
    assert_eq!(guessed.status, StatusCode::UNAUTHORIZED);
    let deleted = api.req(Method::DELETE, Some(ALICE), &vol, None).await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED, "{}", deleted.json);
    let repinned = api
        .req(
            Method::PATCH,
            Some(ADMIN),
            "/api/v1/servers/srv1",
            Some(json!({"host_key": NEW_HOST_KEY})),
        )
        .await;
    assert_eq!(repinned.status, StatusCode::OK, "{}", repinned.json);

    let trail = api.trail().await;
    let r = find(&trail, &request_id(&created));
    assert_eq!(
        (&r["action"], &r["actor"], &r["source"], &r["method"]),
        (
            &json!("volume.create"),
            &json!("alice"),
            &json!("127.0.0.7"),
            &json!("POST")
        )
    );
    assert_eq!(r["before"], Value::Null);
    assert_eq!(r["after"]["sub_path"], "a");
    assert_eq!(r["after"]["clients"][0]["host"], "10.0.0.1");
    assert_eq!(r["volume_id"], id);

    let r = find(&trail, &request_id(&patched));
    assert_eq!(r["action"], "volume.update");
    assert_eq!(r["before"]["clients"][0]["host"], "10.0.0.1");
    assert_eq!(r["after"]["clients"][0]["host"], "10.0.0.2");

    let r = find(&trail, &request_id(&probed));
    assert_eq!(
        (&r["action"], &r["actor"], &r["status"], &r["path"]),
        (&json!("denied"), &json!("bob"), &json!(404), &json!(vol))
    );
    assert_eq!(
        r["volume_id"],
        Value::Null,
        "a probe is not in the victim's history"
    );

    let r = find(&trail, &request_id(&over_quota));
    assert_eq!(
        (&r["action"], &r["status"]),
        (&json!("denied"), &json!(409))
    );

    let r = find(&trail, &request_id(&guessed));
    assert_eq!(
        (&r["action"], &r["status"]),
        (&json!("denied"), &json!(401))
    );
    assert_eq!(r["actor"], Value::Null);
    assert_eq!(r["after"], json!({"claimed_user": "alice"}));
    assert!(
        !r.to_string().contains("wrong-password"),
        "a password in the trail: {r}"
    );

    let r = find(&trail, &request_id(&deleted));
    assert_eq!(r["action"], "volume.delete");
    assert_eq!(r["after"]["state"], "deleting");

    let r = find(&trail, &request_id(&repinned));
    assert_eq!(
        (&r["action"], &r["object"], &r["actor"]),
        (
            &json!("server.host_key"),
            &json!("server/srv1"),
            &json!("admin")
        )
    );
    assert_eq!(
        r["after"]["host_key"],
        "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"
    );
    assert_ne!(r["before"]["host_key"], r["after"]["host_key"]);
}

#[tokio::test]
async fn a_volumes_history_is_its_owners_and_the_whole_trail_the_admins() {
    let api = Api::start(100, 10).await;
    let body = json!({"root_path_id": 1, "sub_path": "a", "size_gb": 1,
                      "clients": [{"host": "10.0.0.1"}]});
    let created = api
        .req(Method::POST, Some(ALICE), "/api/v1/volumes", Some(body))
        .await;
    let id = created.json["id"].as_i64().unwrap();
    let vol = format!("/api/v1/volumes/{id}");
    api.req(Method::DELETE, Some(ALICE), &vol, None).await;
    let history = format!("{vol}/history");

    let mine = api.req(Method::GET, Some(ALICE), &history, None).await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.json);
    let actions: Vec<&str> = mine
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["volume.create", "volume.delete"]);
    // Paged like the other listings: a full page links to the next.
    let first = api
        .req(
            Method::GET,
            Some(ALICE),
            &format!("{history}?limit=1"),
            None,
        )
        .await;
    assert_eq!(first.json.as_array().unwrap().len(), 1);
    let next = first.headers[header::LINK].to_str().unwrap();
    let after = mine.json[0]["id"].as_i64().unwrap();
    assert_eq!(
        next,
        format!("<{history}?after={after}&limit=1>; rel=\"next\"")
    );
    let bad = api
        .req(
            Method::GET,
            Some(ALICE),
            &format!("{history}?limit=0"),
            None,
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json["error"]["field"], "limit");

    // Another user's volume: 404, as everywhere; the admin sees it.
    let theirs = api.req(Method::GET, Some(BOB), &history, None).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    let admin = api.req(Method::GET, Some(ADMIN), &history, None).await;
    assert_eq!(admin.json, mine.json);
    // The whole trail is the admins'.
    let all = api
        .req(Method::GET, Some(ALICE), "/api/v1/audit", None)
        .await;
    assert_eq!(all.status, StatusCode::FORBIDDEN);
    assert_eq!(all.json["error"]["code"], "forbidden");
    assert!(api.trail().await.len() >= 2);
}

#[tokio::test]
async fn denied_attempts_are_recorded_within_their_bound() {
    let api = Api::start(100, 10).await;
    let before = api.trail().await.len();
    // 30 requests without credentials from one address: 20 are recorded (the per-source
    // bound), and the other 10 are counted with the next attempt recorded.
    for _ in 0..30 {
        let r = api
            .req_from("127.0.0.9", Method::GET, None, "/api/v1/volumes", None)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    api.req_from("127.0.0.10", Method::GET, None, "/api/v1/volumes", None)
        .await;
    let trail = api.trail().await;
    let new = &trail[before..];
    let from = |src: &str| {
        new.iter()
            .filter(|r| r["action"] == "denied" && r["source"] == src)
            .count()
    };
    assert_eq!(from("127.0.0.9"), 20);
    assert_eq!(from("127.0.0.10"), 1);
    let suppressed: Vec<&Value> = new
        .iter()
        .filter(|r| r["action"] == "denied.suppressed")
        .collect();
    assert_eq!(suppressed.len(), 1, "{new:#?}");
    assert_eq!(suppressed[0]["after"]["count"], 10);
}

fn nfsprov(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_nfsprov"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn audit_verify_names_the_first_record_changed_behind_its_back() {
    let api = Api::start(100, 10).await;
    for sub in ["a", "b"] {
        let body = json!({"root_path_id": 1, "sub_path": sub, "size_gb": 1,
                          "clients": [{"host": "10.0.0.1"}]});
        let r = api
            .req(Method::POST, Some(ALICE), "/api/v1/volumes", Some(body))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
    }
    let data = api.dir.path().join("data");
    let ok = nfsprov(&data, &["audit", "verify"]);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let total = api.trail().await.len();
    assert!(out.contains(&format!("{total} records")), "{out}");

    // Export: JSON lines from the given id on, each with its hashes.
    let export = nfsprov(&data, &["audit", "export", "--since", "2"]);
    assert!(export.status.success());
    let lines: Vec<Value> = String::from_utf8(export.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), total - 2);
    assert_eq!(lines[0]["id"], 3);
    assert_eq!(lines[1]["prev_hash"], lines[0]["hash"]);

    // One field of one record changed in the file (its triggers dropped first).
    let c = rusqlite::Connection::open(api.db_file()).unwrap();
    c.execute_batch(
        "DROP TRIGGER audit_append_only_update; \
         UPDATE audit SET after = replace(after, '\"size_gb\":1', '\"size_gb\":9') \
         WHERE action = 'volume.create' AND after LIKE '%\"sub_path\":\"b\"%'",
    )
    .unwrap();
    let changed: i64 = c
        .query_row(
            "SELECT id FROM audit WHERE after LIKE '%\"size_gb\":9%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let bad = nfsprov(&data, &["audit", "verify"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("audit record {changed}:")),
        "{changed}: {err}"
    );
}

#[tokio::test]
async fn a_host_key_re_pinned_from_the_cli_is_recorded() {
    let api = Api::start(100, 10).await;
    let data = api.dir.path().join("data");
    let pinned = nfsprov(
        &data,
        &["server", "pin", "srv1", "--host-key", NEW_HOST_KEY],
    );
    assert!(
        pinned.status.success(),
        "{}",
        String::from_utf8_lossy(&pinned.stderr)
    );
    let trail = api.trail().await;
    let r = trail.last().unwrap();
    assert_eq!(
        (&r["action"], &r["method"], &r["path"], &r["source"]),
        (
            &json!("server.host_key"),
            &json!("CLI"),
            &json!("server pin srv1"),
            &json!("local")
        )
    );
    assert!(r["actor"].as_str().unwrap().starts_with("cli:"), "{r}");
    assert_eq!(
        r["after"]["host_key"],
        "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"
    );
    assert!(
        nfsprov(&data, &["audit", "verify"]).status.success(),
        "the CLI's record continues the chain"
    );
}

/// Every record of `action` in `trail`.
fn with_action<'a>(trail: &'a [Value], action: &str) -> Vec<&'a Value> {
    trail.iter().filter(|r| r["action"] == action).collect()
}

#[tokio::test]
async fn admin_changes_and_tokens_are_recorded_with_before_and_after_never_a_secret() {
    let api = Api::start(100, 10).await;
    let trail = api.trail().await;
    // The set-up's creates (a server, a root path, two users), as the administrator.
    let r = with_action(&trail, "server.create")[0];
    assert_eq!(
        (&r["object"], &r["actor"]),
        (&json!("server/srv1"), &json!("admin"))
    );
    assert!(
        r["after"]["host_key"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:"),
        "{r}"
    );
    let r = with_action(&trail, "rootpath.create")[0];
    assert_eq!(
        (&r["object"], &r["after"]["capacity_gb"]),
        (&json!("rootpath/1"), &json!(100))
    );
    let users: Vec<&Value> = with_action(&trail, "user.create")
        .into_iter()
        .map(|r| &r["object"])
        .collect();
    assert_eq!(users, [&json!("user/alice"), &json!("user/bob")]);

    let role = api
        .req(
            Method::PATCH,
            Some(ADMIN),
            "/api/v1/users/bob",
            Some(json!({"role": "auditor", "quota_gb": 5, "locked": true, "password": "new-pass-123"})),
        )
        .await;
    assert_eq!(role.status, StatusCode::OK, "{}", role.json);
    let policy = api
        .req(
            Method::PATCH,
            Some(ADMIN),
            "/api/v1/rootpaths/1",
            Some(json!({"export_policy": {"allowed_options": ["insecure"]}})),
        )
        .await;
    assert_eq!(policy.status, StatusCode::OK, "{}", policy.json);
    let made = api
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1/tokens",
            Some(json!({"name": "laptop"})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.json);
    let (token_id, secret) = (
        made.json["id"].as_i64().unwrap(),
        made.json["secret"].as_str().unwrap().to_string(),
    );
    let revoked = api
        .req(
            Method::DELETE,
            Some(ALICE),
            &format!("/api/v1/tokens/{token_id}"),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);

    let trail = api.trail().await;
    let r = find(&trail, &request_id(&role));
    assert_eq!(
        (&r["action"], &r["object"]),
        (&json!("user.update"), &json!("user/bob"))
    );
    assert_eq!(
        (
            &r["before"]["role"],
            &r["before"]["quota_gb"],
            &r["before"]["locked"]
        ),
        (&json!("user"), &json!(10), &json!(false))
    );
    assert_eq!(
        (
            &r["after"]["role"],
            &r["after"]["quota_gb"],
            &r["after"]["locked"]
        ),
        (&json!("auditor"), &json!(5), &json!(true))
    );
    assert_eq!(r["after"]["password"], "changed");

    let r = find(&trail, &request_id(&policy));
    assert_eq!(
        (&r["action"], &r["object"]),
        (&json!("rootpath.export_policy"), &json!("rootpath/1"))
    );
    assert_eq!(r["before"]["allowed_options"], json!([]));
    assert_eq!(r["after"]["allowed_options"], json!(["insecure"]));

    let r = find(&trail, &request_id(&made));
    assert_eq!(
        (&r["action"], &r["object"], &r["actor"], &r["after"]["name"]),
        (
            &json!("token.create"),
            &json!(format!("token/{token_id}")),
            &json!("alice"),
            &json!("laptop")
        )
    );
    let r = find(&trail, &request_id(&revoked));
    assert_eq!(
        (&r["action"], &r["before"]["name"], &r["after"]),
        (&json!("token.revoke"), &json!("laptop"), &Value::Null)
    );

    // Neither the token, nor its stored hash, nor a password, anywhere in the trail.
    let all = Value::from(trail).to_string();
    let hash = nfsprov::auth::token_hash(&secret);
    for secret in [
        secret.as_str(),
        hash.as_str(),
        "new-pass-123",
        ALICE.1,
        BOB.1,
    ] {
        assert!(!all.contains(secret), "{secret:?} is in the trail");
    }
    let verified = nfsprov(&api.dir.path().join("data"), &["audit", "verify"]);
    assert!(verified.status.success(), "{verified:?}");
}

#[tokio::test]
async fn export_policy_refusals_and_rate_limits_are_recorded_as_denied() {
    let mut limits = HttpLimits::default();
    limits.rate.per_user = 1;
    // Enough for the set-up's four changes by the administrator.
    limits.rate.burst_per_user = 5;
    let api = Api::start_with(&limits, 100, 10).await;
    // The default policy: no root squash off for ordinary users.
    let refused = api
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1/volumes",
            Some(json!({"root_path_id": 1, "sub_path": "a", "size_gb": 1,
                        "clients": [{"host": "10.0.0.1", "options": "rw,no_root_squash"}]})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.json);
    // alice's burst runs out within ten changes.
    let mut over = None;
    for n in 0..10 {
        let r = api
            .req(
                Method::POST,
                Some(ALICE),
                "/api/v1/tokens",
                Some(json!({"name": format!("t{n}")})),
            )
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            over = Some(r);
            break;
        }
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    }
    let over = over.expect("a change over alice's rate limit");

    let trail = api.trail().await;
    let r = find(&trail, &request_id(&refused));
    assert_eq!(
        (&r["action"], &r["actor"], &r["status"], &r["path"]),
        (
            &json!("denied"),
            &json!("alice"),
            &json!(403),
            &json!("/api/v1/volumes")
        )
    );
    let r = find(&trail, &request_id(&over));
    assert_eq!(
        (&r["action"], &r["actor"], &r["status"], &r["method"]),
        (
            &json!("denied"),
            &json!("alice"),
            &json!(429),
            &json!("POST")
        )
    );
}

#[tokio::test]
async fn administrators_changes_from_the_cli_are_recorded() {
    let api = Api::start(100, 10).await;
    let data = api.dir.path().join("data");
    for args in [
        &["user", "set", "bob", "--quota-gb", "3", "--locked", "true"][..],
        &["rootpath", "policy", "1", r#"{"max_volume_gb": 2}"#],
    ] {
        let out = nfsprov(&data, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let trail = api.trail().await;
    let r = with_action(&trail, "user.update")[0];
    assert_eq!(
        (&r["method"], &r["path"], &r["object"], &r["source"]),
        (
            &json!("CLI"),
            &json!("user set bob"),
            &json!("user/bob"),
            &json!("local")
        )
    );
    assert!(r["actor"].as_str().unwrap().starts_with("cli:"), "{r}");
    assert_eq!(
        (&r["before"]["quota_gb"], &r["before"]["locked"]),
        (&json!(10), &json!(false))
    );
    assert_eq!(
        (&r["after"]["quota_gb"], &r["after"]["locked"]),
        (&json!(3), &json!(true))
    );
    let r = with_action(&trail, "rootpath.export_policy")[0];
    assert_eq!(
        (
            &r["path"],
            &r["before"]["max_volume_gb"],
            &r["after"]["max_volume_gb"]
        ),
        (&json!("rootpath policy 1"), &Value::Null, &json!(2))
    );
    assert!(nfsprov(&data, &["audit", "verify"]).status.success());
}
