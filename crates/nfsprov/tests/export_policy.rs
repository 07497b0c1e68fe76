//! Export policy against a real knfsd test bed (sshd + exportfs): under the safe defaults an
//! ordinary user's volume reaches etab with `root_squash` and `secure`, a refused request
//! reaches nothing, and a root path's forced `subtree_check` reaches etab.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const POOL: &str = "/srv/nfsprov/pool1";

/// The option tokens exportfs wrote to etab for `client` of the export at `path`.
fn etab_tokens(srv: &TestbedServer, path: &str, client: &str) -> Vec<String> {
    let etab = srv.etab().unwrap();
    let entry = etab_entries(&etab, path)
        .into_iter()
        .find(|e| e.starts_with(&format!("{client}(")))
        .unwrap_or_else(|| panic!("no etab entry for {client} at {path}:\n{etab}"));
    let opts = entry[client.len() + 1..].trim_end_matches(')');
    opts.split(',').map(String::from).collect()
}

async fn set_policy(env: &Env, policy: Value) -> Value {
    let (s, rp) = env
        .req(
            Method::PATCH,
            Some(ADMIN),
            "/api/v1/rootpaths/1",
            Some(json!({ "export_policy": policy })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{rp}");
    rp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_defaults_and_a_forced_subtree_check_reach_etab() {
    let env = Env::start(1, 100, 50).await;
    let srv = env.server("srv1");
    // The harness's root paths allow everything; this one goes back to the safe defaults.
    let rp = set_policy(&env, json!({})).await;
    assert_eq!(rp["export_policy"]["world_writable"], false, "{rp}");

    // Refused before anything is recorded: no volume, no directory, nothing in etab.
    let (s, v) = env
        .create(
            ALICE,
            1,
            "refused",
            1,
            json!([{"host": "10.1.2.0/24", "options": "rw,no_root_squash"}]),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["field"], "clients[0].options", "{v}");
    assert!(env.all_volumes().await.is_empty());

    // A compliant volume: exportfs holds it with root squash and secure ports.
    let path = format!("{POOL}/safe");
    let (s, v) = env
        .create(
            ALICE,
            1,
            "safe",
            1,
            json!([{"host": "10.1.2.0/24", "options": "rw"}, {"host": "*", "options": "ro"}]),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "available", "{v}");
    let id = v["id"].as_i64().unwrap();
    for client in ["10.1.2.0/24", "*"] {
        let tokens = etab_tokens(srv, &path, client);
        for want in ["root_squash", "secure", "no_subtree_check"] {
            assert!(tokens.iter().any(|t| t == want), "{client}: {tokens:?}");
        }
        for unwanted in ["no_root_squash", "insecure", "subtree_check"] {
            assert!(
                !tokens.iter().any(|t| t == unwanted),
                "{client}: {tokens:?}"
            );
        }
    }
    assert!(!srv.host_path(&format!("{POOL}/refused")).exists());
    assert!(etab_entries(&srv.etab().unwrap(), &format!("{POOL}/refused")).is_empty());

    // The admin forces subtree_check: a new volume, and one changed since, carry it to etab.
    let rp = set_policy(&env, json!({"subtree_check": true})).await;
    assert_eq!(rp["export_policy"]["subtree_check"], true, "{rp}");
    let (s, v) = env
        .create(
            ALICE,
            1,
            "checked",
            1,
            json!([{"host": "10.1.3.0/24", "options": "rw"}]),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["clients"][0]["options"], "rw,subtree_check", "{v}");
    let tokens = etab_tokens(srv, &format!("{POOL}/checked"), "10.1.3.0/24");
    assert!(tokens.iter().any(|t| t == "subtree_check"), "{tokens:?}");
    assert!(
        !tokens.iter().any(|t| t == "no_subtree_check"),
        "{tokens:?}"
    );

    let (s, v) = env
        .patch_clients(
            ALICE,
            id,
            json!([{"host": "10.1.2.0/24", "options": "rw,no_subtree_check"}]),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = env
        .patch_clients(ALICE, id, json!([{"host": "10.1.2.0/24", "options": "rw"}]))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "available", "{v}");
    let tokens = etab_tokens(srv, &path, "10.1.2.0/24");
    assert!(tokens.iter().any(|t| t == "subtree_check"), "{tokens:?}");
    assert!(tokens.iter().any(|t| t == "root_squash"), "{tokens:?}");
    assert!(etab_entries(&srv.etab().unwrap(), &path).len() == 1);
}
