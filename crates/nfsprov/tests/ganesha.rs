//! The real NFS data path: nfs-ganesha servers and client hosts in their own network
//! namespaces; reads and writes with libnfs (`nfs-cp`, `nfs-cat`, `nfs-ls`) over NFSv3 and v4.

mod common;

use std::time::{Duration, Instant};

use common::nfs::Nfs;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const VERSIONS: [u8; 2] = [3, 4];

fn client_addr(env: &Env, name: &str) -> String {
    env.tb.client(name).unwrap().addr.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rw_ro_and_unlisted_clients_over_v3_and_v4() {
    let env = Env::start_ganesha(1, 3, 100, 100).await;
    let (c1, c2) = (client_addr(&env, "client1"), client_addr(&env, "client2"));
    env.create_available("shared",
        // no_root_squash on the ro client too: libnfs writes files 0660 and acts as root.
        json!([{"host": c1, "options": "rw,no_root_squash"}, {"host": c2, "options": "ro,no_root_squash"}]),
    )
    .await;
    let nfs = Nfs::new(&env);
    let vol = "/srv/nfsprov/pool1/shared";
    for v in VERSIONS {
        let file = format!("{vol}/from-client1-v{v}.txt");
        nfs.write("client1", &file, v, &format!("hello v{v}"), "")
            .unwrap();
        assert_eq!(
            nfs.read("client1", &file, v).unwrap(),
            format!("hello v{v}")
        );
        // The file really is on the server, owned by root (no_root_squash).
        let host = env.server("srv1").host_path(&file);
        assert_eq!(
            std::fs::read_to_string(&host).unwrap(),
            format!("hello v{v}")
        );
        {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(std::fs::metadata(&host).unwrap().uid(), 0);
        }
    }
    for v in VERSIONS {
        let file = format!("{vol}/from-client1-v{v}.txt");
        let got = nfs.read("client2", &file, v);
        assert_eq!(
            got.as_deref(),
            Ok(format!("hello v{v}").as_str()),
            "ro client reads (v{v})"
        );
        let err = nfs
            .write("client2", &format!("{vol}/nope-v{v}"), v, "x", "")
            .unwrap_err();
        assert!(
            err.contains("ROFS"),
            "ro client write must fail read-only (v{v}): {err}"
        );
        let err = nfs.read("client3", &file, v).unwrap_err();
        let refused = if v == 3 {
            "MNT3ERR_ACCES"
        } else {
            "NFS4ERR_NOENT"
        };
        assert!(
            err.contains(refused),
            "unlisted client is refused (v{v}): {err}"
        );
    }
    assert!(
        !env.server("srv1")
            .host_path(&format!("{vol}/nope-v3"))
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_applies_live_without_restart_or_disturbing_others() {
    let env = Env::start_ganesha(1, 3, 100, 100).await;
    let (c1, c2) = (client_addr(&env, "client1"), client_addr(&env, "client2"));
    let other = env
        .create_available(
            "other",
            json!([{"host": c1, "options": "rw,no_root_squash"}]),
        )
        .await;
    let id = env
        .create_available(
            "changing",
            json!([{"host": c2, "options": "ro"}, {"host": c1, "options": "rw"}]),
        )
        .await;
    let nfs = Nfs::new(&env);
    let srv = env.server("srv1");
    let pid = srv.ganesha_pid().expect("ganesha runs");
    let err = nfs
        .write("client2", "/srv/nfsprov/pool1/changing/a", 3, "x", "")
        .unwrap_err();
    assert!(err.contains("ROFS"), "{err}");

    // Reads of the other volume in flight across the reload, sequenced by their pipes: each
    // has read from ganesha before the PATCH (its first bytes came through), is held there
    // until ganesha logged the reload, and reads the rest after it, on the same mount.
    let big: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(srv.host_path("/srv/nfsprov/pool1/other/big"), &big).unwrap();
    let client1 = nfs.client("client1");
    let mut held: Vec<_> = VERSIONS
        .iter()
        .map(|v| {
            client1
                .start_held_read(
                    &nfs.url("/srv/nfsprov/pool1/other/big", *v, ""),
                    64 << 10,
                    Duration::from_secs(30),
                )
                .unwrap_or_else(|e| panic!("v{v} read starts: {e:#}"))
        })
        .collect();
    let log_start = std::fs::metadata(srv.ganesha_log()).unwrap().len();
    let (s, v) = env
        .patch_clients(
            ALICE,
            id,
            json!([{"host": c2, "options": "rw,no_root_squash"}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "available");
    let log =
        String::from_utf8_lossy(&std::fs::read(srv.ganesha_log()).unwrap()[log_start as usize..])
            .into_owned();
    assert!(
        log.contains("initiating export list reload") && log.contains("Reread exports complete"),
        "the PATCH reloaded ganesha: {log}"
    );
    for (h, v) in held.iter_mut().zip(VERSIONS) {
        assert!(
            h.in_flight(),
            "the v{v} read is still in flight after the reload"
        );
    }
    for (h, v) in held.into_iter().zip(VERSIONS) {
        let got = h
            .finish(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("v{v} read across the reload: {e:#}"));
        assert!(got == big, "the v{v} read across the reload got other data");
    }

    // ro -> rw took effect; client1 was removed; no restart happened.
    nfs.write("client2", "/srv/nfsprov/pool1/changing/now-rw", 3, "y", "")
        .unwrap();
    nfs.write("client2", "/srv/nfsprov/pool1/changing/now-rw4", 4, "y", "")
        .unwrap();
    let err = nfs
        .write("client1", "/srv/nfsprov/pool1/changing/gone", 3, "z", "")
        .unwrap_err();
    assert!(err.contains("MNT3ERR_ACCES"), "{err}");
    assert_eq!(srv.ganesha_pid(), Some(pid), "ganesha was not restarted");
    assert_eq!(env.volume(other).await["state"], "available");
    nfs.write("client1", "/srv/nfsprov/pool1/other/after", 4, "still", "")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squash_owners_and_delete_removes_access_for_everyone() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::start_ganesha(1, 2, 100, 100).await;
    let (c1, c2) = (client_addr(&env, "client1"), client_addr(&env, "client2"));
    // Mode 0777 so the squashed user may write too.
    let (s, v) = env
        .req(Method::POST, Some(ALICE), "/api/v1/volumes?wait=true",
             Some(json!({"root_path_id": 1, "sub_path": "squashy", "size_gb": 1, "mode": "0777",
                         "clients": [{"host": c1, "options": "rw,no_root_squash"},
                                     {"host": c2, "options": "rw,root_squash,anonuid=4321,anongid=4322"}]})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_i64().unwrap();
    let nfs = Nfs::new(&env);
    let srv = env.server("srv1");
    nfs.write("client1", "/srv/nfsprov/pool1/squashy/by-root", 3, "a", "")
        .unwrap();
    nfs.write(
        "client2",
        "/srv/nfsprov/pool1/squashy/by-squashed-root",
        3,
        "b",
        "",
    )
    .unwrap();
    nfs.write(
        "client2",
        "/srv/nfsprov/pool1/squashy/by-user",
        3,
        "c",
        "&uid=1000&gid=1001",
    )
    .unwrap();
    let owner = |f: &str| {
        let md =
            std::fs::metadata(srv.host_path(&format!("/srv/nfsprov/pool1/squashy/{f}"))).unwrap();
        (md.uid(), md.gid())
    };
    assert_eq!(owner("by-root"), (0, 0), "no_root_squash keeps root");
    assert_eq!(
        owner("by-squashed-root"),
        (4321, 4322),
        "root_squash maps root to anonuid"
    );
    assert_eq!(
        owner("by-user"),
        (1000, 1001),
        "other users are not squashed"
    );

    let (s, _) = env.delete_wait(ALICE, id).await;
    assert_eq!(s, StatusCode::OK);
    for who in ["client1", "client2"] {
        for v in VERSIONS {
            let err = nfs
                .read(who, "/srv/nfsprov/pool1/squashy/by-root", v)
                .unwrap_err();
            assert!(
                err.contains("MNT3ERR") || err.contains("NFS4ERR_NOENT") || err.contains("NOENT"),
                "{who} v{v} after delete: {err}"
            );
        }
    }
    assert!(
        srv.host_path("/srv/nfsprov/pool1/.nfsprov-trash")
            .join(id.to_string())
            .join("by-root")
            .exists()
    );
    assert!(
        !std::fs::read_to_string(srv.ganesha_conf_dir().join("nfsprov.conf"))
            .unwrap()
            .contains("squashy")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ganesha_killed_with_changes_pending_then_restarted() {
    let mut env = Env::start_ganesha(1, 1, 100, 100).await;
    env.restart_with(&[("NFSPROV_MAX_BACKOFF_SECS", "1")]).await;
    let c1 = client_addr(&env, "client1");
    env.server("srv1").kill_ganesha().unwrap();
    let id = env
        .create_accepted(
            "pending",
            json!([{"host": c1, "options": "rw,no_root_squash"}]),
        )
        .await;
    let v = env
        .wait_volume(id, Duration::from_secs(20), |v| {
            v["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("ganesha is not running"))
        })
        .await;
    assert_eq!(v["state"], "creating");
    let (_, servers) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/servers", None)
        .await;
    assert_eq!(servers[0]["status"], "down", "{servers}");
    assert!(
        servers[0]["status_message"]
            .as_str()
            .unwrap()
            .contains("ganesha is not running")
    );

    env.server("srv1").start_ganesha().unwrap();
    let v = env
        .wait_volume(id, Duration::from_secs(30), |v| v["state"] == "available")
        .await;
    assert_eq!(v["last_error"], Value::Null);
    let nfs = Nfs::new(&env);
    nfs.write("client1", "/srv/nfsprov/pool1/pending/ok", 3, "applied", "")
        .unwrap();
    assert_eq!(
        nfs.read("client1", "/srv/nfsprov/pool1/pending/ok", 4)
            .unwrap(),
        "applied"
    );
}

// No kernel-NFS data-path test: these machines have no kernel nfsd (/proc/fs/nfsd is absent),
// so knfsd exports are verified through /var/lib/nfs/etab (lifecycle, validation, concurrency,
// recovery, capture) and the data path through ganesha above.

/// ganesha's live client entry names of the export at `path` on `srv1` (D-Bus `DisplayExport`).
fn live_client_names(env: &Env, path: &str) -> Vec<String> {
    common::nfs::live_entries(env, "srv1", path)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect()
}

// Every client form and option, what ganesha holds for each, who gets in and the squash
// settings by file owners: tests/matrix.rs.

/// Drift: ganesha's live client entry for a volume differs from the rule (same access, another
/// client) while nfsprov's file is as nfsprov wrote it. Re-applying the volume (same clients,
/// so the file is not rewritten) must see the difference by the entry's name, not pass it by
/// position and access bits, and reload ganesha so the rule holds again (a difference that a
/// reload does not cure leaves the volume in `error`:
/// `a_client_entry_ganesha_does_not_take_leaves_the_volume_in_error`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_client_entry_that_differs_is_caught_and_reloaded() {
    let env = Env::start_ganesha(1, 2, 100, 100).await;
    let (c1, c2) = (client_addr(&env, "client1"), client_addr(&env, "client2"));
    let clients = json!([{"host": c1, "options": "rw,no_root_squash"}]);
    let id = env.create_available("drift", clients.clone()).await;
    let srv = env.server("srv1");
    let conf_path = srv.ganesha_conf_dir().join("nfsprov.conf");
    let ours = std::fs::read_to_string(&conf_path).unwrap();
    assert!(ours.contains(&format!("Clients = {c1};")), "{ours}");
    // Someone reloads ganesha with the volume exported to client2 instead, then puts
    // nfsprov's file back.
    let log_start = std::fs::metadata(srv.ganesha_log()).unwrap().len();
    std::fs::write(
        &conf_path,
        ours.replace(&format!("Clients = {c1};"), &format!("Clients = {c2};")),
    )
    .unwrap();
    let pid = srv.ganesha_pid().unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read(srv.ganesha_log()).unwrap();
        if String::from_utf8_lossy(&log[log_start as usize..]).contains("Reread exports complete") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ganesha did not re-read its exports"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(&conf_path, &ours).unwrap();
    let vol = "/srv/nfsprov/pool1/drift";
    assert_eq!(live_client_names(&env, vol), vec![format!("{c2}/32")]);

    let (s, v) = env.patch_clients(ALICE, id, clients).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "available", "{v}");
    assert_eq!(
        live_client_names(&env, vol),
        vec![format!("{c1}/32")],
        "the volume is available only once ganesha holds its client again"
    );
    assert_eq!(srv.ganesha_pid(), Some(pid), "reloaded, not restarted");
    let nfs = Nfs::new(&env);
    nfs.write("client1", &format!("{vol}/back"), 3, "x", "")
        .unwrap();
    let err = nfs
        .write("client2", &format!("{vol}/stray"), 3, "x", "")
        .unwrap_err();
    assert!(err.contains("MNT3ERR_ACCES"), "{err}");
    assert!(
        env.log()
            .contains("live exports did not match the managed file"),
        "the pass saw the drift"
    );
}

/// The bytes of nfsprov's file on the server.
fn managed_bytes(env: &Env) -> Vec<u8> {
    std::fs::read(env.server("srv1").ganesha_conf_dir().join("nfsprov.conf")).unwrap()
}

/// Point the server's ganesha.conf at another file in place of nfsprov's (as an admin's
/// mistake would), or back with `nfsprov.conf`. Takes effect at ganesha's next reload.
fn include_instead(env: &Env, file: &str) {
    let main = env.server("srv1").ganesha_conf_dir().join("ganesha.conf");
    let text = std::fs::read_to_string(&main).unwrap();
    let (head, _) = text
        .rsplit_once("%include \"/etc/ganesha/")
        .unwrap_or_else(|| panic!("no %include in:\n{text}"));
    std::fs::write(&main, format!("{head}%include \"/etc/ganesha/{file}\"\n")).unwrap();
}

/// Verification that can fail on a client entry: ganesha re-reads a stale copy of nfsprov's
/// file (its ganesha.conf includes the copy), so a PATCH is written and reloaded but never
/// taken, and no reload cures it. The live entry is another client with the same access bits:
/// it is caught by its name (not passed by position and bits), the volume is `error` naming the
/// entry, and stays so through the forced re-reloads; when ganesha reads nfsprov's file again,
/// the volume converges by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_entry_ganesha_does_not_take_leaves_the_volume_in_error() {
    let mut env = Env::start_ganesha(1, 3, 100, 100).await;
    env.restart_with(&[
        ("NFSPROV_RESYNC_SECS", "1"),
        ("NFSPROV_MAX_BACKOFF_SECS", "1"),
    ])
    .await;
    let (c1, c3) = (client_addr(&env, "client1"), client_addr(&env, "client3"));
    let id = env
        .create_available(
            "moved",
            json!([{"host": c1, "options": "rw,no_root_squash"}]),
        )
        .await;
    let etc = env.server("srv1").ganesha_conf_dir();
    std::fs::copy(etc.join("nfsprov.conf"), etc.join("stale.conf")).unwrap();
    include_instead(&env, "stale.conf");

    let (s, v) = env
        .patch_clients(
            ALICE,
            id,
            json!([{"host": c3, "options": "rw,no_root_squash"}]),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(v["state"], "error", "{v}");
    let entry = format!("client entry 1 is {c1}/32, expected {c3}");
    assert!(v["last_error"].as_str().unwrap().contains(&entry), "{v}");
    assert!(
        String::from_utf8_lossy(&managed_bytes(&env)).contains(&format!("Clients = {c3};")),
        "nfsprov's file asks for client3"
    );
    // Each later pass sees the difference, forces a reload and judges again: after two
    // forced reloads the volume is still in error, and ganesha really still holds client1.
    let deadline = Instant::now() + Duration::from_secs(30);
    while env
        .log()
        .matches("live exports did not match the managed file; reloading")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "no forced reload:\n{}",
            env.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = env.volume(id).await;
    assert_eq!(v["state"], "error", "{v}");
    assert!(v["last_error"].as_str().unwrap().contains(&entry), "{v}");
    assert_eq!(
        live_client_names(&env, "/srv/nfsprov/pool1/moved"),
        vec![format!("{c1}/32")]
    );
    let nfs = Nfs::new(&env);
    let err = nfs
        .write("client3", "/srv/nfsprov/pool1/moved/no", 3, "x", "")
        .unwrap_err();
    assert!(err.contains("MNT3ERR_ACCES"), "{err}");

    include_instead(&env, "nfsprov.conf");
    let v = env
        .wait_volume(id, Duration::from_secs(30), |v| v["state"] == "available")
        .await;
    assert_eq!(v["last_error"], Value::Null, "{v}");
    nfs.write("client3", "/srv/nfsprov/pool1/moved/yes", 3, "x", "")
        .unwrap();
    let err = nfs
        .write("client1", "/srv/nfsprov/pool1/moved/gone", 3, "x", "")
        .unwrap_err();
    assert!(err.contains("MNT3ERR_ACCES"), "{err}");
}

/// Verification that can fail on the export manager: when DisplayExport errors for real (the
/// server's D-Bus refuses the call), the clients of a new volume are unverified, so it is not
/// `available` and says why; once the export manager answers, it converges by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_manager_error_leaves_the_volume_not_available() {
    let mut env = Env::start_ganesha(1, 1, 100, 100).await;
    env.restart_with(&[
        ("NFSPROV_RESYNC_SECS", "1"),
        ("NFSPROV_MAX_BACKOFF_SECS", "1"),
    ])
    .await;
    let c1 = client_addr(&env, "client1");
    let srv = env.server("srv1");
    srv.deny_export_manager(&["DisplayExport"]).unwrap();
    let (s, v) = env
        .create(
            ALICE,
            1,
            "unseen",
            1,
            json!([{"host": c1, "options": "rw,no_root_squash"}]),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(v["state"], "error", "{v}");
    let err = v["last_error"].as_str().unwrap();
    assert!(
        err.contains("did not show export") && err.contains("AccessDenied"),
        "{v}"
    );
    let id = v["id"].as_i64().unwrap();
    let first_error = v["last_error"].clone();
    // Re-verified every pass (each forces a reload and judges again), never passed while the
    // export manager errors, and the same error each time (not news on every pass).
    let deadline = Instant::now() + Duration::from_secs(30);
    while env
        .log()
        .matches("live exports did not match the managed file; reloading")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "not re-verified:\n{}", env.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = env.volume(id).await;
    assert_eq!(v["state"], "error", "{v}");
    assert_eq!(v["last_error"], first_error);

    srv.deny_export_manager(&[]).unwrap();
    let v = env
        .wait_volume(id, Duration::from_secs(30), |v| v["state"] == "available")
        .await;
    assert_eq!(v["last_error"], Value::Null, "{v}");
    Nfs::new(&env)
        .write("client1", "/srv/nfsprov/pool1/unseen/ok", 3, "x", "")
        .unwrap();
}

/// ganesha refusing one volume's export (the admin's own export already holds its pseudo
/// path): the error is blamed on that volume through the file line ganesha names, the other
/// volume stays available and served, and the previous file is back on the server byte for
/// byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_ganesha_refuses_is_blamed_and_the_previous_file_restored() {
    let env = Env::start_ganesha(1, 1, 100, 100).await;
    let c1 = client_addr(&env, "client1");
    let kept = env
        .create_available(
            "kept",
            json!([{"host": c1, "options": "rw,no_root_squash"}]),
        )
        .await;
    let srv = env.server("srv1");
    let etc = srv.ganesha_conf_dir();
    std::fs::write(
        etc.join("admin.conf"),
        "EXPORT {\n    Export_Id = 900;\n    Path = \"/srv/nfsprov/pool1/kept\";\n    \
         Pseudo = \"/srv/nfsprov/pool1/clash\";\n    Access_Type = None;\n    \
         FSAL { Name = VFS; }\n    CLIENT { Clients = *; Access_Type = RO; }\n}\n",
    )
    .unwrap();
    let main = etc.join("ganesha.conf");
    let text = std::fs::read_to_string(&main).unwrap();
    let include = "%include \"/etc/ganesha/nfsprov.conf\"";
    std::fs::write(
        &main,
        text.replace(
            include,
            &format!("%include \"/etc/ganesha/admin.conf\"\n{include}"),
        ),
    )
    .unwrap();
    let log = srv.reload_ganesha().unwrap();
    assert!(log.contains("Export 900 created"), "{log}");
    let before = managed_bytes(&env);

    let (s, v) = env
        .create(ALICE, 1, "clash", 1, json!([{"host": c1, "options": "rw"}]))
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(v["state"], "error", "{v}");
    let err = v["last_error"].as_str().unwrap();
    assert!(
        err.contains("the server rejected the export") && err.contains("nfsprov.conf:"),
        "{v}"
    );
    assert!(
        managed_bytes(&env) == before,
        "the previous file is restored"
    );
    let v = env.volume(kept).await;
    assert_eq!(v["state"], "available", "{v}");
    assert_eq!(v["last_error"], Value::Null, "{v}");
    assert_eq!(
        live_client_names(&env, "/srv/nfsprov/pool1/kept"),
        vec![format!("{c1}/32")]
    );
    Nfs::new(&env)
        .write("client1", "/srv/nfsprov/pool1/kept/still", 3, "x", "")
        .unwrap();
}

/// ganesha dying while it re-reads its exports (it is stopped when nfsprov sends the reload,
/// and killed once the SIGHUP is pending): the pass reports it (the server `down`, the volume
/// not `available`), puts the previous file back, and the volume converges when ganesha is
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ganesha_dying_on_reload_is_reported_and_converges_when_back() {
    let mut env = Env::start_ganesha(1, 1, 100, 100).await;
    env.restart_with(&[("NFSPROV_MAX_BACKOFF_SECS", "1")]).await;
    let c1 = client_addr(&env, "client1");
    let kept = env
        .create_available(
            "kept",
            json!([{"host": c1, "options": "rw,no_root_squash"}]),
        )
        .await;
    let srv = env.server("srv1");
    let before = managed_bytes(&env);
    srv.signal_ganesha("STOP").unwrap();
    let id = env
        .create_accepted(
            "late",
            json!([{"host": c1, "options": "rw,no_root_squash"}]),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !srv.ganesha_has_pending(1) {
        assert!(Instant::now() < deadline, "nfsprov never sent the reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        String::from_utf8_lossy(&managed_bytes(&env)).contains("/srv/nfsprov/pool1/late"),
        "the new file is installed while the reload is pending"
    );
    srv.kill_ganesha().unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    while !env
        .log()
        .contains("ganesha exited while re-reading its exports")
    {
        assert!(Instant::now() < deadline, "not reported:\n{}", env.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = env.volume(id).await;
    assert_eq!(v["state"], "creating", "{v}");
    assert!(
        v["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("ganesha")),
        "{v}"
    );
    let (_, servers) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/servers", None)
        .await;
    assert_eq!(servers[0]["status"], "down", "{servers}");
    // Each retry installs the file and puts the previous one back when the reload fails.
    let deadline = Instant::now() + Duration::from_secs(30);
    while managed_bytes(&env) != before {
        assert!(
            Instant::now() < deadline,
            "the previous file was not restored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    srv.start_ganesha().unwrap();
    let v = env
        .wait_volume(id, Duration::from_secs(30), |v| v["state"] == "available")
        .await;
    assert_eq!(v["last_error"], Value::Null, "{v}");
    assert_eq!(env.volume(kept).await["state"], "available");
    let nfs = Nfs::new(&env);
    nfs.write("client1", "/srv/nfsprov/pool1/late/ok", 3, "x", "")
        .unwrap();
    nfs.write("client1", "/srv/nfsprov/pool1/kept/ok", 4, "x", "")
        .unwrap();
}

/// ganesha refusing its own configuration (its ganesha.conf includes a file that is missing):
/// it re-reads nothing, so nothing of the pass can be live. That is reported on the server
/// and the waiting volume with ganesha's own message (not as a missing export), the previous
/// file is put back, the other volume stays available, and all converges once the
/// configuration is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ganesha_refusing_its_own_configuration_is_reported_on_the_server() {
    let mut env = Env::start_ganesha(1, 1, 100, 100).await;
    env.restart_with(&[("NFSPROV_MAX_BACKOFF_SECS", "1")]).await;
    let c1 = client_addr(&env, "client1");
    let kept = env
        .create_available(
            "kept",
            json!([{"host": c1, "options": "rw,no_root_squash"}]),
        )
        .await;
    let main = env.server("srv1").ganesha_conf_dir().join("ganesha.conf");
    let good = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        format!("{good}%include \"/etc/ganesha/missing.conf\"\n"),
    )
    .unwrap();
    let before = managed_bytes(&env);

    let id = env
        .create_accepted(
            "waiting",
            json!([{"host": c1, "options": "rw,no_root_squash"}]),
        )
        .await;
    let v = env
        .wait_volume(id, Duration::from_secs(30), |v| {
            v["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("ganesha refused its configuration"))
        })
        .await;
    assert_eq!(v["state"], "creating", "{v}");
    let err = v["last_error"].as_str().unwrap();
    assert!(err.contains("missing.conf) open error"), "{v}");
    let (_, servers) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/servers", None)
        .await;
    assert_eq!(servers[0]["status"], "error", "{servers}");
    assert!(
        servers[0]["status_message"]
            .as_str()
            .is_some_and(|m| m.contains("Error while parsing new configuration file")),
        "{servers}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while managed_bytes(&env) != before {
        assert!(
            Instant::now() < deadline,
            "the previous file was not restored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.volume(kept).await["state"], "available");

    std::fs::write(&main, good).unwrap();
    let v = env
        .wait_volume(id, Duration::from_secs(30), |v| v["state"] == "available")
        .await;
    assert_eq!(v["last_error"], Value::Null, "{v}");
    Nfs::new(&env)
        .write("client1", "/srv/nfsprov/pool1/waiting/ok", 3, "x", "")
        .unwrap();
}
