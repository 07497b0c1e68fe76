//! What only PostgreSQL needs, named in one place beside `sqlite` (see ARCHITECTURE.md,
//! "Databases"): opening the pool with its own migrations (`migrations_pg/`), the outcome
//! updates, which read their JSON array through `jsonb_array_elements` where SQLite uses
//! `json_each`, and the create path (one transaction per create, rows locked `FOR UPDATE`)
//! that stands in for SQLite's create thread.

use std::collections::BTreeSet;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use tokio::sync::mpsc;

use super::audit::append_all;
use super::create::{
    INSERT, INSERT_RESTORE, Job, LIVE_EXPORT_IDS, Lookup, MAX_BATCH, Outcome, Pending,
    SET_EXPORT_ID, Stats, Verdict, check, create_entry, created, lookup_sql, lowest_free,
    no_export_ids, reserve,
};
use super::sql::{Db, Tx, q};
use super::{Columns, MAX_EXPORT_ID, NewVolume, now};
use crate::audit::Context;
use crate::error::{Entity, Error, Result};
use crate::model::{VolumeId, clients_to_json};

/// How long a request waits for a connection of the pool before it is answered 503 (the
/// database unreachable or too busy): well inside the request timeout (90 s by default), so a
/// client hears "try again" rather than nothing while this node is cut off from PostgreSQL;
/// long enough that a storm of creates queueing for row locks on a loaded host (a 3-node,
/// 64-in-flight storm on a debug build waited about 6 s) is not turned away.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(20);

/// PostgreSQL ends a session of this node that sits in an open transaction this long: a node
/// stopped (SIGSTOP, a VM pause) or cut off from the database in the middle of a transaction
/// would otherwise keep its row locks (`FOR UPDATE` on users, root paths, servers, leases)
/// and stall every other node until it came back. Statements here take milliseconds.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "10s";

/// Connect to `url` and bring its schema up to date.
pub(super) async fn open(url: &str) -> anyhow::Result<PgPool> {
    let options = connect_options(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options.clone())
        .await
        .map_err(|e| connect_error(e, &options))
        .context("connecting to the PostgreSQL database")?;
    sqlx::migrate!("./migrations_pg")
        .run(&pool)
        .await
        .context("applying PostgreSQL database migrations")?;
    Ok(pool)
}

/// Every connection of this node to PostgreSQL is made with these: the main pool's, the
/// leases' pool's, the change listener's (`notify`, on the main pool's options) and `migrate-to`'s,
/// so the URL's `sslmode` and `sslrootcert` hold for all of them.
pub(super) fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(url)
        .context("reading the PostgreSQL database URL")?
        .options([(
            "idle_in_transaction_session_timeout",
            IDLE_IN_TRANSACTION_TIMEOUT,
        )]))
}

/// `e` with what to change when TLS is the cause: sqlx (and rustls) name the failure
/// ("invalid peer certificate: UnknownIssuer", "pg_hba.conf rejects connection ... no
/// encryption") but not which URL parameter fixes it. Never the URL itself (its password).
pub(super) fn connect_error(e: sqlx::Error, options: &PgConnectOptions) -> anyhow::Error {
    use rustls::CertificateError as Cert;
    let server = format!("{}:{}", options.get_host(), options.get_port());
    // rustls's verdict comes as `Error::Tls` from the handshake's set-up and as an
    // `io::Error` around it from the handshake itself (sqlx drives rustls through its socket).
    let rustls_error = match &e {
        sqlx::Error::Tls(tls) => tls.downcast_ref::<rustls::Error>(),
        sqlx::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    let hint = match (rustls_error, &e) {
        (
            Some(rustls::Error::InvalidCertificate(
                Cert::UnknownIssuer | Cert::BadSignature | Cert::UnhandledCriticalExtension,
            )),
            _,
        ) => Some(format!(
            "the certificate of the PostgreSQL server {server} was not trusted: it is not signed \
             by a CA in the URL's sslrootcert (or the system's roots without it); give the CA \
             file that signed the server's certificate as sslrootcert"
        )),
        (
            Some(rustls::Error::InvalidCertificate(
                Cert::NotValidForName | Cert::NotValidForNameContext { .. },
            )),
            _,
        ) => Some(format!(
            "the certificate of the PostgreSQL server {server} is not valid for the name {:?} \
             of the URL: use a host name the certificate lists, or sslmode=verify-ca to check \
             the CA only",
            options.get_host()
        )),
        (Some(rustls::Error::InvalidCertificate(_)), _) => Some(format!(
            "the certificate of the PostgreSQL server {server} was not trusted"
        )),
        (Some(_), _) | (None, sqlx::Error::Tls(_)) => {
            Some(format!("TLS to the PostgreSQL server {server} failed"))
        }
        (None, sqlx::Error::Database(db))
            if db.code().as_deref() == Some("28000") && db.message().contains("no encryption") =>
        {
            Some(format!(
                "the PostgreSQL server {server} accepts only TLS connections (the URL has \
                 sslmode={}): set sslmode=verify-full and sslrootcert=<the CA file> in the \
                 database URL",
                ssl_mode_name(options.get_ssl_mode())
            ))
        }
        _ => None,
    };
    match hint {
        Some(hint) => anyhow::Error::new(e).context(hint),
        None => e.into(),
    }
}

/// `mode` as the URL spells it.
fn ssl_mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// The leases' own pool (`datastore::leases`): two connections that requests never take, so
/// a storm that keeps every connection of the main pool busy (or queued for) cannot delay a
/// renewal past the lease time and hand a healthy node's servers to another one. Connected
/// lazily; a renewal that cannot get a connection in time fails (and is tried again).
pub(super) fn open_leases(url: &str) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(LEASE_ACQUIRE_TIMEOUT)
        .connect_lazy_with(connect_options(url)?))
}

