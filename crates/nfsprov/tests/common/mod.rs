//! The end-to-end tests' harness lives in the test bed crate (`nfsprov_testbed::harness`), shared
//! with the benchmarks; these tests run the `nfsprov` binary cargo built for them.
#![allow(dead_code, unused_imports)]

pub use nfsprov_testbed::harness::*;
pub use nfsprov_testbed::{Testbed, TestbedGuard, TestbedServer};

/// The `nfsprov` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_nfsprov");

pub mod btrfs;
pub mod ldap;
pub mod nfs;

/// What the admin API lists: servers (without what a reconciler records about them), root
/// paths, users.
pub async fn admin_lists(env: &Env) -> serde_json::Value {
    let mut all = serde_json::json!({});
    for path in ["/api/v1/servers", "/api/v1/rootpaths", "/api/v1/users"] {
        let (s, mut v) = env.req(reqwest::Method::GET, Some(ADMIN), path, None).await;
        assert_eq!(s, reqwest::StatusCode::OK, "{path}: {v}");
        // What the servers report (reachability, usage samples) changes on its own; the rest
        // is what an admin post could change.
        let measured: &[&str] = match path {
            "/api/v1/servers" => &["status", "status_message", "last_reconciled_at"],
            "/api/v1/rootpaths" => &["usage"],
            _ => &[],
        };
        for row in v.as_array_mut().unwrap() {
            let row = row.as_object_mut().unwrap();
            for k in measured {
                row.remove(*k);
            }
        }
        all[path] = v;
    }
    all
}
