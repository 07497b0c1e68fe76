//! The audit trail's records and their chain: who did what, from where, in which request,
//! before -> after, with what result; each record's hash covers the previous record's hash and
//! the record's own canonical encoding, so a changed, removed, inserted or reordered record
//! breaks the chain at the first bad one (`Walk`).
//!
//! Pure: no I/O. The datastore (`datastore::audit`) appends records inside the transactions
//! that make the changes and reads them back; the API (`api::audit`) fills in the request's
//! context and records denied attempts within a bound (`DeniedGate`).
//!
//! The encoding is explicit and versioned (`ENCODING`): a JSON array of the version tag and
//! every field in a fixed order (`Record::canonical`). Changing it means a new version tag,
//! and `Walk` learning both.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The version tag of the canonical encoding; the first element of what is hashed.
pub const ENCODING: &str = "nfsprov-audit/1";

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who asks and how: the part of a record that comes from the request (or the CLI command).
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub actor: Option<String>,
    pub actor_id: Option<i64>,
    pub source: Option<String>,
    pub request_id: Option<String>,
    pub method: String,
    pub path: String,
    /// Set once a record is appended with this context: the request needs no generic one.
    recorded: Arc<AtomicBool>,
}

impl Context {
    pub fn new(method: impl Into<String>, path: impl Into<String>) -> Context {
        Context {
            method: method.into(),
            path: path.into(),
            ..Context::default()
        }
    }

    /// A command run on the service's host (`nfsprov server pin ...`): the local user, as
    /// the environment names it, is the actor.
    pub fn cli(command: &str) -> Context {
        let user = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| format!("uid {}", own_uid()));
        Context {
            actor: Some(format!("cli:{user}")),
            source: Some("local".into()),
            ..Context::new("CLI", command)
        }
    }

    /// Changes made by nfsprov itself or by code that gave no context (benchmarks, tests).
    pub fn internal() -> Context {
        Context::new("INTERNAL", "")
    }

    pub(crate) fn mark_recorded(&self) {
        self.recorded.store(true, Ordering::Relaxed);
    }

    /// Whether a record was appended with this context (or a clone of it).
    pub fn was_recorded(&self) -> bool {
        self.recorded.load(Ordering::Relaxed)
    }
}

fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    // The owner of our own /proc entry is our uid, without libc.
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

/// What happened: the part of a record that comes from the change.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// `volume.create`, `volume.update`, `volume.delete`, `server.host_key`, `denied`, ...
    pub action: String,
    /// `volume/5`, `server/nfs1`, ...
    pub object: Option<String>,
    /// The volume whose history this belongs to.
    pub volume_id: Option<i64>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub status: Option<u16>,
    pub outcome: String,
}

/// One stored record, as `nfsprov audit export` writes it (one JSON object per line) and the
/// API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: i64,
    pub at: String,
    pub actor: Option<String>,
    pub actor_id: Option<i64>,
    pub source: Option<String>,
    pub request_id: Option<String>,
    pub method: String,
    pub path: String,
    pub action: String,
    pub object: Option<String>,
    pub volume_id: Option<i64>,
    /// JSON text, as stored (hashed as stored).
    pub before: Option<String>,
    pub after: Option<String>,
    pub status: Option<i64>,
    pub outcome: String,
    pub prev_hash: String,
    pub hash: String,
}

impl Record {
    /// A new record `id`, chained to `prev_hash`, sealed with its hash.
    pub fn seal(id: i64, at: String, prev_hash: String, ctx: &Context, e: &Entry) -> Record {
        let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
        let mut r = Record {
            id,
            at,
            actor: ctx.actor.clone(),
            actor_id: ctx.actor_id,
            source: ctx.source.clone(),
            request_id: ctx.request_id.clone(),
            method: ctx.method.clone(),
            path: ctx.path.clone(),
            action: e.action.clone(),
            object: e.object.clone(),
            volume_id: e.volume_id,
            before: json(&e.before),
            after: json(&e.after),
            status: e.status.map(i64::from),
            outcome: e.outcome.clone(),
            prev_hash,
            hash: String::new(),
        };
        r.hash = r.expected_hash();
        r
    }

