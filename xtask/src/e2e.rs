//! `cargo xtask e2e`: both test tiers against real servers, on SQLite and on PostgreSQL.
//!
//! 1. Build every test and binary once (the features below, so the runs that follow build
//!    nothing).
//! 2. Start one real PostgreSQL for the run (`nfsprov-testbed postgres`) and run every test of
//!    the workspace with its URL in `NFSPROV_TEST_PG_URL`: the fast tier's portable datastore
//!    tests then run on both databases; the end-to-end tests run on SQLite.
//! 3. Run [`POSTGRES_TESTS`] again with `NFSPROV_TEST_DATABASE=postgres`: every single-node
//!    `Env` of the test bed on a PostgreSQL of its own.
//!
//! The PostgreSQL of step 2 is stopped and its directory removed when this returns, also on a
//! failure; on Ctrl-C or a kill of xtask its standard input closes, which stops it too.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::{cargo, status, target_dir};

/// The features of the end-to-end tier. Every cargo command here passes the same ones (and
/// `--workspace`): another set would resolve dependencies' features differently and build
/// them again.
const FEATURES: &str = "nfsprov/e2e,nfsprov-testbed/e2e";

/// The end-to-end test files (`crates/nfsprov/tests/<name>.rs`) run a second time on
/// PostgreSQL, each single-node `Env` starting a PostgreSQL of its own (initdb and start per
/// test: that, not the tests, is most of their time). The ones whose outcome depends on the
/// database's transactions: creates, changes and deletes through a server's whole life,
/// concurrent creates racing for quota and capacity, servers failing mid-pass. Measured on 2
/// cores shared with other builds, with an nfsprov that reads NFSPROV_DATABASE_URL (branch
/// s13-sqlport): 86 s for the three at load 5-6 (lifecycle 22 s, concurrency 13 s, faults
/// 50 s); at load 8-12 lifecycle took 89 s against 15 s on SQLite, concurrency 44 s against
/// 6 s. Not `recovery`: its kill -9 test opens the SQLite file itself. (Multi-node tests ask
/// for PostgreSQL themselves and run in step 2.)
pub const POSTGRES_TESTS: &[&str] = &["lifecycle", "concurrency", "faults"];

/// Announces each step with the seconds since xtask started, as scripts/test.sh does.
struct Steps(Instant);

impl Steps {
    fn step(&self, what: &str) {
        println!("\n==> [{:4}s] {what}", self.0.elapsed().as_secs());
    }
}

pub fn e2e(args: &[String]) -> anyhow::Result<()> {
    let steps = Steps(Instant::now());
    steps.step(&format!(
        "build every test and binary (cargo build --workspace --all-targets --features {FEATURES})"
    ));
    let mut build = cargo();
    build.args([
        "build",
        "--workspace",
        "--all-targets",
        "--features",
        FEATURES,
    ]);
    status(build)?;

    steps.step("start PostgreSQL for the run (nfsprov-testbed postgres)");
    let pg = TestPostgres::start(&target_dir().join("debug").join("nfsprov-testbed"))?;
    println!("NFSPROV_TEST_PG_URL={}", pg.url);

    steps.step(&format!(
        "both tiers (cargo test --workspace --features {FEATURES}), NFSPROV_TEST_PG_URL set"
    ));
    let mut test = cargo();
    test.args(["test", "--workspace", "--features", FEATURES])
        .env("NFSPROV_TEST_PG_URL", &pg.url)
        .args(["--", "--test-threads=2"])
        .args(args);
    status(test)?;
    steps.step("stop PostgreSQL");
    pg.stop()?;

    steps.step(&format!(
        "on PostgreSQL: tests/{{{}}}.rs with NFSPROV_TEST_DATABASE=postgres",
        POSTGRES_TESTS.join(",")
    ));
    let mut test = cargo();
    test.args(["test", "--workspace", "--features", FEATURES]);
    for t in POSTGRES_TESTS {
        test.args(["--test", t]);
    }
    test.env("NFSPROV_TEST_DATABASE", "postgres")
        .args(["--", "--test-threads=2"])
        .args(args);
    status(test)?;
    steps.step("e2e done");
    Ok(())
}

/// A running `nfsprov-testbed postgres`: it stops its PostgreSQL (and removes its directory)
/// when its standard input ends, which happens when this is dropped or xtask dies.
struct TestPostgres {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
}

impl TestPostgres {
    fn start(testbed: &Path) -> anyhow::Result<TestPostgres> {
        let mut child = Command::new(testbed)
            .arg("postgres")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", testbed.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout")?;
        // Dropped on every error below: its Drop closes standard input and waits.
        let mut pg = TestPostgres {
            child,
            stdin,
            url: String::new(),
        };
        // It prints the one line once PostgreSQL accepts connections, or ends with an error
        // on standard error (left to go through).
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading nfsprov-testbed postgres's output")?;
        match line.trim().strip_prefix("NFSPROV_DATABASE_URL=") {
            Some(url) => pg.url = url.to_string(),
            None => bail!(
                "nfsprov-testbed postgres did not print NFSPROV_DATABASE_URL=... (it printed {line:?}; its error is above)"
            ),
        }
        Ok(pg)
    }

    /// Stop PostgreSQL and wait for it: an error if the test bed failed at that.
    fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        let s = self
            .child
            .wait()
            .context("waiting for nfsprov-testbed postgres")?;
        if !s.success() {
            bail!("nfsprov-testbed postgres failed to stop PostgreSQL ({s})");
        }
        Ok(())
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
