//! Rate limits in-process (fast tier): the real router behind the real front door
//! (`serve::app`) on a real SQLite file, driven with `tower::oneshot`.
//!
//! A refusal must cost the service as little as possible, or a burster's refused changes slow
//! every other user (issue 11): a change by a caller over its limit whose credentials were
//! verified a moment ago is answered 429 before authentication touches the database.

mod inproc;

use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode, header};
use serde_json::Value;

use nfsprov::model::Role;
use nfsprov::serve::HttpLimits;

use inproc::{ALICE, BOB, Login, basic};

/// `DELETE` of a volume nobody has: a change (counted by the rate limits) that changes nothing.
async fn delete_nothing(app: &Router, who: Login) -> (StatusCode, HeaderMap, Value) {
    let r = inproc::request(
        app,
        Method::DELETE,
        Some(&basic(who)),
        "/api/v1/volumes/999999",
        &[],
        None,
    )
    .await;
    assert!(!r.json.is_null(), "{}: no JSON body", r.status);
    (r.status, r.headers, r.json)
}

/// The service with alice and bob, rate limits of `rate`; its data directory.
async fn start(rate: nfsprov::settings::RateLimits) -> (Router, tempfile::TempDir) {
    let limits = HttpLimits {
        rate,
        ..HttpLimits::default()
    };
    let (app, hub, dir) = inproc::start_with(&limits, 100).await;
    for (name, password) in [ALICE, BOB] {
        nfsprov::admin::add_user(hub.db(), name, password, Role::User, 10)
            .await
            .unwrap();
    }
    (app, dir)
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
    let (app, dir) = start(nfsprov::settings::RateLimits {
        per_user: 1,
        burst_per_user: 3,
        refusal_hold: std::time::Duration::ZERO,
        ..Default::default()
    })
    .await;
    let data = dir.path().join("data");
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

/// A refused change's 429 is held (`NFSPROV_RATE_REFUSAL_HOLD_MS`) so a client sending past its
/// limit gets one refusal per connection per hold instead of thousands a second, and holding
/// it ties up nothing another user needs: with 64 of alice's refusals held, bob's change is
/// served and all 64 are still held. A short hold is then seen to pass before the 429 (a lower
/// bound only: a slow machine can make it later, never earlier). Without the hold alice's
/// refusals come back at once and the first check fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_held_without_holding_up_anyone_else() {
    let rate = |hold_ms| nfsprov::settings::RateLimits {
        per_user: 1,
        burst_per_user: 2,
        refusal_hold: std::time::Duration::from_millis(hold_ms),
        ..Default::default()
    };
    let (app, _dir) = start(rate(3_600_000)).await;
    for _ in 0..2 {
        let (status, _, json) = delete_nothing(&app, ALICE).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{json}");
    }
    let held: Vec<_> = (0..64)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { delete_nothing(&app, ALICE).await })
        })
        .collect();
    let (status, _, json) = delete_nothing(&app, BOB).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "bob was not served: {json}");
    let answered = held.iter().filter(|h| h.is_finished()).count();
    assert_eq!(
        answered, 0,
        "{answered} of alice's 64 refusals came back before the hold"
    );
    for h in held {
        h.abort();
    }

    let hold = std::time::Duration::from_millis(300);
    let (app, _dir) = start(rate(300)).await;
    for _ in 0..2 {
        delete_nothing(&app, ALICE).await;
    }
    let asked = std::time::Instant::now();
    let (status, headers, json) = delete_nothing(&app, ALICE).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
    assert!(
        asked.elapsed() >= hold,
        "refused after {:?}",
        asked.elapsed()
    );
    assert!(headers.contains_key(header::RETRY_AFTER), "{headers:?}");
}
