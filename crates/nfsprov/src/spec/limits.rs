//! Bounds on what one request may ask for: sizes in GB and clients per volume.
//!
//! Every size, quota and capacity is at most [`MAX_GB`], so sums of them are far from `i64`'s
//! range (the datastore still adds with `checked_add`). The operator may lower the volume size
//! and client limits with `NFSPROV_MAX_VOLUME_GB` and `NFSPROV_MAX_CLIENTS` (read once, by
//! `settings` in `nfsprov serve`).

use std::sync::OnceLock;

use super::{SpecError, refuse};

/// Largest size, quota or capacity in GB anywhere: 2^40 GB (about a zettabyte).
pub const MAX_GB: i64 = 1 << 40;
/// Default largest volume: 1 PiB, in GB.
pub const DEFAULT_MAX_VOLUME_GB: i64 = 1 << 20;
/// Default most clients per volume.
pub const DEFAULT_MAX_CLIENTS: usize = 64;
/// Most clients an operator may allow per volume (one exports line stays manageable).
pub const MAX_CLIENTS_CEILING: usize = 4096;
/// Default most snapshots per volume.
pub const DEFAULT_MAX_SNAPSHOTS: usize = 16;
/// Most snapshots an operator may allow per volume.
pub const MAX_SNAPSHOTS_CEILING: usize = 1024;
/// Largest uid/gid: `u32::MAX` is chown's "leave unchanged" (-1), not an id.
pub const MAX_ID: u32 = u32::MAX - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_volume_gb: i64,
    pub max_clients: usize,
    /// Most live snapshots per volume.
    pub max_snapshots: usize,
}

impl Default for Limits {
    /// The limits where nothing was `install`ed: the environment is read (and checked) only by
    /// `settings`, for `nfsprov serve`.
    fn default() -> Limits {
        Limits {
            max_volume_gb: DEFAULT_MAX_VOLUME_GB,
            max_clients: DEFAULT_MAX_CLIENTS,
            max_snapshots: DEFAULT_MAX_SNAPSHOTS,
        }
    }
}

static LIMITS: OnceLock<Limits> = OnceLock::new();

/// The limits in force in this process: those `install`ed, else the defaults.
pub fn limits() -> Limits {
    *LIMITS.get_or_init(Limits::default)
}

/// Put `limits` in force (`nfsprov serve` does, at start, with the values `settings` checked).
/// False if limits were already in force.
pub fn install(limits: Limits) -> bool {
    LIMITS.set(limits).is_ok()
}

/// A volume size in GB: 1 to the volume size limit.
pub fn volume_size(size_gb: i64) -> Result<i64, SpecError> {
    volume_size_within(size_gb, limits().max_volume_gb)
}

fn volume_size_within(size_gb: i64, max: i64) -> Result<i64, SpecError> {
    if size_gb < 1 {
        refuse!("The size must be at least 1 GB.");
    }
    if size_gb > max {
        refuse!("The size is {size_gb} GB; the largest volume is {max} GB.");
    }
    Ok(size_gb)
}

/// A quota or capacity in GB: `min` to [`MAX_GB`].
pub fn gb_amount(gb: i64, min: i64) -> Result<i64, SpecError> {
    if gb < min {
        refuse!("It must be at least {min} GB.");
    }
    if gb > MAX_GB {
        refuse!("{gb} GB is more than the limit of {MAX_GB} GB.");
    }
    Ok(gb)
}

/// A uid or gid for the volume's directory.
pub fn owner_id(id: u32) -> Result<u32, SpecError> {
    if id > MAX_ID {
        refuse!("{id} is not a valid id; use 0 to {MAX_ID}.");
    }
    Ok(id)
}

/// Refuse more than the client limit (`count` may stop counting at limit + 1).
pub fn client_count(count: usize) -> Result<(), SpecError> {
    client_count_within(count, limits().max_clients)
}

pub(super) fn client_count_within(count: usize, max: usize) -> Result<(), SpecError> {
    if count > max {
        refuse!("There are more than {max} clients; a volume may have at most {max}.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bounded() {
        assert_eq!(volume_size_within(1, 10), Ok(1));
        assert_eq!(volume_size_within(10, 10), Ok(10));
        for bad in [0, -1, 11, i64::MAX, i64::MIN] {
            assert!(volume_size_within(bad, 10).is_err(), "{bad}");
        }
        assert!(volume_size(DEFAULT_MAX_VOLUME_GB).is_ok());
        assert!(volume_size(DEFAULT_MAX_VOLUME_GB + 1).is_err());
        assert!(gb_amount(0, 0).is_ok());
        assert!(gb_amount(0, 1).is_err());
        assert!(gb_amount(MAX_GB, 1).is_ok());
        assert!(gb_amount(MAX_GB + 1, 1).is_err());
        assert!(gb_amount(i64::MAX, 0).is_err());
        // A batch of the most creates the create thread records at once, each of the largest
        // size, cannot overflow a counter.
        assert!(MAX_GB.checked_mul(1 << 20).is_some());
    }

    #[test]
    fn ids_and_client_counts() {
        assert_eq!(owner_id(0), Ok(0));
        assert_eq!(owner_id(MAX_ID), Ok(MAX_ID));
        assert!(owner_id(u32::MAX).is_err());
        assert!(client_count_within(64, 64).is_ok());
        let e = client_count_within(65, 64).unwrap_err();
        assert!(e.0.contains("at most 64"), "{e}");
    }
}
