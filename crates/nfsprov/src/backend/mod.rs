//! Backends: how an NFS server is told about exports. Everything common to all of them lives
//! here — one pass is one [`Script`] (its shell functions are in `prelude.sh`, with the
//! reasons they are safe): removals, directory creation, the managed config file
//! written whole beside the real one and renamed into place, the backend's reload, the read-back
//! of the live export state and a `stat` of every volume directory, in one round trip — and so
//! does judging the output per volume. A backend supplies only what differs: rendering its file,
//! reloading it, reading the live state back and checking an export against it.
//!
//! Every step is idempotent, so a pass cut short at any point is finished by the next one.
//! Adding a backend means one new module implementing [`Backend`] and one arm in
//! `model::BackendKind` (and in [`KindExt`]).

pub mod fence;
pub mod ganesha;
pub mod knfsd;
pub mod layout;
pub mod snapshot;
pub mod usage;
pub mod xfs;

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::model::{BackendKind, DeletePolicy, Layout, Outcome, VolumeId, clients_to_json};
use crate::plan::{Export, Plan};
use crate::remote::{Arg, Lit, Output, Script, Word};

pub use fence::Fence;
pub use ganesha::Ganesha;
pub use knfsd::Knfsd;

/// A backend's rendering of a plan.
#[derive(Debug, Default)]
pub struct Rendered {
    pub text: String,
    /// 1-based line number -> the volume whose entry contains it.
    pub line_map: HashMap<usize, VolumeId>,
    /// Each export's entry exactly as rendered (to spot entries removed or changed by hand).
    pub entries: Vec<(VolumeId, String)>,
}

/// What a backend supplies to a pass. Script fragments may only use [`Lit`] program text and
/// [`Arg`] values, like everything sent to a server.
pub trait Backend {
    /// The live export state as read back from the server.
    type Live;
    const NAME: &'static str;
    /// Shell assignment of `nfsprov_d` (dir), `nfsprov_f` (managed file) and `nfsprov_t` (its
    /// temporary twin, which the server software must ignore).
    const FILES: &'static str;
    /// The directory of the managed file (`nfsprov_d`), where the fence step keeps its lock and
    /// fence files ([`fence`]).
    const FENCE_DIR: &'static str;
    /// One export's entry in the managed file (a line, a block), ending without a newline or
    /// with one, as the format wants.
    fn entry(export: &Export) -> String;
    /// Shell functions the backend's steps use (program text only).
    fn prelude(_s: &mut Script) {}
    /// The command that makes the server load the managed file; exit status 2 means the NFS
    /// service is not running.
    const RELOAD: &'static str;
    /// Whether a btrfs volume's subvolume must be a mount point of its own to be exported
    /// (`nfsprov_svmount` / `nfsprov_svumount` in the backend's prelude).
    const MOUNTS_SUBVOLUMES: bool = false;
    /// Print the live export state (a `live` marker follows).
    fn read_live(s: &mut Script, plan: &Plan);
    fn parse_live(text: &str) -> Self::Live;
    /// What is wrong with `export` in the live state (empty: verified). `apply_output` is what
    /// the reload printed about this export (lines naming another volume's path or client are
    /// left out), to quote the server's own words.
    fn check_export(live: &Self::Live, export: &Export, apply_output: &str) -> Vec<String>;
    fn is_exported(live: &Self::Live, path: &str) -> bool;
    /// The volume a reload error line is about, if it names one.
    fn blame(line: &str, rendered: &Rendered, plan: &Plan) -> Option<VolumeId>;
    /// Whether a blamed reload error line is about the state of the server (a directory that
    /// is missing right now) rather than a verdict on the volume's request.
    fn transient(_line: &str) -> bool {
        false
    }
    /// The (path, entry text) of each entry in a managed file's text.
    fn entries_in(text: &str) -> Vec<(String, String)>;
}

/// Runs a pass with the backend a server's [`BackendKind`] names: the one place a kind meets
/// its implementation.
pub trait KindExt {
    fn prepare(self, plan: &Plan, force: bool, fence: Option<Fence>) -> Prepared;
    fn judge(self, plan: &Plan, prepared: &Prepared, out: &Output) -> Report;
    /// The fence of a script under lease `token` on a server of this kind.
    fn fence(self, token: i64) -> Fence;
}

