//! nfsprov's benchmarks, side by side with the per-request-SSH way of the seed project (hootie)
//! and with the floor (one hand-written batch per server), all against the same kind of test-bed
//! servers in the same run. Writes BENCHMARKS.md and a plot.
//!
//!   cargo xtask bench              # full run, rewrites BENCHMARKS.md + crates/bench/plot.svg
//!   cargo xtask bench --short      # CI form: small sizes, fails only on a ratio regression
//!   cargo xtask bench --only storm # one part alone (storm | accept | memory | ratelimit | sizes),
//!                                  # prints only (ratelimit and sizes with --out: their section
//!                                  # of that file)
//!
//! Runs that machine noise can swing are repeated (`--runs`, 5 by default, 3 with --short) and
//! reported as median and range; goals are judged on medians. The storm's per-pass profile
//! comes from `nfsprov serve`'s own `nfsprov::profile` debug lines (see `profile.rs`).
//!
//! (`cargo xtask bench` builds this and the `nfsprov` binary in release mode and runs this one.)
//!
//! Only 127.0.0.1 is contacted. Every loop is bounded.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use nfsprov_testbed::harness::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

use nfsprov::datastore::{Created, Datastore, NewServer, NewVolume};
use nfsprov::model::{ClientRule, DeletePolicy, RootPathId, UserId};
use nfsprov::profile::{self, Phase};
use nfsprov::reconcile::{Hub, Tuning};
use nfsprov::spec::{ClientSpec, DirMode, ExportOptions, RootDir, SubPath};
use nfsprov_testbed::{Testbed, TestbedGuard, TestbedServer};

mod scale;
mod sizes;

/// nfsprov's benchmarks against the seed's way and the floor, on test-bed servers (needs root).
#[derive(Parser)]
struct Opts {
    /// The CI form: small sizes; fails only when a ratio regresses; writes nothing unless asked.
    #[arg(long)]
    short: bool,
    /// Where to write the report (default: BENCHMARKS.md at the workspace root, full runs only).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where to write the plot (default: crates/bench/plot.svg, full runs only).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Runs of the storm, of the floor and of the accept measurements (default: 5; 3 with
    /// --short). Figures are the median and the range of the runs.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50))]
    runs: Option<u32>,
    /// A quick look at one part alone: prints, writes nothing, judges nothing.
    #[arg(long, value_enum)]
    only: Option<Only>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Only {
    /// nfsprov's storm against the floor, with the per-pass profile.
    Storm,
    /// Accept latency, with the CPU time of `nfsprov serve` and of the load generator.
    Accept,
    /// The reconcile pass costs and the memory of `nfsprov serve`.
    Memory,
    /// A quiet user's create latency while another user bursts far over its rate limit.
    Ratelimit,
    /// A create on a plain-directory root path against one on a btrfs root path (subvolume +
    /// qgroup), in the same run.
    Sizes,
    /// Accept latency and capacity on PostgreSQL with 1 and 3 nodes next to SQLite, and the
    /// storm across 3 nodes next to one (issue 13).
    Scale,
}

/// `envs` and rate limits far above anything the bench sends: the storm and the accept
/// measurements are about throughput, not the limits (`--only ratelimit` measures those).
fn with_no_rate_limits<'a>(envs: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = envs.to_vec();
    for k in [
        "NFSPROV_RATE_PER_USER",
        "NFSPROV_RATE_BURST_PER_USER",
        "NFSPROV_RATE_PER_IP",
        "NFSPROV_RATE_BURST_PER_IP",
    ] {
        all.push((k, "1000000"));
    }
    all
}

/// The median and the range of a measurement repeated over runs.
#[derive(Clone, Copy, Debug)]
struct Spread {
    median: Duration,
    min: Duration,
    max: Duration,
}

