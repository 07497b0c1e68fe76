//! Crashes, drift and failures: kill -9 mid-batch, a crash between the server change and the
//! database update, hand edits on the server, a changed host key, a server that goes away.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Every live volume is exported exactly once on its server, every deleted one is gone, and
/// nothing else is in the managed files.
async fn assert_converged(env: &Env) -> usize {
    let all = env.all_volumes().await;
    let mut live: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    let mut n_live = 0;
    for v in &all {
        let server = v["server_id"].as_i64().unwrap();
        let path = v["path"].as_str().unwrap().to_string();
        let host = env.server(&format!("srv{server}")).host_path(&path);
        match v["state"].as_str().unwrap() {
            "available" => {
                n_live += 1;
                live.entry(server).or_default().insert(path);
                assert!(host.is_dir(), "{v}");
            }
            "deleted" => assert!(!host.exists(), "{v}"),
            other => panic!("volume not settled ({other}): {v}"),
        }
    }
    for (i, srv) in env.tb.servers.iter().enumerate() {
        let want = live.remove(&(i as i64 + 1)).unwrap_or_default();
        let file = env.managed_file(&srv.name);
        let paths: Vec<String> = file
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect();
        let unique: BTreeSet<String> = paths.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            paths.len(),
            "duplicate lines on {}: {file}",
            srv.name
        );
        assert_eq!(
            unique, want,
            "managed file of {} differs from the database",
            srv.name
        );
        let etab = srv.etab().unwrap();
        let exported: BTreeSet<String> = etab
            .lines()
            .filter_map(|l| l.split('\t').next())
            .filter(|p| p.starts_with("/srv/nfsprov/pool"))
            .map(str::to_string)
            .collect();
        assert_eq!(exported, want, "etab of {} differs", srv.name);
    }
    n_live
}

