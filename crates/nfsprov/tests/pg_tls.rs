//! TLS from nfsprov to PostgreSQL: the test bed's PostgreSQL with `ssl = on`, a certificate
//! for 127.0.0.1 signed by a test CA, and a `pg_hba.conf` that rejects TCP without TLS
//! (`Postgres::start_tls`), so whatever gets in spoke TLS. A node with
//! `sslmode=verify-full&sslrootcert=<ca>` serves and records a create (its pools and its
//! change listener all on TLS); a CA that did not sign the server's certificate, a
//! certificate that does not name the host of the URL, or `sslmode=disable`, stops
//! `nfsprov serve` at start-up with the cause and what to set, never the password;
//! `nfsprov db migrate-to` copies into the TLS server.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nfsprov_testbed::postgres::{PASSWORD, Postgres};
use nfsprov_testbed::proxy::TcpProxy;
use reqwest::StatusCode;
use serde_json::json;

async fn start_tls_postgres() -> Postgres {
    tokio::task::spawn_blocking(Postgres::start_tls)
        .await
        .unwrap()
        .expect("PostgreSQL with TLS starts")
}

/// `nfsprov serve` on `url`, its data in `dir/<name>`, its standard error in `dir/<name>.err`.
fn spawn_serve(url: &str, dir: &Path, name: &str) -> (Child, PathBuf) {
    let err_path = dir.join(format!("{name}.err"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(nfsprov_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("NFSPROV_DATA_DIR", dir.join(name))
        .env("NFSPROV_LOG", "info")
        .env(DATABASE_URL_ENV, url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn nfsprov serve");
    (child, err_path)
}

/// `nfsprov serve` on `url` with an empty data directory, expected to give up at start-up:
/// its exit status's success and its standard error.
fn serve_until_it_exits(url: &str, dir: &Path) -> (bool, String) {
    let (mut child, err_path) = spawn_serve(url, dir, "serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "nfsprov serve still runs 30 s after start: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.success(),
        std::fs::read_to_string(&err_path).unwrap(),
    )
}

/// Tables in nfsprov's database: none when nothing got in.
fn tables(pg: &Postgres) -> String {
    pg.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_with_the_servers_ca_serves_and_records_a_create_over_tls() {
    let env = Env::start_nodes(1, 1, 100, 50, Database::PostgresTls, &[]).await;
    let url = env.database_url.clone().unwrap();
    assert!(url.contains("sslmode=verify-full&sslrootcert="), "{url}");

    let id = env
        .create_available("over-tls", json!([{"host": "127.0.0.1", "options": "rw"}]))
        .await;
    let pg = env.pg.as_ref().unwrap();
    assert_eq!(
        pg.query(&format!(
            "SELECT sub_path, state FROM volumes WHERE id = {id}"
        ))
        .unwrap()
        .trim(),
        "over-tls|available"
    );
    // The node's sessions, the change listener's among them (`LISTEN`, on the main pool's
    // options), are TLS; `pg_hba.conf` would have rejected any other.
    let sessions = |filter: &str| {
        pg.query(&format!(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.usename = 'nfsprov' AND {filter}"
        ))
        .unwrap()
        .trim()
        .parse::<usize>()
        .unwrap()
    };
    assert!(sessions("s.ssl") >= 2, "{}", env.log());
    assert_eq!(sessions("NOT s.ssl"), 0);
    assert_eq!(
        sessions("s.ssl AND a.query LIKE 'LISTEN%'"),
        1,
        "{}",
        env.log()
    );
    // The leases' own pool renews over TLS too: the lease's expiry moves on.
    let expiry = || {
        pg.query("SELECT expires_at FROM server_leases WHERE server_id = 1")
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    let first = expiry();
    let deadline = Instant::now() + Duration::from_secs(60);
    while expiry() <= first {
        assert!(
            Instant::now() < deadline,
            "server 1's lease not renewed in 60 s: {}",
            env.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_not_signed_by_the_given_ca_stops_serve_at_start_up() {
    let pg = start_tls_postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = pg.ca_file().unwrap().display().to_string();
    let other = pg.other_ca_file().unwrap().display().to_string();
    let url = pg.url().replace(&ca, &other);
    assert!(url.contains(&other), "{url}");

    let (ok, err) = serve_until_it_exits(&url, dir.path());
    assert!(!ok, "{err}");
    assert!(
        err.contains(&format!(
            "the certificate of the PostgreSQL server 127.0.0.1:{} was not trusted",
            pg.port
        )) && err.contains("sslrootcert")
            && err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");
    // Closed: nothing was written (no migration ran on an unverified server).
    assert_eq!(tables(&pg), "0");
}

/// A server reached under a name its certificate does not list (a man in the middle holding a
/// certificate the same CA signed for another host looks the same): `verify-full` stops
/// `serve` at start-up naming the name and the way out, and writes nothing; `verify-ca`, which
/// checks the CA only, gets in through the same path (so it was the name that was refused).
#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_for_another_name_stops_verify_full_and_verify_ca_gets_in() {
    let pg = start_tls_postgres().await;
    // The certificate lists 127.0.0.1 and localhost; 127.0.0.2 reaches the same server.
    let proxy = TcpProxy::start_on(
        std::net::Ipv4Addr::new(127, 0, 0, 2),
        ([127, 0, 0, 1], pg.port).into(),
    )
    .unwrap();
    let url = pg.url().replace(
        &format!("@127.0.0.1:{}/", pg.port),
        &format!("@{}/", proxy.addr()),
    );
    assert!(url.contains("@127.0.0.2:"), "{url}");
    let dir = tempfile::tempdir().unwrap();

    let (ok, err) = serve_until_it_exits(&url, dir.path());
    assert!(!ok, "{err}");
    assert!(
        err.contains(&format!(
            "the certificate of the PostgreSQL server {} is not valid for the name \"127.0.0.2\"",
            proxy.addr()
        )) && err.contains("sslmode=verify-ca"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");
    assert_eq!(tables(&pg), "0");

    // verify-ca through the same proxy: in, and nfsprov's tables appear.
    let url = url.replace("sslmode=verify-full", "sslmode=verify-ca");
    let (mut child, err_path) = spawn_serve(&url, dir.path(), "serve-ca");
    let deadline = Instant::now() + Duration::from_secs(60);
    let outcome = loop {
        if tables(&pg) != "0" {
            break Ok(());
        }
        if let Some(status) = child.try_wait().unwrap() {
            break Err(format!("serve exited ({status})"));
        }
        if Instant::now() > deadline {
            break Err("no tables after 60 s".to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(outcome.is_ok(), "{outcome:?}: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sslmode_disable_is_refused_by_a_tls_only_server_with_what_to_set() {
    let pg = start_tls_postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url().replace("sslmode=verify-full", "sslmode=disable");

    let (ok, err) = serve_until_it_exits(&url, dir.path());
    assert!(!ok, "{err}");
    assert!(
        err.contains(&format!(
            "the PostgreSQL server 127.0.0.1:{} accepts only TLS connections",
            pg.port
        )) && err.contains("set sslmode=verify-full and sslrootcert")
            && err.contains("no encryption"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");
    assert_eq!(tables(&pg), "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_to_copies_into_a_tls_server_and_serves_from_it() {
    let mut env = Env::start_nodes(1, 1, 100, 50, Database::Sqlite, &[]).await;
    let id = env
        .create_available("moved", json!([{"host": "127.0.0.1", "options": "rw"}]))
        .await;
    env.kill_node(0);
    let pg = start_tls_postgres().await;
    let url = pg.url();

    let plain = url.replace("sslmode=verify-full", "sslmode=disable");
    let out = env.cli(&["db", "migrate-to", &plain]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("accepts only TLS connections"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");

    let out = env.cli(&["db", "migrate-to", &url]);
    let (printed, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{err}");
    assert!(
        !printed.contains(PASSWORD) && !err.contains(PASSWORD),
        "{printed}{err}"
    );
    assert_eq!(
        pg.query(&format!("SELECT sub_path FROM volumes WHERE id = {id}"))
            .unwrap()
            .trim(),
        "moved"
    );

    env.database_url = Some(url.clone());
    env.start_node(0, &[(DATABASE_URL_ENV, &url)]).await;
    env.wait_servers_reachable().await;
    assert_eq!(env.volume(id).await["state"], "available");
    let (s, v) = env
        .create(
            ALICE,
            1,
            "after-move",
            1,
            json!([{"host": "127.0.0.1", "options": "rw"}]),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let new_id = v["id"].as_i64().unwrap();
    assert_eq!(
        pg.query(&format!("SELECT sub_path FROM volumes WHERE id = {new_id}"))
            .unwrap()
            .trim(),
        "after-move"
    );
}
