//! Faults of the service's own host: its data directory fills up, its files' permissions, and
//! how passwords reach the CLI.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// A small tmpfs mounted over a directory for the life of the guard.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Write zeros into `file` until the filesystem is full.
fn fill(file: &Path) {
    use std::io::Write as _;
    let mut f = std::fs::File::create(file).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc_enospc()) => break,
            Err(e) => panic!("filling {}: {e}", file.display()),
        }
    }
    // Smaller writes take what the big ones could not.
    let _ = f.write_all(&[0u8; 512]);
    let _ = f.sync_all();
}

fn libc_enospc() -> i32 {
    28
}

/// Stop `nfsprov serve` the way a service manager does (the WAL is checkpointed away).
fn stop_gracefully(env: &mut Env) {
    if let Some(mut c) = env.serve.take() {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "nfsprov serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_disk_fails_requests_cleanly_and_recovers_when_space_returns() {
    let mut env = Env::start(1, 1000, 1000).await;
    let kept = env.create_available("kept", json!([{"host": "*"}])).await;
    let changed = env
        .create_available("changed", json!([{"host": "*"}]))
        .await;

    // Move the data directory onto a small tmpfs of its own.
    stop_gracefully(&mut env);
    let saved = env.dir.path().join("data-saved");
    std::fs::rename(env.data_dir(), &saved).unwrap();
    std::fs::create_dir(env.data_dir()).unwrap();
    let _tmpfs = Tmpfs::mount(&env.data_dir(), "8m");
    copy_dir(&saved, &env.data_dir());
    env.start_serve().await;
    env.wait_servers_reachable().await;

    // The disk fills up. Writes fail; keep writing until one is refused (bounded).
    let filler = env.data_dir().join("filler");
    fill(&filler);
    let mut refused = None;
    for i in 0..200 {
        let (s, v) = env
            .req(
                Method::POST,
                Some(ALICE),
                "/api/v1/volumes",
                Some(json!({"root_path_id": 1, "sub_path": format!("full-{i}"), "size_gb": 1,
                             "clients": [{"host": format!("10.1.{}.0/24", i % 250), "options": "rw"}]})),
            )
            .await;
        if s != StatusCode::ACCEPTED {
            refused = Some((s, v));
            break;
        }
    }
    let (s, v) = refused.expect("with the disk full, some write was refused");
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    // Other writes fail the same clean way while the disk is full, not with 500.
    let (s, v) = env
        .req(
            Method::PATCH,
            Some(ALICE),
            &format!("/api/v1/volumes/{changed}"),
            Some(json!({"clients": [{"host": "10.9.0.0/16", "options": "rw"}]})),
        )
        .await;
    assert!(
        s == StatusCode::SERVICE_UNAVAILABLE || s == StatusCode::ACCEPTED,
        "{s} {v}"
    );
    // Reads still work.
    let (s, v) = env
        .req(Method::GET, Some(ALICE), "/api/v1/volumes", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Space comes back: everything works again without a restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (s, v) = loop {
        let (s, v) = env
            .req(
                Method::PATCH,
                Some(ALICE),
                &format!("/api/v1/volumes/{changed}?wait=true"),
                Some(json!({"clients": [{"host": "10.9.0.0/16", "options": "rw"}]})),
            )
            .await;
        if s != StatusCode::SERVICE_UNAVAILABLE || Instant::now() > deadline {
            break (s, v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s, StatusCode::OK, "PATCH after space returned: {v}");
    assert_eq!(v["state"], "available", "{v}");
    let (s, v) = env.delete_wait(ALICE, kept).await;
    assert!(s.is_success(), "DELETE after space returned: {s} {v}");
    let id = env.create_available("after", json!([{"host": "*"}])).await;
    // Creates accepted while the disk was filling up settle too.
    for v in env.all_volumes().await {
        let id = v["id"].as_i64().unwrap();
        env.wait_volume(id, Duration::from_secs(30), |v| {
            v["state"] == "available" || v["state"] == "deleted"
        })
        .await;
    }
    assert_eq!(env.volume(id).await["state"], "available");
    env.kill_serve();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_and_database_are_private() {
    let env = Env::start(1, 100, 100).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let data = env.data_dir();
    assert_eq!(mode(&data), 0o700, "data dir");
    assert_eq!(mode(&data.join("ssh")), 0o700, "ssh state dir");
    for f in ["nfsprov.db", "nfsprov.db-wal", "nfsprov.db-shm"] {
        let p = data.join(f);
        if f == "nfsprov.db" || p.exists() {
            assert_eq!(mode(&p), 0o600, "{f}");
        }
    }
    // A data directory left world-readable by an older version is tightened on open.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        data.join("nfsprov.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    env.cli_ok(&["user", "list"]);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("nfsprov.db")), 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_come_from_the_command_line() {
    let env = Env::start(1, 100, 100).await;
    // The old argv form is refused, and no user is created.
    let out = env.cli(&["user", "add", "carol", "--password", "carol-pass-1"]);
    assert!(!out.status.success());
    assert!(!env.cli_ok(&["user", "list"]).contains("carol"));
    // Standard input works; an empty one is refused with a hint.
    let out = env.cli_stdin(&["user", "add", "carol"], "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("standard input"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.cli_stdin_ok(&["user", "add", "carol", "--quota-gb", "5"], "carol-pass-1");
    let (s, _) = env
        .req(
            Method::GET,
            Some(("carol", "carol-pass-1")),
            "/api/v1/volumes",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // `user set --password` changes it the same way.
    env.cli_stdin_ok(&["user", "set", "carol", "--password"], "carol-pass-2");
    let (s, _) = env
        .req(
            Method::GET,
            Some(("carol", "carol-pass-2")),
            "/api/v1/volumes",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}