impl Spread {
    fn of(runs: &[Duration]) -> Spread {
        let mut v = runs.to_vec();
        v.sort();
        Spread {
            median: median(&v),
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    /// "1.23 s (1.10-1.40 s, 5 runs)"
    fn secs(&self, runs: usize) -> String {
        format!(
            "{} ({:.2}-{:.2} s, {runs} runs)",
            secs(self.median),
            self.min.as_secs_f64(),
            self.max.as_secs_f64()
        )
    }

    /// "12.3 ms (10.1-14.0 ms)"
    fn ms(&self) -> String {
        format!(
            "{} ({:.1}-{:.1} ms)",
            ms(self.median),
            self.min.as_secs_f64() * 1000.0,
            self.max.as_secs_f64() * 1000.0
        )
    }
}

/// The median of sorted values (the mean of the middle two for an even count).
fn median(sorted: &[Duration]) -> Duration {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

fn opts() -> Opts {
    let mut o = Opts::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if !o.short {
        o.out.get_or_insert_with(|| root.join("BENCHMARKS.md"));
        o.svg
            .get_or_insert_with(|| root.join("crates/bench/plot.svg"));
    }
    o
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap()
}

fn testbed(n: usize) -> (tempfile::TempDir, TestbedGuard) {
    let dir = tempdir("nfsprov-bench-tb-");
    let tb = Testbed::up(&dir.path().join("tb"), n).expect("test bed");
    (dir, TestbedGuard(tb))
}

fn known_hosts(dir: &Path, s: &TestbedServer) -> PathBuf {
    let p = dir.join(format!("known_hosts.{}", s.name));
    std::fs::write(&p, format!("{}\n", s.known_hosts_line())).unwrap();
    p
}

/// An SSH command to server `s`, host key pinned as nfsprov pins it.
fn ssh_command(tb: &Testbed, s: &TestbedServer, kh: &Path) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args([
        "-F",
        "/dev/null",
        "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
    ])
    .arg("-o")
    .arg(format!("UserKnownHostsFile={}", kh.display()))
    .args(["-o", "LogLevel=ERROR", "-i"])
    .arg(&tb.client_key)
    .args(["-p", &s.ssh_port.to_string(), "root@127.0.0.1"]);
    cmd
}

/// One fresh SSH connection running `script`, as the seed's Fabric tasks did.
fn ssh(tb: &Testbed, s: &TestbedServer, kh: &Path, script: &str) {
    let out = ssh_command(tb, s, kh)
        .arg(script)
        .output()
        .expect("ssh runs");
    assert!(
        out.status.success(),
        "ssh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A shell on server `s` over one SSH connection, open and answering before it is used, as
/// nfsprov's sessions are in service.
struct Shell {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Shell {
    fn open(tb: &Testbed, s: &TestbedServer, kh: &Path) -> Shell {
        let mut child = ssh_command(tb, s, kh)
            .arg("sh")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("ssh runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut shell = Shell {
            child,
            stdin,
            stdout,
        };
        shell.run("true");
        shell
    }

    /// Run `script` and wait until it has finished; panics if it failed.
    fn run(&mut self, script: &str) {
        use std::io::{BufRead, Write};
        writeln!(self.stdin, "{script}\necho \"floor-done $?\"").unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.stdout.read_line(&mut line).unwrap() > 0, "shell ended");
            if let Some(rc) = line.trim().strip_prefix("floor-done ") {
                assert_eq!(rc, "0", "script failed: {script}");
                return;
            }
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The seed's way: per volume a new SSH connection running mkdir, an /etc/exports append and
/// exportfs; volumes of one root path one after the other, root paths (servers) in parallel.
fn baseline(n: usize, servers: usize) -> Duration {
    let (dir, tb) = testbed(servers);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (i, s) in tb.servers.iter().enumerate() {
            let (tb, dir) = (&tb, dir.path());
            scope.spawn(move || {
                let kh = known_hosts(dir, s);
                for v in (0..n).filter(|v| v % servers == i) {
                    let p = format!("/srv/nfsprov/pool1/b{v}");
                    ssh(
                        tb,
                        s,
                        &kh,
                        &format!(
                            "mkdir -p {p} && echo '{p} 10.0.0.0/8(rw,sync,no_subtree_check)' >> /etc/exports && exportfs -o rw,sync,no_subtree_check 10.0.0.0/8:{p}"
                        ),
                    );
                }
            });
        }
    });
    started.elapsed()
}

/// The floor: one hand-written batch per server, servers in parallel, each over a shell that is
/// already open (as nfsprov's sessions are): what applying the volumes costs the servers, with
/// no API, no database and no verification.
fn floor(n: usize, servers: usize) -> FloorRun {
    let (dir, tb) = testbed(servers);
    let mut shells: Vec<Shell> = tb
        .servers
        .iter()
        .map(|s| Shell::open(&tb, s, &known_hosts(dir.path(), s)))
        .collect();
    let started = Instant::now();
    let batches: Vec<Duration> = std::thread::scope(|scope| {
        let threads: Vec<_> = shells.iter_mut().enumerate().map(|(i, shell)| {
            scope.spawn(move || {
                let paths: Vec<String> = (0..n)
                    .filter(|v| v % servers == i)
                    .map(|v| format!("/srv/nfsprov/pool1/f{v}"))
                    .collect();
                let lines: String = paths
                    .iter()
                    .map(|p| format!("{p} 10.0.0.0/8(rw,sync,no_subtree_check)\n"))
                    .collect();
                let t = Instant::now();
                shell.run(&format!(
                    "mkdir -p {} && printf '%s' '{lines}' > /etc/exports.d/floor.exports && exportfs -ra && cat /var/lib/nfs/etab >/dev/null",
                    paths.join(" ")
                ));
                t.elapsed()
            })
        }).collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    FloorRun {
        wall: started.elapsed(),
        batch: batches.iter().sum::<Duration>() / batches.len() as u32,
    }
}

struct FloorRun {
    wall: Duration,
    /// The one batch of a server, mean over the servers.
    batch: Duration,
}

/// nfsprov's storm and the floor, `runs` times each, alternating (so a slow spell of this
/// machine hits both alike), each run on fresh servers.
async fn storms(n: usize, servers: usize, runs: usize) -> (Vec<StormRun>, Vec<FloorRun>) {
    let (mut storm_runs, mut floor_runs) = (Vec::new(), Vec::new());
    for r in 0..runs {
        let s = storm(n, servers).await;
        let f = tokio::task::spawn_blocking(move || floor(n, servers))
            .await
            .unwrap();
        eprintln!(
            "  run {}/{runs}: nfsprov {}, floor {} ({:.2}x)",
            r + 1,
            secs(s.wall),
            secs(f.wall),
            s.wall.as_secs_f64() / f.wall.as_secs_f64()
        );
        storm_runs.push(s);
        floor_runs.push(f);
    }
    (storm_runs, floor_runs)
}

struct StormRun {
    wall: Duration,
    /// When the poll saw every volume available.
    polled: Duration,
    /// When the last create was answered (202).
    accepted: Duration,
    timeline: Vec<String>,
    profile: StormProfile,
}

/// Where one storm's time went on a server, mean over the servers: the sum over its
/// reconciles of each phase, and the rest of the storm (waiting for requests, between passes).
#[derive(Debug, Default)]
struct StormProfile {
    reconciles: f64,
    passes: f64,
    spent: [Duration; 7],
    waiting: Duration,
}

/// The profile lines of `nfsprov serve` (`nfsprov::profile`) in its log after byte `from`.
fn profile_lines(env: &Env, from: usize) -> Vec<profile::Line> {
    let log = env.log();
    log.get(from..)
        .unwrap_or_default()
        .lines()
        .filter_map(profile::parse)
        .collect()
}

/// Wait (bounded) until every server has a profile line matching `done`; returns them all.
async fn wait_profile(
    env: &Env,
    from: usize,
    servers: usize,
    done: impl Fn(&profile::Line) -> bool,
) -> Vec<profile::Line> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = profile_lines(env, from);
        let seen: std::collections::HashSet<&str> = lines
            .iter()
            .filter(|l| done(l))
            .map(|l| l.server.as_str())
            .collect();
        if seen.len() >= servers {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "no reconcile profile from every server: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// nfsprov: n creates through the API (64 in flight), until every volume is verified available.
/// `nfsprov serve` logs its per-reconcile profile (`nfsprov::profile=debug`; a line per
/// reconcile); its sessions are open (a first reconcile done) before the timer starts.
async fn storm(n: usize, servers: usize) -> StormRun {
    let mut env = Env::start(servers, 1_000_000, 1_000_000).await;
    let from = env.log().len();
    env.restart_with(&with_no_rate_limits(&[(
        "NFSPROV_LOG",
        "info,nfsprov::profile=debug",
    )]))
    .await;
    wait_profile(&env, from, servers, |_| true).await;
    let from = env.log().len();
    let started = Instant::now();
    let started_utc = chrono::Utc::now();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for v in 0..n {
        let http = env.http.clone();
        let url = format!("{}/api/v1/volumes", env.base());
        let sem = sem.clone();
        let rp = 1 + (v % servers);
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            let r = http
                .post(url)
                .basic_auth(ALICE.0, Some(ALICE.1))
                .json(
                    &json!({"root_path_id": rp, "sub_path": format!("s{v}"), "size_gb": 1,
                              "clients": [{"host": "10.0.0.0/8", "options": "rw,sync"}]}),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let accepted = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut polls = Vec::new();
    let last_applied = loop {
        let t = started.elapsed();
        let all = env.all_volumes().await;
        let ready = all.iter().filter(|v| v["state"] == "available").count();
        polls.push(format!(
            "  poll at {}: {ready} available, took {}",
            ms(t),
            ms(started.elapsed() - t)
        ));
        if all.len() == n && ready == n {
            break all
                .iter()
                .filter_map(|v| {
                    chrono::DateTime::parse_from_rfc3339(v["updated_at"].as_str()?).ok()
                })
                .max()
                .expect("volumes have updated_at");
        }
        assert!(Instant::now() < deadline, "storm did not settle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let polled = started.elapsed();
    // The storm ends when the last volume was recorded verified (its `updated_at`, in ms, from
    // the same clock), not when this loop's next poll (up to 20 ms later, plus a listing that
    // takes tens of ms while the servers are busy) saw it.
    let wall = (last_applied.with_timezone(&chrono::Utc) - started_utc)
        .to_std()
        .unwrap_or_default()
        .min(polled);
    // The reconcile that made a server's last volume available read all of them.
    let per_server = n / servers;
    let lines = wait_profile(&env, from, servers, |l| l.volumes >= per_server).await;
    let mut p = StormProfile::default();
    let mut by_server: std::collections::HashMap<&str, Vec<&profile::Line>> = Default::default();
    for l in &lines {
        by_server.entry(l.server.as_str()).or_default().push(l);
    }
    let k = by_server.len() as u32;
    for ls in by_server.values() {
        let busy: Duration = ls.iter().map(|l| l.total).sum();
        p.waiting += wall.saturating_sub(busy) / k;
        p.reconciles += ls.len() as f64 / k as f64;
        p.passes += ls.iter().map(|l| l.passes).sum::<usize>() as f64 / k as f64;
        for l in ls {
            for (acc, d) in p.spent.iter_mut().zip(l.spent) {
                *acc += d / k;
            }
        }
    }
    // When each reconcile ended (the log line's time stamp), for `--only storm`.
    let log = env.log();
    let timeline = log
        .get(from..)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let l = profile::parse(line)?;
            let plain: String = strip_ansi(line);
            let at = chrono::DateTime::parse_from_rfc3339(plain.split_whitespace().next()?).ok()?;
            let end =
                (at.with_timezone(&chrono::Utc) - started_utc).num_microseconds()? as f64 / 1000.0;
            Some(format!(
                "  {} ended at {end:.0} ms: {} volumes, {} passes, {} (apply {})",
                l.server,
                l.volumes,
                l.passes,
                ms(l.total),
                ms(l.spent[Phase::Apply as usize])
            ))
        })
        .chain(polls)
        .collect();
    StormRun {
        wall,
        polled,
        accepted,
        profile: p,
        timeline,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// How the clients of an accept measurement send.
#[derive(Clone, Copy)]
enum Load {
    /// Each client sends its next create as soon as the last is answered: the most the API
    /// accepts. Latency is then clients / rate (Little's law) and says little by itself.
    Closed,
    /// The clients together offer this many creates per second, each on a fixed schedule;
    /// latency counts from the scheduled send time, so a slow answer that delays the next send
    /// is charged to that send too (no coordinated omission, as in wrk2).
    Rate(f64),
}

struct Accept {
    concurrency: usize,
    load: Load,
    p50: Duration,
    p99: Duration,
    per_sec: f64,
}

async fn post_create(http: &reqwest::Client, url: &str, sub: String) {
    let r = http
        .post(url)
        .basic_auth(BOB.0, Some(BOB.1))
        .json(&json!({"root_path_id": 1, "sub_path": sub, "size_gb": 1,
                      "clients": [{"host": "10.0.0.0/8", "options": "rw"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

/// POST latency with `concurrency` clients sending `total` creates in all, after one create per
/// client to open its connection (not counted).
async fn accept_latency(
    env: &Env,
    concurrency: usize,
    load: Load,
    total: usize,
    tag: &str,
) -> Accept {
    let url = format!("{}/api/v1/volumes", env.base());
    let warm = (0..concurrency).map(|c| post_create(&env.http, &url, format!("{tag}-warm-{c}")));
    futures_util::future::join_all(warm).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let http = env.http.clone();
        let url = url.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for (i, k) in (0..total).filter(|k| k % concurrency == c).enumerate() {
                let t = match load {
                    Load::Closed => Instant::now(),
                    Load::Rate(rate) => {
                        // Client c sends at c/rate, then every concurrency/rate seconds.
                        let at =
                            started + Duration::from_secs_f64((c + i * concurrency) as f64 / rate);
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                };
                post_create(&http, &url, format!("{tag}-{k}")).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    Accept {
        concurrency,
        load,
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        per_sec: all.len() as f64 / elapsed.as_secs_f64(),
    }
}

/// The accept measurements of the report: at the goal's rate and flat out, with 50 and 200
/// clients (and the sub path prefix of each).
const ACCEPT_LEVELS: [(usize, Load, &str); 4] = [
    (50, Load::Rate(ACCEPT_GOAL_RATE), "r50"),
    (200, Load::Rate(ACCEPT_GOAL_RATE), "r200"),
    (50, Load::Closed, "c50"),
    (200, Load::Closed, "c200"),
];

/// The accept goal: at least this many creates/s accepted ...
const ACCEPT_GOAL_RATE: f64 = 2000.0;
/// ... with p99 at most this, at that rate.
const ACCEPT_GOAL_P99: Duration = Duration::from_millis(20);

fn load_label(l: Load) -> String {
    match l {
        Load::Closed => "flat out (closed loop)".into(),
        Load::Rate(r) => format!("{r:.0}/s offered (open loop)"),
    }
}

/// One create end to end (`?wait=true`) on an idle system with a warm SSH session.
async fn single_create(env: &Env, rounds: usize, tag: &str) -> (Duration, Duration) {
    let mut lat = Vec::new();
    for k in 0..rounds {
        let t = Instant::now();
        let (s, v) = env
            .req(
                Method::POST,
                Some(ALICE),
                "/api/v1/volumes?wait=true",
                Some(
                    json!({"root_path_id": 2, "sub_path": format!("{tag}-{k}"), "size_gb": 1,
                            "clients": [{"host": "10.0.0.1", "options": "rw"}]}),
                ),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        lat.push(t.elapsed());
    }
    lat.sort();
    (percentile(&lat, 0.5), percentile(&lat, 0.9))
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct BatchCost {
    volumes: usize,
    create_pass: Duration,
    unchanged_pass: Duration,
}

/// Time one reconcile pass creating `n` volumes on a fresh server, then one pass with nothing
/// to change, through the library (the same code `nfsprov serve` runs).
async fn batch_costs(sizes: &[usize]) -> (Vec<BatchCost>, tempfile::TempDir, TestbedGuard) {
    let (dir, tb) = tokio::task::spawn_blocking({
        let n = sizes.len();
        move || testbed(n)
    })
    .await
    .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("ssh")).unwrap();
    let db = Datastore::open(&data.join("nfsprov.db")).await.unwrap();
    let hash = nfsprov::auth::hash_password("bench-pass-1").unwrap();
    let user = db
        .create_user(
            "bench",
            &hash,
            nfsprov::model::Role::User,
            nfsprov::spec::MAX_GB,
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let s = &tb.servers[i];
        let server = db
            .create_server(&NewServer {
                name: s.name.clone(),
                ssh_host: s.ssh_host.clone(),
                ssh_port: s.ssh_port,
                ssh_user: s.ssh_user.clone(),
                ssh_key: tb.client_key.display().to_string(),
                host_key: s.host_key.clone(),
                nfs_address: s.ssh_host.clone(),
                backend: "knfsd".into(),
            })
            .await
            .unwrap();
        let rp = db
            .create_root_path(
                server.id,
                &RootDir::parse("/srv/nfsprov/pool1").unwrap(),
                nfsprov::spec::MAX_GB,
                DeletePolicy::Retain,
            )
            .await
            .unwrap();
        let hub = Hub::new(db.clone(), data.join("ssh"), Tuning::default());
        let mut session = None;
        // Warm the session (connect) on the empty server, then add the volumes.
        hub.reconcile_server(server.id, &mut session, true)
            .await
            .unwrap();
        insert_volumes(&db, user.id, rp.id, n).await;
        let t = Instant::now();
        hub.reconcile_server(server.id, &mut session, true)
            .await
            .unwrap();
        let create_pass = t.elapsed();
        let available = db
            .server_volumes(server.id)
            .await
            .unwrap()
            .iter()
            .filter(|v| v.state == nfsprov::model::VolumeState::Available)
            .count();
        assert_eq!(available, n);
        // Best of three unchanged passes.
        let mut unchanged_pass = Duration::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            hub.reconcile_server(server.id, &mut session, true)
                .await
                .unwrap();
            unchanged_pass = unchanged_pass.min(t.elapsed());
        }
        out.push(BatchCost {
            volumes: n,
            create_pass,
            unchanged_pass,
        });
    }
    (out, dir, tb)
}

async fn insert_volumes(db: &Datastore, owner: UserId, rp: RootPathId, n: usize) {
    let clients = vec![ClientRule {
        host: ClientSpec::parse("10.0.0.0/8").unwrap(),
        options: ExportOptions::parse("rw,sync").unwrap(),
    }];
    for v in 0..n {
        let created = db
            .create_volume(&NewVolume {
                owner,
                root_path: rp,
                sub_path: SubPath::parse(&format!("v{v}")).unwrap(),
                size_gb: 1,
                clients: clients.clone(),
                mode: DirMode::default(),
                uid: 0,
                gid: 0,
                adopt_existing: false,
                idempotency_key: None,
                request_hash: None,
                restore_from: None,
            })
            .await
            .unwrap();
        assert!(matches!(created, Created::New(_)));
    }
}

/// A Markdown table.
fn table(md: &mut String, header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let _ = writeln!(md, "| {} |", header.join(" | "));
    let _ = writeln!(md, "|{}", "---|".repeat(header.len()));
    for r in rows {
        let _ = writeln!(md, "| {} |", r.join(" | "));
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem} RAM, Linux {}", kernel.trim())
}

/// A log-scale horizontal bar chart of the storm, and per-volume batch cost by size.
fn svg(storm: &[(&str, Duration)], batches: &[BatchCost]) -> String {
    let mut s = String::new();
    let (w, h) = (760.0, 520.0);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#fff"/>"##);
    let _ = writeln!(
        s,
        r#"<text x="20" y="28" font-size="16" font-weight="bold">Storm: time until every create is applied (log scale)</text>"#
    );
    let max = storm
        .iter()
        .map(|(_, d)| d.as_secs_f64())
        .fold(0.0, f64::max);
    let min = storm
        .iter()
        .map(|(_, d)| d.as_secs_f64())
        .fold(f64::MAX, f64::min);
    let (lo, hi) = ((min / 2.0).log10(), (max * 1.5).log10());
    let colors = ["#c0392b", "#2471a3", "#7f8c8d"];
    for (i, (name, d)) in storm.iter().enumerate() {
        let y = 50.0 + i as f64 * 44.0;
        let frac = (d.as_secs_f64().log10() - lo) / (hi - lo);
        let bw = 20.0 + frac * 480.0;
        let _ = writeln!(s, r#"<text x="20" y="{}">{name}</text>"#, y + 20.0);
        let _ = writeln!(
            s,
            r#"<rect x="180" y="{y}" width="{bw:.1}" height="30" fill="{}"/>"#,
            colors[i % 3]
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}">{}</text>"#,
            186.0 + bw,
            y + 20.0,
            secs(*d)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="20" y="232" font-size="16" font-weight="bold">Reconcile pass cost per volume, by volumes on the server</text>"#
    );
    let (x0, y0, pw, ph) = (80.0, 260.0, 620.0, 210.0);
    let per: Vec<(f64, f64, f64)> = batches
        .iter()
        .map(|b| {
            (
                b.volumes as f64,
                b.create_pass.as_secs_f64() * 1e6 / b.volumes as f64,
                b.unchanged_pass.as_secs_f64() * 1e6 / b.volumes as f64,
            )
        })
        .collect();
    let ymax = per.iter().map(|p| p.1.max(p.2)).fold(1.0, f64::max) * 1.1;
    let xlo = per.first().map_or(1.0, |p| p.0).log10();
    let xhi = per.last().map_or(10.0, |p| p.0).log10().max(xlo + 1.0);
    let px = |x: f64| x0 + (x.log10() - xlo) / (xhi - xlo) * pw;
    let py = |y: f64| y0 + ph - y / ymax * ph;
    let _ = writeln!(
        s,
        r##"<line x1="{x0}" y1="{}" x2="{}" y2="{}" stroke="#333"/>"##,
        y0 + ph,
        x0 + pw,
        y0 + ph
    );
    let _ = writeln!(
        s,
        r##"<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{}" stroke="#333"/>"##,
        y0 + ph
    );
    let _ = writeln!(s, r#"<text x="10" y="{}">{:.0} µs</text>"#, y0 + 10.0, ymax);
    let _ = writeln!(s, r#"<text x="30" y="{}">0</text>"#, y0 + ph);
    for (series, color, label) in [
        (1, "#2471a3", "pass creating N volumes"),
        (2, "#27ae60", "unchanged pass"),
    ] {
        let pts: Vec<String> = per
            .iter()
            .map(|p| {
                format!(
                    "{:.1},{:.1}",
                    px(p.0),
                    py(if series == 1 { p.1 } else { p.2 })
                )
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            pts.join(" ")
        );
        let ly = if series == 1 { y0 + 10.0 } else { y0 + 28.0 };
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{ly}" fill="{color}">{label}</text>"#,
            x0 + pw - 200.0
        );
    }
    for p in &per {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            px(p.0),
            y0 + ph + 18.0,
            p.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">volumes on the server (log scale)</text>"#,
        x0 + pw / 2.0,
        y0 + ph + 40.0
    );
    s.push_str("</svg>\n");
    s
}

/// The storm's goal: at most this many times the floor (medians).
const STORM_GOAL_TO_FLOOR: f64 = 1.5;

/// `line` without its terminal colour codes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The lowest and the highest storm/floor ratio of a run.
fn ratio_range(storms: &[StormRun], floors: &[FloorRun]) -> (f64, f64) {
    let r: Vec<f64> = storms
        .iter()
        .zip(floors)
        .map(|(s, f)| s.wall.as_secs_f64() / f.wall.as_secs_f64())
        .collect();
    (
        r.iter().copied().fold(f64::MAX, f64::min),
        r.iter().copied().fold(0.0, f64::max),
    )
}

/// Where the storm's time goes: the per-pass profile of the median storm run next to the
/// floor's single batch (median run).
fn storm_profile(md: &mut String, storms: &[StormRun], floors: &[FloorRun]) {
    let mut by_wall: Vec<&StormRun> = storms.iter().collect();
    by_wall.sort_by_key(|r| r.wall);
    let s = by_wall[(by_wall.len() - 1) / 2];
    let mut fl: Vec<&FloorRun> = floors.iter().collect();
    fl.sort_by_key(|r| r.wall);
    let f = fl[(fl.len() - 1) / 2];
    let p = &s.profile;
    let _ = writeln!(
        md,
        "### Where the storm's time goes
"
    );
    let _ = writeln!(
        md,
        "Per server (mean over the servers) in the median storm run ({}): the time of each phase summed over its {:.1} reconciles ({:.1} passes), from `nfsprov serve`'s own profile (`NFSPROV_LOG=info,nfsprov::profile=debug`: one line per reconcile); beside it the floor's one batch (median floor run, {}).\n",
        secs(s.wall),
        p.reconciles,
        p.passes,
        secs(f.wall)
    );
    let label = |ph: Phase| match ph {
        Phase::DbRead => "database read (server, its volumes)",
        Phase::Plan => "plan (wanted state, checks, script)",
        Phase::Connect => "SSH connect",
        Phase::Precheck => "precheck round trip (host names, missing directories)",
        Phase::Apply => "apply script (directories, file, reload, read-back)",
        Phase::Judge => "judge (verification per volume)",
        Phase::Record => "record outcomes and status",
    };
    let mut rows: Vec<Vec<String>> = Phase::ALL
        .iter()
        .map(|&ph| {
            vec![
                label(ph).to_string(),
                ms(p.spent[ph as usize]),
                if ph == Phase::Apply {
                    format!("{} (mkdir, file, exportfs -ra, etab)", ms(f.batch))
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    rows.push(vec![
        "waiting (for requests, between reconciles)".into(),
        ms(p.waiting),
        ms(f.wall.saturating_sub(f.batch)),
    ]);
    rows.push(vec![
        "wall (the last create was accepted at; the poll saw all available at)".into(),
        format!("{} ({}; {})", ms(s.wall), ms(s.accepted), ms(s.polled)),
        ms(f.wall),
    ]);
    table(
        md,
        &["phase", "nfsprov, per server", "floor, per server"],
        rows.into_iter(),
    );
    let _ = writeln!(md);
}

/// Accept latency at one level over runs.
struct AcceptSpread {
    concurrency: usize,
    load: Load,
    p50: Spread,
    p99: Spread,
    /// Median over the runs.
    per_sec: f64,
}

/// The accept measurements `runs` times, each run on a fresh service and server (each level
/// adds its creates to that server, as in one run), and one create end to end (first run).
async fn accept_runs(
    runs: usize,
    total: usize,
    single_rounds: usize,
) -> (Vec<AcceptSpread>, (Duration, Duration)) {
    let mut by_level: Vec<Vec<Accept>> = ACCEPT_LEVELS.iter().map(|_| Vec::new()).collect();
    let mut single = None;
    for r in 0..runs {
        let mut env = Env::start(2, 1_000_000, 1_000_000).await;
        env.restart_with(&with_no_rate_limits(&[])).await;
        if single.is_none() {
            single_create(&env, 3, "warm").await;
            single = Some(single_create(&env, single_rounds, "one").await);
        }
        for (i, (c, load, tag)) in ACCEPT_LEVELS.into_iter().enumerate() {
            let a = accept_latency(&env, c, load, total, tag).await;
            eprintln!(
                "  run {}/{runs}: {c} clients, {}: p50 {} p99 {} {:.0}/s",
                r + 1,
                load_label(load),
                ms(a.p50),
                ms(a.p99),
                a.per_sec
            );
            by_level[i].push(a);
        }
    }
    let levels = by_level
        .into_iter()
        .map(|runs| {
            let mut rates: Vec<f64> = runs.iter().map(|a| a.per_sec).collect();
            rates.sort_by(f64::total_cmp);
            let n = rates.len();
            AcceptSpread {
                concurrency: runs[0].concurrency,
                load: runs[0].load,
                p50: Spread::of(&runs.iter().map(|a| a.p50).collect::<Vec<_>>()),
                p99: Spread::of(&runs.iter().map(|a| a.p99).collect::<Vec<_>>()),
                per_sec: (rates[(n - 1) / 2] + rates[n / 2]) / 2.0,
            }
        })
        .collect();
    (levels, single.expect("at least one run"))
}

/// The rate-limit scenario: each user may make `RL_PER_USER` changes per second (bursts of as
/// many); the address limit is out of the way (both users send from 127.0.0.1).
const RL_PER_USER: &str = "20";
/// bob, the quiet user: creates per second on a fixed schedule (open loop), and how many.
const QUIET_RATE: f64 = 10.0;
/// alice, the burster: clients sending creates back to back (closed loop).
const BURSTERS: usize = 32;
/// Threads of alice's own runtime: as many as the whole generator had when bob shared it.
const BURST_THREADS: usize = 2;

/// Whether alice's and bob's clients share one runtime and one connection pool, as in the
/// first measurements (`NFSPROV_BENCH_SHARED_GENERATOR=1`). By default each user is its own
/// client, as two users on two machines are: alice on a runtime of her own, so bob's latency
/// is the service's and not the time his own process took to get round to his request
/// behind alice's 32 busy clients. alice keeps every thread she had, and sends as fast.
fn shared_generator() -> bool {
    std::env::var_os("NFSPROV_BENCH_SHARED_GENERATOR").is_some_and(|v| v == "1")
}

struct RateRun {
    alone_p99: Duration,
    burst_p99: Duration,
    quiet_refused: usize,
    burst_accepted: usize,
    burst_refused: usize,
}

/// bob's `n` creates at `QUIET_RATE`, latency counted from each one's scheduled time; and how
/// many were not accepted.
async fn quiet_creates(env: &Env, n: usize, tag: &str) -> (Vec<Duration>, usize) {
    let url = format!("{}/api/v1/volumes", env.base());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..n {
        let (http, url) = (env.http.clone(), url.clone());
        let sub = format!("{tag}-{k}");
        tasks.push(tokio::spawn(async move {
            let at = started + Duration::from_secs_f64(k as f64 / QUIET_RATE);
            tokio::time::sleep_until(at.into()).await;
            let r = http
                .post(url)
                .basic_auth(BOB.0, Some(BOB.1))
                .json(&json!({"root_path_id": 1, "sub_path": sub, "size_gb": 1,
                              "clients": [{"host": "10.0.0.0/8", "options": "rw"}]}))
                .send()
                .await
                .unwrap();
            (at.elapsed(), r.status() == StatusCode::ACCEPTED)
        }));
    }
    let (mut lat, mut refused) = (Vec::new(), 0);
    for t in tasks {
        let (d, ok) = t.await.unwrap();
        lat.push(d);
        refused += usize::from(!ok);
    }
    lat.sort();
    (lat, refused)
}

/// One run on a fresh service and server: bob alone, then bob while alice bursts.
async fn ratelimit_run(quiet_n: usize) -> RateRun {
    let mut env = Env::start(1, 1_000_000, 1_000_000).await;
    env.restart_with(&[
        ("NFSPROV_RATE_PER_USER", RL_PER_USER),
        ("NFSPROV_RATE_BURST_PER_USER", RL_PER_USER),
        ("NFSPROV_RATE_PER_IP", "1000000"),
        ("NFSPROV_RATE_BURST_PER_IP", "1000000"),
    ])
    .await;
    quiet_creates(&env, 3, "warm").await;
    let (alone, refused_alone) = quiet_creates(&env, quiet_n, "alone").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = format!("{}/api/v1/volumes", env.base());
    let (alice_rt, alice_http) = if shared_generator() {
        (None, env.http.clone())
    } else {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(BURST_THREADS)
            .thread_name("alice")
            .enable_all()
            .build()
            .unwrap();
        (Some(rt), reqwest::Client::new())
    };
    let spawn_on = alice_rt
        .as_ref()
        .map_or_else(tokio::runtime::Handle::current, |rt| rt.handle().clone());
    let mut bursters = Vec::new();
    for c in 0..BURSTERS {
        let (http, url, stop) = (alice_http.clone(), url.clone(), stop.clone());
        bursters.push(spawn_on.spawn(async move {
            let (mut accepted, mut refused) = (0, 0);
            // Bounded: far more than a run sends at this machine's speed.
            for i in 0..1_000_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let r = http
                    .post(&url)
                    .basic_auth(ALICE.0, Some(ALICE.1))
                    .json(&json!({"root_path_id": 1, "sub_path": format!("burst-{c}-{i}"),
                                  "size_gb": 1, "clients": [{"host": "10.0.0.0/8", "options": "rw"}]}))
                    .send()
                    .await
                    .unwrap();
                match r.status() {
                    StatusCode::ACCEPTED => accepted += 1,
                    StatusCode::TOO_MANY_REQUESTS => refused += 1,
                    s => panic!("the burster got {s}"),
                }
            }
            (accepted, refused)
        }));
    }
    let (burst, refused_burst) = quiet_creates(&env, quiet_n, "burst").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut burst_accepted, mut burst_refused) = (0, 0);
    for b in bursters {
        let (a, r) = b.await.unwrap();
        burst_accepted += a;
        burst_refused += r;
    }
    if let Some(rt) = alice_rt {
        rt.shutdown_background();
    }
    RateRun {
        alone_p99: percentile(&alone, 0.99),
        burst_p99: percentile(&burst, 0.99),
        quiet_refused: refused_alone + refused_burst,
        burst_accepted,
        burst_refused,
    }
}

/// The rate-limit section of the report, from `runs` runs of `quiet_n` quiet creates each.
async fn ratelimit_section(md: &mut String, runs: usize, quiet_n: usize) {
    let mut all = Vec::new();
    for r in 0..runs {
        let run = ratelimit_run(quiet_n).await;
        eprintln!(
            "  run {}/{runs}: bob's p99 alone {}, during alice's burst {}; alice {} accepted, {} refused (429); bob refused {}",
            r + 1,
            ms(run.alone_p99),
            ms(run.burst_p99),
            run.burst_accepted,
            run.burst_refused,
            run.quiet_refused
        );
        all.push(run);
    }
    let mut ratios: Vec<f64> = all
        .iter()
        .map(|r| r.burst_p99.as_secs_f64() / r.alone_p99.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    let ratio = (ratios[(n - 1) / 2] + ratios[n / 2]) / 2.0;
    let alone = Spread::of(&all.iter().map(|r| r.alone_p99).collect::<Vec<_>>());
    let burst = Spread::of(&all.iter().map(|r| r.burst_p99).collect::<Vec<_>>());
    let secs = quiet_n as f64 / QUIET_RATE;
    let generator = if shared_generator() {
        "alice and bob are one client: one runtime of 2 threads and one connection pool (`NFSPROV_BENCH_SHARED_GENERATOR=1`).".to_string()
    } else {
        format!(
            "alice and bob are two clients, as two users on two machines: alice on a runtime of {BURST_THREADS} threads and a connection pool of her own, bob on the benchmark's main runtime (2 threads); all share the machine's cores with the service."
        )
    };
    let _ = writeln!(
        md,
        "## Rate limits: a quiet user while another bursts\n\n\
         Each user may make {RL_PER_USER} changes per second (bursts of {RL_PER_USER}). bob creates {QUIET_RATE:.0} volumes per second for {secs:.0} s on a fixed schedule (open loop, latency from the scheduled send), first alone, then while alice sends creates back to back from {BURSTERS} clients; both from 127.0.0.1 (the address limit set out of the way). The service runs with its default refusal hold (`NFSPROV_RATE_REFUSAL_HOLD_MS`, 1 s: a 429 is sent a second after the refused change, holding only its connection). {runs} runs, each on a fresh service and server. {generator}\n"
    );
    table(
        md,
        &[
            "bob's create p99",
            "alone",
            "during alice's burst",
            "ratio (median of runs)",
        ],
        std::iter::once(vec![
            "median (range)".into(),
            alone.ms(),
            burst.ms(),
            format!("{ratio:.2}x ({:.2}-{:.2}x)", ratios[0], ratios[n - 1]),
        ]),
    );
    let _ = writeln!(
        md,
        "\nalice: {} creates accepted and {} refused with 429 in all runs; bob: {} refused.\n",
        all.iter().map(|r| r.burst_accepted).sum::<usize>(),
        all.iter().map(|r| r.burst_refused).sum::<usize>(),
        all.iter().map(|r| r.quiet_refused).sum::<usize>(),
    );
    let _ = writeln!(md, "Each run:\n");
    table(
        md,
        &[
            "run",
            "bob's p99 alone",
            "during the burst",
            "ratio",
            "alice accepted",
            "alice refused (per s)",
        ],
        all.iter().enumerate().map(|(i, r)| {
            vec![
                format!("{}", i + 1),
                ms(r.alone_p99),
                ms(r.burst_p99),
                format!(
                    "{:.2}x",
                    r.burst_p99.as_secs_f64() / r.alone_p99.as_secs_f64()
                ),
                r.burst_accepted.to_string(),
                format!("{} ({:.0})", r.burst_refused, r.burst_refused as f64 / secs),
            ]
        }),
    );
    md.push('\n');
}

/// `section` (a `## ` heading and what follows) in place of the same heading's section of the
/// report at `path`, or at its end.
fn replace_section(path: &Path, section: &str) {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let heading = section.lines().next().unwrap_or_default();
    let new = match old.find(heading) {
        Some(start) => {
            let rest = &old[start + heading.len()..];
            let end = rest
                .find("\n## ")
                .map_or(old.len(), |i| start + heading.len() + i + 1);
            format!("{}{section}{}", &old[..start], &old[end..])
        }
        None => format!(
            "{}\n{section}",
            old.trim_end_matches('\n').to_string() + "\n"
        ),
    };
    std::fs::write(path, new).unwrap();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = opts();
    let (storm_n, accept_total, sizes): (usize, usize, Vec<usize>) = if o.short {
        (100, 2000, vec![10, 100, 1000])
    } else {
        (1000, 10_000, vec![10, 100, 1000, 10_000])
    };
    let servers = 4;
    let runs = o.runs.map_or(if o.short { 3 } else { 5 }, |r| r as usize);
    // The short form measures accept latency once: it judges only the storm's ratios.
    let accept_reps = if o.short { 1 } else { runs };
    if matches!(o.only, Some(Only::Memory)) {
        // Quick look at the pass costs and memory alone (prints, writes nothing).
        let (batches, bdir, _btb) = batch_costs(&sizes).await;
        let mut probe = RssProbe::start(bdir.path().join("data")).await;
        let idle = probe.idle_rss().await;
        for c in [1, 4, 50] {
            println!(
                "RSS under load with {c} clients: {:.1} MB",
                probe.load_rss_with(c).await as f64 / 1024.0
            );
        }
        let load = probe.load_rss().await;
        for b in &batches {
            println!(
                "{} volumes: create pass {}, unchanged pass {}",
                b.volumes,
                ms(b.create_pass),
                ms(b.unchanged_pass)
            );
        }
        println!(
            "RSS idle {:.1} MB, under load {:.1} MB",
            idle as f64 / 1024.0,
            load as f64 / 1024.0
        );
        return;
    }
    if matches!(o.only, Some(Only::Ratelimit)) {
        // Prints the section; with --out, puts it in that report in place of its old one.
        let mut md = String::new();
        ratelimit_section(&mut md, runs, if o.short { 50 } else { 100 }).await;
        println!("{md}");
        if let Some(out) = Opts::parse().out {
            replace_section(&out, &md);
            eprintln!("wrote the rate limit section of {}", out.display());
        }
        return;
    }
    if matches!(o.only, Some(Only::Sizes)) {
        // Prints the section; with --out, puts it in that report in place of its old one.
        let mut md = String::new();
        sizes::section(&mut md, runs, if o.short { 10 } else { 30 }).await;
        println!("{md}");
        if let Some(out) = Opts::parse().out {
            replace_section(&out, &md);
            eprintln!("wrote the sizes section of {}", out.display());
        }
        return;
    }
    if matches!(o.only, Some(Only::Scale)) {
        // Prints the section; with --out, puts it in that report in place of its old one.
        let mut md = String::new();
        scale::section(&mut md, runs, if o.short { 1000 } else { 4000 }, storm_n).await;
        println!("{md}");
        if let Some(out) = Opts::parse().out {
            replace_section(&out, &md);
            eprintln!("wrote the scale-out section of {}", out.display());
        }
        return;
    }
    if matches!(o.only, Some(Only::Storm)) {
        // Quick look at the storm against the floor alone (no baseline; prints, writes nothing).
        let (s, f) = storms(storm_n, servers, runs).await;
        for r in &s {
            eprintln!(
                "storm run: {} (accepted at {}, polled {})",
                ms(r.wall),
                ms(r.accepted),
                ms(r.polled)
            );
            for t in &r.timeline {
                eprintln!("{t}");
            }
        }
        let mut md = String::new();
        storm_profile(&mut md, &s, &f);
        println!("{md}");
        return;
    }
    if matches!(o.only, Some(Only::Accept)) {
        // Quick look at accept latency alone, with the CPU time each process used and what
        // the reconcilers did meanwhile.
        let mut env = Env::start(2, 1_000_000, 1_000_000).await;
        env.restart_with(&with_no_rate_limits(&[(
            "NFSPROV_LOG",
            "info,nfsprov::profile=debug",
        )]))
        .await;
        if std::env::var("BENCH_SERVERS_DOWN").is_ok() {
            for s in &env.tb.servers {
                s.stop().unwrap();
            }
        }
        single_create(&env, 3, "warm").await;
        let (p50, p90) = single_create(&env, 30, "one").await;
        println!(
            "one create end to end, warm SSH session: p50 {} p90 {}",
            ms(p50),
            ms(p90)
        );
        let pid = env.serve.as_ref().unwrap().id();
        let cpu = |pid: u32| -> f64 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let f: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            (f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
                + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
                / 100.0
        };
        for (c, load, tag) in ACCEPT_LEVELS {
            let from = env.log().len();
            let (before, self_before) = (cpu(pid), cpu(std::process::id()));
            let t = Instant::now();
            let a = accept_latency(&env, c, load, accept_total, tag).await;
            println!(
                "{c} clients, {}: p50 {} p99 {} {:.0}/s; wall {:.2}s, serve cpu {:.2}s, bench cpu {:.2}s",
                load_label(load),
                ms(a.p50),
                ms(a.p99),
                a.per_sec,
                t.elapsed().as_secs_f64(),
                cpu(pid) - before,
                cpu(std::process::id()) - self_before
            );
            let lines = profile_lines(&env, from);
            let mut spent = [Duration::ZERO; 7];
            for l in &lines {
                for (acc, d) in spent.iter_mut().zip(l.spent) {
                    *acc += d;
                }
            }
            println!(
                "  reconciles meanwhile: {} ({} passes), busy {} (outside the phases: {}): {}",
                lines.len(),
                lines.iter().map(|l| l.passes).sum::<usize>(),
                ms(lines.iter().map(|l| l.total).sum()),
                ms(lines
                    .iter()
                    .map(|l| l.total.saturating_sub(l.spent.iter().sum()))
                    .sum()),
                Phase::ALL
                    .iter()
                    .map(|p| format!("{} {}", p.name(), ms(spent[*p as usize])))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        return;
    }
    eprintln!("storm: {storm_n} creates over {servers} servers, {runs} runs each");
    let (storm_runs, floor_runs) = storms(storm_n, servers, runs).await;
    let t_nfsprov = Spread::of(&storm_runs.iter().map(|r| r.wall).collect::<Vec<_>>());
    let t_floor = Spread::of(&floor_runs.iter().map(|r| r.wall).collect::<Vec<_>>());
    // The seed's way takes minutes and is a hundred times off: once is enough.
    let t_base = tokio::task::spawn_blocking(move || baseline(storm_n, servers))
        .await
        .unwrap();
    eprintln!("  baseline {}", secs(t_base));
    let speedup = t_base.as_secs_f64() / t_nfsprov.median.as_secs_f64();
    let to_floor = t_nfsprov.median.as_secs_f64() / t_floor.median.as_secs_f64();

    eprintln!("accept latency, {accept_reps} runs");
    let (accepts, (single_p50, single_p90)) =
        accept_runs(accept_reps, accept_total, if o.short { 10 } else { 30 }).await;

    eprintln!("batch cost by size {sizes:?}");
    let (batches, bdir, _btb) = batch_costs(&sizes).await;
    // RSS of `nfsprov serve` over the database holding the largest server.
    let mut rss_env = RssProbe::start(bdir.path().join("data")).await;
    let idle_kb = rss_env.idle_rss().await;
    let load_kb = rss_env.load_rss().await;
    drop(rss_env);

    // ---- report ------------------------------------------------------------------------
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let cmd = if o.short {
        "cargo xtask bench --short"
    } else {
        "cargo xtask bench"
    };
    let largest = batches.last().unwrap();
    let mut md = String::new();
    let _ = writeln!(md, "# nfsprov benchmarks\n");
    let _ = writeln!(
        md,
        "- date: {now}\n- machine: {}\n- command: `{cmd}` (release build)\n- servers: test-bed servers on this machine (OpenSSH sshd + exportfs in their own mount namespaces, reached over 127.0.0.1); every approach gets fresh servers of the same kind\n",
        machine()
    );
    let _ = writeln!(md, "![plot](crates/bench/plot.svg)\n");
    let _ = writeln!(
        md,
        "## Storm: {storm_n} creates over {servers} servers, until all are applied\n"
    );
    let _ = writeln!(md, "| approach | time | ratio |");
    let _ = writeln!(md, "|---|---|---|");
    let _ = writeln!(
        md,
        "| baseline: the seed's way (new SSH connection per volume: mkdir + /etc/exports append + exportfs; serialized per root path) | {} | 1x |",
        secs(t_base)
    );
    let _ = writeln!(
        md,
        "| nfsprov (API accept + batched reconcile over one reused session per server + verification; median and range) | {} | **{:.1}x faster than the baseline** (goal >= 100x) |",
        t_nfsprov.secs(runs),
        speedup
    );
    let _ = writeln!(
        md,
        "| floor: one hand-written batch per server over an open SSH shell, no API, no database, no verification; median and range | {} | nfsprov is **{:.2}x the floor** (medians; goal <= {STORM_GOAL_TO_FLOOR}x) |\n",
        t_floor.secs(runs),
        to_floor
    );
    let _ = writeln!(
        md,
        "The storm and the floor ran {runs} times each, alternately, each run on fresh servers; the ratio is the median storm over the median floor (per run it ranged {:.2}-{:.2}x). nfsprov's time ends when the last volume was recorded verified (its `updated_at`), not at the bench's next poll of the listing. The floor's shells are open before its timer starts, as nfsprov's sessions are in service, so the ratio compares the work of a storm, not SSH set-up.\n",
        ratio_range(&storm_runs, &floor_runs).0,
        ratio_range(&storm_runs, &floor_runs).1,
    );
    storm_profile(&mut md, &storm_runs, &floor_runs);
    let _ = writeln!(
        md,
        "## Accepting creates (SQLite, release build, each create reconciled onto a test-bed server as it comes)\n"
    );
    table(
        &mut md,
        &[
            "concurrent clients",
            "load",
            "p50",
            "p99",
            "accepted creates/s",
        ],
        accepts.iter().map(|a| {
            vec![
                a.concurrency.to_string(),
                load_label(a.load),
                ms(a.p50.median),
                a.p99.ms(),
                format!("{:.0}", a.per_sec),
            ]
        }),
    );
    // Met when, at both client counts, the goal's rate is served with p99 within the goal and
    // flat out the API accepts at least that rate (medians of the runs).
    let accept_met = accepts.iter().all(|a| match a.load {
        Load::Rate(_) => a.p99.median <= ACCEPT_GOAL_P99,
        Load::Closed => a.per_sec >= ACCEPT_GOAL_RATE,
    });
    let _ = writeln!(
        md,
        "\nEach row: median of {accept_reps} runs (p99: median and range), each run on a fresh service and server. Goal: p99 <= {} ms with >= {ACCEPT_GOAL_RATE:.0} accepted creates/s, at 50 and at 200 clients, in the median run: **{}**. \
         Read it from two kinds of rows. *Open loop*: the clients together offer {ACCEPT_GOAL_RATE:.0} creates/s on a fixed schedule, and latency counts from the scheduled send time, so a stall is charged to every send it delays (no coordinated omission). *Closed loop*: each client sends its next create as soon as the last is answered, which gives the most the API accepts; its latency is clients / rate by Little's law (200 clients at p99 20 ms would need 10,000 creates/s), so it measures capacity, not responsiveness. \
         The API shares these 2 cores with the load generator, its own reconcilers and a test-bed server (sshd, mkdir, exportfs) that applies every create as it comes: each level adds its creates to the same server, so the later rows run against more volumes (up to 4 x {accept_total}). \
         Creates are group-committed: all the creates waiting at a moment are recorded in one transaction, on the one write connection, without a thread hand-off per statement; reconcile passes do their per-volume work off the runtime's worker threads. PostgreSQL is not supported yet, so there is no PostgreSQL row.\n",
        ACCEPT_GOAL_P99.as_millis(),
        if accept_met { "met" } else { "not met" }
    );
    let _ = writeln!(md, "## One create end to end, warm SSH session\n");
    let _ = writeln!(
        md,
        "`POST /api/v1/volumes?wait=true` on an idle system until the export is verified: p50 {}, p90 {} (goal < 100 ms).\n",
        ms(single_p50),
        ms(single_p90)
    );
    let _ = writeln!(md, "## Reconcile pass by volumes on one server\n");
    let per_volume = |d: Duration, n: usize| format!("{:.0} µs", d.as_secs_f64() * 1e6 / n as f64);
    table(
        &mut md,
        &[
            "volumes",
            "pass creating them",
            "per volume",
            "unchanged pass",
            "per volume",
        ],
        batches.iter().map(|b| {
            vec![
                b.volumes.to_string(),
                ms(b.create_pass),
                per_volume(b.create_pass, b.volumes),
                ms(b.unchanged_pass),
                per_volume(b.unchanged_pass, b.volumes),
            ]
        }),
    );
    let _ = writeln!(
        md,
        "\nUnchanged pass over {} volumes: {} (goal < 1 s for 10,000).\n",
        largest.volumes,
        ms(largest.unchanged_pass)
    );
    eprintln!("rate limits: a quiet user while another bursts, {runs} runs");
    ratelimit_section(&mut md, runs, if o.short { 50 } else { 100 }).await;
    eprintln!("a create by layout: directory vs btrfs, {runs} runs");
    sizes::section(&mut md, runs, if o.short { 10 } else { 30 }).await;
    if !o.short {
        // Not in CI's short form: six fresh PostgreSQL-backed services per run.
        eprintln!("scale-out: PostgreSQL with 1 and 3 nodes next to SQLite, {runs} runs");
        scale::section(&mut md, runs, accept_total, storm_n).await;
    }
    let _ = writeln!(md, "## Memory of `nfsprov serve`\n");
    let _ = writeln!(
        md,
        "With {} volumes on one server: RSS idle {:.1} MB (goal < 50 MB), under load (200 concurrent list requests) {:.1} MB.\n",
        largest.volumes,
        idle_kb as f64 / 1024.0,
        load_kb as f64 / 1024.0
    );
    println!("{md}");
    if let Some(out) = &o.out {
        std::fs::write(out, &md).unwrap();
        eprintln!("wrote {}", out.display());
    }
    if let Some(p) = &o.svg {
        let storm_bars = [
            ("baseline (seed)", t_base),
            ("nfsprov", t_nfsprov.median),
            ("floor", t_floor.median),
        ];
        std::fs::write(p, svg(&storm_bars, &batches)).unwrap();
        eprintln!("wrote {}", p.display());
    }
    // CI: fail only on a regression of the ratios, never on absolute times.
    if o.short {
        // Loose on purpose: at 100 volumes fixed costs (HTTP, a few passes, polling) weigh as
        // much as the work, and the floor is 10-40 ms, so its ratio swings with this machine's
        // load: medians of 3 runs were seen at 2-18x the floor (single runs up to 35x) and
        // 100x+ the baseline. Losing the batching puts nfsprov near the baseline, hundreds of
        // times the floor.
        let min_speedup = 5.0;
        let max_to_floor = 50.0;
        assert!(
            speedup >= min_speedup,
            "regression: nfsprov only {speedup:.1}x faster than the baseline (< {min_speedup}x)"
        );
        assert!(
            to_floor <= max_to_floor,
            "regression: nfsprov is {to_floor:.1}x the floor (> {max_to_floor}x)"
        );
        println!("bench: 2 passed, 0 failed");
    }
}

/// `nfsprov serve` over an existing data dir, to read its memory.
struct RssProbe {
    child: std::process::Child,
    port: u16,
    http: reqwest::Client,
}

impl RssProbe {
    async fn start(data: PathBuf) -> RssProbe {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(nfsprov_bin())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("NFSPROV_DATA_DIR", &data)
            .env("NFSPROV_LOG", "warn")
            .envs(
                std::env::var("BENCH_MALLOC_ARENA_MAX")
                    .ok()
                    .map(|v| ("MALLOC_ARENA_MAX", v)),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http
            .get(format!("http://127.0.0.1:{port}/api/v1/health"))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "serve did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        RssProbe { child, port, http }
    }

    /// RSS after the start-up reconcile of every server has settled.
    async fn idle_rss(&mut self) -> u64 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        rss_kb(self.child.id())
    }

    /// Peak RSS while 200 clients list all volumes for a few seconds.
    async fn load_rss(&mut self) -> u64 {
        self.load_rss_with(200).await
    }

    async fn load_rss_with(&mut self, clients: usize) -> u64 {
        let stop = Instant::now() + Duration::from_secs(4);
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let http = self.http.clone();
            let url = format!("http://127.0.0.1:{}/api/v1.0/volumes/", self.port);
            tasks.push(tokio::spawn(async move {
                while Instant::now() < stop {
                    let _ = http
                        .get(&url)
                        .basic_auth("bench", Some("bench-pass-1"))
                        .send()
                        .await;
                }
            }));
        }
        let mut peak = 0;
        while Instant::now() < stop {
            peak = peak.max(rss_kb(self.child.id()));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        peak
    }
}

impl Drop for RssProbe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
