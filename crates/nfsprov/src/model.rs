//! Domain types shared by the datastore, the API and the reconciler. API payloads live in
//! `api::*`, database rows in `datastore`; these are what both convert to and from.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::spec::{ClientSpec, DirMode, ExportOptions, ExportPolicy, RootDir, SubPath};

/// Ids of rows, one type per table: bound and read as they are by sqlx (`transparent`) and by
/// rusqlite (`ToSql`/`FromSql`), so no query passes a volume's id where a user's is meant.
macro_rules! typed_id {
    ($($name:ident),*) => {$(
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[derive(sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub i64);
        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                self.0.to_sql()
            }
        }
        impl rusqlite::types::FromSql for $name {
            fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                i64::column_result(v).map($name)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}
typed_id!(ServerId, RootPathId, UserId, VolumeId);
typed_id!(TokenId);
typed_id!(SnapshotId);

/// Lifecycle of a volume. `creating`/`updating`/`deleting` mean the database holds a change the
/// server has not yet confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeState {
    Creating,
    Available,
    Updating,
    Deleting,
    Deleted,
    Error,
}

impl VolumeState {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeState::Creating => "creating",
            VolumeState::Available => "available",
            VolumeState::Updating => "updating",
            VolumeState::Deleting => "deleting",
            VolumeState::Deleted => "deleted",
            VolumeState::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => VolumeState::Creating,
            "available" => VolumeState::Available,
            "updating" => VolumeState::Updating,
            "deleting" => VolumeState::Deleting,
            "deleted" => VolumeState::Deleted,
            "error" => VolumeState::Error,
            _ => return None,
        })
    }

    /// A state in which the reconciler has nothing more to do for the current generation.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            VolumeState::Available | VolumeState::Deleted | VolumeState::Error
        )
    }
}

impl fmt::Display for VolumeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the reconciler last saw of a server. Stored, and shown by the API, as the lowercase
/// name (`"reachable"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerStatus {
    /// No pass has finished yet (a server just registered).
    Unknown,
    /// The last pass applied and verified the server's exports.
    Reachable,
    /// A pass is running longer than `NFSPROV_SLOW_PASS_SECS`; it goes on.
    Slow,
    /// SSH could not reach the server, or the session broke.
    Unreachable,
    /// Reached, but its NFS service is not running.
    Down,
    /// Reached, but the server failed the pass as a whole (its message says why).
    Error,
}

impl ServerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerStatus::Unknown => "unknown",
            ServerStatus::Reachable => "reachable",
            ServerStatus::Slow => "slow",
            ServerStatus::Unreachable => "unreachable",
            ServerStatus::Down => "down",
            ServerStatus::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "unknown" => ServerStatus::Unknown,
            "reachable" => ServerStatus::Reachable,
            "slow" => ServerStatus::Slow,
            "unreachable" => ServerStatus::Unreachable,
            "down" => ServerStatus::Down,
            "error" => ServerStatus::Error,
            _ => return None,
        })
    }
}

impl fmt::Display for ServerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a volume's data when it is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeletePolicy {
    /// Move the directory to `<root>/.nfsprov-trash/<volume id>`.
    #[default]
    Retain,
    /// Remove the directory and everything in it.
    Purge,
}

impl DeletePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DeletePolicy::Retain => "retain",
            DeletePolicy::Purge => "purge",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "retain" => Some(DeletePolicy::Retain),
            "purge" => Some(DeletePolicy::Purge),
            _ => None,
        }
    }
}

/// One exports(5) client entry of a volume: who may mount it and with which options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRule {
    pub host: ClientSpec,
    pub options: ExportOptions,
}

/// The stored (and native API) form of a client rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientRuleDoc {
    pub host: String,
    pub options: String,
}

impl ClientRule {
    pub fn to_doc(&self) -> ClientRuleDoc {
        ClientRuleDoc {
            host: self.host.to_string(),
            options: self.options.to_string(),
        }
    }
}

pub fn clients_to_json(clients: &[ClientRule]) -> String {
    let docs: Vec<ClientRuleDoc> = clients.iter().map(ClientRule::to_doc).collect();
    serde_json::to_string(&docs).expect("client rules serialise")
}

