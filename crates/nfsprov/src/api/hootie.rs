//! hootie's API, `/api/v1.0/`, kept as its README shows it so existing scripts run unchanged.
//! Differences are deliberate improvements: quota and capacity failures are a 400 naming the
//! limit (hootie answered 500), and input is validated before anything is recorded.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::response::{HootieCreated, HootieRootPath, HootieVolume};
use super::{AppState, Audited, Caller, HootieError, Route, Writer};
use crate::datastore::{Created, NewVolume};
use crate::error::{Entity, Error};
use crate::model::{ClientRule, Volume, VolumeId, VolumeState};
use crate::spec::{self, ClientSpec, DirMode, ExportOptions, SubPath};

type HResult<T> = Result<T, HootieError>;

/// hootie waited this long for its worker before answering a create.
const CREATE_WAIT: Duration = Duration::from_secs(5);
const DEFAULT_OPTIONS: &str = "rw,sync";

/// hootie's endpoints, each with and without the trailing slash (Django answered both).
pub fn routes() -> Vec<Route> {
    vec![
        Route::get("/api/v1.0/rootpaths/", rootpaths),
        Route::get("/api/v1.0/rootpaths", rootpaths),
        Route::get("/api/v1.0/volumes/", list),
        Route::post("/api/v1.0/volumes/", create),
        Route::get("/api/v1.0/volumes", list),
        Route::post("/api/v1.0/volumes", create),
        Route::get("/api/v1.0/volumes/{pk}/", show),
        Route::delete("/api/v1.0/volumes/{pk}/", remove),
        Route::get("/api/v1.0/volumes/{pk}", show),
        Route::delete("/api/v1.0/volumes/{pk}", remove),
    ]
}

/// Public: no extractor asks for the caller.
async fn rootpaths(State(st): State<AppState>) -> HResult<Json<Vec<HootieRootPath>>> {
    let rps = st.db().root_paths().await?;
    Ok(Json(rps.iter().map(HootieRootPath::from).collect()))
}

async fn list(State(st): State<AppState>, Caller(user): Caller) -> HResult<Response> {
    // hootie listed everything; the live volumes of a user are bounded by their quota. A
    // volume being deleted is gone in hootie's view (its DELETE answered 204).
    let all = crate::datastore::Page {
        hide_deleting: true,
        ..Default::default()
    };
    Ok(st
        .volume_listing(
            &user,
            false,
            all,
            |_| String::new(),
            |v: &Volume| HootieVolume::from(v),
        )
        .await?)
}

fn parse_pk(pk: &str) -> Result<VolumeId, Error> {
    pk.parse::<i64>()
        .map(VolumeId)
        .map_err(|_| Error::not_found(Entity::Volume, format!("{pk:?}")))
}

async fn show(
    State(st): State<AppState>,
    Caller(user): Caller,
    Path(pk): Path<String>,
) -> HResult<Json<HootieVolume>> {
    let v = st.db().volume_for(parse_pk(&pk)?, &user).await?;
    if matches!(v.state, VolumeState::Deleted | VolumeState::Deleting) {
        return Err(Error::not_found(Entity::Volume, pk).into());
    }
    Ok(Json(HootieVolume::from(&v)))
}

async fn remove(
    State(st): State<AppState>,
    Writer(user): Writer,
    Audited(ctx): Audited,
    Path(pk): Path<String>,
) -> HResult<StatusCode> {
    let v = st
        .db()
        .delete_volume(parse_pk(&pk)?, &user, false, &ctx)
        .await?;
    st.hub.poke(v.server_id);
    Ok(StatusCode::NO_CONTENT)
}

/// The request body as a JSON object; DRF also accepts form posts, so do we.
fn body_fields(ctype: &str, body: &[u8]) -> Result<Map<String, Value>, Error> {
    if ctype.starts_with("application/x-www-form-urlencoded") {
        let form: HashMap<String, String> = serde_urlencoded::from_bytes(body)
            .map_err(|e| Error::invalid("detail", format!("form parse error - {e}")))?;
        return Ok(form
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::invalid(
            "non_field_errors",
            "Invalid data. Expected a dictionary.",
        )),
        Err(e) => Err(Error::invalid("detail", format!("JSON parse error - {e}"))),
    }
}

fn int_field(m: &Map<String, Value>, name: &str) -> Result<Option<i64>, Error> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
        Some(Value::String(s)) if s.trim().parse::<i64>().is_ok() => Ok(s.trim().parse().ok()),
        Some(_) => Err(Error::invalid(name, "A valid integer is required.")),
    }
}