    /// Version 1 of the canonical encoding: a JSON array (no whitespace, strings escaped as
    /// serde_json does) of the tag and every field but the hash, in this order.
    pub fn canonical(&self) -> Vec<u8> {
        let fields = serde_json::json!([
            ENCODING,
            self.id,
            self.at,
            self.actor,
            self.actor_id,
            self.source,
            self.request_id,
            self.method,
            self.path,
            self.action,
            self.object,
            self.volume_id,
            self.before,
            self.after,
            self.status,
            self.outcome,
            self.prev_hash,
        ]);
        serde_json::to_vec(&fields).expect("a JSON value serialises")
    }

    /// hex(SHA-256(canonical)): the encoding holds `prev_hash`, which chains the records.
    pub fn expected_hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical()))
    }
}

/// Why a chain is broken, naming the first bad record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The first record that does not fit (or, for removed newest records, the last one left).
    pub id: i64,
    pub reason: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "audit record {}: {}", self.id, self.reason)
    }
}

/// Walks records in id order and stops at the first that does not follow from the ones
/// before: a wrong hash (changed, or inserted without the chain), a `prev_hash` that is not
/// the previous record's hash (reordered, or one removed before it), an id that skips
/// (removed) or repeats.
#[derive(Debug, Default)]
pub struct Walk {
    last: Option<(i64, String)>,
    count: u64,
}

impl Walk {
    pub fn step(&mut self, r: &Record) -> Result<(), Broken> {
        let bad = |reason: String| Broken { id: r.id, reason };
        let (want_id, want_prev) = match &self.last {
            None => (1, GENESIS),
            Some((id, hash)) => (id + 1, hash.as_str()),
        };
        if r.id != want_id {
            return Err(bad(if r.id > want_id {
                format!(
                    "expected record {want_id} next: records {want_id} to {} are missing",
                    r.id - 1
                )
            } else {
                format!("out of order: expected record {want_id} next")
            }));
        }
        if r.prev_hash != want_prev {
            return Err(bad(format!(
                "prev_hash {} is not the hash of the record before ({want_prev}): a record \
                 before it was changed, removed or moved",
                r.prev_hash
            )));
        }
        let expected = r.expected_hash();
        if r.hash != expected {
            return Err(bad(format!(
                "its content does not match its hash (stored {}, computed {expected}): the \
                 record was changed, or inserted",
                r.hash
            )));
        }
        self.last = Some((r.id, r.hash.clone()));
        self.count += 1;
        Ok(())
    }

    /// After the last record: `sequence` is the highest id the table ever gave (SQLite's
    /// `sqlite_sequence`), so newest records removed are noticed too.
    pub fn finish(self, sequence: Option<i64>) -> Result<Verified, Broken> {
        let last_id = self.last.as_ref().map_or(0, |(id, _)| *id);
        if let Some(seq) = sequence
            && seq > last_id
        {
            return Err(Broken {
                id: last_id,
                reason: format!(
                    "the newest records were removed: the table gave ids up to {seq}, the \
                     chain ends at {last_id}"
                ),
            });
        }
        Ok(Verified {
            records: self.count,
            head: self.last.map_or_else(|| GENESIS.to_string(), |(_, h)| h),
        })
    }
}

/// A chain that verified: its length and its newest hash (record it elsewhere to notice a
/// rewrite of the whole chain later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub head: String,
}

/// OpenSSH's fingerprint of a public key line (`type base64 ...`): `SHA256:` and the
/// unpadded base64 of the key blob's SHA-256; the whole line's hash if it is not base64.
pub fn host_key_fingerprint(key: &str) -> String {
    use base64::Engine as _;
    let blob = key.split_whitespace().nth(1).unwrap_or(key);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .unwrap_or_else(|_| blob.as_bytes().to_vec());
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(bytes))
    )
}

/// Bounds the records of denied attempts, so that refused requests cannot fill the disk:
/// at most `per_source` per source address and `total` from all sources per window. What is
/// over the bound is counted, and the count is recorded once (`denied.suppressed`) with the
/// next denied attempt admitted (from another source, or in a later window).
#[derive(Debug)]
pub struct DeniedGate {
    per_source: u32,
    total: u32,
    window: std::time::Duration,
    state: std::sync::Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    started: Option<std::time::Instant>,
    admitted: u32,
    by_source: std::collections::HashMap<String, u32>,
    suppressed: u64,
}