/// Parse clients stored by `clients_to_json`. They were validated before being stored, so a
/// failure here means the database was edited by hand.
pub fn clients_from_json(s: &str) -> anyhow::Result<Vec<ClientRule>> {
    let docs: Vec<ClientRuleDoc> = serde_json::from_str(s)?;
    docs.into_iter()
        .map(|d| {
            Ok(ClientRule {
                host: ClientSpec::parse(&d.host)
                    .map_err(|e| anyhow::anyhow!("stored client {:?}: {e}", d.host))?,
                options: ExportOptions::parse(&d.options)
                    .map_err(|e| anyhow::anyhow!("stored options {:?}: {e}", d.options))?,
            })
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct Server {
    pub id: ServerId,
    pub name: String,
    pub ssh_host: String,
    pub ssh_port: u16,
    pub ssh_user: String,
    pub ssh_key: String,
    pub host_key: String,
    pub nfs_address: String,
    pub backend: BackendKind,
    pub status: ServerStatus,
    pub status_message: Option<String>,
    pub last_reconciled_at: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone)]
pub struct RootPath {
    pub id: RootPathId,
    pub server_id: ServerId,
    pub server_name: String,
    pub nfs_address: String,
    pub path: RootDir,
    pub capacity_gb: i64,
    pub allocated_gb: i64,
    pub delete_policy: DeletePolicy,
    /// What ordinary users may ask for here (`spec::policy`).
    pub export_policy: ExportPolicy,
    /// How the root path holds its volumes (migration 0008).
    pub layout: Layout,
}

/// How a root path holds its volumes, and so whether a volume's size is enforced on the server.
/// Stored, and shown by the API, as [`Layout::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Layout {
    /// A plain directory per volume: the size is reserved in the books, not enforced.
    #[default]
    Directory,
    /// A btrfs subvolume per volume with a qgroup limit of its size (the root path must be on
    /// btrfs with quotas enabled).
    Btrfs,
    /// XFS project quota per volume: the volume's directory carries project id = its volume
    /// id, with a block hard limit of its size (`backend::xfs`; the root path must be on XFS
    /// mounted with `prjquota`).
    XfsProject,
}

impl Layout {
    pub const ALL: [Layout; 3] = [Layout::Directory, Layout::Btrfs, Layout::XfsProject];

    pub const fn as_str(self) -> &'static str {
        match self {
            Layout::Directory => "directory",
            Layout::Btrfs => "btrfs",
            Layout::XfsProject => "xfs-project",
        }
    }

    pub fn parse(s: &str) -> Option<Layout> {
        Layout::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// Whether the server holds a volume to its size.
    pub const fn enforces_size(self) -> bool {
        matches!(self, Layout::Btrfs | Layout::XfsProject)
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub quota_gb: i64,
    pub used_gb: i64,
    pub locked: bool,
}

impl User {
    /// Whether this user may change anything, anyone's (not whether they are locked).
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether this user reads everyone's objects (administrators and auditors).
    pub fn sees_everything(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Auditor)
    }
}

/// What a user may do. Stored, and shown by the API, as the lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and changes anything: servers, root paths, users, every volume.
    Admin,
    /// Reads the root paths and reads and changes only their own volumes (and tokens);
    /// another user's volume is "not found" to them.
    #[default]
    User,
    /// Reads everything an administrator reads, changes nothing (403 on every change).
    Auditor,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::User, Role::Auditor];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The role the old `is_admin` flag stood for.
    pub fn from_is_admin(is_admin: bool) -> Role {
        if is_admin { Role::Admin } else { Role::User }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Volume {
    pub id: VolumeId,
    pub owner_id: UserId,
    pub owner: String,
    pub root_path_id: RootPathId,
    pub root_path: RootDir,
    pub delete_policy: DeletePolicy,
    /// Its root path's layout.
    pub layout: Layout,
    pub server_id: ServerId,
    pub nfs_address: String,
    pub sub_path: SubPath,
    pub size_gb: i64,
    pub clients: Vec<ClientRule>,
    pub applied_clients: Option<Vec<ClientRule>>,
    pub mode: DirMode,
    pub uid: u32,
    pub gid: u32,
    /// An admin asked to adopt a directory already at the path (`adopt_existing`).
    pub adopt_existing: bool,
    pub state: VolumeState,
    /// Stable id of the export on its server (nfs-ganesha's Export_Id).
    pub export_id: u32,
    pub generation: i64,
    pub failed_generation: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Volume {
    /// Absolute path of the volume's directory on its server.
    pub fn full_path(&self) -> String {
        self.root_path.join(&self.sub_path)
    }

    /// Where the `retain` policy moves a deleted volume's data.
    pub fn trash_path(&self) -> String {
        format!("{}/{}/{}", self.root_path, TRASH_DIR, self.id)
    }
}

/// Folder under each root path that holds retained data of deleted volumes. Sub paths cannot
/// start with '.', so no volume can collide with it.
pub const TRASH_DIR: &str = ".nfsprov-trash";

/// The NFS server software of a server: which backend writes its exports. Adding one is an arm
/// here and a module in `backend` (which maps each kind to its implementation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Knfsd,
    Ganesha,
}

impl BackendKind {
    pub fn parse(s: &str) -> Option<BackendKind> {
        match s {
            "knfsd" => Some(BackendKind::Knfsd),
            "ganesha" => Some(BackendKind::Ganesha),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            BackendKind::Knfsd => "knfsd",
            BackendKind::Ganesha => "ganesha",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the reconciler learned about one volume at one generation.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Exported and verified on the server with these clients (JSON as stored).
    Applied {
        id: VolumeId,
        generation: i64,
        clients: String,
    },
    /// Unexported and its data retained or purged, verified.
    Deleted { id: VolumeId, generation: i64 },
    /// The server refused this generation (its own message about the volume's own request,
    /// e.g. its options or client syntax): a verdict, not retried until the request changes.
    Rejected {
        id: VolumeId,
        generation: i64,
        message: String,
    },
    /// Could not be applied or verified for a reason outside the request (a directory
    /// missing or on a read-only file system, a host name that does not resolve): shown as
    /// `error` with the reason, and re-verified on every pass until the live state matches.
    Failed {
        id: VolumeId,
        generation: i64,
        message: String,
    },
    /// Could not be applied for a passing reason (server unreachable): state unchanged, the
    /// message shows why it is still pending; retried.
    Pending {
        id: VolumeId,
        generation: i64,
        message: String,
    },
}

// ---- snapshots (issue 12, migration 0010) ---------------------------------------------------

/// Where a volume's snapshots live below its root path: hidden, root's own (0700), and
/// outside every volume, so no NFS client can reach or remove them.
pub const SNAPSHOT_DIR: &str = ".nfsprov-snapshots";

/// Lifecycle of a snapshot, like a volume's: `creating` and `deleting` wait for the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    Creating,
    Available,
    Deleting,
    Deleted,
    Error,
}

impl SnapshotState {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotState::Creating => "creating",
            SnapshotState::Available => "available",
            SnapshotState::Deleting => "deleting",
            SnapshotState::Deleted => "deleted",
            SnapshotState::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            SnapshotState::Creating,
            SnapshotState::Available,
            SnapshotState::Deleting,
            SnapshotState::Deleted,
            SnapshotState::Error,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Nothing left for the reconciler to do.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            SnapshotState::Available | SnapshotState::Deleted | SnapshotState::Error
        )
    }
}

