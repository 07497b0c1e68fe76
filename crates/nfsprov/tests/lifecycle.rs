//! Volume lifecycle against real sshd + exportfs servers: create, change, delete, the hootie
//! session replayed with curl, isolation between users, idempotency, server-side rejection.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_patch_delete_on_a_real_server() {
    let env = Env::start(1, 100, 50).await;
    let srv = env.server("srv1");
    let foreign_before = std::fs::read_to_string(srv.etc_exports()).unwrap();

    // Create with two clients, each with its own options, and an explicit mode and owner.
    let (s, v) = env
        .req(
            Method::POST,
            Some(ALICE),
            "/api/v1/volumes?wait=true",
            Some(json!({
                "root_path_id": 1, "sub_path": "team-a/proj1", "size_gb": 5,
                "clients": [{"host": "10.1.2.0/24", "options": "rw,no_root_squash"},
                            {"host": "*.lab.test", "options": ["ro"]}],
                "mode": "2770", "uid": 1234, "gid": 5678
            })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "available");
    assert_eq!(v["path"], "/srv/nfsprov/pool1/team-a/proj1");
    let id = v["id"].as_i64().unwrap();

    let dir = srv.host_path("/srv/nfsprov/pool1/team-a/proj1");
    assert!(dir.is_dir());
    assert_eq!(mode_of(&dir), 0o2770);
    {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(&dir).unwrap();
        assert_eq!((md.uid(), md.gid()), (1234, 5678));
    }
    let etab = srv.etab().unwrap();
    let entries = etab_entries(&etab, "/srv/nfsprov/pool1/team-a/proj1");
    assert_eq!(entries.len(), 2, "{etab}");
    let net = entries
        .iter()
        .find(|e| e.starts_with("10.1.2.0/24("))
        .unwrap();
    assert!(net.contains(",no_root_squash,") && net.starts_with("10.1.2.0/24(rw,"));
    let lab = entries
        .iter()
        .find(|e| e.starts_with("*.lab.test("))
        .unwrap();
    assert!(lab.starts_with("*.lab.test(ro,"));

    // PATCH: drop the network, make the wildcard rw, add an IPv6 client.
    let (s, v) = env.patch_clients(ALICE, id, json!([{"host": "*.lab.test", "options": "rw,sync"},
                                    {"host": "2001:db8::/32", "options": "ro,all_squash,anonuid=1000"}])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "available");
    let etab = srv.etab().unwrap();
    let entries = etab_entries(&etab, "/srv/nfsprov/pool1/team-a/proj1");
    assert_eq!(entries.len(), 2, "{etab}");
    assert!(entries.iter().any(|e| e.starts_with("*.lab.test(rw,")));
    assert!(
        entries
            .iter()
            .any(|e| e.starts_with("2001:db8::/32(ro,") && e.contains("anonuid=1000"))
    );
    assert!(!entries.iter().any(|e| e.starts_with("10.1.2.0/24")));

    // Data written into the volume is retained in the trash on delete (default policy).
    std::fs::write(dir.join("keep.txt"), "precious").unwrap();
    let (s, v) = env.delete_wait(ALICE, id).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "deleted");
    assert!(etab_entries(&srv.etab().unwrap(), "/srv/nfsprov/pool1/team-a/proj1").is_empty());
    assert!(!dir.exists());
    let trash = srv.host_path(&format!("/srv/nfsprov/pool1/.nfsprov-trash/{id}/keep.txt"));
    assert_eq!(std::fs::read_to_string(trash).unwrap(), "precious");
    assert!(!env.managed_file("srv1").contains("proj1"));

    // Lines nfsprov did not write are untouched, and still exported.
    assert_eq!(
        std::fs::read_to_string(srv.etc_exports()).unwrap(),
        foreign_before
    );
    assert!(!etab_entries(&srv.etab().unwrap(), "/srv/nfsprov/foreign").is_empty());

    // Quota is released by the delete.
    let alice = env.user_row("alice").await;
    assert_eq!(alice["used_gb"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_policy_removes_data() {
    let env = Env::start(1, 100, 50).await;
    let (s, rp) = env
        .req(
            Method::POST,
            Some(ADMIN),
            "/api/v1/rootpaths",
            // alice exports it rw to `*`: the root path's policy allows it.
            Some(json!({"server": "srv1", "path": "/srv/nfsprov/pool2", "capacity_gb": 10, "delete_policy": "purge",
                        "export_policy": {"world_writable": true}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{rp}");
    let rp_id = rp["id"].as_i64().unwrap();
    let (s, v) = env
        .create(
            ALICE,
            rp_id,
            "scratch",
            1,
            json!([{"host": "*", "options": "rw"}]),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let srv = env.server("srv1");
    let dir = srv.host_path("/srv/nfsprov/pool2/scratch");
    std::fs::write(dir.join("junk"), "x").unwrap();
    let id = v["id"].as_i64().unwrap();
    let (s, _) = env.delete_wait(ALICE, id).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!dir.exists());
    assert!(!srv.host_path("/srv/nfsprov/pool2/.nfsprov-trash").exists());
    assert!(etab_entries(&srv.etab().unwrap(), "/srv/nfsprov/pool2/scratch").is_empty());
}

fn curl(args: &[&str]) -> (u16, Value, String) {
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (rest, code) = text.rsplit_once('\n').unwrap();
    let (headers, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()))
    };
    (code.trim().parse().unwrap(), body, headers.to_string())
}

/// hootie's README session, byte for byte the same requests, with curl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hootie_readme_session_with_curl() {
    let env = Env::start(1, 100, 10).await;
    let base = env.base();
    let (code, body, _) = curl(&[&format!("{base}/api/v1.0/rootpaths/")]);
    assert_eq!(code, 200);
    assert_eq!(
        body,
        json!([{"pk": 1, "server_path": "127.0.0.1:/srv/nfsprov/pool1"}])
    );

    let alice = format!("{}:{}", ALICE.0, ALICE.1);
    let create = r#"{"options": "ro,sync", "root_path": 1, "sub_path": "_my_home_directory", "size_GB": 2, "allowed_hosts": "192.168.20.2"}"#;
    let (code, body, _) = curl(&[
        "-u",
        &alice,
        "-H",
        "Content-Type: application/json",
        "-X",
        "POST",
        "-d",
        create,
        &format!("{base}/api/v1.0/volumes/"),
    ]);
    // hootie answers 201 once the server has the volume, or 202 when its 5 s wait ran out
    // first (a slow machine): then it is applied later, and the client polls.
    assert!(code == 201 || code == 202, "{code}: {body}");
    assert_eq!(body["error"], "None", "{body}");
    let created = body["pk"].as_i64().unwrap();
    if code == 202 {
        assert!(
            body["detail"].as_str().unwrap().contains("not yet applied"),
            "{body}"
        );
        env.wait_volume(created, Duration::from_secs(60), |v| {
            v["state"] == "available"
        })
        .await;
    }
    assert_eq!(env.volume(created).await["state"], "available");
    // Really exported once it is available.
    let etab = env.server("srv1").etab().unwrap();
    let e = etab_entries(&etab, "/srv/nfsprov/pool1/_my_home_directory");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("192.168.20.2(ro,sync,"));

    let (code, body, headers) = curl(&[&format!("{base}/api/v1.0/volumes/")]);
    assert_eq!(code, 401);
    assert!(
        headers
            .to_lowercase()
            .contains("www-authenticate: basic realm=\"api\""),
        "{headers}"
    );
    assert_eq!(
        body,
        json!({"detail": "Authentication credentials were not provided."})
    );

    let (code, body, _) = curl(&["-u", &alice, &format!("{base}/api/v1.0/volumes/")]);
    assert_eq!(code, 200);
    let pk = body[0]["pk"].as_i64().unwrap();
    assert_eq!(
        body,
        json!([{"allowed_hosts": "192.168.20.2", "fileserver": "127.0.0.1",
                "fullpath": "/srv/nfsprov/pool1/_my_home_directory", "options": "ro,sync",
                "owner": "alice", "pk": pk, "root_path": 1, "size_GB": 2,
                "sub_path": "_my_home_directory"}])
    );
    let (code, one, _) = curl(&["-u", &alice, &format!("{base}/api/v1.0/volumes/{pk}/")]);
    assert_eq!(code, 200);
    assert_eq!(one, body[0]);

    assert_eq!(pk, created);

    // Another user: 404, not 403, for both show and delete; the admin sees it.
    let bob = format!("{}:{}", BOB.0, BOB.1);
    let (code, body, _) = curl(&["-u", &bob, &format!("{base}/api/v1.0/volumes/{pk}/")]);
    assert_eq!((code, body), (404, json!({"detail": "Not found."})));
    let etab_before = etab_entries(&etab, "/srv/nfsprov/pool1/_my_home_directory");
    let (code, _, _) = curl(&[
        "-u",
        &bob,
        "-X",
        "DELETE",
        &format!("{base}/api/v1.0/volumes/{pk}/"),
    ]);
    assert_eq!(code, 404);
    // Refused, and nothing happened to alice's volume: still hers, listed, available, exported.
    let (code, again, _) = curl(&["-u", &alice, &format!("{base}/api/v1.0/volumes/{pk}/")]);
    assert_eq!((code, &again), (200, &one));
    assert_eq!(env.volume(pk).await["state"], "available");
    let etab = env.server("srv1").etab().unwrap();
    assert_eq!(
        etab_entries(&etab, "/srv/nfsprov/pool1/_my_home_directory"),
        etab_before
    );
    let (code, body, _) = curl(&["-u", &bob, &format!("{base}/api/v1.0/volumes/")]);
    assert_eq!((code, body), (200, json!([])));
    let admin = format!("{}:{}", ADMIN.0, ADMIN.1);
    let (code, body, _) = curl(&["-u", &admin, &format!("{base}/api/v1.0/volumes/")]);
    assert_eq!(code, 200);
    assert_eq!(body.as_array().unwrap().len(), 1);

    let volumes_url = format!("{base}/api/v1.0/volumes/");
    let post_volume = |body: &str| {
        curl(&[
            "-u",
            &alice,
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            &volumes_url,
        ])
    };

    // Over quota: a 400 that says which limit and by how much (hootie answered 500).
    let big = r#"{"root_path": 1, "sub_path": "big", "size_GB": 9}"#;
    let (code, body, _) = post_volume(big);
    assert_eq!(code, 400, "{body}");
    let msg = body["size_GB"][0].as_str().unwrap();
    assert!(
        msg.contains("quota by 1 GB") && msg.contains("quota 10 GB"),
        "{msg}"
    );

    // A field error names the field.
    let bad = r#"{"root_path": 1, "sub_path": "../etc", "size_GB": 1}"#;
    let (code, body, _) = post_volume(bad);
    assert_eq!(code, 400);
    assert!(body["sub_path"][0].is_string(), "{body}");

    let (code, _, _) = curl(&[
        "-u",
        &alice,
        "-X",
        "DELETE",
        &format!("{base}/api/v1.0/volumes/{pk}/"),
    ]);
    assert_eq!(code, 204);
    env.wait_volume(pk, Duration::from_secs(10), |v| v["state"] == "deleted")
        .await;
    let etab = env.server("srv1").etab().unwrap();
    assert!(etab_entries(&etab, "/srv/nfsprov/pool1/_my_home_directory").is_empty());
    let (code, _, _) = curl(&["-u", &alice, &format!("{base}/api/v1.0/volumes/{pk}/")]);
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_and_locked_users() {
    let env = Env::start(1, 100, 20).await;
    let body =
        json!({"root_path_id": 1, "sub_path": "idem", "size_gb": 1, "clients": [{"host": "*"}]});
    let post = |key: &'static str, body: Value| {
        env.http
            .post(format!("{}/api/v1/volumes", env.base()))
            .basic_auth(ALICE.0, Some(ALICE.1))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let r1 = post("k-1", body.clone()).await.unwrap();
    assert_eq!(r1.status(), StatusCode::ACCEPTED);
    let v1: Value = r1.json().await.unwrap();
    let r2 = post("k-1", body.clone()).await.unwrap();
    assert!(r2.status() == StatusCode::ACCEPTED || r2.status() == StatusCode::CREATED);
    assert_eq!(r2.headers()["idempotent-replayed"], "true");
    let v2: Value = r2.json().await.unwrap();
    assert_eq!(v1["id"], v2["id"]);
    let mut other = body.clone();
    other["size_gb"] = json!(2);
    let r3 = post("k-1", other).await.unwrap();
    assert_eq!(r3.status(), StatusCode::CONFLICT);
    let e: Value = r3.json().await.unwrap();
    assert_eq!(e["error"]["field"], "Idempotency-Key");
    let (_, list) = env
        .req(Method::GET, Some(ALICE), "/api/v1/volumes", None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Locked: 403, nothing recorded.
    env.cli_ok(&["user", "set", "alice", "--locked", "true"]);
    let (s, e) = env
        .create(ALICE, 1, "locked", 1, json!([{"host": "*"}]))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    assert_eq!(e["error"]["code"], "locked");
    let (_, list) = env
        .req(Method::GET, Some(ALICE), "/api/v1/volumes", None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Bob cannot see, change or delete alice's volume: 404, and it stays as it was, in the
    // database and on the server.
    let id = v1["id"].as_i64().unwrap();
    let path = "/srv/nfsprov/pool1/idem";
    let before = env
        .wait_volume(id, Duration::from_secs(30), |v| v["state"] == "available")
        .await;
    let etab_before = etab_entries(&env.server("srv1").etab().unwrap(), path);
    assert_eq!(etab_before.len(), 1, "{etab_before:?}");
    let attempts = [
        (Method::GET, format!("/api/v1/volumes/{id}"), None),
        (Method::DELETE, format!("/api/v1/volumes/{id}"), None),
        (
            Method::PATCH,
            format!("/api/v1/volumes/{id}"),
            Some(json!({"clients": [{"host": "10.9.9.9", "options": "rw,no_root_squash"}]})),
        ),
        (Method::DELETE, format!("/api/v1.0/volumes/{id}/"), None),
    ];
    let unchanged = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("updated_at");
        v
    };
    for (m, url, body) in attempts {
        let (s, e) = env.req(m.clone(), Some(BOB), &url, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{m} {url}: {e}");
        let now = env.volume(id).await;
        assert_eq!(unchanged(&now), unchanged(&before), "{m} {url}");
    }
    // A pass over the server after the refusals (alice's next create waits for one): had any
    // of bob's requests been recorded, it would have changed or removed the export by now.
    env.cli_ok(&["user", "set", "alice", "--locked", "false"]);
    let other = env
        .create_available("idem-after", json!([{"host": "10.0.0.2"}]))
        .await;
    assert_eq!(
        etab_entries(&env.server("srv1").etab().unwrap(), path),
        etab_before
    );
    assert_eq!(unchanged(&env.volume(id).await), unchanged(&before));
    let (s, v) = env.delete_wait(ALICE, other).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Non-admins cannot use admin endpoints.
    let (s, _) = env
        .req(Method::GET, Some(BOB), "/api/v1/servers", None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

/// A client the server cannot resolve (looked up there before exportfs runs) is held back:
/// that volume alone goes to `error` naming the host; the others stay exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_rejection_hits_only_the_affected_volume() {
    let env = Env::start(1, 100, 20).await;
    let good = env
        .create_available("good", json!([{"host": "10.9.9.9"}]))
        .await;
    let (s, bad) = env
        .create(ALICE, 1, "bad", 1, json!([{"host": "nosuchhost.test"}]))
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{bad}");
    assert_eq!(bad["state"], "error");
    let err = bad["last_error"].as_str().unwrap();
    assert!(err.contains("nosuchhost.test"), "{err}");
    assert!(err.contains("did not resolve on server srv1"), "{err}");
    let srv = env.server("srv1");
    assert_eq!(
        etab_entries(&srv.etab().unwrap(), "/srv/nfsprov/pool1/good").len(),
        1
    );
    assert_eq!(env.volume(good).await["state"], "available");
    // Fixing the client through PATCH recovers the volume.
    let id = bad["id"].as_i64().unwrap();
    let (s, v) = env
        .patch_clients(
            ALICE,
            id,
            json!([{"host": "client1.test", "options": "ro"}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "available");
    assert_eq!(
        etab_entries(&srv.etab().unwrap(), "/srv/nfsprov/pool1/bad").len(),
        1
    );
}

/// exportfs fails on one volume (its directory was removed by hand): the file is rolled back,
/// that volume alone goes to `error` with exportfs's message, and the change to another volume
/// is applied in the next pass of the same reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_exportfs_is_rolled_back_and_blamed_on_one_volume() {
    let env = Env::start(1, 100, 20).await;
    let id_a = env
        .create_available("alpha", json!([{"host": "10.0.0.1"}]))
        .await;
    let id_b = env
        .create_available("beta", json!([{"host": "10.0.0.1"}]))
        .await;
    let srv = env.server("srv1");
    std::fs::remove_dir_all(srv.host_path("/srv/nfsprov/pool1/alpha")).unwrap();

    let (s, v) = env
        .patch_clients(ALICE, id_b, json!([{"host": "10.0.0.2", "options": "ro"}]))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "available");
    let a = env
        .wait_volume(id_a, Duration::from_secs(10), |v| v["state"] == "error")
        .await;
    let err = a["last_error"].as_str().unwrap();
    assert!(
        err.contains("Failed to stat /srv/nfsprov/pool1/alpha"),
        "{err}"
    );
    let file = env.managed_file("srv1");
    assert!(!file.contains("/srv/nfsprov/pool1/alpha"), "{file}");
    assert!(
        file.contains("/srv/nfsprov/pool1/beta 10.0.0.2(ro,"),
        "{file}"
    );
    let etab = srv.etab().unwrap();
    assert!(etab_entries(&etab, "/srv/nfsprov/pool1/beta")[0].starts_with("10.0.0.2(ro,"));
    assert!(env.log().contains("Failed to stat"));
}
