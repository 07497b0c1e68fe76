//! The API's part of the audit trail: a request id for every request (tower-http
//! `SetRequestId`, returned as `X-Request-Id`), the request's `audit::Context` for the
//! datastore (`Audited`), a record of every denied attempt and of every change no datastore
//! call recorded (`record_requests`), and the views: a volume's history to those who may see
//! the volume, everything to administrators (`AuditReader`).
//!
//! Denied attempts are recorded within `audit::DeniedGate`'s bound, so a client cannot fill
//! the disk through refused requests: at most `NFSPROV_AUDIT_DENIED_PER_SOURCE` records per
//! source address and `NFSPROV_AUDIT_DENIED_TOTAL` in all per minute; what is over the bound
//! is counted in one `denied.suppressed` record.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

use super::caller::{AuditReader, Authenticated};
use super::{AppState, Caller, NativeError, Route};
use crate::audit::{Admit, Context, DeniedGate, Entry, Record};
use crate::datastore::Datastore;
use crate::error::{Entity, Error};
use crate::model::{UserId, VolumeId};
use crate::settings::AuditLimits;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Most records in one page of a history or of the whole trail.
const MAX_PAGE: usize = 1000;

/// The request's context, put in its extensions by `record_requests`; the actor is filled in
/// by the front door once the credentials check out (`note_actor`).
#[derive(Clone)]
struct RequestAudit {
    ctx: Context,
    actor: Arc<OnceLock<(i64, String)>>,
}

/// Called by the front door with the authenticated user.
pub(super) fn note_actor(req: &Request, id: UserId, username: &str) {
    if let Some(a) = req.extensions().get::<RequestAudit>() {
        let _ = a.actor.set((id.0, username.to_owned()));
    }
}

/// The audit context of a change: who (the authenticated caller), from where, which request.
pub struct Audited(pub Context);

impl<S: Send + Sync> FromRequestParts<S> for Audited {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut ctx = match parts.extensions.get::<RequestAudit>() {
            Some(a) => a.ctx.clone(),
            // Outside `record_requests` (a router built without it): still a context.
            None => context_of(parts),
        };
        if let Some(Authenticated(u)) = parts.extensions.get::<Authenticated>() {
            ctx.actor = Some(u.username.clone());
            ctx.actor_id = Some(u.id.0);
        }
        Ok(Audited(ctx))
    }
}

fn context_of(parts: &Parts) -> Context {
    let mut ctx = Context::new(parts.method.as_str(), parts.uri.path());
    ctx.source = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    ctx.request_id = parts
        .headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    ctx
}

/// Request ids: 128 random bits, hex. A client's own `X-Request-Id` is replaced, so the id in
/// an audit record is always the server's.
#[derive(Clone, Copy)]
struct RandomId;

impl MakeRequestId for RandomId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = format!("{:032x}", rand::random::<u128>());
        Some(RequestId::new(
            HeaderValue::from_str(&id).expect("hex is a header value"),
        ))
    }
}

#[derive(Clone)]
struct Recorder {
    db: Datastore,
    gate: Arc<DeniedGate>,
}

/// `app` with request ids and `record_requests` around it (outermost, so that every answer,
/// the front door's and the framework's included, is seen).
pub(super) fn around(app: Router, db: Datastore, limits: AuditLimits) -> Router {
    let recorder = Recorder {
        db,
        gate: Arc::new(DeniedGate::new(
            limits.denied_per_source,
            limits.denied_total,
            std::time::Duration::from_secs(60),
        )),
    };
    app.layer(middleware::from_fn_with_state(recorder, record_requests))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, RandomId))
        .layer(middleware::map_request(|mut req: Request| async move {
            req.headers_mut().remove(REQUEST_ID);
            req
        }))
}

/// Record a change that no datastore call recorded in its own transaction (administrators'
/// changes to servers, root paths and users; API tokens), right after it committed, with its
/// object and before -> after. Never fails the request: the change is made; if the record
/// cannot be written, `record_requests` tries its generic one and the log says why.
pub(super) async fn record_change(
    st: &AppState,
    ctx: &Context,
    action: &str,
    object: String,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) {
    let entry = Entry {
        action: action.into(),
        object: Some(object),
        before,
        after,
        outcome: "recorded".into(),
        ..Entry::default()
    };
    if let Err(err) = st.db().record_audit(ctx, &entry).await {
        tracing::warn!(request_id = ?ctx.request_id, "writing an audit record of {action}: {err:#}");
    }
}

/// A value as an audit record shows it (`serde_json`), `null` if it cannot be.
pub(super) fn fields(v: &impl serde::Serialize) -> Option<serde_json::Value> {
    serde_json::to_value(v).ok()
}

