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
