//! Reconcilers: one task per server makes the server match the database. Each pass reads the
//! whole desired state of the server, sends it as one batch over the server's reused SSH
//! session, verifies the result on the server and records per-volume outcomes. There is no
//! "resume step 3": after a crash the next pass simply computes what is different now.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio::sync::Notify;
use tracing::Instrument as _;

use crate::backend::{self, KindExt as _};
use crate::datastore::{Change, Datastore};
use crate::error::Error;
use crate::fault;
use crate::model::{Layout, Outcome, Server, ServerId, ServerStatus, VolumeId, VolumeState};
use crate::plan::Plan;
use crate::precheck;
use crate::profile::{PassProfile, Phase};
use crate::remote::{RemoteError, Session, Target};
use crate::spec::RootDir;

mod policy;
mod supervisor;

pub use crate::settings::Tuning;
pub use policy::{Requeue, RetryPolicy, RetryState};
use supervisor::Supervisor;

/// Time limit of the script that checks a root path being added for its layout.
const LAYOUT_CHECK_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Time limit of the script that applies resizes and samples usage after a pass (`Hub::sizes`).
const SIZES_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Passes in a row without waiting, when a pass asks for another (rejections, forced re-export).
const MAX_QUICK_PASSES: usize = 4;

/// What a server's reconciler task keeps from one pass to the next.
struct TaskState {
    server: ServerId,
    /// The SSH session, reused; dropped when a pass fails.
    session: Option<Session>,
    unresolved: precheck::Unresolved,
    policy: RetryPolicy,
    retry: RetryState,
    /// Passes this task ran.
    generation: u64,
    /// When this task last sampled its server's usage (`Hub::sizes`).
    sampled: Option<Instant>,
    /// This node's lease on the server, as last confirmed by the database.
    lease: Option<Arc<LeaseView>>,
}

/// A lease this node holds on a server (`datastore::leases`): its fencing token, until when it
/// surely runs (measured from before the statement that took or renewed it, so this node's
/// view ends no later than the database's), and whether it was found lost. Every step of a
/// pass that changes the server or records what it did asks [`LeaseView::check`] first; the
/// server checks the token again ([`backend::fence`]) for the window between the two.
struct LeaseView {
    token: i64,
    until: Mutex<Instant>,
    lost: std::sync::atomic::AtomicBool,
}