impl KindExt for BackendKind {
    fn prepare(self, plan: &Plan, force: bool, fence: Option<Fence>) -> Prepared {
        match self {
            BackendKind::Knfsd => prepare::<Knfsd>(plan, force, fence),
            BackendKind::Ganesha => prepare::<Ganesha>(plan, force, fence),
        }
    }

    fn fence(self, token: i64) -> Fence {
        let dir = match self {
            BackendKind::Knfsd => Knfsd::FENCE_DIR,
            BackendKind::Ganesha => Ganesha::FENCE_DIR,
        };
        Fence { dir, token }
    }

    fn judge(self, plan: &Plan, prepared: &Prepared, out: &Output) -> Report {
        match self {
            BackendKind::Knfsd => judge::<Knfsd>(plan, prepared, out),
            BackendKind::Ganesha => judge::<Ganesha>(plan, prepared, out),
        }
    }
}

/// A pass ready to send.
pub struct Prepared {
    pub script: Script,
    pub rendered: Rendered,
    pub forced: bool,
    /// The lease the script runs under.
    pub fence: Option<Fence>,
}

/// What one pass found.
#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    /// The file was rejected and rolled back; the offending volumes are in `outcomes` as
    /// rejected, and a new pass must apply the rest.
    pub rerun: bool,
    /// Volumes the server refused in a rolled-back file: leave them out of the next pass.
    pub blamed: HashSet<VolumeId>,
    /// The file was unchanged but the live state did not match it: run again with a reload.
    pub force_next: bool,
    /// A server-wide failure no volume can be blamed for.
    pub server_error: Option<String>,
    /// The NFS service itself is not running (the reload said so with status 2).
    pub service_down: bool,
    /// Human-readable drift found and repaired.
    pub drift: Vec<String>,
    /// Volume directories whose mode or owner was changed on the server: the next pass puts
    /// them back ([`Plan::repair`]).
    pub repair: Vec<crate::plan::Dir>,
}

/// Header of every managed file.
pub const HEADER: &str =
    "# Managed by nfsprov: this file is rewritten from nfsprov's database; edits are undone.\n";

/// The managed file for a plan: the header, then each export's entry.
pub fn render<B: Backend>(plan: &Plan) -> Rendered {
    let mut r = Rendered {
        text: String::from(HEADER),
        ..Rendered::default()
    };
    let mut line = HEADER.lines().count();
    for e in plan.exports.iter().filter(|e| !e.clients.is_empty()) {
        let entry = B::entry(e);
        for _ in entry.lines() {
            line += 1;
            r.line_map.insert(line, e.volume);
        }
        r.text.push_str(&entry);
        if !entry.ends_with('\n') {
            r.text.push('\n');
        }
        r.entries.push((e.volume, entry));
    }
    r
}

/// Shell functions every pass uses (program text only; see the file for what each keeps).
pub const PRELUDE: &str = include_str!("prelude.sh");

/// `sub` split into its parent (possibly empty) and its last component.
fn split_sub(sub: &str) -> (&str, &str) {
    sub.rsplit_once('/').unwrap_or(("", sub))
}