/// What the gate says to one denied attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Record it; `suppressed` attempts were left out before it (record that count too).
    Yes {
        suppressed: u64,
    },
    No,
}

impl DeniedGate {
    pub fn new(per_source: u32, total: u32, window: std::time::Duration) -> DeniedGate {
        DeniedGate {
            per_source,
            total,
            window,
            state: Default::default(),
        }
    }

    pub fn admit(&self, source: &str, now: std::time::Instant) -> Admit {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.started
            .is_none_or(|t| now.duration_since(t) >= self.window)
        {
            s.started = Some(now);
            s.admitted = 0;
            // The map holds at most `total` sources: it is only filled below the total.
            s.by_source.clear();
        }
        if s.admitted >= self.total {
            s.suppressed += 1;
            return Admit::No;
        }
        let n = s.by_source.entry(source.to_string()).or_default();
        if *n >= self.per_source {
            s.suppressed += 1;
            return Admit::No;
        }
        *n += 1;
        s.admitted += 1;
        Admit::Yes {
            suppressed: std::mem::take(&mut s.suppressed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Record> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|id| {
                let r = Record::seal(
                    id,
                    format!("2026-01-01T00:00:0{id}Z"),
                    prev.clone(),
                    &Context::new("POST", "/api/v1/volumes"),
                    &Entry {
                        action: "volume.create".into(),
                        outcome: "recorded".into(),
                        ..Entry::default()
                    },
                );
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    fn walk(rs: &[Record], seq: Option<i64>) -> Result<Verified, Broken> {
        let mut w = Walk::default();
        for r in rs {
            w.step(r)?;
        }
        w.finish(seq)
    }

    #[test]
    fn a_chain_verifies_and_each_kind_of_tampering_names_the_first_bad_record() {
        let good = chain(5);
        let v = walk(&good, Some(5)).unwrap();
        assert_eq!((v.records, v.head.as_str()), (5, good[4].hash.as_str()));
        assert_eq!(walk(&[], None).unwrap().head, GENESIS);

        let mut changed = good.clone();
        changed[2].outcome = "nothing happened".into();
        assert_eq!(walk(&changed, Some(5)).unwrap_err().id, 3);

        let mut removed = good.clone();
        removed.remove(1);
        assert_eq!(walk(&removed, Some(5)).unwrap_err().id, 3);

        let mut swapped = good.clone();
        swapped.swap(1, 2);
        assert_eq!(walk(&swapped, Some(5)).unwrap_err().id, 3);

        let tail = &good[..3];
        let e = walk(tail, Some(5)).unwrap_err();
        assert_eq!(e.id, 3);
        assert!(e.reason.contains("up to 5"), "{e}");
    }

    #[test]
    fn the_encoding_is_versioned_and_covers_every_field() {
        let r = chain(1).remove(0);
        let text = String::from_utf8(r.canonical()).unwrap();
        assert!(text.starts_with("[\"nfsprov-audit/1\",1,"), "{text}");
        // Any field changed changes the hash.
        let mut other = r.clone();
        other.request_id = Some("x".into());
        assert_ne!(other.expected_hash(), r.hash);
    }

    #[test]
    fn fingerprints_are_openssh_s() {
        // ssh-keygen -lf of this key prints this fingerprint.
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        assert_eq!(
            host_key_fingerprint(key),
            "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"
        );
    }

    #[test]
    fn denied_attempts_are_bounded_per_source_and_in_all() {
        let t = std::time::Instant::now();
        let gate = DeniedGate::new(2, 3, std::time::Duration::from_secs(60));
        let yes = Admit::Yes { suppressed: 0 };
        assert_eq!(gate.admit("a", t), yes);
        assert_eq!(gate.admit("a", t), yes);
        assert_eq!(gate.admit("a", t), Admit::No);
        // The one attempt left out is counted with the next one recorded.
        assert_eq!(gate.admit("b", t), Admit::Yes { suppressed: 1 });
        assert_eq!(gate.admit("c", t), Admit::No, "the total is reached");
        let later = t + std::time::Duration::from_secs(61);
        assert_eq!(gate.admit("a", later), Admit::Yes { suppressed: 1 });
        assert_eq!(gate.admit("a", later), yes);
    }
}
