//! Snapshots of btrfs volumes on the server: one script per reconcile for the snapshots that
//! wait for the server (made, removed, or on a full pass checked and their exclusive size read
//! again), judged per snapshot by its marker. The steps (`nfsprov_snap`, `nfsprov_snapdel` in
//! `prelude.sh`) are idempotent and never follow a symbolic link nor take over a snapshot
//! nfsprov did not make.

use crate::model::{SnapshotOutcome, SnapshotState, SnapshotTask};
use crate::remote::{Arg, Lit, Output, Script};

/// The script for `tasks`. `creating` and `error` snapshots are made (or found made), an
/// `available` one only checked (a snapshot removed by hand is reported, never made again from
/// the volume's current data), a `deleting` one removed.
/// `fence`: the lease it runs under, checked first on the server.
pub fn script(tasks: &[SnapshotTask], fence: Option<super::Fence>) -> Script {
    let mut s = Script::new();
    if let Some(f) = &fence {
        super::fence::lines(&mut s, f);
    }
    s.line(&[Lit("umask 022")]);
    s.line(&[Lit(super::PRELUDE)]);
    let snap = format!("@@{} snap", s.nonce());
    for t in tasks {
        let id = t.id.to_string();
        let vid = t.volume.to_string();
        match t.state {
            SnapshotState::Deleting => s.line(&[
                Lit("nfsprov_snapdel"),
                Arg(&snap),
                Arg(&id),
                Arg(&t.root),
                Arg(&vid),
                Arg(&t.name),
            ]),
            SnapshotState::Deleted => continue,
            state => s.line(&[
                Lit("nfsprov_snap"),
                Arg(&snap),
                Arg(&id),
                Arg(&t.root),
                Arg(&t.sub),
                Arg(&vid),
                Arg(&t.name),
                Lit(if state == SnapshotState::Available {
                    "old"
                } else {
                    "new"
                }),
            ]),
        };
    }
    s
}

/// Each task's outcome from the script's output; a task the output says nothing about (a
/// script cut short) failed.
pub fn judge(tasks: &[SnapshotTask], out: &Output) -> Vec<SnapshotOutcome> {
    let steps = out.by_first_arg("snap");
    tasks
        .iter()
        .filter(|t| t.state != SnapshotState::Deleted)
        .map(|t| {
            let step = steps.get(t.id.to_string().as_str());
            match step.and_then(|s| s.rc()) {
                Some(0) if t.state == SnapshotState::Deleting => {
                    SnapshotOutcome::Deleted { id: t.id }
                }
                Some(0) => SnapshotOutcome::Available {
                    id: t.id,
                    exclusive_bytes: step.and_then(|s| exclusive(&s.before)),
                },
                _ => SnapshotOutcome::Failed {
                    id: t.id,
                    message: match step {
                        Some(s) => super::tail(&s.before),
                        None => "the server's reply was cut short".into(),
                    },
                },
            }
        })
        .collect()
}

fn exclusive(text: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix("excl "))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SnapshotId, VolumeId};

    fn task(id: i64, state: SnapshotState) -> SnapshotTask {
        SnapshotTask {
            id: SnapshotId(id),
            volume: VolumeId(7),
            root: "/srv/b".into(),
            sub: "v".into(),
            name: "daily".into(),
            state,
        }
    }

    #[test]
    fn outcomes_per_marker() {
        let tasks = [
            task(1, SnapshotState::Creating),
            task(2, SnapshotState::Deleting),
            task(3, SnapshotState::Creating),
            task(4, SnapshotState::Available),
        ];
        let s = script(&tasks, None);
        let n = s.nonce();
        let text = format!(
            "excl 16384\n@@{n} snap 1 0\n@@{n} snap 2 0\nsomething is in the way\n@@{n} snap 3 1\n"
        );
        let got = judge(&tasks, &Output::parse(n, &text));
        assert_eq!(
            got,
            vec![
                SnapshotOutcome::Available {
                    id: SnapshotId(1),
                    exclusive_bytes: Some(16384)
                },
                SnapshotOutcome::Deleted { id: SnapshotId(2) },
                SnapshotOutcome::Failed {
                    id: SnapshotId(3),
                    message: "something is in the way".into()
                },
                SnapshotOutcome::Failed {
                    id: SnapshotId(4),
                    message: "the server's reply was cut short".into()
                },
            ]
        );
    }
}
