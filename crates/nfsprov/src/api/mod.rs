//! HTTP API: hootie's `/api/v1.0/` (kept so its users' scripts run unchanged) and the native
//! `/api/v1/`. Both are thin: parse the request into validated types, call the datastore,
//! poke the server's reconciler, render. Errors become HTTP statuses only in `error`.
//!
//! Every request first passes the front door (`front_door`): credentials are checked, and a
//! body's content type, before the body is read, so an unauthenticated client cannot make the
//! server wait for or hold its body; the front door then reads it within its size limit and a
//! memory budget. Body pauses and whole requests are bounded by tower-http layers; errors the
//! framework itself answers are rewritten as JSON. Changes (POST, PUT, PATCH, DELETE) are
//! rate-limited per user and per source right after authentication (`ratelimit`).

mod audit;
mod caller;
mod error;
pub mod hootie;
mod native;
pub mod response;
mod tokens;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
use tower_http::trace::{
    DefaultMakeSpan, DefaultOnFailure, DefaultOnRequest, DefaultOnResponse, TraceLayer,
};

use crate::auth::{AuthLimits, Authenticator, Source};
use crate::datastore::Datastore;
use crate::error::{Entity, Error, Result};
use crate::model::{User, Volume, VolumeId};
use crate::ratelimit::Limiter;
use crate::reconcile::Hub;
use crate::settings::HttpLimits;

pub use audit::Audited;
pub use caller::{Admin, AdminWriter, AuditReader, Caller, Refused, Writer};
pub use error::{HootieError, NativeError};

#[derive(Clone)]
pub struct AppState {
    pub hub: Hub,
    pub auth: Arc<Authenticator>,
    /// Volume listings built at once: a listing of 10,000 volumes takes ~10 MB while it is
    /// built, so unbounded concurrent listings would let memory grow with the request rate.
    list_gate: Arc<tokio::sync::Semaphore>,
}

const CONCURRENT_LISTINGS: usize = 2;

impl AppState {
    pub fn with_auth_limits(hub: Hub, limits: AuthLimits) -> Self {
        AppState {
            hub,
            auth: Arc::new(Authenticator::new(limits)),
            list_gate: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_LISTINGS)),
        }
    }

    /// With an authenticator built by the caller (one that also asks a directory).
    pub fn with_authenticator(hub: Hub, auth: Authenticator) -> Self {
        AppState {
            hub,
            auth: Arc::new(auth),
            list_gate: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_LISTINGS)),
        }
    }

    pub fn db(&self) -> &Datastore {
        self.hub.db()
    }

    /// The volumes `user` may see, rendered by `render`, as a JSON response; `page` limits it
    /// (a full page gets a `Link: <next_page(last id)>; rel="next"` header).
    async fn volume_listing<B: serde::Serialize>(
        &self,
        user: &User,
        include_deleted: bool,
        page: crate::datastore::Page,
        next_page: impl Fn(i64) -> String,
        render: impl Fn(&Volume) -> B,
    ) -> Result<axum::response::Response> {
        use axum::response::IntoResponse;
        let permit = self
            .list_gate
            .clone()
            .acquire_owned()
            .await
            .expect("the gate is never closed");
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.push(b'[');
        let (mut count, mut last) = (0, 0);
        self.db()
            .each_volume_for(user, include_deleted, page, |v| {
                if buf.len() > 1 {
                    buf.push(b',');
                }
                serde_json::to_writer(&mut buf, &render(&v)).expect("a response body serialises");
                (count, last) = (count + 1, v.id.0);
            })
            .await?;
        buf.push(b']');
        let body = axum::body::Bytes::from(buf);
        // The permit is held until the body has been handed to the connection.
        let stream = futures_util::stream::once(async move {
            let _permit = permit;
            Ok::<_, std::convert::Infallible>(body)
        });
        let mut resp = (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            axum::body::Body::from_stream(stream),
        )
            .into_response();
        if page.limit.is_some_and(|l| l > 0 && count == l)
            && let Ok(link) =
                axum::http::HeaderValue::from_str(&format!("<{}>; rel=\"next\"", next_page(last)))
        {
            resp.headers_mut().insert(axum::http::header::LINK, link);
        }
        Ok(resp)
    }

    /// Wait until volume `id` has settled (available, error or deleted) or `timeout` passes;
    /// return its latest state either way.
    async fn wait_settled(&self, id: VolumeId, timeout: Duration) -> Result<Volume> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.hub.changed();
            let v = self.db().volume(id).await?;
            if v.state.is_settled() || !until_changed(changed, deadline).await {
                return Ok(v);
            }
        }
    }
}

/// How long a waiting request (`?wait=true`, hootie's create) goes at most without reading
/// its volume again: a wake-up (`Hub::changed`, from any node on PostgreSQL) normally comes
/// first, but a lost notification or several nodes on one SQLite file must not leave it
/// waiting until its deadline.
const WAIT_RECHECK: Duration = Duration::from_secs(1);

