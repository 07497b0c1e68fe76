//! API tokens: each belongs to one user, has a name (unique among that user's live tokens)
//! and an expiry. Only the token's SHA-256 is stored (`auth::token_hash`); the token itself
//! is shown once, when it is made.

use chrono::{DateTime, Utc};

use super::sql::{Row, q};
use super::users::{refuse_if_locked_any_role, user_from_row};
use super::{Columns, Datastore, now};
use crate::error::{Clash, Entity, Error, Result};
use crate::model::{TokenId, User};

/// Most live (not revoked, not expired) tokens one user may hold.
pub const MAX_LIVE_TOKENS: i64 = 100;

/// A token as its user sees it: never the token, nor its hash.
#[derive(Debug, Clone)]
pub struct Token {
    pub id: TokenId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Why a presented token does not sign anyone in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    /// No live token has this hash (never made, or revoked).
    Unknown,
    Expired(DateTime<Utc>),
}

fn token_from_row(row: &Row) -> Result<Token> {
    Ok(Token {
        id: row.id("id")?,
        name: row.text("name")?,
        created_at: super::parse_time(&row.text("created_at")?),
        expires_at: super::parse_time(&row.text("expires_at")?),
    })
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Datastore {
    /// Record a token of `owner`'s whose SHA-256 is `hash`. Refused if `owner` is locked,
    /// or already holds a live token of this name or too many live tokens.
    pub async fn create_token(
        &self,
        owner: &User,
        name: &str,
        hash: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<Token> {
        let mut tx = self.db.begin_write().await?;
        refuse_if_locked_any_role(&mut tx, owner).await?;
        let now_text = now();
        // Expired tokens are dead: their names are free again and they do not count.
        q("UPDATE api_tokens SET revoked_at = ?1 \
             WHERE user_id = ?2 AND revoked_at IS NULL AND expires_at <= ?1")
        .bind(&now_text)
        .bind(owner.id)
        .execute(&mut tx)
        .await?;
        let live =
            q("SELECT COUNT(*) AS live FROM api_tokens WHERE user_id = ? AND revoked_at IS NULL")
                .bind(owner.id)
                .fetch_one(&mut tx)
                .await?
                .int("live")?;
        if live >= MAX_LIVE_TOKENS {
            return Err(Error::conflict(
                Clash::TokenCount,
                format!("you hold {live} live tokens, the most allowed; revoke one first"),
            ));
        }
        let res = q(
            "INSERT INTO api_tokens (user_id, name, token_hash, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(owner.id)
        .bind(name)
        .bind(hash)
        .bind(&now_text)
        .bind(stamp(expires_at))
        .fetch_one(&mut tx)
        .await;
        let row = match res {
            Ok(row) => row,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(Error::conflict(
                    Clash::TokenName,
                    format!("you already hold a live token named {name:?}"),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let token = token_from_row(&row)?;
        tx.commit().await?;
        Ok(token)
    }

    /// `owner`'s live tokens, oldest first.
    pub async fn tokens_of(&self, owner: &User) -> Result<Vec<Token>> {
        let rows = q(
            "SELECT * FROM api_tokens WHERE user_id = ? AND revoked_at IS NULL \
             AND expires_at > ? ORDER BY id",
        )
        .bind(owner.id)
        .bind(now())
        .fetch_all(self.db.read())
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    /// Revoke one of `owner`'s tokens: another user's token is "not found", as is one
    /// already revoked.
    pub async fn revoke_token(&self, owner: &User, id: TokenId) -> Result<Token> {
        let mut tx = self.db.begin_write().await?;
        // A locked account may still revoke its tokens: that only takes rights away.
        let row = q("UPDATE api_tokens SET revoked_at = ? \
             WHERE id = ? AND user_id = ? AND revoked_at IS NULL RETURNING *")
        .bind(now())
        .bind(id)
        .bind(owner.id)
        .fetch_optional(&mut tx)
        .await?
        .ok_or_else(|| Error::not_found(Entity::Token, id))?;
        let token = token_from_row(&row)?;
        tx.commit().await?;
        Ok(token)
    }

    /// The user whose live token has SHA-256 `hash`.
    pub async fn user_by_token(
        &self,
        hash: &str,
    ) -> Result<std::result::Result<User, TokenRefusal>> {
        let row = q(
            "SELECT u.*, t.expires_at AS token_expires_at FROM api_tokens t \
             JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = ? AND t.revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(self.db.read())
        .await?;
        let Some(row) = row else {
            return Ok(Err(TokenRefusal::Unknown));
        };
        let expires = super::parse_time(&row.text("token_expires_at")?);
        if expires <= Utc::now() {
            return Ok(Err(TokenRefusal::Expired(expires)));
        }
        Ok(Ok(user_from_row(&row)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::UserChange;
    use crate::datastore::test_fixture::fixture;
    use crate::model::Role;

    #[tokio::test]
    async fn tokens_are_found_by_hash_until_revoked_or_expired_and_only_by_their_owner() {
        let (_dir, db, _, _) = fixture().await;
        let u = db.user_by_name("u").await.unwrap();
        let v = db.create_user("v", "x", Role::User, 0).await.unwrap();
        let later = Utc::now() + chrono::Duration::days(1);
        let t = db.create_token(&u, "ci", "h1", later).await.unwrap();
        assert_eq!(db.user_by_token("h1").await.unwrap().unwrap().id, u.id);
        assert_eq!(
            db.user_by_token("h2").await.unwrap().unwrap_err(),
            TokenRefusal::Unknown
        );
        // A live name is taken; another user may use it.
        assert!(matches!(
            db.create_token(&u, "ci", "h2", later).await,
            Err(Error::Conflict {
                with: Clash::TokenName,
                ..
            })
        ));
        db.create_token(&v, "ci", "h3", later).await.unwrap();
        assert_eq!(db.tokens_of(&u).await.unwrap().len(), 1);
        // Another user's token is not found, and stays.
        assert!(matches!(
            db.revoke_token(&v, t.id).await,
            Err(Error::NotFound {
                what: Entity::Token,
                ..
            })
        ));
        db.revoke_token(&u, t.id).await.unwrap();
        assert_eq!(
            db.user_by_token("h1").await.unwrap().unwrap_err(),
            TokenRefusal::Unknown
        );
        assert!(db.revoke_token(&u, t.id).await.is_err());
        assert!(db.tokens_of(&u).await.unwrap().is_empty());
        // Expired: refused, not listed, its name free again.
        let past = Utc::now() - chrono::Duration::seconds(1);
        db.create_token(&u, "old", "h4", past).await.unwrap();
        assert!(matches!(
            db.user_by_token("h4").await.unwrap(),
            Err(TokenRefusal::Expired(_))
        ));
        assert!(db.tokens_of(&u).await.unwrap().is_empty());
        db.create_token(&u, "old", "h5", later).await.unwrap();
        // A locked user makes none.
        db.update_user(
            "u",
            &UserChange {
                locked: Some(true),
                ..UserChange::default()
            },
        )
        .await
        .unwrap();
        assert!(matches!(
            db.create_token(&u, "new", "h6", later).await,
            Err(Error::Locked(_))
        ));
    }
}