/// Build the one script of a pass. `force` reloads even when the file is unchanged (to repair
/// a live state changed by hand). `fence`: the lease the pass runs under (always, from a
/// reconciler; `None` only in tests that judge captured outputs), checked first on the server.
pub fn prepare<B: Backend>(plan: &Plan, force: bool, fence: Option<Fence>) -> Prepared {
    let rendered = render::<B>(plan);
    let mut s = Script::new();
    if let Some(f) = &fence {
        fence::lines(&mut s, f);
    }
    s.line(&[Lit("umask 022; nfsprov_bad=0")]);
    s.line(&[Lit(PRELUDE)]);
    B::prelude(&mut s);
    let xfs_work = plan.create.iter().any(|d| d.layout == Layout::XfsProject)
        || plan.remove.iter().any(|r| r.layout == Layout::XfsProject);
    if xfs_work {
        s.line(&[Lit(xfs::FUNCTIONS)]);
    }
    let marker = |s: &Script, tag: &str| format!("@@{} {tag}", s.nonce());
    let del_mark = marker(&s, "del");
    for r in &plan.remove {
        let (parent, name) = split_sub(&r.sub);
        let id = r.volume.to_string();
        if r.layout == Layout::XfsProject {
            // The project's limit and id go first; the directory then goes as any other.
            s.line(&[
                Lit("nfsprov_xpoff"),
                Arg(&r.root),
                Arg(&r.sub),
                Arg(&id),
                Lit(if r.owned { "1" } else { "0" }),
            ]);
        }
        let trash_name = r.trash_path.rsplit('/').next().unwrap_or(&id);
        if B::MOUNTS_SUBVOLUMES {
            s.line(&[Lit("nfsprov_svumount"), Arg(&r.root), Arg(&r.sub)]);
        }
        s.line(&[
            Lit("nfsprov_rm"),
            Arg(&del_mark),
            Arg(&id),
            Arg(&r.root),
            Arg(parent),
            Arg(name),
            Lit(match r.policy {
                DeletePolicy::Retain => "retain",
                DeletePolicy::Purge => "purge",
            }),
            Arg(trash_name),
            Lit(if r.owned { "1" } else { "0" }),
            // Never exported (hootie's roll-back of a refused create): a directory holding
            // nothing but its mark is removed whatever the policy; data falls to the policy.
            Lit(if r.never_exported { "1" } else { "0" }),
        ]);
    }
    // Directories: one call per group of the same parent, owner and mode, so a storm of
    // creates costs a few process starts per group, not three per volume.
    let mut groups: BTreeMap<(&str, &str, u32, u32, &str), Vec<&crate::plan::Dir>> =
        BTreeMap::new();
    let mk_mark = marker(&s, "mk");
    for d in &plan.create {
        if d.layout != Layout::Directory {
            // btrfs: a subvolume each, created, limited and verified one by one
            // (`nfsprov_mksv`); xfs-project: a directory each, then its project and limit,
            // verified (`nfsprov_mkxp`).
            let btrfs = d.layout == Layout::Btrfs;
            let (parent, name) = split_sub(&d.sub);
            let owner = format!("{}:{}", d.uid, d.gid);
            let id = d.volume.to_string();
            let bytes = layout::qgroup_bytes(d.size_gb).to_string();
            let mut words = vec![
                Lit(if btrfs {
                    "nfsprov_mksv"
                } else {
                    "nfsprov_mkxp"
                }),
                Arg(&mk_mark),
                Arg(&d.root),
                Arg(parent),
                Arg(&owner),
                Arg(&d.mode),
                Arg(&id),
                Arg(name),
            ];
            if !btrfs {
                words.push(Lit(if d.adopt { "1" } else { "0" }));
            }
            words.push(Arg(&bytes));
            if let (true, Some((svid, sname))) = (btrfs, &d.restore) {
                words.push(Arg(svid));
                words.push(Arg(sname));
            }
            s.line(&words);
            continue;
        }
        groups
            .entry((
                d.root.as_str(),
                split_sub(&d.sub).0,
                d.uid,
                d.gid,
                d.mode.as_str(),
            ))
            .or_default()
            .push(d);
    }
    for ((root, parent, uid, gid, mode), dirs) in &groups {
        let owner = format!("{uid}:{gid}");
        // At most 200 per call: the shell rebuilds its argument list per name (quadratic).
        for chunk in dirs.chunks(200) {
            let ids: Vec<String> = chunk.iter().map(|d| d.volume.to_string()).collect();
            let mut words: Vec<Word> = vec![
                Lit("nfsprov_mkg"),
                Arg(&mk_mark),
                Arg(root),
                Arg(parent),
                Arg(&owner),
                Arg(mode),
            ];
            for (d, id) in chunk.iter().zip(&ids) {
                words.push(Arg(id));
                words.push(Arg(split_sub(&d.sub).1));
                words.push(Lit(if d.adopt { "1" } else { "0" }));
            }
            s.line(&words);
        }
    }
    // Every btrfs volume, new or not (a mount does not outlive a reboot), before the reload.
    if B::MOUNTS_SUBVOLUMES {
        for d in plan.create.iter().chain(&plan.owners) {
            if d.layout == Layout::Btrfs {
                s.line(&[Lit("nfsprov_svmount"), Arg(&d.root), Arg(&d.sub)]);
            }
        }
    }
    // Mode/owner drift found by the previous pass: put it back, never through a symbolic
    // link: nfsprov_in walks to the directory without following one and enters it, and
    // chown/chmod act on `.` (a subshell, so the cwd of the pass is untouched).
    for d in &plan.repair {
        let owner = format!("{}:{}", d.uid, d.gid);
        s.line(&[
            Lit("( nfsprov_in"),
            Arg(&d.root),
            Arg(&d.sub),
            Lit("&& chown -h --"),
            Arg(&owner),
            Lit(". && chmod --"),
            Arg(&d.mode),
            Lit(". ) 2>&1"),
        ]);
        s.marker_rc("fix", &d.volume.to_string());
    }
    // Write the whole file beside the real one and rename it into place (atomic), only if the
    // temporary copy was written in full: on a full disk nothing is installed or reloaded.
    // The old file is printed for drift logging and kept (hard link: no space needed) as .prev
    // to roll back a rejected file. Before anything is installed, every export path is
    // checked for symbolic links (exportfs would follow one).
    s.line(&[Lit(B::FILES), Lit("; nfsprov_w=0; nfsprov_chg=0")]);
    s.line(&[
        Lit("{ { [ -d \"$nfsprov_d\" ] || mkdir -p \"$nfsprov_d\"; } && printf '%s'"),
        Arg(&rendered.text),
        Lit("> \"$nfsprov_t\"; }; nfsprov_rc=$?; nfsprov_st $nfsprov_rc"),
    ]);
    s.marker_rc("tmp", "");
    s.line(&[Lit(
        "if [ $nfsprov_rc != 0 ]; then nfsprov_bad=1; elif ! cmp -s \"$nfsprov_t\" \"$nfsprov_f\"; then nfsprov_chg=1; fi",
    )]);
    s.line(&[
        Lit("if [ $nfsprov_chg = 1 ] || [ "),
        Arg(if force || plan.full { "1" } else { "0" }),
        Lit(" = 1 ]; then :"),
    ]);
    let sym_mark = marker(&s, "sym");
    for e in &plan.exports {
        if e.clients.is_empty() {
            continue;
        }
        let id = e.volume.to_string();
        s.line(&[
            Lit("  nfsprov_chk"),
            Arg(&sym_mark),
            Arg(&id),
            Arg(&e.root),
            Arg(&e.sub),
        ]);
    }
    s.line(&[Lit("fi")]);
    s.line(&[Lit("if [ $nfsprov_bad != 0 ]; then nfsprov_chg=0; fi")]);
    s.line(&[Lit("if [ $nfsprov_chg = 1 ]; then")]);
    s.line(&[Lit("  [ -e \"$nfsprov_f\" ] && cat \"$nfsprov_f\"")]);
    s.marker("old", "");
    s.line(&[Lit(
        "  { if [ -e \"$nfsprov_f\" ]; then ln -f \"$nfsprov_f\" \"$nfsprov_f.prev\" || cp -p \"$nfsprov_f\" \"$nfsprov_f.prev\"; else : > \"$nfsprov_f.prev\"; fi && mv -f \"$nfsprov_t\" \"$nfsprov_f\" && nfsprov_w=1; }",
    )]);
    s.marker_rc("inst", "");
    s.line(&[Lit("fi")]);
    s.line(&[Lit(
        "if [ -e \"$nfsprov_t\" ] || [ -L \"$nfsprov_t\" ]; then rm -f \"$nfsprov_t\"; fi",
    )]);
    s.line(&[
        Lit("if [ \"$nfsprov_w\" = 1 ] || { [ $nfsprov_bad = 0 ] && [ "),
        Arg(if force { "1" } else { "0" }),
        Lit(" = 1 ]; }; then"),
    ]);
    // Reload; if the server refuses a file written by this pass, put the previous one back.
    s.line(&[Lit("  "), Lit(B::RELOAD)]);
    s.line(&[Lit("  nfsprov_rc=$?")]);
    s.line(&[Lit("  nfsprov_st $nfsprov_rc")]);
    s.marker_rc("apply", "");
    s.line(&[
        Lit("  if [ \"$nfsprov_rc\" != 0 ] && [ \"$nfsprov_w\" = 1 ]; then mv -f \"$nfsprov_f.prev\" \"$nfsprov_f\";"),
        Lit(B::RELOAD),
        Lit(">/dev/null 2>&1"),
    ]);
    s.marker_rc("rollback", "");
    s.line(&[Lit("  fi")]);
    s.line(&[Lit("fi")]);
    B::read_live(&mut s, plan);
    s.marker("live", "");
    // Directories to check: all on a full pass, else only the ones this pass changes.
    let mut paths: Vec<&str> = plan
        .exports
        .iter()
        .filter(|e| plan.full || !e.was_available)
        .map(|e| e.path.as_str())
        .collect();
    paths.extend(plan.remove.iter().map(|r| r.path.as_str()));
    if !plan.full {
        paths.extend(plan.repair.iter().map(|d| d.path.as_str()));
    }
    for chunk in paths.chunks(500) {
        let mut words = vec![Lit("stat -c '%a %u %g %n' --")];
        words.extend(chunk.iter().map(|p| Arg(p)));
        words.push(Lit("2>/dev/null"));
        s.line(&words);
    }
    s.marker("stat", "");
    Prepared {
        script: s,
        rendered,
        forced: force,
        fence,
    }
}

