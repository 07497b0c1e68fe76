//! The reconciler under real faults: a DNS server that never answers, failures that pass,
//! drift under a steady stream of requests, a server whose SSH session hangs, a reconciler that
//! panics. Every fault is made for real on a test-bed server.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A DNS server that never answers: a UDP socket on port 53 of a fresh 127.x address that
/// nobody reads from (so no ICMP "port unreachable" tells the resolver to give up either).
struct BlackholeDns {
    _sock: UdpSocket,
    addr: Ipv4Addr,
}

impl BlackholeDns {
    fn start() -> BlackholeDns {
        for _ in 0..50 {
            let b: [u8; 3] = rand_bytes();
            let addr = Ipv4Addr::new(127, 100 + b[0] % 100, b[1], 1 + b[2] % 250);
            if let Ok(sock) = UdpSocket::bind((addr, 53)) {
                return BlackholeDns { _sock: sock, addr };
            }
        }
        panic!("no free 127.x address for a blackhole DNS server");
    }

    /// Point `server`'s resolver at this DNS server, with the longest waits glibc allows.
    fn serve(&self, env: &Env, server: &str) {
        std::fs::write(
            env.server(server).host_path("/etc/resolv.conf"),
            format!("nameserver {}\noptions timeout:30 attempts:5\n", self.addr),
        )
        .unwrap();
    }
}

fn rand_bytes() -> [u8; 3] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id().rotate_left(13);
    let x = nanos.wrapping_mul(2_654_435_761);
    [(x >> 8) as u8, (x >> 16) as u8, (x >> 24) as u8]
}

async fn server_row(env: &Env) -> Value {
    let (_, servers) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/servers", None)
        .await;
    servers[0].clone()
}

