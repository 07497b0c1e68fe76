//! The native API, `/api/v1/`: typed volumes with a lifecycle state, per-client options,
//! `?wait=true`, `Idempotency-Key`, and admin endpoints for servers, root paths and users.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::audit::{fields, record_change};
use super::response::{
    Health, RootPathBody, RootUsageBody, ServerBody, SnapshotBody, UsageBody, UserBody, VolumeBody,
    VolumeDetailBody, VolumeUsageBody,
};
use super::{Admin, AdminWriter, AppState, Audited, Caller, NativeError, Route, Writer};
use crate::datastore::{Created, NewServer, NewVolume, UserChange};
use crate::error::{Entity, Error};
use crate::model::*;
use crate::spec::{self, DirMode, ExportOptions, SnapshotName, SubPath};

type NResult<T> = Result<T, NativeError>;

const MAX_WAIT: Duration = Duration::from_secs(60);

pub fn routes() -> Vec<Route> {
    vec![
        Route::get("/api/v1/volumes", list_volumes),
        Route::post("/api/v1/volumes", create_volume),
        Route::get("/api/v1/volumes/{id}", show_volume),
        Route::patch("/api/v1/volumes/{id}", patch_volume),
        Route::delete("/api/v1/volumes/{id}", delete_volume),
        Route::get("/api/v1/volumes/{id}/snapshots", list_snapshots),
        Route::post("/api/v1/volumes/{id}/snapshots", create_snapshot),
        Route::get("/api/v1/volumes/{id}/snapshots/{sid}", show_snapshot),
        Route::delete("/api/v1/volumes/{id}/snapshots/{sid}", delete_snapshot),
        Route::post(
            "/api/v1/volumes/{id}/snapshots/{sid}/restore",
            restore_snapshot,
        ),
        Route::get("/api/v1/rootpaths", list_root_paths),
        Route::post("/api/v1/rootpaths", create_root_path),
        Route::patch("/api/v1/rootpaths/{id}", patch_root_path),
        Route::get("/api/v1/servers", list_servers),
        Route::post("/api/v1/servers", create_server),
        Route::patch("/api/v1/servers/{name}", patch_server),
        Route::get("/api/v1/users", list_users),
        Route::post("/api/v1/users", create_user),
        Route::patch("/api/v1/users/{username}", patch_user),
        Route::get("/api/v1/health", || async { Json(Health { status: "ok" }) }),
        Route::get("/api/v1/volumes/{id}/usage", volume_usage),
    ]
}

/// Deserialize a JSON body; a type error names the field it is in.
pub(super) fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, Error> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "body".to_string()
        } else {
            path
        };
        // serde repeats a wrongly typed value (`invalid type: integer `123`...`): never a
        // password's.
        let message = if field == "password" {
            "expected a string".to_string()
        } else {
            e.inner().to_string()
        };
        Error::invalid(field, message)
    })
}

fn field_err(name: &str) -> impl Fn(spec::SpecError) -> Error + '_ {
    move |e| Error::invalid(name, e.0)
}

#[derive(Deserialize, Default)]
struct WaitQuery {
    #[serde(default)]
    wait: Option<bool>,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    include_deleted: Option<bool>,
    /// Listing: volumes with an id above this one.
    #[serde(default)]
    after: Option<i64>,
    /// Listing: at most this many (1 to `MAX_PAGE`, the default).
    #[serde(default)]
    limit: Option<usize>,
    /// Delete: the volume's snapshots go too (without it, a volume with snapshots is kept).
    #[serde(default)]
    with_snapshots: Option<bool>,
}

/// Most volumes in one listing response: bounds its size (about 1 KB each) whatever the
/// history of deleted volumes; the `Link` header leads to the next page.
const MAX_PAGE: usize = 10_000;

