//! The cost of a create by layout (issue 12): in one run, on one test-bed server (sshd +
//! exportfs), creates on a plain-directory root path and on a btrfs root path (a loop device
//! with quotas: a subvolume and a qgroup limit per volume) alternate, each through the API and
//! waited for until it is applied and verified on the server (`?wait=true`). Repeated on fresh
//! servers; figures are medians of the runs' median per-create times.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use nfsprov_testbed::harness::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{Spread, ms, table};

/// The btrfs file system of a run: sparse, and only empty subvolumes go on it.
const BTRFS_BYTES: u64 = 1 << 30;
const BTRFS_ROOT: &str = "/srv/nfsprov/btrfs";

/// One run: per-create times on the directory root path and on the btrfs one.
pub struct SizesRun {
    pub directory: Duration,
    pub btrfs: Duration,
}

impl SizesRun {
    fn ratio(&self) -> f64 {
        self.btrfs.as_secs_f64() / self.directory.as_secs_f64()
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    let n = v.len();
    (v[(n - 1) / 2] + v[n / 2]) / 2
}

/// One create of 1 GB on root path `rp`, waited for until applied: its time.
async fn create(env: &Env, rp: i64, sub: &str) -> Duration {
    let t = Instant::now();
    let (s, v) = env
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1/volumes?wait=true&timeout=60",
            Some(json!({"root_path_id": rp, "sub_path": sub, "size_gb": 1,
                        "clients": [{"host": "10.0.0.1", "options": "rw"}]})),
        )
        .await;
    let d = t.elapsed();
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "available", "{v}");
    d
}

/// A fresh service and server, `n` creates on each layout, alternating.
async fn run(n: usize) -> SizesRun {
    let env = Env::start(1, 1_000_000, 1_000_000).await;
    let srv = env.server("srv1");
    let fs = srv.mount_btrfs("btrfs", BTRFS_BYTES, true).unwrap();
    let (s, rp) = env
        .req(
            Method::POST,
            Some(ADMIN),
            "/api/v1/rootpaths",
            Some(
                json!({"server": "srv1", "path": BTRFS_ROOT, "capacity_gb": 1_000_000,
                        "delete_policy": "purge", "layout": "btrfs"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{rp}");
    let btrfs_rp = rp["id"].as_i64().unwrap();
    // Warm: the SSH session and each layout's first pass.
    create(&env, 1, "warm").await;
    create(&env, btrfs_rp, "warm").await;
    let (mut dir, mut sv) = (Vec::new(), Vec::new());
    for k in 0..n {
        dir.push(create(&env, 1, &format!("d{k}")).await);
        sv.push(create(&env, btrfs_rp, &format!("b{k}")).await);
    }
    let list = srv
        .run_inside(&format!("btrfs subvolume list -o {BTRFS_ROOT} | wc -l"))
        .unwrap();
    let subvolumes: usize = String::from_utf8_lossy(&list.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_eq!(subvolumes, n + 1, "one subvolume per btrfs volume");
    let image = fs.image().to_path_buf();
    drop(fs);
    // The loop device went with the mount.
    let attached = Command::new("losetup").arg("-a").output().unwrap();
    let attached = String::from_utf8_lossy(&attached.stdout);
    assert!(
        !attached.contains(&*image.to_string_lossy()),
        "loop device left attached: {attached}"
    );
    SizesRun {
        directory: median(dir),
        btrfs: median(sv),
    }
}

/// The section of the report, from `runs` runs of `n` creates per layout.
pub async fn section(md: &mut String, runs: usize, n: usize) {
    let heading = "## A create by layout: plain directory vs btrfs subvolume + qgroup\n";
    if let Some(why) = nfsprov_testbed::btrfs::unsupported() {
        let _ = writeln!(md, "{heading}\nNot measured: {why}.\n");
        return;
    }
    // Other work on the machine moves these times: its load is part of the figures.
    let load = |_: ()| {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_string()
    };
    let load_before = load(());
    let started = chrono::Utc::now();
    let mut all = Vec::new();
    for r in 0..runs {
        let run = run(n).await;
        eprintln!(
            "  run {}/{runs}: per create: directory {}, btrfs {} ({:.2}x)",
            r + 1,
            ms(run.directory),
            ms(run.btrfs),
            run.ratio()
        );
        all.push(run);
    }
    let directory = Spread::of(&all.iter().map(|r| r.directory).collect::<Vec<_>>());
    let btrfs = Spread::of(&all.iter().map(|r| r.btrfs).collect::<Vec<_>>());
    let mut ratios: Vec<f64> = all.iter().map(SizesRun::ratio).collect();
    ratios.sort_by(f64::total_cmp);
    let k = ratios.len();
    let load_after = load(());
    let ratio = (ratios[(k - 1) / 2] + ratios[k / 2]) / 2.0;
    let _ = writeln!(
        md,
        "{heading}\n\
         One test-bed server (sshd + exportfs), two root paths on it: a plain directory and a btrfs file system on a loop device with quotas enabled (1 GiB, sparse). {n} creates of 1 GB on each, alternating directory and btrfs, one at a time, each `POST /api/v1/volumes?wait=true` until the volume is applied and verified on the server (a directory: mkdir, mark, owner and mode; btrfs: `btrfs subvolume create`, mark, `btrfs qgroup limit` and reading the limit back; then the exports file and `exportfs -ra` for both). {runs} runs, each on a fresh service, server and loop device (removed after the run); per run the median create of each layout. Measured {} on {} (release build), 1-minute load average {load_before} before and {load_after} after the runs (other builds and tests shared the cores).\n",
        started.format("%Y-%m-%d %H:%M UTC"),
        crate::machine()
    );
    table(
        md,
        &["per create", "directory", "btrfs", "btrfs / directory"],
        std::iter::once(vec![
            "median of runs (range)".into(),
            directory.ms(),
            btrfs.ms(),
            format!("{ratio:.2}x ({:.2}-{:.2}x)", ratios[0], ratios[k - 1]),
        ]),
    );
    let _ = writeln!(
        md,
        "\nThe medians differ by {} per create: the steps that differ are the btrfs commands of `nfsprov_mksv` (the pass, the exports file and the reload are the same for both).\n\nEach run:\n",
        ms(btrfs.median.saturating_sub(directory.median))
    );
    table(
        md,
        &["run", "directory", "btrfs", "btrfs / directory"],
        all.iter().enumerate().map(|(i, r)| {
            vec![
                format!("{}", i + 1),
                ms(r.directory),
                ms(r.btrfs),
                format!("{:.2}x", r.ratio()),
            ]
        }),
    );
    md.push('\n');
}
