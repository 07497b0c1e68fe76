//! Users: accounts, their quota and lock.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Datastore, now};
use crate::error::{Amount, Clash, Entity, Error, Result};
use crate::model::User;

#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub quota_gb: Option<i64>,
    pub locked: Option<bool>,
    pub is_admin: Option<bool>,
    pub password_hash: Option<String>,
}

fn user_from_row(row: &SqliteRow) -> Result<User> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        is_admin: row.try_get("is_admin")?,
        quota_gb: row.try_get("quota_gb")?,
        used_gb: row.try_get("used_gb")?,
        locked: row.try_get("locked")?,
    })
}

impl Datastore {
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        is_admin: bool,
        quota_gb: i64,
    ) -> Result<User> {
        crate::spec::gb_amount(quota_gb, 0).map_err(|e| Error::out_of_range(Amount::Quota, e.0))?;
        let res = sqlx::query(
            "INSERT INTO users (username, password_hash, is_admin, quota_gb, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(username)
        .bind(password_hash)
        .bind(is_admin)
        .bind(quota_gb)
        .bind(now())
        .execute(&self.writer)
        .await;
        match res {
            Ok(_) => self.user_by_name(username).await,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(Error::conflict(
                Clash::Username,
                format!("a user named {username:?} already exists"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn user_by_name(&self, username: &str) -> Result<User> {
        let row = sqlx::query("SELECT * FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::not_found(Entity::User, format!("{username:?}")))?;
        user_from_row(&row)
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Change a user (the CLI: no caller to check).
    pub async fn update_user(&self, username: &str, change: &UserChange) -> Result<User> {
        self.change_user(None, username, change).await
    }

    /// Change a user on behalf of `by`, refused if `by` is locked when it is recorded.
    pub async fn update_user_as(
        &self,
        by: &User,
        username: &str,
        change: &UserChange,
    ) -> Result<User> {
        self.change_user(Some(by), username, change).await
    }

    async fn change_user(
        &self,
        by: Option<&User>,
        username: &str,
        change: &UserChange,
    ) -> Result<User> {
        if let Some(q) = change.quota_gb {
            crate::spec::gb_amount(q, 0).map_err(|e| Error::out_of_range(Amount::Quota, e.0))?;
        }
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(by) = by {
            refuse_if_locked(&mut tx, by).await?;
        }
        let res = sqlx::query(
            "UPDATE users SET quota_gb = COALESCE(?, quota_gb), locked = COALESCE(?, locked), \
             is_admin = COALESCE(?, is_admin), password_hash = COALESCE(?, password_hash) \
             WHERE username = ?",
        )
        .bind(change.quota_gb)
        .bind(change.locked)
        .bind(change.is_admin)
        .bind(change.password_hash.as_deref())
        .bind(username)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(Error::not_found(Entity::User, format!("{username:?}")));
        }
        tx.commit().await?;
        self.user_by_name(username).await
    }
}

/// Refuse a change by a locked account, inside the transaction that would record it: a lock
/// set after the request was authenticated still stops it.
pub(super) async fn refuse_if_locked(tx: &mut sqlx::SqliteConnection, viewer: &User) -> Result<()> {
    let locked: Option<bool> = sqlx::query_scalar("SELECT locked FROM users WHERE id = ?")
        .bind(viewer.id)
        .fetch_optional(&mut *tx)
        .await?;
    match locked {
        Some(false) => Ok(()),
        Some(true) => Err(Error::Locked(LOCKED_MESSAGE.into())),
        None => Err(Error::Unauthenticated(
            "your account no longer exists".into(),
        )),
    }
}

/// What a locked account is told when it tries to change anything.
pub const LOCKED_MESSAGE: &str = "your account is locked; ask an administrator to unlock it";
