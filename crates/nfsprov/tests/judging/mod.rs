//! The passes behind the captured fixtures in `tests/fixtures/`: what the database held at each
//! step, what was done by hand on the server before it, and how the fixtures are loaded and
//! compared. Shared by the fast-tier table tests (`tests/judge.rs`), which judge the stored
//! captures, and the e2e test (`tests/capture.rs`), which runs the same steps on a real server
//! and checks that judging the fresh output reads the same as judging the stored one.
#![allow(dead_code)]

use std::path::PathBuf;

use nfsprov::backend::{KindExt as _, Prepared, Report};
use nfsprov::model::BackendKind as Kind;
use nfsprov::model::{
    ClientRule, DeletePolicy, RootPathId, ServerId, UserId, Volume, VolumeId, VolumeState,
};
use nfsprov::plan::Plan;
use nfsprov::remote::Output;
use nfsprov::spec::{ClientSpec, DirMode, ExportOptions, RootDir, SubPath};

/// Stands for the pass's random nonce in a stored capture.
pub const NONCE: &str = "NONCE";

/// The root path of every volume: the test bed's pool.
pub const ROOT: &str = "/srv/nfsprov/pool1";

/// Shell run inside the server before the first step: a foreign exports file nfsprov must
/// leave alone (and an entry of it that must stay exported).
pub const KNFSD_SETUP: &str = "mkdir -p /srv/nfsprov/foreign && \
     printf '/srv/nfsprov/foreign 10.9.9.9(ro,no_subtree_check)\\n' > /etc/exports.d/other.exports && \
     exportfs -ra";

/// One pass: the volumes the database holds, and what was done by hand on the server first.
pub struct Step {
    pub backend: Kind,
    /// The fixture's file name (without `.out`) under `tests/fixtures/<backend>/`.
    pub name: &'static str,
    /// Shell run inside the server before the pass (`""`: nothing).
    pub by_hand: &'static str,
    pub volumes: Vec<Volume>,
    /// Reload even if the file is unchanged (what the reconciler does after `force_next`).
    pub force: bool,
}

pub fn vol(
    id: i64,
    sub: &str,
    state: VolumeState,
    generation: i64,
    clients: &[(&str, &str)],
) -> Volume {
    let clients: Vec<ClientRule> = clients
        .iter()
        .map(|(h, o)| ClientRule {
            host: ClientSpec::parse(h).unwrap(),
            options: ExportOptions::parse(o).unwrap(),
        })
        .collect();
    Volume {
        id: VolumeId(id),
        owner_id: UserId(2),
        owner: "alice".into(),
        root_path_id: RootPathId(1),
        root_path: RootDir::parse(ROOT).unwrap(),
        delete_policy: DeletePolicy::default(),
        layout: nfsprov::model::Layout::Directory,
        server_id: ServerId(1),
        nfs_address: "127.0.0.1".into(),
        sub_path: SubPath::parse(sub).unwrap(),
        size_gb: 1,
        applied_clients: matches!(state, VolumeState::Available | VolumeState::Deleting)
            .then(|| clients.clone()),
        clients,
        mode: DirMode::default(),
        uid: 0,
        gid: 0,
        adopt_existing: false,
        state,
        export_id: id as u32,
        generation,
        failed_generation: None,
        last_error: None,
        created_at: Default::default(),
        updated_at: Default::default(),
    }
}

const A: &[(&str, &str)] = &[("10.0.0.1", "rw")];
const B: &[(&str, &str)] = &[("10.0.0.0/24", "ro"), ("*", "rw,async")];
const C: &[(&str, &str)] = &[("no-such-host.invalid", "rw")];
const D: &[(&str, &str)] = &[("10.0.0.4", "rw")];

/// The knfsd passes, in the order they ran on one server (each starts from the state the
/// previous one left).
pub fn knfsd_steps() -> Vec<Step> {
    use VolumeState::*;
    let a = || vol(1, "a", Available, 1, A);
    let b = || vol(2, "b", Available, 1, B);
    vec![
        Step {
            backend: Kind::Knfsd,
            name: "1-create",
            by_hand: "",
            volumes: vec![
                vol(1, "a", Creating, 1, A),
                vol(2, "b", Creating, 1, B),
                vol(3, "c", Creating, 1, C),
            ],
            force: false,
        },
        Step {
            backend: Kind::Knfsd,
            name: "2-delete",
            by_hand: "",
            volumes: vec![a(), b(), vol(3, "c", Deleting, 2, C)],
            force: false,
        },
        Step {
            backend: Kind::Knfsd,
            name: "3-unexported-by-hand",
            by_hand: "exportfs -u 10.0.0.1:/srv/nfsprov/pool1/a",
            volumes: vec![a(), b()],
            force: false,
        },
        Step {
            backend: Kind::Knfsd,
            name: "4-directory-moved-away",
            by_hand: "mv /srv/nfsprov/pool1/b /srv/nfsprov/pool1/b.moved",
            volumes: vec![a(), b()],
            force: true,
        },
        Step {
            backend: Kind::Knfsd,
            name: "5-foreign-file-broken",
            by_hand: "mv /srv/nfsprov/pool1/b.moved /srv/nfsprov/pool1/b && \
                 printf '/srv/nfsprov/foreign 10.9.9.9(no_such_option)\\n' > /etc/exports.d/other.exports",
            volumes: vec![a(), b(), vol(4, "d", Creating, 1, D)],
            force: false,
        },
    ]
}

