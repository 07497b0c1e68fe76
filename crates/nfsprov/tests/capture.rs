//! The fixtures of `tests/judge.rs` are real: this runs the same passes on a real server of the
//! test bed (sshd and exportfs in its own mount namespace, or nfs-ganesha in its own network
//! namespace) and checks that judging each fresh
//! output reads exactly as judging the stored capture, so the fixtures cannot drift from what
//! the real programs print. With `NFSPROV_WRITE_FIXTURES=1` it (re)writes the fixtures instead:
//!
//! ```sh
//! NFSPROV_WRITE_FIXTURES=1 cargo test -p nfsprov --features e2e --test capture
//! ```

mod judging;

use std::time::Duration;

use judging::*;
use nfsprov::remote::{Session, Target};
use nfsprov_testbed::{Testbed, TestbedGuard};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knfsd_fixtures_read_as_fresh_captures_from_a_real_server() {
    compare_or_write(false, KNFSD_SETUP, knfsd_steps()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ganesha_fixtures_read_as_fresh_captures_from_a_real_server() {
    compare_or_write(true, GANESHA_SETUP, ganesha_steps()).await;
}

/// Run `steps` on a fresh server of the test bed and compare each fresh output's judgement
/// with the stored capture's (or, with `NFSPROV_WRITE_FIXTURES`, store the fresh outputs).
async fn compare_or_write(ganesha: bool, setup: &'static str, steps: Vec<Step>) {
    let dir = tempfile::Builder::new()
        .prefix("nfsprov-capture-")
        .tempdir_in("/tmp")
        .unwrap();
    let tb_dir = dir.path().join("testbed");
    let tb = tokio::task::spawn_blocking(move || {
        if ganesha {
            Testbed::up_ganesha(&tb_dir, 1, 0)
        } else {
            Testbed::up(&tb_dir, 1)
        }
    })
    .await
    .unwrap()
    .expect("test bed starts");
    let tb = TestbedGuard(tb);
    let srv = &tb.0.servers[0];
    let target = Target {
        alias: "capture".into(),
        host: srv.ssh_host.clone(),
        port: srv.ssh_port,
        user: srv.ssh_user.clone(),
        key: tb.0.client_key.clone(),
        host_key: srv.host_key.clone(),
    };
    let state = dir.path().join("ssh");
    nfsprov::serve::private_dir(&state).unwrap();
    let mut session = Session::connect(&target, &state).await.unwrap();
    let by_hand = |script: &str| {
        let out = srv.run_inside(script).unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    by_hand(setup);
    let write = std::env::var_os("NFSPROV_WRITE_FIXTURES").is_some();
    for step in steps {
        if !step.by_hand.is_empty() {
            by_hand(step.by_hand);
        }
        let (_, prepared) = prepare(&step);
        let fresh = session
            .run(&prepared.script, Duration::from_secs(60))
            .await
            .unwrap();
        // Stored as the reconciler sees it, and read back the way the fast tier reads it.
        let fresh_text = to_text(&fresh).replace(prepared.script.nonce(), NONCE);
        let fresh = load(&fresh_text);
        if write {
            let path = fixture_path(step.backend.as_str(), step.name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &fresh_text).unwrap();
            eprintln!("wrote {}", path.display());
            continue;
        }
        assert_eq!(
            summary(&judge(&step, &fresh)),
            summary(&judge(&step, &fixture(&step))),
            "{} step {}: the real server's output is judged differently from the stored \
             capture; if the change is expected, rewrite the fixtures (see this file's header)",
            step.backend.as_str(),
            step.name
        );
    }
}
