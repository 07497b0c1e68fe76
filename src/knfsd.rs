//! The kernel-NFS backend: nfsprov's exports live in one file of its own,
//! `/etc/exports.d/nfsprov.exports`, written whole to a temporary file and renamed into place,
//! then `exportfs -ra`; the result is verified by reading `/var/lib/nfs/etab` back. Nothing else
//! on the server is written.
//!
//! One reconcile pass is one [`Script`]: removals, directory creation, the exports file, exportfs
//! and the read-back, all in one round trip. Every step is idempotent, so a pass cut short at
//! any point is finished by the next one.

use std::collections::{HashMap, HashSet};

use crate::datastore::Outcome;
use crate::model::{DeletePolicy, VolumeId, clients_to_json};
use crate::plan::Plan;
use crate::remote::{Arg, Lit, Output, Script};

pub const EXPORTS_FILE: &str = "/etc/exports.d/nfsprov.exports";
pub const ETAB: &str = "/var/lib/nfs/etab";
const HEADER: &str =
    "# Managed by nfsprov: this file is rewritten from nfsprov's database; edits are undone.\n";

/// The managed exports file for a plan, and which volume each line belongs to (1-based).
pub fn render(plan: &Plan) -> (String, HashMap<usize, VolumeId>) {
    let mut text = String::from(HEADER);
    let mut lines = HashMap::new();
    let mut n = HEADER.lines().count();
    for e in &plan.exports {
        if e.clients.is_empty() {
            continue;
        }
        n += 1;
        text.push_str(&export_line(&e.path, &e.clients));
        text.push('\n');
        lines.insert(n, e.volume);
    }
    (text, lines)
}

fn export_line(path: &str, clients: &[crate::model::ClientRule]) -> String {
    let mut line = path.to_string();
    for c in clients {
        line.push(' ');
        line.push_str(&format!("{}({})", c.host, c.options.with_defaults()));
    }
    line
}

/// Build the one script of a pass. `force_exportfs` re-runs `exportfs -ra` even when the file is
/// unchanged (to repair an export table changed by hand).
pub fn script(plan: &Plan, content: &str, force_exportfs: bool) -> Script {
    let mut s = Script::new();
    s.line(&[Lit("umask 022")]);
    for r in &plan.remove {
        let id = r.volume.to_string();
        match r.policy {
            DeletePolicy::Retain => {
                s.line(&[
                    Lit("if [ -e"),
                    Arg(&r.path),
                    Lit("] || [ -L"),
                    Arg(&r.path),
                    Lit("]; then mkdir -p --"),
                    Arg(&r.trash_dir),
                    Lit("&& mv -T --"),
                    Arg(&r.path),
                    Arg(&r.trash_path),
                    Lit("; fi"),
                ]);
            }
            DeletePolicy::Purge => {
                s.line(&[Lit("rm -rf --"), Arg(&r.path)]);
            }
        }
        s.marker_rc("del", &id);
    }
    for d in &plan.create {
        let owner = format!("{}:{}", d.uid, d.gid);
        s.line(&[
            Lit("mkdir -p --"),
            Arg(&d.path),
            Lit("&& chown --"),
            Arg(&owner),
            Arg(&d.path),
            Lit("&& chmod --"),
            Arg(&d.mode),
            Arg(&d.path),
        ]);
        s.marker_rc("mk", &d.volume.to_string());
    }
    // Write the whole file beside the real one and rename it into place (atomic). The old file
    // is printed for drift logging and kept as .prev to roll back a rejected file.
    s.line(&[Lit("nfsprov_f=/etc/exports.d/nfsprov.exports; nfsprov_t=/etc/exports.d/.nfsprov.exports.tmp; nfsprov_w=0")]);
    s.line(&[
        Lit("mkdir -p /etc/exports.d && printf '%s'"),
        Arg(content),
        Lit("> \"$nfsprov_t\""),
    ]);
    s.marker_rc("tmp", "");
    s.line(&[Lit(
        "if cmp -s \"$nfsprov_t\" \"$nfsprov_f\"; then rm -f \"$nfsprov_t\"; else",
    )]);
    s.line(&[Lit("  [ -e \"$nfsprov_f\" ] && cat \"$nfsprov_f\"")]);
    s.marker("old", "");
    s.line(&[Lit("  if [ -e \"$nfsprov_f\" ]; then cp -p \"$nfsprov_f\" \"$nfsprov_f.prev\"; else : > \"$nfsprov_f.prev\"; fi")]);
    s.line(&[Lit("  mv -f \"$nfsprov_t\" \"$nfsprov_f\" && nfsprov_w=1")]);
    s.line(&[Lit("fi")]);
    let force = if force_exportfs { "1" } else { "0" };
    s.line(&[
        Lit("if [ \"$nfsprov_w\" = 1 ] || [ "),
        Arg(force),
        Lit(" = 1 ]; then"),
    ]);
    s.line(&[Lit("  exportfs -ra")]);
    s.line(&[Lit("  nfsprov_rc=$?")]);
    s.line(&[Lit("  (exit $nfsprov_rc)")]);
    s.marker_rc("exportfs", "");
    s.line(&[Lit("  if [ \"$nfsprov_rc\" != 0 ] && [ \"$nfsprov_w\" = 1 ]; then mv -f \"$nfsprov_f.prev\" \"$nfsprov_f\"; exportfs -ra >/dev/null 2>&1")]);
    s.marker_rc("rollback", "");
    s.line(&[Lit("  fi")]);
    s.line(&[Lit("fi")]);
    s.line(&[Lit("cat /var/lib/nfs/etab")]);
    s.marker("etab", "");
    let mut paths: Vec<&str> = plan.exports.iter().map(|e| e.path.as_str()).collect();
    paths.extend(plan.remove.iter().map(|r| r.path.as_str()));
    for chunk in paths.chunks(500) {
        let mut words = vec![Lit("stat -c '%a %u %g %n' --")];
        words.extend(chunk.iter().map(|p| Arg(p)));
        words.push(Lit("2>/dev/null"));
        s.line(&words);
    }
    s.marker("stat", "");
    s
}