/// How long a lease statement waits for one of the leases' connections.
const LEASE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

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

// ---- creates ----------------------------------------------------------------------------

/// Start the node's create queue: as on SQLite, one task takes the creates waiting at that
/// moment (up to `MAX_BATCH`) and records them in one transaction (group commit: one commit,
/// one lock of the audit chain's head). Callers queue with `create::submit`.
pub(super) fn spawn(db: Db, stats: Arc<Stats>) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
    tokio::spawn(run(db, stats, rx));
    tx
}

async fn run(db: Db, stats: Arc<Stats>, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        // A request whose caller went away is not recorded, as on SQLite.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        stats.note(jobs.len());
        let outcomes = record_batch(&db, &jobs).await;
        for (job, outcome) in jobs.drain(..).zip(outcomes) {
            let _ = job.reply.send(outcome);
        }
    }
}

/// Record `jobs` in one transaction; if that fails (a deadlock with another node's
/// transaction, say), each in its own.
async fn record_batch(db: &Db, jobs: &[Job]) -> Vec<Result<Outcome>> {
    match apply(db, jobs).await {
        Ok(outcomes) => outcomes,
        Err(e) if jobs.len() == 1 => vec![Err(e)],
        Err(e) => {
            tracing::warn!(error = %e, batch = jobs.len(), "batch of creates rolled back; recording them one by one");
            let mut outcomes = Vec::with_capacity(jobs.len());
            for job in jobs {
                let one = apply(db, std::slice::from_ref(job)).await;
                outcomes.push(one.and_then(|mut o| o.pop().expect("one outcome per job")));
            }
            outcomes
        }
    }
}

/// The ids as a JSON array, bound as one value (`ids!` reads it back).
fn id_list(ids: impl IntoIterator<Item = i64>) -> String {
    serde_json::Value::from(ids.into_iter().collect::<Vec<_>>()).to_string()
}

/// `id IN` the JSON array bound in its place.
macro_rules! ids {
    () => {
        "(SELECT CAST(e AS BIGINT) FROM jsonb_array_elements_text(CAST(? AS JSONB)) AS e)"
    };
}

