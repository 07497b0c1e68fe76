//! The API's response bodies, both APIs, in one place: what a client reads is what these types
//! serialise to. Plain `Serialize` structs, no logic beyond building them from the model, so a
//! later OpenAPI document can be generated from them.
//!
//! Fields are declared in alphabetical order: the bodies were `serde_json::json!` objects
//! before, which serialise their keys sorted, and clients see the same bytes as before. The
//! `tests` at the bottom pin each shape.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{
    ClientRule, DeletePolicy, Layout, Role, RootPath, RootPathId, RootUsageSample, Server,
    ServerId, SizeState, UsageSample, User, Volume, VolumeId, VolumeState,
};
use crate::spec::ExportPolicyDoc;

// ---- native API (`/api/v1/`) ---------------------------------------------------------------

/// `GET /api/v1/health`.
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
}

/// One export client of a volume in the native API.
#[derive(Debug, Serialize)]
pub struct Client {
    pub host: String,
    pub options: String,
}

impl From<&ClientRule> for Client {
    fn from(c: &ClientRule) -> Self {
        Client {
            host: c.host.to_string(),
            options: c.options.to_string(),
        }
    }
}

/// A volume in the native API (`/api/v1/volumes`; listings are arrays of these).
#[derive(Debug, Serialize)]
pub struct VolumeBody {
    pub clients: Vec<Client>,
    pub created_at: DateTime<Utc>,
    pub gid: u32,
    pub id: VolumeId,
    pub last_error: Option<String>,
    /// Its root path's layout (`directory`, `btrfs`, `xfs-project`).
    pub layout: &'static str,
    /// Octal, as `"0755"`.
    pub mode: String,
    pub nfs_address: String,
    pub owner: String,
    /// The volume's directory on its server.
    pub path: String,
    pub root_path_id: RootPathId,
    pub server_id: ServerId,
    /// Whether the server holds the volume to `size_gb`, in words (`SIZE_*`).
    pub size_enforcement: &'static str,
    pub size_gb: i64,
    pub state: VolumeState,
    pub sub_path: String,
    pub uid: u32,
    pub updated_at: DateTime<Utc>,
}

impl From<&Volume> for VolumeBody {
    fn from(v: &Volume) -> Self {
        VolumeBody {
            clients: v.clients.iter().map(Client::from).collect(),
            created_at: v.created_at,
            gid: v.gid,
            id: v.id,
            last_error: v.last_error.clone(),
            layout: v.layout.as_str(),
            mode: v.mode.as_octal_string(),
            nfs_address: v.nfs_address.clone(),
            owner: v.owner.clone(),
            path: v.full_path(),
            root_path_id: v.root_path_id,
            server_id: v.server_id,
            size_enforcement: size_enforcement(v.layout, None),
            size_gb: v.size_gb,
            state: v.state,
            sub_path: v.sub_path.as_str().to_string(),
            uid: v.uid,
            updated_at: v.updated_at,
        }
    }
}

/// A root path in the native API (`/api/v1/rootpaths`).
#[derive(Debug, Serialize)]
pub struct RootPathBody {
    pub allocated_gb: i64,
    pub capacity_gb: i64,
    pub delete_policy: DeletePolicy,
    /// What ordinary users may ask for here (admins are not bound by it).
    pub export_policy: ExportPolicyDoc,
    pub free_gb: i64,
    pub id: RootPathId,
    /// What the root path's subtree choice means for isolation between its volumes.
    pub isolation: &'static str,
    /// How it holds its volumes: `directory`, `btrfs`.
    pub layout: &'static str,
    pub nfs_address: String,
    pub path: String,
    /// The server's name.
    pub server: String,
    pub server_id: ServerId,
    /// The root path's file system at the latest usage sample (`null`: not sampled yet).
    pub usage: Option<RootUsageBody>,
}

/// `size_enforcement` of a volume on a plain-directory root path.
pub const SIZE_NOT_ENFORCED: &str = "size reserved, not enforced: the volume is a plain directory, \
     so it can fill its root path's file system";
/// `size_enforcement` of a volume on a btrfs root path.
pub const SIZE_BTRFS: &str =
    "enforced: a btrfs subvolume whose qgroup limit is the size; writes past it fail with EDQUOT";