fn parse_stat(text: &str) -> HashMap<String, (u32, u32, u32)> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let mut it = line.splitn(4, ' ');
        let (Some(mode), Some(uid), Some(gid), Some(path)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        if let (Ok(m), Ok(u), Ok(g)) = (u32::from_str_radix(mode, 8), uid.parse(), gid.parse()) {
            map.insert(path.to_string(), (m, u, g));
        }
    }
    map
}

/// Lines of server output, each with the volumes it names (by path, client host or the
/// backend's blame), so each volume is shown only what concerns it: another tenant's client
/// names and paths must never reach a volume's `last_error`.
struct Said {
    lines: Vec<(String, HashSet<VolumeId>)>,
    /// Lines naming no volume, then per volume the lines naming it alone.
    common: String,
    own: HashMap<VolumeId, String>,
}

impl Said {
    fn new<B: Backend>(text: &str, rendered: &Rendered, plan: &Plan) -> Said {
        let mut said = Said {
            lines: Vec::new(),
            common: String::new(),
            own: HashMap::new(),
        };
        if text.trim().is_empty() {
            return said;
        }
        let mut hosts: HashMap<String, Vec<VolumeId>> = HashMap::new();
        for e in &plan.exports {
            for c in &e.clients {
                let h = c.host.to_string();
                // `*` names no one.
                if h != "*" {
                    hosts.entry(h).or_default().push(e.volume);
                }
            }
        }
        let paths: Vec<(&str, VolumeId)> = plan
            .exports
            .iter()
            .map(|e| (e.path.as_str(), e.volume))
            .chain(plan.remove.iter().map(|r| (r.path.as_str(), r.volume)))
            .collect();
        said.lines = text
            .lines()
            .map(|line| {
                let mut named: HashSet<VolumeId> = HashSet::new();
                named.extend(B::blame(line, rendered, plan));
                for (path, id) in &paths {
                    if contains_word(line, path) {
                        named.insert(*id);
                    }
                }
                for (host, ids) in &hosts {
                    if contains_word(line, host) {
                        named.extend(ids.iter().copied());
                    }
                }
                (line.to_string(), named)
            })
            .collect();
        for (line, named) in &said.lines {
            let to = match named.len() {
                0 => &mut said.common,
                1 => said.own.entry(*named.iter().next().unwrap()).or_default(),
                _ => continue,
            };
            to.push_str(line);
            to.push('\n');
        }
        said
    }

