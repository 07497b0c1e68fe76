//! Who is calling, as extractors: a handler names in its signature what it needs (`Caller`,
//! `Writer`, `Admin`, `AdminWriter`) and runs only if the caller has it.
//!
//! The credentials were checked by the front door (`super::front_door`) before the body was
//! read; it leaves the user in the request's extensions as `Authenticated`, a type only this
//! module and the front door can build, so nothing else can vouch for a caller. A route the
//! front door lets through without credentials (`super::is_public`) has no `Authenticated`,
//! and any of these extractors refuses it with 401.
//!
//! A refusal is answered in the shape of the API the route belongs to (hootie's or native).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::error::Error;
use crate::model::{Role, User};

/// Put in the request's extensions by the front door once the credentials check out.
#[derive(Clone)]
pub(super) struct Authenticated(pub(super) User);

/// Any authenticated user, locked or not: enough to read (what each may see is the
/// datastore's business: their own volumes, or everyone's for administrators and auditors).
pub struct Caller(pub User);

/// A user who may change things: an auditor, and a locked account, are refused with 403 here,
/// and again inside the transaction that records the change (`datastore`), where a lock or
/// role set meanwhile is seen.
pub struct Writer(pub User);

/// An administrator or an auditor, locked or not: enough to read what only they see.
pub struct Admin(pub User);

/// An administrator who may change things (not locked).
pub struct AdminWriter(pub User);

/// Who may read the whole audit trail (`GET /api/v1/audit`): administrators and auditors,
/// locked or not (whoever sees everything).
pub struct AuditReader(pub User);

/// A caller refused: answered in the shape of the route's API (hootie's or native).
#[derive(Debug)]
pub struct Refused {
    hootie: bool,
    error: Error,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        super::error_response(self.hootie, self.error)
    }
}

fn authenticated(parts: &Parts) -> Result<User, Error> {
    match parts.extensions.get::<Authenticated>() {
        Some(Authenticated(user)) => Ok(user.clone()),
        None => Err(Error::Unauthenticated(
            "Authentication credentials were not provided.".into(),
        )),
    }
}

fn unlocked(user: User) -> Result<User, Error> {
    if user.locked {
        return Err(Error::Locked(crate::datastore::LOCKED_MESSAGE.into()));
    }
    Ok(user)
}

fn admin(user: User) -> Result<User, Error> {
    if !user.is_admin() {
        return Err(Error::Forbidden(
            "this needs an administrator account".into(),
        ));
    }
    Ok(user)
}

fn sees_everything(user: User) -> Result<User, Error> {
    if !user.sees_everything() {
        return Err(Error::Forbidden(
            "this needs an administrator or auditor account".into(),
        ));
    }
    Ok(user)
}

fn not_auditor(user: User) -> Result<User, Error> {
    if user.role == Role::Auditor {
        return Err(Error::Forbidden(AUDITOR_MESSAGE.into()));
    }
    Ok(user)
}

/// What an auditor is told when it tries to change anything.
pub const AUDITOR_MESSAGE: &str = "an auditor account reads everything but changes nothing";

/// Implements the extractor `$name` as `$check` applied to the authenticated user.
macro_rules! extractor {
    ($name:ident, $check:expr) => {
        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = Refused;

            async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refused> {
                let check: fn(User) -> Result<User, Error> = $check;
                authenticated(parts)
                    .and_then(check)
                    .map($name)
                    .map_err(|error| Refused {
                        hootie: super::is_hootie(parts.uri.path()),
                        error,
                    })
            }
        }
    };
}

extractor!(Caller, Ok);
// An auditor is said before locked.
extractor!(Writer, |user| unlocked(not_auditor(user)?));
extractor!(Admin, sees_everything);
extractor!(AuditReader, sees_everything);
// Not an administrator is said before locked.
extractor!(AdminWriter, |user| unlocked(admin(user)?));

#[cfg(test)]
mod tests {
    use axum::http::{Request, StatusCode, header};

    use super::*;
    use crate::model::UserId;

    fn user(is_admin: bool, locked: bool) -> User {
        with_role(Role::from_is_admin(is_admin), locked)
    }

    fn with_role(role: Role, locked: bool) -> User {
        User {
            id: UserId(1),
            username: "alice".into(),
            password_hash: String::new(),
            role,
            quota_gb: 10,
            used_gb: 0,
            locked,
        }
    }

