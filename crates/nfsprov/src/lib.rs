//! nfsprov: self-service NFS volumes on a fleet of Linux NFS servers, driven over SSH.
//!
//! See ARCHITECTURE.md for the map: `api` -> `datastore` (desired state) -> `reconcile`
//! (one task per server) -> `plan` + `knfsd` (one batch script) -> `remote` (one SSH session).

pub mod admin;
pub mod api;
pub mod audit;
pub mod auth;
pub mod backend;
pub mod datastore;
pub mod error;
pub mod fault;
pub mod forwarded;
pub mod ldap;
pub mod model;
pub mod plan;
pub mod precheck;
pub mod profile;
pub mod ratelimit;
pub mod reconcile;
pub mod remote;
pub mod serve;
pub mod settings;
pub mod spec;
