//! `nfsprov serve`: open the database, start a reconciler per server, serve the API.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::api::{AppState, router};
use crate::datastore::Datastore;
use crate::reconcile::{Hub, Tuning};

/// The database file inside a data directory.
pub fn db_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("nfsprov.db")
}

/// Open the database in `data_dir`, creating both if needed. The directory holds password
/// hashes and SSH state: it is made (or tightened to) 0700 and the database file 0600 before
/// SQLite opens it, which gives its `-wal` and `-shm` files the same mode.
pub async fn open(data_dir: &Path) -> anyhow::Result<Datastore> {
    private_dir(data_dir)?;
    let db = db_path(data_dir);
    private_file(&db)?;
    for suffix in ["-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        let p = std::path::PathBuf::from(p);
        if p.exists() {
            private_file(&p)?;
        }
    }
    Datastore::open(&db).await
}

/// Create `dir` (and its parents) if missing, and make it 0700.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making data directory {} private (0700)", dir.display()))
}

/// Create `file` empty if missing, and make it 0600.
fn private_file(file: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("creating {}", file.display()))?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private (0600)", file.display()))
}

pub async fn serve(data_dir: &Path, listen: SocketAddr) -> anyhow::Result<()> {
    let db = open(data_dir).await?;
    let state_dir = data_dir.join("ssh");
    private_dir(&state_dir)?;
    let hub = Hub::new(db, state_dir, Tuning::from_env());
    // Every server is reconciled at start (crash recovery, drift repair); servers added later
    // through the CLI are picked up by this periodic scan, through the API at once.
    hub.ensure_all().await?;
    let scan = hub.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if let Err(e) = scan.ensure_all().await {
                tracing::warn!("scanning for new servers: {e:#}");
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!("nfsprov listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router(AppState::new(hub)))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

/// Ctrl-C or SIGTERM (what service managers send). Stopping at any point is safe: the next
/// start reconciles every server from the database.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
