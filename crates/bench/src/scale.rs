//! Scale-out (issue 13): in one run, accept latency and capacity on SQLite (one node), on
//! PostgreSQL with one node and with three nodes behind a round-robin client, and the
//! 1000-create storm over 4 servers on PostgreSQL with its creates spread over three nodes next
//! to the same storm sent to one node. Every setting starts fresh (its own test-bed servers,
//! its own database); the settings alternate within a run, and each figure is the median of the
//! runs with their range.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use nfsprov_testbed::harness::*;
use reqwest::StatusCode;
use serde_json::json;

use crate::{Spread, ms, percentile, secs, table, with_no_rate_limits};

/// Where nfsprov keeps its state and how many `nfsprov serve` nodes share it.
#[derive(Clone, Copy)]
struct Setting {
    label: &'static str,
    database: Database,
    nodes: usize,
}

const SQLITE_1: Setting = Setting {
    label: "SQLite, 1 node",
    database: Database::Sqlite,
    nodes: 1,
};
const PG_1: Setting = Setting {
    label: "PostgreSQL, 1 node",
    database: Database::Postgres,
    nodes: 1,
};
const PG_3: Setting = Setting {
    label: "PostgreSQL, 3 nodes",
    database: Database::Postgres,
    nodes: 3,
};

/// Clients of the accept measurements (each sends to node `client % nodes`).
const CLIENTS: usize = 50;
/// The open-loop rate at which latency is measured (creates/s offered).
const OFFERED: f64 = 1000.0;

async fn env(setting: Setting, servers: usize) -> Env {
    Env::start_nodes(
        servers,
        setting.nodes,
        1_000_000,
        1_000_000,
        setting.database,
        &with_no_rate_limits(&[]),
    )
    .await
}

/// One create of 1 GB on root path `rp` through node `node`: it must be accepted.
async fn post(env: &Env, node: usize, rp: usize, sub: String) {
    let r = env
        .http
        .post(format!("{}/api/v1/volumes", env.node_base(node)))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .json(&json!({"root_path_id": rp, "sub_path": sub, "size_gb": 1,
                      "clients": [{"host": "10.0.0.0/8", "options": "rw"}]}))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "create through node {node}"
    );
}

struct AcceptRun {
    p50: Duration,
    p99: Duration,
    /// Creates/s accepted flat out (closed loop).
    capacity: f64,
}

/// `total` creates at `OFFERED`/s (latency from each scheduled send: no coordinated
/// omission), then `total` flat out (capacity), from `CLIENTS` clients spread over the nodes.
async fn accept(env: &Env, total: usize) -> AcceptRun {
    let nodes = env.nodes.len();
    let env = std::sync::Arc::new(env);
    let run = |rate: Option<f64>, tag: &'static str| {
        let env = env.clone();
        async move {
            let warm = (0..CLIENTS).map(|c| post(&env, c % nodes, 1, format!("{tag}-w{c}")));
            futures_util::future::join_all(warm).await;
            let started = Instant::now();
            let clients = (0..CLIENTS).map(|c| {
                let env = env.clone();
                async move {
                    let mut lat = Vec::new();
                    for (i, k) in (0..total).filter(|k| k % CLIENTS == c).enumerate() {
                        let t = match rate {
                            None => Instant::now(),
                            Some(rate) => {
                                let at = started
                                    + Duration::from_secs_f64((c + i * CLIENTS) as f64 / rate);
                                tokio::time::sleep_until(at.into()).await;
                                at
                            }
                        };
                        post(&env, c % nodes, 1 + k % 4, format!("{tag}-{k}")).await;
                        lat.push(t.elapsed());
                    }
                    lat
                }
            });
            let mut all: Vec<Duration> = futures_util::future::join_all(clients)
                .await
                .into_iter()
                .flatten()
                .collect();
            let elapsed = started.elapsed();
            all.sort();
            (all, elapsed)
        }
    };
    let (open, _) = run(Some(OFFERED), "o").await;
    let (closed, elapsed) = run(None, "c").await;
    AcceptRun {
        p50: percentile(&open, 0.5),
        p99: percentile(&open, 0.99),
        capacity: closed.len() as f64 / elapsed.as_secs_f64(),
    }
}

