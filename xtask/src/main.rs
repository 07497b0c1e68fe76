//! `cargo xtask <task>`: the project's tasks that are more than one cargo command.
//!
//!   cargo xtask bench [--short] [--out F] [--svg F] [--runs N] [--only storm|accept|memory|ratelimit|sizes|scale]
//!                                                     build release nfsprov + bench, run the bench
//!                                                     (--short: the bench-ci profile)
//!   cargo xtask e2e [test args]                       the end-to-end test tier (root, real servers)

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

mod e2e;
use e2e::e2e;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build `nfsprov` and `nfsprov-bench` in release mode and run the benchmarks (root).
    /// `--short` (CI) builds with the `bench-ci` profile instead (Cargo.toml): quicker to
    /// build, and its only check is on ratios measured in the same run.
    Bench {
        /// Passed to nfsprov-bench: --short, --out FILE, --svg FILE, --runs N, --only PART.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The end-to-end tests: real sshd, exportfs and ganesha servers started by the test bed
    /// (root), with both tiers on SQLite and PostgreSQL (see xtask/src/e2e.rs). Arguments go
    /// to the test binaries (a name filter, --nocapture, ...).
    E2e {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// A cargo command in the workspace root, without the variables `cargo run` set for xtask
/// (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, ...): build scripts that rerun when those change
/// (ring's does) would make every build in xtask rebuild them and all that depends on them
/// after a plain `cargo build` or `cargo clippy`, and the other way round.
fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || matches!(
                name,
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
            )
        {
            c.env_remove(name);
        }
    }
    c
}

fn status(mut c: Command) -> anyhow::Result<()> {
    let s = c.status().with_context(|| format!("running {c:?}"))?;
    if !s.success() {
        bail!("{c:?} failed ({s})");
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.task {
        Task::Bench { args } => {
            let profile = if args.iter().any(|a| a == "--short") {
                "bench-ci"
            } else {
                "release"
            };
            // scripts/test.sh builds the bench in a target directory of its own, in the
            // background while the tests run (`NFSPROV_BENCH_TARGET_DIR`).
            let dir =
                std::env::var_os("NFSPROV_BENCH_TARGET_DIR").map_or_else(target_dir, PathBuf::from);
            let mut build = cargo();
            build.env("CARGO_TARGET_DIR", &dir).args([
                "build",
                "--profile",
                profile,
                "-p",
                "nfsprov",
                "-p",
                "nfsprov-bench",
            ]);
            status(build)?;
            let release = dir.join(profile);
            let mut bench = Command::new(release.join("nfsprov-bench"));
            bench
                .current_dir(root())
                .env("NFSPROV_BIN", release.join("nfsprov"))
                .args(args);
            status(bench)
        }
        Task::E2e { args } => e2e(&args),
    }
}