/// `size_enforcement` of a volume on an XFS project quota root path.
pub const SIZE_XFS_PROJECT: &str = "enforced: an XFS project quota whose block hard limit is the size; writes past it fail with EDQUOT";

/// `size_enforcement` of a volume whose limit a full pass found not held on the server (its
/// `size_error` says why: quotas disabled, the subvolume gone or replaced).
pub const SIZE_NOT_HELD: &str =
    "not enforced right now: the server does not hold the limit; size_error says why";

/// What a volume's size means on its layout, and whether the server holds it now.
pub fn size_enforcement(layout: Layout, size_error: Option<&str>) -> &'static str {
    let not_held = size_error.is_some_and(|e| e.starts_with(crate::datastore::SIZE_DRIFT));
    match layout {
        Layout::Btrfs | Layout::XfsProject if not_held => SIZE_NOT_HELD,
        Layout::Directory => SIZE_NOT_ENFORCED,
        Layout::Btrfs => SIZE_BTRFS,
        Layout::XfsProject => SIZE_XFS_PROJECT,
    }
}

/// `isolation` of a root path without forced `subtree_check`.
pub const SUBTREE_UNCHECKED: &str = "volumes are exported with no_subtree_check unless they ask otherwise: \
     a client that can guess file handles may reach files of other volumes on the same file system \
     (exports(5), Subdirectory Exports); set the export policy's subtree_check, or give each volume \
     its own file system, for strong isolation";
/// `isolation` of a root path with forced `subtree_check`.
pub const SUBTREE_CHECKED: &str = "volumes are exported with subtree_check: the server checks that each \
     file handle lies inside the export it came through (exports(5), Subdirectory Exports)";

impl From<&RootPath> for RootPathBody {
    fn from(rp: &RootPath) -> Self {
        RootPathBody {
            allocated_gb: rp.allocated_gb,
            capacity_gb: rp.capacity_gb,
            delete_policy: rp.delete_policy,
            export_policy: rp.export_policy.to_doc(),
            free_gb: rp.capacity_gb - rp.allocated_gb,
            id: rp.id,
            isolation: if rp.export_policy.subtree_check() {
                SUBTREE_CHECKED
            } else {
                SUBTREE_UNCHECKED
            },
            layout: rp.layout.as_str(),
            nfs_address: rp.nfs_address.clone(),
            path: rp.path.as_str().to_string(),
            server: rp.server_name.clone(),
            server_id: rp.server_id,
            usage: None,
        }
    }
}

/// A server in the native API (`/api/v1/servers`, admins only). The SSH key is never shown.
#[derive(Debug, Serialize)]
pub struct ServerBody {
    pub backend: String,
    pub host_key: String,
    pub id: ServerId,
    pub last_reconciled_at: Option<String>,
    pub name: String,
    pub nfs_address: String,
    pub ssh_host: String,
    pub ssh_port: u16,
    pub ssh_user: String,
    pub status: String,
    pub status_message: Option<String>,
}

impl From<&Server> for ServerBody {
    fn from(s: &Server) -> Self {
        ServerBody {
            backend: s.backend.as_str().to_string(),
            host_key: s.host_key.clone(),
            id: s.id,
            last_reconciled_at: s.last_reconciled_at.clone(),
            name: s.name.clone(),
            nfs_address: s.nfs_address.clone(),
            ssh_host: s.ssh_host.clone(),
            ssh_port: s.ssh_port,
            ssh_user: s.ssh_user.clone(),
            status: s.status.to_string(),
            status_message: s.status_message.clone(),
        }
    }
}

/// A user account in the native API (`/api/v1/users`, admins only). The password hash is
/// never shown.
#[derive(Debug, Serialize)]
pub struct UserBody {
    pub is_admin: bool,
    pub locked: bool,
    pub quota_gb: i64,
    pub role: Role,
    pub used_gb: i64,
    pub username: String,
}

impl From<&User> for UserBody {
    fn from(u: &User) -> Self {
        UserBody {
            is_admin: u.is_admin(),
            locked: u.locked,
            quota_gb: u.quota_gb,
            role: u.role,
            used_gb: u.used_gb,
            username: u.username.clone(),
        }
    }
}

/// A native API error: `{"error": {"code", "field", "message"}}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid`, `not_found`, `locked`, ...
    pub code: String,
    /// The request field the error is about, when there is one.
    pub field: Option<String>,
    /// For the user, saying what to do.
    pub message: String,
}

