//! Client addresses behind a load balancer (`NFSPROV_TRUSTED_PROXIES`), against the real HTTP
//! server (`serve::serve_http`, hyper) on 127.0.0.1 in this process, with real TCP clients
//! bound to other loopback addresses: 127.0.0.1 (or ::1) plays the balancer, 127.0.0.2 a
//! client that reaches the node directly. Fast tier: no root, no servers.
//!
//! Shown: behind a trusted proxy each forwarded client has its own sign-in limit and is the
//! audit's `source`; from an untrusted peer (or with no proxy trusted) the header changes
//! nothing, whatever it says; a chain yields its right-most untrusted address; a malformed or
//! oversized header leaves the peer and an ordinary answer.

mod inproc;

use std::net::IpAddr;

use axum::http::StatusCode;
use reqwest::header::HeaderValue;
use serde_json::Value;

use nfsprov::auth::AuthLimits;
use nfsprov::model::Role;
use nfsprov::reconcile::Tuning;
use nfsprov::serve::HttpLimits;

use inproc::ADMIN;

/// Failed sign-ins a source may make before it is refused (429) for the window.
const FAILURES: u32 = 3;

/// `nfsprov`'s API served on 127.0.0.1 by `serve_http`, trusting `trusted`.
struct Node {
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<()>,
}

impl Node {
    async fn start(trusted: &str, failures_per_source: u32) -> Node {
        Node::start_on("127.0.0.1:0", trusted, failures_per_source).await
    }

    /// [`Node::start`] listening on `listen`.
    async fn start_on(listen: &str, trusted: &str, failures_per_source: u32) -> Node {
        let limits = HttpLimits {
            trusted_proxies: trusted.parse().unwrap(),
            ..HttpLimits::default()
        };
        let auth = AuthLimits {
            failures_per_source,
            ..AuthLimits::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let (app, hub) = nfsprov::serve::app(
            &dir.path().join("data"),
            &limits,
            auth,
            Tuning::default(),
            None,
        )
        .await
        .unwrap();
        nfsprov::admin::add_user(hub.db(), ADMIN.0, ADMIN.1, Role::Admin, 0)
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            nfsprov::serve::serve_http(listener, app, &limits, None, shutdown).await;
        });
        Node {
            addr,
            _dir: dir,
            stop: Some(stop),
            served,
        }
    }

    /// A client whose connections come from `ip` (a loopback address).
    fn client(&self, ip: &str) -> Client {
        let http = reqwest::Client::builder()
            .local_address(ip.parse::<IpAddr>().unwrap())
            .no_proxy()
            .build()
            .unwrap();
        Client {
            http,
            base: format!("http://{}", self.addr),
        }
    }

    /// Every audit record, as the administrator reads them from 127.0.0.9 (::1 on an IPv6
    /// node), with no header.
    async fn trail(&self) -> Vec<Value> {
        let reader = if self.addr.is_ipv6() {
            "::1"
        } else {
            "127.0.0.9"
        };
        let r = self
            .client(reader)
            .sign_in(&[], ADMIN.1)
            .path("/api/v1/audit")
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        r.json.as_array().unwrap().clone()
    }

    /// The `source` of the audit record of the request `request_id`.
    async fn source_of(&self, request_id: &str) -> String {
        let trail = self.trail().await;
        let record = trail
            .iter()
            .find(|r| r["request_id"] == request_id)
            .unwrap_or_else(|| panic!("no record of request {request_id}: {trail:#?}"));
        record["source"].as_str().unwrap().to_string()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.served).await.unwrap();
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
}

/// A request about to be sent: its client, `X-Forwarded-For` lines and password for `admin`.
struct SignIn<'a> {
    client: &'a Client,
    forwarded: Vec<HeaderValue>,
    password: String,
}

struct Reply {
    status: StatusCode,
    request_id: String,
    json: Value,
}

impl Client {
    /// A sign-in as `admin` with `password`, carrying one `X-Forwarded-For` line per entry of
    /// `forwarded` (raw bytes: malformed values too).
    fn sign_in(&self, forwarded: &[&[u8]], password: &str) -> SignIn<'_> {
        SignIn {
            client: self,
            forwarded: forwarded
                .iter()
                .map(|v| HeaderValue::from_bytes(v).unwrap())
                .collect(),
            password: password.into(),
        }
    }
}

