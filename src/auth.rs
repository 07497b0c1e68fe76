//! Passwords (argon2id) and HTTP Basic authentication.
//!
//! Verifying argon2 costs tens of milliseconds by design; a verified (user, password) pair is
//! remembered for a short time as a SHA-256 digest bound to the stored hash, so a changed
//! password invalidates it at once and the cache never holds a password.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::datastore::Datastore;
use crate::error::{Error, Result};
use crate::model::User;

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

#[derive(Default)]
pub struct Authenticator {
    verified: Mutex<HashMap<String, ([u8; 32], Instant)>>,
    /// One argon2 check per user at a time: a burst of requests from one user waits for the
    /// first check instead of running hundreds of 19 MiB hashes at once.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn digest(stored_hash: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(stored_hash.as_bytes());
    h.update([0u8]);
    h.update(password.as_bytes());
    h.finalize().into()
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

impl Authenticator {
    fn is_cached(&self, username: &str, d: &[u8; 32]) -> bool {
        let map = self.verified.lock().expect("auth cache lock");
        map.get(username)
            .is_some_and(|(hd, at)| hd == d && at.elapsed() < CACHE_TTL)
    }

    /// The user an `Authorization` header names, if its password is right.
    pub async fn authenticate(&self, db: &Datastore, header: Option<&str>) -> Result<User> {
        let Some(header) = header else {
            return Err(Error::Unauthenticated(
                "Authentication credentials were not provided.".into(),
            ));
        };
        let bad = || Error::Unauthenticated("Invalid username/password.".into());
        let (username, password) = parse_basic(header).ok_or_else(bad)?;
        let user = match db.user_by_name(&username).await {
            Ok(u) => u,
            Err(Error::NotFound(_)) => return Err(bad()),
            Err(e) => return Err(e),
        };
        let d = digest(&user.password_hash, &password);
        if self.is_cached(&username, &d) {
            return Ok(user);
        }
        let gate = self
            .inflight
            .lock()
            .expect("auth inflight lock")
            .entry(username.clone())
            .or_default()
            .clone();
        let _turn = gate.lock().await;
        if !self.is_cached(&username, &d) {
            let hash = user.password_hash.clone();
            let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
                .await
                .map_err(|e| anyhow::anyhow!("password check: {e}"))?;
            if !ok {
                return Err(bad());
            }
            let mut map = self.verified.lock().expect("auth cache lock");
            if map.len() > 10_000 {
                map.clear();
            }
            map.insert(username, (d, Instant::now()));
        }
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("s3cret ", &h));
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
    fn usernames() {
        assert!(check_username("johndoe").is_ok());
        assert!(check_username("a.b-c_1").is_ok());
        for bad in ["", "John", "-x", "a b", "a;b", &"x".repeat(65)] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
    }
}