impl LeaseView {
    fn new(token: i64, until: Instant) -> Arc<LeaseView> {
        Arc::new(LeaseView {
            token,
            until: Mutex::new(until),
            lost: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn holds(&self) -> bool {
        !self.lost.load(std::sync::atomic::Ordering::SeqCst)
            && Instant::now() < *self.until.lock().expect("lease lock")
    }

    fn lose(&self) {
        self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// An error unless the lease still holds: the pass stops here, recording nothing.
    fn check(&self, server: &str) -> anyhow::Result<()> {
        if self.holds() {
            Ok(())
        } else {
            anyhow::bail!(
                "lease on server {server} (token {}) lost or not renewed in time: this pass stops here and records nothing",
                self.token
            )
        }
    }
}

/// Wakes reconcilers and the requests waiting for them.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    db: Datastore,
    state_dir: PathBuf,
    tuning: Tuning,
    servers: Mutex<HashMap<ServerId, Arc<Notify>>>,
    /// Owns the reconciler tasks; started with the first of them.
    tasks: OnceLock<Supervisor>,
    /// Signalled after every pass that recorded outcomes.
    changed: Notify,
    /// This process among the nodes sharing the database (lease holder name).
    node: String,
    /// The leases this node holds, by server: given up at shutdown.
    held: Mutex<HashMap<ServerId, i64>>,
    /// The task following other nodes' changes (`Hub::follow_changes`), stopped at shutdown.
    follower: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Hub {
    pub fn new(db: Datastore, state_dir: PathBuf, tuning: Tuning) -> Hub {
        Hub {
            inner: Arc::new(HubInner {
                db,
                state_dir,
                tuning,
                servers: Mutex::new(HashMap::new()),
                tasks: OnceLock::new(),
                changed: Notify::new(),
                node: crate::datastore::new_node_id(),
                held: Mutex::new(HashMap::new()),
                follower: Mutex::new(None),
            }),
        }
    }

    /// Start a reconciler for every registered server that has none yet.
    pub async fn ensure_all(&self) -> anyhow::Result<()> {
        for s in self.inner.db.servers().await? {
            self.ensure(s.id);
        }
        Ok(())
    }

    /// Start the reconciler of `server` if it is not running.
    pub fn ensure(&self, server: ServerId) {
        {
            let mut map = self.inner.servers.lock().expect("hub lock");
            if map.contains_key(&server) {
                return;
            }
            map.insert(server, Arc::new(Notify::new()));
        }
        self.supervisor().start(server);
    }

    /// The owner of the reconciler tasks, started on first use (on the caller's runtime).
    fn supervisor(&self) -> &Supervisor {
        self.inner.tasks.get_or_init(|| {
            let hub = self.clone();
            Supervisor::spawn(RetryPolicy::new(&self.inner.tuning), move |server| {
                hub.clone().run(server)
            })
        })
    }

    /// Stop every reconciler and wait until they are gone, then give up their leases (another
    /// node takes the servers over at once instead of after the lease time).
    pub async fn shutdown(&self) {
        if let Some(f) = self.inner.follower.lock().expect("hub lock").take() {
            f.abort();
        }
        if let Some(tasks) = self.inner.tasks.get() {
            tasks.shutdown().await;
        }
        let held: Vec<(ServerId, i64)> =
            self.inner.held.lock().expect("hub lock").drain().collect();
        for (server, token) in held {
            if let Err(e) = self
                .inner
                .db
                .release_lease(server, &self.inner.node, token)
                .await
            {
                tracing::warn!(server = %server, "giving up the lease: {e:#}");
            }
        }
    }

    /// This node's name as a lease holder.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The lease of `server` for this node: the one it holds if it still runs, else taken (or
    /// renewed) now if free; `None` while another node holds it.
    async fn lease(
        &self,
        server: ServerId,
        mine: Option<&Arc<LeaseView>>,
    ) -> Option<Arc<LeaseView>> {
        if let Some(l) = mine
            && l.holds()
        {
            return Some(l.clone());
        }
        let ttl = self.inner.tuning.lease;
        let db = &self.inner.db;
        let node = self.inner.node.as_str();
        let mut asked = Instant::now();
        let mut taken = db.acquire_lease(server, node, ttl, None).await;
        if let Ok(None) = taken
            && let Ok(Some(h)) = db.lease_holder(server).await
            && crate::datastore::holder_is_dead(&h.holder)
        {
            // This node's predecessor on this host crashed: no need to wait out its lease.
            tracing::info!(server = %server, dead = %h.holder, "taking over the lease of a process that is gone");
            asked = Instant::now();
            taken = db.acquire_lease(server, node, ttl, Some(&h.holder)).await;
        }
        let mut held = self.inner.held.lock().expect("hub lock");
        match taken {
            Ok(Some(token)) => {
                if held.insert(server, token) != Some(token) {
                    tracing::info!(server = %server, token, node = %self.inner.node, "took the server's lease");
                }
                Some(LeaseView::new(token, asked + ttl))
            }
            Ok(None) => {
                if held.remove(&server).is_some() {
                    tracing::warn!(server = %server, "lease taken over by another node");
                }
                None
            }
            Err(e) => {
                tracing::warn!(server = %server, "taking the server's lease: {e:#}");
                None
            }
        }
    }

    /// Renew `lease` every third of the lease time, for as long as it is polled; a renewal the
    /// database refuses marks it lost (one it cannot answer leaves it to run out).
    async fn keep_renewed(
        &self,
        server: ServerId,
        lease: Arc<LeaseView>,
    ) -> std::convert::Infallible {
        let ttl = self.inner.tuning.lease;
        loop {
            tokio::time::sleep(ttl / 3).await;
            if !lease.holds() {
                return std::future::pending().await;
            }
            let asked = Instant::now();
            match self
                .inner
                .db
                .renew_lease(server, &self.inner.node, lease.token, ttl)
                .await
            {
                Ok(true) => *lease.until.lock().expect("lease lock") = asked + ttl,
                Ok(false) => {
                    tracing::warn!(server = %server, token = lease.token, "lease lost: another node took the server over");
                    lease.lose();
                    self.inner.held.lock().expect("hub lock").remove(&server);
                }
                Err(e) => tracing::warn!(server = %server, "renewing the server's lease: {e:#}"),
            }
        }
    }

    /// Run `work` while keeping `lease` renewed.
    async fn under<T>(
        &self,
        server: ServerId,
        lease: &Arc<LeaseView>,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        tokio::select! {
            r = work => r,
            never = self.keep_renewed(server, lease.clone()) => match never {},
        }
    }

    /// Tell the reconciler of `server` that its desired state changed.
    pub fn poke(&self, server: ServerId) {
        let notify = self
            .inner
            .servers
            .lock()
            .expect("hub lock")
            .get(&server)
            .cloned();
        match notify {
            Some(n) => n.notify_one(),
            None => self.ensure(server),
        }
    }

    /// Follow the changes every node commits (`Datastore::changes`; none on SQLite, where
    /// only this node's own requests and the periodic resync wake a reconciler): a change of a
    /// server's desired state pokes its reconciler here, which acts on it only while this node
    /// holds the server's lease; every outcome recorded wakes the requests waiting here,
    /// whichever node recorded it. After a gap in the notifications (the listener
    /// reconnected), every reconciler is poked and every waiter woken. Call once, on the
    /// runtime that serves.
    pub fn follow_changes(&self) {
        let Some(mut changes) = self.inner.db.changes() else {
            return;
        };
        let hub = Arc::downgrade(&self.inner);
        let task = tokio::spawn(async move {
            while let Some(change) = changes.recv().await {
                let Some(inner) = hub.upgrade() else {
                    return;
                };
                let hub = Hub { inner };
                match change {
                    // Not the waiters: nothing settled yet, and a storm of creates would wake
                    // every waiter on every node once per create.
                    Change::Wanted(server) => hub.poke(server),
                    Change::Settled(_) => hub.inner.changed.notify_waiters(),
                    Change::Gap => {
                        let known: Vec<ServerId> = hub
                            .inner
                            .servers
                            .lock()
                            .expect("hub lock")
                            .keys()
                            .copied()
                            .collect();
                        for server in known {
                            hub.poke(server);
                        }
                        hub.inner.changed.notify_waiters();
                        if let Err(e) = hub.ensure_all().await {
                            tracing::warn!(
                                "looking for servers after a gap in the change notifications: {e:#}"
                            );
                        }
                    }
                }
            }
        });
        if let Some(old) = self.inner.follower.lock().expect("hub lock").replace(task) {
            old.abort();
        }
    }

    /// A future that completes at the next recorded outcome. Create it before reading the
    /// state you wait on, so no change is missed.
    pub fn changed(&self) -> std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>> {
        let mut n = Box::pin(self.inner.changed.notified());
        // Register now, not at first poll.
        n.as_mut().enable();
        n
    }

    pub fn db(&self) -> &Datastore {
        &self.inner.db
    }

    /// Ask `server` whether `root` can hold `layout` (a root path being added): see
    /// [`check_layout`].
    pub async fn check_layout(
        &self,
        server: &Server,
        root: &RootDir,
        layout: Layout,
    ) -> Result<(), Error> {
        check_layout(&self.inner.state_dir, server, root, layout).await
    }

    /// The body of a server's reconciler task: pass after pass, each followed by the wait it
    /// asks for. Runs until the supervisor stops it.
    async fn run(self, server_id: ServerId) {
        let notify = self
            .inner
            .servers
            .lock()
            .expect("hub lock")
            .get(&server_id)
            .cloned()
            .expect("a reconciler is started after its server's entry");
        let mut task = TaskState {
            server: server_id,
            session: None,
            unresolved: precheck::Unresolved::default(),
            policy: RetryPolicy::new(&self.inner.tuning),
            retry: RetryState::new(Instant::now()),
            generation: 0,
            sampled: None,
            lease: None,
        };
        // Start-up and periodic resyncs verify everything; a pass woken by a request checks
        // what it changes (and the whole export table).
        let mut full = true;
        // Without the lease, try again this often: a dead holder's server is taken over
        // within the lease time and this much.
        let sweep = (self.inner.tuning.lease / 5).max(std::time::Duration::from_millis(100));
        loop {
            let Some(lease) = self.lease(server_id, task.lease.as_ref()).await else {
                task.lease = None;
                // The new holder's first pass verifies everything.
                full = true;
                tokio::time::sleep(sweep).await;
                continue;
            };
            if task.lease.as_ref().is_none_or(|l| l.token != lease.token) {
                // Taken anew: whatever the server went through meanwhile, check all of it.
                full = true;
            }
            task.lease = Some(lease.clone());
            full = self
                .under(server_id, &lease, async {
                    let next = self.pass(&mut task, full).await;
                    self.wait(next, &notify).await
                })
                .await;
        }
    }

    /// Wait as `requeue` says; whether the next pass is a full one.
    async fn wait(&self, requeue: Requeue, notify: &Notify) -> bool {
        match requeue {
            Requeue::OnWakeOr(resync) => {
                let since = tokio::time::Instant::now();
                let woken = tokio::time::timeout(resync, notify.notified())
                    .await
                    .is_ok();
                let full = !woken || since.elapsed() >= resync;
                if !full {
                    let t = &self.inner.tuning;
                    gather(notify, t.batch_window, t.batch_quiet).await;
                }
                full
            }
            Requeue::After(wait) => {
                // A wake-up that comes meanwhile stays stored in `notify` for the next wait.
                tokio::time::sleep(wait).await;
                true
            }
        }
    }

    /// One reconcile of a server in its own span, `pass{server, generation, full}`, with the
    /// counts (volumes, applied, failed, pending), the duration and the next run recorded when
    /// it ends, and an event then (debug; warn if it failed). `generation` numbers the passes
    /// of this reconciler task. Returns when the next pass should run, as `task.policy` says.
    async fn pass(&self, task: &mut TaskState, full: bool) -> Requeue {
        task.generation += 1;
        let span = tracing::info_span!(
            "pass",
            server = %task.server,
            generation = task.generation,
            full,
            name = tracing::field::Empty,
            volumes = tracing::field::Empty,
            applied = tracing::field::Empty,
            failed = tracing::field::Empty,
            pending = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
            next = tracing::field::Empty,
        );
        let began = Instant::now();
        let mut counts = PassCounts::default();
        let lease = task.lease.clone().expect("a pass runs under a lease");
        let result = self
            .reconcile_with(
                task.server,
                &mut task.session,
                full,
                &mut task.unresolved,
                &mut counts,
                &lease,
            )
            .instrument(span.clone())
            .await;
        let result = match result {
            Ok(settled) => {
                self.after_pass(task, full, settled, &lease)
                    .instrument(span.clone())
                    .await
            }
            Err(e) => Err(e),
        };
        let next = match &result {
            Ok(()) => task
                .policy
                .succeeded(&mut task.retry, full, began, Instant::now()),
            Err(_) => {
                task.session = None;
                task.policy.failed(&mut task.retry)
            }
        };
        span.record("volumes", counts.volumes)
            .record("applied", counts.applied)
            .record("failed", counts.failed)
            .record("pending", counts.pending)
            .record("duration_ms", began.elapsed().as_millis() as u64)
            .record("next", tracing::field::debug(next));
        span.in_scope(|| match &result {
            Ok(()) => tracing::debug!("pass done"),
            Err(e) => tracing::warn!("reconcile failed: {e:#}"),
        });
        next
    }

    /// Bring one server in line with the database: one or a few passes, then the snapshot
    /// step (not sizes: they belong to a reconciler task, which keeps when it last sampled).
    /// Runs under this node's lease on the server (taken if free; an error if another node
    /// holds it).
    pub async fn reconcile_server(
        &self,
        server_id: ServerId,
        session: &mut Option<Session>,
        full: bool,
    ) -> anyhow::Result<()> {
        let Some(lease) = self.lease(server_id, None).await else {
            let holder = self.inner.db.lease_holder(server_id).await?;
            anyhow::bail!(
                "server {server_id} is reconciled by another node (lease holder {:?}); try again when its lease ends",
                holder.map(|h| h.holder)
            );
        };
        self.under(server_id, &lease, async {
            let mut unresolved = precheck::Unresolved::default();
            let mut counts = PassCounts::default();
            let settled = self
                .reconcile_with(
                    server_id,
                    session,
                    full,
                    &mut unresolved,
                    &mut counts,
                    &lease,
                )
                .await?;
            match session.as_mut() {
                Some(sess) if settled => {
                    let server = self.inner.db.server(server_id).await?;
                    let r = self.snapshot_step(&server, sess, full, &lease).await;
                    if r.is_err() {
                        *session = None;
                    }
                    r
                }
                _ => Ok(()),
            }
        })
        .await
    }

    /// The volumes' pass (one or a few quick passes); `Ok(true)` when it settled with nothing
    /// left to rerun.
    async fn reconcile_with(
        &self,
        server_id: ServerId,
        session: &mut Option<Session>,
        full: bool,
        unresolved: &mut precheck::Unresolved,
        counts: &mut PassCounts,
        lease: &LeaseView,
    ) -> anyhow::Result<bool> {
        fault::panic_once("panic-once");
        let mut prof = PassProfile::start();
        let db = &self.inner.db;
        let tuning = self.inner.tuning;
        let server = db.server(server_id).await?;
        tracing::Span::current().record("name", server.name.as_str());
        // The last word on each volume over the quick passes of this reconcile.
        let mut last: HashMap<VolumeId, OutcomeKind> = HashMap::new();
        let mut force = false;
        let mut excluded = HashSet::new();
        let mut repair = Vec::new();
        // Whether this reconcile told the world the server is slow (to be taken back).
        let mut reported_slow = false;
        let mut asked_all = false;
        let trim = TrimAfterLargePass::default();
        for _ in 0..MAX_QUICK_PASSES {
            let volumes = db.server_volumes(server_id).await?;
            prof.pass(&server.name, volumes.len());
            prof.lap(Phase::DbRead);
            trim.note(volumes.len());
            counts.volumes = volumes.len();
            let mut plan = off_worker(|| Plan::build_excluding(&volumes, &excluded));
            plan.full = full;
            if plan.create.iter().any(|d| d.layout == Layout::Btrfs) {
                let mut sources = db.restore_sources(server_id).await?;
                for d in &mut plan.create {
                    d.restore = sources.remove(&d.volume);
                }
            }
            plan.repair = std::mem::take(&mut repair);
            prof.lap(Phase::Plan);
            if session.is_none() {
                let target = target(&server);
                let connect = Session::connect(&target, &self.inner.state_dir);
                let (r, slow) = self
                    .watch(&server, "connecting to the server", connect, lease)
                    .await;
                reported_slow |= slow;
                prof.lap(Phase::Connect);
                match r {
                    Ok(s) => *session = Some(s),
                    Err(e) => {
                        lease.check(&server.name)?;
                        self.server_down(&server, &volumes, &e).await?;
                        return Err(e.into());
                    }
                }
            }
            let sess = session.as_mut().expect("connected above");
            // Host names first, each bounded: a name whose DNS does not answer is held back
            // (and blamed on its volume) instead of holding up the server's reload.
            // A full reconcile asks every name once, not in each of its quick passes.
            let ask_all = full && !asked_all;
            asked_all = true;
            let (names, mut bad) = unresolved.to_check(&plan, ask_all);
            let dirs = precheck::dirs_to_check(&plan);
            let mut missing = HashSet::new();
            prof.lap(Phase::Plan);
            if !names.is_empty() || !dirs.is_empty() {
                let script = precheck::script(&names, &dirs, tuning.resolve_timeout);
                let limit = precheck::script_limit(names.len(), tuning.resolve_timeout)
                    .min(tuning.pass_timeout);
                let run = sess.run(&script, limit);
                let (r, slow) = self
                    .watch(
                        &server,
                        "checking client host names and directories",
                        run,
                        lease,
                    )
                    .await;
                reported_slow |= slow;
                prof.lap(Phase::Precheck);
                match r {
                    Ok(out) => {
                        let fresh = precheck::failures(&out, &names, tuning.resolve_timeout);
                        unresolved.learn(ask_all, &fresh);
                        bad.extend(fresh);
                        missing = precheck::missing_dirs(&out);
                    }
                    Err(e) => {
                        *session = None;
                        lease.check(&server.name)?;
                        self.server_down(&server, &volumes, &e).await?;
                        return Err(e.into());
                    }
                }
            }
            if ask_all && names.is_empty() {
                unresolved.learn(true, &HashMap::new());
            }
            let held = precheck::hold_back(&mut plan, &bad, &missing, &server.name);
            let fence = server.backend.fence(lease.token);
            let prepared = off_worker(|| server.backend.prepare(&plan, force, Some(fence)));
            let sess = session.as_mut().expect("connected above");
            prof.lap(Phase::Plan);
            lease.check(&server.name)?;
            if volumes.iter().any(|v| !v.state.is_settled()) {
                fault::pause_once("pause-before-apply").await;
            }
            let run = sess.run(&prepared.script, tuning.pass_timeout);
            let (r, slow) = self
                .watch(&server, "waiting for the server", run, lease)
                .await;
            reported_slow |= slow;
            prof.lap(Phase::Apply);
            let out = match r {
                Ok(out) => out,
                Err(e) => {
                    *session = None;
                    lease.check(&server.name)?;
                    self.server_down(&server, &volumes, &e).await?;
                    return Err(e.into());
                }
            };
            refused(&server, &out, lease)?;
            if volumes.iter().any(|v| !v.state.is_settled()) {
                fault::abort_at("after-apply");
            }
            if plan.create.iter().any(|d| d.restore.is_some()) {
                fault::abort_at("after-restore");
            }
            let report = off_worker(|| server.backend.judge(&plan, &prepared, &out));
            for d in &report.drift {
                tracing::warn!(server = %server.name, "drift repaired: {d}");
            }
            let mut outcomes = report.outcomes;
            precheck::blame_held(&mut outcomes, &held);
            prof.lap(Phase::Judge);
            let last_errors: HashMap<_, _> = volumes
                .iter()
                .map(|v| (v.id, v.last_error.as_deref()))
                .collect();
            for o in &outcomes {
                match o {
                    Outcome::Rejected { id, message, .. } => {
                        tracing::warn!(server = %server.name, volume = %id, "rejected: {message}")
                    }
                    // Retried every pass: logged when it is news.
                    Outcome::Failed { id, message, .. }
                        if last_errors.get(id).copied().flatten() != Some(message.as_str()) =>
                    {
                        tracing::warn!(server = %server.name, volume = %id, "failed (retried): {message}")
                    }
                    _ => {}
                }
            }
            if let Some(msg) = &report.server_error {
                tracing::warn!(server = %server.name, "server error: {msg}");
                outcomes.extend(pending_all(&volumes, msg));
            }
            lease.check(&server.name)?;
            db.record_outcomes(&outcomes).await?;
            self.inner.changed.notify_waiters();
            prof.lap(Phase::Record);
            last.extend(outcomes.iter().map(|o| (outcome_id(o), OutcomeKind::of(o))));
            *counts = PassCounts::tally(volumes.len(), last.values().copied());
            match &report.server_error {
                Some(msg) => {
                    let status = if report.service_down {
                        ServerStatus::Down
                    } else {
                        ServerStatus::Error
                    };
                    db.set_server_status(server_id, status, Some(msg)).await?;
                    anyhow::bail!("server {}: {msg}", server.name);
                }
                // One write per full pass or change of status, not per pass: under a stream
                // of requests passes follow each other closely.
                None if full
                    || reported_slow
                    || server.status != ServerStatus::Reachable
                    || server.status_message.is_some() =>
                {
                    db.set_server_status(server_id, ServerStatus::Reachable, None)
                        .await?
                }
                None => {}
            }
            prof.lap(Phase::Record);
            if report.force_next {
                force = true;
                continue;
            }
            if !report.repair.is_empty() {
                repair = report.repair;
                continue;
            }
            if report.rerun {
                force = false;
                excluded.extend(report.blamed.iter().copied());
                continue;
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// The steps that follow a volumes' pass that went well, on its session: the snapshot
    /// step (only once the pass settled, so a restore's source exists and a deleted volume is
    /// handled), then sizes (resizes and sampling, which then see the snapshots just made).
    /// Neither skips the other: a failure of the snapshot step is reported after sizes ran
    /// (unless it lost the connection, which sizes would need too).
    async fn after_pass(
        &self,
        task: &mut TaskState,
        full: bool,
        settled: bool,
        lease: &LeaseView,
    ) -> anyhow::Result<()> {
        let snapshots = match task.session.as_mut() {
            Some(sess) if settled => {
                let server = self.inner.db.server(task.server).await?;
                let r = self.snapshot_step(&server, sess, full, lease).await;
                if r.as_ref().is_err_and(|e| e.is::<RemoteError>()) {
                    task.session = None;
                }
                r
            }
            _ => Ok(()),
        };
        let sizes = self.sizes(task, full, lease).await;
        match (snapshots, sizes) {
            (Err(a), Err(b)) => Err(a.context(format!("and then: {b:#}"))),
            (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(())) => Ok(()),
        }
    }

    /// Snapshots (btrfs): after the volumes' pass, on the same connection, one script for the
    /// snapshots that wait for the server (`backend::snapshot`); outcomes recorded per
    /// snapshot. A failure to reach the server leaves them waiting for the next pass.
    async fn snapshot_step(
        &self,
        server: &Server,
        sess: &mut Session,
        full: bool,
        lease: &LeaseView,
    ) -> anyhow::Result<()> {
        let db = &self.inner.db;
        let tasks = db.server_snapshot_tasks(server.id, full).await?;
        if tasks.is_empty() {
            return Ok(());
        }
        let script = backend::snapshot::script(&tasks, Some(server.backend.fence(lease.token)));
        lease.check(&server.name)?;
        let run = sess.run(&script, self.inner.tuning.pass_timeout);
        let what = "waiting for the server (its snapshot step)";
        let (out, slow) = self.watch(server, what, run, lease).await;
        let out = out?;
        self.slow_over(server, slow).await?;
        refused(server, &out, lease)?;
        if tasks.iter().any(|t| !t.state.is_settled()) {
            fault::abort_at("after-snapshot");
        }
        let outcomes = backend::snapshot::judge(&tasks, &out);
        for o in &outcomes {
            if let crate::model::SnapshotOutcome::Failed { id, message } = o {
                tracing::warn!(server = %server.name, snapshot = %id, "snapshot step failed: {message}");
            }
        }
        lease.check(&server.name)?;
        db.record_snapshot_outcomes(&outcomes).await?;
        self.inner.changed.notify_waiters();
        Ok(())
    }

    /// After a pass that went well, on the same connection: apply the btrfs limits of resized
    /// volumes (read back; a shrink below what the volume holds is refused on the server and
    /// recorded as the volume's `size_error`), and every `usage_interval` sample what the
    /// server's volumes and root paths hold (`backend::usage`). One script, only when there is
    /// something to do.
    async fn sizes(
        &self,
        task: &mut TaskState,
        full: bool,
        lease: &LeaseView,
    ) -> anyhow::Result<()> {
        use backend::usage::{self, Check, Checked, Resize, Resized, RootAt, VolumeAt, Work};
        let db = &self.inner.db;
        let tuning = self.inner.tuning;
        let due = task
            .sampled
            .is_none_or(|t| t.elapsed() >= tuning.usage_interval);
        let pending = db.pending_resizes(task.server, full).await?;
        if pending.is_empty() && !due && !full {
            return Ok(());
        }
        let volumes = db.server_volumes(task.server).await?;
        let by_id: HashMap<VolumeId, &crate::model::Volume> =
            volumes.iter().map(|v| (v.id, v)).collect();
        let mut work = Work::default();
        if full {
            // Drift: every btrfs volume the server has, its subvolume and limit, unless a
            // resize is about to set the limit anyway.
            let resizing: HashSet<VolumeId> = pending.iter().map(|p| p.id).collect();
            work.checks = volumes
                .iter()
                .filter(|v| {
                    v.layout == Layout::Btrfs
                        && v.applied_clients.is_some()
                        && !resizing.contains(&v.id)
                        && !matches!(v.state, VolumeState::Deleting | VolumeState::Deleted)
                })
                .map(|v| Check {
                    id: v.id,
                    root: v.root_path.as_str().to_string(),
                    path: v.full_path(),
                    size_gb: v.size_gb,
                    bytes: crate::model::gb_bytes(v.size_gb),
                })
                .collect();
        }
        for p in &pending {
            if let Some(v) = by_id.get(&p.id) {
                work.resizes.push(Resize {
                    id: p.id,
                    path: v.full_path(),
                    size_gb: p.size_gb,
                    bytes: crate::model::gb_bytes(p.size_gb),
                    layout: v.layout,
                });
            }
        }
        if due {
            work.volumes = volumes
                .iter()
                .filter(|v| {
                    v.applied_clients.is_some()
                        && !matches!(v.state, VolumeState::Deleting | VolumeState::Deleted)
                })
                .map(|v| VolumeAt {
                    id: v.id,
                    root_path: v.root_path_id,
                    path: v.full_path(),
                    layout: v.layout,
                })
                .collect();
            work.roots = db
                .root_paths()
                .await?
                .into_iter()
                .filter(|r| r.server_id == task.server)
                .map(|r| RootAt {
                    id: r.id,
                    path: r.path.as_str().to_string(),
                    layout: r.layout,
                })
                .collect();
        }
        let Some(sess) = task.session.as_mut() else {
            return Ok(());
        };
        if work.is_empty() {
            if due {
                task.sampled = Some(Instant::now());
            }
            return Ok(());
        }
        // The next pass waits for this script: bounded well below a pass's own limit.
        let limit = tuning.pass_timeout.min(SIZES_LIMIT);
        let server = db.server(task.server).await?;
        let script = usage::script(&work, limit / 2, Some(server.backend.fence(lease.token)));
        lease.check(&server.name)?;
        fault::pause_once("pause-before-sizes").await;
        let run = sess.run(&script, limit);
        let what = "waiting for the server (sampling usage and applying sizes)";
        let (out, slow) = self.watch(&server, what, run, lease).await;
        if out.is_ok() {
            self.slow_over(&server, slow).await?;
        }
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                task.session = None;
                return Err(anyhow::anyhow!("sampling usage and applying sizes: {e}"));
            }
        };
        refused(&server, &out, lease)?;
        if !work.resizes.is_empty() {
            fault::abort_at("after-resize");
        }
        let report = usage::report(&work, &out);
        for p in &report.problems {
            tracing::warn!("usage: {p}");
        }
        lease.check(&server.name)?;
        db.record_usage(&report.volumes, &report.roots).await?;
        for (z, r) in &report.resized {
            match r {
                Resized::Applied => db.record_resize(z.id, z.size_gb, Ok(())).await?,
                Resized::Refused { used_bytes } => {
                    let why = format!(
                        "not resized to {} GB: the server refused, the volume holds {used_bytes} bytes ({}); its size stays as it was",
                        z.size_gb,
                        crate::datastore::gb_text(*used_bytes)
                    );
                    tracing::warn!(volume = %z.id, "{why}");
                    db.refuse_resize(z.id, z.size_gb, &why).await?;
                }
                Resized::Failed(why) => {
                    let why = format!("not resized to {} GB: {why}", z.size_gb);
                    tracing::warn!(volume = %z.id, "{why}");
                    db.record_resize(z.id, z.size_gb, Err(why)).await?;
                }
            }
        }
        for (c, found) in &report.checked {
            let recorded = match found {
                Checked::Held => Ok(None),
                Checked::Repaired { was } => {
                    tracing::warn!(volume = %c.id, "drift repaired: btrfs subvolume {}: its qgroup limit was {was}, set back to {} bytes", c.path, c.bytes);
                    Ok(Some(was.as_str()))
                }
                Checked::Unenforced(why) => Err(why.as_str()),
            };
            let news = db
                .record_size_check(c.id, c.size_gb, c.bytes, recorded)
                .await?;
            if let (true, Checked::Unenforced(why)) = (news, found) {
                // Found again on every full pass: logged when it is news.
                tracing::warn!(volume = %c.id, "size drift: {why}");
            }
        }
        if due {
            task.sampled = Some(Instant::now());
        }
        self.inner.changed.notify_waiters();
        Ok(())
    }

    /// Run one step of a pass; while it takes longer than `slow_after`, say so (server status
    /// `slow`, and the reason on every volume waiting for this server), every `slow_after`,
    /// without stopping it. The second value tells whether anything was reported.
    async fn watch<T>(
        &self,
        server: &Server,
        what: &str,
        step: impl std::future::Future<Output = T>,
        lease: &LeaseView,
    ) -> (T, bool) {
        let every = self.inner.tuning.slow_after;
        let began = tokio::time::Instant::now();
        let mut next = began + every;
        let mut reported = false;
        tokio::pin!(step);
        loop {
            tokio::select! {
                r = &mut step => return (r, reported),
                _ = tokio::time::sleep_until(next), if lease.holds() => {
                    let msg = format!(
                        "server {} is slow: pass running for {} s: {what}",
                        server.name,
                        began.elapsed().as_secs()
                    );
                    tracing::warn!(server = %server.name, "{msg}");
                    let db = &self.inner.db;
                    if let Err(e) = db.set_server_status(server.id, ServerStatus::Slow, Some(&msg)).await {
                        tracing::warn!(server = %server.name, "recording slow status: {e:#}");
                    }
                    // Read now, not when the step began: requests that came in since wait
                    // for this server too (after a volumes' pass, only they are unsettled).
                    let waiting = match db.server_volumes(server.id).await {
                        Ok(volumes) => pending_all(&volumes, &msg),
                        Err(e) => {
                            tracing::warn!(server = %server.name, "reading the volumes waiting for it: {e:#}");
                            Vec::new()
                        }
                    };
                    if let Err(e) = db.record_outcomes(&waiting).await {
                        tracing::warn!(server = %server.name, "recording slow status: {e:#}");
                    }
                    self.inner.changed.notify_waiters();
                    reported = true;
                    next += every;
                }
            }
        }
    }

    /// After a step that `watch` reported slow and that then finished: the server answers
    /// again (the volumes it held up are settled by the next pass, which the wake-ups that
    /// came meanwhile have asked for).
    async fn slow_over(&self, server: &Server, reported: bool) -> anyhow::Result<()> {
        if reported {
            self.inner
                .db
                .set_server_status(server.id, ServerStatus::Reachable, None)
                .await?;
            self.inner.changed.notify_waiters();
        }
        Ok(())
    }

    async fn server_down(
        &self,
        server: &Server,
        volumes: &[crate::model::Volume],
        e: &RemoteError,
    ) -> anyhow::Result<()> {
        let msg = format!("server {} unreachable: {e}", server.name);
        self.inner
            .db
            .set_server_status(server.id, ServerStatus::Unreachable, Some(&msg))
            .await?;
        self.inner
            .db
            .record_outcomes(&pending_all(volumes, &msg))
            .await?;
        self.inner.changed.notify_waiters();
        Ok(())
    }
}

/// An error if the server refused `out`'s script for its lease token (a newer holder took the
/// server over; the lease is given up here, nothing is recorded), or if the fence step itself
/// failed (nothing ran).
fn refused(server: &Server, out: &crate::remote::Output, lease: &LeaseView) -> anyhow::Result<()> {
    if let Some(stored) = backend::fence::refused(out) {
        lease.lose();
        anyhow::bail!(
            "server {}: {}",
            server.name,
            backend::fence::refusal_message(stored, lease.token)
        );
    }
    if let Some(why) = backend::fence::failed(out) {
        anyhow::bail!(
            "server {}: taking the server's lock or storing the lease token failed, so nothing was changed: {why}",
            server.name
        );
    }
    Ok(())
}

/// Run synchronous work that grows with the number of volumes (planning, judging, trimming the
/// heap) without holding up the other tasks of this runtime worker, API requests among them:
/// at 20,000 volumes it takes tens of milliseconds.
/// Let requests arriving together share one pass: wait while they keep coming (each within
/// `quiet` of the one before), at most `window` in all; with `quiet` zero, the whole window.
/// The wake-ups taken here are for the coming pass: it reads the state after the wait.
async fn gather(notify: &Notify, window: std::time::Duration, quiet: std::time::Duration) {
    if window.is_zero() {
        return;
    }
    let end = tokio::time::Instant::now() + window;
    if quiet.is_zero() {
        tokio::time::sleep_until(end).await;
        return;
    }
    loop {
        let quiet_until = (tokio::time::Instant::now() + quiet).min(end);
        let woken = tokio::time::timeout_at(quiet_until, notify.notified())
            .await
            .is_ok();
        if !woken || tokio::time::Instant::now() >= end {
            return;
        }
    }
}

fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread) {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// Passes over this many volumes give their freed memory back to the OS when they end.
const LARGE_PASS: usize = 1000;

/// After a large pass, return freed heap to the OS: glibc keeps it otherwise, and the idle RSS
/// of `nfsprov serve` would stay at the peak of its largest pass.
#[derive(Default)]
struct TrimAfterLargePass(std::sync::atomic::AtomicUsize);

impl TrimAfterLargePass {
    fn note(&self, volumes: usize) {
        self.0
            .fetch_max(volumes, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for TrimAfterLargePass {
    fn drop(&mut self) {
        if self.0.load(std::sync::atomic::Ordering::Relaxed) >= LARGE_PASS {
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only hands free heap pages back to the kernel; it has no
            // preconditions and does not touch live allocations.
            off_worker(|| unsafe {
                libc::malloc_trim(0);
            });
        }
    }
}

/// What a pass did, for its span: the server's volumes, and the last outcome recorded for each
/// (applied: applied or deleted; failed: rejected or failed; pending: not yet applied).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassCounts {
    pub volumes: usize,
    pub applied: usize,
    pub failed: usize,
    pub pending: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutcomeKind {
    Applied,
    Failed,
    Pending,
}

impl OutcomeKind {
    fn of(o: &Outcome) -> Self {
        match o {
            Outcome::Applied { .. } | Outcome::Deleted { .. } => OutcomeKind::Applied,
            Outcome::Rejected { .. } | Outcome::Failed { .. } => OutcomeKind::Failed,
            Outcome::Pending { .. } => OutcomeKind::Pending,
        }
    }
}

fn outcome_id(o: &Outcome) -> VolumeId {
    match o {
        Outcome::Applied { id, .. }
        | Outcome::Deleted { id, .. }
        | Outcome::Rejected { id, .. }
        | Outcome::Failed { id, .. }
        | Outcome::Pending { id, .. } => *id,
    }
}

impl PassCounts {
    fn tally(volumes: usize, outcomes: impl IntoIterator<Item = OutcomeKind>) -> Self {
        let mut c = PassCounts {
            volumes,
            ..PassCounts::default()
        };
        for o in outcomes {
            match o {
                OutcomeKind::Applied => c.applied += 1,
                OutcomeKind::Failed => c.failed += 1,
                OutcomeKind::Pending => c.pending += 1,
            }
        }
        c
    }
}

/// Mark every volume that still waits for the server with `msg`.
fn pending_all(volumes: &[crate::model::Volume], msg: &str) -> Vec<Outcome> {
    volumes
        .iter()
        .filter(|v| {
            !v.state.is_settled()
                || (v.state == VolumeState::Error && v.failed_generation.is_none())
        })
        .map(|v| Outcome::Pending {
            id: v.id,
            generation: v.generation,
            message: msg.to_string(),
        })
        .collect()
}

/// Ask `server` whether `root` can hold `layout` (a root path being added, from the API or the
/// CLI): one script on a connection of its own (`backend::layout::probe_script`); `state_dir`
/// holds the known_hosts files. A plain directory needs no question. The server's answer is a
/// 400 naming `layout`; no answer is a 502.
pub async fn check_layout(
    state_dir: &std::path::Path,
    server: &Server,
    root: &RootDir,
    layout: Layout,
) -> Result<(), Error> {
    if layout == Layout::Directory {
        return Ok(());
    }
    let unreachable = |e: RemoteError| {
        Error::ServerUnreachable(format!(
            "cannot check root path {root} on server {} for the {layout} layout: {e}",
            server.name
        ))
    };
    let mut session = Session::connect(&target(server), state_dir)
        .await
        .map_err(unreachable)?;
    let script = backend::layout::probe_script(root.as_str(), layout);
    let out = session
        .run(&script, LAYOUT_CHECK_LIMIT)
        .await
        .map_err(unreachable)?;
    match backend::layout::probe_problem(&server.name, root.as_str(), layout, &out) {
        Some(problem) => Err(Error::invalid("layout", problem)),
        None => Ok(()),
    }
}

pub fn target(server: &Server) -> Target {
    Target {
        alias: format!("nfsprov-server-{}", server.id),
        host: server.ssh_host.clone(),
        port: server.ssh_port,
        user: server.ssh_user.clone(),
        key: PathBuf::from(&server.ssh_key),
        host_key: server.host_key.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::Notify;
    use tokio::time::Instant;

    use super::gather;

    const MS: Duration = Duration::from_millis(1);

    /// `gather` with a request arriving every `every` for `count` times meanwhile: how long it
    /// waited (on tokio's paused clock, so exact).
    async fn gathered(window: Duration, quiet: Duration, every: Duration, count: u32) -> Duration {
        let notify = Arc::new(Notify::new());
        let poker = {
            let notify = notify.clone();
            tokio::spawn(async move {
                for _ in 0..count {
                    tokio::time::sleep(every).await;
                    notify.notify_one();
                }
            })
        };
        let start = Instant::now();
        gather(&notify, window, quiet).await;
        let waited = start.elapsed();
        poker.abort();
        waited
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_request_waits_only_the_quiet_gap() {
        assert_eq!(gathered(500 * MS, 5 * MS, MS, 0).await, 5 * MS);
        assert_eq!(
            gathered(Duration::ZERO, 5 * MS, MS, 0).await,
            Duration::ZERO
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_close_succession_share_the_pass_until_a_gap() {
        // Ten arrivals 2 ms apart: the pass starts 5 ms after the last one.
        assert_eq!(gathered(500 * MS, 5 * MS, 2 * MS, 10).await, 25 * MS);
        // Arrivals further apart than the quiet gap do not hold it.
        assert_eq!(gathered(500 * MS, 5 * MS, 8 * MS, 10).await, 5 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_waits_no_longer_than_the_window() {
        assert_eq!(gathered(50 * MS, 5 * MS, MS, 1000).await, 50 * MS);
        // Without a quiet gap: always the whole window.
        assert_eq!(gathered(50 * MS, Duration::ZERO, MS, 0).await, 50 * MS);
    }
}