/// Processes of `server` (its ssh sessions and what they run) named one of `names`.
fn procs_named(env: &Env, server: &str, names: &[&str]) -> Vec<(u32, String)> {
    env.server(server)
        .session_procs()
        .into_iter()
        .filter(|(_, comm)| names.contains(&comm.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_whose_dns_never_answers_is_held_back_and_the_others_proceed() {
    let mut env = Env::start(1, 100, 100).await;
    env.restart_with(&[
        ("NFSPROV_RESOLVE_TIMEOUT_SECS", "1"),
        ("NFSPROV_PASS_TIMEOUT_SECS", "20"),
    ])
    .await;
    let dns = BlackholeDns::start();
    dns.serve(&env, "srv1");

    let dark = env
        .create_accepted(
            "dark",
            json!([{"host": "dark.example"}, {"host": "10.1.2.3"}]),
        )
        .await;
    // Another user's create on the same server goes through promptly.
    let began = Instant::now();
    let (s, v) = env
        .create(BOB, 1, "bright", 1, json!([{"host": "10.0.0.1"}]))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "available", "{v}");
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "bob's create took {:?}",
        began.elapsed()
    );

    // The volume with the dark name says why, naming the host; its other client is exported.
    let v = env
        .wait_volume(dark, Duration::from_secs(15), |v| {
            v["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("dark.example"))
        })
        .await;
    assert_eq!(v["state"], "error", "{v}");
    let err = v["last_error"].as_str().unwrap();
    assert!(
        err.contains("did not resolve") && err.contains("no answer"),
        "{err}"
    );
    let etab = env.server("srv1").etab().unwrap();
    assert_eq!(
        etab_entries(&etab, "/srv/nfsprov/pool1/dark").len(),
        1,
        "{etab}"
    );
    assert!(!env.managed_file("srv1").contains("dark.example"));
    // Only its owner (and admins) see it.
    let (s, _) = env
        .req(
            Method::GET,
            Some(BOB),
            &format!("/api/v1/volumes/{dark}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let server = server_row(&env).await;
    assert!(
        !server.to_string().contains("dark.example"),
        "server status names a user's host: {server}"
    );

    // Nothing hangs on the server: no lookup or exportfs is left running.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = procs_named(&env, "srv1", &["exportfs", "getent", "timeout"]);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left running on the server: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Further creates are not slowed by the dark name either.
    let began = Instant::now();
    let (s, v) = env
        .create(BOB, 1, "bright2", 1, json!([{"host": "10.0.0.2"}]))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_stopped_at_its_time_limit_leaves_nothing_running_on_the_server() {
    // A name that was fine when its volume was created, whose DNS then stops answering:
    // the reload between two full passes hangs in exportfs; the pass's time limit must kill
    // it on the server and the pass must say so, and the next full pass holds the name back.
    let mut env = Env::start(1, 100, 100).await;
    env.restart_with(&[
        ("NFSPROV_RESOLVE_TIMEOUT_SECS", "1"),
        ("NFSPROV_PASS_TIMEOUT_SECS", "4"),
        ("NFSPROV_SLOW_PASS_SECS", "1"),
        ("NFSPROV_RESYNC_SECS", "600"),
        ("NFSPROV_MAX_BACKOFF_SECS", "1"),
    ])
    .await;
    let hosts = env.server("srv1").host_path("/etc/hosts");
    let mut text = std::fs::read_to_string(&hosts).unwrap();
    let original = text.clone();
    text.push_str("127.0.0.77\tfading.test\n");
    std::fs::write(&hosts, &text).unwrap();
    let fading = env
        .create_available("fading", json!([{"host": "fading.test"}]))
        .await;
    // The name goes to DNS now, which never answers.
    std::fs::write(&hosts, original).unwrap();
    let dns = BlackholeDns::start();
    dns.serve(&env, "srv1");

    let id = env
        .create_accepted("after", json!([{"host": "10.0.0.9"}]))
        .await;
    // While the pass hangs, the API says so.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let server = server_row(&env).await;
        let v = env.volume(id).await;
        if server["status"] == "slow"
            && v["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("pass running for"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no sign of the slow pass: {server} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The other volume gets through, the fading one carries the reason.
    env.wait_volume(id, Duration::from_secs(30), |v| v["state"] == "available")
        .await;
    let v = env
        .wait_volume(fading, Duration::from_secs(30), |v| {
            v["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("fading.test"))
        })
        .await;
    assert_eq!(v["state"], "error", "{v}");
    assert!(
        env.log().contains("ran out of time on the server"),
        "{}",
        env.log()
    );
    // The exportfs stopped by the time limit is gone from the server.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = procs_named(&env, "srv1", &["exportfs", "getent", "timeout"]);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left running on the server: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while server_row(&env).await["status"] != "reachable" {
        assert!(Instant::now() < deadline, "{}", server_row(&env).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_cut_off_by_a_crash_leaves_nothing_running_on_the_server() {
    let mut env = Env::start(1, 100, 100).await;
    env.restart_with(&[
        ("NFSPROV_PASS_TIMEOUT_SECS", "4"),
        ("NFSPROV_RESYNC_SECS", "600"),
    ])
    .await;
    let hosts = env.server("srv1").host_path("/etc/hosts");
    let original = std::fs::read_to_string(&hosts).unwrap();
    std::fs::write(&hosts, format!("{original}127.0.0.77\tfading.test\n")).unwrap();
    env.create_available("fading", json!([{"host": "fading.test"}]))
        .await;
    std::fs::write(&hosts, original).unwrap();
    let dns = BlackholeDns::start();
    dns.serve(&env, "srv1");
    // The next reload hangs in exportfs; nfsprov dies meanwhile (its ssh session with it).
    env.create_accepted("after", json!([{"host": "10.0.0.9"}]))
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while procs_named(&env, "srv1", &["exportfs"]).is_empty() {
        assert!(Instant::now() < deadline, "exportfs never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.kill_serve();
    let killed = Instant::now();
    // The pass's time limit still applies on the server.
    let deadline = killed + Duration::from_secs(12);
    loop {
        let left = procs_named(&env, "srv1", &["exportfs", "getent"]);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running on the server {:?} after nfsprov died: {left:?}",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_failed_to_resolve_recovers_without_a_patch() {
    let mut env = Env::start(1, 100, 100).await;
    env.restart_with(&[("NFSPROV_RESYNC_SECS", "1")]).await;
    // Not in the server's /etc/hosts; its resolver (127.0.0.1) refuses at once.
    let id = env
        .create_accepted("late", json!([{"host": "late.test"}]))
        .await;
    let v = env
        .wait_volume(id, Duration::from_secs(15), |v| v["state"] == "error")
        .await;
    assert!(
        v["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("late.test")),
        "{v}"
    );
    // The name comes to resolve (fixed in the server's /etc/hosts): no PATCH needed.
    let hosts = env.server("srv1").host_path("/etc/hosts");
    let mut text = std::fs::read_to_string(&hosts).unwrap();
    text.push_str("127.0.0.55\tlate.test\n");
    std::fs::write(&hosts, text).unwrap();
    let v = env
        .wait_volume(id, Duration::from_secs(15), |v| v["state"] == "available")
        .await;
    assert_eq!(v["last_error"], Value::Null);
    let etab = env.server("srv1").etab().unwrap();
    assert_eq!(
        etab_entries(&etab, "/srv/nfsprov/pool1/late")
            .iter()
            .filter(|c| c.starts_with("late.test("))
            .count(),
        1,
        "{etab}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkdir_on_a_read_only_file_system_recovers_when_it_is_writable_again() {
    let mut env = Env::start(1, 100, 100).await;
    env.restart_with(&[("NFSPROV_RESYNC_SECS", "1")]).await;
    let srv = env.server("srv1");
    let ro = "/srv/nfsprov/pool1/ro";
    let out = srv
        .run_inside(&format!(
            "mkdir -p {ro} && mount --bind {ro} {ro} && mount -o remount,bind,ro {ro}"
        ))
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let id = env
        .create_accepted("ro/vol", json!([{"host": "10.0.0.1"}]))
        .await;
    let v = env
        .wait_volume(id, Duration::from_secs(15), |v| v["state"] == "error")
        .await;
    assert!(
        v["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("Read-only file system")),
        "{v}"
    );
    let out = srv
        .run_inside(&format!("mount -o remount,bind,rw {ro}"))
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v = env
        .wait_volume(id, Duration::from_secs(15), |v| v["state"] == "available")
        .await;
    assert_eq!(v["last_error"], Value::Null);
    assert!(srv.host_path("/srv/nfsprov/pool1/ro/vol").is_dir());
    let etab = srv.etab().unwrap();
    assert_eq!(
        etab_entries(&etab, "/srv/nfsprov/pool1/ro/vol").len(),
        1,
        "{etab}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_directory_is_found_under_steady_requests_and_recovers_when_restored() {
    let mut env = Env::start(1, 100, 100).await;
    env.restart_with(&[("NFSPROV_RESYNC_SECS", "2")]).await;
    let id = env
        .create_available("moved", json!([{"host": "10.0.0.1"}]))
        .await;
    let other = env
        .create_available("other", json!([{"host": "10.0.0.2"}]))
        .await;
    let dir = env.server("srv1").host_path("/srv/nfsprov/pool1/moved");
    let aside = env
        .server("srv1")
        .host_path("/srv/nfsprov/pool1/moved-aside");
    std::fs::rename(&dir, &aside).unwrap();

    // A request every 300 ms that wakes the reconciler without changing the exports file
    // (so no reload trips over the missing directory): the resync (every 2 s) must still
    // happen.
    let began = Instant::now();
    let v = loop {
        let (s, body) = env
            .req(
                Method::PATCH,
                Some(ALICE),
                &format!("/api/v1/volumes/{other}"),
                Some(json!({"clients": [{"host": "10.0.0.2"}]})),
            )
            .await;
        assert!(s.is_success(), "{body}");
        let v = env.volume(id).await;
        if v["state"] == "error" {
            break v;
        }
        assert!(
            began.elapsed() < Duration::from_secs(25),
            "the missing directory was not found under steady requests: {v}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        v["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("/srv/nfsprov/pool1/moved")
                && (e.contains("does not exist") || e.contains("No such file"))),
        "{v}"
    );

    // Back in place: the volume recovers on its own.
    std::fs::rename(&aside, &dir).unwrap();
    let v = env
        .wait_volume(id, Duration::from_secs(15), |v| v["state"] == "available")
        .await;
    assert_eq!(v["last_error"], Value::Null);
    let etab = env.server("srv1").etab().unwrap();
    assert_eq!(
        etab_entries(&etab, "/srv/nfsprov/pool1/moved").len(),
        1,
        "{etab}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_and_owner_changed_by_hand_are_put_back() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut env = Env::start(1, 100, 100).await;
    env.restart_with(&[("NFSPROV_RESYNC_SECS", "1")]).await;
    env.create_available("kept", json!([{"host": "10.0.0.1"}]))
        .await;
    let dir = env.server("srv1").host_path("/srv/nfsprov/pool1/kept");
    let meta = std::fs::metadata(&dir).unwrap();
    let want = (mode_of(&dir), meta.uid(), meta.gid());

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(&dir, Some(4321), Some(4321)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let meta = std::fs::metadata(&dir).unwrap();
        if (mode_of(&dir), meta.uid(), meta.gid()) == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mode/owner not restored: {:o} {}:{}",
            mode_of(&dir),
            meta.uid(),
            meta.gid()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(env.log().contains("restoring"), "{}", env.log());
}

/// The server's side of nfsprov's session to `srv1` (sshd's session processes and the shell),
/// stopped (SIGSTOP) until dropped: the server hangs mid-script, as a wedged one would.
struct FrozenSession(Vec<u32>);

impl FrozenSession {
    fn of(env: &Env) -> FrozenSession {
        let procs: Vec<u32> = env
            .server("srv1")
            .session_procs()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert!(!procs.is_empty(), "no session to freeze");
        let frozen = FrozenSession(procs);
        frozen.signal("-STOP");
        frozen
    }

    fn signal(&self, sig: &str) {
        for p in &self.0 {
            let _ = std::process::Command::new("kill")
                .args([sig, &p.to_string()])
                .status();
        }
    }
}

impl Drop for FrozenSession {
    fn drop(&mut self) {
        self.signal("-CONT");
    }
}

/// Freeze the session, create a volume behind it, and wait (up to `within`) until both the
/// server and that volume say what holds it up, which must contain `holds_it`; then thaw the
/// session and see the volume made and the server reachable again.
async fn a_hang_is_reported_and_then_converges(
    env: &Env,
    sub: &str,
    within: Duration,
    holds_it: &str,
) {
    let frozen = FrozenSession::of(env);
    let id = env
        .create_accepted(sub, json!([{"host": "10.0.0.2"}]))
        .await;
    let deadline = Instant::now() + within;
    let (server, v) = loop {
        let server = server_row(env).await;
        let v = env.volume(id).await;
        if server["status"] == "slow" && v["last_error"].is_string() {
            break (server, v);
        }
        assert!(
            Instant::now() < deadline,
            "the hung server was not reported: {server} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(frozen);
    assert_eq!(v["state"], "creating", "{v}");
    assert!(v["last_error"].as_str().unwrap().contains(holds_it), "{v}");
    assert!(
        server["status_message"]
            .as_str()
            .is_some_and(|m| m.contains("pass running for") && m.contains(holds_it)),
        "{server}"
    );
    let v = env
        .wait_volume(id, Duration::from_secs(30), |v| v["state"] == "available")
        .await;
    assert_eq!(v["last_error"], Value::Null);
    let deadline = Instant::now() + Duration::from_secs(60);
    while server_row(env).await["status"] != "reachable" {
        assert!(Instant::now() < deadline, "{}", server_row(env).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_ssh_session_is_reported_and_then_converges() {
    let mut env = Env::start(1, 100, 100).await;
    env.restart_with(&[
        ("NFSPROV_SLOW_PASS_SECS", "1"),
        ("NFSPROV_PASS_TIMEOUT_SECS", "30"),
    ])
    .await;
    env.create_available("first", json!([{"host": "10.0.0.1"}]))
        .await;
    a_hang_is_reported_and_then_converges(
        &env,
        "waiting",
        Duration::from_secs(8),
        "waiting for the server",
    )
    .await;
}

/// The steps after a volumes' pass (usage sampling and sizes, snapshots) run on the same
/// session: a server that hangs there holds up the requests that came in meanwhile just as
/// much, and is reported the same way (it was not: such a request waited, silent, for the
/// pass's time limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_hangs_while_sampling_usage_is_reported_and_then_converges() {
    let mut env = Env::start(1, 100, 100).await;
    // The restarted node's first pass samples usage; it waits 4 s just before sending that
    // script, long enough for the test to freeze the server's side of the session.
    env.restart_with(&[
        ("NFSPROV_SLOW_PASS_SECS", "1"),
        ("NFSPROV_PASS_TIMEOUT_SECS", "30"),
        ("NFSPROV_FAULT", "pause-before-sizes"),
        ("NFSPROV_FAULT_PAUSE_SECS", "4"),
    ])
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !env.log().contains("pause-before-sizes: pausing") {
        assert!(Instant::now() < deadline, "never sampled: {}", env.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The pause (4 s) and then the slow limit (1 s), with room for a loaded machine.
    a_hang_is_reported_and_then_converges(
        &env,
        "behind-sampling",
        Duration::from_secs(20),
        "waiting for the server (sampling usage",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconciler_that_panics_is_restarted() {
    let mut env = Env::start(1, 100, 100).await;
    env.restart_with(&[("NFSPROV_FAULT", "panic-once")]).await;
    let id = env
        .create_accepted("after-panic", json!([{"host": "*"}]))
        .await;
    env.wait_volume(id, Duration::from_secs(20), |v| v["state"] == "available")
        .await;
    let log = env.log();
    assert!(log.contains("NFSPROV_FAULT=panic-once"), "{log}");
    assert!(log.contains("reconciler panicked; restarting"), "{log}");
}

/// Each pass runs in a `pass` span carrying its server, its number and its counts, logged when
/// it ends (at debug level).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pass_is_logged_in_a_span_with_its_counts() {
    let mut env = Env::start(1, 100, 100).await;
    env.restart_with(&[("NFSPROV_LOG", "info,nfsprov::reconcile=debug")])
        .await;
    env.create_available("counted", json!([{"host": "*"}]))
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = without_colours(&env.log());
        let done = log.lines().find(|l| {
            l.contains("pass done")
                && l.contains("pass{server=1 ")
                && l.contains("name=\"srv1\"")
                && l.contains(" generation=")
                && l.contains("volumes=1 applied=1 failed=0 pending=0 duration_ms=")
        });
        if done.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no pass span with counts in:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `text` without the ANSI colour codes the log formatter writes.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("\x1b[") {
        out.push_str(&rest[..i]);
        rest = &rest[i + 2..];
        rest = rest.find('m').map_or("", |end| &rest[end + 1..]);
    }
    out.push_str(rest);
    out
}
