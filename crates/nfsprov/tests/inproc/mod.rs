//! The in-process API of the fast tier, shared by its test files: the real router behind the
//! real front door (`serve::app`) on a real SQLite file in a temporary directory, driven with
//! `tower::oneshot` (no socket, no root, no server).

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use serde_json::Value;
use tower::ServiceExt as _;

use nfsprov::auth::AuthLimits;
use nfsprov::model::Role;
use nfsprov::reconcile::{Hub, Tuning};
use nfsprov::serve::HttpLimits;

pub type Login = (&'static str, &'static str);
pub const ADMIN: Login = ("admin", "admin-pass-1");

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
    let dir = tempfile::tempdir().unwrap();
    let (app, hub) = nfsprov::serve::app(
        &dir.path().join("data"),
        &HttpLimits::default(),
        AuthLimits::default(),
        Tuning::default(),
        None,
    )
    .await
    .unwrap();
    nfsprov::admin::add_user(hub.db(), ADMIN.0, ADMIN.1, Role::Admin, 100)
        .await
        .unwrap();
    (app, hub, dir)
}

/// A port on 127.0.0.1 nothing listens on: servers registered with it are never reachable.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, authorization);
    let body = match body {
        Some(v) => {
            b = b.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let resp = app.clone().oneshot(b.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, json)
}