    /// The lines that name no volume other than `id`.
    fn about(&self, id: VolumeId) -> String {
        match self.own.get(&id) {
            Some(own) => format!("{}{own}", self.common),
            None => self.common.clone(),
        }
    }

    /// The last lines that name no volume at all: text fit for every volume and the server.
    fn neutral(&self) -> String {
        let left_out = self.lines.len() - self.common.lines().count();
        let mut text = tail(&self.common);
        if left_out > 0 {
            text.push_str(&format!(
                " ({left_out} lines about individual volumes left out)"
            ));
        }
        text
    }
}

/// `word` occurs in `line` not as part of a longer name or path.
pub(crate) fn contains_word(line: &str, word: &str) -> bool {
    // A path ends at ':' ("/srv/a: No such file"); a host (IPv6) may go on with one. A path
    // may follow anything ("10.0.0.1:/srv/a"), a host only a separator.
    let is_path = word.starts_with('/');
    let part = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(c, '_' | '-' | '.' | '/' | '*' | '?')
            || (c == ':' && !is_path)
    };
    line.match_indices(word).any(|(pos, _)| {
        let before = line[..pos].chars().next_back();
        let after = line[pos + word.len()..].chars().next();
        (is_path || !before.is_some_and(part)) && !after.is_some_and(part)
    })
}

