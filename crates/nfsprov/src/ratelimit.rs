//! Rate limits on changes: every POST, PUT, PATCH and DELETE of both APIs, per user and per
//! source address, with `governor`'s keyed GCRA limiters (a token bucket without a timer: each
//! key holds one timestamp). Reads are not limited here; failed sign-ins have their own limits
//! in `auth`.
//!
//! The check runs in the front door after authentication, so only signed-in callers create
//! keys: users are bounded by the users table, and sources by what signed-in users can send.
//! The source map is swept of idle keys as it grows and, should it still pass
//! `MAX_SOURCES`, started afresh: forgetting counts lets a burst through, while keeping them
//! would let an attacker rotating IPv6 /64s (one key each, `auth::Source`) grow memory without
//! bound. The per-user limit is never forgotten.
//!
//! Answers carry the IETF RateLimit header fields, draft-ietf-httpapi-ratelimit-headers-10
//! (September 2025; -11 keeps the syntax): `RateLimit-Policy` (section 3) lists each policy as
//! a Structured Field item `"name";q=<quota>;w=<window seconds>`, and `RateLimit` (section 4)
//! the state of each as `"name";r=<remaining quota>;t=<seconds until it is full again>`.
//! nfsprov names its two policies `user` and `ip`; the window is the time an empty bucket takes
//! to refill.
//!
//! Refusals are cheap (issue 11: a burst from one user must not slow others): a change whose
//! `Authorization` header was verified recently is checked here *before* authentication, from
//! `Limiter::check_known`, so a burster over its limit is answered 429 without a database
//! lookup, a credential digest or its body being read. The header is remembered only as a keyed
//! SHA-256 digest (the key is random per process, so the map holds nothing a password can be
//! guessed from offline) mapped to the user it verified as, for `RECENT_TTL`. It only ever
//! refuses: a request it lets through is still authenticated in full, so a password changed or
//! an account locked since then makes the next change fail as before (only a caller still over
//! its limit hears 429 first).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use sha2::{Digest as _, Sha256};

use crate::auth::Source;
use crate::error::Error;
use crate::model::UserId;
use crate::settings::RateLimits;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// Source addresses tracked at most (about 100 bytes each).
const MAX_SOURCES: usize = 100_000;
/// Idle keys are swept once every this many checks.
const SWEEP_EVERY: u64 = 4096;
/// How long a verified `Authorization` header is known to belong to its user here.
const RECENT_TTL: Duration = Duration::from_secs(60);
/// Verified headers remembered at most (each took a full sign-in to add).
const MAX_RECENT: usize = 10_000;

/// A user an `Authorization` header verified as, its name, and when.
type Verified = (UserId, Arc<str>, Instant);

/// One policy's state after a check.
#[derive(Clone, Copy, Debug)]
struct Standing {
    policy: &'static str,
    quota: u32,
    window_secs: u64,
    remaining: u32,
    reset_secs: u64,
}

/// What a check found: the state of both policies, for the response's headers.
#[derive(Clone, Debug)]
pub struct Verdict {
    standings: Vec<Standing>,
}

pub struct Limiter {
    limits: RateLimits,
    users: Keyed<UserId>,
    sources: Mutex<Arc<Keyed<Source>>>,
    checks: AtomicU64,
    /// Keyed digests of `Authorization` headers verified recently: the user, its name, when.
    recent: Mutex<HashMap<[u8; 32], Verified>>,
    /// The per-process key of those digests.
    recent_key: [u8; 32],
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let nz = |n: u32| NonZeroU32::new(n.max(1)).expect("at least 1");
    Quota::per_second(nz(per_second)).allow_burst(nz(burst))
}

/// Seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Limiter {
    pub fn new(limits: RateLimits) -> Limiter {
        Limiter {
            limits,
            users: RateLimiter::keyed(quota(limits.per_user, limits.burst_per_user))
                .with_middleware::<StateInformationMiddleware>(),
            sources: Mutex::new(Arc::new(Self::source_limiter(limits))),
            checks: AtomicU64::new(0),
            recent: Mutex::default(),
            recent_key: rand::random(),
        }
    }

    fn header_digest(&self, authorization: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.recent_key);
        h.update(authorization.as_bytes());
        h.finalize().into()
    }

    /// Before authentication: if `authorization` verified recently as some user, count the
    /// change against that user now (`Some`, a refusal or the verdict to keep); `None` if the
    /// header is not known here, so the caller authenticates and then calls `check`.
    pub fn check_known(
        &self,
        authorization: Option<&str>,
        source: Source,
    ) -> Option<(UserId, Arc<str>, Result<Verdict, Refusal>)> {
        let d = self.header_digest(authorization?);
        let (user, name) = {
            let map = self.recent.lock().expect("rate limit lock");
            let (user, name, at) = map.get(&d)?;
            if at.elapsed() >= RECENT_TTL {
                return None;
            }
            (*user, name.clone())
        };
        let verdict = self.check(user, &name, source);
        Some((user, name, verdict))
    }

    /// Remember that `authorization` verified as `user` (see `check_known`).
    pub fn remember(&self, authorization: Option<&str>, user: UserId, username: &str) {
        let Some(header) = authorization else {
            return;
        };
        let d = self.header_digest(header);
        let mut map = self.recent.lock().expect("rate limit lock");
        if map.len() >= MAX_RECENT {
            map.retain(|_, (_, _, at)| at.elapsed() < RECENT_TTL);
            if map.len() >= MAX_RECENT {
                map.clear();
            }
        }
        map.insert(d, (user, username.into(), Instant::now()));
    }

    fn source_limiter(limits: RateLimits) -> Keyed<Source> {
        RateLimiter::keyed(quota(limits.per_source, limits.burst_per_source))
            .with_middleware::<StateInformationMiddleware>()
    }

    fn sources(&self) -> Arc<Keyed<Source>> {
        self.sources.lock().expect("rate limit lock").clone()
    }

    /// Count one change by `user` from `source`: the headers' state, or 429 naming the limit
    /// and when to retry. A refused request is not counted.
    pub fn check(&self, user: UserId, username: &str, source: Source) -> Result<Verdict, Refusal> {
        self.bound_memory();
        let l = self.limits;
        let user_policy = |remaining, reset| Standing {
            policy: "user",
            quota: l.burst_per_user,
            window_secs: window(l.burst_per_user, l.per_user),
            remaining,
            reset_secs: reset,
        };
        let source_policy = |remaining, reset| Standing {
            policy: "ip",
            quota: l.burst_per_source,
            window_secs: window(l.burst_per_source, l.per_source),
            remaining,
            reset_secs: reset,
        };
        let user_state = match self.users.check_key(&user) {
            Ok(s) => {
                let r = s.remaining_burst_capacity();
                user_policy(
                    r,
                    refill_secs(l.burst_per_user - r.min(l.burst_per_user), l.per_user),
                )
            }
            Err(not_until) => {
                let wait = ceil_secs(not_until.wait_time_from(self.users.clock().now())).max(1);
                return Err(Refusal {
                    error: Error::RateLimited {
                        message: format!(
                            "too many changes by user {username}: at most {} per second (bursts of {}); retry in {wait} s",
                            l.per_user, l.burst_per_user
                        ),
                        retry_after_secs: wait,
                    },
                    verdict: Verdict {
                        standings: vec![user_policy(0, wait)],
                    },
                    hold: l.refusal_hold,
                });
            }
        };
        let sources = self.sources();
        let source_state = match sources.check_key(&source) {
            Ok(s) => {
                let r = s.remaining_burst_capacity();
                source_policy(
                    r,
                    refill_secs(l.burst_per_source - r.min(l.burst_per_source), l.per_source),
                )
            }
            Err(not_until) => {
                let wait = ceil_secs(not_until.wait_time_from(sources.clock().now())).max(1);
                return Err(Refusal {
                    error: Error::RateLimited {
                        message: format!(
                            "too many changes from this address: at most {} per second (bursts of {}); retry in {wait} s",
                            l.per_source, l.burst_per_source
                        ),
                        retry_after_secs: wait,
                    },
                    verdict: Verdict {
                        standings: vec![user_state, source_policy(0, wait)],
                    },
                    hold: l.refusal_hold,
                });
            }
        };
        Ok(Verdict {
            standings: vec![user_state, source_state],
        })
    }

    /// Sweep idle keys now and then; start the source map afresh if it is still too large.
    fn bound_memory(&self) {
        let n = self.checks.fetch_add(1, Ordering::Relaxed);
        let sources = self.sources();
        if n % SWEEP_EVERY == SWEEP_EVERY - 1 || sources.len() > MAX_SOURCES {
            self.users.retain_recent();
            sources.retain_recent();
            if sources.len() > MAX_SOURCES {
                tracing::warn!(
                    "more than {MAX_SOURCES} source addresses changed things recently; forgetting their rate limit counts"
                );
                *self.sources.lock().expect("rate limit lock") =
                    Arc::new(Self::source_limiter(self.limits));
            }
        }
    }

    /// Source addresses tracked now (for tests of the bound).
    pub fn tracked_sources(&self) -> usize {
        self.sources().len()
    }
}

/// The time an empty bucket of `burst` takes to refill at `per_second`, in whole seconds.
fn window(burst: u32, per_second: u32) -> u64 {
    refill_secs(burst, per_second).max(1)
}

fn refill_secs(used: u32, per_second: u32) -> u64 {
    u64::from(used).div_ceil(u64::from(per_second.max(1)))
}

/// A refused change: the 429, the state to put in its headers, and how long to hold it.
#[derive(Debug)]
pub struct Refusal {
    pub error: Error,
    pub verdict: Verdict,
    /// `RateLimits::refusal_hold`: the front door sends the 429 only after this time, holding
    /// nothing but the connection (no database, body or lock), so one connection gets at most
    /// one refusal per hold and a burster cannot turn refusals into load on other users.
    pub hold: Duration,
}