/// Shell run inside the ganesha server before the first step: nothing yet (its exports file
/// holds only nfsprov's `%include`).
pub const GANESHA_SETUP: &str = "true";

/// Remove a live export from ganesha by hand, over its D-Bus, as an operator might.
const GANESHA_REMOVE_1: &str = "dbus-send --system --print-reply --dest=org.ganesha.nfsd \
     /org/ganesha/nfsd/ExportMgr org.ganesha.nfsd.exportmgr.RemoveExport uint16:1";

/// The nfs-ganesha passes, in the order they ran on one server.
pub fn ganesha_steps() -> Vec<Step> {
    use VolumeState::*;
    let a = || vol(1, "a", Available, 1, A);
    let step = |name, by_hand, volumes, force| Step {
        backend: Kind::Ganesha,
        name,
        by_hand,
        volumes,
        force,
    };
    vec![
        step(
            "1-create",
            "",
            vec![vol(1, "a", Creating, 1, A), vol(2, "b", Creating, 1, B)],
            false,
        ),
        step(
            "2-delete",
            "",
            vec![a(), vol(2, "b", Deleting, 2, B)],
            false,
        ),
        step("3-unexported-by-hand", GANESHA_REMOVE_1, vec![a()], false),
        step("4-forced-reload", "", vec![a()], true),
        step(
            "5-directory-moved-away",
            "mv /srv/nfsprov/pool1/a /srv/nfsprov/pool1/a.moved",
            vec![a(), vol(4, "d", Creating, 1, D)],
            false,
        ),
    ]
}

/// The plan and the prepared pass of a step (a full pass, as at start-up and every resync).
pub fn prepare(step: &Step) -> (Plan, Prepared) {
    let mut plan = Plan::build(&step.volumes);
    plan.full = true;
    let prepared = step.backend.prepare(&plan, step.force, None);
    (plan, prepared)
}

pub fn fixture_path(backend: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(backend)
        .join(format!("{name}.out"))
}

/// A pass's output as stored: what the server printed, with the nonce replaced by [`NONCE`],
/// ending with the end marker and the exit status.
pub fn to_text(out: &Output) -> String {
    let mut text = String::new();
    for s in &out.sections {
        text.push_str(&s.before);
        text.push_str(&format!("@@{NONCE} {} {}\n", s.tag, s.arg));
    }
    text.push_str(&out.rest);
    text.push_str(&format!(
        "@@{NONCE} end {}\n",
        out.status.map_or("?".into(), |s| s.to_string())
    ));
    text
}

/// A stored capture, split as the reconciler splits a live one.
pub fn load(text: &str) -> Output {
    let end = format!("@@{NONCE} end ");
    let (body, status) = text
        .rsplit_once(&end)
        .expect("a capture ends with its end marker");
    let mut out = Output::parse(NONCE, body);
    out.status = status.trim().parse().ok();
    out
}

pub fn load_fixture(backend: &str, name: &str) -> Output {
    let path = fixture_path(backend, name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    load(&text)
}

/// Judge a step's output.
pub fn judge(step: &Step, out: &Output) -> Report {
    let (plan, prepared) = prepare(step);
    step.backend.judge(&plan, &prepared, out)
}

/// A step's stored capture.
pub fn fixture(step: &Step) -> Output {
    load_fixture(step.backend.as_str(), step.name)
}

/// Everything a report says, one line per fact, in a stable order: to compare the judgement
/// of a stored capture with that of a fresh one.
pub fn summary(r: &Report) -> Vec<String> {
    let mut lines: Vec<String> = r.outcomes.iter().map(|o| format!("{o:?}")).collect();
    lines.sort();
    let mut blamed: Vec<i64> = r.blamed.iter().map(|v| v.0).collect();
    blamed.sort();
    lines.push(format!("blamed {blamed:?}"));
    lines.push(format!(
        "rerun {} force_next {} service_down {}",
        r.rerun, r.force_next, r.service_down
    ));
    lines.push(format!("server_error {:?}", r.server_error));
    lines.extend(r.drift.iter().map(|d| format!("drift {d}")));
    lines.extend(r.repair.iter().map(|d| format!("repair {d:?}")));
    lines
}
