//! HTTP API: hootie's `/api/v1.0/` (kept so its users' scripts run unchanged) and the native
//! `/api/v1/`. Both are thin: parse the request into validated types, call the datastore,
//! poke the server's reconciler, render. Errors become HTTP statuses only in `error`.

mod error;
mod hootie;
mod native;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;

use crate::auth::Authenticator;
use crate::datastore::Datastore;
use crate::error::Result;
use crate::model::{User, Volume, VolumeId};
use crate::reconcile::Hub;

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
    pub fn new(hub: Hub) -> Self {
        AppState {
            hub,
            auth: Arc::new(Authenticator::default()),
            list_gate: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_LISTINGS)),
        }
    }

    pub fn db(&self) -> &Datastore {
        self.hub.db()
    }

    async fn user(&self, headers: &HeaderMap) -> Result<User> {
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.auth.authenticate(self.db(), header).await
    }

    /// The caller of a request that changes something: a locked account is refused here, and
    /// again inside the transaction that records the change (`datastore`).
    async fn writer(&self, headers: &HeaderMap) -> Result<User> {
        let user = self.user(headers).await?;
        if user.locked {
            return Err(crate::error::Error::Locked(
                crate::datastore::LOCKED_MESSAGE.into(),
            ));
        }
        Ok(user)
    }

    /// An administrator who may change things (not locked).
    async fn admin_writer(&self, headers: &HeaderMap) -> Result<User> {
        let user = self.admin(headers).await?;
        if user.locked {
            return Err(crate::error::Error::Locked(
                crate::datastore::LOCKED_MESSAGE.into(),
            ));
        }
        Ok(user)
    }

    async fn admin(&self, headers: &HeaderMap) -> Result<User> {
        let user = self.user(headers).await?;
        if !user.is_admin {
            return Err(crate::error::Error::Forbidden(
                "this needs an administrator account".into(),
            ));
        }
        Ok(user)
    }

    /// The volumes `user` may see, rendered by `render`, as a JSON response; `page` limits it
    /// (a full page gets a `Link: <next_page(last id)>; rel="next"` header).
    async fn volume_listing(
        &self,
        user: &User,
        include_deleted: bool,
        page: crate::datastore::Page,
        next_page: impl Fn(i64) -> String,
        render: impl Fn(&Volume) -> serde_json::Value,
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
                serde_json::to_writer(&mut buf, &render(&v)).expect("a JSON value serialises");
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
            if v.state.is_settled() {
                return Ok(v);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Ok(v);
            }
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(hootie::routes())
        .merge(native::routes())
        .with_state(state)
}

/// Client IP/host lists in hootie form: hosts separated by spaces.
fn hosts_string(v: &Volume) -> String {
    v.clients
        .iter()
        .map(|c| c.host.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}