/// `n` creates over the 4 servers, sent 64 at a time round robin over the nodes; the time
/// until the API lists every one available.
async fn storm(env: &Env, n: usize) -> Duration {
    let nodes = env.nodes.len();
    let started = Instant::now();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let creates = (0..n).map(|v| {
        let sem = sem.clone();
        async move {
            let _permit = sem.acquire().await.expect("the semaphore stays open");
            post(env, v % nodes, 1 + v % 4, format!("s{v}")).await;
        }
    });
    futures_util::future::join_all(creates).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let all = env.all_volumes().await;
        if all.len() == n && all.iter().all(|v| v["state"] == "available") {
            return started.elapsed();
        }
        assert!(Instant::now() < deadline, "the storm did not settle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[(n - 1) / 2] + v[n / 2]) / 2.0
}

/// The section of the report: `runs` runs of each setting, `accept_total` creates per accept
/// level, `storm_n` creates per storm.
pub async fn section(md: &mut String, runs: usize, accept_total: usize, storm_n: usize) {
    let settings = [SQLITE_1, PG_1, PG_3];
    let mut accepts: Vec<Vec<AcceptRun>> = settings.iter().map(|_| Vec::new()).collect();
    let storms_on = [PG_1, PG_3];
    let mut storms: Vec<Vec<Duration>> = storms_on.iter().map(|_| Vec::new()).collect();
    for r in 0..runs {
        for (i, s) in settings.iter().enumerate() {
            let env = env(*s, 4).await;
            let a = accept(&env, accept_total).await;
            eprintln!(
                "  run {}/{runs} accept, {}: p50 {} p99 {} at {OFFERED:.0}/s; {:.0} creates/s flat out",
                r + 1,
                s.label,
                ms(a.p50),
                ms(a.p99),
                a.capacity
            );
            accepts[i].push(a);
        }
        for (i, s) in storms_on.iter().enumerate() {
            let env = env(*s, 4).await;
            let t = storm(&env, storm_n).await;
            eprintln!("  run {}/{runs} storm, {}: {}", r + 1, s.label, secs(t));
            storms[i].push(t);
        }
    }
    let _ = writeln!(
        md,
        "## Scale-out: PostgreSQL with 1 and 3 nodes next to SQLite\n\n\
         Each setting on fresh test-bed servers (4 sshd + exportfs) and a fresh database (PostgreSQL \
         started by the test bed on loopback, one per setting), release build, the settings \
         alternating within each of {runs} runs; median (range). {CLIENTS} clients, each sending \
         to node `client % nodes` (a round-robin load balancer), creates over the 4 servers' root \
         paths. Latency: {accept_total} creates offered at {OFFERED:.0}/s (open loop, counted from \
         each scheduled send). Capacity: {accept_total} creates flat out (closed loop).\n"
    );
    table(
        md,
        &[
            "database and nodes",
            "p50",
            "p99",
            "accepted creates/s flat out",
            "capacity vs SQLite, 1 node",
        ],
        settings.iter().zip(&accepts).map(|(s, runs)| {
            let base = median_f64(accepts[0].iter().map(|a| a.capacity).collect());
            let cap = median_f64(runs.iter().map(|a| a.capacity).collect());
            vec![
                s.label.to_string(),
                Spread::of(&runs.iter().map(|a| a.p50).collect::<Vec<_>>()).ms(),
                Spread::of(&runs.iter().map(|a| a.p99).collect::<Vec<_>>()).ms(),
                format!("{cap:.0}"),
                format!("{:.2}x", cap / base),
            ]
        }),
    );
    let one = Spread::of(&storms[0]);
    let three = Spread::of(&storms[1]);
    let _ = writeln!(
        md,
        "\n### Storm: {storm_n} creates over 4 servers until all are available, on PostgreSQL\n\n\
         64 creates in flight, round robin over the nodes; the time from the first send until the \
         API lists every volume available (polled every 20 ms).\n"
    );
    table(
        md,
        &["nodes", "time", "vs 1 node (medians)"],
        [
            vec!["1".to_string(), one.secs(runs), "1x".to_string()],
            vec![
                "3".to_string(),
                three.secs(runs),
                format!(
                    "{:.2}x the time",
                    three.median.as_secs_f64() / one.median.as_secs_f64()
                ),
            ],
        ]
        .into_iter(),
    );
    let _ = writeln!(
        md,
        "\nThree nodes share one database and 4 servers: each server is reconciled by the one node \
         holding its lease, so a storm's passes are not spread further than the servers are; \
         the other nodes add API capacity and take over a server when its holder dies."
    );
}