/// The query string. A malformed one is a 400 naming the parameter, in the API's shape; a
/// handler lists it before the caller's rights, so it is checked first.
struct Params(WaitQuery);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = NativeError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, NativeError> {
        match Query::<WaitQuery>::from_request_parts(parts, state).await {
            Ok(Query(q)) => Ok(Params(q)),
            Err(e) => {
                let message = e.body_text();
                Err(Error::invalid(super::query_field(&message), message.clone()).into())
            }
        }
    }
}

impl WaitQuery {
    fn timeout(&self) -> Duration {
        self.timeout
            .map(Duration::from_secs)
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT)
    }
}

/// Options as `"rw,sync"` or `["rw", "sync"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum OptionsIn {
    Text(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientIn {
    host: String,
    #[serde(default)]
    options: Option<OptionsIn>,
}

fn parse_clients(clients: &[ClientIn]) -> Result<Vec<ClientRule>, Error> {
    if clients.is_empty() {
        return Err(Error::invalid("clients", "list at least one client"));
    }
    spec::client_count(clients.len()).map_err(field_err("clients"))?;
    let mut out: Vec<ClientRule> = Vec::with_capacity(clients.len());
    let mut seen = std::collections::HashSet::with_capacity(clients.len());
    for (i, c) in clients.iter().enumerate() {
        let host = ClientSpec::parse(&c.host).map_err(field_err(&format!("clients[{i}].host")))?;
        let opt_field = format!("clients[{i}].options");
        let options = match &c.options {
            None => ExportOptions::parse("rw"),
            Some(OptionsIn::Text(s)) => ExportOptions::parse(s),
            Some(OptionsIn::List(l)) => ExportOptions::from_list(l),
        }
        .map_err(field_err(&opt_field))?;
        if !seen.insert(host.clone()) {
            return Err(Error::invalid(
                format!("clients[{i}].host"),
                format!("{host} is listed twice"),
            ));
        }
        out.push(ClientRule { host, options });
    }
    Ok(out)
}

use crate::spec::ClientSpec;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateVolumeIn {
    root_path_id: i64,
    sub_path: String,
    size_gb: i64,
    clients: Vec<ClientIn>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
    /// Take over a directory already at the path (admins only).
    #[serde(default)]
    adopt_existing: bool,
}

async fn create_volume(
    State(st): State<AppState>,
    Params(q): Params,
    Writer(user): Writer,
    Audited(ctx): Audited,
    headers: HeaderMap,
    body: Bytes,
) -> NResult<Response> {
    let req: CreateVolumeIn = parse_body(&body)?;
    if req.adopt_existing && !user.is_admin() {
        return Err(Error::Forbidden(
            "adopt_existing: only an administrator may adopt a directory that already exists on the server".into(),
        )
        .into());
    }
    let sub_path = SubPath::parse(&req.sub_path).map_err(field_err("sub_path"))?;
    let size_gb = spec::volume_size(req.size_gb).map_err(field_err("size_gb"))?;
    let clients = parse_clients(&req.clients)?;
    let uid = spec::owner_id(req.uid.unwrap_or(0)).map_err(field_err("uid"))?;
    let gid = spec::owner_id(req.gid.unwrap_or(0)).map_err(field_err("gid"))?;
    let mode = match &req.mode {
        Some(m) => DirMode::parse(m).map_err(field_err("mode"))?,
        None => DirMode::default(),
    };
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    Error::invalid("Idempotency-Key", "must be 1-255 visible ASCII characters")
                })?;
            Some(k.to_string())
        }
    };
    let request_hash = key.as_ref().map(|_| hex::encode(Sha256::digest(&body)));
    let nv = NewVolume {
        owner: user.id,
        root_path: RootPathId(req.root_path_id),
        sub_path,
        size_gb,
        clients,
        mode,
        uid,
        gid,
        adopt_existing: req.adopt_existing,
        idempotency_key: key,
        request_hash,
        restore_from: None,
    };
    let (v, replayed) = match st.db().create_volume_as(&nv, &ctx).await? {
        Created::New(v) => (v, false),
        Created::Replayed(v) => (v, true),
    };
    if !replayed {
        st.hub.poke(v.server_id);
    }
    let mut resp = respond_after_wait(&st, v, &q, StatusCode::CREATED).await?;
    if replayed {
        resp.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}

