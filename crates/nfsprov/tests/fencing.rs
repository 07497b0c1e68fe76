//! Leases and fencing across nodes: two `nfsprov serve` processes on one SQLite file and one
//! test-bed server. Only the lease holder changes the server; a holder stopped (SIGSTOP) past
//! its lease and continued mid-pass is refused by the server itself (its script's token is
//! older than the one the server stored); a holder killed with -9 is taken over within the
//! lease time and everything converges.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Lease time of the two nodes under test.
const LEASE_SECS: u64 = 3;

/// A second `nfsprov serve` on the same data directory (database), its own port and log.
struct Node {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Node {
    async fn start(env: &Env, name: &str, envs: &[(&str, &str)]) -> Node {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = env.dir.path().join(format!("{name}.log"));
        let mut cmd = Command::new(nfsprov_bin());
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("NFSPROV_DATA_DIR", env.data_dir())
            .env("NFSPROV_LOG", "info")
            .env_remove("NFSPROV_FAULT")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut node = Node {
            child: Some(cmd.spawn().expect("spawn nfsprov serve")),
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = env
                .http
                .get(format!("http://127.0.0.1:{port}/api/v1/health"))
                .send()
                .await
                && r.status().is_success()
            {
                let child = node.child.as_mut().unwrap();
                assert!(child.try_wait().unwrap().is_none(), "{name} exited");
                return node;
            }
            assert!(Instant::now() < deadline, "{name} did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A node left stopped would not die of SIGKILL alone in every kernel: continue it.
        if let Some(c) = &self.child {
            signal(c.id(), "CONT");
        }
        self.kill9();
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

async fn req(
    env: &Env,
    port: u16,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = env
        .http
        .request(method, format!("http://127.0.0.1:{port}{path}"))
        .basic_auth(ALICE.0, Some(ALICE.1));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("http request");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn create(env: &Env, port: u16, sub: &str, wait: bool) -> (StatusCode, Value) {
    let path = if wait {
        "/api/v1/volumes?wait=true&timeout=30"
    } else {
        "/api/v1/volumes"
    };
    let body = json!({"root_path_id": 1, "sub_path": sub, "size_gb": 1, "clients": [{"host": "*", "options": "rw"}]});
    req(env, port, Method::POST, path, Some(body)).await
}

/// Poll `what` in `text()` until it appears (bounded); how long it took.
async fn wait_for(what: &str, timeout: Duration, text: impl Fn() -> String) -> Duration {
    let began = Instant::now();
    loop {
        if text().contains(what) {
            return began.elapsed();
        }
        assert!(
            began.elapsed() < timeout,
            "never saw {what:?} within {timeout:?} in:\n{}",
            text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The token of the last "took the server's lease" line in a node's log.
fn last_token(log: &str) -> Option<i64> {
    log.lines()
        .rev()
        .filter(|l| l.contains("took the server's lease"))
        .filter_map(|l| {
            l.split("token=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .next()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_paused_past_its_lease_is_refused_by_the_server_and_a_killed_one_is_taken_over() {
    let mut env = Env::start(1, 100, 100).await;
    let lease = LEASE_SECS.to_string();
    // The harness's node stops cleanly (SIGTERM): it gives its lease up, so A takes it at once.
    let first = env.serve.take().unwrap();
    signal(first.id(), "TERM");
    let mut first = first;
    first.wait().unwrap();
    assert!(
        env.log().contains("took the server's lease"),
        "{}",
        env.log()
    );
    // A holds the lease (it starts first) and stops, once, between its last look at its lease
    // and sending its script; B waits for the lease.
    let mut a = Node::start(
        &env,
        "a",
        &[
            ("NFSPROV_LEASE_SECS", &lease),
            ("NFSPROV_FAULT", "pause-before-apply"),
        ],
    )
    .await;
    wait_for("took the server's lease", Duration::from_secs(10), || {
        a.log()
    })
    .await;
    let mut b = Node::start(&env, "b", &[("NFSPROV_LEASE_SECS", &lease)]).await;
    // The harness's reads (volumes as the admin sees them) go to B while A is stopped.
    env.port = b.port;
    let a_token = last_token(&a.log()).unwrap();
    assert!(
        a_token >= 2,
        "the released lease is taken with a newer token"
    );

    // A's pass for v1 reaches the pause; A is stopped there, past its lease.
    let (s, v1) = create(&env, a.port, "fence-v1", false).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v1}");
    wait_for(
        "NFSPROV_FAULT=pause-before-apply: pausing",
        Duration::from_secs(15),
        || a.log(),
    )
    .await;
    signal(a.pid(), "STOP");

    // B takes the server over (token + 1), applies v1 and then v2 (through B's API).
    let took = wait_for(
        "took the server's lease",
        Duration::from_secs(LEASE_SECS + 5),
        || b.log(),
    )
    .await;
    let b_token = last_token(&b.log()).unwrap();
    assert_eq!(b_token, a_token + 1, "{}", b.log());
    eprintln!("B took the lease {took:?} after A was stopped");
    let (s, v2) = create(&env, b.port, "fence-v2", true).await;
    assert_eq!(s, StatusCode::CREATED, "{v2}");
    assert_eq!(v2["state"], "available", "{v2}");
    let id1 = v1["id"].as_i64().unwrap();
    let v1_now = env
        .wait_volume(id1, Duration::from_secs(10), |v| v["state"] == "available")
        .await;
    let managed = env.managed_file("srv1");
    let (p1, p2) = (
        v1_now["path"].as_str().unwrap().to_string(),
        v2["path"].as_str().unwrap().to_string(),
    );
    assert!(managed.contains(&p1) && managed.contains(&p2), "{managed}");
    let fence_file = env.server("srv1").exports_d().join(".nfsprov.fence");
    assert_eq!(
        std::fs::read_to_string(&fence_file).unwrap().trim(),
        b_token.to_string()
    );

    // A continues: its script (v1 only, token a) reaches the server, which refuses it.
    signal(a.pid(), "CONT");
    let refusal =
        format!("fenced: server taken over by a newer lease holder, token {b_token} > {a_token}");
    wait_for(&refusal, Duration::from_secs(15), || a.log()).await;
    // The server kept B's file and fence; A recorded nothing over B's outcomes.
    assert_eq!(env.managed_file("srv1"), managed);
    assert_eq!(
        std::fs::read_to_string(&fence_file).unwrap().trim(),
        b_token.to_string()
    );
    for id in [id1, v2["id"].as_i64().unwrap()] {
        let v = env.volume(id).await;
        assert_eq!(v["state"], "available", "{v}");
        assert!(v["last_error"].is_null(), "{v}");
    }

    // B is killed -9 while holding the lease: A takes over within the lease time, with a
    // newer token, and applies what comes next. (B ran on this host: A sees it is gone and
    // does not even wait for the lease to run out; the stopped A above was alive, so B had to.)
    let killed = Instant::now();
    b.kill9();
    env.port = a.port;
    let before = a.log().matches("took the server's lease").count();
    let deadline = Instant::now() + Duration::from_secs(LEASE_SECS + 60);
    while a.log().matches("took the server's lease").count() == before {
        assert!(Instant::now() < deadline, "A never took over:\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let takeover = killed.elapsed();
    assert!(
        takeover <= Duration::from_secs(LEASE_SECS) + Duration::from_secs(2),
        "takeover took {takeover:?}"
    );
    let a_token2 = last_token(&a.log()).unwrap();
    assert_eq!(a_token2, b_token + 1);
    let (s, v3) = create(&env, a.port, "fence-v3", true).await;
    assert_eq!(s, StatusCode::CREATED, "{v3}");
    assert_eq!(v3["state"], "available", "{v3}");
    let managed = env.managed_file("srv1");
    for p in [&p1, &p2, v3["path"].as_str().unwrap()] {
        assert_eq!(managed.matches(&format!("{p} ")).count(), 1, "{managed}");
    }
    assert_eq!(
        std::fs::read_to_string(&fence_file).unwrap().trim(),
        a_token2.to_string()
    );
    a.kill9();
    // The harness would kill its own node at drop: it has none now.
    assert!(env.serve.is_none());
}
