//! Users: accounts, their quota and lock.

use super::sql::{Row, Tx, q};
use super::{Columns, Datastore, now};
use crate::error::{Amount, Clash, Entity, Error, Result};
use crate::model::{Role, User};

#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub quota_gb: Option<i64>,
    pub locked: Option<bool>,
    /// The old flag: `true` makes an administrator, `false` makes an administrator a user
    /// (and leaves other roles alone). `role`, when given, wins.
    pub is_admin: Option<bool>,
    pub role: Option<Role>,
    pub password_hash: Option<String>,
}

pub(super) fn user_from_row(row: &Row) -> Result<User> {
    let role = row.text("role")?;
    Ok(User {
        id: row.id("id")?,
        username: row.text("username")?,
        password_hash: row.text("password_hash")?,
        role: Role::parse(&role).ok_or_else(|| {
            Error::Internal(anyhow::anyhow!("stored role {role:?} is not a role"))
        })?,
        quota_gb: row.int("quota_gb")?,
        used_gb: row.int("used_gb")?,
        locked: row.flag("locked")?,
    })
}

impl Datastore {
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
        quota_gb: i64,
    ) -> Result<User> {
        crate::spec::gb_amount(quota_gb, 0).map_err(|e| Error::out_of_range(Amount::Quota, e.0))?;
        let res = q(
            "INSERT INTO users (username, password_hash, role, quota_gb, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(username)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(quota_gb)
        .bind(now())
        .execute(self.db.write())
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
        let row = q("SELECT * FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(self.db.read())
            .await?
            .ok_or_else(|| Error::not_found(Entity::User, format!("{username:?}")))?;
        user_from_row(&row)
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        let rows = q("SELECT * FROM users ORDER BY id")
            .fetch_all(self.db.read())
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
        let mut tx = self.db.begin_write().await?;
        if let Some(by) = by {
            refuse_if_locked(&mut tx, by).await?;
        }
        let changed = q(
            "UPDATE users SET quota_gb = COALESCE(?1, quota_gb), locked = COALESCE(?2, locked), \
             role = CASE WHEN ?3 IS NOT NULL THEN ?3 WHEN ?4 = 1 THEN 'admin' \
                         WHEN ?4 = 0 AND role = 'admin' THEN 'user' ELSE role END, \
             password_hash = COALESCE(?5, password_hash) WHERE username = ?6",
        )
        .bind(change.quota_gb)
        .bind(change.locked)
        .bind(change.role.map(Role::as_str))
        .bind(change.is_admin)
        .bind(change.password_hash.as_deref())
        .bind(username)
        .execute(&mut tx)
        .await?;
        if changed == 0 {
            return Err(Error::not_found(Entity::User, format!("{username:?}")));
        }
        tx.commit().await?;
        self.user_by_name(username).await
    }
}

/// Refuse a change by a locked account, inside the transaction that would record it: a lock
/// set after the request was authenticated still stops it.
/// An auditor is refused the same way (before being told it is locked), so a role changed
/// meanwhile is seen too.
pub(super) async fn refuse_if_locked(tx: &mut Tx, viewer: &User) -> Result<()> {
    let (locked, role) = account(tx, viewer).await?;
    if role == Role::Auditor {
        return Err(Error::Forbidden(
            "an auditor account reads everything but changes nothing".into(),
        ));
    }
    refuse_locked(locked)
}

/// Refuse a locked account whatever its role: for changes to its own credentials, which an
/// auditor may make.
pub(super) async fn refuse_if_locked_any_role(tx: &mut Tx, viewer: &User) -> Result<()> {
    refuse_locked(account(tx, viewer).await?.0)
}

fn refuse_locked(locked: bool) -> Result<()> {
    if locked {
        return Err(Error::Locked(LOCKED_MESSAGE.into()));
    }
    Ok(())
}

/// The account's lock and role as they are now (on PostgreSQL, its row locked until the
/// transaction ends, so a lock set meanwhile waits for the change it would have stopped).
async fn account(tx: &mut Tx, viewer: &User) -> Result<(bool, Role)> {
    let row = q(format!(
        "SELECT locked, role FROM users WHERE id = ?{}",
        tx.for_update()
    ))
    .bind(viewer.id)
    .fetch_optional(&mut *tx)
    .await?;
    match row {
        Some(row) => Ok((
            row.flag("locked")?,
            Role::parse(&row.text("role")?).unwrap_or_default(),
        )),
        None => Err(Error::Unauthenticated(
            "your account no longer exists".into(),
        )),
    }
}

/// What a locked account is told when it tries to change anything.
pub const LOCKED_MESSAGE: &str = "your account is locked; ask an administrator to unlock it";

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::sqlite::SqliteConnectOptions;

    use super::*;

    /// A database made before roles (migrations up to 0004) keeps its administrators.
    #[tokio::test]
    async fn migration_0005_makes_existing_administrators_admins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .unwrap()
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        let mut before = sqlx::migrate!("./migrations");
        before.migrations = before
            .migrations
            .iter()
            .filter(|m| m.version < 5)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        before.run(&pool).await.unwrap();
        for (name, is_admin) in [("root", 1), ("alice", 0)] {
            sqlx::query(
                "INSERT INTO users (username, password_hash, is_admin, created_at) \
                 VALUES (?, 'x', ?, '2026-01-01T00:00:00Z')",
            )
            .bind(name)
            .bind(is_admin)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
        let db = Datastore::open(&path).await.unwrap();
        let root = db.user_by_name("root").await.unwrap();
        let alice = db.user_by_name("alice").await.unwrap();
        assert_eq!((root.role, alice.role), (Role::Admin, Role::User));
        // is_admin is computed from the role from now on.
        let change = UserChange {
            role: Some(Role::Auditor),
            ..UserChange::default()
        };
        db.update_user("root", &change).await.unwrap();
        let flag: bool = sqlx::query_scalar("SELECT is_admin FROM users WHERE username = 'root'")
            .fetch_one(db.sqlite_pool())
            .await
            .unwrap();
        assert!(!flag);
        // The old flag still works: true makes an admin, false makes an admin a user and
        // leaves an auditor alone.
        let flag = |v| UserChange {
            is_admin: Some(v),
            ..UserChange::default()
        };
        assert_eq!(
            db.update_user("root", &flag(false)).await.unwrap().role,
            Role::Auditor
        );
        assert_eq!(
            db.update_user("alice", &flag(true)).await.unwrap().role,
            Role::Admin
        );
        assert_eq!(
            db.update_user("alice", &flag(false)).await.unwrap().role,
            Role::User
        );
    }
}
