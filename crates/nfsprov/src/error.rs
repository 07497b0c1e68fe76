//! The one error type of nfsprov's core. Each variant maps to exactly one HTTP status in
//! `api::error`; messages are written for the user who has to act on them.
//!
//! Below the API (datastore, admin checks shared with the CLI) errors say what went wrong in
//! domain terms (`NotFound { what, key }`, `UnknownRootPath`, `Conflict { with, .. }`); only
//! `api::error` turns them into request field names, which differ between the two APIs.

use std::fmt;

use crate::model::{RootPathId, ServerId};

/// The kinds of record a lookup can miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Server,
    RootPath,
    User,
    Volume,
    /// An API token.
    Token,
    /// An HTTP route (the API's own 404).
    Route,
    /// A snapshot of a volume.
    Snapshot,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Server => "server",
            Entity::RootPath => "root path",
            Entity::User => "user",
            Entity::Volume => "volume",
            Entity::Token => "token",
            Entity::Route => "route",
            Entity::Snapshot => "snapshot",
        })
    }
}

/// A number the books keep, named as its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    Quota,
    Capacity,
    Size,
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Amount::Quota => "quota_gb",
            Amount::Capacity => "capacity_gb",
            Amount::Size => "size_gb",
        })
    }
}

/// What a request clashes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clash {
    /// Another server has the name.
    ServerName,
    /// Another user has the name.
    Username,
    /// The root path overlaps another of the same server.
    RootPathOverlap,
    /// The volume's sub path overlaps a live volume.
    SubPath,
    /// The idempotency key was used for another request.
    IdempotencyKey,
    /// The root path's server has no export id left.
    ExportIds,
    /// The volume's state (being deleted) allows no change.
    VolumeState,
    /// The user already holds a live API token of the name.
    TokenName,
    /// The user holds as many live API tokens as allowed.
    TokenCount,
    /// The volume already has a snapshot of the name.
    SnapshotName,
    /// The volume has as many snapshots as allowed.
    SnapshotCount,
    /// The volume has snapshots (a delete without `with_snapshots`).
    Snapshots,
}

/// Which part of a client rule a backend cannot honour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientPart {
    Host,
    Options,
}

/// What part of a request a root path's export policy refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyPart {
    /// Client `index`'s host or options.
    Client { index: usize, part: ClientPart },
    /// The volume's size.
    Size,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is malformed or refers to nothing.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{what} {key} not found")]
    NotFound { what: Entity, key: String },
    #[error("server {0} does not exist")]
    UnknownServer(ServerId),
    #[error("root path {0} does not exist")]
    UnknownRootPath(RootPathId),
    /// A quota, capacity or size outside what the books take.
    #[error("{amount}: {message}")]
    OutOfRange { amount: Amount, message: String },
    /// Client `index` of a request names a host or options the server's backend cannot honour.
    #[error("client {index}: {message}")]
    UnsupportedClient {
        index: usize,
        part: ClientPart,
        message: String,
    },
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
    /// An ordinary user asked for something the root path's export policy does not allow
    /// (the message names the option, client or size).
    #[error("{message}")]
    PolicyViolation { part: PolicyPart, message: String },
    /// The request conflicts with the current state (a path in use, a volume being deleted, an
    /// idempotency key reused for another request).
    #[error("{message}")]
    Conflict { with: Clash, message: String },
    #[error("{0}")]
    Unauthenticated(String),
    /// The service cannot record anything right now (its disk is full, its database is not
    /// writable or not reachable); nothing was changed and the same request may succeed later.
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
    /// A server nfsprov had to ask (to check a root path) could not be reached or did not
    /// answer; nothing was recorded.
    #[error("{0}")]
    ServerUnreachable(String),
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

    pub fn not_found(what: Entity, key: impl fmt::Display) -> Self {
        Error::NotFound {
            what,
            key: key.to_string(),
        }
    }

    pub fn conflict(with: Clash, message: impl Into<String>) -> Self {
        Error::Conflict {
            with,
            message: message.into(),
        }
    }

    pub fn out_of_range(amount: Amount, message: impl Into<String>) -> Self {
        Error::OutOfRange {
            amount,
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

/// What a user is told when the database server (PostgreSQL) cannot be reached or is not
/// taking work: down, restarting, shutting down, cut off from this node, or no connection
/// of the pool came free in time.
const DATABASE_UNREACHABLE: &str = "the service cannot reach its database right now (it is down, restarting, out of reach \
     or too busy); nothing was changed: try again later";

/// Whether `e` says "the database is not there right now" rather than "this statement is
/// wrong": no connection could be had in time (the pool's acquire timeout), a connection
/// broke, did not answer or answered out of protocol (I/O, TLS, protocol; the SQL layer's own
/// wait on PostgreSQL ends as a timed-out I/O error), or PostgreSQL said so: class 08
/// (connection exception), 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03
/// cannot_connect_now, 53300 too_many_connections.
fn is_database_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        // The conversation broke off: a server (or a proxy in front of it) that closes a new
        // connection at once answers sqlx's TLS request (`sslmode=prefer`, the default) with
        // nothing, "unexpected response from SSLRequest: 0x00", as one starting up or shutting
        // down may answer it with an error message sqlx does not read.
        | sqlx::Error::Protocol(_) => true,
        _ => pg_code(e).is_some_and(|code| {
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
        }),
    }
}

/// PostgreSQL's SQLSTATE of `e`, if PostgreSQL refused a statement; `None` for anything else,
/// SQLite's errors included (their codes are SQLite result codes, not SQLSTATEs).
fn pg_code(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .map(|pg| pg.code()),
        _ => None,
    }
}

/// Whether PostgreSQL refused a text value it cannot store: a NUL character (SQLite stores it;
/// PostgreSQL's text types cannot), SQLSTATE 22021 character_not_in_repertoire or 22P05
/// untranslatable_character. It is the request's text, not the service, at fault.
fn is_unstorable_text(e: &sqlx::Error) -> bool {
    matches!(pg_code(e), Some("22021" | "22P05"))
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if is_database_unreachable(&e) {
            tracing::error!("database unreachable: {e}");
            return Error::Unavailable(DATABASE_UNREACHABLE.into());
        }
        if is_unstorable_text(&e) {
            // Fields nfsprov checks itself refuse this earlier, naming the field; this is the
            // backstop for text that is only looked up (names in a URL, filters of a listing).
            return Error::invalid(
                "request",
                "a text value contains a NUL character (\\u0000 or %00), which is not accepted",
            );
        }
        let storage = match &e {
            // SQLite's result codes are numbers; PostgreSQL's SQLSTATEs are not its business.
            sqlx::Error::Database(db) if pg_code(&e).is_none() => db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| is_storage_failure(c & 0xff)),
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