impl SignIn<'_> {
    /// GET `path` with these credentials and headers.
    async fn path(self, path: &str) -> Reply {
        let mut req = self
            .client
            .http
            .get(format!("{}{path}", self.client.base))
            .header("authorization", basic((ADMIN.0, &self.password)));
        for line in self.forwarded {
            req = req.header("x-forwarded-for", line);
        }
        let resp = req.send().await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        let bytes = resp.bytes().await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{status}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        Reply {
            status,
            request_id,
            json,
        }
    }

    async fn volumes(self) -> Reply {
        self.path("/api/v1/volumes").await
    }
}

/// The `Authorization` value of `user` and `password` with HTTP Basic.
fn basic((user, password): (&str, &str)) -> String {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// `FAILURES` wrong passwords for `admin` from `client`, each with the `X-Forwarded-For` line
/// `forwarded(i)` (none if empty), each a 401; then the right one is refused (429).
async fn lock_out(client: &Client, tag: &str, forwarded: impl Fn(u32) -> String) {
    for i in 0..FAILURES {
        let line = forwarded(i);
        let lines: Vec<&[u8]> = if line.is_empty() {
            vec![]
        } else {
            vec![line.as_bytes()]
        };
        // A different wrong password each time: a refused one is remembered, not counted again.
        let r = client
            .sign_in(&lines, &format!("wrong-{tag}-{i}"))
            .volumes()
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{tag} {i}: {}", r.json);
    }
    let line = forwarded(FAILURES);
    let lines: Vec<&[u8]> = if line.is_empty() {
        vec![]
    } else {
        vec![line.as_bytes()]
    };
    let r = client.sign_in(&lines, ADMIN.1).volumes().await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{tag}: not locked out: {}",
        r.json
    );
}

#[tokio::test]
async fn forwarded_clients_behind_a_trusted_proxy_have_their_own_sign_in_limits() {
    let node = Node::start("127.0.0.1/32", FAILURES).await;
    let proxy = node.client("127.0.0.1");
    // One client behind the balancer guesses passwords until it is locked out...
    lock_out(&proxy, "attacker", |_| "203.0.113.66".into()).await;
    // ... and another one behind the same balancer still signs in (its first sign-in: no
    // cache spares it the limits).
    let r = proxy.sign_in(&[b"203.0.113.7"], ADMIN.1).volumes().await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    // The trail names the forwarded client, not the balancer.
    let trail = node.trail().await;
    let denied_from = |src: &str| {
        trail
            .iter()
            .filter(|r| r["action"] == "denied" && r["source"] == src)
            .count()
    };
    assert_eq!(
        denied_from("203.0.113.66"),
        FAILURES as usize + 1,
        "{trail:#?}"
    );
    assert_eq!(denied_from("127.0.0.1"), 0, "{trail:#?}");
    node.stop().await;
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_changes_nothing() {
    // No proxy trusted (the default): a client rotating X-Forwarded-For values stays in its
    // peer's bucket, and so does everyone else on that peer, as before the setting existed.
    let node = Node::start("", FAILURES).await;
    let peer = node.client("127.0.0.1");
    lock_out(&peer, "rotating", |i| format!("198.51.100.{}", i + 1)).await;
    let r = peer.sign_in(&[b"203.0.113.7"], ADMIN.1).volumes().await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.json);
    let r = peer
        .sign_in(&[b"203.0.113.8"], "wrong-logged")
        .volumes()
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.json);
    assert_eq!(node.source_of(&r.request_id).await, "127.0.0.1");
    node.stop().await;

    // 127.0.0.1 trusted: a client reaching the node directly from 127.0.0.2 cannot leave its
    // own bucket by rotating the header, nor put itself in a forwarded client's bucket by
    // naming it (or the balancer).
    let node = Node::start("127.0.0.1", FAILURES).await;
    let direct = node.client("127.0.0.2");
    let claims = ["203.0.113.7", "127.0.0.1", "198.51.100.1", "198.51.100.2"];
    lock_out(&direct, "spoofer", |i| claims[i as usize].into()).await;
    let r = direct
        .sign_in(&[b"198.51.100.3"], "wrong-spoofer-logged")
        .volumes()
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.json);
    assert_eq!(node.source_of(&r.request_id).await, "127.0.0.2");
    // The client it named, behind the balancer, is untouched: it signs in, and its own
    // mistakes are its own.
    let proxy = node.client("127.0.0.1");
    let r = proxy
        .sign_in(&[b"203.0.113.7"], "wrong-victim")
        .volumes()
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.json);
    assert_eq!(node.source_of(&r.request_id).await, "203.0.113.7");
    let r = proxy.sign_in(&[b"203.0.113.7"], ADMIN.1).volumes().await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    node.stop().await;
}

