//! `nfsprov serve` refuses a bad setting at start: it exits non-zero with a message naming the
//! variable, before it creates its data directory or listens. (Before settings were read with
//! clap, a malformed `NFSPROV_RESYNC_SECS` was silently replaced by the default.) Needs no root
//! and no server: part of the fast tier.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Start `nfsprov serve` on a free loopback port with only `env` among the `NFSPROV_*`
/// variables.
fn serve(data_dir: &Path, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nfsprov"));
    for (k, _) in std::env::vars() {
        if k.starts_with("NFSPROV_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting nfsprov serve")
}

/// Wait up to 20 s for `child` to exit; `None` (and the child killed) if it is still running.
fn exit_within_deadline(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("waiting for nfsprov") {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_refuses_a_bad_setting_naming_the_variable() {
    for (variable, value) in [
        ("NFSPROV_RESYNC_SECS", "abc"),
        ("NFSPROV_RESYNC_SECS", "0"),
        ("NFSPROV_RESYNC_SECS", "-1"),
        ("NFSPROV_MAX_BACKOFF_SECS", ""),
        ("NFSPROV_BATCH_WINDOW_MS", "-1"),
        ("NFSPROV_BATCH_QUIET_MS", "1.5"),
        ("NFSPROV_PASS_TIMEOUT_SECS", "2m"),
        ("NFSPROV_SLOW_PASS_SECS", "nan"),
        ("NFSPROV_MAX_CONNECTIONS", "0"),
        ("NFSPROV_BODY_TIMEOUT_SECS", "x"),
        ("NFSPROV_AUTH_WINDOW_SECS", "-60"),
        ("NFSPROV_AUTH_FAILURES_PER_IP", "many"),
        ("NFSPROV_MAX_VOLUME_GB", "0"),
        ("NFSPROV_MAX_CLIENTS", "5000"),
        ("NFSPROV_RATE_PER_USER", "0"),
        ("NFSPROV_RATE_BURST_PER_IP", "lots"),
        ("NFSPROV_LEASE_SECS", "0.5"),
        ("NFSPROV_LEASE_SECS", "3601"),
        ("NFSPROV_LEASE_SECS", "1e400"),
        ("NFSPROV_USAGE_INTERVAL_SECS", "0"),
        ("NFSPROV_TRUSTED_PROXIES", "10.0.0.1,lb.example"),
        ("NFSPROV_TRUSTED_PROXIES", "10.0.0.0/8,,fd00::/8"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut child = serve(&data, &[(variable, value)]);
        let status = exit_within_deadline(&mut child);
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        let case = format!("{variable}={value:?}");
        let status = status.unwrap_or_else(|| panic!("{case}: still serving after 20 s"));
        assert!(!status.success(), "{case}: {status}");
        assert!(stderr.contains(&case), "{case}: {stderr}");
        assert!(!data.exists(), "{case}: the data directory was created");
    }
}

#[test]
fn serve_starts_with_good_settings() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = serve(
        &data,
        &[
            ("NFSPROV_RESYNC_SECS", "0.5"),
            ("NFSPROV_BATCH_WINDOW_MS", "0"),
            ("NFSPROV_MAX_CONNECTIONS", "16"),
            ("NFSPROV_AUTH_WINDOW_SECS", "5"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let started = loop {
        if data.join("nfsprov.db").exists() {
            break true;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(started && running, "{stderr}");
}
