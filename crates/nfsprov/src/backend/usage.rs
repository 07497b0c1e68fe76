//! Usage and resize on the server: the one script a reconciler runs after a pass, now and then,
//! to sample what volumes and root paths hold, and whenever a btrfs volume's size changed, to
//! apply its new qgroup limit; and the parsers of its output. Pure: the script is built and its
//! output judged here, the reconciler runs it (`reconcile::Hub::sizes`), the datastore keeps
//! the samples (`datastore::usage`).
//!
//! - btrfs volume: `btrfs qgroup show --raw --sync` of its root path (one per root path: all
//!   qgroups of the file system) and `btrfs inspect-internal rootid` of the volume (which
//!   qgroup, `0/<rootid>`, is its own); used = referenced bytes, exclusive kept beside.
//! - directory volume: `du -s -B1 -x` of each, in one `sh` per 200 volumes under `timeout`.
//! - root path: `df -B1 --output=size,used,avail`.
//! - resize (btrfs): `nfsprov_rs PATH BYTES` reads the qgroup's referenced bytes, refuses (exit
//!   3) when they exceed BYTES, sets the limit and reads it back.
//! - limit check (btrfs, full passes): `nfsprov_lim PATH BYTES` verifies the volume is still a
//!   subvolume and its qgroup limit is still BYTES, and puts a limit changed or lost by hand
//!   (`btrfs qgroup limit`, quotas disabled and enabled again) back, read back (see [`Check`]).
//! - xfs-project volume: the project report of its root path's file system (one per root
//!   path), the line of its project id; resize with `nfsprov_rsx` (`backend::xfs`).

use std::collections::HashMap;
use std::time::Duration;

use crate::model::{Layout, RootPathId, RootUsage, VolumeId, VolumeUsage};
use crate::remote::{Arg, Lit, Output, Script};

/// Volumes per `du` shell: bounds one command line.
const DU_CHUNK: usize = 200;

/// Exit status of `nfsprov_rs` when the volume holds more than the new size.
const RS_REFUSED: i32 = 3;

/// `nfsprov_rs PATH BYTES`: resize the btrfs subvolume at PATH to BYTES (see the module doc).
/// Prints the referenced bytes on success, the reason otherwise.
const RESIZE_FN: &str = r#"nfsprov_rsq() {
  btrfs qgroup show -r --raw --sync -f . 2>/dev/null | while read -r nfsprov_q nfsprov_r _ nfsprov_m _; do
    if [ "$nfsprov_q" = "0/$nfsprov_sv" ]; then printf '%s %s' "$nfsprov_r" "$nfsprov_m"; fi
  done
}
nfsprov_rs() {
  if [ -L "$1" ] || ! cd -P -- "$1" 2>/dev/null; then
    echo "$1 is not on the server (or is a symbolic link)"; return 1
  fi
  if [ "$(stat -f -c %T . 2>/dev/null)" != btrfs ] || [ "$(stat -c %i . 2>/dev/null)" != 256 ]; then
    echo "$1 is not a btrfs subvolume"; cd /; return 1
  fi
  if ! nfsprov_sv=$(btrfs inspect-internal rootid . 2>&1); then
    echo "$1: $nfsprov_sv"; cd /; return 1
  fi
  nfsprov_now=$(nfsprov_rsq)
  if [ -z "$nfsprov_now" ]; then
    echo "$1 has no qgroup 0/$nfsprov_sv"; cd /; return 1
  fi
  nfsprov_ref=${nfsprov_now%% *}
  if [ "$nfsprov_ref" -gt "$2" ]; then
    echo "$nfsprov_ref"; cd /; return 3
  fi
  if ! nfsprov_out=$(btrfs qgroup limit -- "$2" . 2>&1); then
    echo "limiting btrfs subvolume $1 to $2 bytes failed: $nfsprov_out"; cd /; return 1
  fi
  nfsprov_now=$(nfsprov_rsq)
  if [ "${nfsprov_now#* }" != "$2" ]; then
    echo "btrfs subvolume $1: its qgroup limit reads ${nfsprov_now#* }, not $2 bytes"; cd /; return 1
  fi
  echo "$nfsprov_ref"
  cd /
}"#;

