//! Table tests of planning and judging on real captured outputs (fast tier: no root, no
//! servers). Each fixture in `tests/fixtures/{knfsd,ganesha}/` is the output of one pass that
//! ran on a real test-bed server (sshd + exportfs, or nfs-ganesha), captured by
//! `tests/capture.rs`, which also checks in the e2e tier that a fresh capture is still judged
//! the same. The steps (what the database held, what was done by hand on the server first)
//! are in `tests/judging/mod.rs`.

mod judging;

use judging::*;
use nfsprov::backend::{Backend, Knfsd, Report};
use nfsprov::model::Outcome;
use nfsprov::model::VolumeId;

fn step(name: &str) -> Step {
    knfsd_steps()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name}"))
}

fn judged(name: &str) -> Report {
    let s = step(name);
    judge(&s, &fixture(&s))
}

/// The outcome of volume `id`, as (kind, message).
fn outcome(r: &Report, id: i64) -> Option<(&'static str, String)> {
    r.outcomes.iter().find_map(|o| {
        let (kind, oid, msg) = match o {
            Outcome::Applied { id, .. } => ("applied", id, String::new()),
            Outcome::Deleted { id, .. } => ("deleted", id, String::new()),
            Outcome::Rejected { id, message, .. } => ("rejected", id, message.clone()),
            Outcome::Failed { id, message, .. } => ("failed", id, message.clone()),
            Outcome::Pending { id, message, .. } => ("pending", id, message.clone()),
        };
        (*oid == VolumeId(id)).then_some((kind, msg))
    })
}

