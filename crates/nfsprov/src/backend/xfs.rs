//! The `xfs-project` layout: a volume is a plain directory carrying an XFS project id with a
//! block hard limit of its size (`xfs_quota`). Pure: the script lines and shell functions
//! (`xfs.sh`) are built here and their output judged here; a pass runs them
//! (`backend::prepare`), the sizes script runs the resize and report (`backend::usage`), the
//! root path check runs the probe (`backend::layout`).
//!
//! - Project id: the volume's id. Volume rows are never deleted, so an id is never given to
//!   two volumes of one database; it comes from the database, never from user text. Ids
//!   above [`MAX_PROJECT_ID`] cannot be XFS project ids and fail on the server.
//! - Root path check: `stat -f` says `xfs`, `xfs_quota` is installed, and the mount holding
//!   the root path (`stat -c %m`) shows `prjquota` (or `pquota`) among its super options in
//!   `/proc/self/mountinfo`: enforced project quota (`pqnoenforce` only counts).
//! - Sizes: `report -p -b -n -N` prints one line per project, `#<id> used soft hard warn
//!   grace`, in 1 KiB blocks (xfsprogs quota/report.c: `d_bcount >> 1` of 512-byte blocks).

use std::collections::HashMap;

use crate::remote::{Arg, Lit, Output, Script};

/// The shell functions of the layout (program text only).
pub const FUNCTIONS: &str = include_str!("xfs.sh");

/// The largest XFS project id (32 bits; `u32::MAX` itself is reserved by quota tools).
pub const MAX_PROJECT_ID: i64 = u32::MAX as i64 - 1;

/// The probe's lines for an xfs-project root path (after `dir` and `fstype`).
pub fn probe_lines(s: &mut Script, root: &str) {
    s.line(&[Lit("command -v xfs_quota >/dev/null")]);
    s.marker_rc("xfsprogs", "");
    s.line(&[Lit("stat -c %m --"), Arg(root), Lit("2>&1")]);
    s.marker_rc("mnt", "");
    s.line(&[Lit("cat /proc/self/mountinfo 2>&1")]);
    s.marker_rc("mounts", "");
}

/// What keeps `root` on `server` from holding xfs-project volumes, from the probe's output
/// (`dir` and `fstype` already passed); `None` when nothing does.
pub fn probe_problem(server: &str, root: &str, out: &Output) -> Option<String> {
    let section = |tag: &str| out.sections.iter().find(|s| s.tag == tag);
    let ok = |tag: &str| section(tag).and_then(|s| s.rc()) == Some(0);
    let text = |tag: &str| section(tag).map_or("", |s| s.before.trim());
    let fstype = text("fstype");
    if fstype != "xfs" {
        return Some(format!(
            "{root} on server {server} is on a {fstype} file system, not xfs"
        ));
    }
    if !ok("xfsprogs") {
        return Some(format!(
            "server {server} has no `xfs_quota` command: install xfsprogs"
        ));
    }
    if !ok("mnt") || !ok("mounts") {
        return Some(format!(
            "cannot find the mount of {root} on server {server}: {} {}",
            text("mnt"),
            text("mounts")
        ));
    }
    let mnt = text("mnt");
    let Some(opts) = super_options(text("mounts"), mnt) else {
        return Some(format!(
            "cannot find the mount point {mnt} of {root} in /proc/self/mountinfo on server {server}"
        ));
    };
    if opts.iter().any(|o| *o == "prjquota" || *o == "pquota") {
        return None;
    }
    Some(format!(
        "the XFS file system of {root} on server {server} (mounted at {mnt}, options {}) does not enforce project quotas: mount it with -o prjquota (and put prjquota in its /etc/fstab entry), then add the root path again",
        opts.join(",")
    ))
}

/// The super options (the last field, after ` - fstype source`) of the mount at `mount_point`
/// in `/proc/self/mountinfo` text (proc(5)): the last such line, as a later mount hides an
/// earlier one there. Mount points are unescaped (`\040` is a space) before comparing.
pub fn super_options<'a>(mountinfo: &'a str, mount_point: &str) -> Option<Vec<&'a str>> {
    mountinfo.lines().rev().find_map(|line| {
        let (mine, theirs) = line.split_once(" - ")?;
        if unescape(mine.split(' ').nth(4)?) != mount_point {
            return None;
        }
        Some(theirs.split(' ').nth(2)?.split(',').collect())
    })
}