/// Exit statuses of `nfsprov_lim`: the limit was put back (the old one printed); the
/// subvolume is missing or is not a subvolume any more (why printed); the file system's quotas
/// are disabled.
const LIM_REPAIRED: i32 = 2;
const LIM_NOT_SUBVOLUME: i32 = 4;
const LIM_QUOTA_OFF: i32 = 5;

/// `nfsprov_lim PATH BYTES`: the drift check of one btrfs volume on a full pass (needs
/// `nfsprov_rsq` of [`RESIZE_FN`]). Never creates a subvolume: one removed by hand is reported,
/// like a volume directory removed by hand. A missing qgroup is created again before the limit.
const LIMIT_CHECK_FN: &str = r#"nfsprov_lim() {
  if [ -L "$1" ] || ! cd -P -- "$1" 2>/dev/null; then
    echo "the btrfs subvolume $1 is missing on the server (removed by hand?); nfsprov does not make it again"; return 4
  fi
  if [ "$(stat -f -c %T . 2>/dev/null)" != btrfs ] || [ "$(stat -c %i . 2>/dev/null)" != 256 ]; then
    echo "$1 is no longer a btrfs subvolume (replaced by hand?), so no qgroup limit holds it"; cd /; return 4
  fi
  if ! nfsprov_sv=$(btrfs inspect-internal rootid . 2>&1); then
    echo "$1: $nfsprov_sv"; cd /; return 1
  fi
  if ! nfsprov_out=$(btrfs qgroup show -r --raw -f . 2>&1); then
    case $nfsprov_out in *"not enabled"*) cd /; return 5 ;; esac
    echo "$1: btrfs qgroup show failed: $nfsprov_out"; cd /; return 1
  fi
  nfsprov_max=$(printf '%s
' "$nfsprov_out" | while read -r nfsprov_q _ _ nfsprov_m _; do
    if [ "$nfsprov_q" = "0/$nfsprov_sv" ]; then printf '%s' "$nfsprov_m"; fi
  done)
  if [ "$nfsprov_max" = "$2" ]; then cd /; return 0; fi
  if [ -z "$nfsprov_max" ]; then
    nfsprov_max="no qgroup"
    btrfs qgroup create "0/$nfsprov_sv" . >/dev/null 2>&1
  fi
  if ! nfsprov_out=$(btrfs qgroup limit -- "$2" . 2>&1); then
    echo "limiting btrfs subvolume $1 to $2 bytes failed: $nfsprov_out"; cd /; return 1
  fi
  nfsprov_now=$(nfsprov_rsq)
  if [ "${nfsprov_now#* }" != "$2" ]; then
    echo "btrfs subvolume $1: its qgroup limit reads ${nfsprov_now#* }, not $2 bytes"; cd /; return 1
  fi
  echo "$nfsprov_max"
  cd /
  return 2
}"#;

/// A btrfs volume whose subvolume and limit a full pass verifies: its size as the server
/// should hold it (no resize pending) and the root path it lives on.
#[derive(Debug, Clone)]
pub struct Check {
    pub id: VolumeId,
    pub root: String,
    pub path: String,
    pub size_gb: i64,
    pub bytes: u64,
}

/// What a limit check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// The subvolume is there with its limit.
    Held,
    /// The limit was something else (`was`: bytes, `none`, or `no qgroup`) and is put back.
    Repaired { was: String },
    /// The size does not hold and nfsprov does not repair it: why, naming the path or root.
    Unenforced(String),
}

/// A volume to sample: its directory on the server and its root path's layout.
#[derive(Debug, Clone)]
pub struct VolumeAt {
    pub id: VolumeId,
    pub root_path: RootPathId,
    pub path: String,
    pub layout: Layout,
}

/// A root path to sample.
#[derive(Debug, Clone)]
pub struct RootAt {
    pub id: RootPathId,
    pub path: String,
    pub layout: Layout,
}