/// 202 with the volume as recorded, or with `?wait=true` its settled state: `done` status
/// when applied, 502 with the server's message when the server refused it.
async fn respond_after_wait(
    st: &AppState,
    v: Volume,
    q: &WaitQuery,
    done: StatusCode,
) -> NResult<Response> {
    if !q.wait.unwrap_or(false) {
        let status = if v.state.is_settled() {
            done
        } else {
            StatusCode::ACCEPTED
        };
        return Ok((status, Json(VolumeBody::from(&v))).into_response());
    }
    let v = st.wait_settled(v.id, q.timeout()).await?;
    let status = match v.state {
        VolumeState::Available | VolumeState::Deleted => done,
        VolumeState::Error => StatusCode::BAD_GATEWAY,
        _ => StatusCode::ACCEPTED,
    };
    Ok((status, Json(VolumeBody::from(&v))).into_response())
}

fn parse_id(id: &str) -> Result<VolumeId, Error> {
    id.parse::<i64>()
        .map(VolumeId)
        .map_err(|_| Error::not_found(Entity::Volume, format!("{id:?}")))
}

async fn list_volumes(
    State(st): State<AppState>,
    Params(q): Params,
    Caller(user): Caller,
) -> NResult<Response> {
    let limit = q.limit.unwrap_or(MAX_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::invalid("limit", format!("give 1 to {MAX_PAGE}")).into());
    }
    let include_deleted = q.include_deleted.unwrap_or(false);
    let page = crate::datastore::Page {
        after: q.after.unwrap_or(0),
        limit: Some(limit),
        hide_deleting: false,
    };
    let next = |last: i64| {
        format!("/api/v1/volumes?after={last}&limit={limit}&include_deleted={include_deleted}")
    };
    Ok(st
        .volume_listing(&user, include_deleted, page, next, |v: &Volume| {
            VolumeBody::from(v)
        })
        .await?)
}

async fn show_volume(
    State(st): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> NResult<Json<VolumeDetailBody>> {
    let v = st.db().volume_for(parse_id(&id)?, &user).await?;
    let sizes = st.db().size_state(v.id).await?;
    Ok(Json(VolumeDetailBody::new(&v, &sizes)))
}

/// A PATCH changes the clients or the size (`resize_volume`), one of them per request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchVolumeIn {
    #[serde(default)]
    clients: Option<Vec<ClientIn>>,
    #[serde(default)]
    size_gb: Option<i64>,
}

async fn patch_volume(
    State(st): State<AppState>,
    Params(q): Params,
    Writer(user): Writer,
    Audited(ctx): Audited,
    Path(id): Path<String>,
    body: Bytes,
) -> NResult<Response> {
    let id = parse_id(&id)?;
    let req: PatchVolumeIn = parse_body(&body)?;
    let clients = match (req.clients, req.size_gb) {
        (Some(clients), None) => clients,
        (None, Some(size_gb)) => return resize_volume(&st, &q, &user, id, size_gb, &ctx).await,
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "size_gb",
                "change the size and the clients in separate requests",
            )
            .into());
        }
        (None, None) => {
            return Err(Error::invalid("body", "missing field `clients` (or `size_gb`)").into());
        }
    };
    let clients = parse_clients(&clients)?;
    let v = st
        .db()
        .update_volume_clients(id, &user, &clients, &ctx)
        .await?;
    st.hub.poke(v.server_id);
    respond_after_wait(&st, v, &q, StatusCode::OK).await
}