/// A read-only btrfs snapshot of a volume.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub volume_id: VolumeId,
    pub name: crate::spec::SnapshotName,
    pub state: SnapshotState,
    /// Its qgroup's exclusive bytes as last read on the server (`None`: not read yet).
    pub exclusive_bytes: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A snapshot as the reconciler needs it: where it is and what to do.
#[derive(Debug, Clone)]
pub struct SnapshotTask {
    pub id: SnapshotId,
    pub volume: VolumeId,
    pub root: String,
    /// The volume's sub path below `root`.
    pub sub: String,
    pub name: String,
    pub state: SnapshotState,
}

/// What a pass found about a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotOutcome {
    /// Made (or found made) and read-only; its exclusive bytes if the qgroup could be read.
    Available {
        id: SnapshotId,
        exclusive_bytes: Option<i64>,
    },
    Deleted {
        id: SnapshotId,
    },
    Failed {
        id: SnapshotId,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_status_text_round_trips_and_matches_serde() {
        for s in [
            ServerStatus::Unknown,
            ServerStatus::Reachable,
            ServerStatus::Slow,
            ServerStatus::Unreachable,
            ServerStatus::Down,
            ServerStatus::Error,
        ] {
            assert_eq!(ServerStatus::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.as_str().into())
            );
        }
        assert_eq!(ServerStatus::parse("Reachable"), None);
    }

    #[test]
    fn role_text_round_trips_and_matches_serde() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::Value::String(r.as_str().into())
            );
        }
        assert_eq!(Role::parse("Admin"), None);
        assert_eq!(Role::from_is_admin(true), Role::Admin);
        assert_eq!(Role::from_is_admin(false), Role::User);
    }
}

// ---- usage (issue 12) ----------------------------------------------------------------------

/// What a volume held when the reconciler sampled it (`backend::usage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeUsage {
    pub id: VolumeId,
    /// btrfs: the qgroup's referenced bytes; directory: `du -s`.
    pub used_bytes: u64,
    /// btrfs only: the qgroup's exclusive bytes.
    pub exclusive_bytes: Option<u64>,
}

/// A root path's file system as `df` saw it when the reconciler sampled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootUsage {
    pub id: RootPathId,
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
}

/// One stored sample of a volume's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageSample {
    pub sampled_at: DateTime<Utc>,
    pub used_bytes: u64,
    pub exclusive_bytes: Option<u64>,
}

/// One stored sample of a root path's file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootUsageSample {
    pub sampled_at: DateTime<Utc>,
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
}

/// A volume's size as the server holds it: the last size applied (`None`: as created, not
/// resized since), why the server refused the last resize, and the latest usage sample.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SizeState {
    pub applied_size_gb: Option<i64>,
    pub size_error: Option<String>,
    pub latest: Option<UsageSample>,
}

/// A btrfs volume whose qgroup limit is not yet its size (a resize the reconciler applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingResize {
    pub id: VolumeId,
    pub size_gb: i64,
}

/// Bytes of `size_gb` (the API's GB are 10^9 bytes).
pub fn gb_bytes(size_gb: i64) -> u64 {
    (size_gb.max(0) as u64).saturating_mul(1_000_000_000)
}
