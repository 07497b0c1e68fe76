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
    /// The service cannot record anything right now (its disk is full, its database is not
    /// writable); nothing was changed and the same request may succeed later.
    #[error("{0}")]
    Unavailable(String),
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

/// What a user is told when the database cannot be written for a reason of the service's own
/// host (the admins' to fix), not of the request.
const STORAGE_UNAVAILABLE: &str = "the service cannot write its database right now (its disk is full or failing); \
     nothing was changed: try again later";

/// SQLite primary result codes that mean "the storage under the database failed", not "this
/// statement is wrong": SQLITE_IOERR (10), SQLITE_FULL (13), SQLITE_CANTOPEN (14).
fn is_storage_failure(primary_code: i32) -> bool {
    matches!(primary_code, 10 | 13 | 14)
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        let storage = match &e {
            sqlx::Error::Database(db) => db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| is_storage_failure(c & 0xff)),
            sqlx::Error::Io(_) => true,
            _ => false,
        };
        if storage {
            tracing::error!("database write failed: {e}");
            return Error::Unavailable(STORAGE_UNAVAILABLE.into());
        }
        Error::Internal(anyhow::Error::new(e).context("database error"))
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, _) = &e
            && is_storage_failure(f.extended_code & 0xff)
        {
            tracing::error!("database write failed: {e}");
            return Error::Unavailable(STORAGE_UNAVAILABLE.into());
        }
        Error::Internal(anyhow::Error::new(e).context("database error"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
