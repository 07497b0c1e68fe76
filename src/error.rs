//! The one error type of nfsprov's core. Each variant maps to exactly one HTTP status in
//! `api::error`; messages are written for the user who has to act on them.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is malformed or refers to nothing.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0} not found")]
    NotFound(String),
    /// The owner's quota would be exceeded.
    #[error("{message}")]
    QuotaExceeded { message: String },
    /// The root path's capacity would be exceeded.
    #[error("{message}")]
    CapacityExceeded { message: String },
    /// The account is locked by an admin.
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the current state (a path in use, a volume being deleted, an
    /// idempotency key reused for another request).
    #[error("{message}")]
    Conflict {
        field: Option<String>,
        message: String,
    },
    #[error("{0}")]
    Unauthenticated(String),
    /// Too many failed sign-ins from this address or for this user; try again after
    /// `retry_after_secs`.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    /// A body in a format the endpoint does not take (it takes `application/json`).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A request body over the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn conflict(field: Option<&str>, message: impl Into<String>) -> Self {
        Error::Conflict {
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Internal(anyhow::Error::new(e).context("database error"))
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Internal(anyhow::Error::new(e).context("database error"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
