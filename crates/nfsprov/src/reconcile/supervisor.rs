//! The owner of the reconciler tasks: one per server, restarted (after `RetryPolicy`'s restart
//! delay) when one panics or ends, all stopped by `shutdown`. A bug hit by one pass must not
//! leave its server unreconciled for the life of the process, and no reconciler outlives the
//! service.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::policy::RetryPolicy;
use crate::model::ServerId;

enum Command {
    Start(ServerId),
    Shutdown(oneshot::Sender<()>),
}

/// A handle on the supervising task; cheap to keep, it only holds a channel to it.
pub struct Supervisor {
    tx: mpsc::UnboundedSender<Command>,
}

/// How a reconciler task ended: its server, how long it ran, and its panic if it panicked.
type Ended = (
    ServerId,
    Duration,
    Result<(), Box<dyn std::any::Any + Send>>,
);

impl Supervisor {
    /// Start the supervising task (on the current tokio runtime). `reconciler(server)` is the
    /// body of a server's task; it is expected to run until stopped.
    pub fn spawn<F, Fut>(policy: RetryPolicy, reconciler: F) -> Supervisor
    where
        F: Fn(ServerId) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(supervise(rx, policy, reconciler));
        Supervisor { tx }
    }

    /// Run a reconciler for `server`. The caller starts each server once.
    pub fn start(&self, server: ServerId) {
        if self.tx.send(Command::Start(server)).is_err() {
            tracing::debug!(server = %server, "not starting a reconciler: shutting down");
        }
    }

    /// Stop every reconciler task and wait until they are gone. Stopping at any point is
    /// safe: the next start reconciles every server from the database.
    pub async fn shutdown(&self) {
        let (done, stopped) = oneshot::channel();
        if self.tx.send(Command::Shutdown(done)).is_ok() {
            let _ = stopped.await;
        }
    }
}

async fn supervise<F, Fut>(
    mut rx: mpsc::UnboundedReceiver<Command>,
    policy: RetryPolicy,
    reconciler: F,
) where
    F: Fn(ServerId) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tasks: JoinSet<Ended> = JoinSet::new();
    let mut restarts: HashMap<ServerId, u32> = HashMap::new();
    let start = |tasks: &mut JoinSet<Ended>, server: ServerId, delay: Duration| {
        let body = reconciler(server);
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            let began = Instant::now();
            let result = AssertUnwindSafe(body).catch_unwind().await;
            (server, began.elapsed(), result)
        });
    };
    loop {
        tokio::select! {
            command = rx.recv() => match command {
                Some(Command::Start(server)) => start(&mut tasks, server, Duration::ZERO),
                Some(Command::Shutdown(done)) => {
                    tasks.shutdown().await;
                    rx.close();
                    let _ = done.send(());
                    return;
                }
                None => {
                    tasks.shutdown().await;
                    return;
                }
            },
            Some(joined) = tasks.join_next() => match joined {
                Ok((server, ran_for, result)) => {
                    let delay = policy.restart_delay(restarts.entry(server).or_default(), ran_for);
                    match result {
                        Err(panic) => tracing::error!(
                            server = %server,
                            "reconciler panicked; restarting it in {delay:?}: {}",
                            panic_message(panic)
                        ),
                        Ok(()) => tracing::error!(
                            server = %server,
                            "reconciler ended unexpectedly; restarting it in {delay:?}"
                        ),
                    }
                    start(&mut tasks, server, delay);
                }
                // Tasks are only cancelled by `shutdown`, which returns above.
                Err(e) => tracing::error!("reconciler task lost: {e}"),
            },
        }
    }
}

/// The text of a panic's payload.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn quick() -> RetryPolicy {
        RetryPolicy {
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            resync: Duration::from_secs(30),
        }
    }

    /// Poll `cond` for up to 60 s.
    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Counts its drops: a task that was stopped dropped its guard.
    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_task_that_panics_or_ends_is_restarted_and_shutdown_stops_all() {
        let runs = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let (r, d) = (runs.clone(), dropped.clone());
        let sup = Supervisor::spawn(quick(), move |server: ServerId| {
            let (runs, dropped) = (r.clone(), d.clone());
            async move {
                let _guard = Guard(dropped);
                let n = runs.fetch_add(1, Ordering::SeqCst);
                if server == ServerId(1) {
                    match n {
                        0 => panic!("on purpose"),
                        1 => return,
                        _ => {}
                    }
                }
                std::future::pending::<()>().await
            }
        });
        sup.start(ServerId(1));
        // Panicked, restarted; ended, restarted; then it runs for good.
        eventually("server 1 ran a third time", || {
            runs.load(Ordering::SeqCst) == 3
        })
        .await;
        sup.start(ServerId(2));
        eventually("server 2 runs", || runs.load(Ordering::SeqCst) == 4).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 2, "the two ended runs");
        sup.shutdown().await;
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            4,
            "both running tasks stopped"
        );
        // Nothing is started after the shutdown.
        assert!(sup.tx.is_closed());
    }
}
