//! The one place errors become HTTP responses, in each API's own shape.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::response::{ErrorBody, ErrorDetail, HootieDetail, HootieFieldErrors};
use crate::error::{Amount, Clash, ClientPart, Error, PolicyPart};

fn status(e: &Error) -> StatusCode {
    match e {
        Error::Invalid { .. }
        | Error::UnknownServer(_)
        | Error::UnknownRootPath(_)
        | Error::OutOfRange { .. }
        | Error::UnsupportedClient { .. } => StatusCode::BAD_REQUEST,
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::QuotaExceeded { .. } | Error::CapacityExceeded { .. } => StatusCode::CONFLICT,
        Error::Locked(_) | Error::Forbidden(_) | Error::PolicyViolation { .. } => {
            StatusCode::FORBIDDEN
        }
        Error::Conflict { .. } => StatusCode::CONFLICT,
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Error::ServerUnreachable(_) => StatusCode::BAD_GATEWAY,
    }
}

fn code(e: &Error) -> &'static str {
    match e {
        Error::Invalid { .. }
        | Error::UnknownServer(_)
        | Error::UnknownRootPath(_)
        | Error::OutOfRange { .. }
        | Error::UnsupportedClient { .. } => "invalid",
        Error::NotFound { .. } => "not_found",
        Error::QuotaExceeded { .. } => "quota_exceeded",
        Error::CapacityExceeded { .. } => "capacity_exceeded",
        Error::Locked(_) => "locked",
        Error::Forbidden(_) | Error::PolicyViolation { .. } => "forbidden",
        Error::Conflict { .. } => "conflict",
        Error::Unauthenticated(_) => "unauthenticated",
        Error::Unavailable(_) => "unavailable",
        Error::RateLimited { .. } => "rate_limited",
        Error::UnsupportedMediaType(_) => "unsupported_media_type",
        Error::PayloadTooLarge(_) => "payload_too_large",
        Error::Internal(_) => "internal",
        Error::ServerUnreachable(_) => "server_unreachable",
    }
}

/// Which API's field names to use: they differ only in the root path's
/// (`root_path_id` / hootie's `root_path`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Native,
    Hootie,
}

/// The request field an error is about: the one place domain errors get field names.
fn field(e: &Error, api: Api) -> Option<String> {
    Some(match e {
        Error::Invalid { field, .. } => field.clone(),
        Error::UnknownServer(_) => "server".into(),
        Error::UnknownRootPath(_) => match api {
            Api::Native => "root_path_id".into(),
            Api::Hootie => "root_path".into(),
        },
        Error::OutOfRange { amount, .. } => match amount {
            Amount::Quota => "quota_gb",
            Amount::Capacity => "capacity_gb",
            Amount::Size => "size_gb",
        }
        .into(),
        Error::UnsupportedClient { index, part, .. } => match part {
            ClientPart::Host => format!("clients[{index}].host"),
            ClientPart::Options => format!("clients[{index}].options"),
        },
        Error::Conflict { with, .. } => match with {
            Clash::ServerName => "name",
            Clash::Username => "username",
            Clash::RootPathOverlap => "path",
            Clash::SubPath => "sub_path",
            Clash::IdempotencyKey => "Idempotency-Key",
            Clash::ExportIds => "root_path",
            Clash::VolumeState => return None,
            Clash::TokenName => "name",
            Clash::TokenCount => return None,
            Clash::SnapshotName => "name",
            Clash::SnapshotCount => return None,
            Clash::Snapshots => "with_snapshots",
        }
        .into(),
        Error::QuotaExceeded { .. } | Error::CapacityExceeded { .. } => "size_gb".into(),
        Error::PolicyViolation { part, .. } => match (part, api) {
            (PolicyPart::Client { index, part }, Api::Native) => match part {
                ClientPart::Host => format!("clients[{index}].host"),
                ClientPart::Options => format!("clients[{index}].options"),
            },
            // hootie has one host list and one options string for all hosts.
            (PolicyPart::Client { part, .. }, Api::Hootie) => match part {
                ClientPart::Host => "allowed_hosts".into(),
                ClientPart::Options => "options".into(),
            },
            (PolicyPart::Size, Api::Native) => "size_gb".into(),
            (PolicyPart::Size, Api::Hootie) => "size_GB".into(),
        },
        _ => return None,
    })
}

fn message(e: &Error) -> String {
    match e {
        Error::Invalid { message, .. }
        | Error::PolicyViolation { message, .. }
        | Error::OutOfRange { message, .. }
        | Error::UnsupportedClient { message, .. } => message.clone(),
        Error::Internal(err) => {
            tracing::error!("internal error: {err:#}");
            "internal error; the server log has the details".into()
        }
        other => other.to_string(),
    }
}

/// The headers an error's status calls for: a Basic challenge with 401, `Retry-After` with 429
/// and 503.
fn with_challenge(mut resp: Response, e: &Error) -> Response {
    match e {
        Error::Unauthenticated(_) => {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"api\""),
            );
        }
        Error::RateLimited {
            retry_after_secs, ..
        } => {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        Error::Unavailable(_) => {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        _ => {}
    }
    resp
}

/// Native API errors: `{"error": {"code", "message", "field"}}`.
#[derive(Debug)]
pub struct NativeError(pub Error);

impl<E: Into<Error>> From<E> for NativeError {
    fn from(e: E) -> Self {
        NativeError(e.into())
    }
}

impl IntoResponse for NativeError {
    fn into_response(self) -> Response {
        let e = &self.0;
        let body = ErrorBody {
            error: ErrorDetail {
                code: code(e).into(),
                field: field(e, Api::Native),
                message: message(e),
            },
        };
        with_challenge((status(e), Json(body)).into_response(), e)
    }
}

