//! Passwords (argon2id) and HTTP Basic authentication; API tokens (`Authorization: Bearer`,
//! native API only).
//!
//! Verifying argon2 costs tens of milliseconds and 19 MiB by design; a verified (user, password)
//! pair is remembered for a short time as a SHA-256 digest bound to the stored hash, so a changed
//! password invalidates it at once and the cache never holds a password.
//!
//! Guessing is limited without slowing a right password: failed sign-ins are counted per source
//! address and per user in a window, and once over the limit the guesser is answered 429 before
//! any hashing. A source may run only two checks at once (the rest are 429 at once, not
//! queued), so a flood from one place cannot queue ahead of a correct login from another, and
//! a user signing in from where they did before has checks of their own. An unknown user is
//! checked against a dummy hash, so it takes as long as a wrong password.
//!
//! With a directory (`ldap`), local accounts are checked first: a name with a local password
//! is never sent to the directory, so a local administrator signs in while the directory is
//! down. A name without a local row, or whose row the directory created (its password hash is
//! `DIRECTORY_PASSWORD`, which no password verifies), is checked by the directory, behind the
//! same limits and caches; a first sign-in creates the row with the directory's default quota,
//! and each sign-in that is not cached sets its role from the user's groups.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::datastore::{Datastore, TokenRefusal, UserChange};
use crate::error::{Error, Result};
use crate::ldap::{Directory, DirectoryUser, LoginError};
use crate::model::User;

/// The password hash of a user the directory checks: not a PHC string, so no password
/// verifies against it locally.
pub const DIRECTORY_PASSWORD: &str = "!directory";

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// Usernames: what a shell, a URL and LDAP all accept without escaping.
pub fn check_username(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "username",
            "use 1-64 lowercase letters, digits, '_', '.' or '-', starting with a letter or digit",
        ))
    }
}

const CACHE_TTL: Duration = Duration::from_secs(300);
/// A (user, source) pair that signed in successfully is exempt from the per-user limit for this
/// long, so a distributed attack on an account does not lock its owner out of their usual place.
const KNOWN_GOOD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Entries kept in each bookkeeping map before expired ones are dropped.
const MAX_ENTRIES: usize = 100_000;

pub use crate::settings::AuthLimits;

/// Where a request comes from, for limits: an IPv4 address, or an IPv6 /64 (one host usually
/// holds a whole /64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(_) => Source(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    Source(IpAddr::V6(std::net::Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Counted {
    Source(Source),
    User(String),
}

/// Failures per key in fixed windows: (window start, failures in it).
#[derive(Default)]
struct FailureCounts(HashMap<Counted, (Instant, u32)>);

impl FailureCounts {
    /// How long until `key` may try again, if it is over `limit`.
    fn blocked_for(&self, key: &Counted, limit: u32, window: Duration) -> Option<Duration> {
        let (start, n) = self.0.get(key)?;
        let left = window.checked_sub(start.elapsed())?;
        (*n >= limit).then_some(left)
    }

    /// Count a failure of `key`. When the map is full, expired entries go first, then those
    /// under `keep_from` failures, so a spray of new keys cannot wipe out the blocking ones.
    fn record(&mut self, key: Counted, window: Duration, keep_from: u32) {
        if self.0.len() >= MAX_ENTRIES {
            self.0.retain(|_, (start, _)| start.elapsed() < window);
        }
        if self.0.len() >= MAX_ENTRIES {
            self.0.retain(|_, (_, n)| *n >= keep_from);
        }
        if self.0.len() >= MAX_ENTRIES {
            self.0.clear();
        }
        let e = self.0.entry(key).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= window {
            *e = (Instant::now(), 0);
        }
        e.1 = e.1.saturating_add(1);
    }
}

fn rate_limited(wait: Duration) -> Error {
    let secs = wait.as_secs() + 1;
    Error::RateLimited {
        message: format!(
            "Request was throttled: too many failed sign-ins. Expected available in {secs} seconds."
        ),
        retry_after_secs: secs,
    }
}

