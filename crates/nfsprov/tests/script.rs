//! What the remote script of a pass may and may not do on a server, recreated the way an
//! attacker or a fault would: a directory already at a new volume's path, symbolic links
//! planted at or above a volume's path (and its trash), a full file system under
//! /etc/exports.d, broken foreign exports files, and exportfs output about other tenants.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::time::Duration;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const POOL: &str = "/srv/nfsprov/pool1";

/// Owner, group and mode of a path (not following a final symbolic link).
fn owner_mode(p: &Path) -> (u32, u32, u32) {
    let md = std::fs::symlink_metadata(p).unwrap();
    (md.uid(), md.gid(), md.mode() & 0o7777)
}

/// A directory outside any root path, as a local user of the server would own it.
fn outside_dir(env: &Env, name: &str) -> (String, std::path::PathBuf) {
    let inside = format!("/srv/nfsprov/{name}");
    let host = env.server("srv1").host_path(&inside);
    std::fs::create_dir_all(&host).unwrap();
    std::os::unix::fs::chown(&host, Some(4242), Some(4242)).unwrap();
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(host.join("precious"), "do not touch").unwrap();
    (inside, host)
}

/// Every etab line naming `needle` (a path), for an assertion message.
fn etab_naming(env: &Env, needle: &str) -> Vec<String> {
    env.server("srv1")
        .etab()
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

async fn create_with(env: &Env, user: (&str, &str), body: Value) -> (StatusCode, Value) {
    env.req(
        Method::POST,
        Some(user),
        "/api/v1/volumes?wait=true&timeout=30",
        Some(body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_directory_is_refused_not_taken_over() {
    let env = Env::start(1, 100, 20).await;
    let srv = env.server("srv1");
    let taken = srv.host_path(&format!("{POOL}/taken"));
    std::fs::create_dir_all(&taken).unwrap();
    std::os::unix::fs::chown(&taken, Some(4242), Some(4242)).unwrap();
    std::fs::set_permissions(&taken, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(taken.join("secret"), "someone else's").unwrap();

    let (s, v) = create_with(
        &env,
        ALICE,
        json!({"root_path_id": 1, "sub_path": "taken", "size_gb": 1, "mode": "2777",
               "uid": 1000, "gid": 1000,
               "clients": [{"host": "*", "options": "rw,no_root_squash"}]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(v["state"], "error");
    let err = v["last_error"].as_str().unwrap();
    assert!(
        err.contains(&format!(
            "{POOL}/taken already exists on the server and was not created by nfsprov; ask an admin to adopt it"
        )),
        "{err}"
    );
    assert_eq!(owner_mode(&taken), (4242, 4242, 0o700));
    assert_eq!(
        std::fs::read_to_string(taken.join("secret")).unwrap(),
        "someone else's"
    );
    assert_eq!(std::fs::read_dir(&taken).unwrap().count(), 1);
    assert!(etab_naming(&env, "/taken").is_empty());
    assert!(!env.managed_file("srv1").contains("/taken"));

    // The same pass's other volumes are not held up, and a new one still works.
    env.create_available("fresh", json!([{"host": "10.0.0.1"}]))
        .await;
    let fresh = srv.host_path(&format!("{POOL}/fresh"));
    assert!(fresh.join(".nfsprov-volume-2").is_file());
    assert!(etab_naming(&env, "/taken").is_empty());

    // Deleting the refused volume leaves the directory that was there alone.
    let (s, v) = env.delete_wait(ALICE, 1).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "deleted", "{v}");
    assert_eq!(owner_mode(&taken), (4242, 4242, 0o700));
    assert_eq!(
        std::fs::read_to_string(taken.join("secret")).unwrap(),
        "someone else's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symbolic_links_at_or_above_a_volume_path_are_never_followed() {
    let env = Env::start(1, 100, 20).await;
    let srv = env.server("srv1");
    let (outside, outside_host) = outside_dir(&env, "outside");
    let before = owner_mode(&outside_host);

    // (a) The volume's path itself is a link to a directory outside the root path.
    symlink(&outside, srv.host_path(&format!("{POOL}/link"))).unwrap();
    let (s, v) = create_with(
        &env,
        ALICE,
        json!({"root_path_id": 1, "sub_path": "link", "size_gb": 1, "mode": "2777",
               "uid": 1000, "gid": 1000, "clients": [{"host": "*", "options": "rw"}]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(v["state"], "error");
    let err = v["last_error"].as_str().unwrap();
    assert!(
        err.contains(&format!("{POOL}/link is a symbolic link")),
        "{err}"
    );

    // (b) A parent component of a nested sub path is such a link.
    symlink(&outside, srv.host_path(&format!("{POOL}/parent"))).unwrap();
    let (s, v) = create_with(
        &env,
        BOB,
        json!({"root_path_id": 1, "sub_path": "parent/child", "size_gb": 1, "mode": "0777",
               "uid": 1001, "gid": 1001, "clients": [{"host": "*", "options": "rw"}]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    let err = v["last_error"].as_str().unwrap();
    assert!(
        err.contains(&format!("{POOL}/parent is a symbolic link")),
        "{err}"
    );

    assert_eq!(owner_mode(&outside_host), before);
    assert!(!outside_host.join("child").exists());
    assert!(!outside_host.join(".nfsprov-volume-1").exists());
    assert_eq!(std::fs::read_dir(&outside_host).unwrap().count(), 1);
    assert!(etab_naming(&env, "/link").is_empty());
    assert!(etab_naming(&env, "/parent").is_empty());
    assert!(etab_naming(&env, &outside).is_empty());
    // Good volumes still work beside them.
    env.create_available("good", json!([{"host": "10.0.0.1"}]))
        .await;
}

/// An available volume whose path is later replaced by a link: never exported through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_whose_path_became_a_link_is_withdrawn() {
    let env = Env::start(1, 100, 20).await;
    let srv = env.server("srv1");
    let (outside, _) = outside_dir(&env, "outside");
    let id = env
        .create_available("swapped", json!([{"host": "10.0.0.1"}]))
        .await;
    let path = srv.host_path(&format!("{POOL}/swapped"));
    std::fs::rename(&path, srv.host_path(&format!("{POOL}/.moved-away"))).unwrap();
    symlink(&outside, &path).unwrap();
    // Any change on the server rewrites the file and so re-checks every export path.
    env.create_available("other", json!([{"host": "10.0.0.2"}]))
        .await;
    let v = env
        .wait_volume(id, Duration::from_secs(20), |v| v["state"] == "error")
        .await;
    let err = v["last_error"].as_str().unwrap();
    assert!(
        err.contains(&format!("{POOL}/swapped is a symbolic link")),
        "{err}"
    );
    assert!(etab_naming(&env, "/swapped").is_empty());
    assert!(!env.managed_file("srv1").contains("/swapped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_never_moves_or_removes_through_a_link() {
    let env = Env::start(1, 100, 20).await;
    let srv = env.server("srv1");
    let (s, rp) = env
        .req(
            Method::POST,
            Some(ADMIN),
            "/api/v1/rootpaths",
            Some(json!({"server": "srv1", "path": "/srv/nfsprov/pool2", "capacity_gb": 10, "delete_policy": "purge"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{rp}");
    let purge_rp = rp["id"].as_i64().unwrap();

    // retain and purge, each with its path replaced by a link to an outside directory.
    let (out_r, out_r_host) = outside_dir(&env, "outside-r");
    let (out_p, out_p_host) = outside_dir(&env, "outside-p");
    let retain = env
        .create_available("victim", json!([{"host": "10.0.0.1"}]))
        .await;
    let (s, v) = env
        .create(ALICE, purge_rp, "victim", 1, json!([{"host": "10.0.0.1"}]))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let purge = v["id"].as_i64().unwrap();
    for (root, target) in [(POOL, &out_r), ("/srv/nfsprov/pool2", &out_p)] {
        let p = srv.host_path(&format!("{root}/victim"));
        std::fs::remove_dir_all(&p).unwrap();
        symlink(target, &p).unwrap();
    }
    for id in [retain, purge] {
        let (s, v) = env.delete_wait(ALICE, id).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["state"], "deleted", "{v}");
    }
    for host in [&out_r_host, &out_p_host] {
        assert_eq!(
            std::fs::read_to_string(host.join("precious")).unwrap(),
            "do not touch"
        );
        assert_eq!(owner_mode(host), (4242, 4242, 0o750));
    }
    assert!(
        std::fs::symlink_metadata(srv.host_path(&format!("{POOL}/victim"))).is_err(),
        "the link itself is gone"
    );

    // A parent component replaced by a link: the delete waits, naming it; nothing outside moves.
    let (out_n, out_n_host) = outside_dir(&env, "outside-n");
    let nested = env
        .create_available("team/vol", json!([{"host": "10.0.0.1"}]))
        .await;
    let team = srv.host_path(&format!("{POOL}/team"));
    std::fs::remove_dir_all(&team).unwrap();
    symlink(&out_n, &team).unwrap();
    std::fs::create_dir(out_n_host.join("vol")).unwrap();
    std::fs::write(out_n_host.join("vol/data"), "outside data").unwrap();
    let (s, _) = env
        .req(
            Method::DELETE,
            Some(ALICE),
            &format!("/api/v1/volumes/{nested}"),
            None,
        )
        .await;
    assert!(s.is_success(), "{s}");
    let v = env
        .wait_volume(nested, Duration::from_secs(20), |v| {
            v["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("symbolic link"))
        })
        .await;
    assert_eq!(v["state"], "deleting", "{v}");
    assert!(
        v["last_error"]
            .as_str()
            .unwrap()
            .contains(&format!("{POOL}/team is a symbolic link")),
        "{v}"
    );
    assert_eq!(
        std::fs::read_to_string(out_n_host.join("vol/data")).unwrap(),
        "outside data"
    );
    assert!(
        !srv.host_path(&format!("{POOL}/.nfsprov-trash/{nested}"))
            .exists()
    );

    // The trash directory itself replaced by a link: nothing is moved into it.
    std::fs::remove_file(&team).unwrap();
    let (out_t, out_t_host) = outside_dir(&env, "outside-t");
    let trash = srv.host_path(&format!("{POOL}/.nfsprov-trash"));
    let _ = std::fs::remove_dir_all(&trash);
    symlink(&out_t, &trash).unwrap();
    let id = env
        .create_available("binned", json!([{"host": "10.0.0.1"}]))
        .await;
    let (s, _) = env
        .req(
            Method::DELETE,
            Some(ALICE),
            &format!("/api/v1/volumes/{id}"),
            None,
        )
        .await;
    assert!(s.is_success(), "{s}");
    env.wait_volume(id, Duration::from_secs(20), |v| {
        v["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(".nfsprov-trash is a symbolic link"))
    })
    .await;
    assert_eq!(std::fs::read_dir(&out_t_host).unwrap().count(), 1);
    assert!(srv.host_path(&format!("{POOL}/binned")).is_dir());
}

/// The file system holding /etc/exports.d fills up: the pass is abandoned (nothing installed,
/// nothing reloaded), the server says why, and it converges by itself once space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_exports_d_takes_no_export_down() {
    let mut env = Env::start(1, 100, 20).await;
    env.restart_with(&[("NFSPROV_MAX_BACKOFF_SECS", "1")]).await;
    let a = env
        .create_available("before-a", json!([{"host": "10.0.0.1"}]))
        .await;
    let b = env
        .create_available("before-b", json!([{"host": "10.0.0.2"}]))
        .await;
    let srv = env.server("srv1");

    // A small tmpfs, holding a copy of exports.d, mounted over it inside the server, then filled.
    let small = env.dir.path().join("small-exports-d");
    std::fs::create_dir_all(&small).unwrap();
    let out = srv
        .run_inside(&format!(
            "set -e; mount -t tmpfs -o size=64k nfsprov-test-full '{d}'; cp -a /etc/exports.d/. '{d}/'; \
             mount --bind '{d}' /etc/exports.d; dd if=/dev/zero of=/etc/exports.d/filler bs=1k 2>/dev/null || true; \
             ! printf x > /etc/exports.d/probe",
            d = small.display()
        ))
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let file_in_server = || {
        String::from_utf8_lossy(
            &srv.run_inside("cat /etc/exports.d/nfsprov.exports")
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    let file_before = file_in_server();
    assert!(file_before.contains("/before-b "), "{file_before}");

    let during = env
        .create_accepted("during", json!([{"host": "10.0.0.3"}]))
        .await;
    let v = env
        .wait_volume(during, Duration::from_secs(20), |v| {
            v["last_error"].is_string() || v["state"] != "creating"
        })
        .await;
    for p in ["before-a", "before-b"] {
        let etab = srv.etab().unwrap();
        assert_eq!(
            etab_entries(&etab, &format!("{POOL}/{p}")).len(),
            1,
            "{p} went down: {etab}"
        );
    }
    assert_eq!(v["state"], "creating", "{v}");
    assert!(
        v["last_error"]
            .as_str()
            .unwrap()
            .contains("(is its file system full?), so nothing was installed or reloaded"),
        "{v}"
    );
    let (_, servers) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/servers", None)
        .await;
    assert_eq!(servers[0]["status"], "error", "{servers}");
    assert!(
        servers[0]["status_message"]
            .as_str()
            .is_some_and(|m| m.contains("nothing was installed or reloaded")),
        "{servers}"
    );
    // Still exported, still in the file; the retries keep them so.
    for _ in 0..3 {
        for p in ["before-a", "before-b"] {
            assert_eq!(
                etab_entries(&srv.etab().unwrap(), &format!("{POOL}/{p}")).len(),
                1,
                "{p} went down"
            );
        }
        assert_eq!(file_in_server(), file_before);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let out = srv.run_inside("rm -f /etc/exports.d/filler").unwrap();
    assert!(out.status.success(), "{out:?}");
    env.wait_volume(during, Duration::from_secs(30), |v| {
        v["state"] == "available"
    })
    .await;
    for id in [a, b, during] {
        assert_eq!(env.volume(id).await["state"], "available");
    }
    for p in ["before-a", "before-b", "during"] {
        assert_eq!(
            etab_entries(&srv.etab().unwrap(), &format!("{POOL}/{p}")).len(),
            1
        );
    }
    env.wait_servers_reachable().await;
}

/// A broken line in a foreign file under /etc/exports.d is nobody's fault among the volumes:
/// it is a server-wide error, shown on the server and on the volumes that wait; and nothing
/// that names another tenant's clients reaches a volume's last_error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_file_errors_blame_no_volume_and_reveal_no_tenant() {
    let mut env = Env::start(1, 100, 20).await;
    env.kill_serve();
    // No periodic full pass during the test: Bob's volumes are only re-verified on demand.
    env.start_serve_with(&[
        ("NFSPROV_MAX_BACKOFF_SECS", "1"),
        ("NFSPROV_RESYNC_SECS", "3600"),
    ])
    .await;
    env.wait_servers_reachable().await;
    let srv = env.server("srv1");
    let hosts = srv.host_path("/etc/hosts");
    let hosts_before = std::fs::read_to_string(&hosts).unwrap();
    std::fs::write(
        &hosts,
        format!("{hosts_before}10.77.0.2 bob-secret-host.test\n"),
    )
    .unwrap();
    let mut innocent = Vec::new();
    for (i, name) in ["bob1", "bob2", "bob3", "bob4"].iter().enumerate() {
        let (s, v) = env
            .create(
                BOB,
                1,
                name,
                1,
                json!([{"host": "bob-secret-host.test"}, {"host": format!("10.0.1.{i}")}]),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        innocent.push(v["id"].as_i64().unwrap());
    }
    // Bob's client no longer resolves: every reload from now on says so.
    std::fs::write(&hosts, &hosts_before).unwrap();

    let foreign = srv.exports_d().join("old-nfsprov.exports");
    std::fs::write(
        &foreign,
        "/srv/nfsprov/legacy-a 10.0.0.9(rw)\n/srv/nfsprov/legacy-b *(rw,zzz)\n",
    )
    .unwrap();

    let id = env
        .create_accepted("alice1", json!([{"host": "10.0.0.1"}]))
        .await;
    let v = env
        .wait_volume(id, Duration::from_secs(20), |v| v["last_error"].is_string())
        .await;
    assert_eq!(v["state"], "creating", "{v}");
    let err = v["last_error"].as_str().unwrap();
    assert!(err.contains("old-nfsprov.exports:2"), "{err}");
    assert!(!err.contains("bob-secret-host"), "{err}");
    let (_, servers) = env
        .req(Method::GET, Some(ADMIN), "/api/v1/servers", None)
        .await;
    assert!(
        servers[0]["status_message"]
            .as_str()
            .is_some_and(|m| m.contains("old-nfsprov.exports:2")),
        "{servers}"
    );
    for b in &innocent {
        let v = env.volume(*b).await;
        assert_eq!(v["state"], "available", "blamed an innocent volume: {v}");
        assert_eq!(v["last_error"], Value::Null, "{v}");
    }

    // The admin fixes the foreign file: the waiting volume converges by itself.
    std::fs::remove_file(&foreign).unwrap();
    env.wait_volume(id, Duration::from_secs(30), |v| v["state"] == "available")
        .await;

    // A client of Alice's that does not resolve (looked up on the server before exportfs
    // runs): her error names her client, never Bob's (whose name contains hers).
    let (s, v) = env
        .create(ALICE, 1, "alice2", 1, json!([{"host": "secret-host.test"}]))
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    let err = v["last_error"].as_str().unwrap();
    assert!(
        err.contains("did not resolve on server srv1") && err.contains(": secret-host.test: "),
        "{err}"
    );
    assert!(!err.contains("bob-secret-host"), "{err}");
}

/// exportfs numbers the lines of a file without counting comment lines: nfsprov's mapping
/// from its messages to volumes must agree with the real exportfs. A volume's line that
/// exportfs refuses is blamed on that volume only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exportfs_line_numbers_map_to_the_right_volume() {
    use nfsprov::backend::{Backend, Knfsd, render};
    use nfsprov::plan::Plan;

    let mut env = Env::start(1, 100, 20).await;
    let mut ids = Vec::new();
    for name in ["one", "two", "three", "four"] {
        ids.push(
            env.create_available(name, json!([{"host": "10.0.0.1"}]))
                .await,
        );
    }
    // nfsprov's own plan and rendering of this server, from its database.
    let db = nfsprov::datastore::Datastore::open(&nfsprov::serve::db_path(&env.data_dir()))
        .await
        .unwrap();
    let volumes = db
        .server_volumes(nfsprov::model::ServerId(1))
        .await
        .unwrap();
    let plan = Plan::build(&volumes);
    let rendered = render::<Knfsd>(&plan);
    assert_eq!(rendered.text, env.managed_file("srv1"));
    // The third volume's line becomes one this exportfs refuses (as an exportfs that lacks
    // an option would), then the real exportfs reads the file.
    let bad = rendered.text.replace(
        &format!("{POOL}/three 10.0.0.1("),
        &format!("{POOL}/three 10.0.0.1(nosuchoption,"),
    );
    assert_ne!(bad, rendered.text);
    // (nfsprov would put its own file back.)
    env.kill_serve();
    let srv = env.server("srv1");
    std::fs::write(srv.exports_d().join("nfsprov.exports"), &bad).unwrap();
    let out = srv.run_inside("exportfs -ra 2>&1; exit 0").unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("nosuchoption"))
        .unwrap_or_else(|| panic!("exportfs did not refuse the line: {text}"));
    assert!(line.contains("/etc/exports.d/nfsprov.exports:3:"), "{line}");
    assert_eq!(
        Knfsd::blame(line, &rendered, &plan),
        Some(nfsprov::model::VolumeId(ids[2])),
        "{line}"
    );
}

/// Adopting an existing directory is an admin's decision, made explicitly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_adopts_an_existing_directory() {
    let env = Env::start(1, 100, 20).await;
    let srv = env.server("srv1");
    let legacy = srv.host_path(&format!("{POOL}/legacy"));
    std::fs::create_dir_all(&legacy).unwrap();
    std::fs::write(legacy.join("data"), "kept").unwrap();
    // Its owner planted a link where nfsprov writes its mark (the next volume id is 1).
    let (outside, outside_host) = outside_dir(&env, "outside");
    symlink(
        format!("{outside}/precious"),
        legacy.join(".nfsprov-volume-1"),
    )
    .unwrap();
    let body = json!({"root_path_id": 1, "sub_path": "legacy", "size_gb": 1, "mode": "2770",
                      "uid": 1500, "gid": 1500, "adopt_existing": true,
                      "clients": [{"host": "10.0.0.1", "options": "rw"}]});
    let (s, v) = create_with(&env, ALICE, body.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "forbidden", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("adopt_existing"),
        "{v}"
    );
    assert_eq!(owner_mode(&legacy), (0, 0, 0o755));

    let (s, u) = env
        .req(
            Method::PATCH,
            Some(ADMIN),
            "/api/v1/users/admin",
            Some(json!({"quota_gb": 10})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    let (s, v) = create_with(&env, ADMIN, body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "available");
    assert_eq!(owner_mode(&legacy), (1500, 1500, 0o2770));
    assert_eq!(
        std::fs::read_to_string(legacy.join("data")).unwrap(),
        "kept"
    );
    assert_eq!(etab_naming(&env, "/legacy").len(), 1);
    assert_eq!(
        std::fs::read_to_string(outside_host.join("precious")).unwrap(),
        "do not touch"
    );
    assert!(legacy.join(".nfsprov-volume-1").is_file());
}

/// In a parent others may write to, owner and mode are set on each new directory from inside
/// it (not by name); every volume of the pass gets them, not only the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_volume_of_a_pass_gets_its_owner_and_mode_in_a_shared_parent() {
    let mut env = Env::start(1, 100, 20).await;
    // One pass for all three creates below.
    env.restart_with(&[
        ("NFSPROV_BATCH_WINDOW_MS", "1500"),
        ("NFSPROV_BATCH_QUIET_MS", "0"),
    ])
    .await;
    let pool = env.server("srv1").host_path(POOL);
    std::fs::set_permissions(&pool, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut ids = Vec::new();
    for name in ["s1", "s2", "s3"] {
        let (s, v) = env
            .req(
                Method::POST,
                Some(ALICE),
                "/api/v1/volumes",
                Some(
                    json!({"root_path_id": 1, "sub_path": name, "size_gb": 1, "mode": "2770",
                            "uid": 1500, "gid": 1501,
                            "clients": [{"host": "10.0.0.1", "options": "rw"}]}),
                ),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        ids.push(v["id"].as_i64().unwrap());
    }
    for (id, name) in ids.iter().zip(["s1", "s2", "s3"]) {
        let v = env
            .wait_volume(*id, Duration::from_secs(30), |v| v["state"] != "creating")
            .await;
        assert_eq!(v["state"], "available", "{v}");
        assert_eq!(owner_mode(&pool.join(name)), (1500, 1501, 0o2770), "{name}");
    }
}
