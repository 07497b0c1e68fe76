//! Changes other nodes made, as they commit: on PostgreSQL, triggers (`migrations_pg/0012`)
//! send `NOTIFY nfsprov_changes` naming the server, and one listener per node turns them into
//! [`Change`]s; SQLite has none (one node, or a periodic sweep). Notifications are a shortcut,
//! never the only way: one sent while the listener was disconnected is lost, so after every
//! (re)connection the listener reports [`Change::Gap`] and its user reads everything again.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::mpsc;

use super::Datastore;
use super::sql::Db;
use crate::model::ServerId;

/// The channel the triggers notify on.
const CHANNEL: &str = "nfsprov_changes";

/// Waits between attempts to connect the listener again: doubling from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Changes queued for a slow consumer before the listener waits for it.
const QUEUE: usize = 1024;

/// A committed change, as the listener heard of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// What `server` should look like changed: its lease holder has work.
    Wanted(ServerId),
    /// A reconciler recorded an outcome on `server`: requests waiting on it read again.
    Settled(ServerId),
    /// Notifications may have been missed (the listener (re)connected): assume anything
    /// changed.
    Gap,
}

impl Change {
    /// The payload the triggers send: `want <server_id>` or `done <server_id>`.
    fn parse(payload: &str) -> Option<Change> {
        let (kind, server) = payload.split_once(' ')?;
        let server = ServerId(server.parse().ok()?);
        match kind {
            "want" => Some(Change::Wanted(server)),
            "done" => Some(Change::Settled(server)),
            _ => None,
        }
    }
}

impl Datastore {
    /// The changes committed from now on by any node (this one included), from a listener
    /// task that runs until the receiver is dropped or the pool is closed; `None` on SQLite,
    /// which cannot tell.
    pub fn changes(&self) -> Option<mpsc::Receiver<Change>> {
        let Db::Postgres { pool } = &self.db else {
            return None;
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(listen(pool.clone(), tx));
        Some(rx)
    }
}

/// Connect, listen, forward; on any failure connect again after a growing pause (never a busy
/// loop while the database is down), reporting a [`Change::Gap`] once listening again.
async fn listen(pool: PgPool, tx: mpsc::Sender<Change>) {
    let mut backoff = BACKOFF_FIRST;
    let mut connected_before = false;
    loop {
        let mut listener = match subscribe(&pool).await {
            Ok(l) => l,
            Err(e) if pool.is_closed() => {
                tracing::debug!("change listener stops: the pool is closed ({e})");
                return;
            }
            Err(e) => {
                tracing::warn!(
                    "listening for changes on PostgreSQL (channel {CHANNEL}): {e:#}; trying again in {backoff:?}"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_FIRST;
        if connected_before {
            tracing::info!("change listener connected again: every reconciler is woken");
        }
        connected_before = true;
        if tx.send(Change::Gap).await.is_err() {
            return;
        }
        loop {
            // `try_recv`, not `recv`: a lost connection comes back as `None` instead of being
            // re-established silently, so the gap is reported.
            let change = match listener.try_recv().await {
                Ok(Some(n)) => match Change::parse(n.payload()) {
                    Some(c) => c,
                    None => {
                        tracing::warn!(payload = n.payload(), "unknown change notification");
                        continue;
                    }
                },
                Ok(None) => {
                    tracing::warn!("change listener lost its connection to PostgreSQL");
                    break;
                }
                Err(e) => {
                    if pool.is_closed() {
                        return;
                    }
                    tracing::warn!("change listener: {e}");
                    break;
                }
            };
            if tx.send(change).await.is_err() {
                return;
            }
        }
    }
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Reconnecting is this module's job (with backoff and a `Gap`), not the listener's.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_and_garbage_is_refused() {
        assert_eq!(Change::parse("want 7"), Some(Change::Wanted(ServerId(7))));
        assert_eq!(
            Change::parse("done 12"),
            Some(Change::Settled(ServerId(12)))
        );
        for bad in ["", "want", "want x", "maybe 3", "want  3", "done 3 4"] {
            assert_eq!(Change::parse(bad), None, "{bad:?}");
        }
    }
}