/// Wait for `changed` (an outcome recorded), for at most [`WAIT_RECHECK`] and not past
/// `deadline`; whether there is time left to read again.
async fn until_changed(changed: impl std::future::Future, deadline: tokio::time::Instant) -> bool {
    let recheck = tokio::time::Instant::now() + WAIT_RECHECK;
    let _ = tokio::time::timeout_at(recheck.min(deadline), changed).await;
    tokio::time::Instant::now() < deadline
}

/// The API behind its front door. Layers, outermost first: framework errors as JSON, the whole
/// request's timeout, the pause allowed while a body is sent, then `front_door`
/// (authentication, content type, reading the body within its size limit and a memory budget).
pub fn router(state: AppState, limits: &HttpLimits) -> Router {
    let max_body = limits.max_body_bytes;
    let door = FrontDoor {
        app: state.clone(),
        rate: Arc::new(Limiter::new(limits.rate)),
        max_body,
        body_budget: Arc::new(tokio::sync::Semaphore::new(
            max_body
                .saturating_mul(BODIES_IN_MEMORY)
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        )),
    };
    let db = state.db().clone();
    let mut routes = Router::new();
    for r in route_table() {
        routes = routes.route(r.path, r.handler);
    }
    let app = routes
        .layer(middleware::from_fn_with_state(door, front_door))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyTimeoutLayer::new(limits.body_timeout))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(middleware::from_fn_with_state(
            ErrorShape { max_body },
            errors_as_json,
        ))
        // At DEBUG (`NFSPROV_LOG=tower_http=debug`), each request is a span that records its
        // method, URI and headers, for operators; nothing at the default level.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(
                    DefaultMakeSpan::new()
                        .level(tracing::Level::DEBUG)
                        .include_headers(true),
                )
                .on_request(DefaultOnRequest::new().level(tracing::Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(tracing::Level::DEBUG))
                // A 5xx is already logged where it happens (`api::error`); tower-http's own line
                // would add an ERROR at the default level.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        // Outside the trace layer, so credentials are marked before the span records the
        // headers: they print as `Sensitive` there and in any Debug of the request's headers.
        // `tests/front_door.rs` (secrets never logged) fails without this.
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::PROXY_AUTHORIZATION,
            header::COOKIE,
        ]))
        .with_state(state);
    // Request ids and the audit of denied attempts, outside everything else.
    audit::around(app, db, limits.audit)
}

/// One endpoint: a method, a path pattern and its handler. The router is built from
/// `route_table` and nothing else, so the table is every endpoint there is: the role matrix
/// test (`tests/roles.rs`) drives each with every role and fails on one it has no
/// expectation for.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    handler: MethodRouter<AppState>,
}

macro_rules! route_constructors {
    ($($name:ident => $method:ident),*) => {$(
        pub(crate) fn $name<H: Handler<T, AppState>, T: 'static>(path: &'static str, h: H) -> Route {
            Route {
                method: Method::$method,
                path,
                handler: axum::routing::$name(h),
            }
        }
    )*};
}

impl Route {
    route_constructors!(get => GET, post => POST, patch => PATCH, delete => DELETE);
}

/// Every endpoint of both APIs (hootie's, then the native one).
pub fn route_table() -> Vec<Route> {
    let mut all = hootie::routes();
    all.extend(native::routes());
    all.extend(tokens::routes());
    all.extend(audit::routes());
    all
}

/// Request bodies of the largest size held in memory at once; more wait for room.
const BODIES_IN_MEMORY: usize = 64;

#[derive(Clone)]
struct FrontDoor {
    app: AppState,
    /// Rate limits on changes, per user and per source (`ratelimit`).
    rate: Arc<Limiter>,
    max_body: usize,
    /// Bytes of request bodies being read or held: each request reserves its declared length
    /// (the limit if it does not declare one) before reading.
    body_budget: Arc<tokio::sync::Semaphore>,
}

/// hootie's API (`/api/v1.0/`) answers errors in its own shape.
fn is_hootie(path: &str) -> bool {
    path == "/api/v1.0" || path.starts_with("/api/v1.0/")
}

/// Routes anyone may call: the health check and hootie's root path list.
fn is_public(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && matches!(
            path,
            "/api/v1/health" | "/api/v1.0/rootpaths" | "/api/v1.0/rootpaths/"
        )
}

fn error_response(hootie: bool, e: Error) -> Response {
    if hootie {
        HootieError(e).into_response()
    } else {
        NativeError(e).into_response()
    }
}

