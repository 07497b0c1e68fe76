//! Crashes, drift and failures: kill -9 mid-batch, a crash between the server change and the
//! database update, hand edits on the server, a changed host key, a server that goes away.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
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

/// A volume as the database holds it, read from the file directly: the service may be stopped
/// (SIGSTOP) or dead, so the API cannot be asked.
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    sub_path: String,
    state: String,
    server: String,
}

fn db_rows(env: &Env) -> BTreeMap<i64, Row> {
    let db = rusqlite::Connection::open_with_flags(
        env.data_dir().join("nfsprov.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut q = db
        .prepare("SELECT id, sub_path, state, server_id FROM volumes")
        .unwrap();
    q.query_map([], |r| {
        Ok(Row {
            id: r.get(0)?,
            sub_path: r.get(1)?,
            state: r.get(2)?,
            server: format!("srv{}", r.get::<_, i64>(3)?),
        })
    })
    .unwrap()
    .map(|r| {
        let r = r.unwrap();
        (r.id, r)
    })
    .collect()
}

/// Whether `row`'s export line is in its server's managed file.
fn in_managed_file(env: &Env, row: &Row) -> bool {
    let line_start = format!("/srv/nfsprov/pool1/{} ", row.sub_path);
    env.managed_file(&row.server)
        .lines()
        .any(|l| l.starts_with(&line_start))
}

/// One letter of `/proc/<pid>/stat`'s state field.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid of a child this test started and still owns.
    assert_eq!(
        unsafe { libc::kill(pid as libc::pid_t, sig) },
        0,
        "kill {pid}"
    );
}

/// SIGSTOP `nfsprov serve` and wait until it is stopped: nothing it does changes the database
/// or starts a command on a server until [`thaw`].
async fn freeze(env: &Env) -> u32 {
    let pid = env.serve.as_ref().expect("serving").id();
    signal(pid, libc::SIGSTOP);
    let deadline = Instant::now() + Duration::from_secs(60);
    while proc_state(pid) != Some('T') {
        assert!(Instant::now() < deadline, "nfsprov {pid} did not stop");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pid
}

fn thaw(pid: u32) {
    signal(pid, libc::SIGCONT);
}

/// Wait until no script of nfsprov's runs on `srv`: each session's `sh` is blocked reading its
/// stdin and has no children. With nfsprov stopped, that stays so.
async fn wait_sessions_idle(srv: &TestbedServer) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let procs = srv.session_procs();
        let shells: Vec<u32> = procs
            .iter()
            .filter(|(_, c)| c == "sh")
            .map(|(p, _)| *p)
            .collect();
        let reading_stdin = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/syscall"))
                .is_ok_and(|s| s.starts_with(&format!("{} 0x0 ", libc::SYS_read)))
        };
        let parent = |pid: u32| -> Option<u32> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            stat.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        let busy_children = procs
            .iter()
            .any(|(p, _)| parent(*p).is_some_and(|pp| shells.contains(&pp)));
        if !shells.is_empty() && shells.iter().all(|&p| reading_stdin(p)) && !busy_children {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a script is still running on {}: {procs:?}",
            srv.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What became of one request sent while the service may be killed.
enum Sent {
    Answered(i64),
    /// No answer, and the service is gone: only the kill may cut a request.
    CutByTheKill,
}

/// A request the service must answer with `want` (returning the volume's id), unless the
/// service died under it, which is checked: any other failure fails the test.
async fn must_answer(
    http: &reqwest::Client,
    base: &str,
    req: reqwest::RequestBuilder,
    want: StatusCode,
    what: &str,
) -> Sent {
    let failed = match req.send().await {
        Ok(r) => {
            let status = r.status();
            match r.text().await {
                Ok(text) => {
                    assert_eq!(status, want, "{what}: {text}");
                    let v: Value = serde_json::from_str(&text).unwrap();
                    return Sent::Answered(v["id"].as_i64().unwrap());
                }
                Err(e) => e,
            }
        }
        Err(e) => e,
    };
    let alive = http.get(format!("{base}/api/v1/health")).send().await;
    assert!(
        alive.is_err(),
        "{what} failed while the service was up: {failed}"
    );
    Sent::CutByTheKill
}

/// Alice's create of `sub` on root path `rp` (no wait), then its wait until the server has it:
/// a stream of creates where, at any time, some are applied and some are not.
async fn create_stream(
    http: reqwest::Client,
    base: String,
    subs: Vec<(String, i64)>,
    acknowledged: Arc<tokio::sync::Mutex<Vec<i64>>>,
    progress: Arc<tokio::sync::Notify>,
) {
    for (sub, rp) in subs {
        let req = http
            .post(format!("{base}/api/v1/volumes"))
            .basic_auth(ALICE.0, Some(ALICE.1))
            .json(&json!({"root_path_id": rp, "sub_path": sub, "size_gb": 1,
                          "clients": [{"host": "10.0.0.0/8", "options": "rw"}]}));
        let Sent::Answered(id) = must_answer(
            &http,
            &base,
            req,
            StatusCode::ACCEPTED,
            &format!("create {sub}"),
        )
        .await
        else {
            return;
        };
        acknowledged.lock().await.push(id);
        progress.notify_one();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let req = http
                .get(format!("{base}/api/v1/volumes/{id}"))
                .basic_auth(ALICE.0, Some(ALICE.1));
            let r = req.send().await;
            let Ok(r) = r else {
                // Only a dead service may leave a poll unanswered.
                let alive = http.get(format!("{base}/api/v1/health")).send().await;
                assert!(
                    alive.is_err(),
                    "polling {sub} failed while the service was up"
                );
                return;
            };
            let Ok(v) = r.json::<Value>().await else {
                let alive = http.get(format!("{base}/api/v1/health")).send().await;
                assert!(
                    alive.is_err(),
                    "polling {sub} failed while the service was up"
                );
                return;
            };
            if v["state"] != "creating" {
                assert_eq!(v["state"], "available", "{v}");
                break;
            }
            assert!(Instant::now() < deadline, "{sub} not applied in 60 s: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What the kill interrupted, read from the database and the servers while nfsprov was
/// stopped, just before SIGKILL.
#[derive(Debug)]
struct AtTheKill {
    /// This round's acknowledged creates the killed process had applied and recorded.
    available: Vec<i64>,
    /// This round's acknowledged creates it had recorded but not finished: the restart's work.
    creating: Vec<i64>,
    /// Of those, the ones whose export was already on the server (applied, not recorded).
    creating_on_server: Vec<i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_batch_then_restart_converges() {
    let mut env = Env::start(2, 10_000, 10_000).await;
    let mut acknowledged: Vec<i64> = Vec::new();
    let mut deleted: Vec<i64> = Vec::new();
    let mut found_on_server_unrecorded = 0;
    // Each round streams 40 creates over both servers (4 at a time, each waiting until its
    // volume is applied before the next) and deletes earlier volumes meanwhile, then kills the
    // service at a different point: once 1, 5, 15, 30 creates were acknowledged, every delete
    // was acknowledged, and the database (read with the service stopped) holds some of this
    // round's acknowledged creates applied and some still `creating`: mid-stream, not between
    // two rounds of work.
    for (round, kill_after) in [1usize, 5, 15, 30].into_iter().enumerate() {
        let acked = Arc::new(tokio::sync::Mutex::new(Vec::<i64>::new()));
        let progress = Arc::new(tokio::sync::Notify::new());
        let mut streams = Vec::new();
        for w in 0..4 {
            let subs = (0..10)
                .map(|i| (format!("r{round}-w{w}-v{i}"), 1 + (i + w) as i64 % 2))
                .collect();
            streams.push(tokio::spawn(create_stream(
                env.http.clone(),
                env.base(),
                subs,
                acked.clone(),
                progress.clone(),
            )));
        }
        let live: Vec<i64> = acknowledged
            .iter()
            .filter(|id| !deleted.contains(id))
            .copied()
            .collect();
        let mut deletes = Vec::new();
        for &id in live.iter().step_by(3).take(10) {
            let (http, base) = (env.http.clone(), env.base());
            deletes.push(tokio::spawn(async move {
                let req = http
                    .delete(format!("{base}/api/v1/volumes/{id}"))
                    .basic_auth(ALICE.0, Some(ALICE.1));
                let sent = must_answer(
                    &http,
                    &base,
                    req,
                    StatusCode::ACCEPTED,
                    &format!("delete {id}"),
                )
                .await;
                match sent {
                    Sent::Answered(got) => assert_eq!(got, id),
                    Sent::CutByTheKill => panic!("delete {id} was not answered before the kill"),
                }
                id
            }));
        }
        for d in deletes {
            deleted.push(d.await.unwrap());
        }

        let deadline = Instant::now() + Duration::from_secs(60);
        let at_kill = loop {
            let n = acked.lock().await.len();
            if n >= kill_after {
                let pid = freeze(&env).await;
                let ours: Vec<i64> = acked.lock().await.clone();
                let rows = db_rows(&env);
                let state = |id: &i64| rows[id].state.as_str();
                let available: Vec<i64> = ours
                    .iter()
                    .filter(|id| state(id) == "available")
                    .copied()
                    .collect();
                let creating: Vec<i64> = ours
                    .iter()
                    .filter(|id| state(id) == "creating")
                    .copied()
                    .collect();
                assert_eq!(available.len() + creating.len(), ours.len(), "{rows:?}");
                if !available.is_empty() && !creating.is_empty() {
                    let creating_on_server = creating
                        .iter()
                        .filter(|id| in_managed_file(&env, &rows[id]))
                        .copied()
                        .collect();
                    env.kill_serve();
                    break AtTheKill {
                        available,
                        creating,
                        creating_on_server,
                    };
                }
                thaw(pid);
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no point with {kill_after} creates acknowledged and some of \
                 them applied, some not"
            );
            let _ = tokio::time::timeout(Duration::from_millis(20), progress.notified()).await;
        };
        for s in streams {
            s.await.unwrap();
        }
        let ours = acked.lock().await.clone();
        assert!(ours.len() >= kill_after, "{ours:?}");
        eprintln!(
            "round {round}: killed after {} acknowledged creates: {at_kill:?}",
            ours.len()
        );
        found_on_server_unrecorded += at_kill.creating_on_server.len();
        acknowledged.extend(&ours);

        env.start_serve().await;
        wait_all_settled(&env, Duration::from_secs(60)).await;
        assert_converged(&env).await;
        // What the killed process left unfinished, the restarted one finished.
        for id in &at_kill.creating {
            assert_eq!(env.volume(*id).await["state"], "available");
        }
        for id in &at_kill.available {
            assert_eq!(env.volume(*id).await["state"], "available");
        }
    }
    // No acknowledged create or delete was lost.
    for id in &acknowledged {
        let want = if deleted.contains(id) {
            "deleted"
        } else {
            "available"
        };
        let v = env.volume(*id).await;
        assert_eq!(v["state"], want, "{v}");
    }
    assert!(deleted.len() >= 10, "{deleted:?}");
    eprintln!("{found_on_server_unrecorded} volumes were on the server but unrecorded at a kill");

    // A kill inside a pass for certain: the fault point aborts the process right after a batch
    // was applied on the server, before its outcomes reach the database.
    env.restart_with(&[("NFSPROV_FAULT", "after-apply")]).await;
    let acked = Arc::new(tokio::sync::Mutex::new(Vec::<i64>::new()));
    let progress = Arc::new(tokio::sync::Notify::new());
    let mut streams = Vec::new();
    for w in 0..4 {
        let subs = (0..10)
            .map(|i| (format!("fault-w{w}-v{i}"), 1 + (i + w) as i64 % 2))
            .collect();
        streams.push(tokio::spawn(create_stream(
            env.http.clone(),
            env.base(),
            subs,
            acked.clone(),
            progress.clone(),
        )));
    }
    let mut child = env.serve.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the fault point never fired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    assert!(env.log().contains("NFSPROV_FAULT=after-apply"));
    for s in streams {
        s.await.unwrap();
    }
    let ours = acked.lock().await.clone();
    assert!(!ours.is_empty());
    let rows = db_rows(&env);
    let unrecorded: Vec<&Row> = ours
        .iter()
        .map(|id| &rows[id])
        .filter(|r| r.state == "creating" && in_managed_file(&env, r))
        .collect();
    assert!(
        !unrecorded.is_empty(),
        "the aborted pass applied none of {ours:?}: {rows:?}"
    );
    for r in &unrecorded {
        let path = format!("/srv/nfsprov/pool1/{}", r.sub_path);
        let etab = env.server(&r.server).etab().unwrap();
        assert_eq!(etab_entries(&etab, &path).len(), 1, "{path}: {etab}");
    }
    env.start_serve().await;
    wait_all_settled(&env, Duration::from_secs(60)).await;
    assert_converged(&env).await;
    for id in &ours {
        assert_eq!(env.volume(*id).await["state"], "available");
    }
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
    let deadline = Instant::now() + Duration::from_secs(60);
    while etab_entries(&srv.etab().unwrap(), victim).is_empty() {
        assert!(Instant::now() < deadline, "line was not restored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.managed_file("srv1").matches(victim).count(), 1);
    let deadline = Instant::now() + Duration::from_secs(60);
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
    let deadline = Instant::now() + Duration::from_secs(60);
    while etab_entries(&srv.etab().unwrap(), victim).is_empty() {
        assert!(Instant::now() < deadline, "export table was not repaired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 3. A line added by hand to nfsprov's file, and loaded into the kernel table by the
    //    administrator's `exportfs -ra`, is removed from both; /etc/exports is never touched.
    //    nfsprov is stopped meanwhile (and its last script finished), so that the edit is
    //    certainly live in the kernel table before nfsprov may look.
    let stray = "/srv/nfsprov/pool2";
    std::fs::create_dir_all(srv.host_path(stray)).unwrap();
    let pid = freeze(&env).await;
    wait_sessions_idle(srv).await;
    let mut text = env.managed_file("srv1");
    text.push_str(&format!("{stray} *(rw,no_root_squash)\n"));
    std::fs::write(&file, text).unwrap();
    let out = srv.run_inside("exportfs -ra").unwrap();
    assert!(out.status.success(), "{out:?}");
    let etab = srv.etab().unwrap();
    assert_eq!(etab_entries(&etab, stray).len(), 1, "{etab}");
    assert!(etab_entries(&etab, stray)[0].starts_with("*(rw,"), "{etab}");
    assert!(env.managed_file("srv1").contains(&format!("{stray} ")));
    thaw(pid);
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.managed_file("srv1").contains(&format!("{stray} "))
        || !etab_entries(&srv.etab().unwrap(), stray).is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "stray export was not removed: file:\n{}\netab:\n{}",
            env.managed_file("srv1"),
            srv.etab().unwrap()
        );
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
    let old_key = env.server("srv1").host_key.clone();
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

    // The re-pinning is in the audit trail, before -> after as the fingerprints OpenSSH's own
    // ssh-keygen gives the two keys.
    let (_, trail) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/audit", None)
        .await;
    let r = trail
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "server.host_key")
        .unwrap_or_else(|| panic!("no record of the re-pinning: {trail:#}"))
        .clone();
    assert_eq!(r["actor"], ADMIN.0);
    assert_eq!(r["before"]["host_key"], ssh_keygen_fingerprint(&old_key));
    assert_eq!(r["after"]["host_key"], ssh_keygen_fingerprint(&new_key));
}

/// `ssh-keygen -lf` of a public key line: its `SHA256:...` fingerprint.
fn ssh_keygen_fingerprint(key: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key.pub");
    std::fs::write(&file, format!("{key}\n")).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
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
