//! Reconciler leases: which node may change a server, until when, under which fencing token.
//!
//! Every decision is one statement judged by the database's clock ([`now_ms`]), never a read
//! followed by a write: two nodes racing for a free lease cannot both win, and the nodes'
//! clocks do not matter. The token only grows (a take increments it, a renewal keeps it, a
//! release expires the row and keeps it), so a server that stored token N in its fence file
//! refuses every script carrying less (see `backend::fence`).
//!
//! The SQL is portable but for the database's clock ([`now_ms`]).

use std::time::Duration;

use super::sql::{Db, q};
use super::{Columns as _, Datastore};
use crate::error::Result;
use crate::model::ServerId;

/// Milliseconds since the Unix epoch by the database's clock (SQLite: fixed for the duration
/// of one statement; PostgreSQL: the clock as the statement runs).
fn now_ms(db: &Db) -> &'static str {
    if db.is_postgres() {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    } else {
        "CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER)"
    }
}

/// Who holds a server's lease, as the database says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub holder: String,
    pub token: i64,
    /// Milliseconds left (zero or less: expired, free to take).
    pub remaining_ms: i64,
}

/// A name for this process among the nodes sharing a database: host name, pid namespace,
/// process id and a random part (a restarted process with a recycled pid is another holder):
/// `host:pidns:pid:random`.
pub fn new_node_id() -> String {
    let random: [u8; 4] = rand::random();
    format!(
        "{}:{}:{}:{}",
        host_name(),
        pid_namespace(),
        std::process::id(),
        hex::encode(random)
    )
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty() && !h.contains(':'))
        .unwrap_or_else(|| "unknown-host".into())
}

/// The inode of this process's pid namespace (`/proc/self/ns/pid` reads `pid:[N]`).
fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|l| {
            let l = l.to_string_lossy().to_string();
            let n: String = l.chars().filter(char::is_ascii_digit).collect();
            (!n.is_empty()).then_some(n)
        })
        .unwrap_or_else(|| "0".into())
}

/// Whether `holder` names a process of this host and pid namespace that is gone (no such pid,
/// or a zombie): a node restarted after a crash takes its dead predecessor's leases at once
/// instead of after the lease time. Anything else (another host, a pid now used by another
/// process) counts as alive: the lease then simply runs out.
pub fn holder_is_dead(holder: &str) -> bool {
    let mut parts = holder.rsplitn(4, ':');
    let (Some(_random), Some(pid), Some(ns), Some(host)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if host != host_name() || ns != pid_namespace() || pid == std::process::id() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4)
}

impl Datastore {
    /// Take the lease of `server` for `holder` if it is free or expired, or held by `dead` (a
    /// holder known to be gone, see [`holder_is_dead`]) (the token goes up by one), or renew it
    /// if `holder` still holds it (same token); `None` when another holder's lease is still
    /// running. One `INSERT … ON CONFLICT DO UPDATE … WHERE` statement.
    pub async fn acquire_lease(
        &self,
        server: ServerId,
        holder: &str,
        ttl: Duration,
        dead: Option<&str>,
    ) -> Result<Option<i64>> {
        let now = now_ms(&self.leases);
        let sql = format!(
            "INSERT INTO server_leases (server_id, holder, token, expires_at) \
             VALUES (?, ?, 1, {now} + ?) \
             ON CONFLICT (server_id) DO UPDATE SET \
               token = CASE WHEN server_leases.holder = excluded.holder \
                             AND server_leases.expires_at > {now} \
                            THEN server_leases.token ELSE server_leases.token + 1 END, \
               holder = excluded.holder, \
               expires_at = excluded.expires_at \
             WHERE server_leases.holder = excluded.holder \
                OR server_leases.expires_at <= {now} \
                OR server_leases.holder = ? \
             RETURNING token"
        );
        let row = q(sql)
            .bind(server)
            .bind(holder)
            .bind(ttl_ms(ttl))
            .bind(dead)
            .fetch_optional(self.leases.write())
            .await?;
        Ok(match row {
            Some(r) => Some(r.int("token")?),
            None => None,
        })
    }

    /// Extend `holder`'s lease of `server` under `token` by `ttl` from now; false when the
    /// lease was taken over meanwhile (another holder, or a newer token).
    pub async fn renew_lease(
        &self,
        server: ServerId,
        holder: &str,
        token: i64,
        ttl: Duration,
    ) -> Result<bool> {
        let now = now_ms(&self.leases);
        let sql = format!(
            "UPDATE server_leases SET expires_at = {now} + ? \
             WHERE server_id = ? AND holder = ? AND token = ?"
        );
        let done = q(sql)
            .bind(ttl_ms(ttl))
            .bind(server)
            .bind(holder)
            .bind(token)
            .execute(self.leases.write())
            .await?;
        Ok(done == 1)
    }

    /// Give the lease up (clean shutdown): it expires now, so another node takes it at its
    /// next attempt instead of after the lease time. The row and its token stay.
    pub async fn release_lease(&self, server: ServerId, holder: &str, token: i64) -> Result<()> {
        let now = now_ms(&self.leases);
        let sql = format!(
            "UPDATE server_leases SET expires_at = {now} - 1 \
             WHERE server_id = ? AND holder = ? AND token = ?"
        );
        q(sql)
            .bind(server)
            .bind(holder)
            .bind(token)
            .execute(self.leases.write())
            .await?;
        Ok(())
    }

