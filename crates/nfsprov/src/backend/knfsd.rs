//! The kernel-NFS backend: nfsprov's exports live in one file of its own,
//! `/etc/exports.d/nfsprov.exports`; `exportfs -ra` loads it and the result is verified by
//! reading `/var/lib/nfs/etab` back. Nothing else on the server is written; lines in
//! `/etc/exports` and other files are never touched.

use std::collections::HashMap;

use super::{Backend, Rendered, blame_by_path};
use crate::model::{BackendKind, ClientRule, VolumeId};
use crate::plan::{Export, Plan};
use crate::remote::{Lit, Script};

pub const EXPORTS_FILE: &str = "/etc/exports.d/nfsprov.exports";
pub const ETAB: &str = "/var/lib/nfs/etab";

pub struct Knfsd;

/// (path, client) -> options as exportfs wrote them to etab (comma-separated; kept as one
/// string: a 10,000-export table would otherwise be ~170,000 small allocations per pass).
pub type Etab = HashMap<(String, String), String>;

fn export_line(path: &str, clients: &[ClientRule]) -> String {
    let mut line = path.to_string();
    for c in clients {
        line.push(' ');
        line.push_str(&format!("{}({})", c.host, c.options.with_defaults()));
    }
    line
}

impl Backend for Knfsd {
    type Live = Etab;
    const NAME: &'static str = BackendKind::Knfsd.as_str();
    // exportfs reads only `*.exports` in /etc/exports.d, so the temporary twin is ignored.
    const FILES: &'static str = "nfsprov_d=/etc/exports.d; nfsprov_f=/etc/exports.d/nfsprov.exports; nfsprov_t=/etc/exports.d/.nfsprov.exports.tmp";

    const FENCE_DIR: &'static str = "/etc/exports.d";

    const RELOAD: &'static str = "exportfs -ra";

    fn entry(e: &Export) -> String {
        export_line(&e.path, &e.clients)
    }

    fn read_live(s: &mut Script, _plan: &Plan) {
        s.line(&[Lit("cat /var/lib/nfs/etab")]);
    }

    fn parse_live(text: &str) -> Etab {
        let mut map = Etab::new();
        for line in text.lines() {
            let Some((path, rest)) = line.split_once('\t') else {
                continue;
            };
            let Some((client, opts)) = rest.split_once('(') else {
                continue;
            };
            let opts = opts.trim_end_matches(')');
            let entry = map
                .entry((path.to_string(), client.to_string()))
                .or_default();
            if !entry.is_empty() {
                entry.push(',');
            }
            entry.push_str(opts);
        }
        map
    }

    fn check_export(etab: &Etab, e: &Export, apply_output: &str) -> Vec<String> {
        let mut problems = Vec::new();
        for c in &e.clients {
            let host = c.host.to_string();
            match etab.get(&(e.path.clone(), host.clone())) {
                None => {
                    // exportfs exits 0 when it cannot resolve a client but leaves it out:
                    // quote what it said about that client.
                    let said: Vec<&str> = apply_output
                        .lines()
                        .filter(|l| super::contains_word(l, &host))
                        .collect();
                    let said = if said.is_empty() {
                        String::new()
                    } else {
                        format!(" (exportfs said: {})", said.join(" | ").trim())
                    };
                    problems.push(format!(
                        "{ETAB} has no entry for {host}:{} after exportfs{said}",
                        e.path
                    ));
                }
                Some(opts) => {
                    let missing: Vec<String> = c
                        .options
                        .with_defaults()
                        .etab_tokens()
                        .into_iter()
                        .filter(|t| !opts.split(',').any(|o| o == t))
                        .collect();
                    if !missing.is_empty() {
                        problems.push(format!(
                            "{ETAB} entry for {host}:{} lacks {}",
                            e.path,
                            missing.join(",")
                        ));
                    }
                }
            }
        }
        problems
    }

    fn is_exported(etab: &Etab, path: &str) -> bool {
        etab.keys().any(|(p, _)| p == path)
    }

    /// By `file:line` (`/etc/exports.d/nfsprov.exports:3:`, `... [3]:`, `...: 3:`), else by
    /// path. Only nfsprov's own file counts, by its full name: a line of a foreign file such
    /// as `old-nfsprov.exports` is nobody's. exportfs numbers lines without counting comment
    /// lines (blank ones do count), so the header is skipped.
    fn blame(line: &str, rendered: &Rendered, plan: &Plan) -> Option<VolumeId> {
        if let Some(n) = exportfs_line_number(line) {
            let physical = rendered
                .text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim_start().starts_with('#'))
                .nth(n.checked_sub(1)?)
                .map(|(i, _)| i + 1)?;
            return rendered.line_map.get(&physical).copied();
        }
        if mentions_other_file(line) {
            return None;
        }
        blame_by_path(line, plan)
    }

    /// "Failed to stat <dir>": the directory is missing now (removed by hand, a file system
    /// not mounted); the volume recovers when it is back.
    fn transient(line: &str) -> bool {
        line.contains("Failed to stat")
    }

    fn entries_in(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let path = l.split_whitespace().next().unwrap_or_default().to_string();
                (path, l.to_string())
            })
            .collect()
    }
}

