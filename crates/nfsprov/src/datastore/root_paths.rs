//! Root paths: the directories of a server volumes are made in, with their capacity and their
//! export policy (what ordinary users may ask for there; `spec::policy`).

use super::sql::{Row, q};
use super::{Columns, Datastore, now};
use crate::error::{Amount, Clash, ClientPart, Entity, Error, PolicyPart, Result};
use crate::model::{BackendKind, ClientRule, DeletePolicy, Layout, RootPath, RootPathId, ServerId};
use crate::spec::policy::{Culprit, Violation};
use crate::spec::{ExportPolicy, RootDir};

const ROOT_PATH_SELECT: &str = "SELECT rp.id, rp.server_id, s.name, s.nfs_address, rp.path, \
     rp.capacity_gb, rp.allocated_gb, rp.delete_policy, rp.export_policy, rp.layout FROM root_paths rp \
     JOIN servers s ON s.id = rp.server_id";

fn root_path_from_row(row: &Row) -> Result<RootPath> {
    let path: String = row.text("path")?;
    let policy: String = row.text("delete_policy")?;
    Ok(RootPath {
        id: row.id("id")?,
        server_id: row.id("server_id")?,
        server_name: row.text("name")?,
        nfs_address: row.text("nfs_address")?,
        path: RootDir::parse(&path).map_err(|e| anyhow::anyhow!("stored root path: {e}"))?,
        capacity_gb: row.int("capacity_gb")?,
        allocated_gb: row.int("allocated_gb")?,
        delete_policy: DeletePolicy::parse(&policy).unwrap_or_default(),
        export_policy: stored_policy(&row.text("export_policy")?)?,
        layout: stored_layout(&row.text("layout")?)?,
    })
}

/// A layout as stored (the column's CHECK allows only known names).
pub(super) fn stored_layout(name: &str) -> Result<Layout> {
    Layout::parse(name)
        .ok_or_else(|| anyhow::anyhow!("stored root path layout {name:?} is unknown").into())
}

/// A policy as stored. It was validated before being stored, so a failure means the database
/// was edited by hand: an internal error, never a policy silently read as something else.
pub(super) fn stored_policy(json: &str) -> Result<ExportPolicy> {
    ExportPolicy::from_json(json)
        .map_err(|e| anyhow::anyhow!("stored export policy {json:?}: {e}").into())
}

/// Check an ordinary user's clients (and size, on a create) against a root path's policy, read
/// in the transaction that records the request; admins are not bound by it. Returns the
/// clients as the root path exports them (`subtree_check` added where the policy forces it).
pub(super) fn apply_policy(
    policy: &ExportPolicy,
    by_admin: bool,
    clients: &[ClientRule],
    size_gb: Option<i64>,
) -> Result<Vec<ClientRule>> {
    if !by_admin {
        policy
            .check(clients.iter().map(|c| (&c.host, &c.options)), size_gb)
            .map_err(policy_error)?;
    }
    Ok(clients
        .iter()
        .map(|c| ClientRule {
            host: c.host.clone(),
            options: policy.apply(&c.options),
        })
        .collect())
}

fn policy_error(v: Violation) -> Error {
    let part = match v.culprit {
        Culprit::ClientHost(index) => PolicyPart::Client {
            index,
            part: ClientPart::Host,
        },
        Culprit::ClientOptions(index) => PolicyPart::Client {
            index,
            part: ClientPart::Options,
        },
        Culprit::Size => PolicyPart::Size,
    };
    Error::PolicyViolation {
        part,
        message: v.message,
    }
}

/// nfs-ganesha has no `subtree_check` (its exports are checked by export id): a policy that
/// forces it cannot be kept on a ganesha server's root path.
fn check_policy_backend(backend: &str, policy: &ExportPolicy) -> Result<()> {
    if policy.subtree_check() && BackendKind::parse(backend) == Some(BackendKind::Ganesha) {
        return Err(Error::invalid(
            "export_policy.subtree_check",
            "nfs-ganesha has no subtree_check; on a ganesha server give each volume its own file system for strong isolation",
        ));
    }
    Ok(())
}

