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
}

impl AppState {
    pub fn new(hub: Hub) -> Self {
        AppState {
            hub,
            auth: Arc::new(Authenticator::default()),
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

    async fn admin(&self, headers: &HeaderMap) -> Result<User> {
        let user = self.user(headers).await?;
        if !user.is_admin {
            return Err(crate::error::Error::Forbidden(
                "this needs an administrator account".into(),
            ));
        }
        Ok(user)
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
