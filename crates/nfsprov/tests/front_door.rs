//! The HTTP front door under attack, against the real `nfsprov serve`: idle and slow-header
//! connections, half-sent and oversized bodies, password floods, cross-site content types and
//! oversized headers. Attackers connect from other loopback addresses (127.0.0.x) than the
//! legitimate client (127.0.0.1), as they would from other hosts.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(ip: &str, port: u16) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    sock.connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap()
}

/// Whether the server closes `s` within `within` (anything it sends first is read and dropped).
async fn closed_by_server(mut s: TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let read_to_end = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_to_end).await.is_ok()
}

/// The response (status line, headers, body so far) the server sends on `s` within `within`.
async fn response_within(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
        }
    }
    (!got.is_empty()).then(|| String::from_utf8_lossy(&got).into_owned())
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

fn body_of(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.into()))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn basic(user: (&str, &str)) -> String {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", user.0, user.1));
    format!("Basic {b}")
}

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// A health check and an authenticated listing from a fresh connection; how long both took.
async fn fresh_requests_answer(env: &Env) -> Duration {
    let t = Instant::now();
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/api/v1/health", env.base()))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .get(format!("{}/api/v1/volumes", env.base()))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    t.elapsed()
}

/// Most open fds seen in `pid` over `during`.
async fn peak_fds(pid: u32, during: Duration) -> usize {
    let end = Instant::now() + during;
    let mut peak = 0;
    while Instant::now() < end {
        peak = peak.max(open_fds(pid));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_header_connections_are_capped_and_closed() {
    let mut env = Env::start(1, 100, 10).await;
    env.restart_with(&[
        ("NFSPROV_HEADER_TIMEOUT_SECS", "2"),
        ("NFSPROV_MAX_CONNECTIONS_PER_IP", "40"),
        ("NFSPROV_MAX_CONNECTIONS", "100"),
    ])
    .await;
    let pid = env.serve.as_ref().unwrap().id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let nofile: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        nofile[3], nofile[4],
        "soft open-file limit raised to hard: {limits}"
    );
    // Let start-up settle (SSH session, database pool) before counting.
    fresh_requests_answer(&env).await;
    let baseline = open_fds(pid);

    // One address: 150 idle connections and 150 that send half a header.
    let mut conns = Vec::new();
    for i in 0..300 {
        let mut s = connect_from("127.0.0.2", env.port).await;
        if i % 2 == 1 {
            // The write may fail if the server already closed it (over the per-address cap).
            let _ = s
                .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
                .await;
        }
        conns.push(s);
    }
    let peak = peak_fds(pid, Duration::from_millis(500)).await;
    assert!(
        peak <= baseline + 40 + 5,
        "one address holds {} fds (baseline {baseline})",
        peak - baseline
    );
    let took = fresh_requests_answer(&env).await;
    assert!(
        took < Duration::from_secs(10),
        "fresh requests took {took:?}"
    );
    // Every one of them is closed by the server: over the cap at once, the rest after the
    // header timeout.
    let t = Instant::now();
    let closed = futures_util::future::join_all(
        conns
            .into_iter()
            .map(|s| closed_by_server(s, Duration::from_secs(20))),
    )
    .await;
    assert!(closed.iter().all(|c| *c), "idle connections left open");
    assert!(t.elapsed() < Duration::from_secs(20));

    // A kept-alive connection that goes idle after a request is closed after the same timeout.
    let mut s = connect_from("127.0.0.8", env.port).await;
    s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = response_within(&mut s, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(closed_by_server(s, Duration::from_secs(20)).await);

    // Many addresses, 200 connections against a cap of 100: the rest wait in the backlog, and
    // a fresh client is served once idle ones time out.
    let mut conns = Vec::new();
    for i in 0..200 {
        conns.push(connect_from(&format!("127.0.0.{}", 3 + i % 5), env.port).await);
    }
    let peak = peak_fds(pid, Duration::from_millis(500)).await;
    assert!(
        peak <= baseline + 100 + 5,
        "{} fds held over the cap of 100 connections",
        peak - baseline
    );
    let took = fresh_requests_answer(&env).await;
    assert!(
        took < Duration::from_secs(15),
        "fresh requests took {took:?}"
    );
    let closed = futures_util::future::join_all(
        conns
            .into_iter()
            .map(|s| closed_by_server(s, Duration::from_secs(30))),
    )
    .await;
    assert!(closed.iter().all(|c| *c), "idle connections left open");
    assert!(fresh_requests_answer(&env).await < Duration::from_secs(10));
}

/// Headers for a POST of `len` bytes of JSON to `path`.
fn post_head(path: &str, len: usize, auth: Option<&str>) -> String {
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}Content-Length: {len}\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_bounded_and_unauthenticated_ones_never_read() {
    let mut env = Env::start(1, 100, 10).await;
    env.restart_with(&[("NFSPROV_BODY_TIMEOUT_SECS", "2")])
        .await;

    // 100 half-sent 2 MB bodies without (or with wrong) credentials: each is answered 401 at
    // once, without the server waiting for the rest.
    let wrong = basic((ALICE.0, "not-her-password"));
    let attacks = (0..100).map(|i| {
        let port = env.port;
        let wrong = wrong.clone();
        async move {
            let mut s = connect_from("127.0.0.2", port).await;
            let path = if i % 3 == 2 {
                "/api/v1.0/volumes/"
            } else {
                "/api/v1/volumes"
            };
            let auth = (i % 3 == 1).then_some(wrong.as_str());
            s.write_all(post_head(path, 2_000_000, auth).as_bytes())
                .await
                .unwrap();
            s.write_all(&[b' '; 64 * 1024]).await.unwrap();
            let r = response_within(&mut s, Duration::from_secs(10)).await;
            (i, r)
        }
    });
    for (i, r) in futures_util::future::join_all(attacks).await {
        let r = r.unwrap_or_else(|| panic!("attack {i}: no answer while its body is unsent"));
        assert_eq!(status_of(&r), 401, "{r}");
    }

    // A body over the limit (1 MiB by default) from a signed-in user: 413 in JSON, by its
    // declared length and when it is sent in chunks.
    let big = json!({"root_path_id": 1, "sub_path": "x".repeat(1_500_000), "size_gb": 1,
                     "clients": [{"host": "*"}]});
    let (s, v) = env
        .req(Method::POST, Some(ALICE), "/api/v1/volumes", Some(big))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["error"]["code"], "payload_too_large", "{v}");
    let mut s = connect_from("127.0.0.1", env.port).await;
    let head = format!(
        "POST /api/v1/volumes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        basic(ALICE)
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 256 * 1024];
    for _ in 0..6 {
        let sent = async {
            s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            s.write_all(&chunk).await?;
            s.write_all(b"\r\n").await
        };
        if sent.await.is_err() {
            break; // the server answered and closed
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let r = response_within(&mut s, Duration::from_secs(10))
        .await
        .expect("an answer to a chunked body over the limit");
    assert_eq!(status_of(&r), 413, "{r}");
    assert_eq!(body_of(&r)["error"]["code"], "payload_too_large", "{r}");

    // A signed-in client that stops sending its body: answered or closed after the body
    // timeout (2 s here), not held forever.
    let mut s = connect_from("127.0.0.1", env.port).await;
    s.write_all(post_head("/api/v1/volumes", 5000, Some(&basic(ALICE))).as_bytes())
        .await
        .unwrap();
    s.write_all(&[b' '; 1000]).await.unwrap();
    let t = Instant::now();
    let r = response_within(&mut s, Duration::from_secs(15))
        .await
        .expect("an answer to a stalled body");
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(status_of(&r), 400, "{r}");
    assert_eq!(body_of(&r)["error"]["field"], "body", "{r}");
    assert!(r.contains("stopped arriving"), "{r}");
    assert!(closed_by_server(s, Duration::from_secs(15)).await);

    // Nothing was created by any of it.
    assert!(env.all_volumes().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_floods_are_limited_without_slowing_the_right_password() {
    let mut env = Env::start(1, 100, 10).await;
    env.restart_with(&[
        ("NFSPROV_AUTH_FAILURES_PER_IP", "20"),
        ("NFSPROV_AUTH_FAILURES_PER_USER", "60"),
    ])
    .await;
    let volumes = format!("{}/api/v1/volumes", env.base());
    let login = |http: reqwest::Client, user: String, pass: String| {
        let url = volumes.clone();
        async move {
            let t = Instant::now();
            let r = http
                .get(&url)
                .basic_auth(user, Some(pass))
                .send()
                .await
                .unwrap();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            (r.status(), retry_after, t.elapsed())
        }
    };

    // Unknown users take as long as known ones with a wrong password (else the time tells
    // who exists). Each try from its own address, with its own password.
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..7 {
        let (s, _, t) = login(
            client_from(&format!("127.0.1.{i}")),
            ALICE.0.into(),
            format!("wrong-{i}"),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        known.push(t);
        let (s, _, t) = login(
            client_from(&format!("127.0.2.{i}")),
            format!("nobody{i}"),
            format!("wrong-{i}"),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        unknown.push(t);
    }
    // The fastest of each: load on a busy machine only ever adds time, so the minimum is the
    // cost of the check itself (before the dummy hash: ~1 ms vs ~25 ms). A factor of 3 either
    // way leaves room for noise and still catches a check that skips the hashing.
    let (known, unknown) = (*known.iter().min().unwrap(), *unknown.iter().min().unwrap());
    assert!(
        unknown * 3 >= known && known * 3 >= unknown,
        "unknown user {unknown:?} vs known user {known:?}"
    );

    // A new user, whose right password is in no cache yet.
    env.cli_stdin_ok(&["user", "add", "carol"], "carol-pass-1");
    let carol = || ("carol".to_string(), "carol-pass-1".to_string());
    let (s, _, alone) = login(client_from("127.0.0.1"), ALICE.0.into(), ALICE.1.into()).await;
    assert_eq!(s, StatusCode::OK);

    // 200 concurrent wrong guesses at carol from one address; meanwhile carol signs in from
    // hers.
    let guesser = client_from("127.0.0.2");
    let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flood = (0..200).map(|i| {
        let started = started.clone();
        let guess = login(guesser.clone(), "carol".into(), format!("guess-{i}"));
        tokio::spawn(async move {
            let r = guess.await;
            started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            r
        })
    });
    let flood: Vec<_> = flood.collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while started.load(std::sync::atomic::Ordering::SeqCst) < 5 {
        assert!(Instant::now() < deadline, "the flood got no answers");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (user, pass) = carol();
    let (s, retry, took) = login(client_from("127.0.0.1"), user, pass).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "carol's right password (retry-after {retry:?})"
    );
    let mut limited = 0;
    let mut refused = 0;
    for f in flood {
        let (s, retry, _) = f.await.unwrap();
        match s {
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(retry.is_some_and(|r| r >= 1), "429 without Retry-After");
                limited += 1;
            }
            StatusCode::UNAUTHORIZED => refused += 1,
            other => panic!("a wrong guess answered {other}"),
        }
    }
    eprintln!(
        "carol's sign-in: {took:?} during the flood, {alone:?} alone; {limited} limited, {refused} refused"
    );
    assert!(
        limited > 0,
        "the guesser was never limited ({refused} refused)"
    );
    assert!(
        took < alone * 20 + Duration::from_secs(5),
        "carol's sign-in took {took:?} during the flood, {alone:?} alone"
    );

    // One address over its failures (20 here) is answered 429 before any check; others are not.
    let mut tries = 0;
    let retry = loop {
        let (s, retry, _) = login(guesser.clone(), "carol".into(), format!("more-{tries}")).await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            break retry;
        }
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        tries += 1;
        assert!(tries <= 20, "21 failures from one address and still no 429");
    };
    assert!(retry.is_some_and(|r| (1..=61).contains(&r)), "{retry:?}");
    let (s, _, _) = login(
        client_from("127.0.0.1"),
        "carol".into(),
        "carol-pass-1".into(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    // One user over its failures (60 here) from many addresses: a new address is limited, the
    // address carol signed in from is not.
    let mut last = StatusCode::OK;
    for i in 0..70 {
        let (s, _, _) = login(
            client_from(&format!("127.0.3.{i}")),
            "carol".into(),
            format!("spread-{i}"),
        )
        .await;
        last = s;
        if s == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    // A new password is in no cache: from a new address it waits for the window like the
    // guesses do, from where carol signed in before it is checked.
    let (s, v) = env
        .req(
            Method::PATCH,
            Some(ADMIN),
            "/api/v1/users/carol",
            Some(json!({"password": "carol-pass-2"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _, _) = login(
        client_from("127.0.4.1"),
        "carol".into(),
        "carol-pass-2".into(),
    )
    .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let (s, _, _) = login(
        client_from("127.0.0.1"),
        "carol".into(),
        "carol-pass-2".into(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // Once verified, the password is remembered and no longer limited anywhere.
    let (s, _, _) = login(
        client_from("127.0.4.1"),
        "carol".into(),
        "carol-pass-2".into(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

/// A raw request from 127.0.0.1; the whole response.
async fn raw(env: &Env, request: String) -> String {
    let mut s = connect_from("127.0.0.1", env.port).await;
    s.write_all(request.as_bytes()).await.unwrap();
    response_within(&mut s, Duration::from_secs(20))
        .await
        .expect("an answer")
}

fn request(method: &str, path: &str, extra: &[(&str, &str)], body: &str) -> String {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in extra {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_must_be_json_and_cross_site_forms_are_refused() {
    let env = Env::start(1, 100, 10).await;
    let alice = basic(ALICE);
    let admin = basic(ADMIN);
    let create = json!({"root_path_id": 1, "sub_path": "xsite", "size_gb": 1,
                        "clients": [{"host": "*"}]})
    .to_string();
    // What a web page on another site can make a browser send with cached credentials.
    for (path, auth, ctype, body) in [
        (
            "/api/v1/volumes",
            &alice,
            Some("text/plain"),
            create.as_str(),
        ),
        ("/api/v1/volumes", &alice, None, create.as_str()),
        (
            "/api/v1/volumes",
            &alice,
            Some("application/x-www-form-urlencoded"),
            "root_path_id=1&sub_path=xsite&size_gb=1",
        ),
        (
            "/api/v1/users",
            &admin,
            Some("text/plain"),
            r#"{"username": "mallory", "password": "mallory-pass-1", "is_admin": true}"#,
        ),
    ] {
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some(c) = ctype {
            headers.push(("Content-Type", c));
        }
        let r = raw(&env, request("POST", path, &headers, body)).await;
        assert_eq!(status_of(&r), 415, "{ctype:?}: {r}");
        assert_eq!(
            body_of(&r)["error"]["code"],
            "unsupported_media_type",
            "{r}"
        );
    }
    let r = raw(
        &env,
        request(
            "PATCH",
            "/api/v1/users/alice",
            &[("Authorization", &admin), ("Content-Type", "text/plain")],
            r#"{"is_admin": true}"#,
        ),
    )
    .await;
    assert_eq!(status_of(&r), 415, "{r}");
    assert_eq!(env.user_row("alice").await["is_admin"], false);
    let (_, users) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/users", None)
        .await;
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["username"] != "mallory"),
        "{users}"
    );

    // hootie: text/plain, multipart and cross-site forms refused in hootie's shape; a form
    // from a script (as Django REST framework took it) still works.
    let form = "root_path=1&sub_path=hootie_form&size_GB=1&allowed_hosts=10.1.2.3";
    for (ctype, extra) in [
        ("text/plain", None),
        ("multipart/form-data; boundary=x", None),
        (
            "application/x-www-form-urlencoded",
            Some(("Origin", "http://evil.example")),
        ),
        (
            "application/x-www-form-urlencoded",
            Some(("Sec-Fetch-Site", "cross-site")),
        ),
    ] {
        let mut headers = vec![("Authorization", alice.as_str()), ("Content-Type", ctype)];
        headers.extend(extra);
        let r = raw(&env, request("POST", "/api/v1.0/volumes/", &headers, form)).await;
        assert_eq!(status_of(&r), 415, "{ctype} {extra:?}: {r}");
        assert!(body_of(&r)["detail"].is_string(), "{r}");
    }
    assert!(env.all_volumes().await.is_empty());
    let r = raw(
        &env,
        request(
            "POST",
            "/api/v1.0/volumes/",
            &[
                ("Authorization", &alice),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            form,
        ),
    )
    .await;
    assert_eq!(status_of(&r), 201, "{r}");
    assert_eq!(env.all_volumes().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_and_framework_errors_are_bounded_and_json() {
    let env = Env::start(1, 100, 10).await;
    // A 100 KB Authorization header, 200 headers: refused (431) before any check.
    let huge = format!("Basic {}", "A".repeat(100_000));
    let r = raw(
        &env,
        request("GET", "/api/v1/volumes", &[("Authorization", &huge)], ""),
    )
    .await;
    assert_eq!(status_of(&r), 431, "{r}");
    let many: Vec<(String, String)> = (0..200)
        .map(|i| (format!("X-Pad-{i}"), "x".to_string()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = raw(&env, request("GET", "/api/v1/health", &many, "")).await;
    assert_eq!(status_of(&r), 431, "{r}");
    // A huge query string is a header too.
    let r = raw(
        &env,
        request(
            "GET",
            &format!("/api/v1/volumes?x={}", "y".repeat(100_000)),
            &[("Authorization", &basic(ALICE))],
            "",
        ),
    )
    .await;
    assert_eq!(status_of(&r), 431, "{r}");

    // Errors the framework answers are JSON in each API's shape.
    let (s, v) = env
        .req(Method::GET, Some(ALICE), "/api/v1/volumes?wait=maybe", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["field"], "wait", "{v}");
    let (s, v) = env
        .req(Method::PUT, Some(ALICE), "/api/v1/volumes", Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");
    let (s, v) = env
        .req(Method::GET, Some(ALICE), "/api/v1/nothing-here", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found", "{v}");
    assert_eq!(
        v["error"]["message"], "route GET /api/v1/nothing-here not found",
        "{v}"
    );
    let (s, v) = env
        .req(Method::GET, Some(ALICE), "/api/v1.0/nothing-here/", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["detail"].is_string(), "{v}");
    // Without credentials, an unknown route says only that credentials are needed.
    let (s, _) = env
        .req(Method::GET, None, "/api/v1/nothing-here", None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// Secrets never reach the log, at any level: with `nfsprov serve` logging everything
/// (`NFSPROV_LOG=trace`: ldap3, hyper, sqlx and tower-http's request spans, which record every
/// request header), sign-ins through the directory (`slapd`) and with local passwords, wrong
/// passwords, an unknown name, a new user's password in a request body, a token's creation and
/// use, and creates through both APIs leave neither a password, nor an `Authorization` value,
/// nor the token, nor the directory's service password in its output. The log does show the
/// headers (a probe header is found), so the credentials are hidden by being marked sensitive,
/// not by nothing being logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_and_authorization_values_are_never_logged() {
    let mut env = Env::start(1, 100, 50).await;
    let slapd = nfsprov_testbed::slapd::Slapd::start(&env.dir.path().join("slapd")).unwrap();
    let mut vars =
        common::ldap::ldap_env(env.dir.path(), &slapd.ldaps_url(), &slapd.ca_file(), "user");
    vars.push(("NFSPROV_LOG".into(), "trace".into()));
    vars.push(("RUST_LOG".into(), "trace".into()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.restart_with(&vars).await;
    let from = env.log().len();
    let carol = ("carol", "carol-Secret-9Zq");
    let wrong = ("alice", "wrong-Secret-7Xy");
    let erin = ("erin", nfsprov_testbed::slapd::password("erin"));
    let erin_wrong = ("erin", "erin-wrong-Secret-4Kp");
    let nobody = ("nobody-here", "nobody-Secret-2Wm");
    let probe = "probe-4711";
    let (s, v) = env
        .req(
            Method::POST,
            Some(ADMIN),
            "/api/v1/users",
            Some(json!({"username": carol.0, "password": carol.1, "quota_gb": 5})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    for who in [wrong, erin_wrong, nobody] {
        let (s, _) = env
            .req(Method::GET, Some(who), "/api/v1/volumes", None)
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{}", who.0);
    }
    // A directory user signs in (created at first sign-in), with a header to find in the log.
    let r = env
        .http
        .get(format!("{}/api/v1/volumes", env.base()))
        .basic_auth(erin.0, Some(erin.1))
        .header("X-Probe", probe)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (s, v) = env
        .req(
            Method::POST,
            Some(carol),
            "/api/v1/volumes?wait=true",
            Some(
                json!({"root_path_id": 1, "sub_path": "secret-log", "size_gb": 1,
                        "clients": [{"host": "10.0.0.1", "options": "rw"}]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = env
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1.0/volumes/",
            Some(json!({"root_path": 1, "sub_path": "secret-log-h", "size_GB": 1})),
        )
        .await;
    assert!(s.is_success(), "{s}: {v}");
    // A token is made (shown once) and used.
    let (s, t) = env
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1/tokens",
            Some(json!({"name": "log-test", "expires_in_days": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let token = t["secret"].as_str().unwrap().to_string();
    let r = env
        .http
        .get(format!("{}/api/v1/volumes", env.base()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let log = env.log()[from..].to_string();
    assert!(log.contains(" TRACE "), "the log is not verbose: {log}");
    use base64::Engine as _;
    let mut secrets = vec![
        (token.clone(), "alice's token".to_string()),
        (
            nfsprov_testbed::slapd::SERVICE_PASSWORD.to_string(),
            "the directory's service password".to_string(),
        ),
    ];
    for (user, password) in [ADMIN, ALICE, carol, wrong, erin, erin_wrong, nobody] {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        secrets.push((password.to_string(), format!("{user}'s password")));
        secrets.push((basic, format!("{user}'s Basic credentials")));
    }
    for (secret, what) in secrets {
        assert!(
            !log.contains(&secret),
            "{what} ({secret:?}) is in the log:\n{}",
            log.lines()
                .filter(|l| l.contains(&secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        !log.to_ascii_lowercase().contains("authorization: basic"),
        "an Authorization header is in the log"
    );
    // The request spans do record the headers: the probe is there, the credentials are
    // marked.
    let probed: Vec<&str> = log.lines().filter(|l| l.contains(probe)).collect();
    assert!(
        !probed.is_empty()
            && probed
                .iter()
                .all(|l| l.contains(r#""authorization": Sensitive"#)),
        "the request headers are not in the log as expected: {probed:#?}"
    );
}