pub struct Authenticator {
    limits: AuthLimits,
    verified: Mutex<HashMap<String, ([u8; 32], Instant)>>,
    /// Digests of recently refused (user, password) pairs: a script retrying a stale password
    /// is answered without hashing again, and is not counted again.
    refused: Mutex<HashMap<[u8; 32], Instant>>,
    /// One check per (user, password) at a time: a burst of requests with the same
    /// credentials waits for the first check instead of running hundreds of 19 MiB hashes.
    inflight: Gates,
    failures: Mutex<FailureCounts>,
    known_good: Mutex<HashMap<(String, Source), Instant>>,
    checks_by_source: Arc<Mutex<HashMap<Source, usize>>>,
    hashing: Arc<tokio::sync::Semaphore>,
    trusted_hashing: Arc<tokio::sync::Semaphore>,
    /// Where users without a local password sign in (`ldap`), if configured.
    directory: Option<Arc<Directory>>,
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator::new(AuthLimits::default())
    }
}

/// A running check of one source; frees its slot when dropped.
struct SourceSlot {
    map: Arc<Mutex<HashMap<Source, usize>>>,
    source: Source,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut map = self.map.lock().expect("auth source lock");
        if let Some(n) = map.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.source);
            }
        }
    }
}

type Gates = Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>;

/// A request's share of the check of one (user, password) pair; the last one to leave, even
/// by being cancelled, removes the pair's gate.
struct Inflight<'a> {
    gates: &'a Gates,
    key: [u8; 32],
    /// Always `Some` until dropped.
    gate: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl<'a> Inflight<'a> {
    fn join(gates: &'a Gates, key: [u8; 32]) -> Self {
        let gate = gates
            .lock()
            .expect("auth inflight lock")
            .entry(key)
            .or_default()
            .clone();
        Inflight {
            gates,
            key,
            gate: Some(gate),
        }
    }

    /// Wait for the pair's turn.
    async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.gate.as_ref().expect("held until dropped").lock().await
    }
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        let mut gates = self.gates.lock().expect("auth inflight lock");
        // Our reference goes under the lock, so of two leaving at once the second sees only
        // the map's.
        drop(self.gate.take());
        if gates
            .get(&self.key)
            .is_some_and(|g| Arc::strong_count(g) == 1)
        {
            gates.remove(&self.key);
        }
    }
}

fn digest(stored_hash: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(stored_hash.as_bytes());
    h.update([0u8]);
    h.update(password.as_bytes());
    h.finalize().into()
}

/// A hash no password is known for, with the same parameters as real ones: checking an unknown
/// user's password against it takes as long as checking a known user's.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let secret: [u8; 16] = rand::random();
        hash_password(&hex::encode(secret)).expect("hashing a random password")
    })
}

/// The hash a local sign-in checks the password against: the user's, or for an unknown name
/// and for a directory user (whose row holds no hash: it would fail at once) the dummy, so all
/// three take one argon2 verification.
fn hash_to_check(user: Option<&User>) -> &str {
    match user {
        Some(u) if u.password_hash != DIRECTORY_PASSWORD => &u.password_hash,
        _ => dummy_hash(),
    }
}

/// The credentials of an `Authorization: Basic` header value, if well formed.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// What every API token starts with, so a leaked one is easy to recognise (and to scan for).
pub const TOKEN_PREFIX: &str = "nfsprov_";

/// A new API token: 256 random bits, hex, after `TOKEN_PREFIX`.
pub fn new_token() -> String {
    let secret: [u8; 32] = rand::random();
    format!("{TOKEN_PREFIX}{}", hex::encode(secret))
}

/// What the datastore keeps of a token. A token is 256 random bits, so a fast hash is as
/// good as a slow one: nobody can try enough guesses for its speed to matter.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The token of an `Authorization: Bearer` header value, if it is one.
pub fn parse_bearer(header: &str) -> Option<&str> {
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
}

impl Authenticator {
    /// Like `authenticate`, and an `Authorization: Bearer` token where `tokens` are taken
    /// (the native API; hootie's takes Basic only, as hootie did).
    pub async fn authenticate_for(
        &self,
        db: &Datastore,
        header: Option<&str>,
        source: Source,
        tokens: bool,
    ) -> Result<User> {
        let Some(token) = header.and_then(parse_bearer) else {
            return self.authenticate(db, header, source).await;
        };
        if !tokens {
            return Err(Error::Unauthenticated(
                "this API (/api/v1.0/) takes Basic credentials; API tokens work on /api/v1/".into(),
            ));
        }
        self.authenticate_token(db, token, source).await
    }