#[tokio::test]
async fn a_chain_yields_its_right_most_untrusted_address() {
    // The balancer 127.0.0.1 and an inner proxy in 10.0.0.0/8 are trusted.
    let node = Node::start("127.0.0.1, 10.0.0.0/8", 100).await;
    let proxy = node.client("127.0.0.1");
    for (i, (lines, client)) in [
        // The client wrote the left-most entry itself: never believed.
        (
            &[&b"198.51.100.66, 203.0.113.9, 10.1.2.3"[..]][..],
            "203.0.113.9",
        ),
        // Several lines are one list, in order.
        (
            &[b"198.51.100.66", b"203.0.113.10,10.1.2.3"],
            "203.0.113.10",
        ),
        // All trusted: the left-most.
        (&[b"10.0.0.1, 10.2.2.2"], "10.0.0.1"),
        (&[b"2001:db8::5, 10.2.2.2"], "2001:db8::5"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = proxy.sign_in(lines, &format!("wrong-{i}")).volumes().await;
        let case = lines
            .iter()
            .map(|l| String::from_utf8_lossy(l))
            .collect::<Vec<_>>()
            .join(" | ");
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{case}: {}", r.json);
        assert_eq!(node.source_of(&r.request_id).await, client, "{case}");
    }
    node.stop().await;
}

#[tokio::test]
async fn a_malformed_or_oversized_header_leaves_the_peer() {
    let node = Node::start("127.0.0.1", 100).await;
    let proxy = node.client("127.0.0.1");
    // A well-formed header counts (the control) ...
    let r = proxy
        .sign_in(&[b"203.0.113.9"], "wrong-control")
        .volumes()
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.json);
    assert_eq!(node.source_of(&r.request_id).await, "203.0.113.9");
    // ... these do not: the client is the peer, and the answer is the usual one.
    let too_many = vec!["203.0.113.9"; 33].join(",");
    // Two addresses, but over 2048 bytes (blanks inside a value reach the server).
    let too_long = format!("198.51.100.1,{}203.0.113.9", " ".repeat(3000));
    let many_lines = vec![&b"203.0.113.9"[..]; 33];
    let cases: Vec<(&str, Vec<&[u8]>)> = vec![
        ("not an address", vec![b"unknown"]),
        ("a host name", vec![b"203.0.113.9, client.example"]),
        ("an empty entry", vec![b"203.0.113.9,,10.0.0.1"]),
        ("a network", vec![b"203.0.113.0/24"]),
        ("no separator", vec![b"203.0.113.9 198.51.100.1"]),
        ("not ASCII", vec![b"203.0.113.9\xff"]),
        ("33 entries", vec![too_many.as_bytes()]),
        ("3000 bytes", vec![too_long.as_bytes()]),
        ("33 lines", many_lines),
    ];
    for (i, (case, lines)) in cases.iter().enumerate() {
        let r = proxy.sign_in(lines, &format!("wrong-{i}")).volumes().await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{case}: {}", r.json);
        assert_eq!(node.source_of(&r.request_id).await, "127.0.0.1", "{case}");
        let r = proxy.sign_in(lines, ADMIN.1).volumes().await;
        assert_eq!(r.status, StatusCode::OK, "{case}: {}", r.json);
    }
    node.stop().await;
}

#[tokio::test]
async fn an_ipv6_balancer_forwards_clients_of_both_families() {
    let node = Node::start_on("[::1]:0", "::1", 100).await;
    let proxy = node.client("::1");
    for (i, (line, client)) in [
        (&b"2001:db8:1::5"[..], "2001:db8:1::5"),
        (b"203.0.113.9", "203.0.113.9"),
        (b"[2001:db8:1::6]:4711, ::1", "2001:db8:1::6"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = proxy
            .sign_in(&[line], &format!("wrong-{i}"))
            .volumes()
            .await;
        let case = String::from_utf8_lossy(line);
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{case}: {}", r.json);
        assert_eq!(node.source_of(&r.request_id).await, client, "{case}");
    }
    node.stop().await;
}