/// hootie (Django REST framework) errors: field errors `{"field": ["message"]}`, others
/// `{"detail": "message"}`. Quota and capacity are field errors on `size_GB`.
#[derive(Debug)]
pub struct HootieError(pub Error);

impl<E: Into<Error>> From<E> for HootieError {
    fn from(e: E) -> Self {
        HootieError(e.into())
    }
}

impl IntoResponse for HootieError {
    fn into_response(self) -> Response {
        let e = &self.0;
        let field_error = |field: &str, message: &str| {
            (
                StatusCode::BAD_REQUEST,
                Json(HootieFieldErrors::one(field, message)),
            )
                .into_response()
        };
        let detail =
            |status, detail: String| (status, Json(HootieDetail { detail })).into_response();
        let resp = match e {
            Error::QuotaExceeded { message } | Error::CapacityExceeded { message } => {
                field_error("size_GB", message)
            }
            Error::Conflict { message, .. } => {
                let f = field(e, Api::Hootie).unwrap_or_else(|| "non_field_errors".into());
                field_error(&f, message)
            }
            other if status(other) == StatusCode::BAD_REQUEST => {
                let f = field(other, Api::Hootie).unwrap_or_else(|| "non_field_errors".into());
                field_error(&f, &message(other))
            }
            // 403 in hootie's field-error shape, naming its own field.
            Error::PolicyViolation { message, .. } => {
                let f = field(e, Api::Hootie).unwrap_or_else(|| "non_field_errors".into());
                (
                    StatusCode::FORBIDDEN,
                    Json(HootieFieldErrors::one(&f, message)),
                )
                    .into_response()
            }
            Error::NotFound { .. } => detail(StatusCode::NOT_FOUND, "Not found.".into()),
            other => detail(status(other), message(other)),
        };
        with_challenge(resp, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Entity, Error};
    use crate::model::{RootPathId, ServerId};

    async fn body(resp: Response) -> (StatusCode, serde_json::Value) {
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// The datastore's domain errors get the field names each API has always answered with
    /// (the e2e tests check the same on real requests).
    #[tokio::test]
    async fn domain_errors_get_each_apis_field_names() {
        let cases = || {
            [
                (
                    Error::UnknownRootPath(RootPathId(7)),
                    "root_path_id",
                    "root_path",
                ),
                (Error::UnknownServer(ServerId(3)), "server", "server"),
                (
                    Error::UnsupportedClient {
                        index: 2,
                        part: ClientPart::Host,
                        message: "m".into(),
                    },
                    "clients[2].host",
                    "clients[2].host",
                ),
                (
                    Error::UnsupportedClient {
                        index: 0,
                        part: ClientPart::Options,
                        message: "m".into(),
                    },
                    "clients[0].options",
                    "clients[0].options",
                ),
                (Error::out_of_range(Amount::Size, "m"), "size_gb", "size_gb"),
                (
                    Error::out_of_range(Amount::Quota, "m"),
                    "quota_gb",
                    "quota_gb",
                ),
                (Error::conflict(Clash::SubPath, "m"), "sub_path", "sub_path"),
                (
                    Error::conflict(Clash::IdempotencyKey, "m"),
                    "Idempotency-Key",
                    "Idempotency-Key",
                ),
                (Error::conflict(Clash::ServerName, "m"), "name", "name"),
                (Error::conflict(Clash::RootPathOverlap, "m"), "path", "path"),
                (
                    Error::conflict(Clash::VolumeState, "m"),
                    "",
                    "non_field_errors",
                ),
            ]
        };
        for (e, native, _) in cases() {
            let what = format!("{e:?}");
            let conflict = matches!(e, Error::Conflict { .. });
            let (status, json) = body(NativeError(e).into_response()).await;
            let want = if native.is_empty() {
                serde_json::Value::Null
            } else {
                native.into()
            };
            assert_eq!(json["error"]["field"], want, "{what}");
            let want_status = if conflict {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            assert_eq!(status, want_status, "{what}");
            assert_eq!(
                json["error"]["code"],
                if conflict { "conflict" } else { "invalid" }
            );
        }
        for (e, _, hootie) in cases() {
            let what = format!("{e:?}");
            let (status, json) = body(HootieError(e).into_response()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{what}");
            assert!(json[hootie].is_array(), "{what}: {json}");
        }
        let (status, json) =
            body(NativeError(Error::UnknownRootPath(RootPathId(7))).into_response()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json["error"]["message"], "root path 7 does not exist");
        let (status, json) =
            body(NativeError(Error::not_found(Entity::Volume, 9)).into_response()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(json["error"]["message"], "volume 9 not found");
    }

    /// A policy violation is a 403 naming the field in each API's shape.
    #[tokio::test]
    async fn policy_violations_are_403_naming_each_apis_field() {
        let host = PolicyPart::Client {
            index: 1,
            part: ClientPart::Host,
        };
        let options = PolicyPart::Client {
            index: 0,
            part: ClientPart::Options,
        };
        for (part, native, hootie) in [
            (host, "clients[1].host", "allowed_hosts"),
            (options, "clients[0].options", "options"),
            (PolicyPart::Size, "size_gb", "size_GB"),
        ] {
            let e = || Error::PolicyViolation {
                part,
                message: "option no_root_squash is not allowed".into(),
            };
            let (status, json) = body(NativeError(e()).into_response()).await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_eq!(json["error"]["code"], "forbidden");
            assert_eq!(json["error"]["field"], native);
            assert_eq!(
                json["error"]["message"],
                "option no_root_squash is not allowed"
            );
            let (status, json) = body(HootieError(e()).into_response()).await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_eq!(
                json[hootie][0], "option no_root_squash is not allowed",
                "{json}"
            );
        }
    }
}