/// A btrfs or xfs-project volume whose limit is to become `bytes`.
#[derive(Debug, Clone)]
pub struct Resize {
    pub id: VolumeId,
    pub path: String,
    pub size_gb: i64,
    pub bytes: u64,
    pub layout: Layout,
}

/// What one run of the script is to do.
#[derive(Debug, Default)]
pub struct Work {
    pub resizes: Vec<Resize>,
    /// Empty except on full passes.
    pub checks: Vec<Check>,
    /// Empty when no sample is due.
    pub volumes: Vec<VolumeAt>,
    pub roots: Vec<RootAt>,
}

impl Work {
    pub fn is_empty(&self) -> bool {
        self.resizes.is_empty()
            && self.checks.is_empty()
            && self.volumes.is_empty()
            && self.roots.is_empty()
    }
}

/// How a resize went on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resized {
    /// The limit is the new size, read back.
    Applied,
    /// The volume holds more than the new size: nothing changed.
    Refused { used_bytes: u64 },
    /// Anything else, in the server's words.
    Failed(String),
}

/// What the script found.
#[derive(Debug, Default)]
pub struct Report {
    pub volumes: Vec<VolumeUsage>,
    pub roots: Vec<RootUsage>,
    pub resized: Vec<(Resize, Resized)>,
    /// Volumes whose check finished (one cut short is left out: checked next full pass).
    pub checked: Vec<(Check, Checked)>,
    /// Volumes or root paths that could not be sampled, with the reason (logged).
    pub problems: Vec<String>,
}

/// The script for `work`; `du_limit` bounds all its `du` shells together. `fence`: the lease
/// it runs under, checked first on the server.
pub fn script(work: &Work, du_limit: Duration, fence: Option<super::Fence>) -> Script {
    let mut s = Script::new();
    if let Some(f) = &fence {
        super::fence::lines(&mut s, f);
    }
    if work.resizes.iter().any(|r| r.layout == Layout::Btrfs) || !work.checks.is_empty() {
        s.line(&[Lit(RESIZE_FN)]);
    }
    if work.resizes.iter().any(|r| r.layout == Layout::XfsProject) {
        s.line(&[Lit(super::xfs::FUNCTIONS)]);
        s.line(&[Lit(super::xfs::RESIZE_FN)]);
    }
    for r in &work.resizes {
        let id = r.id.to_string();
        if r.layout == Layout::XfsProject {
            s.line(&[
                Lit("nfsprov_rsx"),
                Arg(&r.path),
                Arg(&r.bytes.to_string()),
                Arg(&id),
            ]);
        } else {
            s.line(&[Lit("nfsprov_rs"), Arg(&r.path), Arg(&r.bytes.to_string())]);
        }
        s.marker_rc("rs", &id);
    }
    if !work.checks.is_empty() {
        s.line(&[Lit(LIMIT_CHECK_FN)]);
    }
    for c in &work.checks {
        s.line(&[
            Lit("nfsprov_lim"),
            Arg(&c.path),
            Arg(&c.bytes.to_string()),
            Lit("2>&1"),
        ]);
        s.marker_rc("lim", &c.id.to_string());
    }
    for root in &work.roots {
        s.line(&[
            Lit("df -B1 --output=size,used,avail --"),
            Arg(&root.path),
            Lit("2>&1"),
        ]);
        s.marker_rc("df", &root.id.to_string());
        if root.layout == Layout::Btrfs {
            s.line(&[
                Lit("btrfs qgroup show --raw --sync --"),
                Arg(&root.path),
                Lit("2>&1"),
            ]);
            s.marker_rc("qg", &root.id.to_string());
        }
        if root.layout == Layout::XfsProject {
            super::xfs::report_line(&mut s, &root.path);
            s.marker_rc("xq", &root.id.to_string());
        }
    }
    for v in work.volumes.iter().filter(|v| v.layout == Layout::Btrfs) {
        s.line(&[
            Lit("[ ! -L"),
            Arg(&v.path),
            Lit("] && btrfs inspect-internal rootid --"),
            Arg(&v.path),
            Lit("2>&1"),
        ]);
        s.marker_rc("id", &v.id.to_string());
    }
    let dirs: Vec<&VolumeAt> = work
        .volumes
        .iter()
        .filter(|v| v.layout == Layout::Directory)
        .collect();
    // The time is shared among the chunks, so all of them together stay within `du_limit`.
    let chunks = dirs.len().div_ceil(DU_CHUNK).max(1) as u64;
    let secs = (du_limit.as_secs() / chunks).max(1).to_string();
    for chunk in dirs.chunks(DU_CHUNK) {
        let mut words = vec![
            Lit("timeout"),
            Arg(&secs),
            Lit("sh -c 'for p do du -s -B1 -x -- \"$p\"; done' sh"),
        ];
        words.extend(chunk.iter().map(|v| Arg(&v.path)));
        words.push(Lit("2>/dev/null"));
        s.line(&words);
        s.marker_rc("du", "");
    }
    s
}