fn str_field<'a>(m: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, Error> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::invalid(name, "Not a valid string.")),
    }
}

fn required<T>(v: Option<T>, name: &str) -> Result<T, Error> {
    v.ok_or_else(|| Error::invalid(name, "This field is required."))
}

fn field_err(name: &str) -> impl Fn(spec::SpecError) -> Error + '_ {
    move |e| Error::invalid(name, e.0)
}

/// A hootie create request as its body gave it, every field parsed into its `spec` type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateBody {
    pub root_path: i64,
    pub sub_path: SubPath,
    pub size_gb: i64,
    pub options: ExportOptions,
    pub allowed_hosts: Vec<ClientSpec>,
}

/// Parses a create body, JSON or (by `content_type`) a form; pure, so it is fuzzed
/// (`fuzz/fuzz_targets/hootie_body.rs`). Every refusal is an [`Error::Invalid`] naming the
/// field (hootie's 400), whatever the bytes.
pub fn parse_create_body(content_type: &str, body: &[u8]) -> Result<CreateBody, Error> {
    let m = body_fields(content_type, body)?;
    let root_path = required(int_field(&m, "root_path")?, "root_path")?;
    let sub_path = SubPath::parse(required(str_field(&m, "sub_path")?, "sub_path")?)
        .map_err(field_err("sub_path"))?;
    let size_gb = required(int_field(&m, "size_GB")?, "size_GB")?;
    let size_gb = spec::volume_size(size_gb).map_err(field_err("size_GB"))?;
    let options = str_field(&m, "options")?.unwrap_or(DEFAULT_OPTIONS);
    let options = ExportOptions::parse(options).map_err(field_err("options"))?;
    let hosts = str_field(&m, "allowed_hosts")?.unwrap_or("*");
    let allowed_hosts = spec::parse_client_list(hosts).map_err(field_err("allowed_hosts"))?;
    Ok(CreateBody {
        root_path,
        sub_path,
        size_gb,
        options,
        allowed_hosts,
    })
}

async fn create(
    State(st): State<AppState>,
    Writer(user): Writer,
    Audited(ctx): Audited,
    headers: HeaderMap,
    body: Bytes,
) -> HResult<Response> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let req = parse_create_body(ctype, &body)?;
    let nv = NewVolume {
        owner: user.id,
        root_path: crate::model::RootPathId(req.root_path),
        sub_path: req.sub_path,
        size_gb: req.size_gb,
        clients: req
            .allowed_hosts
            .into_iter()
            .map(|host| ClientRule {
                host,
                options: req.options.clone(),
            })
            .collect(),
        mode: DirMode::default(),
        uid: 0,
        gid: 0,
        adopt_existing: false,
        idempotency_key: None,
        request_hash: None,
        restore_from: None,
    };
    let v = match st.db().create_volume_as(&nv, &ctx).await? {
        Created::New(v) | Created::Replayed(v) => v,
    };
    st.hub.poke(v.server_id);
    let v = st.wait_settled(v.id, CREATE_WAIT).await?;
    Ok(match v.state {
        VolumeState::Available => {
            (StatusCode::CREATED, Json(HootieCreated::ok(v.id, None))).into_response()
        }
        VolumeState::Error => {
            // hootie saved a volume only once the server had it: a create the server refused
            // leaves nothing behind (listing, quota, capacity, its empty directory).
            let message = v.last_error.clone().unwrap_or_default();
            // Deleted meanwhile by its owner: then there is nothing left to roll back.
            let gone = match st.db().roll_back_create(v.id, &user, &ctx).await {
                Ok(gone) => {
                    st.hub.poke(gone.server_id);
                    st.wait_settled(v.id, CREATE_WAIT).await?
                }
                Err(Error::NotFound { .. }) => st.db().volume(v.id).await?,
                Err(e) => return Err(e.into()),
            };
            let detail = if gone.state == VolumeState::Deleted {
                "the server refused the volume; nothing was created"
            } else {
                "the server refused the volume; it is being removed"
            };
            (
                StatusCode::BAD_GATEWAY,
                Json(HootieCreated::refused(message, detail.into())),
            )
                .into_response()
        }
        _ => {
            let detail = format!(
                "recorded; not yet applied on the server after {}s: {}",
                CREATE_WAIT.as_secs(),
                v.last_error.unwrap_or_else(|| "still in progress".into())
            );
            (
                StatusCode::ACCEPTED,
                Json(HootieCreated::ok(v.id, Some(detail))),
            )
                .into_response()
        }
    })
}