impl Verdict {
    /// Set `RateLimit-Policy` and `RateLimit` (see the module's doc for the syntax).
    pub fn set_headers(&self, headers: &mut HeaderMap) {
        let policy = self
            .standings
            .iter()
            .map(|s| format!("\"{}\";q={};w={}", s.policy, s.quota, s.window_secs))
            .collect::<Vec<_>>()
            .join(", ");
        let state = self
            .standings
            .iter()
            .map(|s| format!("\"{}\";r={};t={}", s.policy, s.remaining, s.reset_secs))
            .collect::<Vec<_>>()
            .join(", ");
        for (name, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per: u32, burst: u32) -> RateLimits {
        RateLimits {
            per_user: per,
            burst_per_user: burst,
            per_source: 1000,
            burst_per_source: 1000,
            refusal_hold: Duration::ZERO,
        }
    }

    fn src(ip: &str) -> Source {
        Source::of(ip.parse().unwrap())
    }

    #[test]
    fn a_user_over_its_burst_is_refused_and_another_is_not() {
        // The address's bucket refills one a second (not 1000: one a millisecond, so a busy
        // machine's pause between checks changed the count it reports).
        let l = Limiter::new(RateLimits {
            per_source: 1,
            ..limits(1, 3)
        });
        for _ in 0..3 {
            l.check(UserId(1), "alice", src("10.0.0.1")).unwrap();
        }
        let refused = l.check(UserId(1), "alice", src("10.0.0.1")).unwrap_err();
        match &refused.error {
            Error::RateLimited {
                message,
                retry_after_secs,
            } => {
                assert!(message.contains("user alice"), "{message}");
                assert!((1..=2).contains(retry_after_secs), "{retry_after_secs}");
            }
            e => panic!("{e:?}"),
        }
        let mut h = HeaderMap::new();
        refused.verdict.set_headers(&mut h);
        assert_eq!(h["ratelimit-policy"], "\"user\";q=3;w=3");
        assert_eq!(h["ratelimit"], "\"user\";r=0;t=1");
        // Bob, from the same address, is not slowed by alice.
        let ok = l.check(UserId(2), "bob", src("10.0.0.1")).unwrap();
        let mut h = HeaderMap::new();
        ok.set_headers(&mut h);
        assert_eq!(
            h["ratelimit-policy"],
            "\"user\";q=3;w=3, \"ip\";q=1000;w=1000"
        );
        // Four counted from the address: alice's refused change was not.
        assert_eq!(h["ratelimit"], "\"user\";r=2;t=1, \"ip\";r=996;t=4");
    }

    #[test]
    fn only_a_header_verified_before_is_counted_before_authentication() {
        let l = Limiter::new(limits(1, 2));
        let (alice, other) = (Some("Basic YWxpY2U6cHc="), Some("Basic YWxpY2U6cHcy"));
        assert!(l.check_known(alice, src("10.0.0.1")).is_none());
        l.remember(alice, UserId(1), "alice");
        for _ in 0..2 {
            let (user, _, v) = l.check_known(alice, src("10.0.0.1")).unwrap();
            assert_eq!(user, UserId(1));
            v.unwrap();
        }
        let (_, _, refused) = l.check_known(alice, src("10.0.0.1")).unwrap();
        let refused = refused.unwrap_err();
        assert!(
            refused.error.to_string().contains("user alice"),
            "{}",
            refused.error
        );
        // Another password for the same name is not known here: it goes through sign-in.
        assert!(l.check_known(other, src("10.0.0.1")).is_none());
        assert!(l.check_known(None, src("10.0.0.1")).is_none());
    }

    #[test]
    fn a_source_over_its_burst_is_refused_for_every_user() {
        let l = Limiter::new(RateLimits {
            per_user: 100,
            burst_per_user: 100,
            per_source: 1,
            burst_per_source: 2,
            refusal_hold: Duration::ZERO,
        });
        l.check(UserId(1), "alice", src("2001:db8::1")).unwrap();
        l.check(UserId(2), "bob", src("2001:db8::2")).unwrap();
        // Same /64: same source.
        let e = l.check(UserId(3), "carol", src("2001:db8::3")).unwrap_err();
        assert!(
            e.error.to_string().contains("from this address"),
            "{}",
            e.error
        );
        l.check(UserId(3), "carol", src("2001:db8:0:1::3")).unwrap();
    }

    #[test]
    fn rotating_sources_do_not_grow_memory_without_bound() {
        let l = Limiter::new(limits(1_000_000, 1_000_000));
        for i in 0..(MAX_SOURCES as u32 + 10) {
            let a = i.to_be_bytes();
            let ip = std::net::Ipv6Addr::new(
                0x2001,
                0xdb8,
                u16::from_be_bytes([a[0], a[1]]),
                u16::from_be_bytes([a[2], a[3]]),
                0,
                0,
                0,
                1,
            );
            l.check(UserId(1), "alice", Source::of(ip.into())).unwrap();
        }
        assert!(
            l.tracked_sources() <= MAX_SOURCES,
            "{}",
            l.tracked_sources()
        );
    }
}
