//! When a reconciler runs next: the retry and resync policy, kept apart from the work. A pass
//! reports how it went; `RetryPolicy` turns that into a `Requeue`, and the reconciler's loop
//! only waits as told.

use std::time::{Duration, Instant};

use crate::settings::Tuning;

/// When the reconciler of a server runs its next pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// A quick pass at the next wake-up (a request changed the server's desired state), or a
    /// full pass (drift repair) after this long if no wake-up comes first.
    OnWakeOr(Duration),
    /// A full pass after this long. Wake-ups do not cut it short (they are kept for then): a
    /// server that is down must not cost an SSH connection attempt per API request.
    After(Duration),
}

/// Backoff and resync, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after a first failure; it doubles with each failure in a row...
    pub first_backoff: Duration,
    /// ...up to this.
    pub max_backoff: Duration,
    /// A full pass is due this long after the last full pass began, however many quick
    /// passes ran in between: requests must not postpone drift detection.
    pub resync: Duration,
}

/// What the policy remembers of one reconciler's passes.
#[derive(Debug, Clone, Copy)]
pub struct RetryState {
    /// Failed passes in a row.
    failures: u32,
    /// When the last successful full pass began.
    last_full: Instant,
}

impl RetryState {
    pub fn new(now: Instant) -> Self {
        RetryState {
            failures: 0,
            last_full: now,
        }
    }
}

impl RetryPolicy {
    pub fn new(tuning: &Tuning) -> Self {
        RetryPolicy {
            first_backoff: Duration::from_millis(500),
            max_backoff: tuning.max_backoff,
            resync: tuning.resync,
        }
    }

    /// The wait after `failures` failures in a row (at least 1).
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }

    /// After a pass that began at `began` and succeeded; `full`: it verified everything.
    pub fn succeeded(
        &self,
        state: &mut RetryState,
        full: bool,
        began: Instant,
        now: Instant,
    ) -> Requeue {
        state.failures = 0;
        if full {
            state.last_full = began;
        }
        Requeue::OnWakeOr((state.last_full + self.resync).saturating_duration_since(now))
    }

    /// After a pass that failed (server unreachable, or it failed the pass as a whole).
    pub fn failed(&self, state: &mut RetryState) -> Requeue {
        state.failures = state.failures.saturating_add(1);
        Requeue::After(self.backoff(state.failures))
    }

    /// The wait before restarting a reconciler task that panicked or ended after running for
    /// `ran_for`; `restarts` counts the restarts in a row, and starts again from 0 once a task
    /// ran well past the longest backoff.
    pub fn restart_delay(&self, restarts: &mut u32, ran_for: Duration) -> Duration {
        if ran_for > self.max_backoff.saturating_mul(4) {
            *restarts = 0;
        }
        *restarts = restarts.saturating_add(1);
        self.backoff(*restarts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(20),
            resync: Duration::from_secs(30),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy();
        let waits: Vec<_> = (1..=8).map(|n| p.backoff(n).as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 20000, 20000]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(20));
        let tight = RetryPolicy {
            max_backoff: Duration::from_millis(100),
            ..p
        };
        assert_eq!(tight.backoff(1), Duration::from_millis(100));
    }

    #[test]
    fn failures_back_off_and_a_success_resets() {
        let p = policy();
        let t0 = Instant::now();
        let mut st = RetryState::new(t0);
        assert_eq!(
            p.failed(&mut st),
            Requeue::After(Duration::from_millis(500))
        );
        assert_eq!(p.failed(&mut st), Requeue::After(Duration::from_secs(1)));
        assert_eq!(p.failed(&mut st), Requeue::After(Duration::from_secs(2)));
        let t1 = t0 + Duration::from_secs(4);
        assert_eq!(
            p.succeeded(&mut st, true, t1, t1 + Duration::from_secs(1)),
            Requeue::OnWakeOr(Duration::from_secs(29))
        );
        assert_eq!(
            p.failed(&mut st),
            Requeue::After(Duration::from_millis(500))
        );
    }

    #[test]
    fn quick_passes_do_not_postpone_the_resync() {
        let p = policy();
        let t0 = Instant::now();
        let mut st = RetryState::new(t0);
        assert_eq!(
            p.succeeded(&mut st, true, t0, t0 + Duration::from_secs(2)),
            Requeue::OnWakeOr(Duration::from_secs(28))
        );
        // Quick passes (woken by requests) keep the due time of the last full pass.
        let t = t0 + Duration::from_secs(20);
        assert_eq!(
            p.succeeded(&mut st, false, t, t + Duration::from_secs(1)),
            Requeue::OnWakeOr(Duration::from_secs(9))
        );
        // Past due: the next wait is zero, so the next pass is full.
        let late = t0 + Duration::from_secs(40);
        assert_eq!(
            p.succeeded(&mut st, false, late, late),
            Requeue::OnWakeOr(Duration::ZERO)
        );
    }

    #[test]
    fn restarts_back_off_unless_the_task_ran_long() {
        let p = policy();
        let mut n = 0;
        let short = Duration::from_secs(1);
        assert_eq!(p.restart_delay(&mut n, short), Duration::from_millis(500));
        assert_eq!(p.restart_delay(&mut n, short), Duration::from_secs(1));
        assert_eq!(p.restart_delay(&mut n, short), Duration::from_secs(2));
        let long = Duration::from_secs(81);
        assert_eq!(p.restart_delay(&mut n, long), Duration::from_millis(500));
    }
}
