//! The in-process API of the fast tier, shared by its test files: the real router behind the
//! real front door (`serve::app`) on a real SQLite file in a temporary directory, driven with
//! `tower::oneshot` (no socket, no root, no server).
// Each test file uses a part.
#![allow(dead_code)]

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use nfsprov::auth::AuthLimits;
use nfsprov::model::Role;
use nfsprov::reconcile::{Hub, Tuning};
use nfsprov::serve::HttpLimits;

pub type Login = (&'static str, &'static str);
pub const ADMIN: Login = ("admin", "admin-pass-1");
/// Ordinary users the test files add (`add_user`) as they need them.
pub const ALICE: Login = ("alice", "alice-pass-1");
pub const BOB: Login = ("bob", "bob-pass-01");

/// A host key of the right form; no server is ever asked for it.
pub const HOST_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyNeverCheckedByTheseTests";

/// The `Authorization` value of `login` with HTTP Basic.
pub fn basic(login: Login) -> String {
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", login.0, login.1));
    format!("Basic {token}")
}

/// The service's router and hub on a fresh data directory, with the default limits, no
/// directory (LDAP) and the administrator [`ADMIN`] (quota 100 GB).
pub async fn start() -> (Router, Hub, tempfile::TempDir) {
    start_with(&HttpLimits::default(), 100).await
}

/// [`start`] with other HTTP limits and the administrator's quota.
pub async fn start_with(
    limits: &HttpLimits,
    admin_quota_gb: i64,
) -> (Router, Hub, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (app, hub) = nfsprov::serve::app(
        &dir.path().join("data"),
        limits,
        AuthLimits::default(),
        Tuning::default(),
        None,
    )
    .await
    .unwrap();
    // The first administrator comes from the CLI's path (`nfsprov user add --admin`).
    nfsprov::admin::add_user(hub.db(), ADMIN.0, ADMIN.1, Role::Admin, admin_quota_gb)
        .await
        .unwrap();
    (app, hub, dir)
}

/// The service as the e2e harness sets it up, minus servers: server `srv1` (never reachable),
/// root path 1 `/srv/nfsprov/pool1`, the administrator [`ADMIN`] (quota 0), [`ALICE`] and
/// [`BOB`]. Test files add their own methods (`impl Api`).
pub struct Api {
    pub app: Router,
    pub hub: Hub,
    pub dir: tempfile::TempDir,
}

impl Api {
    /// With the default limits, root path 1 of `capacity_gb`, alice's and bob's quota `quota_gb`.
    pub async fn start(capacity_gb: i64, quota_gb: i64) -> Api {
        Api::start_with(&HttpLimits::default(), capacity_gb, quota_gb).await
    }

    /// [`Api::start`] with other HTTP limits.
    pub async fn start_with(limits: &HttpLimits, capacity_gb: i64, quota_gb: i64) -> Api {
        let (app, hub, dir) = start_with(limits, 0).await;
        add_srv1_pool1(&app, capacity_gb).await;
        for login in [ALICE, BOB] {
            add_user(&app, login, json!({"quota_gb": quota_gb})).await;
        }
        Api { app, hub, dir }
    }
}

/// A port on 127.0.0.1 nothing listens on: servers registered with it are never reachable.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An answer: its status, headers and JSON body (`Null` when empty).
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
}

/// Send `req` as it is; the answer, whose body must be JSON or empty.
pub async fn call(app: &Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{status}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Reply {
        status,
        headers,
        json,
    }
}

/// A request with `authorization` as its `Authorization` header (none if `None`), the extra
/// `headers`, and `body` as JSON.
pub async fn request(
    app: &Router,
    method: Method,
    authorization: Option<&str>,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    call(app, build(method, authorization, path, headers, body)).await
}

/// [`request`] from `peer`, as `serve` sees a connection's peer address (`ConnectInfo`).
pub async fn request_from(
    app: &Router,
    peer: SocketAddr,
    method: Method,
    authorization: Option<&str>,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    let mut req = build(method, authorization, path, headers, body);
    req.extensions_mut().insert(ConnectInfo(peer));
    call(app, req).await
}

fn build(
    method: Method,
    authorization: Option<&str>,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(a) = authorization {
        b = b.header(header::AUTHORIZATION, a);
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = match body {
        Some(v) => {
            b = b.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    b.body(body).unwrap()
}

/// One request with `authorization` as its `Authorization` header and `body` as JSON; the
/// answer's status and JSON body (`Null` when empty).
pub async fn send(
    app: &Router,
    method: Method,
    authorization: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let r = request(app, method, Some(authorization), path, &[], body).await;
    (r.status, r.json)
}

/// Server `srv1` (a closed port on 127.0.0.1: never reachable) and its root path 1,
/// `/srv/nfsprov/pool1` of `capacity_gb`, registered by the administrator.
pub async fn add_srv1_pool1(app: &Router, capacity_gb: i64) {
    let port = closed_port();
    for (path, body) in [
        (
            "/api/v1/servers",
            json!({"name": "srv1", "ssh_host": "127.0.0.1", "ssh_port": port,
                   "ssh_key": "/nonexistent/id_ed25519", "host_key": HOST_KEY}),
        ),
        (
            "/api/v1/rootpaths",
            json!({"server": "srv1", "path": "/srv/nfsprov/pool1", "capacity_gb": capacity_gb}),
        ),
    ] {
        let (status, v) = send(app, Method::POST, &basic(ADMIN), path, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {v}");
    }
}

/// User `login` made by the administrator, with the other `fields` of the request
/// (`quota_gb`, `role`, ...).
pub async fn add_user(app: &Router, login: Login, fields: Value) {
    let mut body = json!({"username": login.0, "password": login.1});
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, v) = send(
        app,
        Method::POST,
        &basic(ADMIN),
        "/api/v1/users",
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{}: {v}", login.0);
}

/// Everything the API shows of the database, as the administrator sees it: every volume
/// (deleted ones too), users with their usage, root paths with their allocation, servers;
/// minus what a reconciler records when it fails to connect (a server's status, a waiting
/// volume's last error), which no request changes.
pub async fn snapshot(app: &Router) -> Value {
    let mut all = json!({});
    for path in [
        "/api/v1/volumes?include_deleted=true",
        "/api/v1/users",
        "/api/v1/rootpaths",
        "/api/v1/servers",
    ] {
        let (status, mut v) = send(app, Method::GET, &basic(ADMIN), path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {v}");
        let theirs: &[&str] = match path {
            "/api/v1/servers" => &["status", "status_message", "last_reconciled_at"],
            "/api/v1/users" | "/api/v1/rootpaths" => &[],
            _ => &["last_error", "updated_at"],
        };
        for row in v.as_array_mut().unwrap() {
            let row = row.as_object_mut().unwrap();
            for k in theirs {
                row.remove(*k);
            }
        }
        all[path] = v;
    }
    all
}
