//! What would hold up or fail a server's reload, checked on the server before a pass, so one
//! volume's trouble stays that volume's.
//!
//! - Client host names: `exportfs -ra` (and nfs-ganesha) resolve every host name on every
//!   reload; one name whose DNS never answers would hold up the whole server, every pass, for
//!   every user. Each name a pass is about to hand the server is first looked up there with
//!   `getent ahosts` under `timeout`, several at a time, and the clients whose names do not
//!   resolve in time are held back: their volume shows why (its owner sees the name), the
//!   other volumes proceed, and the name is tried again at the next full pass.
//! - Directories of volumes that are not verified yet (failing, changed): a missing one would
//!   make `exportfs -ra` fail (and the file be rolled back) on every pass; its export is left
//!   out until the directory is back, and the pass's own check says it is missing.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::model::Outcome;
use crate::model::VolumeId;
use crate::plan::Plan;
use crate::remote::{Arg, Lit, Output, Script, Word};

/// Lookups running at once on the server.
const PARALLEL: usize = 16;

/// Names that did not resolve on one server lately, with why. Between full passes they are
/// not asked again (each would cost every pass up to the lookup time limit); a full pass asks
/// every name afresh.
#[derive(Debug, Default)]
pub struct Unresolved(HashMap<String, String>);

impl Unresolved {
    /// What a pass must ask, and what it already knows to be bad (of the names it uses):
    /// on a full pass every name (a name that stopped resolving would slow every reload),
    /// else the names of exports not yet verified (new, changed or failing).
    /// `all`: the first pass of a full reconcile.
    pub fn to_check(&self, plan: &Plan, all: bool) -> (BTreeSet<String>, HashMap<String, String>) {
        let names = plan
            .exports
            .iter()
            .filter(|e| all || !e.was_available)
            .flat_map(|e| e.clients.iter())
            .filter(|c| c.host.kind() == "host")
            .map(|c| c.host.to_string());
        let (mut ask, mut known) = (BTreeSet::new(), HashMap::new());
        for name in names {
            match self.0.get(&name) {
                Some(why) if !all => {
                    known.insert(name, why.clone());
                }
                _ => {
                    ask.insert(name);
                }
            }
        }
        (ask, known)
    }

