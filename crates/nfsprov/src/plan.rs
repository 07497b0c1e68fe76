//! The whole wanted state of one server, computed from the database alone (pure; no I/O).
//! A backend turns a [`Plan`] into one batch of remote commands and judges the result.

use std::collections::HashSet;

use crate::model::{ClientRule, DeletePolicy, Layout, Volume, VolumeId, VolumeState};

/// One export the server should have.
#[derive(Debug, Clone)]
pub struct Export {
    pub volume: VolumeId,
    /// `root/sub`: the root path as the admin registered it, the volume's sub path below it.
    pub path: String,
    pub root: String,
    pub sub: String,
    pub clients: Vec<ClientRule>,
    /// True when `clients` is the volume's current desired generation (not a last-known-good
    /// fallback kept while a newer generation is rejected).
    pub is_desired: bool,
    /// The volume was already `available`: its line should be on the server as it is, and its
    /// absence there is drift, not news.
    pub was_available: bool,
    /// Stable export id (nfs-ganesha's Export_Id).
    pub export_id: u32,
    pub generation: i64,
}

/// A directory that must exist: created with this mode and owner, or, if it already exists,
/// accepted only when nfsprov created it for this volume (or an admin asked to adopt it).
#[derive(Debug, Clone)]
pub struct Dir {
    pub volume: VolumeId,
    pub path: String,
    pub root: String,
    pub sub: String,
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    /// An admin asked to adopt a directory that already exists there (`adopt_existing`).
    pub adopt: bool,
    pub generation: i64,
    /// Its root path's layout: a plain directory, or a btrfs subvolume limited to `size_gb`.
    pub layout: Layout,
    pub size_gb: i64,
    /// A volume restored from a snapshot: (the snapshot's volume id, its name). Set by the
    /// reconciler from the database (`restores`), not by [`Plan::build`].
    pub restore: Option<(String, String)>,
}

/// A volume whose export must go and whose data must be retained or purged.
#[derive(Debug, Clone)]
pub struct Removal {
    pub volume: VolumeId,
    pub path: String,
    pub root: String,
    pub sub: String,
    pub policy: DeletePolicy,
    /// The volume was verified on the server at some point, so its directory is nfsprov's
    /// (created or adopted by it). Otherwise only a directory carrying nfsprov's mark for the
    /// volume is moved or removed: deleting a volume refused because its path was taken must
    /// not take the data that was there.
    pub owned: bool,
    /// Destination for `retain` (`<root>/.nfsprov-trash/<id>`).
    pub trash_path: String,
    pub generation: i64,
    /// Never exported (e.g. a create the server refused): its directory is removed if it is
    /// empty, whatever the policy; one with data in it still follows `policy`.
    pub never_exported: bool,
    /// Its root path's layout (an xfs-project volume's project is cleared first).
    pub layout: Layout,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Sorted by volume id, so the rendered file is stable.
    pub exports: Vec<Export>,
    pub create: Vec<Dir>,
    pub remove: Vec<Removal>,
    /// Volumes not exported because the server rejected their current generation and they
    /// have no earlier good one.
    pub withheld: Vec<VolumeId>,
    /// Verify every volume's directory, not only the changed ones (start-up and periodic
    /// resync: drift repair).
    pub full: bool,
    /// The mode and owner each exported volume's directory must keep (drift check).
    pub owners: Vec<Dir>,
    /// Directories whose mode or owner a previous pass found changed: put back in this one.
    pub repair: Vec<Dir>,
}

impl Plan {
    pub fn build(volumes: &[Volume]) -> Plan {
        Plan::build_excluding(volumes, &HashSet::new())
    }

    /// `excluded`: volumes the server refused earlier in this reconcile; they are left out
    /// entirely (not even their last good export) so the rest can be applied.
    pub fn build_excluding(volumes: &[Volume], excluded: &HashSet<VolumeId>) -> Plan {
        let mut plan = Plan::default();
        let mut sorted: Vec<&Volume> = volumes.iter().collect();
        sorted.sort_by_key(|v| v.id);
        for v in sorted {
            match v.state {
                VolumeState::Deleted => {}
                VolumeState::Deleting => plan.remove.push(Removal {
                    volume: v.id,
                    path: v.full_path(),
                    root: v.root_path.to_string(),
                    sub: v.sub_path.as_str().to_string(),
                    policy: v.delete_policy,
                    owned: v.applied_clients.is_some(),
                    trash_path: v.trash_path(),
                    generation: v.generation,
                    never_exported: v.applied_clients.is_none(),
                    layout: v.layout,
                }),
                _ if excluded.contains(&v.id) => plan.withheld.push(v.id),
                _ => {
                    let rejected = v.failed_generation == Some(v.generation);
                    let clients = if rejected {
                        v.applied_clients.clone()
                    } else {
                        Some(v.clients.clone())
                    };
                    let dir = Dir {
                        volume: v.id,
                        path: v.full_path(),
                        root: v.root_path.to_string(),
                        sub: v.sub_path.as_str().to_string(),
                        mode: v.mode.as_octal_string(),
                        uid: v.uid,
                        gid: v.gid,
                        adopt: v.adopt_existing,
                        generation: v.generation,
                        layout: v.layout,
                        size_gb: v.size_gb,
                        restore: None,
                    };
                    if v.applied_clients.is_none() && !rejected {
                        plan.create.push(dir);
                    } else if clients.is_some() {
                        plan.owners.push(dir);
                    }
                    match clients {
                        Some(clients) => plan.exports.push(Export {
                            volume: v.id,
                            path: v.full_path(),
                            root: v.root_path.to_string(),
                            sub: v.sub_path.as_str().to_string(),
                            clients,
                            is_desired: !rejected,
                            was_available: v.state == VolumeState::Available,
                            export_id: v.export_id,
                            generation: v.generation,
                        }),
                        None => plan.withheld.push(v.id),
                    }
                }
            }
        }
        plan
    }
}