    /// The user a token belongs to, if it is live and the user is not locked. An unknown token
    /// counts as a failed sign-in of its source.
    async fn authenticate_token(
        &self,
        db: &Datastore,
        token: &str,
        source: Source,
    ) -> Result<User> {
        {
            let failures = self.failures.lock().expect("auth failures lock");
            let l = &self.limits;
            if let Some(wait) =
                failures.blocked_for(&Counted::Source(source), l.failures_per_source, l.window)
            {
                return Err(rate_limited(wait));
            }
        }
        match db.user_by_token(&token_hash(token)).await? {
            Ok(user) if user.locked => Err(Error::Unauthenticated(
                "this token's account is locked; ask an administrator to unlock it".into(),
            )),
            Ok(user) => Ok(user),
            Err(TokenRefusal::Expired(at)) => Err(Error::Unauthenticated(format!(
                "the token expired at {}; make a new one",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ))),
            Err(TokenRefusal::Unknown) => {
                let l = &self.limits;
                let keep_from = l.failures_per_source.min(l.failures_per_user);
                self.failures.lock().expect("auth failures lock").record(
                    Counted::Source(source),
                    l.window,
                    keep_from,
                );
                Err(Error::Unauthenticated(
                    "Invalid token (unknown or revoked).".into(),
                ))
            }
        }
    }

    pub fn new(limits: AuthLimits) -> Self {
        // The dummy hash is made now, not on the first unknown user (whose answer would be late).
        dummy_hash();
        Authenticator {
            hashing: Arc::new(tokio::sync::Semaphore::new(limits.concurrent_checks.max(1))),
            trusted_hashing: Arc::new(tokio::sync::Semaphore::new(limits.concurrent_checks.max(1))),
            limits,
            verified: Mutex::default(),
            refused: Mutex::default(),
            inflight: Mutex::default(),
            failures: Mutex::default(),
            known_good: Mutex::default(),
            checks_by_source: Arc::default(),
            directory: None,
        }
    }

    /// Check users without a local password with `directory`.
    pub fn with_directory(mut self, directory: Option<Arc<Directory>>) -> Self {
        self.directory = directory;
        self
    }

    fn is_cached(&self, username: &str, d: &[u8; 32]) -> bool {
        let map = self.verified.lock().expect("auth cache lock");
        map.get(username)
            .is_some_and(|(hd, at)| hd == d && at.elapsed() < CACHE_TTL)
    }

    fn was_refused(&self, d: &[u8; 32]) -> bool {
        let map = self.refused.lock().expect("auth cache lock");
        map.get(d).is_some_and(|at| at.elapsed() < CACHE_TTL)
    }

    fn is_known_good(&self, username: &str, source: Source) -> bool {
        let map = self.known_good.lock().expect("auth known-good lock");
        map.get(&(username.to_string(), source))
            .is_some_and(|at| at.elapsed() < KNOWN_GOOD_TTL)
    }

    /// 429 if `source` or (unless it signed in as `username` before) `username` failed too often.
    fn check_limits(&self, username: &str, source: Source) -> Result<()> {
        let failures = self.failures.lock().expect("auth failures lock");
        let l = &self.limits;
        if let Some(wait) =
            failures.blocked_for(&Counted::Source(source), l.failures_per_source, l.window)
        {
            return Err(rate_limited(wait));
        }
        if let Some(wait) = failures.blocked_for(
            &Counted::User(username.into()),
            l.failures_per_user,
            l.window,
        ) && !self.is_known_good(username, source)
        {
            return Err(rate_limited(wait));
        }
        Ok(())
    }

    fn take_source_slot(&self, source: Source) -> Result<SourceSlot> {
        let mut map = self.checks_by_source.lock().expect("auth source lock");
        let n = map.entry(source).or_insert(0);
        if *n >= self.limits.checks_per_source {
            return Err(Error::RateLimited {
                message: "Request was throttled: too many sign-ins at once from your address. \
                          Expected available in 1 seconds."
                    .into(),
                retry_after_secs: 1,
            });
        }
        *n += 1;
        Ok(SourceSlot {
            map: self.checks_by_source.clone(),
            source,
        })
    }