/// Authenticate, then check the body's content type, all before the body is read; then read
/// the body within the memory budget. The handler finds the caller in the request's
/// extensions (`caller::Authenticated`), through the extractors in `caller`.
async fn front_door(State(door): State<FrontDoor>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if is_public(req.method(), path) {
        return next.run(req).await;
    }
    let hootie = is_hootie(path);
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(Ipv4Addr::UNSPECIFIED.into(), |c| c.0.ip());
    let credentials = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let source = Source::of(peer);
    // A change with credentials verified recently is counted first: a caller over its limit
    // is refused here, before the database, the credential cache or its body (`ratelimit`).
    let change = is_change(req.method());
    let known = if change {
        door.rate.check_known(credentials, source)
    } else {
        None
    };
    let known = match known {
        Some((id, name, Err(refusal))) => {
            audit::note_actor(&req, id, &name);
            return refusal_response(hootie, refusal).await;
        }
        Some((id, _, Ok(v))) => Some((id, v)),
        None => None,
    };
    let st = &door.app;
    let user = match st
        .auth
        .authenticate_for(st.db(), credentials, source, !hootie)
        .await
    {
        Ok(u) => u,
        Err(e) => return error_response(hootie, e),
    };
    audit::note_actor(&req, user.id, &user.username);
    // Other changes are counted once the caller is known, before the body is read.
    let verdict = match known {
        Some((id, v)) if id == user.id => Some(v),
        _ if change => {
            door.rate.remember(credentials, user.id, &user.username);
            match door.rate.check(user.id, &user.username, source) {
                Ok(v) => Some(v),
                Err(refusal) => return refusal_response(hootie, refusal).await,
            }
        }
        _ => None,
    };
    if let Err(e) = check_content_type(req.method(), req.headers(), hootie) {
        return error_response(hootie, e);
    }
    let mut req = if has_body(req.method()) {
        match read_body(&door, req).await {
            Ok(req) => req,
            Err(e) => return error_response(hootie, e),
        }
    } else {
        req
    };
    req.extensions_mut().insert(caller::Authenticated(user));
    let mut resp = next.run(req).await;
    if let Some(v) = verdict {
        v.set_headers(resp.headers_mut());
    }
    resp
}

/// A rate limit's 429, with the headers saying where the caller stands, sent after the
/// refusal's hold (the task holds only its connection meanwhile).
async fn refusal_response(hootie: bool, refusal: crate::ratelimit::Refusal) -> Response {
    if !refusal.hold.is_zero() {
        tokio::time::sleep(refusal.hold).await;
    }
    let mut resp = error_response(hootie, refusal.error);
    refusal.verdict.set_headers(resp.headers_mut());
    resp
}

/// The methods the rate limits count: every one that changes something.
fn is_change(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

fn has_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// The request with its body read into memory, holding room for it in the budget meanwhile.
async fn read_body(door: &FrontDoor, req: Request) -> Result<Request> {
    let (parts, body) = req.into_parts();
    let too_large = || {
        Error::PayloadTooLarge(format!(
            "the request body is larger than the limit of {} bytes",
            door.max_body
        ))
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > door.max_body) {
        return Err(too_large());
    }
    let declared = declared.unwrap_or(door.max_body);
    let room = u32::try_from(declared.max(1)).unwrap_or(u32::MAX);
    let _room = door
        .body_budget
        .acquire_many(room)
        .await
        .expect("the body budget is never closed");
    let bytes = axum::body::to_bytes(body, door.max_body)
        .await
        .map_err(|e| body_error(&e).unwrap_or_else(too_large))?;
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

/// Why a body could not be read, as the client should hear it; `None` if it was too large.
fn body_error(e: &axum::Error) -> Option<Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return None;
        }
        if c.is::<tower_http::timeout::TimeoutError>() {
            return Some(Error::invalid(
                "body",
                "the request body stopped arriving; send it again",
            ));
        }
        cause = c.source();
    }
    Some(Error::invalid(
        "body",
        format!("reading the request body: {e}"),
    ))
}

/// Bodies are JSON (`application/json`). A browser sends `text/plain` and form bodies to
/// another site without asking it first, with the Basic credentials it has cached: refusing
/// them is what keeps a web page from acting as a signed-in user. hootie's API also takes
/// form posts, as Django REST framework did, but only from clients that are not browsers on
/// another site (no `Origin` or `Sec-Fetch-Site` naming one).
fn check_content_type(method: &Method, headers: &HeaderMap, hootie: bool) -> Result<()> {
    if !has_body(method) {
        return Ok(());
    }
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" {
        return Ok(());
    }
    if hootie && essence == "application/x-www-form-urlencoded" && !is_cross_site(headers) {
        return Ok(());
    }
    let got = if ctype.is_empty() {
        "no Content-Type".to_string()
    } else {
        format!("Content-Type {ctype:?}")
    };
    let form_note = if hootie && essence == "application/x-www-form-urlencoded" {
        " (form posts are refused from a browser on another site)"
    } else {
        ""
    };
    Err(Error::UnsupportedMediaType(format!(
        "send the body as JSON with Content-Type: application/json; got {got}{form_note}"
    )))
}

