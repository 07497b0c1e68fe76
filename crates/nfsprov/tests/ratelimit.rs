//! Rate limits in-process (fast tier): the real router behind the real front door
//! (`serve::app`) on a real SQLite file, driven with `tower::oneshot`.
//!
//! A refusal must cost the service as little as possible, or a burster's refused changes slow
//! every other user (issue 11): a change by a caller over its limit whose credentials were
//! verified a moment ago is answered 429 before authentication touches the database.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine as _;
use serde_json::Value;
use tower::ServiceExt as _;

use nfsprov::auth::AuthLimits;
use nfsprov::model::Role;
use nfsprov::reconcile::Tuning;
use nfsprov::serve::HttpLimits;

const ALICE: (&str, &str) = ("alice", "alice-pass-1");
const BOB: (&str, &str) = ("bob", "bob-pass-01");

fn basic((user, password): (&str, &str)) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// `DELETE` of a volume nobody has: a change (counted by the rate limits) that changes nothing.
async fn delete_nothing(app: &axum::Router, who: (&str, &str)) -> (StatusCode, HeaderMap, Value) {
    let req = Request::builder()
        .method(Method::DELETE)
        .uri("/api/v1/volumes/999999")
        .header(header::AUTHORIZATION, basic(who))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap())
}

/// Run `sql` on the service's database file through a connection of the test's own.
fn sql(data: &std::path::Path, sql: &str) {
    rusqlite::Connection::open(nfsprov::serve::db_path(data))
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

/// alice goes over her limit; then the users table is moved out of the service's way, so no
/// sign-in can be checked: alice's next change is still refused with 429, `Retry-After` and
/// the RateLimit headers (it never reached the database), while bob's fails for want of the
/// table. With the table back, bob is served again. Before refusals came ahead of
/// authentication, alice's refusal needed the users table too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_limit_is_refused_without_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let limits = HttpLimits {
        rate: nfsprov::settings::RateLimits {
            per_user: 1,
            burst_per_user: 3,
            ..Default::default()
        },
        ..HttpLimits::default()
    };
    let (app, hub) = nfsprov::serve::app(
        &data,
        &limits,
        AuthLimits::default(),
        Tuning::default(),
        None,
    )
    .await
    .unwrap();
    for (name, password) in [ALICE, BOB] {
        nfsprov::admin::add_user(hub.db(), name, password, Role::User, 10)
            .await
            .unwrap();
    }
    for _ in 0..3 {
        let (status, _, json) = delete_nothing(&app, ALICE).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{json}");
    }
    let (status, _, json) = delete_nothing(&app, ALICE).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");

    sql(&data, "ALTER TABLE users RENAME TO users_elsewhere;");
    let (status, headers, json) = delete_nothing(&app, ALICE).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
    assert_eq!(json["error"]["code"], "rate_limited", "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("user alice"),
        "{json}"
    );
    assert!(headers.contains_key(header::RETRY_AFTER), "{headers:?}");
    assert_eq!(headers["ratelimit-policy"], "\"user\";q=3;w=3");
    let (status, _, json) = delete_nothing(&app, BOB).await;
    assert!(
        status.is_server_error(),
        "bob's sign-in worked without the users table: {status} {json}"
    );

    sql(&data, "ALTER TABLE users_elsewhere RENAME TO users;");
    let (status, _, json) = delete_nothing(&app, BOB).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{json}");
}
