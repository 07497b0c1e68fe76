//! What only PostgreSQL needs, named in one place beside `sqlite` (see ARCHITECTURE.md,
//! "Databases"): opening the pool with its own migrations (`migrations_pg/`) and the outcome
//! updates, which read their JSON array through `jsonb_array_elements` where SQLite uses
//! `json_each`.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgPool, PgPoolOptions};

/// Connect to `url` and bring its schema up to date.
pub(super) async fn open(url: &str) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .context("connecting to the PostgreSQL database")?;
    sqlx::migrate!("./migrations_pg")
        .run(&pool)
        .await
        .context("applying PostgreSQL database migrations")?;
    Ok(pool)
}

// ---- outcome updates (`UPDATE … FROM jsonb_array_elements(?)`) ---------------------------
// The same statements as `sqlite::RECORD_*`: a JSON array (?2) of `[id, generation, …]`.

macro_rules! outcomes {
    ($fields:literal) => {
        concat!(
            "FROM (SELECT (e ->> 0)::BIGINT AS id, (e ->> 1)::BIGINT AS generation",
            $fields,
            " FROM jsonb_array_elements(CAST(?2 AS JSONB)) AS e) AS o"
        )
    };
}

pub(super) const RECORD_APPLIED: &str = concat!(
    "UPDATE volumes SET state = 'available', applied_clients = o.clients, \
     last_error = NULL, failed_generation = NULL, updated_at = ?1 ",
    outcomes!(", e ->> 2 AS clients"),
    " WHERE volumes.id = o.id AND volumes.generation = o.generation \
     AND volumes.state != 'deleting' AND volumes.state != 'deleted' \
     AND (volumes.state != 'available' OR volumes.applied_clients IS DISTINCT FROM o.clients \
          OR volumes.last_error IS NOT NULL)"
);
pub(super) const RECORD_DELETED: &str = concat!(
    "UPDATE volumes SET state = 'deleted', last_error = NULL, deleted_at = ?1, updated_at = ?1 ",
    outcomes!(""),
    " WHERE volumes.id = o.id AND volumes.generation = o.generation AND volumes.state = 'deleting'"
);
pub(super) const RECORD_REJECTED: &str = concat!(
    "UPDATE volumes SET \
     state = CASE WHEN volumes.state = 'deleting' THEN 'deleting' ELSE 'error' END, \
     failed_generation = o.generation, last_error = o.message, updated_at = ?1 ",
    outcomes!(", e ->> 2 AS message"),
    " WHERE volumes.id = o.id AND volumes.generation = o.generation"
);
pub(super) const RECORD_FAILED: &str = concat!(
    "UPDATE volumes SET \
     state = CASE WHEN volumes.state = 'deleting' THEN 'deleting' ELSE 'error' END, \
     failed_generation = NULL, last_error = o.message, updated_at = ?1 ",
    outcomes!(", e ->> 2 AS message"),
    " WHERE volumes.id = o.id AND volumes.generation = o.generation \
     AND volumes.state != 'deleted' \
     AND (volumes.state NOT IN ('error', 'deleting') OR volumes.last_error IS DISTINCT FROM o.message \
          OR volumes.failed_generation IS NOT NULL)"
);
pub(super) const RECORD_PENDING: &str = concat!(
    "UPDATE volumes SET last_error = o.message ",
    outcomes!(", e ->> 2 AS message"),
    " WHERE volumes.id = o.id AND volumes.generation = o.generation \
     AND volumes.last_error IS DISTINCT FROM o.message"
);