/// Record `jobs` in one transaction. `Err` means nothing was recorded; each inner `Err` is one
/// request refused.
///
/// The owners', root paths' and servers' rows of the batch are locked `FOR UPDATE` first, each
/// kind in id order (two nodes' batches cannot deadlock on them), so the quota, capacity,
/// overlap, idempotency key and next export id the checks read stay true until the commit,
/// across any number of nodes. The reservations are conditional updates as well, and the audit
/// records are written last: the chain's head is locked only from there to the commit.
async fn apply(db: &Db, jobs: &[Job]) -> Result<Vec<Result<Outcome>>> {
    let owners: BTreeSet<i64> = jobs.iter().map(|j| j.nv.owner.0).collect();
    let root_paths: BTreeSet<i64> = jobs.iter().map(|j| j.nv.root_path.0).collect();
    let mut tx = db.begin_write().await?;
    q(concat!(
        "SELECT id FROM users WHERE id IN ",
        ids!(),
        " ORDER BY id FOR UPDATE"
    ))
    .bind(id_list(owners))
    .fetch_all(&mut tx)
    .await?;
    q(concat!(
        "SELECT id FROM root_paths WHERE id IN ",
        ids!(),
        " ORDER BY id FOR UPDATE"
    ))
    .bind(id_list(root_paths.iter().copied()))
    .fetch_all(&mut tx)
    .await?;
    q(concat!(
        "SELECT s.id FROM servers s WHERE s.id IN (SELECT server_id FROM root_paths WHERE id IN ",
        ids!(),
        ") ORDER BY s.id FOR UPDATE"
    ))
    .bind(id_list(root_paths))
    .fetch_all(&mut tx)
    .await?;
    let mut pending = Pending::default();
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        outcomes.push(record(&mut tx, &job.nv, &mut pending).await?);
    }
    // Conditional, as on SQLite: the invariant holds even if a lock above were missing.
    for (user, gb) in &pending.used {
        let n = q("UPDATE users SET used_gb = used_gb + ?1 WHERE id = ?2 AND ?1 >= 0 AND ?1 <= quota_gb - used_gb")
            .bind(*gb)
            .bind(*user)
            .execute(&mut tx)
            .await?;
        if n != 1 {
            return Err(anyhow::anyhow!("quota of user {user} changed during a create").into());
        }
    }
    for (rp, gb) in &pending.allocated {
        let n = q(
            "UPDATE root_paths SET allocated_gb = allocated_gb + ?1 WHERE id = ?2 \
             AND ?1 >= 0 AND ?1 <= capacity_gb - allocated_gb",
        )
        .bind(*gb)
        .bind(*rp)
        .execute(&mut tx)
        .await?;
        if n != 1 {
            return Err(
                anyhow::anyhow!("capacity of root path {rp} changed during a create").into(),
            );
        }
    }
    // In the batch's transaction: a create is never recorded without its audit record.
    let entries: Vec<_> = jobs
        .iter()
        .zip(&outcomes)
        .filter_map(|(job, o)| match o {
            Ok(Outcome::New(v)) => Some((&job.ctx, create_entry(&job.nv, v))),
            _ => None,
        })
        .collect();
    let entries: Vec<(&Context, &crate::audit::Entry)> =
        entries.iter().map(|(c, e)| (*c, e)).collect();
    append_all(&mut tx, &entries).await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// One create of the batch: `Err` fails the batch (a database error), an inner `Err` refuses
/// this request alone.
async fn record(tx: &mut Tx, nv: &NewVolume, pending: &mut Pending) -> Result<Result<Outcome>> {
    let sub = nv.sub_path.as_str();
    let parts: Vec<&str> = sub.split('/').collect();
    // A unique index that refused the insert (a race the locks should make impossible) sends
    // the create round once more: the lookup then sees the volume that won and replays or
    // refuses.
    for _ in 0..2 {
        let mut lookup = q(lookup_sql(parts.len(), " COLLATE \"C\""))
            .bind(nv.owner)
            .bind(nv.root_path)
            .bind(nv.idempotency_key.as_deref())
            .bind(format!("{sub}/"))
            .bind(format!("{sub}0"));
        for k in 1..=parts.len() {
            lookup = lookup.bind(parts[..k].join("/"));
        }
        let Some(row) = lookup.fetch_optional(&mut *tx).await? else {
            return Ok(Err(Error::not_found(Entity::User, nv.owner)));
        };
        let row = Lookup::from_columns(&row)?;
        let (server_id, clients) = match check(&row, nv, pending)? {
            Verdict::Replay(prior) => return Ok(Ok(Outcome::Replayed(prior))),
            Verdict::Refused(e) => return Ok(Err(e)),
            Verdict::Go { server_id, clients } => (server_id, clients),
        };
        let ts = now();
        let inserted = q(insert_or_nothing())
            .bind(nv.owner)
            .bind(nv.root_path)
            .bind(server_id)
            .bind(sub)
            .bind(nv.size_gb)
            .bind(clients_to_json(&clients))
            .bind(nv.mode.as_octal_string())
            .bind(i64::from(nv.uid))
            .bind(i64::from(nv.gid))
            .bind(nv.idempotency_key.as_deref())
            .bind(nv.request_hash.as_deref())
            .bind(&ts)
            .bind(nv.adopt_existing)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(inserted) = inserted else {
            continue;
        };
        let id: VolumeId = inserted.id("id")?;
        let mut export_id = inserted.int("export_id")?;
        if let Some(sid) = nv.restore_from {
            q(INSERT_RESTORE)
                .bind(id)
                .bind(sid)
                .execute(&mut *tx)
                .await?;
        }
        if export_id > MAX_EXPORT_ID {
            let used = q(LIVE_EXPORT_IDS)
                .bind(server_id)
                .bind(MAX_EXPORT_ID)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.int("export_id"))
                .collect::<Result<Vec<_>>>()?;
            export_id = match lowest_free(used) {
                Some(free) => free,
                None => return Ok(Err(no_export_ids())),
            };
            q(SET_EXPORT_ID)
                .bind(export_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        reserve(pending, nv)?;
        let v = created(row, nv, id, export_id, server_id, clients, &ts)?;
        return Ok(Ok(Outcome::New(Box::new(v))));
    }
    Err(anyhow::anyhow!("a create kept clashing with a unique index; try again").into())
}

/// `INSERT` that, where a unique index already holds the row, inserts nothing and returns no
/// row instead of failing the transaction (and with it the whole batch).
fn insert_or_nothing() -> &'static str {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        INSERT.replacen(" RETURNING ", " ON CONFLICT DO NOTHING RETURNING ", 1)
    });
    &SQL
}

