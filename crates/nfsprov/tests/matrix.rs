//! The backend matrix: every client form and every export option of `tests/matrix/rows.rs`
//! goes through the real API of `nfsprov serve` to a real knfsd server (exportfs, then
//! `/var/lib/nfs/etab`) and a real nfs-ganesha server (its config parser, its export manager
//! over D-Bus, reads and writes from client hosts), on create and on PATCH. Each row must end
//! `available` showing what the row says, or be refused up front with a 400 naming the field.
//! `tests/matrix_table.rs` (fast tier) keeps the rows complete.
//!
//! Rows are sent in waves (all creates at once, then all PATCHes) and verified together, one
//! server per backend. Each backend's summary goes to `target/matrix-summary-<backend>.txt`,
//! which `scripts/test.sh` prints.

mod common;
#[path = "matrix/rows.rs"]
mod rows;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::nfs::{Nfs, live_entries};
use common::*;
use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use rows::{
    CLIENT_ROW_GANESHA, CLIENT_ROWS, Ganesha, HOOTIE_ACCESS, HOOTIE_ALLOWED_HOSTS, HOOTIE_ETAB,
    HOOTIE_GANESHA, Held, NETGROUPS, OPTION_ROWS, Writes,
};

const POOL: &str = "/srv/nfsprov/pool1";
/// The clients a PATCHed volume has before its PATCH: must be gone afterwards.
const BASELINE: &str = "192.0.2.1";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Knfsd,
    Ganesha,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Knfsd => "knfsd",
            Backend::Ganesha => "ganesha",
        }
    }
}

/// What one row expects on this backend.
enum Expect {
    Accepted,
    /// 400 naming `field`, the message holding the text.
    Refused {
        field: &'static str,
        text: &'static str,
    },
}

/// A refused client row's PATCH puts the client second, after one that is fine, so the
/// refusal must name its position.
const REFUSED_SECOND: &str = "clients[1].host";

/// One row as sent: the created volume `<sub>` and the PATCHed one `<sub>-p`.
struct Case {
    kind: &'static str,
    label: String,
    input: String,
    sub: String,
    clients: Value,
    expect: Expect,
    /// Filled as the row goes: what it showed, and what went wrong.
    shown: Vec<String>,
    failures: Vec<String>,
}

fn summary_path(backend: Backend) -> PathBuf {
    summary_path_named(backend.name())
}

fn summary_path_named(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join(format!("matrix-summary-{name}.txt"))
}

/// Send the requests, at most 16 at a time; answers in order.
async fn send_all(env: &Env, reqs: Vec<(Method, String, Value)>) -> Vec<(StatusCode, Value)> {
    futures_util::stream::iter(reqs)
        .map(|(m, path, body)| async move { env.req(m, Some(ALICE), &path, Some(body)).await })
        .buffered(16)
        .collect()
        .await
}

/// Every volume by sub path, once none is still being created or changed.
async fn settled_volumes(env: &Env) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let all = env.all_volumes().await;
        if all
            .iter()
            .all(|v| !matches!(v["state"].as_str(), Some("creating" | "updating")))
        {
            return all
                .into_iter()
                .map(|v| (v["sub_path"].as_str().unwrap().to_string(), v))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "volumes did not settle: {:?}",
            all.iter()
                .filter(|v| v["state"] != "available")
                .map(|v| format!("{} {} {}", v["sub_path"], v["state"], v["last_error"]))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The test network's IPv4 `{net}` and IPv6 `{net6}` (see rows.rs).
#[derive(Clone, Copy)]
struct Net<'a> {
    v4: &'a str,
    v6: &'a str,
}

impl Net<'_> {
    fn fill(self, s: &str) -> String {
        s.replace("{NET6}", &self.v6.to_uppercase())
            .replace("{net6}", self.v6)
            .replace("{net}", self.v4)
    }
}

/// knfsd's stand-ins: no client reaches that server.
const KNFSD_NET: Net<'static> = Net {
    v4: "10.1.2",
    v6: "fd00:1:2",
};

