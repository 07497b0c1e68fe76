//! The role matrix, in-process (fast tier: no root, no servers): every endpoint of both APIs,
//! taken from the router's own table (`nfsprov::api::route_table`), driven with every role
//! and with another tenant's ids. An endpoint this file has no expectation for fails the test,
//! so a new one cannot be missed.
//!
//! Expected: administrators do anything; auditors read everything and are refused (403) every
//! change; users are refused (403) what only administrators do, see another tenant's objects
//! as absent (404), and never read or change them. A refused request changes nothing: the
//! whole state the API shows is compared before and after each one.

mod inproc;

use axum::Router;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use inproc::{ADMIN, ALICE, BOB, HOST_KEY, Login, basic};
use nfsprov::reconcile::Hub;

const AUDREY: Login = ("audrey", "audrey-pass-1");

struct Api {
    app: Router,
    hub: Hub,
    dir: tempfile::TempDir,
}

impl Api {
    /// Server srv1 (a closed port on 127.0.0.1: never reachable), root path 1, users admin,
    /// alice and bob (role user), audrey (auditor).
    async fn start() -> Api {
        let (app, hub, dir) = inproc::start().await;
        inproc::add_srv1_pool1(&app, 1000).await;
        for (login, fields) in [
            (ALICE, json!({"quota_gb": 100})),
            (BOB, json!({"quota_gb": 100})),
            (AUDREY, json!({"role": "auditor"})),
        ] {
            inproc::add_user(&app, login, fields).await;
        }
        Api { app, hub, dir }
    }

    async fn req(
        &self,
        method: Method,
        login: Login,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.req_as(method, &basic(login), path, body).await
    }

    /// A request with `authorization` as its `Authorization` header.
    async fn req_as(
        &self,
        method: Method,
        authorization: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        inproc::send(&self.app, method, authorization, path, body).await
    }