    fn remember(&self, username: &str, d: [u8; 32], source: Source) {
        let mut map = self.verified.lock().expect("auth cache lock");
        if map.len() > 10_000 {
            map.clear();
        }
        map.insert(username.to_string(), (d, Instant::now()));
        drop(map);
        let mut good = self.known_good.lock().expect("auth known-good lock");
        if good.len() >= MAX_ENTRIES {
            good.retain(|_, at| at.elapsed() < KNOWN_GOOD_TTL);
            if good.len() >= MAX_ENTRIES {
                good.clear();
            }
        }
        good.insert((username.to_string(), source), Instant::now());
    }

    fn refuse(&self, username: &str, d: [u8; 32], source: Source) {
        let mut refused = self.refused.lock().expect("auth cache lock");
        if refused.len() > 10_000 {
            refused.clear();
        }
        refused.insert(d, Instant::now());
        drop(refused);
        let l = &self.limits;
        let keep_from = l.failures_per_source.min(l.failures_per_user);
        let mut failures = self.failures.lock().expect("auth failures lock");
        failures.record(Counted::Source(source), l.window, keep_from);
        // A name no account can have has nothing to protect (and may be 16 KiB long).
        if check_username(username).is_ok() {
            failures.record(Counted::User(username.into()), l.window, keep_from);
        }
    }