    /// The lease of `server` as it stands (expired ones included); `None` if never taken.
    pub async fn lease_holder(&self, server: ServerId) -> Result<Option<LeaseHolder>> {
        let now = now_ms(&self.leases);
        let sql = format!(
            "SELECT holder, token, expires_at - {now} AS remaining_ms \
             FROM server_leases WHERE server_id = ?"
        );
        let row = q(sql)
            .bind(server)
            .fetch_optional(self.leases.read())
            .await?;
        Ok(match row {
            Some(r) => Some(LeaseHolder {
                holder: r.text("holder")?,
                token: r.int("token")?,
                remaining_ms: r.int("remaining_ms")?,
            }),
            None => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_fixture::fixture;
    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_running_lease_is_held_by_one_holder_and_renewals_keep_the_token() {
        let (_dir, db, _, _) = fixture().await;
        let s = db.servers().await.unwrap()[0].id;
        assert_eq!(db.lease_holder(s).await.unwrap(), None);
        assert_eq!(db.acquire_lease(s, "a", LONG, None).await.unwrap(), Some(1));
        // Another holder is refused while it runs; the holder itself renews, same token.
        assert_eq!(db.acquire_lease(s, "b", LONG, None).await.unwrap(), None);
        assert_eq!(db.acquire_lease(s, "a", LONG, None).await.unwrap(), Some(1));
        assert!(db.renew_lease(s, "a", 1, LONG).await.unwrap());
        assert!(!db.renew_lease(s, "b", 1, LONG).await.unwrap());
        assert!(!db.renew_lease(s, "a", 2, LONG).await.unwrap());
        let h = db.lease_holder(s).await.unwrap().unwrap();
        assert_eq!((h.holder.as_str(), h.token), ("a", 1));
        assert!(h.remaining_ms > 50_000, "{h:?}");
    }

    #[tokio::test]
    async fn an_expired_or_released_lease_is_taken_with_a_greater_token() {
        let (_dir, db, _, _) = fixture().await;
        let s = db.servers().await.unwrap()[0].id;
        assert_eq!(
            db.acquire_lease(s, "a", Duration::from_millis(50), None)
                .await
                .unwrap(),
            Some(1)
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let taken = loop {
            if let Some(t) = db.acquire_lease(s, "b", LONG, None).await.unwrap() {
                break t;
            }
            assert!(std::time::Instant::now() < deadline, "never expired");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(taken, 2);
        // The old holder can neither renew nor take it back while b's runs.
        assert!(!db.renew_lease(s, "a", 1, LONG).await.unwrap());
        assert_eq!(db.acquire_lease(s, "a", LONG, None).await.unwrap(), None);
        // A release expires it at once and keeps the token: the next take goes on from it.
        db.release_lease(s, "b", 2).await.unwrap();
        assert_eq!(db.acquire_lease(s, "a", LONG, None).await.unwrap(), Some(3));
        // A stale release (old token) does nothing.
        db.release_lease(s, "b", 2).await.unwrap();
        assert_eq!(db.acquire_lease(s, "b", LONG, None).await.unwrap(), None);
    }

    #[tokio::test]
    async fn racing_takers_of_a_free_lease_get_one_winner() {
        let (_dir, db, _, _) = fixture().await;
        let s = db.servers().await.unwrap()[0].id;
        let takers: Vec<_> = (0..8)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move { db.acquire_lease(s, &format!("n{i}"), LONG, None).await })
            })
            .collect();
        let mut won = Vec::new();
        for t in takers {
            if let Some(token) = t.await.unwrap().unwrap() {
                won.push(token);
            }
        }
        assert_eq!(won, vec![1]);
    }

    #[tokio::test]
    async fn a_dead_holder_of_this_host_is_taken_over_at_once() {
        let (_dir, db, _, _) = fixture().await;
        let s = db.servers().await.unwrap()[0].id;
        // A process that ran here and is gone (reaped), and one still running.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let mut alive = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = new_node_id();
        let named =
            |pid: u32| me.replacen(&format!(":{}:", std::process::id()), &format!(":{pid}:"), 1);
        let (dead, live) = (named(gone.id()), named(alive.id()));
        assert!(holder_is_dead(&dead), "{dead}");
        assert!(!holder_is_dead(&live), "{live}");
        assert!(!holder_is_dead(&me));
        assert!(!holder_is_dead("other-host:1:999999:ab"));
        assert_eq!(
            db.acquire_lease(s, &live, LONG, None).await.unwrap(),
            Some(1)
        );
        // Claimed dead but the row names someone else: refused.
        assert_eq!(
            db.acquire_lease(s, &me, LONG, Some(&dead)).await.unwrap(),
            None
        );
        alive.kill().unwrap();
        alive.wait().unwrap();
        assert!(holder_is_dead(&live));
        assert_eq!(
            db.acquire_lease(s, &me, LONG, Some(&live)).await.unwrap(),
            Some(2)
        );
    }

    #[test]
    fn node_ids_differ_per_call() {
        let (a, b) = (new_node_id(), new_node_id());
        assert_ne!(a, b);
        assert!(a.contains(&format!(":{}:", std::process::id())), "{a}");
    }
}