/// Whether a browser says the request comes from a page of another site.
fn is_cross_site(headers: &HeaderMap) -> bool {
    let text = |h| {
        headers
            .get(h)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
    };
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return true;
    }
    match text(header::ORIGIN.as_str()) {
        None => false,
        Some(origin) => {
            let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
            text(header::HOST.as_str()) != Some(origin_host)
        }
    }
}

#[derive(Clone)]
struct ErrorShape {
    max_body: usize,
}

/// Errors answered by the framework or a tower layer (unknown route, wrong method, bad query
/// string, body too large, timeout, ...) come as plain text: give them the API's JSON shape.
async fn errors_as_json(State(shape): State<ErrorShape>, req: Request, next: Next) -> Response {
    let hootie = is_hootie(req.uri().path());
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the request body is larger than the limit of {} bytes",
            shape.max_body
        ),
        StatusCode::REQUEST_TIMEOUT => "the request took too long; send it again".into(),
        _ if text.is_empty() => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string(),
        _ => text,
    };
    let e = match status {
        StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge(message),
        StatusCode::NOT_FOUND => {
            Error::not_found(Entity::Route, format!("{method} {}", uri.path()))
        }
        StatusCode::BAD_REQUEST => Error::invalid(query_field(&message), message.clone()),
        _ => {
            let mut resp = if hootie {
                (
                    status,
                    axum::Json(response::HootieDetail { detail: message }),
                )
                    .into_response()
            } else {
                let code = status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_ascii_lowercase()
                    .replace(' ', "_");
                let body = response::ErrorBody {
                    error: response::ErrorDetail {
                        code,
                        field: None,
                        message,
                    },
                };
                (status, axum::Json(body)).into_response()
            };
            for (name, value) in parts.headers.iter() {
                if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                    resp.headers_mut().insert(name.clone(), value.clone());
                }
            }
            return resp;
        }
    };
    let mut resp = error_response(hootie, e);
    *resp.status_mut() = status;
    resp
}

/// The query parameter a query-string rejection is about: axum names it ("Failed to
/// deserialize query string: wait: ..."); `query` when it does not.
pub(crate) fn query_field(message: &str) -> &str {
    message
        .strip_prefix("Failed to deserialize query string: ")
        .and_then(|rest| rest.split_once(": "))
        .map_or("query", |(f, _)| f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, header::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn bodies_must_be_json_and_hootie_forms_must_not_come_from_another_site() {
        let json = headers(&[("content-type", "application/json; charset=utf-8")]);
        let form = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        let text = headers(&[("content-type", "text/plain")]);
        for hootie in [false, true] {
            assert!(check_content_type(&Method::POST, &json, hootie).is_ok());
            assert!(check_content_type(&Method::PATCH, &text, hootie).is_err());
            assert!(check_content_type(&Method::POST, &HeaderMap::new(), hootie).is_err());
            // Bodiless methods are not checked.
            assert!(check_content_type(&Method::GET, &text, hootie).is_ok());
            assert!(check_content_type(&Method::DELETE, &HeaderMap::new(), hootie).is_ok());
        }
        assert!(check_content_type(&Method::POST, &form, false).is_err());
        assert!(check_content_type(&Method::POST, &form, true).is_ok());
        let same_site = headers(&[
            ("content-type", "application/x-www-form-urlencoded"),
            ("host", "nfsprov.example:8080"),
            ("origin", "https://nfsprov.example:8080"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(check_content_type(&Method::POST, &same_site, true).is_ok());
        for cross in [
            &[("origin", "https://evil.example")][..],
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site")],
            &[("origin", "null")],
        ] {
            let mut h = headers(cross);
            h.insert("content-type", form["content-type"].clone());
            h.insert(
                "host",
                header::HeaderValue::from_static("nfsprov.example:8080"),
            );
            assert!(
                check_content_type(&Method::POST, &h, true).is_err(),
                "{cross:?}"
            );
        }
    }

    #[test]
    fn public_routes_are_only_the_health_check_and_hootie_root_paths() {
        assert!(is_public(&Method::GET, "/api/v1/health"));
        assert!(is_public(&Method::GET, "/api/v1.0/rootpaths/"));
        assert!(!is_public(&Method::POST, "/api/v1.0/rootpaths/"));
        assert!(!is_public(&Method::GET, "/api/v1/rootpaths"));
        assert!(!is_public(&Method::GET, "/api/v1.0/volumes/"));
        assert!(is_hootie("/api/v1.0/volumes/") && !is_hootie("/api/v1/volumes"));
    }
}