/// Record a denied attempt (any 4xx), within the gate's bound, and a change (a 2xx to a
/// method that changes things) that no datastore call recorded in its own transaction.
async fn record_requests(State(rec): State<Recorder>, mut req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let audit = RequestAudit {
        ctx: context_of(&parts),
        actor: Arc::default(),
    };
    let claimed = claimed_user(&parts);
    req = Request::from_parts(parts, body);
    req.extensions_mut().insert(audit.clone());
    let changes = !matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    let resp = next.run(req).await;
    let status = resp.status();
    if audit.ctx.was_recorded() {
        return resp;
    }
    let mut ctx = audit.ctx.clone();
    if let Some((id, name)) = audit.actor.get() {
        (ctx.actor, ctx.actor_id) = (Some(name.clone()), Some(*id));
    }
    let mut entries = Vec::new();
    if status.is_client_error() {
        let source = ctx.source.clone().unwrap_or_default();
        if let Admit::Yes { suppressed } = rec.gate.admit(&source, std::time::Instant::now()) {
            if suppressed > 0 {
                entries.push(Entry {
                    action: "denied.suppressed".into(),
                    after: Some(serde_json::json!({ "count": suppressed })),
                    outcome: format!(
                        "{suppressed} denied attempts were over the audit bound and not recorded"
                    ),
                    ..Entry::default()
                });
            }
            entries.push(Entry {
                action: "denied".into(),
                object: Some(ctx.path.clone()),
                after: claimed
                    .filter(|_| ctx.actor.is_none())
                    .map(|u| serde_json::json!({ "claimed_user": u })),
                status: Some(status.as_u16()),
                outcome: status.canonical_reason().unwrap_or("refused").into(),
                ..Entry::default()
            });
        }
    } else if changes && status.is_success() {
        entries.push(Entry {
            action: "request".into(),
            object: Some(ctx.path.clone()),
            status: Some(status.as_u16()),
            outcome: "succeeded (recorded per request, without before -> after)".into(),
            ..Entry::default()
        });
    }
    for e in entries {
        if let Err(err) = rec.db.record_audit(&ctx, &e).await {
            tracing::warn!(request_id = ?ctx.request_id, "writing an audit record: {err:#}");
        }
    }
    resp
}

/// The user name a Basic `Authorization` header claims (never its password), at most 256
/// bytes of it.
fn claimed_user(parts: &Parts) -> Option<String> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8_lossy(&decoded);
    let user = text.split(':').next()?;
    Some(user.chars().take(256).collect())
}

pub(super) fn routes() -> Vec<Route> {
    vec![
        Route::get("/api/v1/volumes/{id}/history", volume_history),
        Route::get("/api/v1/audit", all_records),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    limit: Option<usize>,
}

/// The query string; a malformed one is a 400 naming the parameter.
struct PageParams {
    after: i64,
    limit: usize,
}

impl<S: Send + Sync> FromRequestParts<S> for PageParams {
    type Rejection = NativeError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, NativeError> {
        let Query(q) = Query::<PageQuery>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                let message = e.body_text();
                Error::invalid(super::query_field(&message), message.clone())
            })?;
        let limit = q.limit.unwrap_or(MAX_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::invalid("limit", format!("give 1 to {MAX_PAGE}")).into());
        }
        Ok(PageParams {
            after: q.after.unwrap_or(0),
            limit,
        })
    }
}

/// A page of records as JSON (`before`/`after` as JSON, not text), with a `Link` to the next
/// page when it is full.
fn page(records: &[Record], limit: usize, next: impl Fn(i64) -> String) -> Response {
    let body: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).expect("a record serialises");
            for k in ["before", "after"] {
                if let Some(text) = v[k].as_str() {
                    v[k] = serde_json::from_str(text).unwrap_or_else(|_| text.into());
                }
            }
            v
        })
        .collect();
    let mut resp = axum::Json(body).into_response();
    if records.len() == limit
        && let Some(last) = records.last()
        && let Ok(link) = HeaderValue::from_str(&format!("<{}>; rel=\"next\"", next(last.id)))
    {
        resp.headers_mut().insert(header::LINK, link);
    }
    resp
}

/// `GET /api/v1/volumes/{id}/history`: the volume's records, to whoever may see the volume
/// (its owner, administrators); another user's volume is 404 as everywhere.
async fn volume_history(
    State(st): State<AppState>,
    p: PageParams,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Response, NativeError> {
    let id = id
        .parse::<i64>()
        .map(VolumeId)
        .map_err(|_| Error::not_found(Entity::Volume, format!("{id:?}")))?;
    st.db().volume_for(id, &user).await?;
    let records = st.db().audit_records(Some(id.0), p.after, p.limit).await?;
    let limit = p.limit;
    Ok(page(&records, limit, |last| {
        format!("/api/v1/volumes/{id}/history?after={last}&limit={limit}")
    }))
}

/// `GET /api/v1/audit`: every record (see `AuditReader` for who may read them).
async fn all_records(
    State(st): State<AppState>,
    p: PageParams,
    _: AuditReader,
) -> Result<Response, NativeError> {
    let records = st.db().audit_records(None, p.after, p.limit).await?;
    let limit = p.limit;
    Ok(page(&records, limit, |last| {
        format!("/api/v1/audit?after={last}&limit={limit}")
    }))
}
