//! The API in-process (fast tier: no root, no servers). The real router, behind the same front
//! door `nfsprov serve` listens with (`serve::app`), on a real SQLite file in a temporary
//! directory, driven with `tower::ServiceExt::oneshot`: requests in, status and JSON out.
//!
//! These are the checks that need no NFS server: authentication, content type, body limits,
//! every validator's field name, quota, capacity, overlap and idempotency refusals, hootie's
//! shapes, paging. A refused request must change nothing: each test compares what the API
//! lists before and after. The registered server is a closed port on 127.0.0.1, so a
//! reconciler poked by an accepted create only fails to connect; nothing here waits for one.

mod inproc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use serde_json::{Value, json};

use inproc::{ADMIN, ALICE, Api, BOB, HOST_KEY, Login, Reply, basic};
use nfsprov::serve::HttpLimits;

/// What these tests add to the shared [`inproc::Api`].
impl Api {
    async fn send(&self, req: Request<Body>) -> Reply {
        inproc::call(&self.app, req).await
    }

    /// A request with a JSON body (if any) and Basic credentials (if any).
    async fn req(
        &self,
        method: Method,
        login: Option<Login>,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let authorization = login.map(basic);
        inproc::request(&self.app, method, authorization.as_deref(), path, &[], body).await
    }

    /// A POST as `login` with the raw `body` and the given extra headers.
    async fn post_raw(
        &self,
        login: Login,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Reply {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::AUTHORIZATION, basic(login));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(body.into()).unwrap()).await
    }

    async fn snapshot(&self) -> Value {
        inproc::snapshot(&self.app).await
    }

    async fn user(&self, name: &str) -> Value {
        let r = self
            .req(Method::GET, Some(ADMIN), "/api/v1/users", None)
            .await;
        r.json
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == name)
            .cloned()
            .unwrap()
    }

    /// Create a volume for alice; the API answers at once (no `wait`).
    async fn create(&self, login: Login, sub: &str, size_gb: i64) -> Reply {
        self.req(
            Method::POST,
            Some(login),
            "/api/v1/volumes",
            Some(native_body(sub, size_gb)),
        )
        .await
    }
}

fn native_body(sub: &str, size_gb: i64) -> Value {
    json!({"root_path_id": 1, "sub_path": sub, "size_gb": size_gb,
           "clients": [{"host": "10.0.0.1", "options": "rw"}]})
}

fn is_native_error(r: &Reply) -> bool {
    r.json["error"]["code"].is_string() && r.json["error"]["message"].is_string()
}