fn cases(backend: Backend, net: Net) -> Vec<Case> {
    let fill = |s: &str| net.fill(s);
    let mut out = Vec::new();
    for (i, row) in CLIENT_ROWS.iter().enumerate() {
        let expect = match (backend, row.ganesha) {
            (Backend::Ganesha, Held::Refused(text)) => Expect::Refused {
                field: "clients[0].host",
                text,
            },
            _ => Expect::Accepted,
        };
        out.push(Case {
            kind: "client",
            label: row.form.to_string(),
            input: fill(row.host),
            sub: format!("c{i}"),
            clients: json!([{"host": fill(row.host), "options": "rw"}]),
            expect,
            shown: Vec::new(),
            failures: Vec::new(),
        });
    }
    for (i, row) in OPTION_ROWS.iter().enumerate() {
        let expect = match (backend, row.ganesha) {
            (Backend::Ganesha, Ganesha::Refused(text)) => Expect::Refused {
                field: "clients[0].options",
                text,
            },
            _ => Expect::Accepted,
        };
        let host = match backend {
            Backend::Knfsd => "*".to_string(),
            Backend::Ganesha => format!("{}.101", net.v4),
        };
        out.push(Case {
            kind: "options",
            label: if row.options.is_empty() {
                "(empty set)".into()
            } else {
                row.options.to_string()
            },
            input: row.options.to_string(),
            sub: format!("o{i}"),
            clients: json!([{"host": host, "options": row.options}]),
            expect,
            shown: Vec::new(),
            failures: Vec::new(),
        });
    }
    out
}

/// Creates every row's two volumes (the PATCHed one with the baseline client), waits, PATCHes,
/// waits; refusals are checked on the spot. The volumes by sub path.
async fn send_rows(env: &Env, cases: &mut [Case]) -> BTreeMap<String, Value> {
    // One verified sign-in first, so the waves reuse it instead of queueing password checks.
    let (s, _) = env
        .req(Method::GET, Some(ALICE), "/api/v1/volumes", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let create = |sub: &str, clients: &Value| {
        (
            Method::POST,
            "/api/v1/volumes".to_string(),
            json!({"root_path_id": 1, "sub_path": sub, "size_gb": 1, "mode": "0777",
                   "clients": clients}),
        )
    };
    let baseline = json!([{"host": BASELINE, "options": "ro"}]);
    let mut reqs = Vec::new();
    for c in cases.iter() {
        reqs.push(create(&c.sub, &c.clients));
        reqs.push(create(&format!("{}-p", c.sub), &baseline));
    }
    let answers = send_all(env, reqs).await;
    for (c, pair) in cases.iter_mut().zip(answers.chunks(2)) {
        let (s, v) = &pair[0];
        check_answer(c, "create", *s, v, None);
        assert_eq!(pair[1].0, StatusCode::ACCEPTED, "{}", pair[1].1);
    }
    let before = settled_volumes(env).await;
    let second = |c: &Case| {
        matches!(
            c.expect,
            Expect::Refused {
                field: "clients[0].host",
                ..
            }
        )
    };
    let reqs = cases
        .iter()
        .map(|c| {
            let id = before[&format!("{}-p", c.sub)]["id"].as_i64().unwrap();
            let mut clients = c.clients.clone();
            if second(c) {
                clients = json!([{"host": "192.0.2.2", "options": "rw"}, clients[0]]);
            }
            (
                Method::PATCH,
                format!("/api/v1/volumes/{id}"),
                json!({ "clients": clients }),
            )
        })
        .collect();
    let answers = send_all(env, reqs).await;
    for (c, (s, v)) in cases.iter_mut().zip(&answers) {
        let field = second(c).then_some(REFUSED_SECOND);
        check_answer(c, "PATCH", *s, v, field);
    }
    let volumes = settled_volumes(env).await;
    for c in cases.iter_mut() {
        let created = volumes.get(&c.sub);
        let patched = &volumes[&format!("{}-p", c.sub)];
        match c.expect {
            Expect::Accepted => {
                for v in [created.unwrap_or(&Value::Null), patched] {
                    if v["state"] != "available" {
                        c.failures.push(format!(
                            "{} is {} ({})",
                            v["sub_path"], v["state"], v["last_error"]
                        ));
                    }
                }
            }
            Expect::Refused { .. } => {
                if created.is_some() {
                    c.failures.push("a refused create was recorded".into());
                }
                if patched["state"] != "available" || patched["clients"][0]["host"] != BASELINE {
                    c.failures
                        .push(format!("a refused PATCH changed the volume: {patched}"));
                }
            }
        }
    }
    volumes
}

/// Whether the answer is what the row expects; a refusal must name `field` if given.
fn check_answer(c: &mut Case, what: &str, s: StatusCode, v: &Value, field: Option<&str>) {
    match c.expect {
        Expect::Accepted => {
            if !matches!(s, StatusCode::ACCEPTED | StatusCode::OK) {
                c.failures.push(format!("{what}: {s} {v}"));
            }
        }
        Expect::Refused { field: own, text } => {
            let field = field.unwrap_or(own);
            let message = v["error"]["message"].as_str().unwrap_or_default();
            // The message names the server kind and the client as nfsprov writes it.
            let names = if c.kind == "client" {
                message.contains(&format!("'{}'", c.input.to_ascii_lowercase()))
            } else {
                true
            };
            if s != StatusCode::BAD_REQUEST
                || v["error"]["field"] != field
                || !message.contains(text)
                || !message.contains("nfs-ganesha")
                || !names
            {
                c.failures.push(format!(
                    "{what}: expected 400 naming {field} with {text:?}, got {s} {v}"
                ));
            }
        }
    }
}

/// The matrix's summary for one backend, written where `scripts/test.sh` prints it from.
fn write_summary(backend: Backend, cases: &[Case], extra: &[String]) {
    let count = |kind: &str, refused: bool| {
        cases
            .iter()
            .filter(|c| c.kind == kind && matches!(c.expect, Expect::Refused { .. }) == refused)
            .count()
    };
    let failed = cases.iter().filter(|c| !c.failures.is_empty()).count();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {} client-form rows and {} option-set rows (a form with fixed options, an option set with a fixed client), each on create and on PATCH: \
         client forms {} available / {} refused (400), option sets {} available / {} refused (400); {} failed",
        backend.name(),
        count("client", false) + count("client", true),
        count("options", false) + count("options", true),
        count("client", false),
        count("client", true),
        count("options", false),
        count("options", true),
        failed,
    );
    for c in cases {
        let verdict = match c.expect {
            Expect::Accepted => "available".to_string(),
            Expect::Refused { field, text } => format!("400 {field}: {text}"),
        };
        let status = if c.failures.is_empty() {
            "ok"
        } else {
            "FAILED"
        };
        let _ = writeln!(
            s,
            "  {status:<6} {:<8}{:<40} {verdict:<26} {}",
            c.kind,
            c.label,
            c.shown.join("; ")
        );
        for f in &c.failures {
            let _ = writeln!(s, "           ! {f}");
        }
    }
    for e in extra {
        let _ = writeln!(s, "  {e}");
    }
    let path = summary_path(backend);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &s).unwrap();
    println!("{s}");
    let failures: Vec<String> = cases
        .iter()
        .flat_map(|c| c.failures.iter().map(move |f| format!("{}: {f}", c.label)))
        .chain(extra.iter().filter(|e| e.starts_with("FAILED")).cloned())
        .collect();
    assert!(
        failures.is_empty(),
        "{} matrix rows failed (summary in {}):\n{}",
        backend.name(),
        path.display(),
        failures.join("\n")
    );
}