/// A mountinfo field with its octal escapes (`\040`, `\011`, `\012`, `\134`) decoded.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Used and hard-limit bytes of each project in `xfs_quota -x -c 'report -p -b -n -N'`
/// output, by project id. Lines that are not `#<id> <used> <soft> <hard> ...` are skipped.
pub fn parse_report(text: &str) -> HashMap<u32, (u64, u64)> {
    let mut m = HashMap::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        let (Some(id), Some(used), Some(_soft), Some(hard)) =
            (w.next(), w.next(), w.next(), w.next())
        else {
            continue;
        };
        let Some(id) = id.strip_prefix('#').and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let (Ok(used), Ok(hard)) = (used.parse::<u64>(), hard.parse::<u64>()) {
            m.insert(id, (used.saturating_mul(1024), hard.saturating_mul(1024)));
        }
    }
    m
}

/// The sizes script's line that reads the project report of the file system holding `root`.
pub fn report_line(s: &mut Script, root: &str) {
    s.line(&[
        Lit("nfsprov_mp=$(stat -c %m --"),
        Arg(root),
        Lit(") && xfs_quota -x -c 'report -p -b -n -N' \"$nfsprov_mp\" 2>&1"),
    ]);
}

/// `nfsprov_rsx PATH BYTES PID`: resize the xfs-project volume at PATH (project PID) to BYTES:
/// refused (exit 3, the used bytes printed) when it uses more, else the new limit set and read
/// back (`nfsprov_xplim`); prints the used bytes on success, the reason otherwise. Needs
/// [`FUNCTIONS`].
pub const RESIZE_FN: &str = r#"nfsprov_rsx() {
  if [ -L "$1" ] || ! cd -P -- "$1" 2>/dev/null; then
    echo "$1 is not on the server (or is a symbolic link)"; return 1
  fi
  if ! nfsprov_mp=$(stat -c %m -- . 2>&1); then echo "$1: $nfsprov_mp"; cd /; return 1; fi
  nfsprov_now=$(nfsprov_xpq "$3")
  if [ -z "$nfsprov_now" ]; then
    echo "$1: XFS project $3 has no quota on $nfsprov_mp"; cd /; return 1
  fi
  nfsprov_used=$((${nfsprov_now%% *} * 1024))
  if [ "$nfsprov_used" -gt "$2" ]; then
    echo "$nfsprov_used"; cd /; return 3
  fi
  if ! nfsprov_out=$(nfsprov_xplim "$3" "$2"); then echo "$nfsprov_out"; cd /; return 1; fi
  echo "$nfsprov_used"
  cd /
}"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Layout;

    use crate::backend::layout::tests::output;

    // Captured here (Linux 6.18, xfsprogs 6.1.0): an XFS image on a loop device mounted
    // without options (`mount -o prjquota` fails: "XFS: quota support not available in this
    // kernel"), a line of `/proc/self/mountinfo`.
    const PLAIN_XFS: &str = "87 27 7:1 / /tmp/xfsmnt rw,relatime - xfs /dev/loop1 rw,inode64,logbufs=8,logbsize=32k,noquota";
    // Captured here: a tmpfs mounted at "/tmp/xfs cap" (mountinfo escapes the space).
    const SPACED: &str = "137 27 0:52 / /tmp/xfs\\040cap rw,relatime - tmpfs tmpfs rw,size=1024k";
    // NOT captured (this kernel has no XFS quota): the same mount as the kernel's
    // xfs_fs_show_options (fs/xfs/xfs_super.c) prints it with project quota enforced
    // (`prjquota`) and with accounting only (`pqnoenforce`).
    const PRJQUOTA: &str = "87 27 7:1 / /tmp/xfsmnt rw,relatime - xfs /dev/loop1 rw,inode64,logbufs=8,logbsize=32k,prjquota";
    const PQNOENFORCE: &str = "87 27 7:1 / /tmp/xfsmnt rw,relatime - xfs /dev/loop1 rw,inode64,logbufs=8,logbsize=32k,pqnoenforce";
    // NOT captured (no project quota here): `xfs_quota -x -c 'report -p -b -n -N'` lines
    // printed by `printf` with report.c's own formats (`#%-9u`, then ` %10llu %10llu %10llu
    // %02d %9s` with util.c's time_to_string: `[--------]` without a timer, `[--none--]`
    // past the hard limit): project 0, a project using 30 MiB of a 10^9-byte limit (976562
    // KiB), one over its limit; the report ends with an empty line.
    const REPORT: &str = "\
#0                  0          0          0     00 [--------]
#1              30720          0     976562     00 [--------]
#4294967294     976564          0     976562     00 [--none--]