#[tokio::test]
async fn credentials_are_checked_before_anything_else() {
    let api = Api::start(100, 50).await;
    let before = api.snapshot().await;
    let body = Some(native_body("a", 1));
    let bad: [(&str, Option<String>); 6] = [
        ("none", None),
        ("wrong password", Some(basic(("alice", "wrong-password")))),
        ("unknown user", Some(basic(("mallory", "alice-pass-1")))),
        ("not base64", Some("Basic !!!".into())),
        (
            "no colon",
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("alice")
            )),
        ),
        ("another scheme", Some("Bearer alice-pass-1".into())),
    ];
    for (what, auth) in bad {
        for (path, hootie) in [("/api/v1/volumes", false), ("/api/v1.0/volumes/", true)] {
            let mut b = Request::builder()
                .method(Method::POST)
                .uri(path)
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(a) = &auth {
                b = b.header(header::AUTHORIZATION, a);
            }
            let r = api
                .send(
                    b.body(Body::from(body.clone().unwrap().to_string()))
                        .unwrap(),
                )
                .await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{what} {path}: {}",
                r.json
            );
            assert!(
                r.headers[header::WWW_AUTHENTICATE]
                    .to_str()
                    .unwrap()
                    .starts_with("Basic"),
                "{what} {path}"
            );
            if hootie {
                assert!(r.json["detail"].is_string(), "{what}: {}", r.json);
            } else {
                assert_eq!(
                    r.json["error"]["code"], "unauthenticated",
                    "{what}: {}",
                    r.json
                );
            }
        }
    }
    // Public routes answer without credentials; nothing else does, reads included.
    let r = api.req(Method::GET, None, "/api/v1/health", None).await;
    assert_eq!(
        (r.status, r.json.clone()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let r = api
        .req(Method::GET, None, "/api/v1.0/rootpaths/", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    for path in ["/api/v1/volumes", "/api/v1/rootpaths", "/api/v1.0/volumes/"] {
        let r = api.req(Method::GET, None, path, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // A tenant is not an administrator.
    for (m, path, body) in [
        (Method::GET, "/api/v1/users", None),
        (Method::GET, "/api/v1/servers", None),
        (
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "carol", "password": "longenough"})),
        ),
        (
            Method::POST,
            "/api/v1/rootpaths",
            Some(json!({"server": "srv1", "path": "/srv/other", "capacity_gb": 1})),
        ),
        (
            Method::PATCH,
            "/api/v1/users/alice",
            Some(json!({"quota_gb": 1000})),
        ),
        (
            Method::PATCH,
            "/api/v1/servers/srv1",
            Some(json!({"host_key": HOST_KEY})),
        ),
    ] {
        let r = api.req(m.clone(), Some(ALICE), path, body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{m} {path}: {}", r.json);
        assert_eq!(r.json["error"]["code"], "forbidden", "{}", r.json);
    }
    // Adopting an existing directory is an administrator's call.
    let mut adopt = native_body("adopt", 1);
    adopt["adopt_existing"] = json!(true);
    let r = api
        .req(Method::POST, Some(ALICE), "/api/v1/volumes", Some(adopt))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.json);
    assert_eq!(api.snapshot().await, before);
}

#[tokio::test]
async fn a_locked_account_can_change_nothing_but_may_still_read() {
    let api = Api::start(100, 50).await;
    let r = api.create(ALICE, "mine", 1).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    let id = r.json["id"].as_i64().unwrap();
    let r = api
        .req(
            Method::POST,
            Some(ADMIN),
            "/api/v1/users",
            Some(json!({"username": "root2", "password": "root2-pass-1", "is_admin": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    for who in ["alice", "root2"] {
        let r = api
            .req(
                Method::PATCH,
                Some(ADMIN),
                &format!("/api/v1/users/{who}"),
                Some(json!({"locked": true})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        assert_eq!(r.json["locked"], true);
    }
    let before = api.snapshot().await;
    let root2: Login = ("root2", "root2-pass-1");
    let attempts: Vec<(Method, Login, String, Option<Value>)> = vec![
        (
            Method::PATCH,
            ALICE,
            format!("/api/v1/volumes/{id}"),
            Some(json!({"clients": [{"host": "*", "options": "rw,no_root_squash"}]})),
        ),
        (Method::DELETE, ALICE, format!("/api/v1/volumes/{id}"), None),
        (
            Method::POST,
            ALICE,
            "/api/v1/volumes".into(),
            Some(native_body("other", 1)),
        ),
        (
            Method::DELETE,
            ALICE,
            format!("/api/v1.0/volumes/{id}/"),
            None,
        ),
        (
            Method::POST,
            ALICE,
            "/api/v1.0/volumes/".into(),
            Some(json!({"root_path": 1, "sub_path": "h", "size_GB": 1})),
        ),
        (Method::DELETE, root2, format!("/api/v1/volumes/{id}"), None),
        (
            Method::POST,
            root2,
            "/api/v1/users".into(),
            Some(json!({"username": "carol", "password": "longenough"})),
        ),
        (
            Method::PATCH,
            root2,
            "/api/v1/users/alice".into(),
            Some(json!({"locked": false})),
        ),
        (
            Method::POST,
            root2,
            "/api/v1/rootpaths".into(),
            Some(json!({"server": "srv1", "path": "/srv/other", "capacity_gb": 1})),
        ),
        (
            Method::POST,
            root2,
            "/api/v1/servers".into(),
            Some(
                json!({"name": "s9", "ssh_host": "127.0.0.1", "ssh_key": "/k", "host_key": HOST_KEY}),
            ),
        ),
        (
            Method::PATCH,
            root2,
            "/api/v1/servers/srv1".into(),
            Some(json!({"host_key": HOST_KEY})),
        ),
    ];
    for (m, user, path, body) in attempts {
        let r = api.req(m.clone(), Some(user), &path, body).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{} {m} {path}: {}",
            user.0,
            r.json
        );
        if path.starts_with("/api/v1.0/") {
            assert!(r.json["detail"].is_string(), "{}", r.json);
        } else {
            assert_eq!(r.json["error"]["code"], "locked", "{}", r.json);
        }
    }
    let r = api
        .req(
            Method::GET,
            Some(ALICE),
            &format!("/api/v1/volumes/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(api.snapshot().await, before);
}

#[tokio::test]
async fn bodies_must_be_json_within_the_size_limit() {
    let limits = HttpLimits {
        max_body_bytes: 4096,
        ..HttpLimits::default()
    };
    let api = Api::start_with(&limits, 100, 50).await;
    let before = api.snapshot().await;
    let json_body = native_body("a", 1).to_string();
    // (path, headers, expected status)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, StatusCode);
    let cases: Vec<Case<'_>> = vec![
        (
            "/api/v1/volumes",
            vec![],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "/api/v1/volumes",
            vec![("content-type", "text/plain")],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "/api/v1/volumes",
            vec![("content-type", "application/x-www-form-urlencoded")],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "/api/v1.0/volumes/",
            vec![("content-type", "text/plain")],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "/api/v1.0/volumes/",
            vec![
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", "https://evil.example"),
            ],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "/api/v1.0/volumes/",
            vec![
                ("content-type", "application/x-www-form-urlencoded"),
                ("sec-fetch-site", "cross-site"),
            ],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];
    for (path, headers, want) in cases {
        let r = api.post_raw(ALICE, path, &headers, json_body.clone()).await;
        assert_eq!(r.status, want, "{path} {headers:?}: {}", r.json);
        if path.starts_with("/api/v1.0/") {
            assert!(
                r.json["detail"]
                    .as_str()
                    .unwrap()
                    .contains("application/json"),
                "{}",
                r.json
            );
        } else {
            assert_eq!(
                r.json["error"]["code"], "unsupported_media_type",
                "{}",
                r.json
            );
        }
    }
    // hootie takes a form post from a client that is not a browser on another site: it gets
    // as far as the validators.
    let r = api
        .post_raw(
            ALICE,
            "/api/v1.0/volumes/",
            &[("content-type", "application/x-www-form-urlencoded")],
            "root_path=1&sub_path=..&size_GB=1",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    assert!(r.json["sub_path"][0].is_string(), "{}", r.json);

    // Too large: declared, or streamed without a length.
    let big = format!(
        "{{\"root_path_id\": 1, \"sub_path\": \"{}\", \"size_gb\": 1, \"clients\": []}}",
        "x".repeat(5000)
    );
    let length = big.len().to_string();
    let declared = api
        .post_raw(
            ALICE,
            "/api/v1/volumes",
            &[
                ("content-type", "application/json"),
                ("content-length", &length),
            ],
            big.clone(),
        )
        .await;
    let chunks: Vec<Result<String, std::io::Error>> = big
        .as_bytes()
        .chunks(1000)
        .map(|c| Ok(String::from_utf8(c.to_vec()).unwrap()))
        .collect();
    let streamed = api
        .post_raw(
            ALICE,
            "/api/v1/volumes",
            &[("content-type", "application/json")],
            Body::from_stream(futures_stream(chunks)),
        )
        .await;
    for (what, r) in [("declared", declared), ("streamed", streamed)] {
        assert_eq!(
            r.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{what}: {}",
            r.json
        );
        assert_eq!(
            r.json["error"]["code"], "payload_too_large",
            "{what}: {}",
            r.json
        );
        assert!(
            r.json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("4096"),
            "{what}: {}",
            r.json
        );
    }
    let r = api
        .post_raw(
            ALICE,
            "/api/v1.0/volumes/",
            &[("content-type", "application/json")],
            big,
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.json);
    assert!(r.json["detail"].is_string(), "{}", r.json);
    assert_eq!(api.snapshot().await, before);
}

/// A body that arrives in pieces, with no length declared.
fn futures_stream(
    chunks: Vec<Result<String, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<String, std::io::Error>> {
    futures_util::stream::iter(chunks)
}

#[tokio::test]
async fn malformed_json_and_wrong_types_name_the_field() {
    let api = Api::start(100, 50).await;
    let before = api.snapshot().await;
    // A body that is not a JSON object is a 400; which field it names is serde's guess
    // (today "?" or "[1]"), so only type errors and unknown fields are held to a name here.
    let cases: [(&str, Option<&str>); 6] = [
        ("{not json", None),
        ("[1, 2]", None),
        ("", None),
        (
            r#"{"root_path_id": 1, "sub_path": "a", "size_gb": "5", "clients": []}"#,
            Some("size_gb"),
        ),
        (
            r#"{"root_path_id": 1, "sub_path": "a", "size_gb": 1, "clients": [{"host": 5}]}"#,
            Some("clients[0].host"),
        ),
        (
            r#"{"root_path_id": 1, "sub_path": "a", "size_gb": 1, "clients": [{"host": "h"}], "colour": "red"}"#,
            Some("colour"),
        ),
    ];
    for (body, field) in cases {
        let r = api
            .post_raw(
                ALICE,
                "/api/v1/volumes",
                &[("content-type", "application/json")],
                body,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.json);
        assert_eq!(r.json["error"]["code"], "invalid", "{body}: {}", r.json);
        if let Some(field) = field {
            assert_eq!(r.json["error"]["field"], field, "{body}: {}", r.json);
        }
    }
    for (body, field) in [
        ("{not json", "detail"),
        ("[1]", "non_field_errors"),
        (
            r#"{"root_path": "one", "sub_path": "a", "size_GB": 1}"#,
            "root_path",
        ),
        (
            r#"{"root_path": 1, "sub_path": 7, "size_GB": 1}"#,
            "sub_path",
        ),
    ] {
        let r = api
            .post_raw(
                ALICE,
                "/api/v1.0/volumes/",
                &[("content-type", "application/json")],
                body,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.json);
        assert!(r.json[field][0].is_string(), "{body}: {}", r.json);
    }
    assert_eq!(api.snapshot().await, before);
}

fn with(field: &str, value: Value) -> Value {
    let mut body = native_body("ok", 1);
    if let Some(rest) = field.strip_prefix("clients[0].") {
        body["clients"][0][rest] = value;
    } else if let Some(rest) = field.strip_prefix("clients[1].") {
        let mut second = json!({"host": "10.0.0.2"});
        second[rest] = value;
        body["clients"].as_array_mut().unwrap().push(second);
    } else {
        body[field] = value;
    }
    body
}

#[tokio::test]
async fn every_validator_names_its_field_and_nothing_is_recorded() {
    let api = Api::start(100, 50).await;
    let before = api.snapshot().await;
    let long = "x".repeat(65);
    let too_many: Vec<Value> = (0..65)
        .map(|i| json!({"host": format!("10.1.0.{i}")}))
        .collect();
    // (field as sent, value, field the error must name)
    let native: Vec<(&str, Value, &str)> = vec![
        ("sub_path", json!("../etc"), "sub_path"),
        ("sub_path", json!(".."), "sub_path"),
        ("sub_path", json!("."), "sub_path"),
        ("sub_path", json!("/abs"), "sub_path"),
        ("sub_path", json!("a/../b"), "sub_path"),
        ("sub_path", json!("a/./b"), "sub_path"),
        ("sub_path", json!(".hidden"), "sub_path"),
        ("sub_path", json!(".nfsprov-trash"), "sub_path"),
        ("sub_path", json!("-rf"), "sub_path"),
        ("sub_path", json!("a//b"), "sub_path"),
        ("sub_path", json!("a b"), "sub_path"),
        ("sub_path", json!(";rm -rf /"), "sub_path"),
        ("sub_path", json!("$(reboot)"), "sub_path"),
        ("sub_path", json!("`id`"), "sub_path"),
        ("sub_path", json!("a|b"), "sub_path"),
        ("sub_path", json!("a'b"), "sub_path"),
        ("sub_path", json!("a\nb"), "sub_path"),
        ("sub_path", json!("a\u{0}b"), "sub_path"),
        ("sub_path", json!("ünïcode"), "sub_path"),
        ("sub_path", json!(""), "sub_path"),
        ("sub_path", json!(long), "sub_path"),
        ("sub_path", json!(42), "sub_path"),
        ("size_gb", json!(0), "size_gb"),
        ("size_gb", json!(-1), "size_gb"),
        ("size_gb", json!("5"), "size_gb"),
        ("size_gb", json!(1.5), "size_gb"),
        ("size_gb", json!((1_i64 << 20) + 1), "size_gb"),
        ("size_gb", json!(i64::MAX), "size_gb"),
        ("root_path_id", json!(999), "root_path_id"),
        ("root_path_id", json!("one"), "root_path_id"),
        ("clients", json!([]), "clients"),
        ("clients", json!("10.0.0.1"), "clients"),
        ("clients", json!(too_many), "clients"),
        ("clients[0].host", json!("1.2.3.256"), "clients[0].host"),
        ("clients[0].host", json!("1.2.3.4/33"), "clients[0].host"),
        ("clients[0].host", json!("a b"), "clients[0].host"),
        ("clients[0].host", json!(";rm"), "clients[0].host"),
        ("clients[0].host", json!("$(x)"), "clients[0].host"),
        ("clients[0].host", json!(""), "clients[0].host"),
        ("clients[0].host", json!("host(rw)"), "clients[0].host"),
        ("clients[0].host", json!("10.0.0.*"), "clients[0].host"),
        ("clients[0].host", json!("fe80::1%eth0"), "clients[0].host"),
        (
            "clients[0].host",
            json!("2001:db8::/129"),
            "clients[0].host",
        ),
        ("clients[0].host", json!("@"), "clients[0].host"),
        ("clients[0].host", json!("a..b"), "clients[0].host"),
        ("clients[0].host", json!("-host"), "clients[0].host"),
        ("clients[0].host", json!("01.2.3.4"), "clients[0].host"),
        ("clients[1].host", json!("10.0.0.1"), "clients[1].host"),
        ("clients[1].host", json!("bad host"), "clients[1].host"),
        ("clients[1].options", json!("rw,ro"), "clients[1].options"),
        ("clients[0].options", json!("rw,ro"), "clients[0].options"),
        ("clients[0].options", json!("foo"), "clients[0].options"),
        ("clients[0].options", json!("fsid=0"), "clients[0].options"),
        (
            "clients[0].options",
            json!("anonuid=-1"),
            "clients[0].options",
        ),
        (
            "clients[0].options",
            json!("anonuid=x"),
            "clients[0].options",
        ),
        ("clients[0].options", json!("sec=foo"), "clients[0].options"),
        (
            "clients[0].options",
            json!("rw,,sync"),
            "clients[0].options",
        ),
        ("clients[0].options", json!("rw sync"), "clients[0].options"),
        (
            "clients[0].options",
            json!("refer=/x@y"),
            "clients[0].options",
        ),
        (
            "clients[0].options",
            json!("rw;reboot"),
            "clients[0].options",
        ),
        ("clients[0].options", json!("RW"), "clients[0].options"),
        (
            "clients[0].options",
            json!(["rw", "$(id)"]),
            "clients[0].options",
        ),
        ("clients[0].options", json!(5), "clients[0].options"),
        ("mode", json!("4755"), "mode"),
        ("mode", json!("1777"), "mode"),
        ("mode", json!("abc"), "mode"),
        ("mode", json!("99999"), "mode"),
        ("mode", json!(755), "mode"),
        ("uid", json!(-1), "uid"),
        ("uid", json!(u32::MAX), "uid"),
        ("uid", json!(1_u64 << 32), "uid"),
        ("uid", json!("0"), "uid"),
        ("gid", json!(-1), "gid"),
        ("gid", json!(u32::MAX), "gid"),
    ];
    for (field, value, expect) in &native {
        let r = api
            .req(
                Method::POST,
                Some(ALICE),
                "/api/v1/volumes",
                Some(with(field, value.clone())),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{field}={value}: {}",
            r.json
        );
        assert!(is_native_error(&r), "{field}={value}: {}", r.json);
        assert_eq!(
            r.json["error"]["field"], *expect,
            "{field}={value}: {}",
            r.json
        );
        let msg = r.json["error"]["message"].as_str().unwrap();
        assert!(
            msg.len() > 5,
            "{field}={value}: the message should explain: {}",
            r.json
        );
    }

    // hootie's API: Django REST framework's {"field": ["message"]}.
    let hootie: Vec<(Value, &str)> = vec![
        (
            json!({"root_path": 1, "sub_path": "../x", "size_GB": 1}),
            "sub_path",
        ),
        (
            json!({"root_path": 1, "sub_path": "ok", "size_GB": 0}),
            "size_GB",
        ),
        (
            json!({"root_path": 1, "sub_path": "ok", "size_GB": "abc"}),
            "size_GB",
        ),
        (json!({"sub_path": "ok", "size_GB": 1}), "root_path"),
        (json!({"root_path": 1, "size_GB": 1}), "sub_path"),
        (json!({"root_path": 1, "sub_path": "ok"}), "size_GB"),
        (
            json!({"root_path": 999, "sub_path": "ok", "size_GB": 1}),
            "root_path",
        ),
        (
            json!({"root_path": 1, "sub_path": "ok", "size_GB": 1, "allowed_hosts": "1.2.3.256"}),
            "allowed_hosts",
        ),
        (
            json!({"root_path": 1, "sub_path": "ok", "size_GB": 1, "allowed_hosts": "a;b"}),
            "allowed_hosts",
        ),
        (
            json!({"root_path": 1, "sub_path": "ok", "size_GB": 1, "options": "rw,ro"}),
            "options",
        ),
        (
            json!({"root_path": 1, "sub_path": "ok", "size_GB": 1, "options": "no_such"}),
            "options",
        ),
        (
            json!({"root_path": 1, "sub_path": "ok", "size_GB": 1, "options": 5}),
            "options",
        ),
    ];
    for (body, expect) in &hootie {
        let r = api
            .req(
                Method::POST,
                Some(ALICE),
                "/api/v1.0/volumes/",
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.json);
        assert!(
            r.json[*expect][0].is_string(),
            "{body}: expected a {expect} error, got {}",
            r.json
        );
    }

    // PATCH runs the same client checks.
    let r = api.create(ALICE, "patched", 1).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    let id = r.json["id"].as_i64().unwrap();
    let before_patch = api.snapshot().await;
    for (body, expect) in [
        (json!({"clients": []}), "clients"),
        (json!({"clients": [{"host": "a b"}]}), "clients[0].host"),
        (
            json!({"clients": [{"host": "h", "options": "rw,ro"}]}),
            "clients[0].options",
        ),
        (json!({"clients": [{"host": "h"}], "size_gb": 2}), "size_gb"),
    ] {
        let r = api
            .req(
                Method::PATCH,
                Some(ALICE),
                &format!("/api/v1/volumes/{id}"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.json);
        assert_eq!(r.json["error"]["field"], expect, "{body}: {}", r.json);
    }
    assert_eq!(api.snapshot().await, before_patch);

    // Listing parameters.
    for bad in [
        "limit=0",
        "limit=10001",
        "limit=-1",
        "after=x",
        "include_deleted=maybe",
    ] {
        let r = api
            .req(
                Method::GET,
                Some(ALICE),
                &format!("/api/v1/volumes?{bad}"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.json);
        let name = bad.split('=').next().unwrap();
        assert_eq!(r.json["error"]["field"], name, "{bad}: {}", r.json);
    }
    let r = api
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1/volumes?wait=sometimes",
            Some(native_body("w", 1)),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    assert_eq!(r.json["error"]["field"], "wait", "{}", r.json);

    // Nothing but the one good create was recorded or reserved.
    let after = api.snapshot().await;
    assert_eq!(after, before_patch);
    assert_ne!(after, before);
    assert_eq!(api.user("alice").await["used_gb"], 1);
}

#[tokio::test]
async fn admin_inputs_name_their_field() {
    let api = Api::start(100, 50).await;
    let before = api.snapshot().await;
    let cases: Vec<(Method, &str, Value, &str, StatusCode)> = vec![
        (
            Method::POST,
            "/api/v1/rootpaths",
            json!({"server": "srv1", "path": "relative", "capacity_gb": 1}),
            "path",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/rootpaths",
            json!({"server": "srv1", "path": "/etc/x", "capacity_gb": 1}),
            "path",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/rootpaths",
            json!({"server": "srv1", "path": "/srv/nfsprov/pool1/inner", "capacity_gb": 1}),
            "path",
            StatusCode::CONFLICT,
        ),
        (
            Method::POST,
            "/api/v1/rootpaths",
            json!({"server": "nope", "path": "/srv/x", "capacity_gb": 1}),
            "server",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/rootpaths",
            json!({"server": "srv1", "path": "/srv/y", "capacity_gb": 0}),
            "capacity_gb",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/servers",
            json!({"name": "Bad Name", "ssh_host": "127.0.0.1", "ssh_key": "/k", "host_key": HOST_KEY}),
            "name",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/servers",
            json!({"name": "srv1", "ssh_host": "127.0.0.1", "ssh_key": "/k", "host_key": HOST_KEY}),
            "name",
            StatusCode::CONFLICT,
        ),
        (
            Method::POST,
            "/api/v1/servers",
            json!({"name": "s9", "ssh_host": "-oProxyCommand=x", "ssh_key": "/k", "host_key": HOST_KEY}),
            "ssh_host",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/servers",
            json!({"name": "s9", "ssh_host": "10.0.0.0/8", "ssh_key": "/k", "host_key": HOST_KEY}),
            "ssh_host",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/servers",
            json!({"name": "s9", "ssh_host": "127.0.0.1", "ssh_key": "/k", "host_key": "nonsense"}),
            "host_key",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/servers",
            json!({"name": "s9", "ssh_host": "127.0.0.1", "ssh_key": "/k", "host_key": "ssh-dss AAAAB3NzaC1kc3MAAACBAP"}),
            "host_key",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/servers",
            json!({"name": "s9", "ssh_host": "127.0.0.1", "ssh_key": "rel", "host_key": HOST_KEY}),
            "ssh_key",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/servers",
            json!({"name": "s9", "ssh_host": "127.0.0.1", "ssh_user": "-x", "ssh_key": "/k", "host_key": HOST_KEY}),
            "ssh_user",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/servers",
            json!({"name": "s9", "ssh_host": "127.0.0.1", "ssh_port": 0, "ssh_key": "/k", "host_key": HOST_KEY}),
            "ssh_port",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/servers",
            json!({"name": "s9", "ssh_host": "127.0.0.1", "ssh_key": "/k", "host_key": HOST_KEY, "backend": "zfs"}),
            "backend",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PATCH,
            "/api/v1/servers/srv1",
            json!({"host_key": "ssh-ed25519 not base64!"}),
            "host_key",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/users",
            json!({"username": "Bad User", "password": "longenough"}),
            "username",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/users",
            json!({"username": "carol", "password": "short"}),
            "password",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/users",
            json!({"username": "carol", "password": "longenough", "quota_gb": -1}),
            "quota_gb",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PATCH,
            "/api/v1/users/alice",
            json!({"password": "short"}),
            "password",
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (m, path, body, expect, status) in cases {
        let r = api
            .req(m.clone(), Some(ADMIN), path, Some(body.clone()))
            .await;
        assert_eq!(r.status, status, "{m} {path} {body}: {}", r.json);
        assert_eq!(
            r.json["error"]["field"], expect,
            "{m} {path} {body}: {}",
            r.json
        );
    }
    assert_eq!(api.snapshot().await, before);
}

#[tokio::test]
async fn quota_capacity_and_overlaps_are_refused_and_nothing_is_reserved() {
    let api = Api::start(100, 50).await;
    // Within quota and capacity: accepted (the server is never reached, so it stays creating).
    let r = api.create(ALICE, "team/a", 30).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    assert_eq!(r.json["state"], "creating", "{}", r.json);
    assert_eq!(r.json["path"], "/srv/nfsprov/pool1/team/a");
    let before = api.snapshot().await;

    let r = api.create(ALICE, "b", 21).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json);
    assert_eq!(r.json["error"]["code"], "quota_exceeded", "{}", r.json);
    assert_eq!(r.json["error"]["field"], "size_gb", "{}", r.json);
    let r = api
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1.0/volumes/",
            // Not hootie's default `*`: with rw, that is refused by the export policy first.
            Some(json!({"root_path": 1, "sub_path": "b", "size_GB": 21, "allowed_hosts": "10.0.0.1"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    assert!(r.json["size_GB"][0].is_string(), "{}", r.json);

    // Bob has quota left, the root path has not.
    let r = api.create(BOB, "c", 50).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    let before_capacity = api.snapshot().await;
    let r = api
        .req(
            Method::PATCH,
            Some(ADMIN),
            "/api/v1/users/bob",
            Some(json!({"quota_gb": 1000})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let r = api.create(BOB, "d", 21).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json);
    assert_eq!(r.json["error"]["code"], "capacity_exceeded", "{}", r.json);
    assert_eq!(r.json["error"]["field"], "size_gb", "{}", r.json);
    let r = api
        .req(
            Method::PATCH,
            Some(ADMIN),
            "/api/v1/users/bob",
            Some(json!({"quota_gb": 50})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(api.snapshot().await, before_capacity);
    let r = api
        .req(Method::GET, Some(ALICE), "/api/v1/rootpaths", None)
        .await;
    assert_eq!(r.json[0]["allocated_gb"], 80, "{}", r.json);
    assert_eq!(r.json[0]["free_gb"], 20, "{}", r.json);

    // Overlapping paths: another tenant's is not named, one's own is.
    for sub in ["team", "team/a", "team/a/x"] {
        let r = api.create(BOB, sub, 1).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{sub}: {}", r.json);
        assert_eq!(r.json["error"]["field"], "sub_path");
        assert_eq!(
            r.json["error"]["message"],
            format!(
                "/srv/nfsprov/pool1/{sub}: the path overlaps an existing volume; choose another sub_path"
            )
        );
    }
    let r = api.create(ALICE, "team/a/x", 1).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("overlaps your volume /srv/nfsprov/pool1/team/a"),
        "{}",
        r.json
    );
    // Other tenants' volumes do not exist for alice.
    let bobs = api
        .req(Method::GET, Some(BOB), "/api/v1/volumes", None)
        .await;
    let bob_id = bobs.json[0]["id"].as_i64().unwrap();
    let bob_url = format!("/api/v1/volumes/{bob_id}");
    let bobs_volume = api.req(Method::GET, Some(BOB), &bob_url, None).await;
    assert_eq!(bobs_volume.status, StatusCode::OK, "{}", bobs_volume.json);
    let attempts = [
        (Method::GET, bob_url.clone(), None),
        (Method::DELETE, bob_url.clone(), None),
        (
            Method::PATCH,
            bob_url.clone(),
            Some(json!({"clients": [{"host": "*", "options": "rw,no_root_squash"}]})),
        ),
        (Method::GET, format!("/api/v1.0/volumes/{bob_id}/"), None),
        (Method::DELETE, format!("/api/v1.0/volumes/{bob_id}/"), None),
    ];
    for (m, path, body) in attempts {
        let r = api.req(m.clone(), Some(ALICE), &path, body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{m} {path}: {}", r.json);
        if path.starts_with("/api/v1.0/") {
            assert_eq!(r.json, json!({"detail": "Not found."}), "{m} {path}");
        }
        // Refused, and his volume is exactly as it was: size, clients, options, state.
        let now = api.req(Method::GET, Some(BOB), &bob_url, None).await;
        assert_eq!(now.status, StatusCode::OK, "{}", now.json);
        // (Leaving out what the failing reconciler records: last_error, updated_at.)
        let as_owned = |v: &Value| {
            let mut v = v.clone();
            let row = v.as_object_mut().unwrap();
            row.remove("last_error");
            row.remove("updated_at");
            v
        };
        assert_eq!(
            as_owned(&now.json),
            as_owned(&bobs_volume.json),
            "{m} {path}"
        );
        assert_eq!(now.json["state"], "creating", "{m} {path}");
    }
    assert_eq!(api.snapshot().await, before_capacity);
    assert_ne!(before, before_capacity);

    // A delete gives quota and capacity back at once.
    let alices = api
        .req(Method::GET, Some(ALICE), "/api/v1/volumes", None)
        .await;
    let id = alices.json[0]["id"].as_i64().unwrap();
    let r = api
        .req(
            Method::DELETE,
            Some(ALICE),
            &format!("/api/v1/volumes/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    assert_eq!(api.user("alice").await["used_gb"], 0);
    let r = api.create(ALICE, "b", 50).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
}

#[tokio::test]
async fn idempotency_keys_replay_the_same_request_and_refuse_another() {
    let api = Api::start(100, 50).await;
    let post = |login: Login, key: &'static str, body: Value| {
        let api = &api;
        async move {
            api.post_raw(
                login,
                "/api/v1/volumes",
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", key),
                ],
                body.to_string(),
            )
            .await
        }
    };
    let first = post(ALICE, "k-1", native_body("keyed", 2)).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.json);
    assert!(!first.headers.contains_key("idempotent-replayed"));
    let state = api.snapshot().await;

    let again = post(ALICE, "k-1", native_body("keyed", 2)).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.json);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.json["id"], first.json["id"]);
    assert_eq!(api.snapshot().await, state, "a replay records nothing");

    let other = post(ALICE, "k-1", native_body("keyed-other", 2)).await;
    assert_eq!(other.status, StatusCode::CONFLICT, "{}", other.json);
    assert_eq!(
        other.json["error"]["field"], "Idempotency-Key",
        "{}",
        other.json
    );
    assert_eq!(api.snapshot().await, state);

    // Another user's key is their own.
    let bobs = post(BOB, "k-1", native_body("bob-keyed", 2)).await;
    assert_eq!(bobs.status, StatusCode::ACCEPTED, "{}", bobs.json);
    assert!(!bobs.headers.contains_key("idempotent-replayed"));
    assert_ne!(bobs.json["id"], first.json["id"]);
    assert_eq!(bobs.json["owner"], "bob");

    let state = api.snapshot().await;
    let long = "k".repeat(256);
    for key in ["", long.as_str()] {
        let r = api
            .post_raw(
                ALICE,
                "/api/v1/volumes",
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", key),
                ],
                native_body("k2", 1).to_string(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
        assert_eq!(r.json["error"]["field"], "Idempotency-Key", "{}", r.json);
    }
    assert_eq!(api.snapshot().await, state);
}

#[tokio::test]
async fn hootie_shapes_and_framework_errors_are_json() {
    let api = Api::start(100, 50).await;
    let r = api
        .req(Method::GET, None, "/api/v1.0/rootpaths/", None)
        .await;
    assert_eq!(
        r.json,
        json!([{"pk": 1, "server_path": "127.0.0.1:/srv/nfsprov/pool1"}])
    );
    let r = api
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1/volumes",
            Some(json!({"root_path_id": 1, "sub_path": "h/one", "size_gb": 3,
                        "clients": [{"host": "10.0.0.1", "options": "rw,sync"},
                                    {"host": "client.example", "options": "rw,sync"}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    let id = r.json["id"].as_i64().unwrap();
    let want = json!({
        "allowed_hosts": "10.0.0.1 client.example",
        "fileserver": "127.0.0.1",
        "fullpath": "/srv/nfsprov/pool1/h/one",
        "options": "rw,sync",
        "owner": "alice",
        "pk": id,
        "root_path": 1,
        "size_GB": 3,
        "sub_path": "h/one",
    });
    for path in [
        format!("/api/v1.0/volumes/{id}/"),
        format!("/api/v1.0/volumes/{id}"),
    ] {
        let r = api.req(Method::GET, Some(ALICE), &path, None).await;
        assert_eq!((r.status, &r.json), (StatusCode::OK, &want), "{path}");
    }
    for path in ["/api/v1.0/volumes/", "/api/v1.0/volumes"] {
        let r = api.req(Method::GET, Some(ALICE), path, None).await;
        assert_eq!(
            (r.status, &r.json),
            (StatusCode::OK, &json!([want])),
            "{path}"
        );
        let r = api.req(Method::GET, Some(BOB), path, None).await;
        assert_eq!(r.json, json!([]), "{path}");
    }
    for path in ["/api/v1.0/volumes/999/", "/api/v1.0/volumes/x/"] {
        let r = api.req(Method::GET, Some(ALICE), path, None).await;
        assert_eq!(
            (r.status, r.json),
            (StatusCode::NOT_FOUND, json!({"detail": "Not found."}))
        );
    }
    // hootie's DELETE: 204 and gone from its view at once.
    let r = api
        .req(
            Method::DELETE,
            Some(ALICE),
            &format!("/api/v1.0/volumes/{id}/"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api
        .req(Method::GET, Some(ALICE), "/api/v1.0/volumes/", None)
        .await;
    assert_eq!(r.json, json!([]));

    // Errors the framework answers come in the API's shape.
    let r = api
        .req(Method::GET, Some(ALICE), "/api/v1/nowhere", None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json["error"]["code"], "not_found", "{}", r.json);
    let r = api
        .req(Method::PUT, Some(ALICE), "/api/v1/volumes", Some(json!({})))
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(is_native_error(&r), "{}", r.json);
    let r = api
        .req(
            Method::PUT,
            Some(ALICE),
            "/api/v1.0/volumes/",
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.json["detail"].is_string(), "{}", r.json);
    let r = api
        .req(Method::GET, Some(ALICE), "/api/v1/volumes/abc", None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(is_native_error(&r), "{}", r.json);
}

#[tokio::test]
async fn listings_are_paged_with_a_link_to_the_next_page() {
    let api = Api::start(100, 50).await;
    let mut ids = Vec::new();
    for sub in ["p1", "p2", "p3"] {
        let r = api.create(ALICE, sub, 1).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
        ids.push(r.json["id"].as_i64().unwrap());
    }
    let r = api
        .req(
            Method::DELETE,
            Some(ALICE),
            &format!("/api/v1/volumes/{}", ids[2]),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    let mut path = "/api/v1/volumes?include_deleted=true&limit=2".to_string();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = api.req(Method::GET, Some(ALICE), &path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        seen.extend(
            r.json
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["id"].as_i64().unwrap()),
        );
        let Some(link) = r.headers.get(header::LINK) else {
            break;
        };
        let link = link.to_str().unwrap();
        path = link
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .unwrap()
            .0
            .to_string();
    }
    assert_eq!(seen, ids);
    // The server never confirms the delete, so the volume is still being deleted.
    let r = api
        .req(Method::GET, Some(ALICE), "/api/v1/volumes", None)
        .await;
    let live: Vec<i64> = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        live, ids,
        "a volume being deleted is listed until it is gone"
    );
    assert_eq!(r.json[2]["state"], "deleting", "{}", r.json);
}

/// Rate limits on changes: a user bursting past its limit gets 429 with `Retry-After` and the
/// RateLimit headers in both APIs' error shapes, while another user changing things at the same
/// time, from the same address, is never refused; reads are not limited.
#[tokio::test]
async fn a_bursting_user_is_rate_limited_and_a_quiet_one_is_not() {
    let limits = HttpLimits {
        rate: nfsprov::settings::RateLimits {
            per_user: 1,
            burst_per_user: 5,
            // Refusals at once: this test counts them, the hold is tests/ratelimit.rs's.
            refusal_hold: std::time::Duration::ZERO,
            ..Default::default()
        },
        ..HttpLimits::default()
    };
    // The setup's four changes by admin fit admin's own burst.
    let api = Api::start_with(&limits, 1000, 100).await;
    let (mut alice_ok, mut alice_limited, mut bob_statuses) = (0, Vec::new(), Vec::new());
    for i in 0..30 {
        let r = api
            .req(
                Method::POST,
                Some(ALICE),
                "/api/v1/volumes",
                Some(native_body(&format!("a{i}"), 1)),
            )
            .await;
        match r.status {
            StatusCode::ACCEPTED => alice_ok += 1,
            StatusCode::TOO_MANY_REQUESTS => alice_limited.push(r),
            s => panic!("alice: {s}: {}", r.json),
        }
        if i % 10 == 9 {
            let r = api
                .req(
                    Method::POST,
                    Some(BOB),
                    "/api/v1/volumes",
                    Some(native_body(&format!("b{i}"), 1)),
                )
                .await;
            assert!(
                r.headers.contains_key("ratelimit"),
                "an accepted change says where the caller stands: {:?}",
                r.headers
            );
            bob_statuses.push(r.status);
        }
    }
    assert_eq!(
        bob_statuses,
        vec![StatusCode::ACCEPTED; 3],
        "bob was slowed"
    );
    assert!(
        alice_ok >= 5,
        "alice's burst of 5 was not served: {alice_ok}"
    );
    assert!(
        alice_limited.len() >= 10,
        "alice was limited only {} times of 30",
        alice_limited.len()
    );
    let r = &alice_limited[0];
    assert!(is_native_error(r), "{}", r.json);
    assert_eq!(r.json["error"]["code"], "rate_limited", "{}", r.json);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("user alice"),
        "{}",
        r.json
    );
    let retry: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.headers["ratelimit-policy"], "\"user\";q=5;w=5");
    assert_eq!(
        r.headers["ratelimit"].to_str().unwrap(),
        format!("\"user\";r=0;t={retry}")
    );
    // hootie's API counts the same changes and answers in its own shape.
    let r = api
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1.0/volumes/",
            Some(json!({"root_path": "/srv/nfsprov/pool1", "sub_path": "h1", "size": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.json);
    assert!(r.json["detail"].as_str().unwrap().contains("user alice"));
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    // Reads are not limited.
    let r = api
        .req(Method::GET, Some(ALICE), "/api/v1/volumes", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert!(!r.headers.contains_key("ratelimit"));
}