// ---- hootie's API (`/api/v1.0/`) -----------------------------------------------------------

/// A root path in hootie's API (`GET /api/v1.0/rootpaths/`, public).
#[derive(Debug, Serialize)]
pub struct HootieRootPath {
    pub pk: RootPathId,
    /// `<nfs address>:<path>`.
    pub server_path: String,
}

impl From<&RootPath> for HootieRootPath {
    fn from(rp: &RootPath) -> Self {
        HootieRootPath {
            pk: rp.id,
            server_path: format!("{}:{}", rp.nfs_address, rp.path),
        }
    }
}

/// A volume in hootie's API: one options string for all its hosts.
#[derive(Debug, Serialize)]
pub struct HootieVolume {
    /// Hosts separated by spaces.
    pub allowed_hosts: String,
    pub fileserver: String,
    pub fullpath: String,
    /// The first client's options (hootie had one set per volume).
    pub options: String,
    pub owner: String,
    pub pk: VolumeId,
    pub root_path: RootPathId,
    #[serde(rename = "size_GB")]
    pub size_gb: i64,
    pub sub_path: String,
}

impl From<&Volume> for HootieVolume {
    fn from(v: &Volume) -> Self {
        HootieVolume {
            allowed_hosts: v
                .clients
                .iter()
                .map(|c| c.host.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            fileserver: v.nfs_address.clone(),
            fullpath: v.full_path(),
            options: v
                .clients
                .first()
                .map(|c| c.options.to_string())
                .unwrap_or_default(),
            owner: v.owner.clone(),
            pk: v.id,
            root_path: v.root_path_id,
            size_gb: v.size_gb,
            sub_path: v.sub_path.as_str().to_string(),
        }
    }
}

/// The answer to hootie's `POST /api/v1.0/volumes/`. hootie wrote `"error": "None"` (Python's
/// `str(None)`) when there was none; `pk` is absent when nothing was created, `detail` when
/// there is nothing to add.
#[derive(Debug, Serialize)]
pub struct HootieCreated {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pk: Option<VolumeId>,
}

impl HootieCreated {
    /// The server has the volume (`detail` says why not yet, if it has not).
    pub fn ok(pk: VolumeId, detail: Option<String>) -> Self {
        HootieCreated {
            detail,
            error: "None".into(),
            pk: Some(pk),
        }
    }