async fn delete_volume(
    State(st): State<AppState>,
    Params(q): Params,
    Writer(user): Writer,
    Audited(ctx): Audited,
    Path(id): Path<String>,
) -> NResult<Response> {
    let with_snapshots = q.with_snapshots.unwrap_or(false);
    let v = st
        .db()
        .delete_volume(parse_id(&id)?, &user, with_snapshots, &ctx)
        .await?;
    st.hub.poke(v.server_id);
    respond_after_wait(&st, v, &q, StatusCode::OK).await
}

// ---- snapshots (issue 12) ------------------------------------------------------------------

fn parse_snapshot_id(volume: VolumeId, sid: &str) -> Result<SnapshotId, Error> {
    sid.parse::<i64>()
        .map(SnapshotId)
        .map_err(|_| Error::not_found(Entity::Snapshot, format!("{sid:?} of volume {volume}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSnapshotIn {
    name: String,
}

/// 202 with the snapshot as recorded, or with `?wait=true` its settled state: `done` when
/// made (or removed), 502 with the server's message when it failed.
async fn respond_snapshot(
    st: &AppState,
    s: Snapshot,
    q: &WaitQuery,
    done: StatusCode,
) -> NResult<Response> {
    let mut s = s;
    if q.wait.unwrap_or(false) {
        let deadline = tokio::time::Instant::now() + q.timeout();
        while !s.state.is_settled() {
            let changed = st.hub.changed();
            s = st.db().snapshot(s.id).await?;
            if s.state.is_settled() || !super::until_changed(changed, deadline).await {
                break;
            }
        }
    }
    let status = match s.state {
        SnapshotState::Available | SnapshotState::Deleted => done,
        SnapshotState::Error => StatusCode::BAD_GATEWAY,
        _ => StatusCode::ACCEPTED,
    };
    Ok((status, Json(SnapshotBody::from(&s))).into_response())
}

async fn list_snapshots(
    State(st): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> NResult<Json<Vec<SnapshotBody>>> {
    let snaps = st.db().snapshots_for(parse_id(&id)?, &user).await?;
    Ok(Json(snaps.iter().map(SnapshotBody::from).collect()))
}

async fn create_snapshot(
    State(st): State<AppState>,
    Params(q): Params,
    Writer(user): Writer,
    Audited(ctx): Audited,
    Path(id): Path<String>,
    body: Bytes,
) -> NResult<Response> {
    let id = parse_id(&id)?;
    let req: CreateSnapshotIn = parse_body(&body)?;
    let name = SnapshotName::parse(&req.name).map_err(field_err("name"))?;
    let max = spec::limits().max_snapshots;
    let s = st.db().create_snapshot(id, &user, &name, max, &ctx).await?;
    let v = st.db().volume(id).await?;
    st.hub.poke(v.server_id);
    respond_snapshot(&st, s, &q, StatusCode::CREATED).await
}

async fn show_snapshot(
    State(st): State<AppState>,
    Caller(user): Caller,
    Path((id, sid)): Path<(String, String)>,
) -> NResult<Json<SnapshotBody>> {
    let id = parse_id(&id)?;
    let s = st
        .db()
        .snapshot_for(id, parse_snapshot_id(id, &sid)?, &user)
        .await?;
    Ok(Json(SnapshotBody::from(&s)))
}

async fn delete_snapshot(
    State(st): State<AppState>,
    Params(q): Params,
    Writer(user): Writer,
    Audited(ctx): Audited,
    Path((id, sid)): Path<(String, String)>,
) -> NResult<Response> {
    let id = parse_id(&id)?;
    let s = st
        .db()
        .delete_snapshot(id, parse_snapshot_id(id, &sid)?, &user, &ctx)
        .await?;
    let v = st.db().volume(id).await?;
    st.hub.poke(v.server_id);
    respond_snapshot(&st, s, &q, StatusCode::OK).await
}

/// A restore makes a new volume on the snapshot's root path, of its volume's size (charged
/// to the caller's quota and the root path's capacity like a create).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreIn {
    sub_path: String,
    clients: Vec<ClientIn>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
}

async fn restore_snapshot(
    State(st): State<AppState>,
    Params(q): Params,
    Writer(user): Writer,
    Audited(ctx): Audited,
    Path((id, sid)): Path<(String, String)>,
    body: Bytes,
) -> NResult<Response> {
    let id = parse_id(&id)?;
    let sid = parse_snapshot_id(id, &sid)?;
    let req: RestoreIn = parse_body(&body)?;
    let sub_path = SubPath::parse(&req.sub_path).map_err(field_err("sub_path"))?;
    let clients = parse_clients(&req.clients)?;
    let uid = spec::owner_id(req.uid.unwrap_or(0)).map_err(field_err("uid"))?;
    let gid = spec::owner_id(req.gid.unwrap_or(0)).map_err(field_err("gid"))?;
    let mode = match &req.mode {
        Some(m) => DirMode::parse(m).map_err(field_err("mode"))?,
        None => DirMode::default(),
    };
    let source = st.db().restore_source(id, sid, &user).await?;
    let nv = NewVolume {
        owner: source.owner_id,
        root_path: source.root_path_id,
        sub_path,
        size_gb: source.size_gb,
        clients,
        mode,
        uid,
        gid,
        adopt_existing: false,
        idempotency_key: None,
        request_hash: None,
        restore_from: Some(sid),
    };
    let v = match st.db().create_volume_as(&nv, &ctx).await? {
        Created::New(v) | Created::Replayed(v) => v,
    };
    st.hub.poke(v.server_id);
    respond_after_wait(&st, v, &q, StatusCode::CREATED).await
}

// ---- admin ---------------------------------------------------------------------------------

async fn list_root_paths(
    State(st): State<AppState>,
    _: Caller,
) -> NResult<Json<Vec<RootPathBody>>> {
    let rps = st.db().root_paths().await?;
    let usage = st.db().latest_root_usage().await?;
    Ok(Json(
        rps.iter()
            .map(|rp| RootPathBody {
                usage: usage.get(&rp.id).map(RootUsageBody::from),
                ..RootPathBody::from(rp)
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRootPathIn {
    server: String,
    path: String,
    capacity_gb: i64,
    #[serde(default)]
    delete_policy: Option<DeletePolicy>,
    /// What ordinary users may ask for there (left out: the safe defaults).
    #[serde(default)]
    export_policy: Option<spec::ExportPolicyDoc>,
    /// How it holds its volumes: `directory` (left out) or `btrfs`, checked on the server.
    #[serde(default)]
    layout: Option<String>,
}

async fn create_root_path(
    State(st): State<AppState>,
    _: AdminWriter,
    Audited(ctx): Audited,
    body: Bytes,
) -> NResult<Response> {
    let req: CreateRootPathIn = parse_body(&body)?;
    let layout = crate::admin::checked_layout(req.layout.as_deref())?;
    let rp = crate::admin::add_root_path_checked(
        st.db(),
        &req.server,
        &req.path,
        req.capacity_gb,
        req.delete_policy.unwrap_or_default(),
        req.export_policy.as_ref(),
        layout,
        |server, path, layout| {
            let hub = st.hub.clone();
            async move { hub.check_layout(&server, &path, layout).await }
        },
    )
    .await?;
    st.hub.poke(rp.server_id);
    let body = RootPathBody::from(&rp);
    let object = format!("rootpath/{}", rp.id.0);
    record_change(&st, &ctx, "rootpath.create", object, None, fields(&body)).await;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchRootPathIn {
    export_policy: spec::ExportPolicyDoc,
}

/// Replace a root path's export policy (whole: fields left out get their safe default).
async fn patch_root_path(
    State(st): State<AppState>,
    _: AdminWriter,
    Audited(ctx): Audited,
    Path(id): Path<String>,
    body: Bytes,
) -> NResult<Json<RootPathBody>> {
    let id = id
        .parse::<i64>()
        .map(RootPathId)
        .map_err(|_| Error::not_found(Entity::RootPath, format!("{id:?}")))?;
    let req: PatchRootPathIn = parse_body(&body)?;
    let before = st.db().root_path(id).await?;
    let rp = crate::admin::set_export_policy(st.db(), id, &req.export_policy).await?;
    let policy = |rp: &RootPath| fields(&RootPathBody::from(rp).export_policy);
    let (object, before, after) = (format!("rootpath/{}", id.0), policy(&before), policy(&rp));
    record_change(&st, &ctx, "rootpath.export_policy", object, before, after).await;
    Ok(Json(RootPathBody::from(&rp)))
}

async fn list_servers(State(st): State<AppState>, _: Admin) -> NResult<Json<Vec<ServerBody>>> {
    let servers = st.db().servers().await?;
    Ok(Json(servers.iter().map(ServerBody::from).collect()))
}

async fn create_server(
    State(st): State<AppState>,
    _: AdminWriter,
    Audited(ctx): Audited,
    body: Bytes,
) -> NResult<Response> {
    let req: NewServer = parse_body(&body)?;
    let s = crate::admin::add_server(st.db(), req).await?;
    st.hub.ensure(s.id);
    let body = ServerBody::from(&s);
    // The host key as its fingerprint, as in the re-pinning's record.
    let mut after = fields(&body);
    if let Some(a) = after.as_mut() {
        a["host_key"] = crate::audit::host_key_fingerprint(&s.host_key).into();
    }
    record_change(
        &st,
        &ctx,
        "server.create",
        format!("server/{}", s.name),
        None,
        after,
    )
    .await;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchServerIn {
    host_key: String,
}

/// Pin a new host key (after a legitimate change on the server).
async fn patch_server(
    State(st): State<AppState>,
    _: AdminWriter,
    Audited(ctx): Audited,
    Path(name): Path<String>,
    body: Bytes,
) -> NResult<Json<ServerBody>> {
    let req: PatchServerIn = parse_body(&body)?;
    let s = crate::admin::find_server(st.db(), &name).await?;
    let key = crate::admin::normalize_host_key(&req.host_key)?;
    st.db().set_server_host_key(s.id, &key, &ctx).await?;
    st.hub.poke(s.id);
    Ok(Json(ServerBody::from(&st.db().server(s.id).await?)))
}

async fn list_users(State(st): State<AppState>, _: Admin) -> NResult<Json<Vec<UserBody>>> {
    let users = st.db().users().await?;
    Ok(Json(users.iter().map(UserBody::from).collect()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUserIn {
    username: String,
    password: String,
    #[serde(default)]
    quota_gb: i64,
    #[serde(default)]
    is_admin: bool,
    /// `admin`, `user` or `auditor`; wins over `is_admin`, which says `admin` or `user`.
    #[serde(default)]
    role: Option<Role>,
}

async fn create_user(
    State(st): State<AppState>,
    _: AdminWriter,
    Audited(ctx): Audited,
    body: Bytes,
) -> NResult<Response> {
    let req: CreateUserIn = parse_body(&body)?;
    let u = crate::admin::add_user(
        st.db(),
        &req.username,
        &req.password,
        req.role.unwrap_or(Role::from_is_admin(req.is_admin)),
        req.quota_gb,
    )
    .await?;
    let body = UserBody::from(&u);
    let object = format!("user/{}", u.username);
    record_change(&st, &ctx, "user.create", object, None, fields(&body)).await;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchUserIn {
    #[serde(default)]
    quota_gb: Option<i64>,
    #[serde(default)]
    locked: Option<bool>,
    #[serde(default)]
    is_admin: Option<bool>,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    password: Option<String>,
}

async fn patch_user(
    State(st): State<AppState>,
    AdminWriter(by): AdminWriter,
    Audited(ctx): Audited,
    Path(username): Path<String>,
    body: Bytes,
) -> NResult<Json<UserBody>> {
    let req: PatchUserIn = parse_body(&body)?;
    let before = st.db().user_by_name(&username).await?;
    let password_hash = match &req.password {
        Some(p) => Some(crate::admin::checked_password_hash(p)?),
        None => None,
    };
    let u = st
        .db()
        .update_user_as(
            &by,
            &username,
            &UserChange {
                quota_gb: req.quota_gb,
                locked: req.locked,
                is_admin: req.is_admin,
                role: req.role,
                password_hash,
            },
        )
        .await?;
    // Role, quota, lock; a new password only as "changed" (never the password or its hash).
    let shown = |u: &User, password: Option<&str>| {
        let mut v = fields(&UserBody::from(u));
        if let (Some(v), Some(p)) = (v.as_mut(), password) {
            v["password"] = p.into();
        }
        v
    };
    let changed = req.password.as_ref().map(|_| "changed");
    let (before, after) = (shown(&before, None), shown(&u, changed));
    let object = format!("user/{}", u.username);
    record_change(&st, &ctx, "user.update", object, before, after).await;
    Ok(Json(UserBody::from(&u)))
}

// ---- usage and resize (issue 12) -----------------------------------------------------------

/// `GET /api/v1/volumes/{id}/usage`: the samples the reconciler kept, oldest first (read from
/// the database; the server is not asked).
async fn volume_usage(
    State(st): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> NResult<Json<VolumeUsageBody>> {
    let id = parse_id(&id)?;
    let samples = st.db().volume_usage_for(id, &user).await?;
    let v = st.db().volume_for(id, &user).await?;
    Ok(Json(VolumeUsageBody {
        id,
        samples: samples.iter().map(UsageBody::from).collect(),
        size_gb: v.size_gb,
    }))
}

/// PATCH `size_gb`: recorded with its quota and capacity difference at once; a btrfs volume's
/// new limit follows in the reconciler's next pass. 200 when the server holds the new size (or
/// the size is bookkeeping only), 202 while it is being applied, 502 with `size_error` when the
/// server refused it; `?wait=true` waits for the server's answer.
async fn resize_volume(
    st: &AppState,
    q: &WaitQuery,
    user: &User,
    id: VolumeId,
    size_gb: i64,
    ctx: &crate::audit::Context,
) -> NResult<Response> {
    let size_gb = spec::volume_size(size_gb).map_err(field_err("size_gb"))?;
    let v = st.db().resize_volume(id, user, size_gb, ctx).await?;
    st.hub.poke(v.server_id);
    let applying = |v: &Volume, s: &SizeState| {
        v.layout.enforces_size()
            && s.size_error.is_none()
            && s.applied_size_gb.is_some_and(|a| a != v.size_gb)
    };
    let deadline = tokio::time::Instant::now() + q.timeout();
    let (v, sizes) = loop {
        let changed = st.hub.changed();
        let v = st.db().volume(id).await?;
        let sizes = st.db().size_state(id).await?;
        if !q.wait.unwrap_or(false) || !applying(&v, &sizes) {
            break (v, sizes);
        }
        if !super::until_changed(changed, deadline).await {
            break (v, sizes);
        }
    };
    let status = if sizes.size_error.is_some() {
        StatusCode::BAD_GATEWAY
    } else if applying(&v, &sizes) {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(VolumeDetailBody::new(&v, &sizes))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrongly_typed_password_is_not_repeated_in_the_error() {
        let body = Bytes::from(r#"{"username": "carol", "password": 31415926535}"#);
        let e = parse_body::<CreateUserIn>(&body).err().unwrap();
        let shown = format!("{e} {e:?}");
        assert!(shown.contains("password"), "{shown}");
        assert!(!shown.contains("31415926535"), "{shown}");
        // Other fields still say what they got.
        let body = Bytes::from(r#"{"username": "carol", "password": "x", "quota_gb": "lots"}"#);
        let e = parse_body::<CreateUserIn>(&body).err().unwrap();
        assert!(format!("{e}").contains("lots"), "{e}");
    }
}