";

    fn probe(fstype: &str, progs: i32, mountinfo: &str) -> Option<String> {
        let s = crate::backend::layout::probe_script("/tmp/xfsmnt/vols", Layout::XfsProject);
        let mounts = format!("22 27 0:21 / /proc rw,relatime - proc proc rw\n{mountinfo}");
        let out = output(
            &s,
            &[
                ("dir", "", 0),
                ("fstype", fstype, 0),
                ("xfsprogs", "", progs),
                ("mnt", "/tmp/xfsmnt", 0),
                ("mounts", &mounts, 0),
            ],
        );
        crate::backend::layout::probe_problem("srv1", "/tmp/xfsmnt/vols", Layout::XfsProject, &out)
    }

    #[test]
    fn xfs_project_probe_by_captured_output() {
        let s = crate::backend::layout::probe_script("/srv/x y", Layout::XfsProject);
        let body = s.body();
        for line in [
            "stat -f -c %T -- '/srv/x y' 2>&1",
            "command -v xfs_quota >/dev/null",
            "stat -c %m -- '/srv/x y' 2>&1",
            "cat /proc/self/mountinfo 2>&1",
        ] {
            assert!(body.contains(line), "{line:?} not in {body}");
        }
        assert_eq!(probe("xfs", 0, PRJQUOTA), None);
        let said = |p: Option<String>| p.expect("a problem");
        assert!(said(probe("btrfs", 0, PRJQUOTA)).contains("on a btrfs file system, not xfs"));
        assert!(said(probe("xfs", 1, PRJQUOTA)).contains("install xfsprogs"));
        let plain = said(probe("xfs", 0, PLAIN_XFS));
        assert!(
            plain.contains("does not enforce project quotas")
                && plain.contains("mount it with -o prjquota")
                && plain.contains("noquota"),
            "{plain}"
        );
        assert!(said(probe("xfs", 0, PQNOENFORCE)).contains("does not enforce"));
        // A later mount at the same point hides the earlier one.
        assert!(probe("xfs", 0, &format!("{PRJQUOTA}\n{PLAIN_XFS}")).is_some());
        assert_eq!(probe("xfs", 0, &format!("{PLAIN_XFS}\n{PRJQUOTA}")), None);
        assert!(said(probe("xfs", 0, SPACED)).contains("cannot find the mount point"));
    }

    #[test]
    fn xfs_project_mountinfo_by_captured_output() {
        assert_eq!(
            super_options(SPACED, "/tmp/xfs cap"),
            Some(vec!["rw", "size=1024k"])
        );
        assert_eq!(super_options(SPACED, "/tmp/xfs\\040cap"), None);
        assert_eq!(
            super_options(PLAIN_XFS, "/tmp/xfsmnt").unwrap().last(),
            Some(&"noquota")
        );
        assert_eq!(super_options("garbage\n\n", "/"), None);
        assert_eq!(unescape("a\\134b\\011c\\9"), "a\\b\tc\\9");
    }

    #[test]
    fn xfs_project_report_by_captured_output() {
        let m = parse_report(REPORT);
        assert_eq!(m.len(), 3);
        assert_eq!(m[&1], (30720 * 1024, 976_562 * 1024));
        assert_eq!(m[&4294967294], (976_564 * 1024, 976_562 * 1024));
        // Names instead of numbers (no -n), headers and garbage are skipped.
        assert!(
            parse_report("Project quota on /x (/dev/sda)\nalice 1 2 3\n#x 1 2 3\n#5 a b c\n")
                .is_empty()
        );
        // The script's read-back compares the hard limit with BYTES / 1024 in 1 KiB blocks:
        // xfs_quota keeps 512-byte blocks (bytes >> 9) and reports them >> 1.
        let bytes = crate::backend::layout::qgroup_bytes(1);
        assert_eq!((bytes >> 9) >> 1, bytes / 1024);
        assert_eq!(bytes / 1024, 976_562);
    }

    #[test]
    fn xfs_project_commands_by_captured_output() {
        // The exact xfs_quota command lines of the shell functions: the path is always `.`
        // (the volume's directory, entered without following links) and the file system is
        // named by its mount point, a separate word.
        for line in [
            r#"xfs_quota -x -c "project -s -p . $1" "$nfsprov_mp" 2>&1 >/dev/null"#,
            r#"xfs_quota -x -c "limit -p bhard=$2 $1" "$nfsprov_mp" 2>&1"#,
            r#"xfs_quota -x -c 'report -p -b -n -N' "$nfsprov_mp" 2>/dev/null"#,
            r##"if [ "$nfsprov_q" = "#$1" ]; then printf '%s %s' "$nfsprov_u" "$nfsprov_h"; fi"##,
            r#"if [ "${nfsprov_now#* }" != "$(($2 / 1024))" ]; then"#,
            r#"xfs_quota -x -c "limit -p bhard=0 $3" "$nfsprov_mp" 2>&1"#,
            r#"xfs_quota -x -c "project -C -p . $3" "$nfsprov_mp" 2>&1 >/dev/null"#,
            r#"nfsprov_mp=$(stat -c %m -- . 2>&1)"#,
        ] {
            assert!(FUNCTIONS.contains(line), "{line:?} not in xfs.sh");
        }
        assert!(RESIZE_FN.contains(r#"nfsprov_used=$((${nfsprov_now%% *} * 1024))"#));
        assert!(RESIZE_FN.contains(r#"echo "$nfsprov_used"; cd /; return 3"#));
        let mut s = Script::new();
        report_line(&mut s, "/srv/x y");
        assert!(
            s.body().contains(
                r#"nfsprov_mp=$(stat -c %m -- '/srv/x y' ) && xfs_quota -x -c 'report -p -b -n -N' "$nfsprov_mp" 2>&1"#
            ),
            "{}",
            s.body()
        );
    }

    #[test]
    fn xfs_project_pass_and_sizes_lines_by_captured_output() {
        use crate::backend::usage::{self, Resize, Resized, RootAt, VolumeAt, Work};
        use crate::model::{DeletePolicy, RootPathId, VolumeId};
        use crate::plan::{Dir, Plan, Removal};
        let plan = Plan {
            create: vec![Dir {
                volume: VolumeId(7),
                path: "/srv/x y/team/v 7".into(),
                root: "/srv/x y".into(),
                sub: "team/v 7".into(),
                mode: "0750".into(),
                uid: 1000,
                gid: 1000,
                adopt: false,
                generation: 1,
                layout: Layout::XfsProject,
                size_gb: 2,
                restore: None,
            }],
            remove: vec![Removal {
                volume: VolumeId(8),
                path: "/srv/x y/old".into(),
                root: "/srv/x y".into(),
                sub: "old".into(),
                policy: DeletePolicy::Purge,
                owned: true,
                trash_path: "/srv/x y/.nfsprov-trash/8".into(),
                generation: 3,
                never_exported: false,
                layout: Layout::XfsProject,
            }],
            ..Plan::default()
        };
        let p = crate::backend::prepare::<crate::backend::knfsd::Knfsd>(&plan, false, None);
        let body = p.script.body();
        let nonce = p.script.nonce();
        assert!(body.contains(FUNCTIONS), "the functions come with the pass");
        for line in [
            format!(
                "nfsprov_mkxp '@@{nonce} mk' '/srv/x y' 'team' '1000:1000' '0750' '7' 'v 7' 0 '2000000000'"
            ),
            "nfsprov_xpoff '/srv/x y' 'old' '8' 1".to_string(),
        ] {
            assert!(body.contains(&line), "{line:?} not in {body}");
        }
        // Project clearing comes before the directory goes.
        assert!(body.find("nfsprov_xpoff '/srv/x y'") < body.find("nfsprov_rm '@@"));

        let work = Work {
            resizes: vec![Resize {
                id: VolumeId(1),
                path: "/srv/x y/a".into(),
                size_gb: 1,
                bytes: 1_000_000_000,
                layout: Layout::XfsProject,
            }],
            volumes: vec![
                VolumeAt {
                    id: VolumeId(1),
                    root_path: RootPathId(2),
                    path: "/srv/x y/a".into(),
                    layout: Layout::XfsProject,
                },
                VolumeAt {
                    id: VolumeId(9),
                    root_path: RootPathId(2),
                    path: "/srv/x y/b".into(),
                    layout: Layout::XfsProject,
                },
            ],
            roots: vec![RootAt {
                id: RootPathId(2),
                path: "/srv/x y".into(),
                layout: Layout::XfsProject,
            }],
            checks: Vec::new(),
        };
        let s = usage::script(&work, std::time::Duration::from_secs(5), None);
        assert!(s.body().contains(RESIZE_FN) && s.body().contains(FUNCTIONS));
        assert!(
            s.body()
                .contains("nfsprov_rsx '/srv/x y/a' '1000000000' '1'"),
            "{}",
            s.body()
        );
        assert!(!s.body().contains("nfsprov_rs '"), "no btrfs resize");
        let text = format!(
            "2000000000\n@@{n} rs 1 3\n 1B-blocks Used Avail\n100 50 50\n@@{n} df 2 0\n{REPORT}@@{n} xq 2 0\n",
            n = s.nonce()
        );
        let r = usage::report(&work, &Output::parse(s.nonce(), &text));
        assert_eq!(
            r.resized[0].1,
            Resized::Refused {
                used_bytes: 2_000_000_000
            }
        );
        assert_eq!(r.volumes.len(), 1);
        assert_eq!(r.volumes[0].id, VolumeId(1));
        assert_eq!(r.volumes[0].used_bytes, 30720 * 1024);
        assert!(
            r.problems.iter().any(|p| p.contains("XFS project 9")),
            "{:?}",
            r.problems
        );
    }
}