    /// The server refused the volume with `error`.
    pub fn refused(error: String, detail: String) -> Self {
        HootieCreated {
            detail: Some(detail),
            error,
            pk: None,
        }
    }
}

/// A hootie (Django REST framework) error that is not about a field: `{"detail": "..."}`.
#[derive(Debug, Serialize)]
pub struct HootieDetail {
    pub detail: String,
}

/// hootie (Django REST framework) field errors: `{"<field>": ["message", ...]}`.
#[derive(Debug, Serialize)]
pub struct HootieFieldErrors(pub BTreeMap<String, Vec<String>>);

impl HootieFieldErrors {
    pub fn one(field: impl Into<String>, message: impl Into<String>) -> Self {
        HootieFieldErrors(BTreeMap::from([(field.into(), vec![message.into()])]))
    }
}

// ---- usage and resize (issue 12) -----------------------------------------------------------

/// A root path's file system at a usage sample (`df` of the root path, bytes).
#[derive(Debug, Serialize)]
pub struct RootUsageBody {
    pub free_bytes: u64,
    pub sampled_at: DateTime<Utc>,
    pub size_bytes: u64,
    pub used_bytes: u64,
}

impl From<&RootUsageSample> for RootUsageBody {
    fn from(u: &RootUsageSample) -> Self {
        RootUsageBody {
            free_bytes: u.free_bytes,
            sampled_at: u.sampled_at,
            size_bytes: u.size_bytes,
            used_bytes: u.used_bytes,
        }
    }
}

/// One sample of what a volume holds (bytes; `exclusive_bytes` on btrfs only).
#[derive(Debug, Serialize)]
pub struct UsageBody {
    pub exclusive_bytes: Option<u64>,
    pub sampled_at: DateTime<Utc>,
    pub used_bytes: u64,
}

impl From<&UsageSample> for UsageBody {
    fn from(u: &UsageSample) -> Self {
        UsageBody {
            exclusive_bytes: u.exclusive_bytes,
            sampled_at: u.sampled_at,
            used_bytes: u.used_bytes,
        }
    }
}

/// One volume as `GET /api/v1/volumes/{id}` and a resize show it: the volume, its latest usage
/// (from the database: the server is not asked) and the size the server holds it to.
#[derive(Debug, Serialize)]
pub struct VolumeDetailBody {
    #[serde(flatten)]
    pub volume: VolumeBody,
    /// Why the server refused the last resize (`null`: it did not).
    pub size_error: Option<String>,
    /// btrfs: the size (GB) whose qgroup limit the server holds, read back; it differs from
    /// `size_gb` while a resize is being applied or was refused. `null` where the size is not
    /// enforced (a plain directory: a resize changes the books only, as `size_enforcement`
    /// says).
    pub size_on_server_gb: Option<i64>,
    /// The latest usage sample (`null`: not sampled yet).
    pub usage: Option<UsageBody>,
}

impl VolumeDetailBody {
    pub fn new(v: &Volume, s: &SizeState) -> Self {
        let mut volume = VolumeBody::from(v);
        volume.size_enforcement = size_enforcement(v.layout, s.size_error.as_deref());
        VolumeDetailBody {
            volume,
            size_error: s.size_error.clone(),
            size_on_server_gb: v
                .layout
                .enforces_size()
                .then(|| s.applied_size_gb.unwrap_or(v.size_gb)),
            usage: s.latest.as_ref().map(UsageBody::from),
        }
    }
}

/// `GET /api/v1/volumes/{id}/usage`: the kept samples, oldest first.
#[derive(Debug, Serialize)]
pub struct VolumeUsageBody {
    /// The volume's id.
    pub id: VolumeId,
    pub samples: Vec<UsageBody>,
    pub size_gb: i64,
}

// ---- snapshots (issue 12) ------------------------------------------------------------------

/// A snapshot in the native API (`/api/v1/volumes/{id}/snapshots`).
#[derive(Debug, Serialize)]
pub struct SnapshotBody {
    pub created_at: DateTime<Utc>,
    /// Its exclusive bytes as last read from its btrfs qgroup (what counts against the
    /// owner's quota); `null` until read (counted as 0).
    pub exclusive_bytes: Option<i64>,
    pub id: crate::model::SnapshotId,
    pub last_error: Option<String>,
    pub name: String,
    pub state: crate::model::SnapshotState,
    pub updated_at: DateTime<Utc>,
    pub volume_id: VolumeId,
}

impl From<&crate::model::Snapshot> for SnapshotBody {
    fn from(s: &crate::model::Snapshot) -> Self {
        SnapshotBody {
            created_at: s.created_at,
            exclusive_bytes: s.exclusive_bytes,
            id: s.id,
            last_error: s.last_error.clone(),
            name: s.name.to_string(),
            state: s.state,
            updated_at: s.updated_at,
            volume_id: s.volume_id,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Each shape against the JSON text clients receive: these bodies are the API's contract
    //! (hootie's scripts parse them), so a renamed, reordered or retyped field fails here.

    use super::*;
    use crate::spec::{ClientSpec, DirMode, ExportOptions, RootDir, SubPath};

    fn text(body: &impl Serialize) -> String {
        serde_json::to_string(body).unwrap()
    }

    fn volume() -> Volume {
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let rule = |host, options| ClientRule {
            host: ClientSpec::parse(host).unwrap(),
            options: ExportOptions::parse(options).unwrap(),
        };
        Volume {
            id: VolumeId(7),
            owner_id: crate::model::UserId(3),
            owner: "alice".into(),
            root_path_id: RootPathId(2),
            root_path: RootDir::parse("/srv/nfs").unwrap(),
            delete_policy: DeletePolicy::Retain,
            layout: Layout::Directory,
            server_id: ServerId(1),
            nfs_address: "192.0.2.10".into(),
            sub_path: SubPath::parse("team/data").unwrap(),
            size_gb: 5,
            clients: vec![rule("10.0.0.0/24", "rw,sync"), rule("host1", "ro")],
            applied_clients: None,
            mode: DirMode::parse("0750").unwrap(),
            uid: 1000,
            gid: 100,
            adopt_existing: false,
            state: VolumeState::Available,
            export_id: 12,
            generation: 4,
            failed_generation: None,
            last_error: None,
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn native_volume() {
        let v = volume();
        assert_eq!(
            text(&VolumeBody::from(&v)),
            concat!(
                r#"{"clients":[{"host":"10.0.0.0/24","options":"rw,sync"},"#,
                r#"{"host":"host1","options":"ro"}],"created_at":"2026-01-02T03:04:05Z","#,
                r#""gid":100,"id":7,"last_error":null,"layout":"directory","mode":"0750","#,
                r#""nfs_address":"192.0.2.10","owner":"alice","path":"/srv/nfs/team/data","#,
                r#""root_path_id":2,"server_id":1,"#,
                r#""size_enforcement":"size reserved, not enforced: the volume is a plain directory, so it can fill its root path's file system","#,
                r#""size_gb":5,"state":"available","#,
                r#""sub_path":"team/data","uid":1000,"updated_at":"2026-01-02T03:04:05Z"}"#
            )
        );
    }

    #[test]
    fn hootie_volume() {
        assert_eq!(
            text(&HootieVolume::from(&volume())),
            concat!(
                r#"{"allowed_hosts":"10.0.0.0/24 host1","fileserver":"192.0.2.10","#,
                r#""fullpath":"/srv/nfs/team/data","options":"rw,sync","owner":"alice","#,
                r#""pk":7,"root_path":2,"size_GB":5,"sub_path":"team/data"}"#
            )
        );
    }

    #[test]
    fn root_paths() {
        let rp = RootPath {
            id: RootPathId(2),
            server_id: ServerId(1),
            server_name: "nfs1".into(),
            nfs_address: "192.0.2.10".into(),
            path: RootDir::parse("/srv/nfs").unwrap(),
            capacity_gb: 100,
            allocated_gb: 30,
            delete_policy: DeletePolicy::Purge,
            export_policy: crate::spec::ExportPolicy::default(),
            layout: Layout::Btrfs,
        };
        let json: serde_json::Value =
            serde_json::from_str(&text(&RootPathBody::from(&rp))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"allocated_gb": 30, "capacity_gb": 100, "delete_policy": "purge",
                "export_policy": {"allowed_clients": [], "allowed_options": [],
                    "world_writable": false, "max_volume_gb": null, "subtree_check": false},
                "free_gb": 70, "id": 2, "isolation": SUBTREE_UNCHECKED, "layout": "btrfs",
                "nfs_address": "192.0.2.10", "path": "/srv/nfs", "server": "nfs1", "server_id": 1,
                "usage": null})
        );
        assert_eq!(
            text(&HootieRootPath::from(&rp)),
            r#"{"pk":2,"server_path":"192.0.2.10:/srv/nfs"}"#
        );
    }

    #[test]
    fn users_never_show_the_password_hash() {
        let u = User {
            id: crate::model::UserId(3),
            username: "alice".into(),
            password_hash: "$argon2id$secret".into(),
            role: Role::Auditor,
            quota_gb: 50,
            used_gb: 5,
            locked: true,
        };
        assert_eq!(
            text(&UserBody::from(&u)),
            r#"{"is_admin":false,"locked":true,"quota_gb":50,"role":"auditor","used_gb":5,"username":"alice"}"#
        );
    }

    #[test]
    fn errors_and_small_bodies() {
        let e = ErrorBody {
            error: ErrorDetail {
                code: "invalid".into(),
                field: Some("size_gb".into()),
                message: "too big".into(),
            },
        };
        assert_eq!(
            text(&e),
            r#"{"error":{"code":"invalid","field":"size_gb","message":"too big"}}"#
        );
        assert_eq!(
            text(&HootieFieldErrors::one("size_GB", "too big")),
            r#"{"size_GB":["too big"]}"#
        );
        assert_eq!(
            text(&HootieDetail {
                detail: "Not found.".into()
            }),
            r#"{"detail":"Not found."}"#
        );
        assert_eq!(text(&Health { status: "ok" }), r#"{"status":"ok"}"#);
        assert_eq!(
            text(&HootieCreated::ok(VolumeId(7), None)),
            r#"{"error":"None","pk":7}"#
        );
        assert_eq!(
            text(&HootieCreated::ok(VolumeId(7), Some("later".into()))),
            r#"{"detail":"later","error":"None","pk":7}"#
        );
        assert_eq!(
            text(&HootieCreated::refused("no space".into(), "gone".into())),
            r#"{"detail":"gone","error":"no space"}"#
        );
    }
}
