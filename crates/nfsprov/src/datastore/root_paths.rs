//! Root paths: the directories of a server volumes are made in, with their capacity.

use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row};

use super::{Datastore, now};
use crate::error::{Amount, Clash, Entity, Error, Result};
use crate::model::{DeletePolicy, RootPath, RootPathId, ServerId};
use crate::spec::RootDir;

const ROOT_PATH_SELECT: &str = "SELECT rp.id, rp.server_id, s.name, s.nfs_address, rp.path, \
     rp.capacity_gb, rp.allocated_gb, rp.delete_policy FROM root_paths rp \
     JOIN servers s ON s.id = rp.server_id";

fn root_path_from_row(row: &SqliteRow) -> Result<RootPath> {
    let path: String = row.try_get("path")?;
    let policy: String = row.try_get("delete_policy")?;
    Ok(RootPath {
        id: row.try_get("id")?,
        server_id: row.try_get("server_id")?,
        server_name: row.try_get("name")?,
        nfs_address: row.try_get("nfs_address")?,
        path: RootDir::parse(&path).map_err(|e| anyhow::anyhow!("stored root path: {e}"))?,
        capacity_gb: row.try_get("capacity_gb")?,
        allocated_gb: row.try_get("allocated_gb")?,
        delete_policy: DeletePolicy::parse(&policy).unwrap_or_default(),
    })
}

impl Datastore {
    pub async fn create_root_path(
        &self,
        server: ServerId,
        path: &RootDir,
        capacity_gb: i64,
        policy: DeletePolicy,
    ) -> Result<RootPath> {
        crate::spec::gb_amount(capacity_gb, 1)
            .map_err(|e| Error::out_of_range(Amount::Capacity, e.0))?;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let exists = sqlx::query("SELECT 1 FROM servers WHERE id = ?")
            .bind(server)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(Error::UnknownServer(server));
        }
        let others = sqlx::query("SELECT path FROM root_paths WHERE server_id = ?")
            .bind(server)
            .fetch_all(&mut *tx)
            .await?;
        for row in others {
            let other: String = row.try_get("path")?;
            if let Ok(other) = RootDir::parse(&other)
                && other.overlaps(path)
            {
                return Err(Error::conflict(
                    Clash::RootPathOverlap,
                    format!("{path} overlaps root path {other} on the same server"),
                ));
            }
        }
        let row = sqlx::query(
            "INSERT INTO root_paths (server_id, path, capacity_gb, delete_policy, created_at) \
             VALUES (?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(server)
        .bind(path.as_str())
        .bind(capacity_gb)
        .bind(policy.as_str())
        .bind(now())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        self.root_path(row.try_get("id")?).await
    }

    pub async fn root_path(&self, id: RootPathId) -> Result<RootPath> {
        let sql = format!("{ROOT_PATH_SELECT} WHERE rp.id = ?");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::not_found(Entity::RootPath, id))?;
        root_path_from_row(&row)
    }

    pub async fn root_paths(&self) -> Result<Vec<RootPath>> {
        let sql = format!("{ROOT_PATH_SELECT} ORDER BY rp.id");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(root_path_from_row).collect()
    }
}
