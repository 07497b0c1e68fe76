//! The one place errors become HTTP responses, in each API's own shape.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::response::{ErrorBody, ErrorDetail, HootieDetail, HootieFieldErrors};
use crate::error::Error;

fn status(e: &Error) -> StatusCode {
    match e {
        Error::Invalid { .. } => StatusCode::BAD_REQUEST,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::QuotaExceeded { .. } | Error::CapacityExceeded { .. } => StatusCode::CONFLICT,
        Error::Locked(_) | Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::Conflict { .. } => StatusCode::CONFLICT,
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn code(e: &Error) -> &'static str {
    match e {
        Error::Invalid { .. } => "invalid",
        Error::NotFound(_) => "not_found",
        Error::QuotaExceeded { .. } => "quota_exceeded",
        Error::CapacityExceeded { .. } => "capacity_exceeded",
        Error::Locked(_) => "locked",
        Error::Forbidden(_) => "forbidden",
        Error::Conflict { .. } => "conflict",
        Error::Unauthenticated(_) => "unauthenticated",
        Error::Unavailable(_) => "unavailable",
        Error::RateLimited { .. } => "rate_limited",
        Error::UnsupportedMediaType(_) => "unsupported_media_type",
        Error::PayloadTooLarge(_) => "payload_too_large",
        Error::Internal(_) => "internal",
    }
}

fn field(e: &Error) -> Option<&str> {
    match e {
        Error::Invalid { field, .. } => Some(field),
        Error::Conflict { field, .. } => field.as_deref(),
        Error::QuotaExceeded { .. } | Error::CapacityExceeded { .. } => Some("size_gb"),
        _ => None,
    }
}

fn message(e: &Error) -> String {
    match e {
        Error::Invalid { message, .. } => message.clone(),
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
                field: field(e).map(str::to_string),
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
            Error::Invalid { field, message } => field_error(field, message),
            Error::QuotaExceeded { message } | Error::CapacityExceeded { message } => {
                field_error("size_GB", message)
            }
            Error::Conflict { field, message } => {
                field_error(field.as_deref().unwrap_or("non_field_errors"), message)
            }
            Error::NotFound(_) => detail(StatusCode::NOT_FOUND, "Not found.".into()),
            other => detail(status(other), message(other)),
        };
        with_challenge(resp, e)
    }
}