impl Datastore {
    /// A root path with the default export policy.
    pub async fn create_root_path(
        &self,
        server: ServerId,
        path: &RootDir,
        capacity_gb: i64,
        policy: DeletePolicy,
    ) -> Result<RootPath> {
        self.create_root_path_with(
            server,
            path,
            capacity_gb,
            policy,
            &ExportPolicy::default(),
            Layout::Directory,
        )
        .await
    }

    pub async fn create_root_path_with(
        &self,
        server: ServerId,
        path: &RootDir,
        capacity_gb: i64,
        policy: DeletePolicy,
        export_policy: &ExportPolicy,
        layout: Layout,
    ) -> Result<RootPath> {
        crate::spec::gb_amount(capacity_gb, 1)
            .map_err(|e| Error::out_of_range(Amount::Capacity, e.0))?;
        let mut tx = self.db.begin_write().await?;
        // On PostgreSQL the server's row is locked: two root paths added at once on two nodes
        // are checked for overlap one after the other.
        let backend = q(format!(
            "SELECT backend FROM servers WHERE id = ?{}",
            tx.for_update()
        ))
        .bind(server)
        .fetch_optional(&mut tx)
        .await?;
        let Some(backend) = backend else {
            return Err(Error::UnknownServer(server));
        };
        check_policy_backend(&backend.text("backend")?, export_policy)?;
        let others = q("SELECT path FROM root_paths WHERE server_id = ?")
            .bind(server)
            .fetch_all(&mut tx)
            .await?;
        for row in others {
            let other: String = row.text("path")?;
            if let Ok(other) = RootDir::parse(&other)
                && other.overlaps(path)
            {
                return Err(Error::conflict(
                    Clash::RootPathOverlap,
                    format!("{path} overlaps root path {other} on the same server"),
                ));
            }
        }
        let row = q(
            "INSERT INTO root_paths (server_id, path, capacity_gb, delete_policy, export_policy, \
             created_at, layout) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(server)
        .bind(path.as_str())
        .bind(capacity_gb)
        .bind(policy.as_str())
        .bind(export_policy.to_json())
        .bind(now())
        .bind(layout.as_str())
        .fetch_one(&mut tx)
        .await?;
        tx.commit().await?;
        self.root_path(row.id("id")?).await
    }

    /// Replace a root path's export policy. It binds requests recorded after this commits;
    /// volumes already recorded keep their clients (a forced `subtree_check` reaches a volume
    /// when it is next changed).
    pub async fn set_root_path_policy(
        &self,
        id: RootPathId,
        export_policy: &ExportPolicy,
    ) -> Result<RootPath> {
        let mut tx = self.db.begin_write().await?;
        let row = q(
            "SELECT s.backend FROM root_paths rp JOIN servers s ON s.id = rp.server_id \
             WHERE rp.id = ?",
        )
        .bind(id)
        .fetch_optional(&mut tx)
        .await?
        .ok_or_else(|| Error::not_found(Entity::RootPath, id))?;
        check_policy_backend(&row.text("backend")?, export_policy)?;
        q("UPDATE root_paths SET export_policy = ? WHERE id = ?")
            .bind(export_policy.to_json())
            .bind(id)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        self.root_path(id).await
    }

    pub async fn root_path(&self, id: RootPathId) -> Result<RootPath> {
        let sql = format!("{ROOT_PATH_SELECT} WHERE rp.id = ?");
        let row = q(sql)
            .bind(id)
            .fetch_optional(self.db.read())
            .await?
            .ok_or_else(|| Error::not_found(Entity::RootPath, id))?;
        root_path_from_row(&row)
    }

    pub async fn root_paths(&self) -> Result<Vec<RootPath>> {
        let sql = format!("{ROOT_PATH_SELECT} ORDER BY rp.id");
        let rows = q(sql).fetch_all(self.db.read()).await?;
        rows.iter().map(root_path_from_row).collect()
    }
}
