//! Sign-in through a real OpenLDAP `slapd` (`nfsprov_testbed::slapd`): its users, its groups
//! mapped to roles, a wrong password, a disabled account, the directory down (503 for its
//! users while local accounts sign in), users created at their first sign-in with the default
//! quota (each in the audit trail), and TLS (LDAPS and StartTLS) verified against the test bed's CA.

mod common;

use std::os::unix::fs::PermissionsExt as _;

use common::*;
use nfsprov_testbed::slapd::{self, Slapd};
use reqwest::StatusCode;
use serde_json::{Value, json};

const DEFAULT_QUOTA_GB: i64 = 7;

fn role_groups(users_role: &str) -> String {
    format!(
        "admin={};{users_role}={};auditor={}",
        slapd::group_dn("nfs-admins"),
        slapd::group_dn("nfs-users"),
        slapd::group_dn("nfs-auditors")
    )
}

/// The settings of a service that signs in through `slapd` at `url`.
fn ldap_env(
    dir: &std::path::Path,
    url: &str,
    ca: &std::path::Path,
    users_role: &str,
) -> Vec<(String, String)> {
    let pw_file = dir.join("ldap-bind-password");
    std::fs::write(&pw_file, format!("{}\n", slapd::SERVICE_PASSWORD)).unwrap();
    std::fs::set_permissions(&pw_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    [
        ("NFSPROV_LDAP_URL", url.to_string()),
        ("NFSPROV_LDAP_CA_FILE", ca.display().to_string()),
        ("NFSPROV_LDAP_BIND_DN", slapd::SERVICE_DN.to_string()),
        (
            "NFSPROV_LDAP_BIND_PASSWORD_FILE",
            pw_file.display().to_string(),
        ),
        ("NFSPROV_LDAP_USER_BASE", slapd::PEOPLE_DN.to_string()),
        ("NFSPROV_LDAP_GROUP_BASE", slapd::GROUPS_DN.to_string()),
        ("NFSPROV_LDAP_ROLE_GROUPS", role_groups(users_role)),
        (
            "NFSPROV_LDAP_DEFAULT_QUOTA_GB",
            DEFAULT_QUOTA_GB.to_string(),
        ),
        ("NFSPROV_LDAP_TIMEOUT_SECS", "3".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

async fn restart(env: &mut Env, vars: &[(String, String)]) {
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.restart_with(&vars).await;
}

fn dir_user(uid: &str) -> (&str, &'static str) {
    (uid, slapd::password(uid))
}

/// Status, the headers that matter here, and the body of a GET as `user`.
async fn get(env: &Env, user: (&str, &str), path: &str) -> (StatusCode, Option<String>, Value) {
    let resp = env
        .http
        .get(format!("{}{path}", env.base()))
        .basic_auth(user.0, Some(user.1))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let header = resp
        .headers()
        .get("www-authenticate")
        .or_else(|| resp.headers().get("retry-after"))
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, header, body)
}

fn start_slapd(env: &Env) -> Slapd {
    Slapd::start(&env.dir.path().join("slapd")).expect("slapd starts")
}

#[tokio::test]
async fn directory_users_sign_in_with_their_groups_roles_and_the_directory_down_is_503() {
    let mut env = Env::start(1, 100, 100).await;
    let mut dir = start_slapd(&env);
    let vars = ldap_env(env.dir.path(), &dir.ldaps_url(), &dir.ca_file(), "user");
    restart(&mut env, &vars).await;

    // First sign-ins create the users, with the role of their group and the default quota.
    let (s, _, users) = get(&env, dir_user("dora"), "/api/v1/users").await;
    assert_eq!(s, StatusCode::OK, "an admin by group: {users}");
    for (uid, role) in [("dora", "admin"), ("erin", "user"), ("fred", "auditor")] {
        let (s, _, body) = get(&env, dir_user(uid), "/api/v1/volumes").await;
        assert_eq!(s, StatusCode::OK, "{uid}: {body}");
        let row = env.user_row(uid).await;
        assert_eq!(row["role"], role, "{row}");
        assert_eq!(row["quota_gb"], DEFAULT_QUOTA_GB, "{row}");
    }
    // Each creation is in the audit trail, the directory entry as its actor.
    let (s, _, trail) = get(&env, ADMIN, "/api/v1/audit").await;
    assert_eq!(s, StatusCode::OK, "{trail}");
    for (uid, role) in [("dora", "admin"), ("erin", "user"), ("fred", "auditor")] {
        let r = trail
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["action"] == "user.create" && r["object"] == format!("user/{uid}"))
            .unwrap_or_else(|| panic!("no record of {uid}'s creation: {trail:#}"));
        assert_eq!(r["method"], "SIGN-IN", "{r}");
        assert!(r["actor"].as_str().unwrap().starts_with("ldap:"), "{r}");
        assert_eq!(r["after"]["role"], role, "{r}");
        assert!(!r.to_string().contains(slapd::password(uid)), "{r}");
    }
    let (s, _, body) = get(&env, dir_user("erin"), "/api/v1/users").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a user is no admin: {body}");
    // The default quota holds: 7 GB fit, an 8th does not.
    let (s, v) = env
        .create(
            dir_user("erin"),
            1,
            "erin/a",
            DEFAULT_QUOTA_GB,
            json!([{"host": "127.0.0.1"}]),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = env
        .create(
            dir_user("erin"),
            1,
            "erin/b",
            1,
            json!([{"host": "127.0.0.1"}]),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "quota_exceeded", "{v}");
    // An auditor changes nothing.
    let (s, v) = env
        .create(
            dir_user("fred"),
            1,
            "fred/a",
            1,
            json!([{"host": "127.0.0.1"}]),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // A right password in no mapped group: 403, and no account is made.
    let (s, _, body) = get(&env, dir_user("gus"), "/api/v1/volumes").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    // Refusals: a wrong password, the disabled account with its right password, an unknown
    // name, an empty password; each a 401 with a challenge.
    for (who, pw) in [
        ("erin", "wrong-pass-1"),
        ("dave", slapd::password("dave")),
        ("zed", "zed-pass-1"),
        ("erin", ""),
    ] {
        let (s, challenge, body) = get(&env, (who, pw), "/api/v1/volumes").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{who}/{pw}: {body}");
        assert_eq!(challenge.as_deref(), Some("Basic realm=\"api\""));
    }
    let (_, _, users) = get(&env, ADMIN, "/api/v1/users").await;
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    for never in ["gus", "dave", "zed"] {
        assert!(!names.contains(&never), "{never} in {names:?}");
    }
    // Local accounts come first: the directory's alice (an admin there) does not get in with
    // the directory's password; the local alice does with hers, as a user.
    let (s, _, _) = get(&env, dir_user("alice"), "/api/v1/volumes").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = get(&env, ALICE, "/api/v1/users").await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Failed directory sign-ins count toward the limits like local ones: dave's third
    // failure reaches a per-user limit of 3.
    restart(
        &mut env,
        &[
            vars.clone(),
            vec![("NFSPROV_AUTH_FAILURES_PER_USER".into(), "3".into())],
        ]
        .concat(),
    )
    .await;
    for (i, pw) in ["dave-guess-1", "dave-guess-2", "dave-guess-3"]
        .iter()
        .enumerate()
    {
        let (s, _, body) = get(&env, ("dave", pw), "/api/v1/volumes").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "guess {i}: {body}");
    }
    let (s, retry, body) = get(&env, ("dave", "dave-guess-4"), "/api/v1/volumes").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(retry.is_some());

    // The directory down: its users get a 503 in the API's JSON shape (with Retry-After),
    // not a 401; local accounts still sign in.
    dir.stop();
    for (who, pw) in [("gus", slapd::password("gus")), ("erin", "new-erin-pass-1")] {
        let (s, retry, body) = get(&env, (who, pw), "/api/v1/volumes").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{who}: {body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("directory"),
            "{body}"
        );
        assert!(retry.is_some(), "Retry-After");
    }
    let (s, _, body) = get(&env, ADMIN, "/api/v1/users").await;
    assert_eq!(s, StatusCode::OK, "the local admin: {body}");
    let (s, _, body) = get(&env, ALICE, "/api/v1/volumes").await;
    assert_eq!(s, StatusCode::OK, "a local user: {body}");
    // ... and an unavailable answer was not remembered as a refusal.
    dir.restart().unwrap();
    let (s, _, body) = get(&env, ("erin", "new-erin-pass-1"), "/api/v1/volumes").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    let (s, _, body) = get(&env, dir_user("gus"), "/api/v1/volumes").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn starttls_and_ldaps_trust_only_the_configured_ca_and_roles_follow_the_map() {
    let mut env = Env::start(1, 100, 100).await;
    let dir = start_slapd(&env);

    // StartTLS on the plain port, with the CA that signed slapd's certificate.
    let vars = ldap_env(env.dir.path(), &dir.ldap_url(), &dir.ca_file(), "user");
    let starttls = [vars, vec![("NFSPROV_LDAP_STARTTLS".into(), "true".into())]].concat();
    restart(&mut env, &starttls).await;
    let (s, _, body) = get(&env, dir_user("erin"), "/api/v1/volumes").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(env.user_row("erin").await["role"], "user");

    // A map that makes nfs-users auditors: erin's role follows at her next sign-in.
    let vars = ldap_env(env.dir.path(), &dir.ldaps_url(), &dir.ca_file(), "auditor");
    restart(&mut env, &vars).await;
    let (s, _, body) = get(&env, dir_user("erin"), "/api/v1/volumes").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(env.user_row("erin").await["role"], "auditor");

    // A CA that did not sign slapd's certificate: the TLS handshake fails, and the directory
    // counts as down, over LDAPS and over StartTLS alike.
    for (url, starttls) in [(dir.ldaps_url(), "false"), (dir.ldap_url(), "true")] {
        let vars = [
            ldap_env(env.dir.path(), &url, &dir.other_ca_file(), "user"),
            vec![("NFSPROV_LDAP_STARTTLS".into(), starttls.into())],
        ]
        .concat();
        restart(&mut env, &vars).await;
        let (s, _, body) = get(&env, dir_user("dora"), "/api/v1/volumes").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{url}: {body}");
        assert!(
            env.log().contains("certificate"),
            "the log says why: {}",
            env.log()
        );
    }
}

#[test]
fn plain_ldap_without_starttls_and_a_missing_password_file_stop_the_service_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    for (var, value, expect) in [
        (
            "NFSPROV_LDAP_URL",
            "ldap://127.0.0.1:1",
            "NFSPROV_LDAP_STARTTLS",
        ),
        (
            "NFSPROV_LDAP_BIND_PASSWORD_FILE",
            "/nonexistent/ldap-password",
            "NFSPROV_LDAP_BIND_PASSWORD_FILE",
        ),
    ] {
        let mut vars = ldap_env(
            tmp.path(),
            "ldaps://127.0.0.1:1",
            &tmp.path().join("ca.pem"),
            "user",
        );
        vars.retain(|(k, _)| k != var);
        vars.push((var.into(), value.into()));
        let out = std::process::Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("NFSPROV_DATA_DIR", tmp.path().join("data"))
            .envs(vars)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{var}: {err}");
    }
}
