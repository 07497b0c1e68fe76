//! Sign-in through a real OpenLDAP `slapd` (`nfsprov_testbed::slapd`): its users, its groups
//! mapped to roles, a wrong password, a disabled account, the directory down (503 for its
//! users while local accounts sign in), users created at their first sign-in with the default
//! quota (each in the audit trail), and TLS (LDAPS and StartTLS) verified against the test bed's CA.

mod common;

use common::ldap::{DEFAULT_QUOTA_GB, ldap_env};
use common::*;
use nfsprov_testbed::slapd::{self, Slapd};
use reqwest::StatusCode;
use serde_json::{Value, json};

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

/// What slapd's `stats` log (`-d 256`) shows of the one connection whose user search names
/// `uid`: each operation's verb, a bind's DN (its first RDN) and result code. `None` until
/// that connection's operations have all been answered and it unbound.
fn conversation(log: &str, uid: &str) -> Option<Vec<String>> {
    let search = format!("filter=\"(uid={uid})\"");
    let conn = log.lines().find(|l| l.contains(&search))?;
    let conn = conn.split_whitespace().find(|w| w.starts_with("conn="))?;
    let ops: Vec<Vec<&str>> = log
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == conn))
        .map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != conn)
                .skip(1)
                .collect()
        })
        .filter(|w: &Vec<&str>| w.first().is_some_and(|op| op.starts_with("op=")))
        .collect();
    let mut out = Vec::new();
    for w in &ops {
        match w.get(1).copied() {
            // slapd logs a bind twice: as asked (`method=`), then as done (`mech=`).
            Some("BIND") if w.iter().any(|x| x.starts_with("method=")) => {
                let dn = w.iter().find_map(|x| x.strip_prefix("dn=\"")).unwrap_or("");
                out.push(format!("BIND {}", dn.split(',').next().unwrap_or("")));
            }
            Some("RESULT") if out.last().is_some_and(|o| o.starts_with("BIND")) => {
                let err = w.iter().find(|x| x.starts_with("err="))?;
                out.last_mut().unwrap().push_str(&format!(" {err}"));
            }
            Some(verb @ ("SRCH" | "UNBIND")) if w.get(2).is_none_or(|x| !x.starts_with("attr")) => {
                out.push(verb.to_string())
            }
            _ => {}
        }
    }
    out.last().is_some_and(|o| o == "UNBIND").then_some(out)
}

/// Wait (bounded) until slapd's log shows the whole conversation for `uid`.
async fn wait_conversation(dir: &Slapd, uid: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(dir.log_path()).unwrap();
        if let Some(c) = conversation(&log, uid) {
            return c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no finished conversation about {uid} in slapd's log:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// An unknown name costs the directory the same conversation as a known name with a wrong
/// password (service bind, user search, group search, a bind with the given password,
/// unbind), as slapd itself records it: neither the answer nor the time it takes tells
/// whether a name is in the directory. The unknown name's bind is as a DN that names nobody.
#[tokio::test]
async fn an_unknown_name_costs_the_directory_what_a_wrong_password_does() {
    let mut env = Env::start(1, 100, 100).await;
    let dir = start_slapd(&env);
    let vars = ldap_env(env.dir.path(), &dir.ldaps_url(), &dir.ca_file(), "user");
    restart(&mut env, &vars).await;

    let (s, _, body) = get(&env, ("erin", "erin-wrong-pass"), "/api/v1/volumes").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    let (s, _, body) = get(&env, ("zed", "zed-some-pass"), "/api/v1/volumes").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");

    let wrong_password = wait_conversation(&dir, "erin").await;
    let unknown_name = wait_conversation(&dir, "zed").await;
    assert_eq!(
        wrong_password,
        [
            "BIND cn=nfsprov err=0",
            "SRCH",
            "SRCH",
            "BIND uid=erin err=49",
            "UNBIND"
        ],
        "a wrong password"
    );
    assert_eq!(
        unknown_name,
        [
            "BIND cn=nfsprov err=0",
            "SRCH",
            "SRCH",
            &format!("BIND {} err=49", nfsprov::ldap::NOBODY_RDN),
            "UNBIND"
        ],
        "an unknown name"
    );
}