/// The volume a `vol-step` marker (`mk`, `sym`, `del`) is about.
fn marker_volume(sec: &crate::remote::Section) -> Option<VolumeId> {
    sec.arg.split(' ').next()?.parse().ok().map(VolumeId)
}

/// Judge a pass's output against its plan.
pub fn judge<B: Backend>(plan: &Plan, prepared: &Prepared, out: &Output) -> Report {
    let rendered = &prepared.rendered;
    let neutral = |text: &str| Said::new::<B>(text, rendered, plan).neutral();
    let mut report = Report::default();
    // Refused for its lease token, or the fence step failed: nothing else ran.
    if let Some(stored) = fence::refused(out) {
        let ours = prepared.fence.map_or(0, |f| f.token);
        report.server_error = Some(fence::refusal_message(stored, ours));
        return report;
    }
    if let Some(why) = fence::failed(out) {
        report.server_error = Some(format!(
            "the pass could not take the server's lock or store its lease token, so nothing was changed: {why}"
        ));
        return report;
    }
    // A pass stopped at its time limit is judged as a whole, even if it got past the read-back.
    let live_text = out
        .find("live", "")
        .map(|s| s.before.as_str())
        .filter(|_| !out.timed_out());
    let Some(live_text) = live_text else {
        let why = if out.timed_out() {
            "the pass ran out of time on the server and was stopped there"
        } else {
            "the server's reply was cut short (no live export state read back)"
        };
        report.server_error = Some(format!(
            "{why}: {}",
            neutral(
                &(out
                    .sections
                    .iter()
                    .map(|s| s.before.as_str())
                    .collect::<String>()
                    + &out.rest)
            )
        ));
        return report;
    };

    // The temporary copy of the file could not be written (disk full, ...): nothing was
    // installed or reloaded; the volumes wait and the server says why.
    if let Some(tmp) = out.find("tmp", "")
        && tmp.rc() != Some(0)
    {
        report.server_error = Some(format!(
            "writing the new {} exports file on the server failed (is its file system full?), so nothing was installed or reloaded: {}",
            B::NAME,
            neutral(&tmp.before)
        ));
        return report;
    }

    // Directories that could not be created safely, or exports whose path leads through a
    // symbolic link: the file was not installed; each such volume goes to `error` with the
    // script's reason and another pass runs without them. Not a verdict on the request (a
    // read-only file system, a link or directory in the way can all change): tried again on
    // every pass.
    let mut failed: HashMap<VolumeId, String> = HashMap::new();
    for sec in out
        .sections
        .iter()
        .filter(|s| s.tag == "mk" || s.tag == "sym")
    {
        if sec.rc() != Some(0)
            && let Some(id) = marker_volume(sec)
        {
            failed.entry(id).or_insert_with(|| tail(&sec.before));
        }
    }
    if !failed.is_empty() {
        for e in &plan.exports {
            if let Some(msg) = failed.remove(&e.volume) {
                report.blamed.insert(e.volume);
                report.outcomes.push(Outcome::Failed {
                    id: e.volume,
                    generation: e.generation,
                    message: msg,
                });
            }
        }
        for d in &plan.create {
            if let Some(msg) = failed.remove(&d.volume) {
                report.blamed.insert(d.volume);
                report.outcomes.push(Outcome::Failed {
                    id: d.volume,
                    generation: d.generation,
                    message: msg,
                });
            }
        }
        report.rerun = true;
        return report;
    }
    if let Some(inst) = out.find("inst", "")
        && inst.rc() != Some(0)
    {
        report.server_error = Some(format!(
            "installing the new {} exports file on the server failed, so nothing was reloaded: {}",
            B::NAME,
            neutral(&inst.before)
        ));
        return report;
    }
    let live = B::parse_live(live_text);
    let stats = parse_stat(out.find("stat", "").map_or("", |s| s.before.as_str()));

    // Reload failures, per volume, with whether each is a verdict on the volume's request
    // (the server refusing its entry) or about the server's state of the moment.
    let mut failed: HashMap<VolumeId, (String, bool)> = HashMap::new();
    // Reload failures: blame the volumes the messages name.
    let written = out.find("inst", "").is_some_and(|s| s.rc() == Some(0));
    let apply = out.find("apply", "");
    let apply_text = apply.map_or("", |s| s.before.as_str());
    let said = Said::new::<B>(apply_text, rendered, plan);
    if apply.is_some_and(|s| s.rc() != Some(0)) {
        let mut blamed = false;
        for line in apply_text.lines() {
            if let Some(vol) = B::blame(line, rendered, plan) {
                blamed = true;
                let msg = line.trim().to_string();
                let verdict = !B::transient(line);
                failed
                    .entry(vol)
                    .and_modify(|(m, v)| {
                        m.push_str("; ");
                        m.push_str(&msg);
                        *v |= verdict;
                    })
                    .or_insert((msg, verdict));
            }
        }
        if !blamed {
            report.service_down = apply.is_some_and(|s| s.rc() == Some(2));
            report.server_error = Some(format!("{} reload failed: {}", B::NAME, said.neutral()));
        }
        if written {
            // The previous file was restored; only the rejections are news.
            for e in &plan.exports {
                if let Some((msg, verdict)) = failed.remove(&e.volume) {
                    report.blamed.insert(e.volume);
                    report.outcomes.push(failure(
                        e.volume,
                        e.generation,
                        format!("the server rejected the export: {msg}"),
                        verdict,
                    ));
                }
            }
            report.rerun = report.server_error.is_none();
            return report;
        }
    }

    // Drift: entries of volumes that were already available but missing or changed on the
    // server, and entries nothing in the plan accounts for.
    if let Some(old) = out.find("old", "") {
        let old_entries = B::entries_in(&old.before);
        let old_texts: HashSet<&str> = old_entries.iter().map(|(_, e)| e.as_str()).collect();
        let was_available: HashSet<VolumeId> = plan
            .exports
            .iter()
            .filter(|e| e.was_available)
            .map(|e| e.volume)
            .collect();
        for (id, entry) in &rendered.entries {
            if was_available.contains(id) && !old_texts.contains(entry.as_str()) {
                report
                    .drift
                    .push(format!("restored export of volume {id}: {entry}"));
            }
        }
        let known: HashSet<&str> = plan
            .exports
            .iter()
            .map(|e| e.path.as_str())
            .chain(plan.remove.iter().map(|r| r.path.as_str()))
            .collect();
        for (path, entry) in &old_entries {
            if !known.contains(path.as_str()) {
                report
                    .drift
                    .push(format!("removed an entry nfsprov did not write: {entry}"));
            }
        }
    }

    let creates: HashMap<VolumeId, &crate::plan::Dir> =
        plan.create.iter().map(|d| (d.volume, d)).collect();
    let owners: HashMap<VolumeId, &crate::plan::Dir> =
        plan.owners.iter().map(|d| (d.volume, d)).collect();
    let repaired: HashSet<VolumeId> = plan.repair.iter().map(|d| d.volume).collect();
    let mut live_mismatch = false;
    for e in &plan.exports {
        if !e.is_desired {
            continue;
        }
        if let Some((msg, verdict)) = failed.remove(&e.volume) {
            report
                .outcomes
                .push(failure(e.volume, e.generation, msg, verdict));
            continue;
        }
        let mut problems = Vec::new();
        if (plan.full || !e.was_available) && !stats.contains_key(&e.path) {
            problems.push(format!("directory {} does not exist on the server", e.path));
        }
        let wanted = creates
            .get(&e.volume)
            .copied()
            .or(owners.get(&e.volume).copied());
        if let Some(d) = wanted
            && let Some(&(mode, uid, gid)) = stats.get(&e.path)
        {
            let want = u32::from_str_radix(&d.mode, 8).unwrap_or(0);
            if mode != want || uid != d.uid || gid != d.gid {
                let found = format!(
                    "directory {} has mode {:o} owner {}:{}, expected {:o} {}:{}",
                    e.path, mode, uid, gid, want, d.uid, d.gid
                );
                if creates.contains_key(&e.volume) || repaired.contains(&e.volume) {
                    problems.push(found);
                } else {
                    // Changed by hand since it was verified: put it back (next pass).
                    report.drift.push(format!("{found}; restoring"));
                    report.repair.push(d.clone());
                }
            }
        }
        let live_problems = B::check_export(&live, e, &said.about(e.volume));
        live_mismatch |= !live_problems.is_empty();
        problems.extend(live_problems);
        if problems.is_empty() {
            if e.was_available {
                // Already recorded as available with these clients: nothing to write.
                continue;
            }
            report.outcomes.push(Outcome::Applied {
                id: e.volume,
                generation: e.generation,
                clients: clients_to_json(&e.clients),
            });
        } else {
            // What the server shows now, not a verdict on the request: checked again every
            // pass, and the volume recovers when the server matches.
            report.outcomes.push(Outcome::Failed {
                id: e.volume,
                generation: e.generation,
                message: format!("verification failed: {}", problems.join("; ")),
            });
        }
    }
    // Volumes withheld because their directory could not be created, etc.
    for d in &plan.create {
        if let Some((msg, verdict)) = failed.remove(&d.volume) {
            report
                .outcomes
                .push(failure(d.volume, d.generation, msg, verdict));
        }
    }

    if live_mismatch && !written && !prepared.forced && apply.is_none() {
        // The file was already right but the live state is not: reload before judging.
        report
            .outcomes
            .retain(|o| !matches!(o, Outcome::Rejected { .. } | Outcome::Failed { .. }));
        report.force_next = true;
        report
            .drift
            .push("live exports did not match the managed file; reloading".into());
        return report;
    }

    let del_steps = out.by_first_arg("del");
    for r in &plan.remove {
        let step = del_steps.get(r.volume.to_string().as_str()).copied();
        let ok_step = step.is_some_and(|s| s.rc() == Some(0) || s.rc() == Some(3));
        // Status 3: the directory there was never the volume's and stays.
        let not_ours = step.is_some_and(|s| s.rc() == Some(3));
        let gone = not_ours || !stats.contains_key(&r.path);
        let unexported = !B::is_exported(&live, &r.path);
        if ok_step && gone && unexported {
            report.outcomes.push(Outcome::Deleted {
                id: r.volume,
                generation: r.generation,
            });
        } else {
            let why = if !ok_step {
                format!(
                    "removing {} failed: {}",
                    r.path,
                    tail(step.map_or("", |s| s.before.as_str()))
                )
            } else if !unexported {
                format!("{} is still exported", r.path)
            } else {
                format!("{} still exists", r.path)
            };
            report.outcomes.push(Outcome::Pending {
                id: r.volume,
                generation: r.generation,
                message: why,
            });
        }
    }
    report
}

