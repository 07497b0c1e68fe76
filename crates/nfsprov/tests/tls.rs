//! `nfsprov serve` over TLS, and its refusal of plain HTTP off loopback. The real binary,
//! a certificate made for the test (rcgen), and a rustls client: an HTTPS request is
//! answered, a plain HTTP one on the same port is not. Needs no root and no server: part of
//! the fast tier. (Plain HTTP on loopback is what every e2e test and the demo use.)

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls;

/// Start `nfsprov serve` on `listen` with only `env` among the `NFSPROV_*` variables.
fn serve(data_dir: &Path, listen: &str, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nfsprov"));
    for (k, _) in std::env::vars() {
        if k.starts_with("NFSPROV_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(["serve", "--listen", listen])
        .env("NFSPROV_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting nfsprov serve")
}

struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The address `child` says it listens on (its "listening on https://ADDR" line), within 20 s;
/// panics with its output if it exits or says nothing of the kind.
fn listening_on(child: &mut Child, scheme: &str) -> String {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    let marker = format!("listening on {scheme}://");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some((_, addr)) = line.split_once(&marker) {
                    return addr.trim().to_string();
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(_) => panic!("no `{marker}` line within 20 s: {seen}"),
        }
    }
}

/// One `GET /api/v1/health` over `stream`; what came back (empty if the connection closed).
async fn health<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S) -> String {
    let req = "GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if stream.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "no answer within 20 s");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn https_is_served_with_the_configured_certificate_and_plain_http_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let mut child = serve(
        &dir.path().join("data"),
        "127.0.0.1:0",
        &[
            ("NFSPROV_TLS_CERT", cert.to_str().unwrap()),
            ("NFSPROV_TLS_KEY", key.to_str().unwrap()),
        ],
    );
    let addr = listening_on(&mut child, "https");
    let _serving = Serving(child);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(made.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let answer = health(tls).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let answer = health(tcp).await;
    assert!(
        !answer.starts_with("HTTP/"),
        "plain HTTP was answered on the TLS port: {answer}"
    );
}

/// Wait up to 20 s for `child` to exit; its status and standard error.
fn exit_of(mut child: Child) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nfsprov serve still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

#[test]
fn plain_http_off_loopback_or_a_bad_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Refused before it binds, so nothing listens on other addresses even for a moment.
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let (status, stderr) = exit_of(serve(&data, listen, &[]));
        assert!(!status.success(), "{listen}: {status}");
        assert!(
            stderr.contains("refusing to serve plain HTTP")
                && stderr.contains("NFSPROV_TLS_CERT")
                && stderr.contains("NFSPROV_ALLOW_PLAIN_HTTP"),
            "{listen}: {stderr}"
        );
        assert!(!data.exists(), "{listen}: the data directory was created");
    }
    // A certificate file without a certificate, and a key without its certificate.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let (status, stderr) = exit_of(serve(
        &data,
        "127.0.0.1:0",
        &[
            ("NFSPROV_TLS_CERT", empty.to_str().unwrap()),
            ("NFSPROV_TLS_KEY", empty.to_str().unwrap()),
        ],
    ));
    assert!(!status.success());
    assert!(stderr.contains("NFSPROV_TLS_CERT"), "{stderr}");
    let (status, stderr) = exit_of(serve(
        &data,
        "127.0.0.1:0",
        &[("NFSPROV_TLS_KEY", empty.to_str().unwrap())],
    ));
    assert!(!status.success());
    assert!(stderr.contains("--tls-cert"), "{stderr}");
}