async fn wait_all_settled(env: &Env, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let all = env.all_volumes().await;
        let pending: Vec<&Value> = all
            .iter()
            .filter(|v| v["state"] != "available" && v["state"] != "deleted")
            .collect();
        if pending.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "not settled: {pending:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_batch_then_restart_converges() {
    let mut env = Env::start(2, 10_000, 10_000).await;
    let mut acknowledged: Vec<i64> = Vec::new();
    // Each round kills the service at a different point of its progress — after the first,
    // the 5th, the 15th and the 30th of 40 concurrent creates was acknowledged — so the kill
    // lands mid-batch on any machine, however fast, instead of after a fixed sleep.
    for (round, kill_after) in [1usize, 5, 15, 30].into_iter().enumerate() {
        let answered = Arc::new(AtomicUsize::new(0));
        let progress = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for i in 0..40 {
            let http = env.http.clone();
            let base = env.base();
            let rp = 1 + (i % 2);
            let answered = answered.clone();
            let progress = progress.clone();
            tasks.push(tokio::spawn(async move {
                let r = http
                    .post(format!("{base}/api/v1/volumes"))
                    .basic_auth(ALICE.0, Some(ALICE.1))
                    .json(&json!({"root_path_id": rp, "sub_path": format!("r{round}-v{i}"), "size_gb": 1,
                                  "clients": [{"host": "10.0.0.0/8", "options": "rw"}]}))
                    .send()
                    .await
                    .ok()?;
                if r.status() != StatusCode::ACCEPTED {
                    return None;
                }
                let id = r.json::<Value>().await.ok()?["id"].as_i64();
                answered.fetch_add(1, Ordering::SeqCst);
                progress.notify_one();
                id
            }));
        }
        // Also delete some volumes of earlier rounds while the batch runs.
        for id in acknowledged.iter().step_by(3).take(10) {
            let http = env.http.clone();
            let url = format!("{}/api/v1/volumes/{id}", env.base());
            tokio::spawn(async move {
                let _ = http
                    .delete(url)
                    .basic_auth(ALICE.0, Some(ALICE.1))
                    .send()
                    .await;
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while answered.load(Ordering::SeqCst) < kill_after {
            assert!(
                Instant::now() < deadline,
                "round {round}: only {} of 40 creates answered in 60 s",
                answered.load(Ordering::SeqCst)
            );
            let _ = tokio::time::timeout(Duration::from_millis(200), progress.notified()).await;
        }
        env.kill_serve();
        for t in tasks {
            if let Some(id) = t.await.unwrap() {
                acknowledged.push(id);
            }
        }
        env.start_serve().await;
        wait_all_settled(&env, Duration::from_secs(60)).await;
        assert_converged(&env).await;
    }
    // No acknowledged create was lost.
    for id in &acknowledged {
        let v = env.volume(*id).await;
        assert!(v["state"] == "available" || v["state"] == "deleted", "{v}");
    }
    assert!(!acknowledged.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_server_changed_before_the_database_did() {
    let mut env = Env::start(1, 100, 100).await;
    env.restart_with(&[("NFSPROV_FAULT", "after-apply")]).await;
    let id = env.create_accepted("crashy", json!([{"host": "*"}])).await;
    // The process aborts right after the batch was applied on the server.
    let mut child = env.serve.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the fault point never fired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    assert!(env.log().contains("NFSPROV_FAULT=after-apply"));
    // The server has the export; the database never heard.
    assert_eq!(
        env.managed_file("srv1")
            .matches("/srv/nfsprov/pool1/crashy ")
            .count(),
        1
    );
    env.start_serve().await;
    let v = env
        .wait_volume(id, Duration::from_secs(20), |v| v["state"] == "available")
        .await;
    assert_eq!(v["last_error"], Value::Null);
    assert_eq!(
        env.managed_file("srv1")
            .matches("/srv/nfsprov/pool1/crashy ")
            .count(),
        1
    );
    assert_converged(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_on_the_server_are_repaired() {
    let mut env = Env::start(1, 100, 100).await;
    env.restart_with(&[("NFSPROV_RESYNC_SECS", "0.5")]).await;
    for name in ["keep", "victim"] {
        let (s, v) = env
            .create(ALICE, 1, name, 1, json!([{"host": "10.0.0.1"}]))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let srv = env.server("srv1");
    let victim = "/srv/nfsprov/pool1/victim";

    // 1. A line deleted by hand from nfsprov's file (and the table reloaded) comes back.
    let file = srv.exports_d().join("nfsprov.exports");
    let edited: String = env
        .managed_file("srv1")
        .lines()
        .filter(|l| !l.starts_with(victim))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&file, edited).unwrap();
    let out = srv.run_inside("exportfs -ra").unwrap();
    assert!(out.status.success());
    assert!(etab_entries(&srv.etab().unwrap(), victim).is_empty());
    let deadline = Instant::now() + Duration::from_secs(15);
    while etab_entries(&srv.etab().unwrap(), victim).is_empty() {
        assert!(Instant::now() < deadline, "line was not restored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.managed_file("srv1").matches(victim).count(), 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !env
        .log()
        .contains("drift repaired: restored export of volume")
    {
        assert!(
            Instant::now() < deadline,
            "drift not logged; log:\n{}\nsshd log:\n{}",
            env.log(),
            std::fs::read_to_string(srv.sshd_log()).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        env.log()
            .contains("drift repaired: restored export of volume"),
        "{}",
        env.log()
    );

    // 2. An export removed from the kernel table by hand (file untouched) is re-exported.
    let out = srv
        .run_inside(&format!("exportfs -u 10.0.0.1:{victim}"))
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(etab_entries(&srv.etab().unwrap(), victim).is_empty());
    let deadline = Instant::now() + Duration::from_secs(15);
    while etab_entries(&srv.etab().unwrap(), victim).is_empty() {
        assert!(Instant::now() < deadline, "export table was not repaired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 3. A line added by hand to nfsprov's file is removed; /etc/exports is never touched.
    let mut text = env.managed_file("srv1");
    text.push_str("/srv/nfsprov/pool2 *(rw,no_root_squash)\n");
    std::fs::write(&file, text).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while env.managed_file("srv1").contains("/srv/nfsprov/pool2 ") {
        assert!(Instant::now() < deadline, "stray line was not removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        std::fs::read_to_string(srv.etc_exports())
            .unwrap()
            .contains(nfsprov_testbed::FOREIGN_EXPORT_LINE)
    );
    assert_converged(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_fails_closed() {
    let mut env = Env::start(1, 100, 100).await;
    let log_path = env.server("srv1").sshd_log();
    env.tb
        .server_mut("srv1")
        .unwrap()
        .rotate_host_key()
        .unwrap();
    let log_len = std::fs::read_to_string(&log_path).unwrap().len();
    let file_before = env.managed_file("srv1");

    let id = env
        .create_accepted("locked-out", json!([{"host": "*"}]))
        .await;
    // (The first error may be the old session being cut by sshd's restart.)
    let v = env
        .wait_volume(id, Duration::from_secs(30), |v| {
            v["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("host key verification failed"))
        })
        .await;
    assert_eq!(v["state"], "creating");
    let (_, servers) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/servers", None)
        .await;
    assert_eq!(servers[0]["status"], "unreachable");

    // No command ran: sshd never authenticated anyone, nothing changed on the server.
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !log[log_len..].contains("Accepted publickey"),
        "{}",
        &log[log_len..]
    );
    assert!(
        !env.server("srv1")
            .host_path("/srv/nfsprov/pool1/locked-out")
            .exists()
    );
    assert_eq!(env.managed_file("srv1"), file_before);

    // An admin pins the new key: the pending volume is applied.
    let new_key = env.server("srv1").host_key.clone();
    let (s, _) = env
        .req(
            Method::PATCH,
            Some(ADMIN),
            "/api/v1/servers/srv1",
            Some(json!({"host_key": new_key})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    env.wait_volume(id, Duration::from_secs(30), |v| v["state"] == "available")
        .await;
    assert!(std::fs::read_to_string(&log_path).unwrap()[log_len..].contains("Accepted publickey"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_then_back() {
    let mut env = Env::start(1, 100, 100).await;
    env.restart_with(&[("NFSPROV_MAX_BACKOFF_SECS", "1")]).await;
    env.server("srv1").stop().unwrap();

    let id = env.create_accepted("patient", json!([{"host": "*"}])).await;
    let v = env
        .wait_volume(id, Duration::from_secs(20), |v| v["last_error"].is_string())
        .await;
    assert_eq!(v["state"], "creating");
    assert!(
        v["last_error"]
            .as_str()
            .unwrap()
            .contains("srv1 unreachable"),
        "{v}"
    );
    let (_, servers) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/servers", None)
        .await;
    assert_eq!(servers[0]["status"], "unreachable");
    // hootie's create also answers (202: recorded, not yet applied) instead of hanging.
    let (s, body) = env
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1.0/volumes/",
            Some(json!({"root_path": 1, "sub_path": "patient2", "size_GB": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");

    env.server("srv1").start().unwrap();
    let v = env
        .wait_volume(id, Duration::from_secs(30), |v| v["state"] == "available")
        .await;
    assert_eq!(v["last_error"], Value::Null);
    wait_all_settled(&env, Duration::from_secs(30)).await;
    assert_converged(&env).await;
}
