//! `/api/v1/tokens`: a user makes, lists and revokes their own API tokens. A token is shown
//! once, in the answer that makes it; it signs in as its user (with the user's current role)
//! through `Authorization: Bearer` on the native API until it expires or is revoked.
//!
//! Tokens are made with the password (Basic), never with another token: a stolen token must
//! not be able to outlive its expiry by minting a successor. An auditor may hold tokens: they
//! are its own credentials, not anything it audits.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::audit::{fields, record_change};
use super::native::parse_body;
use super::{AppState, Audited, Caller, NativeError, Route};
use crate::datastore::Token;
use crate::error::{Entity, Error};
use crate::model::TokenId;

pub fn routes() -> Vec<Route> {
    vec![
        Route::get("/api/v1/tokens", list_tokens),
        Route::post("/api/v1/tokens", create_token),
        Route::delete("/api/v1/tokens/{id}", revoke_token),
    ]
}

/// Days a token lives unless asked otherwise, and at most.
const DEFAULT_DAYS: i64 = 30;
const MAX_DAYS: i64 = 365;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTokenIn {
    name: String,
    #[serde(default)]
    expires_in_days: Option<i64>,
}

/// A token as listed: never the token itself.
#[derive(Serialize)]
struct TokenBody {
    id: TokenId,
    name: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl From<&Token> for TokenBody {
    fn from(t: &Token) -> Self {
        TokenBody {
            id: t.id,
            name: t.name.clone(),
            created_at: t.created_at,
            expires_at: t.expires_at,
        }
    }
}

/// The answer to a create: the listing's fields and, this once, the token.
#[derive(Serialize)]
struct CreatedTokenBody {
    #[serde(flatten)]
    token: TokenBody,
    secret: String,
}

fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" _.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            "use 1-64 letters, digits, spaces, '_', '.' or '-'",
        ))
    }
}

async fn create_token(
    State(st): State<AppState>,
    Caller(user): Caller,
    Audited(ctx): Audited,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, NativeError> {
    let by_token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::parse_bearer)
        .is_some();
    if by_token {
        return Err(Error::Forbidden(
            "make tokens with your password (Basic credentials), not with another token".into(),
        )
        .into());
    }
    let req: CreateTokenIn = parse_body(&body)?;
    check_name(&req.name)?;
    let days = req.expires_in_days.unwrap_or(DEFAULT_DAYS);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(Error::invalid(
            "expires_in_days",
            format!("give 1 to {MAX_DAYS} days (default {DEFAULT_DAYS})"),
        )
        .into());
    }
    let secret = crate::auth::new_token();
    let expires_at = Utc::now() + chrono::Duration::days(days);
    let token = st
        .db()
        .create_token(
            &user,
            &req.name,
            &crate::auth::token_hash(&secret),
            expires_at,
        )
        .await?;
    // Its id, name and dates: never the secret, nor its hash.
    let object = format!("token/{}", token.id.0);
    let after = fields(&TokenBody::from(&token));
    record_change(&st, &ctx, "token.create", object, None, after).await;
    let body = CreatedTokenBody {
        token: TokenBody::from(&token),
        secret,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn list_tokens(
    State(st): State<AppState>,
    Caller(user): Caller,
) -> Result<Json<Vec<TokenBody>>, NativeError> {
    let tokens = st.db().tokens_of(&user).await?;
    Ok(Json(tokens.iter().map(TokenBody::from).collect()))
}

async fn revoke_token(
    State(st): State<AppState>,
    Caller(user): Caller,
    Audited(ctx): Audited,
    Path(id): Path<String>,
) -> Result<StatusCode, NativeError> {
    let id = id
        .parse::<i64>()
        .map(TokenId)
        .map_err(|_| Error::not_found(Entity::Token, format!("{id:?}")))?;
    let token = st.db().revoke_token(&user, id).await?;
    let before = fields(&TokenBody::from(&token));
    record_change(
        &st,
        &ctx,
        "token.revoke",
        format!("token/{}", id.0),
        before,
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