    /// The user an `Authorization` header names, if its password is right; `source` is the
    /// client's address, for the limits on guessing.
    pub async fn authenticate(
        &self,
        db: &Datastore,
        header: Option<&str>,
        source: Source,
    ) -> Result<User> {
        let Some(header) = header else {
            return Err(Error::Unauthenticated(
                "Authentication credentials were not provided.".into(),
            ));
        };
        let bad = || Error::Unauthenticated("Invalid username/password.".into());
        let (username, password) = parse_basic(header).ok_or_else(bad)?;
        let user = if check_username(&username).is_ok() {
            match db.user_by_name(&username).await {
                Ok(u) => Some(u),
                Err(Error::NotFound { .. }) => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        // Local first: only a name without a local password goes to the directory.
        let directory = self.directory.clone().filter(|_| match &user {
            Some(u) => u.password_hash == DIRECTORY_PASSWORD,
            None => check_username(&username).is_ok(),
        });
        // An unknown user's pairs are bound to its name, so two unknown names do not share
        // one; so are a directory user's.
        let stored_hash = match &user {
            _ if directory.is_some() => format!("{DIRECTORY_PASSWORD}\0{username}"),
            Some(u) => u.password_hash.clone(),
            None => format!("{}\0{username}", dummy_hash()),
        };
        let d = digest(&stored_hash, &password);
        let settled = |this: &Self| -> Option<Result<User>> {
            match &user {
                Some(u) if this.is_cached(&username, &d) => Some(Ok(u.clone())),
                _ if this.was_refused(&d) => Some(Err(bad())),
                _ => None,
            }
        };
        if let Some(done) = settled(self) {
            return done;
        }
        self.check_limits(&username, source)?;
        let entry = Inflight::join(&self.inflight, d);
        let _turn = entry.turn().await;
        match settled(self) {
            Some(done) => done,
            None => match directory {
                Some(dir) => {
                    self.check_directory(db, &dir, user, &username, password, d, source)
                        .await
                }
                None => self.check(user, &username, password, d, source).await,
            },
        }
    }

    /// Ask the directory about one (user, password) pair that is in no cache. A refusal is
    /// counted like a wrong local password; a directory that cannot be asked is a 503, not
    /// counted and not remembered.
    #[allow(clippy::too_many_arguments)]
    async fn check_directory(
        &self,
        db: &Datastore,
        dir: &Directory,
        user: Option<User>,
        username: &str,
        password: String,
        d: [u8; 32],
        source: Source,
    ) -> Result<User> {
        let trusted = user.is_some() && self.is_known_good(username, source);
        let _slot = if trusted {
            None
        } else {
            Some(self.take_source_slot(source)?)
        };
        match dir.login(username, &password).await {
            Ok(found) => {
                let u = directory_row(db, dir, username, &found, source).await?;
                self.remember(username, d, source);
                Ok(u)
            }
            Err(LoginError::Refused) => {
                self.refuse(username, d, source);
                Err(Error::Unauthenticated("Invalid username/password.".into()))
            }
            Err(LoginError::NoRole) => Err(Error::Forbidden(
                "your directory account is in none of the groups that give access to nfsprov; \
                 ask an administrator"
                    .into(),
            )),
            Err(LoginError::Down(why)) => {
                tracing::warn!("sign-in of {username:?} through the directory failed: {why}");
                Err(Error::Unavailable(
                    "the directory that checks your password cannot be reached right now; \
                     try again later"
                        .into(),
                ))
            }
        }
    }

    /// Run argon2 for one (user, password) pair that is in no cache.
    async fn check(
        &self,
        user: Option<User>,
        username: &str,
        password: String,
        d: [u8; 32],
        source: Source,
    ) -> Result<User> {
        // A user signing in from where they did before never waits behind strangers' checks.
        let trusted = user.is_some() && self.is_known_good(username, source);
        let (slot, gate) = if trusted {
            (None, &self.trusted_hashing)
        } else {
            (Some(self.take_source_slot(source)?), &self.hashing)
        };
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .expect("the hashing gates are never closed");
        let hash = hash_to_check(user.as_ref()).to_string();
        // The slot and the permit are given back when the hash is done, not when the request
        // is: a client that hangs up mid-check cannot start more checks than the limits allow.
        let ok = tokio::task::spawn_blocking(move || {
            let _held = (slot, permit);
            verify_password(&password, &hash)
        })
        .await
        .map_err(|e| anyhow::anyhow!("password check: {e}"))?;
        match user {
            Some(u) if ok => {
                self.remember(username, d, source);
                Ok(u)
            }
            _ => {
                self.refuse(username, d, source);
                Err(Error::Unauthenticated("Invalid username/password.".into()))
            }
        }
    }
}

/// The local row of a directory user who just signed in: created at the first sign-in with
/// the directory's default quota, its role set from the groups. A local account of the same
/// name (made meanwhile) is never taken over.
async fn directory_row(
    db: &Datastore,
    dir: &Directory,
    username: &str,
    found: &DirectoryUser,
    source: Source,
) -> Result<User> {
    // Audited like an administrator's change, the directory (by the user's DN) as the actor.
    let audit = |action: &str, u: &User, before: Option<serde_json::Value>| {
        let mut ctx = crate::audit::Context::new("SIGN-IN", "directory");
        ctx.actor = Some(format!("ldap:{}", found.dn));
        ctx.source = Some(source.0.to_string());
        let entry = crate::audit::Entry {
            action: action.into(),
            object: Some(format!("user/{}", u.username)),
            before,
            after: Some(serde_json::json!({"role": u.role, "quota_gb": u.quota_gb})),
            outcome: "recorded".into(),
            ..crate::audit::Entry::default()
        };
        async move {
            if let Err(e) = db.record_audit(&ctx, &entry).await {
                tracing::warn!("writing the audit record of {username:?}'s sign-in: {e:#}");
            }
        }
    };
    let user = match db.user_by_name(username).await {
        Ok(u) => u,
        Err(Error::NotFound { .. }) => {
            match db
                .create_user(
                    username,
                    DIRECTORY_PASSWORD,
                    found.role,
                    dir.default_quota_gb,
                )
                .await
            {
                Ok(u) => {
                    tracing::info!(
                        "user {username:?} created at first sign-in through the directory ({}, role {})",
                        found.dn,
                        found.role
                    );
                    audit("user.create", &u, None).await;
                    u
                }
                // Created by a concurrent sign-in, or by an administrator: looked at below.
                Err(Error::Conflict { .. }) => db.user_by_name(username).await?,
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    if user.password_hash != DIRECTORY_PASSWORD {
        return Err(Error::Unauthenticated("Invalid username/password.".into()));
    }
    if user.role == found.role {
        return Ok(user);
    }
    let changed = db
        .update_user(
            username,
            &UserChange {
                role: Some(found.role),
                ..UserChange::default()
            },
        )
        .await?;
    let before = serde_json::json!({"role": user.role, "quota_gb": user.quota_gb});
    audit("user.update", &changed, Some(before)).await;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_local_sign_in_verifies_one_argon2_hash() {
        let user = |hash: &str| User {
            id: crate::model::UserId(1),
            username: "u".into(),
            password_hash: hash.into(),
            role: crate::model::Role::User,
            quota_gb: 1,
            used_gb: 0,
            locked: false,
        };
        let real = hash_password("s3cret-pass").unwrap();
        assert_eq!(hash_to_check(Some(&user(&real))), real);
        for who in [None, Some(user(DIRECTORY_PASSWORD))] {
            let h = hash_to_check(who.as_ref());
            assert_eq!(h, dummy_hash());
            assert!(h.starts_with("$argon2id$"), "{h}");
            // The same work as a real user's hash: argon2's parameters are in the string.
            assert_eq!(h.split('$').nth(3), real.split('$').nth(3));
        }
    }

    #[test]
    fn hash_and_verify() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("s3cret ", &h));
        // A directory user's row verifies no password locally, not even its own text.
        assert!(!verify_password(DIRECTORY_PASSWORD, DIRECTORY_PASSWORD));
        assert!(!verify_password("", DIRECTORY_PASSWORD));
    }

    #[test]
    fn basic_header() {
        // "johndoe:pa:ss" — the password may contain ':'
        let v = base64::engine::general_purpose::STANDARD.encode("johndoe:pa:ss");
        assert_eq!(
            parse_basic(&format!("Basic {v}")),
            Some(("johndoe".into(), "pa:ss".into()))
        );
        assert_eq!(parse_basic("Bearer x"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
    }

    #[test]
    fn sources_group_an_ipv6_host_by_its_slash_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            Source::of(ip("2001:db8:1:2::5")),
            Source::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Source::of(ip("2001:db8:1:2::5")),
            Source::of(ip("2001:db8:1:3::5"))
        );
        assert_eq!(
            Source::of(ip("::ffff:10.0.0.1")),
            Source::of(ip("10.0.0.1"))
        );
        assert_ne!(Source::of(ip("10.0.0.1")), Source::of(ip("10.0.0.2")));
    }

    #[test]
    fn failures_block_at_the_limit_until_the_window_ends() {
        let window = Duration::from_secs(60);
        let key = Counted::User("alice".into());
        let mut f = FailureCounts::default();
        for _ in 0..3 {
            assert_eq!(f.blocked_for(&key, 3, window), None);
            f.record(key.clone(), window, 3);
        }
        let wait = f.blocked_for(&key, 3, window).expect("blocked at 3");
        assert!(wait <= window && wait > Duration::from_secs(50), "{wait:?}");
        assert_eq!(f.blocked_for(&Counted::User("bob".into()), 3, window), None);
        // A window that has passed starts again.
        let short = Duration::from_millis(1);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(f.blocked_for(&key, 3, short), None);
        f.record(key.clone(), short, 3);
        assert_eq!(f.0[&key].1, 1);
    }

    #[test]
    fn a_spray_of_new_keys_does_not_wipe_out_blocked_ones() {
        let window = Duration::from_secs(60);
        let blocked = Counted::Source(Source::of("10.0.0.1".parse().unwrap()));
        let mut f = FailureCounts::default();
        for _ in 0..3 {
            f.record(blocked.clone(), window, 3);
        }
        for i in 0..MAX_ENTRIES + 10 {
            f.record(Counted::User(format!("u{i}")), window, 3);
        }
        assert!(f.0.len() <= MAX_ENTRIES);
        assert!(f.blocked_for(&blocked, 3, window).is_some());
    }

    #[tokio::test]
    async fn a_pair_gate_is_removed_by_the_last_one_out_even_if_cancelled() {
        let gates = Gates::default();
        let a = Inflight::join(&gates, [1; 32]);
        let turn = a.turn().await;
        let b = Inflight::join(&gates, [1; 32]);
        // b gives up while waiting for its turn, as a request whose client hung up does.
        assert!(
            tokio::time::timeout(Duration::from_millis(10), b.turn())
                .await
                .is_err()
        );
        drop(b);
        assert_eq!(gates.lock().unwrap().len(), 1);
        drop(turn);
        drop(a);
        assert!(gates.lock().unwrap().is_empty());
    }

    #[test]
    fn usernames() {
        assert!(check_username("johndoe").is_ok());
        assert!(check_username("a.b-c_1").is_ok());
        for bad in ["", "John", "-x", "a b", "a;b", &"x".repeat(65)] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
    }
}