/// Judge the output of [`script`] for `work`.
pub fn report(work: &Work, out: &Output) -> Report {
    let mut r = Report::default();
    let by = |tag: &str| out.by_first_arg(tag);
    let rs = by("rs");
    for z in &work.resizes {
        let said = rs.get(z.id.to_string().as_str());
        let outcome = match said {
            None => Resized::Failed("the resize script did not finish".into()),
            Some(sec) => {
                let text = sec.before.trim();
                match sec.rc() {
                    Some(0) => Resized::Applied,
                    Some(RS_REFUSED) => match text.parse() {
                        Ok(used_bytes) => Resized::Refused { used_bytes },
                        Err(_) => Resized::Failed(text.to_string()),
                    },
                    _ => Resized::Failed(if text.is_empty() {
                        "resizing failed without a message".into()
                    } else {
                        text.to_string()
                    }),
                }
            }
        };
        r.resized.push((z.clone(), outcome));
    }
    let lim = by("lim");
    for c in &work.checks {
        let Some(sec) = lim.get(c.id.to_string().as_str()) else {
            continue;
        };
        let text = sec.before.trim();
        let checked = match sec.rc() {
            Some(0) => Checked::Held,
            Some(LIM_REPAIRED) => Checked::Repaired {
                was: text.to_string(),
            },
            Some(LIM_QUOTA_OFF) => Checked::Unenforced(format!(
                "btrfs quotas are disabled on the file system of root path {} (`btrfs quota enable {}` on the server; nfsprov puts the limits back on its next full pass)",
                c.root, c.root
            )),
            Some(LIM_NOT_SUBVOLUME) => Checked::Unenforced(text.to_string()),
            _ => Checked::Unenforced(if text.is_empty() {
                format!(
                    "checking the qgroup limit of {} failed without a message",
                    c.path
                )
            } else {
                text.to_string()
            }),
        };
        r.checked.push((c.clone(), checked));
    }

    let df = by("df");
    let qg = by("qg");
    let xq = by("xq");
    let mut qgroups: HashMap<RootPathId, HashMap<u64, (u64, u64)>> = HashMap::new();
    let mut projects: HashMap<RootPathId, HashMap<u32, (u64, u64)>> = HashMap::new();
    for root in &work.roots {
        let key = root.id.to_string();
        match df.get(key.as_str()) {
            Some(sec) if sec.rc() == Some(0) => match parse_df(&sec.before) {
                Some((size_bytes, used_bytes, free_bytes)) => r.roots.push(RootUsage {
                    id: root.id,
                    size_bytes,
                    used_bytes,
                    free_bytes,
                }),
                None => r.problems.push(format!(
                    "root path {}: cannot read df's output: {:?}",
                    root.path, sec.before
                )),
            },
            Some(sec) => r.problems.push(format!(
                "root path {}: df failed: {}",
                root.path,
                sec.before.trim()
            )),
            None => {}
        }
        if root.layout == Layout::Btrfs {
            match qg.get(key.as_str()) {
                Some(sec) if sec.rc() == Some(0) => {
                    qgroups.insert(root.id, parse_qgroups(&sec.before));
                }
                Some(sec) => r.problems.push(format!(
                    "root path {}: btrfs qgroup show failed: {}",
                    root.path,
                    sec.before.trim()
                )),
                None => {}
            }
        }
        if root.layout == Layout::XfsProject {
            match xq.get(key.as_str()) {
                Some(sec) if sec.rc() == Some(0) => {
                    projects.insert(root.id, super::xfs::parse_report(&sec.before));
                }
                Some(sec) => r.problems.push(format!(
                    "root path {}: xfs_quota report failed: {}",
                    root.path,
                    sec.before.trim()
                )),
                None => {}
            }
        }
    }
    let ids = by("id");
    let mut du: Option<HashMap<&str, u64>> = None;
    for v in &work.volumes {
        match v.layout {
            Layout::Btrfs => {
                let Some(sec) = ids.get(v.id.to_string().as_str()) else {
                    continue;
                };
                let rootid = sec.before.trim().parse::<u64>().ok();
                let found = rootid
                    .filter(|_| sec.rc() == Some(0))
                    .and_then(|id| qgroups.get(&v.root_path)?.get(&id));
                match found {
                    Some(&(referenced, exclusive)) => r.volumes.push(VolumeUsage {
                        id: v.id,
                        used_bytes: referenced,
                        exclusive_bytes: Some(exclusive),
                    }),
                    None => r.problems.push(format!(
                        "volume {}: no qgroup found for {}: {}",
                        v.id,
                        v.path,
                        sec.before.trim()
                    )),
                }
            }
            Layout::Directory => {
                let du = du.get_or_insert_with(|| {
                    out.sections
                        .iter()
                        .filter(|s| s.tag == "du")
                        .flat_map(|s| parse_du(&s.before))
                        .collect()
                });
                match du.get(v.path.as_str()) {
                    Some(&used_bytes) => r.volumes.push(VolumeUsage {
                        id: v.id,
                        used_bytes,
                        exclusive_bytes: None,
                    }),
                    None => r
                        .problems
                        .push(format!("volume {}: du gave nothing for {}", v.id, v.path)),
                }
            }
            Layout::XfsProject => {
                let Some(report) = projects.get(&v.root_path) else {
                    continue;
                };
                let found = u32::try_from(v.id.0).ok().and_then(|id| report.get(&id));
                match found {
                    Some(&(used_bytes, _)) => r.volumes.push(VolumeUsage {
                        id: v.id,
                        used_bytes,
                        exclusive_bytes: None,
                    }),
                    None => r.problems.push(format!(
                        "volume {}: XFS project {} of {} is not in its file system's project report",
                        v.id, v.id, v.path
                    )),
                }
            }
        }
    }
    r
}

