//! Roles and API tokens against the real binary and a real sshd/exportfs server: an auditor
//! made by `nfsprov user add --role auditor`, a token made with a password over HTTP, a
//! volume created with the token (`Authorization: Bearer`) that the server really exports,
//! the auditor's token reading it and refused deleting it, and a revoked token refused.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const AUDREY: (&str, &str) = ("audrey", "audrey-pass-1");

/// A token of `user`'s, made with their password.
async fn token_of(env: &Env, user: (&str, &str), name: &str) -> (i64, String) {
    let (status, t) = env
        .req(
            Method::POST,
            Some(user),
            "/api/v1/tokens",
            Some(json!({"name": name, "expires_in_days": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    (
        t["id"].as_i64().unwrap(),
        t["secret"].as_str().unwrap().to_string(),
    )
}

async fn with_token(
    env: &Env,
    method: Method,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = env
        .http
        .request(method, format!("{}{}", env.base(), path))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_token_creates_a_volume_the_server_exports_and_an_auditors_token_only_reads() {
    let env = Env::start(1, 100, 50).await;
    env.cli_stdin_ok(&["user", "add", AUDREY.0, "--role", "auditor"], AUDREY.1);
    assert_eq!(env.user_row(AUDREY.0).await["role"], "auditor");

    let (alice_id, alice) = token_of(&env, ALICE, "laptop").await;
    let (_, audrey) = token_of(&env, AUDREY, "siem").await;

    let (status, v) = with_token(
        &env,
        Method::POST,
        &alice,
        "/api/v1/volumes?wait=true&timeout=30",
        Some(
            json!({"root_path_id": 1, "sub_path": "by-token", "size_gb": 1,
                    "clients": [{"host": "10.9.0.1", "options": "rw"}]}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["owner"], ALICE.0, "{v}");
    let id = v["id"].as_i64().unwrap();
    let etab = env.server("srv1").etab().unwrap();
    assert_eq!(
        etab_entries(&etab, "/srv/nfsprov/pool1/by-token").len(),
        1,
        "{etab}"
    );

    // The auditor's token reads alice's volume and may not delete it.
    let (status, seen) = with_token(
        &env,
        Method::GET,
        &audrey,
        &format!("/api/v1/volumes/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["owner"], ALICE.0);
    let (status, body) = with_token(
        &env,
        Method::DELETE,
        &audrey,
        &format!("/api/v1/volumes/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(env.volume(id).await["state"], "available");

    // Revoked: refused at once.
    let (status, _) = env
        .req(
            Method::DELETE,
            Some(ALICE),
            &format!("/api/v1/tokens/{alice_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = with_token(&env, Method::GET, &alice, "/api/v1/volumes", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // The token never reached the log.
    assert!(
        !env.log().contains(&alice),
        "the token is in the service log"
    );
}