    fn parts(path: &str, caller: Option<User>) -> Parts {
        let mut req = Request::get(path).body(()).unwrap();
        if let Some(u) = caller {
            req.extensions_mut().insert(Authenticated(u));
        }
        req.into_parts().0
    }

    async fn refusal<E: FromRequestParts<(), Rejection = Refused>>(
        path: &str,
        caller: Option<User>,
    ) -> Option<(StatusCode, Option<String>, serde_json::Value)> {
        let resp = E::from_request_parts(&mut parts(path, caller), &())
            .await
            .err()?
            .into_response();
        let status = resp.status();
        let challenge = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        Some((status, challenge, serde_json::from_slice(&body).unwrap()))
    }

    #[tokio::test]
    async fn without_the_front_doors_word_every_extractor_answers_401_with_a_challenge() {
        for path in ["/api/v1/volumes", "/api/v1.0/volumes/"] {
            for r in [
                refusal::<Caller>(path, None).await,
                refusal::<Writer>(path, None).await,
                refusal::<Admin>(path, None).await,
                refusal::<AdminWriter>(path, None).await,
            ] {
                let (status, challenge, _) = r.expect("refused");
                assert_eq!(status, StatusCode::UNAUTHORIZED);
                assert_eq!(challenge.as_deref(), Some("Basic realm=\"api\""));
            }
        }
        let (_, _, native) = refusal::<Caller>("/api/v1/volumes", None).await.unwrap();
        assert_eq!(native["error"]["code"], "unauthenticated");
        let (_, _, hootie) = refusal::<Caller>("/api/v1.0/volumes/", None).await.unwrap();
        assert_eq!(
            hootie,
            serde_json::json!({"detail": "Authentication credentials were not provided."})
        );
    }

    #[tokio::test]
    async fn a_locked_account_reads_but_changes_nothing() {
        let locked = || Some(user(false, true));
        assert!(
            refusal::<Caller>("/api/v1/volumes", locked())
                .await
                .is_none()
        );
        let (status, _, body) = refusal::<Writer>("/api/v1/volumes", locked())
            .await
            .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"]["code"], "locked");
        let (status, _, body) = refusal::<Writer>("/api/v1.0/volumes/", locked())
            .await
            .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["detail"], crate::datastore::LOCKED_MESSAGE);
        let locked_admin = || Some(user(true, true));
        assert!(
            refusal::<Admin>("/api/v1/users", locked_admin())
                .await
                .is_none()
        );
        let (status, _, body) = refusal::<AdminWriter>("/api/v1/users", locked_admin())
            .await
            .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"]["code"], "locked");
    }

    #[tokio::test]
    async fn administrator_routes_refuse_other_users() {
        let plain = || Some(user(false, false));
        assert!(
            refusal::<Writer>("/api/v1/volumes", plain())
                .await
                .is_none()
        );
        for r in [
            refusal::<Admin>("/api/v1/servers", plain()).await,
            refusal::<AdminWriter>("/api/v1/servers", plain()).await,
            // A locked non-administrator hears that it is not an administrator.
            refusal::<AdminWriter>("/api/v1/servers", Some(user(false, true))).await,
        ] {
            let (status, _, body) = r.expect("refused");
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_eq!(body["error"]["code"], "forbidden");
        }
        assert!(
            refusal::<AdminWriter>("/api/v1/servers", Some(user(true, false)))
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn an_auditor_reads_what_administrators_read_and_changes_nothing() {
        let auditor = || Some(with_role(Role::Auditor, false));
        assert!(
            refusal::<Caller>("/api/v1/volumes", auditor())
                .await
                .is_none()
        );
        assert!(refusal::<Admin>("/api/v1/users", auditor()).await.is_none());
        for r in [
            refusal::<Writer>("/api/v1/volumes", auditor()).await,
            refusal::<AdminWriter>("/api/v1/users", auditor()).await,
            // A locked auditor hears that it is an auditor.
            refusal::<Writer>("/api/v1/volumes", Some(with_role(Role::Auditor, true))).await,
        ] {
            let (status, _, body) = r.expect("refused");
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_eq!(body["error"]["code"], "forbidden");
        }
        let (status, _, body) = refusal::<Writer>("/api/v1.0/volumes/", auditor())
            .await
            .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["detail"], AUDITOR_MESSAGE);
    }
}