/// `btrfs qgroup show --raw` (btrfs-progs 6.x): the referenced and exclusive bytes of each
/// level-0 qgroup, by subvolume id. Header lines and higher-level qgroups are skipped.
pub fn parse_qgroups(text: &str) -> HashMap<u64, (u64, u64)> {
    let mut m = HashMap::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        let (Some(id), Some(rfer), Some(excl)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let Some(sub) = id.strip_prefix("0/").and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        if let (Ok(rfer), Ok(excl)) = (rfer.parse(), excl.parse()) {
            m.insert(sub, (rfer, excl));
        }
    }
    m
}

/// `du -s -B1` lines: `<bytes>\t<path>`.
pub fn parse_du(text: &str) -> Vec<(&str, u64)> {
    text.lines()
        .filter_map(|l| {
            let (n, path) = l.split_once('\t')?;
            Some((path, n.trim().parse().ok()?))
        })
        .collect()
}

/// `df -B1 --output=size,used,avail`: a header line, then size, used and available bytes.
pub fn parse_df(text: &str) -> Option<(u64, u64, u64)> {
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    let mut w = line.split_whitespace().map(|n| n.parse::<u64>().ok());
    let (size, used, avail) = (w.next()??, w.next()??, w.next()??);
    w.next().is_none().then_some((size, used, avail))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from btrfs-progs v6.2 on Linux 6.18: a loop-device btrfs with quotas enabled,
    // subvolumes `a` (30 MiB written, limit 10^9) and `b c`.
    const QGROUPS: &str = "\
Qgroupid    Referenced    Exclusive   Path 
--------    ----------    ---------   ---- 
0/5              16384        16384   <toplevel>
0/256         31473664     31473664   a
0/257            16384        16384   b c
";
    // GNU coreutils 9.1 `df -B1 --output=size,used,avail` of a fresh 1 GiB btrfs.
    const DF: &str = "\
 1B-blocks    Used     Avail
1073741824 6062080 948568064
";

    #[test]
    fn qgroups_by_subvolume_id() {
        let m = parse_qgroups(QGROUPS);
        assert_eq!(m.len(), 3);
        assert_eq!(m[&256], (31_473_664, 31_473_664));
        assert_eq!(m[&257], (16_384, 16_384));
        // Higher levels and garbage are skipped.
        assert!(parse_qgroups("1/100 5 5\n0/x 1 1\n0/7 a b\n").is_empty());
    }

    #[test]
    fn du_and_df_lines() {
        assert_eq!(
            parse_du("4096\t/srv/a\n123\t/srv/b c\nbad line\n"),
            vec![("/srv/a", 4096), ("/srv/b c", 123)]
        );
        assert_eq!(parse_df(DF), Some((1_073_741_824, 6_062_080, 948_568_064)));
        assert_eq!(parse_df("df: /x: No such file or directory\n"), None);
        assert_eq!(parse_df(""), None);
    }

    fn output(script: &Script, lines: &[(&str, &str, &str)]) -> Output {
        let mut text = String::new();
        for (tag, arg, before) in lines {
            text.push_str(before);
            text.push_str(&format!("@@{} {tag} {arg}\n", script.nonce()));
        }
        Output::parse(script.nonce(), &text)
    }

    #[test]
    fn a_report_maps_each_volume_to_its_qgroup_and_du_line() {
        let work = Work {
            resizes: vec![
                Resize {
                    id: VolumeId(7),
                    path: "/b/v7".into(),
                    size_gb: 1,
                    bytes: 1_000_000_000,
                    layout: Layout::Btrfs,
                },
                Resize {
                    id: VolumeId(8),
                    path: "/b/v8".into(),
                    size_gb: 1,
                    bytes: 1_000_000_000,
                    layout: Layout::Btrfs,
                },
                Resize {
                    id: VolumeId(9),
                    path: "/b/v9".into(),
                    size_gb: 1,
                    bytes: 1_000_000_000,
                    layout: Layout::Btrfs,
                },
            ],
            checks: vec![],
            volumes: vec![
                VolumeAt {
                    id: VolumeId(1),
                    root_path: RootPathId(2),
                    path: "/b/a".into(),
                    layout: Layout::Btrfs,
                },
                VolumeAt {
                    id: VolumeId(3),
                    root_path: RootPathId(4),
                    path: "/d/x y".into(),
                    layout: Layout::Directory,
                },
            ],
            roots: vec![
                RootAt {
                    id: RootPathId(2),
                    path: "/b".into(),
                    layout: Layout::Btrfs,
                },
                RootAt {
                    id: RootPathId(4),
                    path: "/d".into(),
                    layout: Layout::Directory,
                },
            ],
        };
        let s = script(&work, Duration::from_secs(5), None);
        let out = output(
            &s,
            &[
                ("rs", "7 0", "1000\n"),
                ("rs", "8 3", "2000000000\n"),
                ("rs", "9 1", "limiting failed: no\n"),
                ("df", "2 0", DF),
                ("qg", "2 0", QGROUPS),
                ("df", "4 1", "df: /d: gone\n"),
                ("id", "1 0", "256\n"),
                ("du", "0", "8192\t/d/x y\n"),
            ],
        );
        let r = report(&work, &out);
        let outcomes: Vec<_> = r.resized.iter().map(|(z, o)| (z.id.0, o.clone())).collect();
        assert_eq!(
            outcomes,
            vec![
                (7, Resized::Applied),
                (
                    8,
                    Resized::Refused {
                        used_bytes: 2_000_000_000
                    }
                ),
                (9, Resized::Failed("limiting failed: no".into())),
            ]
        );
        assert_eq!(
            r.volumes,
            vec![
                VolumeUsage {
                    id: VolumeId(1),
                    used_bytes: 31_473_664,
                    exclusive_bytes: Some(31_473_664)
                },
                VolumeUsage {
                    id: VolumeId(3),
                    used_bytes: 8192,
                    exclusive_bytes: None
                },
            ]
        );
        assert_eq!(r.roots.len(), 1);
        assert_eq!(r.roots[0].free_bytes, 948_568_064);
        assert!(
            r.problems[0].contains("df failed: df: /d: gone"),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn du_runs_in_chunks_that_share_the_time_limit() {
        let work = Work {
            volumes: (0..450)
                .map(|i| VolumeAt {
                    id: VolumeId(i),
                    root_path: RootPathId(1),
                    path: format!("/d/v{i}"),
                    layout: Layout::Directory,
                })
                .collect(),
            ..Work::default()
        };
        let s = script(&work, Duration::from_secs(30), None);
        let du_lines: Vec<&str> = s.body().lines().filter(|l| l.contains("du -s")).collect();
        assert_eq!(du_lines.len(), 3, "200 volumes per sh");
        assert!(
            du_lines.iter().all(|l| l.starts_with("timeout '10' ")),
            "{du_lines:?}"
        );
    }

    #[test]
    fn a_script_cut_short_applies_nothing() {
        let work = Work {
            resizes: vec![Resize {
                id: VolumeId(7),
                path: "/b/v7".into(),
                size_gb: 1,
                bytes: 1,
                layout: Layout::Btrfs,
            }],
            ..Work::default()
        };
        let s = script(&work, Duration::from_secs(5), None);
        let r = report(&work, &output(&s, &[]));
        assert!(matches!(r.resized[0].1, Resized::Failed(_)));
    }

    #[test]
    fn limit_checks_map_to_held_repaired_or_unenforced() {
        let check = |id| Check {
            id: VolumeId(id),
            root: "/b".into(),
            path: format!("/b/v{id}"),
            size_gb: 1,
            bytes: 1_000_000_000,
        };
        let work = Work {
            checks: (1..=6).map(check).collect(),
            ..Work::default()
        };
        let s = script(&work, Duration::from_secs(5), None);
        assert_eq!(
            s.body().matches("nfsprov_lim '").count(),
            6,
            "one call each"
        );
        let out = output(
            &s,
            &[
                ("lim", "1 0", ""),
                ("lim", "2 2", "none\n"),
                (
                    "lim",
                    "3 4",
                    "the btrfs subvolume /b/v3 is missing on the server\n",
                ),
                ("lim", "4 5", ""),
                ("lim", "5 1", ""),
            ],
        );
        let r = report(&work, &out);
        let got: Vec<_> = r.checked.iter().map(|(c, k)| (c.id.0, k.clone())).collect();
        assert_eq!(
            got.len(),
            5,
            "the one cut short is left for the next full pass"
        );
        assert_eq!(got[0], (1, Checked::Held));
        assert_eq!(got[1], (2, Checked::Repaired { was: "none".into() }));
        assert!(matches!(&got[2].1, Checked::Unenforced(m) if m.contains("/b/v3 is missing")));
        assert!(
            matches!(&got[3].1, Checked::Unenforced(m) if m.contains("quotas are disabled") && m.contains("root path /b")),
            "{got:?}"
        );
        assert!(matches!(&got[4].1, Checked::Unenforced(m) if m.contains("/b/v5")));
    }
}