/// The line number in an exportfs message about nfsprov's own file.
fn exportfs_line_number(line: &str) -> Option<usize> {
    let mut at = 0;
    while let Some(pos) = line[at..].find(EXPORTS_FILE) {
        let start = at + pos;
        at = start + EXPORTS_FILE.len();
        if line[..start]
            .chars()
            .next_back()
            .is_some_and(|c| !c.is_whitespace() && c != '"' && c != '\'')
        {
            continue;
        }
        let rest = line[at..].trim_start_matches([':', ' ', '[']);
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse() {
            return Some(n);
        }
    }
    None
}

/// The line is about an exports file other than nfsprov's (`/etc/exports`, another file in
/// `/etc/exports.d`).
fn mentions_other_file(line: &str) -> bool {
    line.split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .any(|w| {
            let w = w.split([':', '[']).next().unwrap_or_default();
            (w == "/etc/exports" || w.starts_with("/etc/exports.d/")) && w != EXPORTS_FILE
        })
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
            layout: crate::model::Layout::Directory,
            server_id: ServerId(1),
            nfs_address: "nfs1".into(),
            sub_path: SubPath::parse(sub).unwrap(),
            size_gb: 1,
            applied_clients: (state == VolumeState::Available).then(|| clients.clone()),
            clients,
            mode: DirMode::default(),
            uid: 0,
            gid: 0,
            adopt_existing: false,
            state,
            export_id: id as u32,
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
        let r = super::super::render::<Knfsd>(&plan);
        let (text, lines) = (r.text, r.line_map);
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
        let r = super::super::render::<Knfsd>(&plan);
        // exportfs does not count the header comment: its line 2 is the file's third.
        let by_line = "exportfs: /etc/exports.d/nfsprov.exports:2: unknown keyword \"foo\"";
        assert_eq!(Knfsd::blame(by_line, &r, &plan), Some(VolumeId(2)));
        let by_line = "exportfs: /etc/exports.d/nfsprov.exports: 1: bad anonuid \"x\"";
        assert_eq!(Knfsd::blame(by_line, &r, &plan), Some(VolumeId(1)));
        let warning = "exportfs: /etc/exports.d/nfsprov.exports [2]: Neither 'subtree_check'";
        assert_eq!(Knfsd::blame(warning, &r, &plan), Some(VolumeId(2)));
        // Another file's line is nobody's, even if its name ends like nfsprov's or it names
        // a volume's path.
        let foreign = "exportfs: /etc/exports.d/old-nfsprov.exports:2: unknown keyword \"zzz\"";
        assert_eq!(Knfsd::blame(foreign, &r, &plan), None);
        let foreign = "exportfs: /etc/exports:1: bad path /srv/pool/a";
        assert_eq!(Knfsd::blame(foreign, &r, &plan), None);
        let by_path = "exportfs: Failed to stat /srv/pool/a-b: No such file or directory";
        assert_eq!(Knfsd::blame(by_path, &r, &plan), Some(VolumeId(2)));
        let by_path = "exportfs: Failed to stat /srv/pool/a: No such file or directory";
        assert_eq!(Knfsd::blame(by_path, &r, &plan), Some(VolumeId(1)));
        assert_eq!(Knfsd::blame("exportfs: something else", &r, &plan), None);
    }

    #[test]
    fn etab_and_stat_parsing() {
        let etab = "/srv/pool/a\t10.0.0.1(rw,sync,wdelay)\n/srv/pool/a\t*.x(ro)\ngarbage\n";
        let m = Knfsd::parse_live(etab);
        assert!(
            m[&("/srv/pool/a".into(), "10.0.0.1".into())]
                .split(',')
                .any(|o| o == "rw")
        );
        assert_eq!(m[&("/srv/pool/a".into(), "*.x".into())], "ro");
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn script_quotes_every_value() {
        let vols = vec![vol(1, "a", VolumeState::Creating, &[("*", "rw")])];
        let plan = Plan::build(&vols);
        let p = super::super::prepare::<Knfsd>(&plan, false, None);
        let body = &p.script.framed(std::time::Duration::from_secs(60));
        assert!(body.contains("nfsprov_mkg '@@"));
        assert!(body.contains(" mk' '/srv/pool' '' '0:0' '0755' '1' 'a' 0"));
        assert!(body.contains("printf '%s' '# Managed by nfsprov"));
    }
}
