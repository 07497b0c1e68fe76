//! The error paths README.md and ARCHITECTURE.md promise, each provoked for real against the
//! real binary and real servers: a create batch that panics, a caller that went away before
//! its batch, a server that is down under a stream of requests, a chown that fails for one
//! volume of a group, a server refusal through hootie's API, a server that hangs past the
//! session's time limit, and a delete giving its capacity back.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const POOL: &str = "/srv/nfsprov/pool1";

fn create_body(sub_path: &str, size: i64) -> Value {
    json!({"root_path_id": 1, "sub_path": sub_path, "size_gb": size, "clients": [{"host": "10.0.0.1"}]})
}

async fn root_path_allocated(env: &Env) -> i64 {
    let (_, rps) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/rootpaths", None)
        .await;
    rps[0]["allocated_gb"].as_i64().unwrap()
}

async fn server_row(env: &Env) -> Value {
    let (_, servers) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/servers", None)
        .await;
    servers[0].clone()
}

/// Lines of the service's log holding every one of `needles`.
fn log_lines(env: &Env, needles: &[&str]) -> usize {
    env.log()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

/// Poll (bounded) until the log has `count` lines holding every one of `needles`.
async fn wait_log(env: &Env, needles: &[&str], count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while log_lines(env, needles) < count {
        assert!(
            Instant::now() < deadline,
            "the log never had {count} lines with {needles:?}:\n{}",
            env.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sub_paths(volumes: &[Value]) -> Vec<String> {
    volumes
        .iter()
        .map(|v| v["sub_path"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A create batch that panics in the middle of its transaction (after a first insert) fails
/// its own requests only: nothing of it is recorded or reserved, and the creates after it are
/// recorded and applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_create_batch_fails_only_itself() {
    let mut env = Env::start(1, 100, 20).await;
    env.restart_with(&[("NFSPROV_FAULT", "create-batch-panic-once")])
        .await;
    let (s, e) = env
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1/volumes",
            Some(create_body("doomed", 2)),
        )
        .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{e}");
    assert_eq!(e["error"]["code"], "internal", "{e}");
    let log = env.log();
    assert!(
        log.contains("NFSPROV_FAULT=create-batch-panic-once: panicking on purpose"),
        "{log}"
    );
    assert!(
        log.contains("internal error while recording the create"),
        "{log}"
    );

    // The thread lives on: the next creates are recorded and applied.
    let after = env
        .create_available("after", json!([{"host": "10.0.0.1"}]))
        .await;
    let (s, v) = env
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1.0/volumes/",
            Some(json!({"root_path": 1, "sub_path": "after-hootie", "size_GB": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // Nothing of the panicked batch is left: not its row, not its reservation, not its export.
    let all = env.all_volumes().await;
    assert_eq!(sub_paths(&all), ["after", "after-hootie"], "{all:?}");
    assert_eq!(env.user_row("alice").await["used_gb"], 2);
    assert_eq!(root_path_allocated(&env).await, 2);
    assert_eq!(env.volume(after).await["state"], "available");
    let file = env.managed_file("srv1");
    assert!(!file.contains("doomed"), "{file}");
    assert!(
        !env.server("srv1")
            .host_path(&format!("{POOL}/doomed"))
            .exists()
    );
}

fn basic(user: (&str, &str)) -> String {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", user.0, user.1));
    format!("Basic {token}")
}

/// A create whose caller hung up before its batch was taken is not recorded. The test holds
/// SQLite's write lock on the service's database file (`BEGIN IMMEDIATE`), so the create thread
/// waits in a first batch (one create, whose caller stays); three more creates are queued
/// behind it (the service logs each), then their clients close their connections and the
/// service drops those requests (the test reads the end of the connection). Once the lock is
/// released the first create is recorded, the three are not, and nothing is reserved for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_caller_went_away_is_not_recorded() {
    let mut env = Env::start(1, 100, 20).await;
    env.restart_with(&[("NFSPROV_LOG", "info,nfsprov::datastore::create=debug")])
        .await;
    let db_path = nfsprov::serve::db_path(&env.data_dir());
    let lock = rusqlite::Connection::open(&db_path).unwrap();
    lock.busy_timeout(Duration::from_secs(20)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    // The lock must not outlive a failed assertion for long: the service's writers wait 30 s.
    let batches_before = log_lines(&env, &["recording a batch of creates"]);

    let first = {
        let (http, base) = (env.http.clone(), env.base());
        tokio::spawn(async move {
            let r = http
                .post(format!("{base}/api/v1/volumes"))
                .basic_auth(ALICE.0, Some(ALICE.1))
                .json(&create_body("stays", 1))
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        })
    };
    wait_log(
        &env,
        &["recording a batch of creates", "creates=1"],
        batches_before + 1,
        Duration::from_secs(10),
    )
    .await;

    let mut gone = Vec::new();
    for k in 0..3 {
        let body = create_body(&format!("gone{k}"), 1).to_string();
        let request = format!(
            "POST /api/v1/volumes HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            basic(ALICE),
            body.len()
        );
        let mut s = TcpStream::connect(("127.0.0.1", env.port)).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        gone.push(s);
    }
    for k in 0..3 {
        wait_log(
            &env,
            &["create queued", &format!("gone{k}")],
            1,
            Duration::from_secs(10),
        )
        .await;
    }
    // The callers hang up; the service ends each connection without an answer.
    for mut s in gone {
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "the service kept the connection of a caller that went away: {read:?} {}",
            String::from_utf8_lossy(&rest)
        );
    }
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);

    let (s, v) = tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("the first create is answered once the lock is released")
        .unwrap();
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    wait_log(
        &env,
        &[
            "creates not recorded: their callers went away",
            "withdrawn=3",
        ],
        1,
        Duration::from_secs(10),
    )
    .await;
    let all = env.all_volumes().await;
    assert_eq!(sub_paths(&all), ["stays"], "{all:?}");
    assert_eq!(env.user_row("alice").await["used_gb"], 1);
    assert_eq!(root_path_allocated(&env).await, 1);
    env.wait_volume(v["id"].as_i64().unwrap(), Duration::from_secs(20), |v| {
        v["state"] == "available"
    })
    .await;
    assert!(!env.managed_file("srv1").contains("gone"));
}

/// When connection attempts start after a first failure at 0 s, with the reconciler's backoff
/// (0.5 s doubling, at most `max`): how many fit in `elapsed`.
fn attempts_allowed(elapsed: Duration, max: Duration) -> usize {
    let mut at = Duration::ZERO;
    let mut wait = Duration::from_millis(500);
    let mut n = 0;
    while at <= elapsed {
        n += 1;
        at += wait;
        wait = (wait * 2).min(max);
    }
    n
}

/// A server that is down costs no SSH connection attempt per request: its reconciler retries
/// with backoff, and requests do not cut the backoff short. sshd is stopped and a listener on
/// its port counts the connections nfsprov opens (closing each at once, as a dead server would
/// refuse them). A stream of 16 creates, one a second (each waits its second with
/// `?wait=true&timeout=1`, then is answered 202), opens only as many connections as the backoff
/// schedule allows over the stream's duration, far fewer than one per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_costs_no_ssh_attempt_per_request() {
    const MAX_BACKOFF: Duration = Duration::from_secs(8);
    const CREATES: usize = 16;
    let mut env = Env::start(1, 100, 100).await;
    env.restart_with(&[("NFSPROV_MAX_BACKOFF_SECS", "8")]).await;
    let port = env.server("srv1").ssh_port;
    env.server("srv1").stop().unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(s);
            }
        })
    };
    let count = || accepted.load(std::sync::atomic::Ordering::SeqCst);

    // The first create finds the session dead and the server down.
    let first = env
        .create_accepted("first", json!([{"host": "10.0.0.1"}]))
        .await;
    env.wait_volume(first, Duration::from_secs(20), |v| {
        v["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("srv1 unreachable"))
    })
    .await;
    let began = Instant::now();
    let at_start = count();
    for k in 0..CREATES {
        let (s, v) = env
            .req(
                Method::POST,
                Some(ALICE),
                "/api/v1/volumes?wait=true&timeout=1",
                Some(create_body(&format!("s{k}"), 1)),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    }
    // Attempts already under way when the stream ends are counted too.
    let elapsed = began.elapsed();
    let during = count() - at_start;
    let allowed = attempts_allowed(elapsed + Duration::from_secs(1), MAX_BACKOFF);
    eprintln!(
        "{during} SSH connection attempts during {CREATES} creates in {elapsed:?}; the backoff allows {allowed}"
    );
    assert!(
        during <= allowed,
        "{during} SSH connection attempts during {CREATES} creates in {elapsed:?}; the backoff allows {allowed}"
    );
    assert!(
        during * 2 < CREATES,
        "{during} SSH connection attempts for {CREATES} creates"
    );
    // The listener does see the attempts, so the count above is not vacuous.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count() == 0 {
        assert!(Instant::now() < deadline, "no connection attempt was seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server_row(&env).await["status"], "unreachable");

    // Back up: everything queued meanwhile is applied.
    counter.abort();
    let _ = counter.await;
    env.server("srv1").start().unwrap();
    for k in [0, CREATES - 1] {
        let id = env
            .all_volumes()
            .await
            .iter()
            .find(|v| v["sub_path"] == format!("s{k}"))
            .unwrap()["id"]
            .as_i64()
            .unwrap();
        env.wait_volume(id, Duration::from_secs(30), |v| v["state"] == "available")
            .await;
    }
}

/// Undoes `chattr +i` when the test ends, however it ends (an immutable directory cannot be
/// removed with the test's files).
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn set(path: &std::path::Path) -> Immutable {
        let out = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "chattr +i: {out:?}");
        Immutable(path.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

/// Directories of one parent, owner and mode are chowned and chmodded as a group; when the
/// group's chown fails (here for real: one directory is immutable), the group is retried
/// volume by volume, the error goes to that volume alone, and the others are available with
/// their owner and mode. The immutable directory is one a crashed pass left behind (created,
/// marked as the volume's), which the next pass takes up in the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_chown_in_a_group_is_blamed_on_its_volume_only() {
    use std::os::unix::fs::MetadataExt as _;
    let mut env = Env::start(1, 100, 100).await;
    env.restart_with(&[("NFSPROV_MAX_BACKOFF_SECS", "1")]).await;
    env.server("srv1").stop().unwrap();
    let mut ids = Vec::new();
    for name in ["ga", "gb", "gc"] {
        let (s, v) = env
            .req(
                Method::POST,
                Some(ALICE),
                "/api/v1/volumes",
                Some(json!({"root_path_id": 1, "sub_path": name, "size_gb": 1,
                            "clients": [{"host": "10.0.0.1"}], "uid": 1234, "gid": 1234, "mode": "0750"})),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        ids.push(v["id"].as_i64().unwrap());
    }
    let srv = env.server("srv1");
    let gc = srv.host_path(&format!("{POOL}/gc"));
    std::fs::create_dir(&gc).unwrap();
    std::fs::write(
        gc.join(format!(".nfsprov-volume-{}", ids[2])),
        "created by nfsprov\n",
    )
    .unwrap();
    let _immutable = Immutable::set(&gc);
    srv.start().unwrap();

    let bad = env
        .wait_volume(ids[2], Duration::from_secs(30), |v| {
            v["state"] == "error" && v["last_error"].is_string()
        })
        .await;
    let err = bad["last_error"].as_str().unwrap();
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(err.contains("chown"), "{err}");
    for (id, name) in ids[..2].iter().zip(["ga", "gb"]) {
        let v = env
            .wait_volume(*id, Duration::from_secs(30), |v| v["state"] == "available")
            .await;
        assert_eq!(v["last_error"], Value::Null, "{v}");
        let meta = std::fs::metadata(srv.host_path(&format!("{POOL}/{name}"))).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (1234, 1234, 0o750),
            "{name}"
        );
        assert_eq!(
            etab_entries(&srv.etab().unwrap(), &format!("{POOL}/{name}")).len(),
            1
        );
    }
    assert!(etab_entries(&srv.etab().unwrap(), &format!("{POOL}/gc")).is_empty());
    // Still blamed on the next passes, and on that volume only.
    assert_eq!(env.volume(ids[2]).await["state"], "error");
    assert_eq!(env.volume(ids[0]).await["state"], "available");
}

/// hootie's create of a volume the server refuses answers 502 with the server's own message
/// (here mkdir's, on a read-only file system), and as in hootie nothing is kept: not listed,
/// not readable, nothing reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooties_502_carries_the_servers_message() {
    let env = Env::start(1, 100, 50).await;
    let srv = env.server("srv1");
    let ro = format!("{POOL}/ro");
    let out = srv
        .run_inside(&format!(
            "mkdir -p {ro} && mount --bind {ro} {ro} && mount -o remount,bind,ro {ro}"
        ))
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (s, e) = env
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1.0/volumes/",
            Some(json!({"root_path": 1, "sub_path": "ro/vol", "size_GB": 3})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{e}");
    let err = e["error"].as_str().unwrap();
    assert!(
        err.contains("mkdir: cannot create directory") && err.contains("Read-only file system"),
        "not the server's own message: {err}"
    );
    assert!(err.contains(&format!("{ro}/vol")), "{err}");
    let (_, list) = env
        .req(Method::GET, Some(ALICE), "/api/v1.0/volumes/", None)
        .await;
    assert_eq!(list, json!([]));
    let refused = env
        .all_volumes()
        .await
        .into_iter()
        .find(|v| v["sub_path"] == "ro/vol")
        .expect("the refused volume's row (deleting or deleted)");
    let (s, _) = env
        .req(
            Method::GET,
            Some(ALICE),
            &format!("/api/v1.0/volumes/{}/", refused["id"]),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(env.user_row("alice").await["used_gb"], 0);
    assert_eq!(root_path_allocated(&env).await, 0);
}

/// A server whose session hangs (its sshd session and shell stopped) past the pass's time
/// limit: the reconciler gives up at the local limit (the pass's limit plus a grace), says so,
/// drops the session and connects anew; the waiting volume is then applied over the new
/// session while the old one is still frozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_server_hits_the_session_time_limit_and_a_new_session_takes_over() {
    let mut env = Env::start(1, 100, 100).await;
    env.restart_with(&[
        ("NFSPROV_PASS_TIMEOUT_SECS", "2"),
        ("NFSPROV_SLOW_PASS_SECS", "1"),
        ("NFSPROV_MAX_BACKOFF_SECS", "1"),
    ])
    .await;
    env.create_available("first", json!([{"host": "10.0.0.1"}]))
        .await;
    let srv = env.server("srv1");
    let sshd_log = std::fs::read_to_string(srv.sshd_log()).unwrap_or_default();
    let sessions_before = sshd_log.matches("Accepted publickey").count();
    let frozen: Vec<u32> = srv.session_procs().into_iter().map(|(p, _)| p).collect();
    assert!(!frozen.is_empty());
    let signal = |sig: &str| {
        for p in &frozen {
            let _ = std::process::Command::new("kill")
                .args([sig, &p.to_string()])
                .status();
        }
    };
    struct Thaw<F: Fn(&str)>(F);
    impl<F: Fn(&str)> Drop for Thaw<F> {
        fn drop(&mut self) {
            (self.0)("-CONT");
        }
    }
    signal("-STOP");
    let _thaw = Thaw(signal);

    let began = Instant::now();
    let id = env
        .create_accepted("waiting", json!([{"host": "10.0.0.2"}]))
        .await;
    // The pass gives up at its local limit (2 s + the grace), not before, and says why.
    wait_log(
        &env,
        &["reconcile failed", "no answer within"],
        1,
        Duration::from_secs(40),
    )
    .await;
    let gave_up = began.elapsed();
    assert!(gave_up >= Duration::from_secs(2), "{gave_up:?}");
    let v = env
        .wait_volume(id, Duration::from_secs(30), |v| v["state"] == "available")
        .await;
    assert_eq!(v["last_error"], Value::Null);
    // Applied over a new session, while the old one is still frozen.
    assert!(
        frozen.iter().any(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .is_ok_and(|s| s.split(' ').nth(2) == Some("T"))
        }),
        "the old session was not frozen any more"
    );
    let sshd_log = std::fs::read_to_string(srv.sshd_log()).unwrap_or_default();
    assert!(
        sshd_log.matches("Accepted publickey").count() > sessions_before,
        "no new session"
    );
    let etab = srv.etab().unwrap();
    assert_eq!(etab_entries(&etab, &format!("{POOL}/waiting")).len(), 1);
}

/// A delete gives back the root path's capacity as well as the owner's quota, and the freed
/// capacity can be taken at once by another user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_releases_capacity_as_well_as_quota() {
    let env = Env::start(1, 3, 10).await;
    let (s, v) = env.create(ALICE, 1, "big", 3, json!([{"host": "*"}])).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(root_path_allocated(&env).await, 3);
    let (s, e) = env.create(BOB, 1, "wants", 3, json!([{"host": "*"}])).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["error"]["code"], "capacity_exceeded", "{e}");

    let (s, d) = env.delete_wait(ALICE, v["id"].as_i64().unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["state"], "deleted");
    assert_eq!(env.user_row("alice").await["used_gb"], 0);
    assert_eq!(root_path_allocated(&env).await, 0);
    let (s, w) = env.create(BOB, 1, "wants", 3, json!([{"host": "*"}])).await;
    assert_eq!(s, StatusCode::CREATED, "{w}");
    assert_eq!(env.user_row("bob").await["used_gb"], 3);
    assert_eq!(root_path_allocated(&env).await, 3);
}
