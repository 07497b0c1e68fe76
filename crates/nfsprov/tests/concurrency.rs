//! 200 concurrent creates against a quota and against a root path's capacity: exactly the
//! volumes that fit are accepted, never more, and all of them end up exported.

mod common;

use std::time::Duration;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn storm(env: &Env, users: &[(&str, &str)], n: usize) -> Vec<(StatusCode, Value)> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let user = users[i % users.len()];
        let (u, p) = (user.0.to_string(), user.1.to_string());
        let http = env.http.clone();
        let url = format!("{}/api/v1/volumes", env.base());
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .basic_auth(u, Some(p))
                .json(
                    &json!({"root_path_id": 1, "sub_path": format!("v{i:03}"), "size_gb": 1,
                              "clients": [{"host": "10.0.0.0/8", "options": "rw"}]}),
                )
                .send()
                .await
                .unwrap();
            let s = r.status();
            (s, r.json::<Value>().await.unwrap())
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn all_available(env: &Env, accepted: &[i64]) {
    for id in accepted {
        env.wait_volume(*id, Duration::from_secs(60), |v| v["state"] == "available")
            .await;
    }
    let file = env.managed_file("srv1");
    let lines: Vec<&str> = file.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), accepted.len(), "{file}");
    let etab = env.server("srv1").etab().unwrap();
    let ours = etab
        .lines()
        .filter(|l| l.starts_with("/srv/nfsprov/pool1/v"))
        .count();
    assert_eq!(ours, accepted.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_is_never_overcommitted() {
    // Capacity is ample; alice's quota of 37 GB is the limit.
    let env = Env::start(1, 10_000, 37).await;
    let results = storm(&env, &[ALICE], 200).await;
    let accepted: Vec<i64> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .map(|(_, v)| v["id"].as_i64().unwrap())
        .collect();
    let refused: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CONFLICT)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(accepted.len(), 37);
    assert_eq!(
        refused.len(),
        163,
        "every request is accepted or refused for quota"
    );
    for e in refused {
        assert_eq!(e["error"]["code"], "quota_exceeded", "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("quota by 1 GB")
        );
    }
    let alice = env.user_row("alice").await;
    assert_eq!(alice["used_gb"], 37);
    all_available(&env, &accepted).await;
    // All of it went over one SSH connection: sshd authenticated exactly one session.
    let sshd_log = std::fs::read_to_string(env.server("srv1").sshd_log()).unwrap();
    assert_eq!(
        sshd_log.matches("Accepted publickey").count(),
        1,
        "{sshd_log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_is_never_overcommitted() {
    // Quotas are ample; the root path's 23 GB capacity is the limit, shared by two users.
    let env = Env::start(1, 23, 1000).await;
    let results = storm(&env, &[ALICE, BOB], 200).await;
    let accepted: Vec<i64> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .map(|(_, v)| v["id"].as_i64().unwrap())
        .collect();
    assert_eq!(accepted.len(), 23);
    let refused = results
        .iter()
        .filter(|(s, v)| *s == StatusCode::CONFLICT && v["error"]["code"] == "capacity_exceeded")
        .count();
    assert_eq!(refused, 177);
    let (_, rps) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/rootpaths", None)
        .await;
    assert_eq!(rps[0]["allocated_gb"], 23);
    assert_eq!(rps[0]["free_gb"], 0);
    all_available(&env, &accepted).await;
}