#[cfg(test)]
mod tests {
    /// A malformed `--database` URL is refused at start-up without echoing its password (the
    /// error reaches logs and terminals), and a hostile, very long one is refused or read without a panic.
    #[test]
    fn a_bad_database_url_is_refused_without_its_password() {
        for url in [
            "postgres://nfsprov:s3cret@[bad/nfsprov",
            "postgres://nfsprov:s3cret@db.example:99999/nfsprov",
            "postgres://nfsprov:s3cret@db.example:5432/nfsprov?sslmode=sometimes",
            "postgresql://nfsprov:s3cret@db.example:5432/nfsprov?port=http",
        ] {
            let Err(e) = super::connect_options(url) else {
                panic!("{url} was taken");
            };
            let shown = format!("{e:#} {e:?}");
            assert!(shown.contains("PostgreSQL database URL"), "{shown}");
            assert!(!shown.contains("s3cret"), "{url} gave {shown}");
        }
        // Hostile and long (3.8 MB): refused or read, never echoed, never a panic.
        let long = format!(
            "postgres://u:s3cret@db.example:5432/nfsprov?{}",
            "application_name=%FF%00&".repeat(160_000)
        );
        if let Err(e) = super::connect_options(&long) {
            assert!(!format!("{e:#} {e:?}").contains("s3cret"));
        }
    }

    /// rustls panics on its first default config (`ClientConfig::builder()`, which a
    /// dependency may call) when the build has two crypto providers and none is installed.
    /// sqlx's TLS (`tls-rustls-ring-native-roots`), tokio-rustls and ldap3 must all bring
    /// ring alone: the default is then unambiguous, and it is ring, what serve.rs and ldap.rs
    /// name explicitly.
    #[test]
    fn rustls_is_built_with_ring_alone() {
        let config = std::panic::catch_unwind(|| {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
        assert!(
            config.is_ok(),
            "two rustls crypto providers in the build (see `cargo tree -e features -i rustls`)"
        );
        let suites = |p: &rustls::crypto::CryptoProvider| {
            p.cipher_suites
                .iter()
                .map(|s| s.suite())
                .collect::<Vec<_>>()
        };
        let default = rustls::crypto::CryptoProvider::get_default().expect("installed by builder");
        assert_eq!(
            suites(default),
            suites(&rustls::crypto::ring::default_provider())
        );
    }

    /// A database that closes each new connection at once (down behind a proxy or balancer
    /// that still accepts, or going away): every `sslmode` gives the caller a 503, never a 500.
    /// sqlx's TLS request under `prefer` (the default) reads nothing back and calls it a
    /// protocol error; that was a 500 in a storm while PostgreSQL restarted behind a proxy.
    #[tokio::test]
    async fn a_database_that_closes_new_connections_is_unavailable() {
        use sqlx::Connection as _;
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let modes = [
            "",
            "?sslmode=prefer",
            "?sslmode=require",
            "?sslmode=disable",
        ];
        let closer = std::thread::spawn(move || {
            for _ in 0..modes.len() {
                drop(listener.accept());
            }
        });
        for mode in modes {
            let url = format!("postgres://u:s3cret@127.0.0.1:{port}/db{mode}");
            let options = super::connect_options(&url).unwrap();
            let e = sqlx::PgConnection::connect_with(&options)
                .await
                .unwrap_err();
            let shown = format!("{e}");
            let mapped = crate::error::Error::from(e);
            assert!(
                matches!(mapped, crate::error::Error::Unavailable(_)),
                "{mode:?}: {shown} became {mapped:?}"
            );
        }
        closer.join().unwrap();
    }
}
