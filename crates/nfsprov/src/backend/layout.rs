//! Root path layouts on the server: the check that a root path can hold the layout an admin
//! asks for (one script, its output judged here), and the size a btrfs volume is limited to.
//! Creating and removing a volume's subvolume are steps of the pass (`nfsprov_mksv`,
//! `nfsprov_del` in `prelude.sh`); for `xfs-project` see `backend::xfs`.

use crate::model::Layout;
use crate::remote::{Arg, Lit, Output, Script};

/// Bytes of a volume of `size_gb` (the API's GB are 10^9 bytes): its qgroup limit.
pub fn qgroup_bytes(size_gb: i64) -> u64 {
    (size_gb.max(0) as u64).saturating_mul(1_000_000_000)
}

/// The one script that checks `root` for `layout`: it exists as a directory, its file system
/// type (`stat -f`), and for btrfs whether quotas are enabled (`btrfs qgroup show` fails when
/// they are not).
pub fn probe_script(root: &str, layout: Layout) -> Script {
    let mut s = Script::new();
    s.line(&[
        Lit("[ -d"),
        Arg(root),
        Lit("] && [ ! -L"),
        Arg(root),
        Lit("]"),
    ]);
    s.marker_rc("dir", "");
    s.line(&[Lit("stat -f -c %T --"), Arg(root), Lit("2>&1")]);
    s.marker_rc("fstype", "");
    if layout == Layout::Btrfs {
        s.line(&[Lit("command -v btrfs >/dev/null")]);
        s.marker_rc("progs", "");
        s.line(&[
            Lit("btrfs qgroup show --raw --"),
            Arg(root),
            Lit("2>&1 >/dev/null"),
        ]);
        s.marker_rc("qgroups", "");
    }
    if layout == Layout::XfsProject {
        super::xfs::probe_lines(&mut s, root);
    }
    s
}

/// What is wrong with `root` on `server` for `layout`, from the output of [`probe_script`],
/// as a sentence an admin can act on; `None` when the root path can hold it.
pub fn probe_problem(server: &str, root: &str, layout: Layout, out: &Output) -> Option<String> {
    let section = |tag: &str| out.sections.iter().find(|s| s.tag == tag);
    let ok = |tag: &str| section(tag).and_then(|s| s.rc()) == Some(0);
    let text = |tag: &str| section(tag).map_or("", |s| s.before.trim());
    if !ok("dir") {
        return Some(format!(
            "{root} is not a directory on server {server} (or is a symbolic link)"
        ));
    }
    if !ok("fstype") {
        return Some(format!(
            "cannot tell the file system of {root} on server {server}: {}",
            text("fstype")
        ));
    }
    if layout == Layout::XfsProject {
        return super::xfs::probe_problem(server, root, out);
    }
    if layout != Layout::Btrfs {
        return None;
    }
    let fstype = text("fstype");
    if fstype != "btrfs" {
        return Some(format!(
            "{root} on server {server} is on a {fstype} file system, not btrfs"
        ));
    }
    if !ok("progs") {
        return Some(format!(
            "server {server} has no `btrfs` command: install btrfs-progs"
        ));
    }
    if !ok("qgroups") {
        let said = text("qgroups");
        return Some(if said.contains("quotas not enabled") {
            format!(
                "btrfs quotas are not enabled on the file system of {root} on server {server}: run `btrfs quota enable {root}` there"
            )
        } else {
            format!("cannot read the btrfs qgroups of {root} on server {server}: {said}")
        });
    }
    None
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The probe as the server's `sh` prints it: marker lines carry the script's nonce.
    /// A marker's tag, the text printed before it and the status it carries.
    type Line = (&'static str, &'static str, i32);

    pub(in crate::backend) fn output(script: &Script, lines: &[(&str, &str, i32)]) -> Output {
        let mut text = String::new();
        for (tag, before, rc) in lines {
            if !before.is_empty() {
                text.push_str(before);
                text.push('\n');
            }
            text.push_str(&format!("@@{} {tag}  {rc}\n", script.nonce()));
        }
        Output::parse(script.nonce(), &text)
    }

    // Outputs captured from btrfs-progs 6.2 on Linux 6.18 (a loop-device btrfs in the test bed).
    const QUOTAS_OFF: &str = "ERROR: can't list qgroups: quotas not enabled";

    #[test]
    fn btrfs_with_quotas_passes() {
        let s = probe_script("/srv/b", Layout::Btrfs);
        let out = output(
            &s,
            &[
                ("dir", "", 0),
                ("fstype", "btrfs", 0),
                ("progs", "", 0),
                ("qgroups", "", 0),
            ],
        );
        assert_eq!(probe_problem("srv1", "/srv/b", Layout::Btrfs, &out), None);
    }

    #[test]
    fn each_problem_is_named() {
        let s = probe_script("/srv/b", Layout::Btrfs);
        let cases: &[(&[Line], &str)] = &[
            (&[("dir", "", 1)], "not a directory"),
            (
                &[("dir", "", 0), ("fstype", "ext2/ext3", 0)],
                "on a ext2/ext3 file system, not btrfs",
            ),
            (
                &[("dir", "", 0), ("fstype", "btrfs", 0), ("progs", "", 1)],
                "install btrfs-progs",
            ),
            (
                &[
                    ("dir", "", 0),
                    ("fstype", "btrfs", 0),
                    ("progs", "", 0),
                    ("qgroups", QUOTAS_OFF, 1),
                ],
                "btrfs quota enable /srv/b",
            ),
            // A script cut short says nothing: never "fine".
            (&[], "not a directory"),
        ];
        for (lines, want) in cases {
            let got = probe_problem("srv1", "/srv/b", Layout::Btrfs, &output(&s, lines))
                .expect("a problem");
            assert!(got.contains(want), "{got:?} should contain {want:?}");
        }
    }

    #[test]
    fn sizes_are_decimal_gigabytes() {
        assert_eq!(qgroup_bytes(1), 1_000_000_000);
        assert_eq!(qgroup_bytes(i64::MAX), u64::MAX);
    }
}
