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

pub async fn open(data_dir: &Path) -> anyhow::Result<Datastore> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    Datastore::open(&db_path(data_dir)).await
}

pub async fn serve(data_dir: &Path, listen: SocketAddr) -> anyhow::Result<()> {
    let db = open(data_dir).await?;
    let state_dir = data_dir.join("ssh");
    std::fs::create_dir_all(&state_dir)?;
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