fn kinds(r: &Report) -> Vec<(i64, &'static str)> {
    let mut v: Vec<(i64, &'static str)> = r
        .outcomes
        .iter()
        .map(|o| match o {
            Outcome::Applied { id, .. } => (id.0, "applied"),
            Outcome::Deleted { id, .. } => (id.0, "deleted"),
            Outcome::Rejected { id, .. } => (id.0, "rejected"),
            Outcome::Failed { id, .. } => (id.0, "failed"),
            Outcome::Pending { id, .. } => (id.0, "pending"),
        })
        .collect();
    v.sort();
    v
}

#[test]
fn plans_of_the_captured_steps() {
    // (step, exports, directories to create, removals)
    type Row<'a> = (&'a str, &'a [i64], &'a [i64], &'a [i64]);
    let table: [Row<'_>; 5] = [
        ("1-create", &[1, 2, 3], &[1, 2, 3], &[]),
        ("2-delete", &[1, 2], &[], &[3]),
        ("3-unexported-by-hand", &[1, 2], &[], &[]),
        ("4-directory-moved-away", &[1, 2], &[], &[]),
        ("5-foreign-file-broken", &[1, 2, 4], &[4], &[]),
    ];
    for (name, exports, create, remove) in table {
        let (plan, prepared) = prepare(&step(name));
        let ids = |v: Vec<VolumeId>| v.into_iter().map(|v| v.0).collect::<Vec<_>>();
        assert_eq!(
            ids(plan.exports.iter().map(|e| e.volume).collect()),
            exports,
            "{name}"
        );
        assert_eq!(
            ids(plan.create.iter().map(|d| d.volume).collect()),
            create,
            "{name}"
        );
        assert_eq!(
            ids(plan.remove.iter().map(|r| r.volume).collect()),
            remove,
            "{name}"
        );
        // The managed file has one line per export with clients, in volume order.
        let lines: Vec<&str> = prepared
            .rendered
            .text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect();
        assert_eq!(lines.len(), exports.len(), "{name}: {lines:?}");
        for (line, e) in lines.iter().zip(&plan.exports) {
            assert!(line.starts_with(&format!("{} ", e.path)), "{name}: {line}");
        }
    }
    let (plan, _) = prepare(&step("2-delete"));
    assert_eq!(plan.remove[0].path, "/srv/nfsprov/pool1/c");
    assert!(plan.exports.iter().all(|e| e.was_available));
}

/// A fresh create: two exported and verified in etab; a client exportfs cannot resolve is
/// left out of etab though exportfs exits 0, so its volume fails with exportfs's words.
#[test]
fn create_applied_and_a_client_missing_from_etab() {
    let r = judged("1-create");
    assert_eq!(kinds(&r), [(1, "applied"), (2, "applied"), (3, "failed")]);
    let (_, msg) = outcome(&r, 3).unwrap();
    assert!(
        msg.contains(
            "/var/lib/nfs/etab has no entry for no-such-host.invalid:/srv/nfsprov/pool1/c"
        ) && msg.contains("exportfs said: exportfs: Failed to resolve no-such-host.invalid"),
        "{msg}"
    );
    assert_eq!(r.server_error, None);
    assert!(!r.rerun && !r.force_next && r.blamed.is_empty());
    // The foreign file's entry is not nfsprov's business: no drift about it.
    assert!(r.drift.is_empty(), "{:?}", r.drift);
}

/// A delete: the directory moved to the trash and the entry gone from etab; the volumes
/// already available need no new outcome.
#[test]
fn delete_verified_and_available_volumes_left_as_they_are() {
    let r = judged("2-delete");
    assert_eq!(kinds(&r), [(3, "deleted")]);
    assert!(r.server_error.is_none() && r.drift.is_empty(), "{r:?}");
}

/// Someone ran `exportfs -u` on a volume: the file is unchanged, etab lacks the entry, so the
/// pass asks for a forced reload instead of failing the volume.
#[test]
fn an_entry_unexported_by_hand_forces_a_reload() {
    let r = judged("3-unexported-by-hand");
    assert!(r.force_next, "{r:?}");
    assert!(r.outcomes.is_empty(), "{r:?}");
    assert_eq!(
        r.drift,
        ["live exports did not match the managed file; reloading"]
    );
}

/// A volume's directory moved away: exportfs's "Failed to stat" is blamed on that volume as a
/// failure of the moment (retried), not a verdict on its request; the other stays verified.
#[test]
fn a_missing_directory_is_a_failure_of_the_moment_for_its_volume_only() {
    let r = judged("4-directory-moved-away");
    assert_eq!(kinds(&r), [(2, "failed")]);
    let (_, msg) = outcome(&r, 2).unwrap();
    assert!(
        msg.contains("Failed to stat /srv/nfsprov/pool1/b: No such file or directory"),
        "{msg}"
    );
    assert!(r.server_error.is_none() && !r.force_next, "{r:?}");
}

/// A foreign exports file that exportfs refuses: nfsprov's file is rolled back, no volume is
/// blamed, and the server says why in exportfs's own words.
#[test]
fn a_broken_foreign_file_blames_no_volume() {
    let r = judged("5-foreign-file-broken");
    assert!(r.outcomes.is_empty(), "{r:?}");
    assert!(r.blamed.is_empty() && !r.rerun && !r.service_down, "{r:?}");
    let err = r.server_error.unwrap();
    assert!(
        err.starts_with("knfsd reload failed")
            && err.contains("/etc/exports.d/other.exports:1: unknown keyword \"no_such_option\""),
        "{err}"
    );
}

/// The live section is the server's etab: foreign entries are read but never claimed.
#[test]
fn etab_as_captured_is_read_entry_by_entry() {
    for name in ["1-create", "2-delete", "5-foreign-file-broken"] {
        let out = load_fixture("knfsd", name);
        let etab = Knfsd::parse_live(&out.find("live", "").unwrap().before);
        assert!(Knfsd::is_exported(&etab, "/srv/nfsprov/foreign"), "{name}");
        assert_eq!(
            etab.get(&("/srv/nfsprov/pool1/b".into(), "*".into()))
                .map(|o| o.split(',').any(|t| t == "async")),
            Some(true),
            "{name}: {etab:?}"
        );
        assert!(!Knfsd::is_exported(&etab, "/srv/nfsprov/pool1/c"), "{name}");
    }
}

/// A capture cut short (no live section), or stopped at its time limit, is judged as a whole:
/// a server error, no outcome.
#[test]
fn a_cut_short_capture_is_a_server_error() {
    let s = step("1-create");
    let full = std::fs::read_to_string(fixture_path("knfsd", "1-create")).unwrap();
    let cut = full.split("@@NONCE live").next().unwrap().to_string() + "@@NONCE end 0\n";
    let r = judge(&s, &load(&cut));
    assert!(r.outcomes.is_empty(), "{r:?}");
    assert!(r.server_error.unwrap().contains("cut short"));
    let stopped = full.replace("@@NONCE end 0", "@@NONCE end 124");
    let r = judge(&s, &load(&stopped));
    assert!(r.outcomes.is_empty(), "{r:?}");
    assert!(r.server_error.unwrap().contains("ran out of time"));
}

/// Storing and loading a capture loses nothing the judge reads.
#[test]
fn captures_round_trip() {
    for s in knfsd_steps() {
        let text = std::fs::read_to_string(fixture_path("knfsd", s.name)).unwrap();
        assert_eq!(to_text(&load(&text)), text, "{}", s.name);
    }
}

fn ganesha_judged(name: &str) -> Report {
    let s = ganesha_steps()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no ganesha step {name}"));
    judge(&s, &fixture(&s))
}

/// nfs-ganesha, one table: (step, outcomes, force_next, a fragment of the drift or failure
/// text that must be there). The live state is ganesha's export list and each new export's
/// client entries, read over its D-Bus.
#[test]
fn ganesha_passes_judged_from_captured_dbus_replies() {
    type Row<'a> = (&'a str, &'a [(i64, &'a str)], bool, &'a str);
    let table: [Row<'_>; 5] = [
        ("1-create", &[(1, "applied"), (2, "applied")], false, ""),
        ("2-delete", &[(2, "deleted")], false, ""),
        (
            "3-unexported-by-hand",
            &[],
            true,
            "live exports did not match the managed file; reloading",
        ),
        ("4-forced-reload", &[], false, ""),
        (
            "5-directory-moved-away",
            &[(1, "failed"), (4, "applied")],
            false,
            "directory /srv/nfsprov/pool1/a does not exist on the server",
        ),
    ];
    for (name, outcomes, force_next, said) in table {
        let r = ganesha_judged(name);
        assert_eq!(kinds(&r), outcomes, "{name}: {r:?}");
        assert_eq!(r.force_next, force_next, "{name}: {r:?}");
        assert_eq!(r.server_error, None, "{name}");
        let text = format!("{:?} {:?}", r.outcomes, r.drift);
        assert!(text.contains(said), "{name}: {text}");
    }
}

/// Every stored capture is judged the same after a store/load round trip, and the ganesha
/// live list as captured names exactly the exports the plan expects.
#[test]
fn ganesha_captures_round_trip() {
    for s in ganesha_steps() {
        let text = std::fs::read_to_string(fixture_path("ganesha", s.name)).unwrap();
        assert_eq!(to_text(&load(&text)), text, "{}", s.name);
    }
    let out = fixture(&ganesha_steps()[0]);
    let live = nfsprov::backend::Ganesha::parse_live(&out.find("live", "").unwrap().before);
    for path in ["/srv/nfsprov/pool1/a", "/srv/nfsprov/pool1/b"] {
        assert!(
            nfsprov::backend::Ganesha::is_exported(&live, path),
            "{path}"
        );
    }
    assert!(!nfsprov::backend::Ganesha::is_exported(
        &live,
        "/srv/nfsprov/pool1/c"
    ));
}
