//! The xfs-project layout (issue 12) against a real XFS file system in a test bed server (a
//! loop device in its mount namespace). These machines' kernels have no XFS quota support
//! (`mount -o prjquota` fails: "quota support not available in this kernel"), so what is
//! proven here is: the root path check refuses an XFS mount without project quota with a 400
//! naming `layout`, and nfsprov's own shell functions drive the real `xfs_quota` on a plain
//! XFS mount as far as such a kernel lets them (the project id is set on and cleared from a
//! volume's tree; setting the limit fails and the volume's error says why). The limit, its
//! read-back, usage and resize are tested by their command lines and parsers on captured
//! output (`backend::xfs` unit tests `xfs_project_..._by_captured_output`).

mod common;

use common::btrfs::{add_root_path, inside};
use common::*;
use reqwest::{Method, StatusCode};

const XFS_ROOT: &str = "/srv/nfsprov/xfs";

fn skip_without_xfs() -> bool {
    match nfsprov_testbed::xfs::unsupported() {
        Some(why) => {
            eprintln!("skipping: {why}");
            true
        }
        None => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xfs_project_root_path_without_prjquota_is_refused() {
    if skip_without_xfs() {
        return;
    }
    let env = Env::start(1, 100, 50).await;
    let srv = env.server("srv1");
    let _fs = srv.mount_xfs("xfs", "").unwrap();
    inside(srv, &format!("mkdir -p {XFS_ROOT}/vols"));

    let refused = |s: StatusCode, v: &serde_json::Value, says: &[&str]| {
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["field"], "layout", "{v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        for w in says {
            assert!(msg.contains(w), "{msg:?} should say {w:?}");
        }
    };
    let (s, v) = add_root_path(&env, "/srv/nfsprov/pool2", "xfs-project").await;
    refused(s, &v, &["not xfs"]);
    let (s, v) = add_root_path(&env, &format!("{XFS_ROOT}/vols"), "xfs-project").await;
    refused(
        s,
        &v,
        &[
            "does not enforce project quotas",
            "mounted at /srv/nfsprov/xfs",
            "noquota",
            "mount it with -o prjquota",
        ],
    );
    let (_, rps) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/rootpaths", None)
        .await;
    assert_eq!(rps.as_array().unwrap().len(), 1, "nothing recorded: {rps}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xfs_project_functions_drive_the_real_xfs_quota() {
    if skip_without_xfs() {
        return;
    }
    let env = Env::start(1, 100, 50).await;
    let srv = env.server("srv1");
    let _fs = srv.mount_xfs("xfs", "").unwrap();
    let functions = format!(
        "{}\n{}\n",
        nfsprov::backend::PRELUDE,
        nfsprov::backend::xfs::FUNCTIONS
    );
    // A volume's tree as nfsprov_mkg leaves it (mark included), with a name that needs quoting.
    inside(
        srv,
        &format!(
            "mkdir -p '{XFS_ROOT}/team/v 42/sub' && echo x > '{XFS_ROOT}/team/v 42/sub/f' \
             && echo m > '{XFS_ROOT}/team/v 42/.nfsprov-volume-42'"
        ),
    );
    let lsproj = |p: &str| inside(srv, &format!("xfs_io -c lsproj '{XFS_ROOT}/{p}'"));

    // Project 42 over the tree, then its limit: here the kernel refuses the limit (no quota),
    // and the reason reaches the volume's error; a kernel with XFS quota (and prjquota) would
    // set it, and the read-back would pass.
    let out = srv
        .run_inside(&format!(
            "{functions}cd '{XFS_ROOT}/team/v 42' && nfsprov_xpset 42 1000000000"
        ))
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    if out.status.success() {
        let report = inside(
            srv,
            &format!("xfs_quota -x -c 'report -p -b -n -N' {XFS_ROOT}"),
        );
        let m = nfsprov::backend::xfs::parse_report(&report);
        assert_eq!(m.get(&42).map(|x| x.1), Some(976_562 * 1024), "{report}");
    } else {
        assert!(
            said.contains("limiting XFS project 42 (/srv/nfsprov/xfs/team/v 42) to 1000000000 bytes failed: xfs_quota: cannot set limits"),
            "{said}"
        );
    }
    for p in ["team/v 42", "team/v 42/sub", "team/v 42/sub/f"] {
        assert_eq!(lsproj(p).trim(), "projid = 42", "{p}");
    }
    assert_eq!(
        lsproj("team").trim(),
        "projid = 0",
        "the parent is not the volume's"
    );

    // A project id that is not a number never reaches xfs_quota.
    let out = srv
        .run_inside(&format!(
            "{functions}cd '{XFS_ROOT}/team/v 42' && nfsprov_xpset '1; touch /tmp/x' 1000"
        ))
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("is not a positive number"));

    // On delete: the limit goes back to 0 (refused here as above) and the project id is
    // cleared from the volume's tree (it carries the volume's mark).
    inside(
        srv,
        &format!("{functions}nfsprov_xpoff {XFS_ROOT} 'team/v 42' 42 0; true"),
    );
    for p in ["team/v 42", "team/v 42/sub", "team/v 42/sub/f"] {
        assert_eq!(lsproj(p).trim(), "projid = 0", "{p}");
    }
    // A directory that is not the volume's (no mark, not owned) keeps its project id.
    inside(
        srv,
        &format!(
            "mkdir '{XFS_ROOT}/other' && cd '{XFS_ROOT}/other' && xfs_quota -x -c 'project -s -p . 43' {XFS_ROOT} >/dev/null"
        ),
    );
    inside(
        srv,
        &format!("{functions}nfsprov_xpoff {XFS_ROOT} other 43 0; true"),
    );
    assert_eq!(lsproj("other").trim(), "projid = 43");

    // nfsprov_mkxp as a pass calls it: the directory as nfsprov_mkg makes it (mark, owner,
    // mode), the project id on it, and one report line for the volume under the pass's
    // marker, carrying the limit's failure here.
    let out = srv
        .run_inside(&format!(
            "{functions}nfsprov_mkxp '@@n mk' {XFS_ROOT} team 1000:1000 0750 44 'v 44' 0 2000000000"
        ))
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.last(), Some(&"@@n mk 44 1"), "{said}");
    assert!(
        said.contains(
            "limiting XFS project 44 (/srv/nfsprov/xfs/team/v 44) to 2000000000 bytes failed"
        ),
        "{said}"
    );
    assert_eq!(lsproj("team/v 44").trim(), "projid = 44");
    assert_eq!(
        inside(srv, &format!("stat -c '%u:%g %a' '{XFS_ROOT}/team/v 44'")).trim(),
        "1000:1000 750"
    );
    inside(
        srv,
        &format!("test -f '{XFS_ROOT}/team/v 44/.nfsprov-volume-44'"),
    );
    // A name taken by someone else: nfsprov_mkg's reason comes through, nothing is touched.
    inside(srv, &format!("mkdir '{XFS_ROOT}/team/taken'"));
    let out = srv
        .run_inside(&format!(
            "{functions}nfsprov_mkxp '@@n mk' {XFS_ROOT} team 1000:1000 0750 45 taken 0 2000000000"
        ))
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.ends_with("/srv/nfsprov/xfs/team/taken already exists on the server and was not created by nfsprov; ask an admin to adopt it\n@@n mk 45 1\n"),
        "{said:?}"
    );
    assert_eq!(lsproj("team/taken").trim(), "projid = 0");

    // A resize reads the project's line first; without quota there is none, so it fails
    // with that reason and changes nothing.
    let out = srv
        .run_inside(&format!(
            "{functions}{}\nnfsprov_rsx '{XFS_ROOT}/team/v 44' 1000000000 44",
            nfsprov::backend::xfs::RESIZE_FN
        ))
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "/srv/nfsprov/xfs/team/v 44: XFS project 44 has no quota on /srv/nfsprov/xfs"
    );
}