/// A verdict on the volume's request (final for its generation), or a failure of the moment
/// (re-verified every pass).
fn failure(id: VolumeId, generation: i64, message: String, verdict: bool) -> Outcome {
    if verdict {
        Outcome::Rejected {
            id,
            generation,
            message,
        }
    } else {
        Outcome::Failed {
            id,
            generation,
            message,
        }
    }
}

/// The last lines of some output, on one line.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    let start = lines.len().saturating_sub(5);
    let joined = lines[start..].join(" | ");
    if joined.is_empty() {
        "no output".into()
    } else {
        joined
    }
}

/// Blame by path: the export whose path the line names (longest match, at a path boundary).
pub fn blame_by_path(line: &str, plan: &Plan) -> Option<VolumeId> {
    let mut best: Option<(usize, VolumeId)> = None;
    for e in &plan.exports {
        if let Some(pos) = line.find(e.path.as_str()) {
            let after = line[pos + e.path.len()..].chars().next();
            let boundary = !matches!(after, Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' || c == '/');
            if boundary && best.is_none_or(|(len, _)| e.path.len() > len) {
                best = Some((e.path.len(), e.volume));
            }
        }
    }
    best.map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing() {
        let s = parse_stat("2775 10 20 /srv/pool/a\nbad line\n");
        assert_eq!(s["/srv/pool/a"], (0o2775, 10, 20));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn words_match_whole_names_only() {
        let line = "exportfs: Failed to resolve bob-secret-host.test";
        assert!(!contains_word(line, "secret-host.test"));
        assert!(contains_word(line, "bob-secret-host.test"));
        assert!(contains_word("Failed to resolve db", "db"));
        assert!(!contains_word("Failed to resolve db2", "db"));
        assert!(!contains_word(
            "Failed to stat /srv/pool/a-b: x",
            "/srv/pool/a"
        ));
        assert!(contains_word(
            "Failed to stat /srv/pool/a: x",
            "/srv/pool/a"
        ));
        assert!(contains_word("\"10.0.0.1:/srv/pool/a\"", "/srv/pool/a"));
        assert!(!contains_word("10.0.0.10", "10.0.0.1"));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(""), "no output");
        assert_eq!(tail("a\nb\nc\nd\ne\nf\ng\n"), "c | d | e | f | g");
    }
}