/// hootie's create with several `allowed_hosts`; waits until it is available. Its path.
async fn hootie_create(env: &Env, allowed: &str) -> Result<String, String> {
    let (s, v) = env
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1.0/volumes/",
            Some(json!({"options": "rw,no_root_squash", "root_path": 1, "sub_path": "hootie", "size_GB": 1,
                        "allowed_hosts": allowed})),
        )
        .await;
    if !matches!(s, StatusCode::CREATED | StatusCode::ACCEPTED) {
        return Err(format!("hootie create: {s} {v}"));
    }
    let id = v["pk"].as_i64().unwrap();
    let v = env
        .wait_volume(id, Duration::from_secs(60), |v| v["state"] != "creating")
        .await;
    if v["state"] != "available" {
        return Err(format!("hootie volume: {v}"));
    }
    Ok(format!("{POOL}/hootie"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knfsd_matrix() {
    let env = Env::start(1, 100_000, 100_000).await;
    let net = KNFSD_NET.v4;
    // Names a ganesha server refuses must resolve here, or precheck would hold them back.
    let hosts = env.server("srv1").host_path("/etc/hosts");
    let mut text = std::fs::read_to_string(&hosts).unwrap();
    text.push_str("127.0.0.21\t1host.example\n127.0.0.22\ton\n");
    std::fs::write(&hosts, text).unwrap();
    let mut cases = cases(Backend::Knfsd, KNFSD_NET);
    send_rows(&env, &mut cases).await;
    let hootie = hootie_create(&env, &HOOTIE_ALLOWED_HOSTS.replace("{net}", net)).await;
    let etab = env.server("srv1").etab().unwrap();
    for c in cases.iter_mut() {
        if !matches!(c.expect, Expect::Accepted) {
            continue;
        }
        let (want_client, has, lacks): (String, &[&str], &[&str]) = match c.kind {
            "client" => {
                let row = CLIENT_ROWS.iter().find(|r| r.form == c.label).unwrap();
                (KNFSD_NET.fill(row.etab), &["rw"], &[])
            }
            _ => {
                let row = OPTION_ROWS.iter().find(|r| r.options == c.input).unwrap();
                ("*".into(), row.etab, row.not_etab)
            }
        };
        for sub in [c.sub.clone(), format!("{}-p", c.sub)] {
            let entries = etab_entries(&etab, &format!("{POOL}/{sub}"));
            let [entry] = entries.as_slice() else {
                c.failures.push(format!(
                    "{sub}: etab has {} lines: {entries:?}",
                    entries.len()
                ));
                continue;
            };
            let Some((client, options)) = entry.strip_suffix(')').and_then(|e| e.split_once('('))
            else {
                c.failures.push(format!("{sub}: etab line {entry:?}"));
                continue;
            };
            let tokens: Vec<&str> = options.split(',').collect();
            if client != want_client {
                c.failures.push(format!(
                    "{sub}: etab client {client}, expected {want_client}"
                ));
            }
            let missing: Vec<_> = has.iter().filter(|t| !tokens.contains(t)).collect();
            let extra: Vec<_> = lacks.iter().filter(|t| tokens.contains(t)).collect();
            if !missing.is_empty() || !extra.is_empty() {
                c.failures.push(format!(
                    "{sub}: etab {entry} lacks {missing:?} / holds {extra:?}"
                ));
            }
            if sub == c.sub {
                c.shown.push(if c.kind == "client" {
                    format!("etab {client}")
                } else {
                    format!("etab {}", has.join(","))
                });
            }
        }
    }
    let extra = match hootie {
        Ok(path) => {
            let mut got: Vec<String> = etab_entries(&etab, &path)
                .iter()
                .filter_map(|e| e.split_once('(').map(|(c, _)| c.to_string()))
                .collect();
            got.sort();
            let mut want: Vec<String> = HOOTIE_ETAB
                .iter()
                .map(|c| c.replace("{net}", net))
                .collect();
            want.sort();
            if got == want {
                format!(
                    "ok     hootie  allowed_hosts {:?}: available, etab {}",
                    HOOTIE_ALLOWED_HOSTS.replace("{net}", net),
                    got.join(" ")
                )
            } else {
                format!("FAILED hootie allowed_hosts: etab {got:?}, expected {want:?}")
            }
        }
        Err(e) => format!("FAILED hootie allowed_hosts: {e}"),
    };
    write_summary(Backend::Knfsd, &cases, &[extra]);
}

/// Client host `who` (`client1` over IPv4, `client1/ipv6` over IPv6 to the server's IPv6
/// address) writes a file into the volume at `path` over NFS version `v`: when `allowed`, the
/// file must be on the server with what was written; else the write must be refused for access
/// (v4 hides an export a client may not see in its pseudo file system).
fn data_access(nfs: &Nfs, path: &str, who: &str, v: u8, allowed: bool) -> Result<(), String> {
    let (host, over) = match who.split_once('/') {
        Some((host, "ipv6")) => (host, "ipv6"),
        _ => (who, "ipv4"),
    };
    // libnfs 4.0 takes a bare IPv6 host in its URL: `nfs://[fd00::1]/...` fails to resolve.
    let via = Nfs {
        env: nfs.env,
        addr: match over {
            "ipv6" => nfs
                .env
                .server("srv1")
                .nfs_addr6
                .clone()
                .expect("IPv6 address"),
            _ => nfs.addr.clone(),
        },
    };
    let file = format!("{path}/by-{host}-{over}-v{v}");
    let content = format!("{who} over v{v}");
    let r = via.write(host, &file, v, &content, "");
    let on_server = std::fs::read_to_string(nfs.env.server("srv1").host_path(&file)).ok();
    match (allowed, r) {
        (true, Ok(())) if on_server.as_deref() == Some(content.as_str()) => Ok(()),
        (true, r) => Err(format!(
            "{who} may write over v{v}: {r:?}, on the server {on_server:?}"
        )),
        (false, Err(e))
            if on_server.is_none()
                && (e.contains("MNT3ERR_ACCES")
                    || e.contains("NFS4ERR_ACCESS")
                    || e.contains("NFS4ERR_NOENT")) =>
        {
            Ok(())
        }
        (false, r) => Err(format!(
            "{who} must be refused over v{v}: {r:?}, on the server {on_server:?}"
        )),
    }
}

/// Expected live entries of a client row on ganesha, `None` for a refused one.
fn ganesha_entries(c: &Case, net: Net) -> (Vec<String>, Option<&'static str>) {
    if c.kind == "client" {
        let row = CLIENT_ROWS.iter().find(|r| r.form == c.label).unwrap();
        let Held::Entries(e) = row.ganesha else {
            unreachable!()
        };
        (
            e.iter().map(|e| net.fill(e)).collect(),
            Some(CLIENT_ROW_GANESHA),
        )
    } else {
        let row = OPTION_ROWS.iter().find(|r| r.options == c.input).unwrap();
        let Ganesha::Holds(access) = row.ganesha else {
            unreachable!()
        };
        (vec![format!("{}.101/32", net.v4)], Some(access))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ganesha_matrix() {
    let env = Env::start_ganesha(1, 3, 100_000, 100_000).await;
    let c1 = env.tb.client("client1").unwrap();
    let net = c1.addr.rsplit_once('.').unwrap().0.to_string();
    assert_eq!(c1.addr, format!("{net}.101"));
    let c1_6 = c1.addr6.clone().expect("client1 has an IPv6 address");
    let net6 = c1_6
        .strip_suffix("::101")
        .expect("client1 is ::101")
        .to_string();
    let nets = Net {
        v4: &net,
        v6: &net6,
    };
    // Before any client asks: ganesha caches innetgr's answers.
    env.server("srv1").set_netgroups(NETGROUPS).unwrap();
    let mut cases = cases(Backend::Ganesha, nets);
    send_rows(&env, &mut cases).await;
    let hootie = hootie_create(&env, &HOOTIE_ALLOWED_HOSTS.replace("{net}", &net)).await;
    let nfs = Nfs::new(&env);
    let srv = env.server("srv1");
    for c in cases.iter_mut() {
        if !matches!(c.expect, Expect::Accepted) {
            continue;
        }
        let (want, access) = ganesha_entries(c, nets);
        for sub in [c.sub.clone(), format!("{}-p", c.sub)] {
            let path = format!("{POOL}/{sub}");
            match live_entries(&env, "srv1", &path) {
                Err(e) => c.failures.push(format!("{sub}: {e}")),
                Ok(live) => {
                    let names: Vec<String> = live.iter().map(|e| e.name.clone()).collect();
                    let got: Vec<String> = live.iter().map(|e| e.describe()).collect();
                    if names != want || got.iter().any(|a| Some(a.as_str()) != access) {
                        c.failures.push(format!(
                            "{sub}: live entries {names:?} {got:?}, expected {want:?} {access:?}"
                        ));
                    }
                    if sub == c.sub {
                        c.shown
                            .push(format!("live {} {}", names.join(","), got.join(",")));
                    }
                }
            }
            // Data: who gets in (client rows), what owners writes leave (option rows).
            if c.kind == "client" {
                let row = CLIENT_ROWS.iter().find(|r| r.form == c.label).unwrap();
                let mut seen = Vec::new();
                for (who, allowed) in row.access {
                    let mut ok = true;
                    for v in [3, 4] {
                        if let Err(e) = data_access(&nfs, &path, who, v, *allowed) {
                            c.failures.push(format!("{sub}: {e}"));
                            ok = false;
                        }
                    }
                    if ok {
                        seen.push(format!("{who} {}", if *allowed { "in" } else { "out" }));
                    }
                }
                if sub == c.sub && !seen.is_empty() {
                    c.shown.push(format!("v3+v4 {}", seen.join(", ")));
                }
            } else {
                let row = OPTION_ROWS.iter().find(|r| r.options == c.input).unwrap();
                match row.writes {
                    Writes::Untried => {}
                    Writes::ReadOnly => {
                        match nfs.write("client1", &format!("{path}/x"), 3, "x", "") {
                            Err(e) if e.contains("ROFS") => {
                                if sub == c.sub {
                                    c.shown.push("write refused ROFS".into());
                                }
                            }
                            r => c
                                .failures
                                .push(format!("{sub}: a write must be refused read-only: {r:?}")),
                        }
                    }
                    Writes::Owners {
                        root,
                        user,
                        unprivileged,
                    } => {
                        use std::os::unix::fs::MetadataExt;
                        let mut owners = Vec::new();
                        for (name, extra, want) in
                            [("root", "", root), ("user", "&uid=1000&gid=1001", user)]
                        {
                            let file = format!("{path}/by-{name}");
                            if let Err(e) = nfs.write("client1", &file, 3, name, extra) {
                                c.failures.push(format!("{sub}: write as {name}: {e}"));
                                continue;
                            }
                            let md = std::fs::metadata(srv.host_path(&file)).unwrap();
                            if (md.uid(), md.gid()) != want {
                                c.failures.push(format!(
                                    "{sub}: a file written by {name} is owned by {}:{}, expected {}:{}",
                                    md.uid(),
                                    md.gid(),
                                    want.0,
                                    want.1
                                ));
                            }
                            owners.push(format!("{name} writes {}:{}", md.uid(), md.gid()));
                        }
                        // libnfs run as a user binds an unprivileged port.
                        let r =
                            nfs.write_unprivileged("client1", &format!("{path}/by-port"), 3, "u");
                        match (unprivileged, r) {
                            (true, Ok(())) => owners.push("unprivileged port in".into()),
                            (false, Err(e)) if e.contains("Failed to mount") => {
                                owners.push("unprivileged port out".into())
                            }
                            (_, r) => c.failures.push(format!(
                                "{sub}: a write from an unprivileged port must {}: {r:?}",
                                if unprivileged { "work" } else { "be refused" }
                            )),
                        }
                        if sub == c.sub {
                            c.shown.push(owners.join(", "));
                        }
                    }
                }
            }
        }
    }
    let extra = match hootie {
        Ok(path) => match live_entries(&env, "srv1", &path) {
            Ok(live) => {
                let names: Vec<String> = live.iter().map(|e| e.name.clone()).collect();
                let want: Vec<String> = HOOTIE_GANESHA
                    .iter()
                    .map(|c| c.replace("{net}", &net))
                    .collect();
                let mut problems = Vec::new();
                if names != want {
                    problems.push(format!("live entries {names:?}, expected {want:?}"));
                }
                for (who, allowed) in HOOTIE_ACCESS {
                    for v in [3, 4] {
                        if let Err(e) = data_access(&nfs, &path, who, v, *allowed) {
                            problems.push(e);
                        }
                    }
                }
                if problems.is_empty() {
                    format!(
                        "ok     hootie  allowed_hosts {:?}: available, live {}; v3+v4 client1, client2 in, client3 out",
                        HOOTIE_ALLOWED_HOSTS.replace("{net}", &net),
                        names.join(",")
                    )
                } else {
                    format!("FAILED hootie allowed_hosts: {}", problems.join("; "))
                }
            }
            Err(e) => format!("FAILED hootie allowed_hosts: {e}"),
        },
        Err(e) => format!("FAILED hootie allowed_hosts: {e}"),
    };
    write_summary(Backend::Ganesha, &cases, &[extra]);
}

/// What the real ganesha makes of the two IPv6 client forms nfsprov refuses for it, written by
/// hand into its config (no nfsprov involved), so the refusals rest on ganesha's behaviour:
/// `::ffff:<client1's IPv4>` is held but matches client1 neither over IPv4 (ganesha compares
/// the IPv4 peers of its dual-stack socket as IPv4) nor over IPv6; `::/0` is a config error.
/// Exports for client1's own IPv4 and IPv6 addresses show the probe can succeed.
#[test]
fn ganesha_ipv4_mapped_and_zero_prefix_on_the_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let tb = TestbedGuard(Testbed::up_ganesha(&dir.path().join("tb"), 1, 1).unwrap());
    let srv = tb.server("srv1").unwrap();
    let client = tb.client("client1").unwrap();
    let c6 = client.addr6.clone().unwrap();
    let (s4, s6) = (
        srv.nfs_addr.clone().unwrap(),
        srv.nfs_addr6.clone().unwrap(),
    );
    let exports = [
        ("mapped", format!("::ffff:{}", client.addr)),
        ("own4", client.addr.clone()),
        ("own6", c6.clone()),
    ];
    let mut conf = String::new();
    for (i, (name, clients)) in exports.iter().enumerate() {
        let path = format!("{POOL}/{name}");
        let out = srv
            .run_inside(&format!("mkdir -p {path} && chmod 777 {path}"))
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let _ = writeln!(
            conf,
            "EXPORT {{ Export_Id = {}; Path = \"{path}\"; Pseudo = \"{path}\"; Protocols = 3, 4; \
             Transports = TCP; Access_Type = None; FSAL {{ Name = VFS; }}\n\
             \tCLIENT {{ Clients = {clients}; Access_Type = RW; }}\n}}",
            i + 1
        );
    }
    let reread = ganesha_reload(srv, &conf);
    assert!(
        !reread.contains("CRIT"),
        "ganesha refused the probe:\n{reread}"
    );
    // It spells the address in hex groups: ::ffff:a.b.c.d is ::ffff:<ab>:<cd>.
    let o: std::net::Ipv4Addr = client.addr.parse().unwrap();
    let [a, b, c, d] = o.octets().map(u16::from);
    let held = format!(
        "NETWORK_CLIENT: ::ffff:{:x}:{:x}/128",
        a << 8 | b,
        c << 8 | d
    );
    assert!(
        reread.contains(&held),
        "ganesha does not hold the IPv4-mapped client as {held:?}:\n{reread}"
    );
    let local = dir.path().join("upload");
    std::fs::write(&local, "probe").unwrap();
    let mut got = Vec::new();
    for (name, _) in &exports {
        for server in [&s4, &s6] {
            for v in [3, 4] {
                let url = format!(
                    "nfs://{server}{POOL}/{name}/f-{v}-{}?version={v}",
                    got.len()
                );
                let out = client
                    .run(&["nfs-cp", local.to_str().unwrap(), &url])
                    .unwrap();
                got.push((*name, server.as_str(), v, out.status.success()));
            }
        }
    }
    let want: Vec<_> = got
        .iter()
        .map(|&(name, server, v, _)| {
            let own = (name == "own4" && server == s4) || (name == "own6" && server == s6);
            (name, server, v, own)
        })
        .collect();
    assert_eq!(
        got, want,
        "(export, server address, version, client1 got in)"
    );
    let reread = ganesha_reload(
        srv,
        &format!(
            "EXPORT {{ Export_Id = 9; Path = \"{POOL}/own4\"; Pseudo = \"{POOL}/own4\"; \
             Access_Type = None; FSAL {{ Name = VFS; }}\n\tCLIENT {{ Clients = ::/0; Access_Type = RW; }}\n}}\n"
        ),
    );
    assert!(
        reread.contains("nfsprov.conf:2): Syntax error"),
        "ganesha took ::/0:\n{reread}"
    );
    let summary = format!(
        "ganesha itself (config written by hand, no nfsprov), the forms nfsprov refuses for it:\n  \
         ok     ::ffff:{} held as {}, client1 out over IPv4 and IPv6 (v3+v4); \
         exports for client1's own {} and {} let it in\n  \
         ok     ::/0 a syntax error (nfsprov.conf:2)\n",
        client.addr,
        held.trim_start_matches("NETWORK_CLIENT: "),
        client.addr,
        c6
    );
    let path = summary_path_named("ganesha-probe");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &summary).unwrap();
    println!("{summary}");
}

/// Writes ganesha's `nfsprov.conf` and SIGHUPs it; what it logged until the reread was done.
fn ganesha_reload(srv: &TestbedServer, conf: &str) -> String {
    let log = srv.ganesha_log();
    let start = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) as usize;
    std::fs::write(srv.ganesha_conf_dir().join("nfsprov.conf"), conf).unwrap();
    let out = srv
        .run_inside("kill -HUP \"$(cat /run/ganesha/ganesha.pid)\"")
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read(&log).unwrap_or_default();
        let text = String::from_utf8_lossy(&text[start.min(text.len())..]).into_owned();
        if text.contains("Reread exports complete") {
            return text;
        }
        assert!(Instant::now() < deadline, "no reread logged:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