/// What one pass found.
#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    /// The file was rejected and rolled back; the offending volumes are in `outcomes` as
    /// rejected, and a new pass must apply the rest.
    pub rerun: bool,
    /// Volumes exportfs refused in a rolled-back file: leave them out of the next pass.
    pub blamed: HashSet<VolumeId>,
    /// The file was unchanged but the export table did not match it: run again with exportfs.
    pub force_next: bool,
    /// A server-wide failure no volume can be blamed for.
    pub server_error: Option<String>,
    /// Human-readable drift found and repaired.
    pub drift: Vec<String>,
}

type EtabMap = HashMap<(String, String), HashSet<String>>;

fn parse_etab(text: &str) -> EtabMap {
    let mut map = EtabMap::new();
    for line in text.lines() {
        let Some((path, rest)) = line.split_once('\t') else {
            continue;
        };
        let Some((client, opts)) = rest.split_once('(') else {
            continue;
        };
        let opts = opts.trim_end_matches(')');
        map.entry((path.to_string(), client.to_string()))
            .or_default()
            .extend(opts.split(',').map(str::to_string));
    }
    map
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

/// Judge a pass's output against its plan.
pub fn interpret(
    plan: &Plan,
    line_map: &HashMap<usize, VolumeId>,
    out: &Output,
    forced: bool,
) -> Report {
    let mut report = Report::default();
    let section_text = |tag: &str| out.find(tag, "").map(|s| s.before.clone());

    let Some(etab_text) = section_text("etab") else {
        report.server_error = Some(format!(
            "the server's reply was cut short (no export table read back): {}",
            tail(
                &out.sections
                    .iter()
                    .map(|s| s.before.as_str())
                    .collect::<String>()
            )
        ));
        return report;
    };
    let etab = parse_etab(&etab_text);
    let stats = parse_stat(&section_text("stat").unwrap_or_default());

    // Directory creation failures: the server's own message, per volume.
    let mut failed: HashMap<VolumeId, String> = HashMap::new();
    for d in &plan.create {
        if let Some(sec) = out.find("mk", &d.volume.to_string())
            && sec.rc() != Some(0)
        {
            failed.insert(
                d.volume,
                format!("creating {} failed: {}", d.path, tail(&sec.before)),
            );
        }
    }

    // exportfs failures: blame the volumes whose lines or paths the messages name.
    let written = out.find("old", "").is_some();
    let exportfs = out.find("exportfs", "");
    let exportfs_failed = exportfs.is_some_and(|s| s.rc() != Some(0));
    if exportfs_failed {
        let text = exportfs.map(|s| s.before.clone()).unwrap_or_default();
        let mut blamed = false;
        for line in text.lines() {
            if let Some(vol) = blame_line(line, line_map, plan) {
                blamed = true;
                let msg = line.trim().to_string();
                failed
                    .entry(vol)
                    .and_modify(|m| {
                        m.push_str("; ");
                        m.push_str(&msg)
                    })
                    .or_insert(msg);
            }
        }
        if !blamed {
            report.server_error = Some(format!("exportfs -ra failed: {}", tail(&text)));
        }
        if written {
            // The previous file was restored; only the rejections are news.
            for e in &plan.exports {
                if let Some(msg) = failed.remove(&e.volume) {
                    report.blamed.insert(e.volume);
                    report.outcomes.push(Outcome::Rejected {
                        id: e.volume,
                        generation: e.generation,
                        message: format!("the server rejected the export: {msg}"),
                    });
                }
            }
            report.rerun = report.server_error.is_none();
            return report;
        }
    }

    // Drift: lines of volumes that were already available but missing or changed on the server,
    // and lines nothing in the plan accounts for.
    if let Some(old) = out.find("old", "") {
        let old_lines: HashSet<&str> = old.before.lines().collect();
        for e in plan.exports.iter().filter(|e| e.was_available) {
            let line = export_line(&e.path, &e.clients);
            if !old_lines.contains(line.as_str()) {
                report
                    .drift
                    .push(format!("restored export of volume {}: {line}", e.volume));
            }
        }
        let known: HashSet<&str> = plan
            .exports
            .iter()
            .map(|e| e.path.as_str())
            .chain(plan.remove.iter().map(|r| r.path.as_str()))
            .collect();
        for l in old
            .before
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let path = l.split_whitespace().next().unwrap_or_default();
            if !known.contains(path) {
                report
                    .drift
                    .push(format!("removed a line nfsprov did not write: {l}"));
            }
        }
    }

    let exportfs_text = exportfs.map(|s| s.before.as_str()).unwrap_or("");
    let mut table_mismatch = false;
    for e in &plan.exports {
        if !e.is_desired {
            continue;
        }
        if let Some(msg) = failed.remove(&e.volume) {
            report.outcomes.push(Outcome::Rejected {
                id: e.volume,
                generation: e.generation,
                message: msg,
            });
            continue;
        }
        let mut problems = Vec::new();
        if !stats.contains_key(&e.path) {
            problems.push(format!("directory {} does not exist on the server", e.path));
        }
        if let Some(d) = plan.create.iter().find(|d| d.volume == e.volume)
            && let Some(&(mode, uid, gid)) = stats.get(&e.path)
        {
            let want = u32::from_str_radix(&d.mode, 8).unwrap_or(0);
            if mode != want || uid != d.uid || gid != d.gid {
                problems.push(format!(
                    "directory {} has mode {:o} owner {}:{}, expected {:o} {}:{}",
                    e.path, mode, uid, gid, want, d.uid, d.gid
                ));
            }
        }
        for c in &e.clients {
            let key = (e.path.clone(), c.host.to_string());
            match etab.get(&key) {
                None => {
                    table_mismatch = true;
                    let host = c.host.to_string();
                    let said: Vec<&str> = exportfs_text
                        .lines()
                        .filter(|l| l.contains(&host))
                        .collect();
                    let said = if said.is_empty() {
                        String::new()
                    } else {
                        format!(" (exportfs said: {})", said.join(" | ").trim())
                    };
                    problems.push(format!(
                        "{ETAB} has no entry for {}:{} after exportfs{said}",
                        c.host, e.path
                    ))
                }
                Some(opts) => {
                    let missing: Vec<String> = c
                        .options
                        .with_defaults()
                        .etab_tokens()
                        .into_iter()
                        .filter(|t| !opts.contains(t))
                        .collect();
                    if !missing.is_empty() {
                        table_mismatch = true;
                        problems.push(format!(
                            "{ETAB} entry for {}:{} lacks {}",
                            c.host,
                            e.path,
                            missing.join(",")
                        ));
                    }
                }
            }
        }
        if problems.is_empty() {
            report.outcomes.push(Outcome::Applied {
                id: e.volume,
                generation: e.generation,
                clients: clients_to_json(&e.clients),
            });
        } else {
            report.outcomes.push(Outcome::Rejected {
                id: e.volume,
                generation: e.generation,
                message: format!("verification failed: {}", problems.join("; ")),
            });
        }
    }
    // Volumes withheld because their directory could not be created, etc.
    for d in &plan.create {
        if let Some(msg) = failed.remove(&d.volume) {
            report.outcomes.push(Outcome::Rejected {
                id: d.volume,
                generation: d.generation,
                message: msg,
            });
        }
    }

    if table_mismatch && !written && !forced && exportfs.is_none() {
        // The file was already right but the kernel table is not: re-export before judging.
        report
            .outcomes
            .retain(|o| !matches!(o, Outcome::Rejected { .. }));
        report.force_next = true;
        report
            .drift
            .push("export table did not match the exports file; re-exporting".into());
        return report;
    }

    let exported_paths: HashSet<&str> = etab.keys().map(|(p, _)| p.as_str()).collect();
    for r in &plan.remove {
        let step = out.find("del", &r.volume.to_string());
        let ok_step = step.is_some_and(|s| s.rc() == Some(0));
        let gone = !stats.contains_key(&r.path);
        let unexported = !exported_paths.contains(r.path.as_str());
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
                    tail(&step.map(|s| s.before.clone()).unwrap_or_default())
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

/// Which volume an exportfs message is about: by `file:line`, else by the volume's path.
fn blame_line(line: &str, line_map: &HashMap<usize, VolumeId>, plan: &Plan) -> Option<VolumeId> {
    if let Some(pos) = line.find("nfsprov.exports:") {
        let rest = &line[pos + "nfsprov.exports:".len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse::<usize>()
            && let Some(v) = line_map.get(&n)
        {
            return Some(*v);
        }
    }
    if let Some(pos) = line.find("nfsprov.exports [") {
        let rest = &line[pos + "nfsprov.exports [".len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse::<usize>()
            && let Some(v) = line_map.get(&n)
        {
            return Some(*v);
        }
    }
    // Longest path first, so /a/bc is not blamed for /a/b's message.
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

fn tail(text: &str) -> String {
    let t = text.trim();
    let lines: Vec<&str> = t.lines().collect();
    let start = lines.len().saturating_sub(5);
    let joined = lines[start..].join(" | ");
    if joined.is_empty() {
        "no output".into()
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::spec::{ClientSpec, DirMode, ExportOptions, RootDir, SubPath};

    fn vol(id: i64, sub: &str, state: VolumeState, clients: &[(&str, &str)]) -> Volume {
        let clients: Vec<ClientRule> = clients
            .iter()
            .map(|(h, o)| ClientRule {
                host: ClientSpec::parse(h).unwrap(),
                options: ExportOptions::parse(o).unwrap(),
            })
            .collect();
        Volume {
            id: VolumeId(id),
            owner_id: UserId(1),
            owner: "alice".into(),
            root_path_id: RootPathId(1),
            root_path: RootDir::parse("/srv/pool").unwrap(),
            delete_policy: DeletePolicy::Retain,
            server_id: ServerId(1),
            nfs_address: "nfs1".into(),
            sub_path: SubPath::parse(sub).unwrap(),
            size_gb: 1,
            applied_clients: (state == VolumeState::Available).then(|| clients.clone()),
            clients,
            mode: DirMode::default(),
            uid: 0,
            gid: 0,
            state,
            generation: 1,
            failed_generation: None,
            last_error: None,
            created_at: Default::default(),
            updated_at: Default::default(),
        }
    }

    #[test]
    fn render_is_stable_and_maps_lines_to_volumes() {
        let vols = vec![
            vol(
                2,
                "b",
                VolumeState::Creating,
                &[("10.0.0.0/24", "ro"), ("*", "rw,async")],
            ),
            vol(1, "a", VolumeState::Available, &[("host1.test", "rw")]),
            vol(3, "c", VolumeState::Deleting, &[("*", "rw")]),
        ];
        let plan = Plan::build(&vols);
        let (text, lines) = render(&plan);
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            body,
            [
                "/srv/pool/a host1.test(rw,sync,no_subtree_check)",
                "/srv/pool/b 10.0.0.0/24(ro,sync,no_subtree_check) *(rw,async,no_subtree_check)",
            ]
        );
        assert_eq!(lines[&2], VolumeId(1));
        assert_eq!(lines[&3], VolumeId(2));
        assert_eq!(plan.remove.len(), 1);
        assert_eq!(
            plan.create.len(),
            1,
            "only the never-applied volume gets a mkdir"
        );
    }

    #[test]
    fn rejected_generation_falls_back_to_last_good_clients() {
        let mut v = vol(1, "a", VolumeState::Error, &[("10.0.0.1", "rw")]);
        v.applied_clients = Some(vec![ClientRule {
            host: ClientSpec::parse("10.0.0.2").unwrap(),
            options: ExportOptions::parse("ro").unwrap(),
        }]);
        v.failed_generation = Some(1);
        let plan = Plan::build(&[v.clone()]);
        assert!(!plan.exports[0].is_desired);
        assert_eq!(plan.exports[0].clients[0].host.to_string(), "10.0.0.2");
        v.applied_clients = None;
        let plan = Plan::build(&[v]);
        assert!(plan.exports.is_empty());
        assert_eq!(plan.withheld, vec![VolumeId(1)]);
    }

    #[test]
    fn exportfs_messages_are_blamed_on_the_right_volume() {
        let vols = vec![
            vol(1, "a", VolumeState::Creating, &[("*", "rw")]),
            vol(2, "a-b", VolumeState::Creating, &[("*", "rw")]),
        ];
        let plan = Plan::build(&vols);
        let (_, lines) = render(&plan);
        let by_line = "exportfs: /etc/exports.d/nfsprov.exports:3: unknown keyword \"foo\"";
        assert_eq!(blame_line(by_line, &lines, &plan), Some(VolumeId(2)));
        let by_path = "exportfs: Failed to stat /srv/pool/a-b: No such file or directory";
        assert_eq!(blame_line(by_path, &lines, &plan), Some(VolumeId(2)));
        let by_path = "exportfs: Failed to stat /srv/pool/a: No such file or directory";
        assert_eq!(blame_line(by_path, &lines, &plan), Some(VolumeId(1)));
        assert_eq!(blame_line("exportfs: something else", &lines, &plan), None);
    }

    #[test]
    fn etab_and_stat_parsing() {
        let etab = "/srv/pool/a\t10.0.0.1(rw,sync,wdelay)\n/srv/pool/a\t*.x(ro)\ngarbage\n";
        let m = parse_etab(etab);
        assert!(m[&("/srv/pool/a".into(), "10.0.0.1".into())].contains("rw"));
        assert!(m[&("/srv/pool/a".into(), "*.x".into())].contains("ro"));
        assert_eq!(m.len(), 2);
        let s = parse_stat("2775 10 20 /srv/pool/a\nbad line\n");
        assert_eq!(s["/srv/pool/a"], (0o2775, 10, 20));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn script_quotes_every_value() {
        let vols = vec![vol(1, "a", VolumeState::Creating, &[("*", "rw")])];
        let plan = Plan::build(&vols);
        let (text, _) = render(&plan);
        let script = script(&plan, &text, false);
        let body = &script.framed();
        assert!(body.contains("mkdir -p -- '/srv/pool/a' && chown -- '0:0' '/srv/pool/a'"));
        assert!(body.contains("printf '%s' '# Managed by nfsprov"));
    }
}
