//! Fault points: `NFSPROV_FAULT=<name>` makes the process fail on purpose at the point of that
//! name, so the end-to-end tests can provoke, for real, the failures the code promises to
//! survive. Unset (always, outside tests), each point costs one environment lookup.
//!
//! Points: `after-apply` (abort: the server changed, the database not yet; `reconcile`),
//! `panic-once` (a reconciler panics once; `reconcile`), `create-batch-panic-once` (the create
//! thread panics once, in the middle of a batch's transaction; `datastore::create`),
//! `after-snapshot` (abort: snapshots made or removed on the server, the database not yet told;
//! `reconcile`), `after-resize` (abort: new qgroup limits set on the server, not yet recorded;
//! `reconcile`, `Hub::sizes`), `after-restore` (abort: a pass that restores a snapshot into a
//! new volume ran on the server, its outcome not yet recorded; `reconcile`),
//! `pause-before-apply` (once per process, a pass that creates or changes a volume waits 2 s or
//! `NFSPROV_FAULT_PAUSE_SECS`
//! after its last look at its lease and before its script goes to the server: the window in
//! which a node paused past its lease must be refused by the server; `reconcile`).

use std::sync::atomic::{AtomicBool, Ordering};

fn named(name: &str) -> bool {
    std::env::var("NFSPROV_FAULT").is_ok_and(|v| v == name)
}

/// Crash on purpose at `name`: lets tests kill the process exactly between two steps (e.g.
/// after the server changed, before the database did).
pub fn abort_at(name: &str) {
    if named(name) {
        eprintln!("NFSPROV_FAULT={name}: aborting on purpose");
        std::process::abort();
    }
}

/// Panic on purpose at `name`, once per process (whichever point named fires first): shows
/// that what panics fails alone and what comes after it still works.
pub fn panic_once(name: &str) {
    static FIRED: AtomicBool = AtomicBool::new(false);
    if named(name) && !FIRED.swap(true, Ordering::SeqCst) {
        panic!("NFSPROV_FAULT={name}: panicking on purpose");
    }
}

/// Wait on purpose at `name`, once per process: lets tests stop the process (SIGSTOP) exactly
/// between two steps. 2 s, or `NFSPROV_FAULT_PAUSE_SECS` (a node cut off from its database
/// while it waits must still be waiting when another node has taken its server over).
pub async fn pause_once(name: &str) {
    static FIRED: AtomicBool = AtomicBool::new(false);
    if named(name) && !FIRED.swap(true, Ordering::SeqCst) {
        let secs = std::env::var("NFSPROV_FAULT_PAUSE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2);
        eprintln!("NFSPROV_FAULT={name}: pausing on purpose");
        tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
        eprintln!("NFSPROV_FAULT={name}: going on");
    }
}