    /// A volume of `login`'s (created without waiting for the server, which never answers).
    async fn volume_of(&self, login: Login, sub: &str) -> i64 {
        let (status, v) = self
            .req(
                Method::POST,
                login,
                "/api/v1/volumes",
                Some(volume_body(sub)),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        v["id"].as_i64().unwrap()
    }

    /// A token of `login`'s; its id.
    async fn token_of(&self, login: Login) -> i64 {
        let (status, t) = self
            .req(
                Method::POST,
                login,
                "/api/v1/tokens",
                Some(json!({"name": "own"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{t}");
        t["id"].as_i64().unwrap()
    }

    async fn snapshot(&self) -> Value {
        inproc::snapshot(&self.app).await
    }
}

fn volume_body(sub: &str) -> Value {
    json!({"root_path_id": 1, "sub_path": sub, "size_gb": 1, "clients": [{"host": "10.1.0.1"}]})
}

/// What an endpoint gives access to, by (method, path pattern) of the route table. A new
/// endpoint lands in the panic below until it is given its place here.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Access {
    /// Anyone, even without credentials.
    Public,
    /// Any signed-in user reads it.
    Read,
    /// A listing of volumes: a user's own, everyone's for administrators and auditors.
    VolumeList,
    /// One volume, read.
    VolumeRead,
    /// One volume's audit records: whoever may read the volume.
    VolumeHistory,
    /// Create a volume (owned by the caller).
    VolumeCreate,
    /// Change or delete one volume.
    VolumeWrite,
    /// Read what only administrators and auditors read.
    AdminRead,
    /// Change what only administrators change.
    AdminWrite,
    /// Each user's own API tokens, whatever the role: listed, made and revoked by their user
    /// only (another user's token is "not found", to administrators too).
    OwnTokens,
    /// A volume's snapshots, read: like the volume.
    SnapshotRead,
    /// A volume's snapshots, changed (made, deleted, restored): like changing the volume. The
    /// servers here never answer and root path 1 is a plain directory, so an allowed request
    /// gets as far as the snapshot's own checks (400 naming `layout`, 404 naming the
    /// snapshot), never a refusal by role or tenant.
    SnapshotWrite,
}

fn access(method: &Method, path: &str) -> Access {
    use Access::*;
    let path = path.trim_end_matches('/');
    match (method.as_str(), path) {
        ("GET", "/api/v1/health" | "/api/v1.0/rootpaths") => Public,
        ("GET", "/api/v1/rootpaths") => Read,
        ("GET", "/api/v1/volumes" | "/api/v1.0/volumes") => VolumeList,
        ("POST", "/api/v1/volumes" | "/api/v1.0/volumes") => VolumeCreate,
        ("GET", "/api/v1/volumes/{id}" | "/api/v1.0/volumes/{pk}") => VolumeRead,
        ("GET", "/api/v1/volumes/{id}/history") => VolumeHistory,
        ("PATCH" | "DELETE", "/api/v1/volumes/{id}") | ("DELETE", "/api/v1.0/volumes/{pk}") => {
            VolumeWrite
        }
        ("GET", "/api/v1/servers" | "/api/v1/users" | "/api/v1/audit") => AdminRead,
        ("POST", "/api/v1/servers" | "/api/v1/rootpaths" | "/api/v1/users")
        | (
            "PATCH",
            "/api/v1/servers/{name}" | "/api/v1/users/{username}" | "/api/v1/rootpaths/{id}",
        ) => AdminWrite,
        ("GET" | "POST", "/api/v1/tokens") | ("DELETE", "/api/v1/tokens/{id}") => OwnTokens,
        ("GET", "/api/v1/volumes/{id}/snapshots" | "/api/v1/volumes/{id}/snapshots/{sid}") => {
            SnapshotRead
        }
        (
            "POST",
            "/api/v1/volumes/{id}/snapshots" | "/api/v1/volumes/{id}/snapshots/{sid}/restore",
        )
        | ("DELETE", "/api/v1/volumes/{id}/snapshots/{sid}") => SnapshotWrite,
        // Usage samples of one volume (issue 12): read like the volume.
        ("GET", "/api/v1/volumes/{id}/usage") => VolumeRead,
        _ => panic!(
            "{method} {path} has no expectation in the role matrix (tests/roles.rs): \
             say which roles may use it"
        ),
    }
}

/// A body the endpoint accepts, unique per call (`n`), so an allowed request succeeds.
fn body_for(method: &Method, path: &str, n: usize) -> Option<Value> {
    let path = path.trim_end_matches('/');
    Some(match (method.as_str(), path) {
        ("POST", "/api/v1/volumes") => volume_body(&format!("m{n}")),
        ("POST", "/api/v1.0/volumes") => {
            json!({"root_path": 1, "sub_path": format!("h{n}"), "size_GB": 1, "allowed_hosts": "10.1.0.2"})
        }
        ("PATCH", "/api/v1/volumes/{id}") => json!({"clients": [{"host": format!("10.2.0.{n}")}]}),
        ("POST", "/api/v1/servers") => json!({"name": format!("srv-m{n}"), "ssh_host": "127.0.0.1",
            "ssh_port": 1, "ssh_key": "/nonexistent/id_ed25519", "host_key": HOST_KEY}),
        ("PATCH", "/api/v1/servers/{name}") => json!({"host_key": HOST_KEY}),
        ("POST", "/api/v1/rootpaths") => {
            json!({"server": "srv1", "path": format!("/srv/nfsprov/m{n}"), "capacity_gb": 10})
        }
        ("POST", "/api/v1/users") => {
            json!({"username": format!("m{n}"), "password": "matrix-pass-1"})
        }
        ("PATCH", "/api/v1/users/{username}") => json!({"quota_gb": 100 + n}),
        ("PATCH", "/api/v1/rootpaths/{id}") => {
            json!({"export_policy": {"max_volume_gb": 100 + n}})
        }
        ("POST", "/api/v1/tokens") => json!({"name": format!("matrix {n}"), "expires_in_days": 1}),
        ("POST", "/api/v1/volumes/{id}/snapshots") => json!({"name": format!("s{n}")}),
        ("POST", "/api/v1/volumes/{id}/snapshots/{sid}/restore") => {
            json!({"sub_path": format!("r{n}"), "clients": [{"host": "10.1.0.3"}]})
        }
        (_, _) if *method == Method::GET || *method == Method::DELETE => return None,
        _ => panic!("{method} {path}: no request body known for it (tests/roles.rs)"),
    })
}

/// The ids a request uses: its own, or another tenant's (bob's).
struct Ids {
    volume: i64,
    token: i64,
}

/// The path with its parameters filled in from `ids`, bob's names for the rest.
fn fill(path: &str, ids: &Ids) -> String {
    let id = if path.starts_with("/api/v1/tokens/") {
        ids.token
    } else if path.starts_with("/api/v1/rootpaths/") {
        // Root paths belong to no tenant: there is one, id 1.
        1
    } else {
        ids.volume
    };
    path.replace("{id}", &id.to_string())
        .replace("{pk}", &ids.volume.to_string())
        .replace("{sid}", "1")
        .replace("{name}", "srv1")
        .replace("{username}", BOB.0)
}

fn id_list(list: &Value, key: &str) -> Vec<i64> {
    let mut v: Vec<i64> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|x| x[key].as_i64().unwrap())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn every_endpoint_with_every_role_and_another_tenants_ids() {
    let api = Api::start().await;
    let alices = api.volume_of(ALICE, "alice-own").await;
    let bobs = api.volume_of(BOB, "bob-own").await;
    let alice_token = api.token_of(ALICE).await;
    let bob_token = api.token_of(BOB).await;
    let theirs = Ids {
        volume: bobs,
        token: bob_token,
    };
    let own = Ids {
        volume: alices,
        token: alice_token,
    };

    let table = nfsprov::api::route_table();
    let mut seen = std::collections::HashSet::new();
    for r in &table {
        assert!(
            seen.insert((r.method.clone(), r.path)),
            "{} {} twice",
            r.method,
            r.path
        );
        access(&r.method, r.path);
    }
    // Deletes last, so every other request finds the volumes alive.
    let mut routes: Vec<_> = table.iter().map(|r| (r.method.clone(), r.path)).collect();
    routes.sort_by_key(|(m, _)| *m == Method::DELETE);

    let mut n = 0;
    let mut checked = 0;
    for (method, pattern) in &routes {
        let acc = access(method, pattern);
        // (who, the volume id they use, what they should get)
        let mut cases: Vec<(Login, &Ids, &str)> = vec![
            // Another tenant's ids.
            (ALICE, &theirs, "user, another tenant's ids"),
            (AUDREY, &theirs, "auditor"),
        ];
        if pattern.contains('{') {
            cases.push((ALICE, &own, "user, own ids"));
        }
        // The administrator last: what it changes is allowed, and checked by the others first.
        cases.push((ADMIN, &theirs, "admin"));
        for (login, ids, label) in cases {
            n += 1;
            let path = fill(pattern, ids);
            let before = api.snapshot().await;
            let (status, body) = api
                .req(method.clone(), login, &path, body_for(method, pattern, n))
                .await;
            let what = format!("{method} {path} as {} ({label}): {status} {body}", login.0);
            let own = ids.volume == alices;
            let expect_refused = match (login, acc) {
                (_, Access::Public | Access::Read | Access::VolumeList) => None,
                (_, Access::OwnTokens) if *method == Method::DELETE && !own => {
                    Some(StatusCode::NOT_FOUND)
                }
                (_, Access::OwnTokens) => None,
                (l, _) if l == ADMIN => None,
                (
                    l,
                    Access::VolumeRead
                    | Access::VolumeHistory
                    | Access::AdminRead
                    | Access::SnapshotRead,
                ) if l == AUDREY => None,
                (l, _) if l == AUDREY => Some(StatusCode::FORBIDDEN),
                (_, Access::AdminRead | Access::AdminWrite) => Some(StatusCode::FORBIDDEN),
                (_, Access::VolumeCreate) => None,
                (
                    _,
                    Access::VolumeRead
                    | Access::VolumeHistory
                    | Access::VolumeWrite
                    | Access::SnapshotRead
                    | Access::SnapshotWrite,
                ) if own => None,
                (
                    _,
                    Access::VolumeRead
                    | Access::VolumeHistory
                    | Access::VolumeWrite
                    | Access::SnapshotRead
                    | Access::SnapshotWrite,
                ) => Some(StatusCode::NOT_FOUND),
            };
            let snapshots = matches!(acc, Access::SnapshotRead | Access::SnapshotWrite);
            match expect_refused {
                Some(refusal) => {
                    assert_eq!(status, refusal, "{what}");
                    if snapshots && refusal == StatusCode::NOT_FOUND {
                        let msg = body["error"]["message"].as_str().unwrap_or_default();
                        assert!(msg.starts_with("volume "), "{what}: the volume is hidden");
                    }
                    assert_eq!(api.snapshot().await, before, "{what} changed something");
                }
                // Past the role and tenant checks: the snapshot's own answer (see `Access`).
                None if snapshots && !status.is_success() => {
                    let msg = body["error"]["message"].as_str().unwrap_or_default();
                    let field = body["error"]["field"].as_str().unwrap_or_default();
                    assert!(
                        (status == StatusCode::BAD_REQUEST && field == "layout")
                            || (status == StatusCode::NOT_FOUND && msg.starts_with("snapshot ")),
                        "{what}"
                    );
                    assert_eq!(api.snapshot().await, before, "{what} changed something");
                }
                None => assert!(status.is_success(), "{what}"),
            }
            // Listings: a user sees their own volumes only.
            if acc == Access::VolumeList {
                let key = if pattern.starts_with("/api/v1.0") {
                    "pk"
                } else {
                    "id"
                };
                let listed = id_list(&body, key);
                if login == ALICE {
                    assert!(listed.contains(&alices), "{what}");
                    assert!(!listed.contains(&bobs), "{what}: another tenant's volume");
                } else {
                    assert!(listed.contains(&alices) && listed.contains(&bobs), "{what}");
                }
            }
            if acc == Access::VolumeRead && status.is_success() {
                let key = if pattern.starts_with("/api/v1.0") {
                    "pk"
                } else {
                    "id"
                };
                assert_eq!(body[key].as_i64(), Some(ids.volume), "{what}");
            }
            // A history holds the volume's records (its create at least), no other volume's.
            if acc == Access::VolumeHistory && status.is_success() {
                let records = body.as_array().unwrap_or_else(|| panic!("{what}"));
                assert!(!records.is_empty(), "{what}");
                for r in records {
                    assert_eq!(r["volume_id"].as_i64(), Some(ids.volume), "{what}");
                }
            }
            // The whole trail holds both tenants' volumes' records.
            if *pattern == "/api/v1/audit" && status.is_success() {
                for vol in [alices, bobs] {
                    assert!(
                        body.as_array()
                            .unwrap()
                            .iter()
                            .any(|r| r["volume_id"].as_i64() == Some(vol)),
                        "{what}: no record of volume {vol}"
                    );
                }
            }
            // Tokens: everyone lists their own only.
            if acc == Access::OwnTokens && *method == Method::GET {
                let listed = id_list(&body, "id");
                assert!(!listed.contains(&bob_token), "{what}: another user's token");
                assert_eq!(listed.contains(&alice_token), login == ALICE, "{what}");
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 3 * table.len(),
        "{checked} cases for {} routes",
        table.len()
    );

    // bob's volume was changed and deleted only by the administrator; alice's own deletes
    // went through.
    let (_, v) = api
        .req(Method::GET, ADMIN, &format!("/api/v1/volumes/{bobs}"), None)
        .await;
    assert_eq!(v["owner"], BOB.0, "{v}");
    assert_eq!(v["state"], "deleting", "{v}");
    // bob's token was revoked by nobody else.
    let (_, listed) = api.req(Method::GET, BOB, "/api/v1/tokens", None).await;
    assert_eq!(id_list(&listed, "id"), vec![bob_token], "{listed}");
}

/// A token of `login`'s, made through the API: (id, `Bearer ...` header value).
async fn bearer_of(api: &Api, login: Login, name: &str) -> (i64, String) {
    let (status, t) = api
        .req(
            Method::POST,
            login,
            "/api/v1/tokens",
            Some(json!({"name": name, "expires_in_days": 7})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let secret = t["secret"].as_str().unwrap();
    assert!(
        secret.starts_with("nfsprov_") && secret.len() == 8 + 64,
        "{t}"
    );
    (t["id"].as_i64().unwrap(), format!("Bearer {secret}"))
}

#[tokio::test]
async fn a_token_signs_in_as_its_user_with_its_role_on_the_native_api_only() {
    let api = Api::start().await;
    let alices = api.volume_of(ALICE, "alice-own").await;
    let bobs = api.volume_of(BOB, "bob-own").await;
    let (_, alice) = bearer_of(&api, ALICE, "laptop").await;
    let (_, audrey) = bearer_of(&api, AUDREY, "siem").await;

    // alice's token: her volumes, not bob's; she may change her own.
    let (status, list) = api
        .req_as(Method::GET, &alice, "/api/v1/volumes", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(id_list(&list, "id"), vec![alices]);
    let (status, _) = api
        .req_as(
            Method::GET,
            &alice,
            &format!("/api/v1/volumes/{bobs}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, v) = api
        .req_as(
            Method::PATCH,
            &alice,
            &format!("/api/v1/volumes/{alices}"),
            Some(json!({"clients": [{"host": "10.3.0.1"}]})),
        )
        .await;
    assert!(status.is_success(), "{status} {v}");
    let (status, _) = api.req_as(Method::GET, &alice, "/api/v1/users", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The auditor's token: reads everything, changes nothing.
    let (status, list) = api
        .req_as(Method::GET, &audrey, "/api/v1/volumes", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(id_list(&list, "id"), vec![alices, bobs]);
    let (status, body) = api
        .req_as(
            Method::DELETE,
            &audrey,
            &format!("/api/v1/volumes/{bobs}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // hootie's API takes Basic only, as hootie did.
    let (status, body) = api
        .req_as(Method::GET, &alice, "/api/v1.0/volumes/", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("Basic"), "{body}");

    // A token makes no tokens: a stolen one could otherwise outlive its expiry.
    let (status, body) = api
        .req_as(
            Method::POST,
            &alice,
            "/api/v1/tokens",
            Some(json!({"name": "successor"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn revoked_expired_unknown_and_locked_users_tokens_get_401() {
    let api = Api::start().await;
    let (id, token) = bearer_of(&api, ALICE, "ci").await;
    let works = |token: String| {
        let api = &api;
        async move {
            api.req_as(Method::GET, &token, "/api/v1/volumes", None)
                .await
        }
    };
    assert_eq!(works(token.clone()).await.0, StatusCode::OK);

    // Locked: refused; unlocked: works again.
    for (locked, expect) in [(true, StatusCode::UNAUTHORIZED), (false, StatusCode::OK)] {
        let (status, body) = api
            .req(
                Method::PATCH,
                ADMIN,
                "/api/v1/users/alice",
                Some(json!({"locked": locked})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = works(token.clone()).await;
        assert_eq!(status, expect, "locked={locked}: {body}");
    }

    // Revoked by its user: refused; a second revoke finds nothing.
    let (status, _) = api
        .req(Method::DELETE, ALICE, &format!("/api/v1/tokens/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = works(token.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
    let (status, _) = api
        .req(Method::DELETE, ALICE, &format!("/api/v1/tokens/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Unknown, and malformed.
    for bad in ["Bearer nfsprov_00", "Bearer ", "Bearer", "bearer x y"] {
        let (status, body) = api.req_as(Method::GET, bad, "/api/v1/volumes", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad:?}: {body}");
    }

    // Expired: one recorded with an expiry already past (the API gives at least a day).
    let secret = nfsprov::auth::new_token();
    let alice_user = api.hub.db().user_by_name(ALICE.0).await.unwrap();
    api.hub
        .db()
        .create_token(
            &alice_user,
            "old",
            &nfsprov::auth::token_hash(&secret),
            chrono::Utc::now() - chrono::Duration::seconds(1),
        )
        .await
        .unwrap();
    let (status, body) = works(format!("Bearer {secret}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
}

#[tokio::test]
async fn a_token_is_shown_once_and_stored_only_as_its_hash() {
    let api = Api::start().await;
    let (id, token) = bearer_of(&api, ALICE, "once").await;
    let secret = token.strip_prefix("Bearer ").unwrap();
    let (status, list) = api.req(Method::GET, ALICE, "/api/v1/tokens", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["name"], "once");
    assert!(list[0].get("secret").is_none(), "{list}");
    assert!(!list.to_string().contains(secret));
    // The database file (and its write-ahead log) hold the hash, never the token.
    let mut stored = Vec::new();
    let mut dirs = vec![api.dir.path().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                stored.extend(std::fs::read(path).unwrap());
            }
        }
    }
    let contains = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
    assert!(contains(nfsprov::auth::token_hash(secret).as_bytes()));
    assert!(!contains(secret.as_bytes()));
    assert!(!contains(&secret.as_bytes()["nfsprov_".len()..]));

    // Names and expiries are checked and bounded.
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "a\nb"}), "name"),
        (json!({"name": "x".repeat(65)}), "name"),
        (json!({"name": "once"}), "name"),
        (
            json!({"name": "y", "expires_in_days": 0}),
            "expires_in_days",
        ),
        (
            json!({"name": "y", "expires_in_days": 366}),
            "expires_in_days",
        ),
        (json!({"name": "y", "colour": "red"}), "body"),
    ] {
        let (status, reply) = api
            .req(Method::POST, ALICE, "/api/v1/tokens", Some(body.clone()))
            .await;
        assert!(status.is_client_error(), "{body}: {status} {reply}");
        if field != "body" {
            assert_eq!(reply["error"]["field"], field, "{body}: {reply}");
        }
    }
}

#[tokio::test]
async fn an_administrator_sets_roles_and_a_new_role_applies_at_once() {
    let api = Api::start().await;
    let bobs = api.volume_of(BOB, "bob-own").await;
    let (status, body) = api
        .req(
            Method::PATCH,
            ADMIN,
            "/api/v1/users/bob",
            Some(json!({"role": "root"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "role", "{body}");

    let (status, body) = api
        .req(
            Method::PATCH,
            ADMIN,
            "/api/v1/users/bob",
            Some(json!({"role": "auditor"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["role"], &body["is_admin"]),
        (&json!("auditor"), &json!(false))
    );
    // bob, now an auditor, may no longer delete his own volume, and reads everyone's.
    let (status, body) = api
        .req(
            Method::DELETE,
            BOB,
            &format!("/api/v1/volumes/{bobs}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = api.req(Method::GET, BOB, "/api/v1/users", None).await;
    assert_eq!(status, StatusCode::OK);

    // The old flag still works: is_admin true makes an admin.
    let (_, body) = api
        .req(
            Method::PATCH,
            ADMIN,
            "/api/v1/users/bob",
            Some(json!({"is_admin": true})),
        )
        .await;
    assert_eq!(
        (&body["role"], &body["is_admin"]),
        (&json!("admin"), &json!(true))
    );
}