    /// Remember what a pass found (a full pass replaces what was known).
    pub fn learn(&mut self, full: bool, bad: &HashMap<String, String>) {
        if full {
            self.0.clear();
        }
        self.0
            .extend(bad.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

/// Directories to check: those of exports already created that are not verified as they are.
pub fn dirs_to_check(plan: &Plan) -> Vec<(VolumeId, &str)> {
    let owners: std::collections::HashSet<VolumeId> =
        plan.owners.iter().map(|d| d.volume).collect();
    plan.exports
        .iter()
        .filter(|e| !e.was_available && owners.contains(&e.volume))
        .map(|e| (e.volume, e.path.as_str()))
        .collect()
}

/// One script that looks every name up, `PARALLEL` at a time, each bounded by `per_name`, and
/// checks that each directory exists. Prints `@@<nonce> res <name> <exit status>` per name
/// (124/137: no answer in time) and `@@<nonce> nodir <volume>` per missing directory.
pub fn script(names: &BTreeSet<String>, dirs: &[(VolumeId, &str)], per_name: Duration) -> Script {
    let mut s = Script::new();
    for (volume, path) in dirs {
        let missing = format!("@@{} nodir {volume}", s.nonce());
        s.line(&[
            Lit("[ -d"),
            Arg(path),
            Lit("] || printf '%s\\n'"),
            Arg(&missing),
        ]);
    }
    if names.is_empty() {
        return s;
    }
    let marker = format!("@@{} res", s.nonce());
    let secs = format!("{:.1}", per_name.as_secs_f64().max(0.1));
    let mut words: Vec<Word> = vec![Lit("printf '%s\\0'")];
    words.extend(names.iter().map(|n| Arg(n)));
    words.push(Lit("| xargs -0 -r -n 1 -P"));
    let parallel = PARALLEL.to_string();
    words.push(Arg(&parallel));
    // $0: the marker, $1: the time limit, $2: the name (appended by xargs).
    words.push(Lit("sh -c 'timeout -k 1 \"$1\" getent ahosts \"$2\" >/dev/null 2>&1; printf \"%s %s %s\\n\" \"$0\" \"$2\" \"$?\"'"));
    words.push(Arg(&marker));
    words.push(Arg(&secs));
    s.line(&words);
    s
}

/// The volumes whose directories are missing.
pub fn missing_dirs(out: &Output) -> std::collections::HashSet<VolumeId> {
    out.sections
        .iter()
        .filter(|s| s.tag == "nodir")
        .filter_map(|s| s.arg.trim().parse().ok().map(VolumeId))
        .collect()
}

/// Overall time limit of [`script`] on the server.
pub fn script_limit(names: usize, per_name: Duration) -> Duration {
    let waves = names.div_ceil(PARALLEL).max(1) as u32;
    per_name * waves + Duration::from_secs(5)
}

/// The names that did not resolve, with why.
pub fn failures(
    out: &Output,
    names: &BTreeSet<String>,
    per_name: Duration,
) -> HashMap<String, String> {
    let mut seen = HashMap::new();
    for sec in out.sections.iter().filter(|s| s.tag == "res") {
        if let Some((name, rc)) = sec.arg.rsplit_once(' ') {
            seen.insert(name.to_string(), rc.parse::<i32>().unwrap_or(-1));
        }
    }
    let mut bad = HashMap::new();
    for name in names {
        let why = match seen.get(name.as_str()) {
            Some(0) => continue,
            Some(124 | 137) => format!("no answer within {per_name:?} (DNS not answering?)"),
            Some(2) => "the name is unknown to the server's resolver".to_string(),
            Some(rc) => format!("getent ahosts failed with exit status {rc}"),
            None => "the lookup did not finish".to_string(),
        };
        bad.insert(name.clone(), why);
    }
    bad
}

/// Take the clients whose names did not resolve out of the plan. Returns, per volume held
/// back, its generation and the reason (recorded as a non-final failure once the pass is done,
/// so the volume is tried again on every pass and recovers when its names resolve).
/// Exports whose directory is missing are left out whole (no reason here: the pass's own
/// check of the directory reports it).
pub fn hold_back(
    plan: &mut Plan,
    bad: &HashMap<String, String>,
    missing: &std::collections::HashSet<VolumeId>,
    server: &str,
) -> HashMap<VolumeId, (i64, String)> {
    let mut held = HashMap::new();
    for e in &mut plan.exports {
        if missing.contains(&e.volume) {
            // Held back as a whole: even if the directory is back by the time the pass looks
            // at it, its export was left out of this pass, so the volume is not verified.
            e.clients.clear();
            held.insert(
                e.volume,
                (
                    e.generation,
                    format!(
                        "{} does not exist on server {server}, so it is not exported there (checked again every pass)",
                        e.path
                    ),
                ),
            );
            continue;
        }
        if bad.is_empty() {
            continue;
        }
        let mut reasons = Vec::new();
        e.clients.retain(|c| match bad.get(&c.host.to_string()) {
            Some(why) => {
                reasons.push(format!("{}: {why}", c.host));
                false
            }
            None => true,
        });
        if !reasons.is_empty() {
            held.insert(
                e.volume,
                (
                    e.generation,
                    format!(
                        "client host name did not resolve on server {server}, so it is not exported there (tried again at every resync): {}",
                        reasons.join("; ")
                    ),
                ),
            );
        }
    }
    held
}

/// Put the held-back volumes' reasons into a pass's outcomes: none of them is verified as a
/// whole, so an `Applied` for one is replaced; a verdict or other failure found by the pass
/// stays and gets the reason appended.
pub fn blame_held(outcomes: &mut Vec<Outcome>, held: &HashMap<VolumeId, (i64, String)>) {
    if held.is_empty() {
        return;
    }
    outcomes.retain(|o| !matches!(o, Outcome::Applied { id, .. } if held.contains_key(id)));
    let mut covered = std::collections::HashSet::new();
    for o in outcomes.iter_mut() {
        if let Outcome::Rejected { id, message, .. } | Outcome::Failed { id, message, .. } = o
            && let Some((_, why)) = held.get(id)
        {
            message.push_str("; ");
            message.push_str(why);
            covered.insert(*id);
        }
    }
    for (id, (generation, why)) in held {
        if !covered.contains(id) {
            outcomes.push(Outcome::Failed {
                id: *id,
                generation: *generation,
                message: why.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lookup_script_runs_in_a_real_shell_and_reports_each_name() {
        let names: BTreeSet<String> = ["localhost", "no-such-host.invalid", "a'b $(x)"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let there = dir.path().to_str().unwrap().to_string();
        let gone = format!("{there}/gone");
        let dirs = [(VolumeId(1), there.as_str()), (VolumeId(2), gone.as_str())];
        let s = script(&names, &dirs, Duration::from_secs(5));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(s.body())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let parsed = Output::parse(s.nonce(), &text);
        let bad = failures(&parsed, &names, Duration::from_secs(5));
        assert!(!bad.contains_key("localhost"), "{text}");
        assert!(bad.contains_key("no-such-host.invalid"), "{text}");
        assert!(bad.contains_key("a'b $(x)"), "{text}");
        assert!(
            !bad["no-such-host.invalid"].contains("did not finish"),
            "{text}"
        );
        assert_eq!(
            missing_dirs(&parsed),
            std::collections::HashSet::from([VolumeId(2)])
        );
    }

    /// A directory the precheck found missing leaves its export out of the pass; if it is back
    /// by the time the pass looks (a race with whoever restores it), the pass must still not
    /// call the volume verified: it was not exported.
    #[test]
    fn a_volume_held_back_for_a_missing_directory_is_never_applied() {
        use crate::plan::Export;
        let export = |id: i64, path: &str| Export {
            volume: VolumeId(id),
            path: path.into(),
            root: "/srv/pool".into(),
            sub: path.rsplit('/').next().unwrap().into(),
            clients: vec![crate::model::ClientRule {
                host: crate::spec::ClientSpec::parse("10.0.0.1").unwrap(),
                options: crate::spec::ExportOptions::parse("rw").unwrap(),
            }],
            is_desired: true,
            was_available: false,
            export_id: id as u32,
            generation: 3,
        };
        let mut plan = Plan {
            exports: vec![export(1, "/srv/pool/gone"), export(2, "/srv/pool/here")],
            ..Plan::default()
        };
        let held = hold_back(
            &mut plan,
            &HashMap::new(),
            &std::collections::HashSet::from([VolumeId(1)]),
            "srv1",
        );
        assert!(plan.exports[0].clients.is_empty());
        assert_eq!(plan.exports[1].clients.len(), 1);
        // The pass found the directory back and nothing wrong with the (empty) export.
        let mut outcomes = vec![
            Outcome::Applied {
                id: VolumeId(1),
                generation: 3,
                clients: "[]".into(),
            },
            Outcome::Applied {
                id: VolumeId(2),
                generation: 3,
                clients: "[]".into(),
            },
        ];
        blame_held(&mut outcomes, &held);
        assert_eq!(outcomes.len(), 2, "{outcomes:?}");
        assert!(outcomes.iter().any(|o| matches!(o,
            Outcome::Failed { id: VolumeId(1), generation: 3, message }
                if message.contains("/srv/pool/gone does not exist"))));
        assert!(outcomes.iter().any(|o| matches!(
            o,
            Outcome::Applied {
                id: VolumeId(2),
                ..
            }
        )));
    }
}
