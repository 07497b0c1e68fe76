//! Servers: the NFS servers nfsprov manages and their reconcile status.

use super::sql::{Row, q};
use super::{Columns, Datastore, now};
use crate::error::{Clash, Entity, Error, Result};
use crate::model::{BackendKind, Server, ServerId, ServerStatus};

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewServer {
    pub name: String,
    pub ssh_host: String,
    #[serde(default = "default_ssh_port")]
    pub ssh_port: u16,
    #[serde(default = "default_ssh_user")]
    pub ssh_user: String,
    pub ssh_key: String,
    pub host_key: String,
    /// Address clients mount from; defaults to `ssh_host`.
    #[serde(default)]
    pub nfs_address: String,
    /// `knfsd` (default) or `ganesha`.
    #[serde(default = "default_backend")]
    pub backend: String,
}

fn default_backend() -> String {
    "knfsd".into()
}

fn default_ssh_port() -> u16 {
    22
}

fn default_ssh_user() -> String {
    "root".into()
}

fn server_from_row(row: &Row) -> Result<Server> {
    Ok(Server {
        id: row.id("id")?,
        name: row.text("name")?,
        ssh_host: row.text("ssh_host")?,
        ssh_port: row.int("ssh_port")? as u16,
        ssh_user: row.text("ssh_user")?,
        ssh_key: row.text("ssh_key")?,
        host_key: row.text("host_key")?,
        nfs_address: row.text("nfs_address")?,
        backend: {
            let b = row.text("backend")?;
            BackendKind::parse(&b)
                .ok_or_else(|| anyhow::anyhow!("stored backend {b:?} is unknown"))?
        },
        status: {
            let s = row.text("status")?;
            ServerStatus::parse(&s)
                .ok_or_else(|| anyhow::anyhow!("stored server status {s:?} is unknown"))?
        },
        status_message: row.opt_text("status_message")?,
        last_reconciled_at: row.opt_text("last_reconciled_at")?,
        created_at: row.text("created_at")?,
    })
}

impl Datastore {
    pub async fn create_server(&self, s: &NewServer) -> Result<Server> {
        let res = q(
            "INSERT INTO servers (name, ssh_host, ssh_port, ssh_user, ssh_key, host_key, nfs_address, backend, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&s.name)
        .bind(&s.ssh_host)
        .bind(s.ssh_port as i64)
        .bind(&s.ssh_user)
        .bind(&s.ssh_key)
        .bind(&s.host_key)
        .bind(&s.nfs_address)
        .bind(&s.backend)
        .bind(now())
        .fetch_one(self.db.write())
        .await;
        match res {
            Ok(row) => self.server(row.id("id")?).await,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(Error::conflict(
                Clash::ServerName,
                format!("a server named {:?} already exists", s.name),
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn server(&self, id: ServerId) -> Result<Server> {
        let row = q("SELECT * FROM servers WHERE id = ?")
            .bind(id)
            .fetch_optional(self.db.read())
            .await?
            .ok_or_else(|| Error::not_found(Entity::Server, id))?;
        server_from_row(&row)
    }

    pub async fn server_by_name(&self, name: &str) -> Result<Server> {
        let row = q("SELECT * FROM servers WHERE name = ?")
            .bind(name)
            .fetch_optional(self.db.read())
            .await?
            .ok_or_else(|| Error::not_found(Entity::Server, format!("{name:?}")))?;
        server_from_row(&row)
    }

    pub async fn servers(&self) -> Result<Vec<Server>> {
        let rows = q("SELECT * FROM servers ORDER BY id")
            .fetch_all(self.db.read())
            .await?;
        rows.iter().map(server_from_row).collect()
    }

    pub async fn set_server_status(
        &self,
        id: ServerId,
        status: ServerStatus,
        message: Option<&str>,
    ) -> Result<()> {
        q("UPDATE servers SET status = ?, status_message = ?, last_reconciled_at = ? WHERE id = ?")
            .bind(status.as_str())
            .bind(message)
            .bind(now())
            .bind(id)
            .execute(self.db.write())
            .await?;
        Ok(())
    }

    /// Pin a new host key, audited (before -> after fingerprints) in the same transaction.
    pub async fn set_server_host_key(
        &self,
        id: ServerId,
        host_key: &str,
        ctx: &crate::audit::Context,
    ) -> Result<()> {
        use crate::audit::host_key_fingerprint as fingerprint;
        let mut tx = self.db.begin_write().await?;
        let row = q(format!(
            "SELECT name, host_key FROM servers WHERE id = ?{}",
            tx.for_update()
        ))
        .bind(id)
        .fetch_optional(&mut tx)
        .await?
        .ok_or_else(|| Error::not_found(Entity::Server, id))?;
        let (name, old) = (row.text("name")?, row.text("host_key")?);
        q("UPDATE servers SET host_key = ? WHERE id = ?")
            .bind(host_key)
            .bind(id)
            .execute(&mut tx)
            .await?;
        let entry = crate::audit::Entry {
            action: "server.host_key".into(),
            object: Some(format!("server/{name}")),
            volume_id: None,
            before: Some(serde_json::json!({"host_key": fingerprint(&old)})),
            after: Some(serde_json::json!({"host_key": fingerprint(host_key)})),
            status: None,
            outcome: if old == host_key {
                "re-pinned the same key"
            } else {
                "re-pinned"
            }
            .into(),
        };
        super::audit::append(&mut tx, ctx, &entry).await?;
        tx.commit().await?;
        Ok(())
    }
}
