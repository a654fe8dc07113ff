//! Accounts: users with a role, API tokens and dashboard sessions. Secrets
//! are never stored: passwords as Argon2id hashes, tokens and session ids
//! as SHA-256 hashes (computed by the caller). Revoking a token or ending a
//! session is one write; every request looks them up again, so it takes
//! effect at once.

use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{now_ms, Result, Store, StoreError};

pub(crate) const ACCOUNTS_SCHEMA: &str = r#"
CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    environments  TEXT,
    created_at    INTEGER NOT NULL
);
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL,
    user         TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    role         TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE TABLE sessions (
    id_hash        TEXT PRIMARY KEY,
    user           TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf           TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    remote_address TEXT
);
"#;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    #[serde(skip)]
    pub password_hash: String,
    /// `viewer`, `deployer` or `admin`.
    pub role: String,
    /// For deployers: the environments they may change; `None` is all.
    pub environments: Option<Vec<String>>,
    /// For deployers: the apps they may change; `None` is all.
    pub apps: Option<Vec<String>>,
    pub created_at: i64,
}

impl UserRecord {
    fn from_row(r: &SqliteRow) -> UserRecord {
        UserRecord {
            name: r.get("name"),
            password_hash: r.get("password_hash"),
            role: r.get("role"),
            environments: r
                .get::<Option<&str>, _>("environments")
                .and_then(|text| serde_json::from_str(text).ok()),
            apps: r
                .get::<Option<&str>, _>("apps")
                .and_then(|text| serde_json::from_str(text).ok()),
            created_at: r.get("created_at"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    pub user: String,
    pub role: String,
    /// The first characters of the token, to recognise it in a list.
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl TokenRecord {
    fn from_row(r: &SqliteRow) -> TokenRecord {
        TokenRecord {
            id: r.get("id"),
            name: r.get("name"),
            user: r.get("user"),
            role: r.get("role"),
            prefix: r.get("prefix"),
            created_at: r.get("created_at"),
            last_used_at: r.get("last_used_at"),
            revoked_at: r.get("revoked_at"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub user: String,
    pub csrf: String,
    pub expires_at: i64,
}

impl Store {
    pub async fn count_users(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Creates a user; a taken name is a conflict.
    pub async fn create_user(&self, user: &UserRecord) -> Result<()> {
        let list = |l: &Option<Vec<String>>| {
            l.as_ref()
                .map(|e| serde_json::to_string(e).unwrap_or_else(|_| "[]".into()))
        };
        let done = sqlx::query(
            "INSERT INTO users (name, password_hash, role, environments, apps, created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(&user.role)
        .bind(list(&user.environments))
        .bind(list(&user.apps))
        .bind(user.created_at)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "user {} already exists",
                user.name
            )));
        }
        Ok(())
    }

    pub async fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        let row = sqlx::query("SELECT * FROM users WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(UserRecord::from_row))
    }

    pub async fn users(&self) -> Result<Vec<UserRecord>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(UserRecord::from_row).collect())
    }

    /// Removes a user; their tokens and sessions go with them.
    pub async fn delete_user(&self, name: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM users WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no user {name}")));
        }
        Ok(())
    }

    pub async fn set_password(&self, name: &str, password_hash: &str) -> Result<()> {
        let done = sqlx::query("UPDATE users SET password_hash = ? WHERE name = ?")
            .bind(password_hash)
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no user {name}")));
        }
        Ok(())
    }

    pub async fn create_token(
        &self,
        name: &str,
        user: &str,
        role: &str,
        hash: &str,
        prefix: &str,
    ) -> Result<TokenRecord> {
        let row = sqlx::query(
            "INSERT INTO api_tokens (name, user, role, hash, prefix, created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(name)
        .bind(user)
        .bind(role)
        .bind(hash)
        .bind(prefix)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(TokenRecord::from_row(&row))
    }

    /// The live (not revoked) token with this hash, marking it used.
    pub async fn use_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(
            "UPDATE api_tokens SET last_used_at = ? WHERE hash = ? AND revoked_at IS NULL RETURNING *",
        )
        .bind(now_ms())
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(TokenRecord::from_row))
    }

    pub async fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenRecord>> {
        let rows =
            sqlx::query("SELECT * FROM api_tokens WHERE (? IS NULL OR user = ?) ORDER BY id")
                .bind(user)
                .bind(user)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(TokenRecord::from_row).collect())
    }

    pub async fn token(&self, id: i64) -> Result<TokenRecord> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no token {id}")))?;
        Ok(TokenRecord::from_row(&row))
    }

    /// Revokes a token; it stops working with the next request.
    pub async fn revoke_token(&self, id: i64) -> Result<TokenRecord> {
        sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.token(id).await
    }

    pub async fn create_session(
        &self,
        id_hash: &str,
        user: &str,
        csrf: &str,
        expires_at: i64,
        remote_address: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, user, csrf, created_at, expires_at, remote_address) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(id_hash)
        .bind(user)
        .bind(csrf)
        .bind(now_ms())
        .bind(expires_at)
        .bind(remote_address)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session with this id hash, unless it expired.
    pub async fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>> {
        let row = sqlx::query(
            "SELECT user, csrf, expires_at FROM sessions WHERE id_hash = ? AND expires_at > ?",
        )
        .bind(id_hash)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| SessionRecord {
            user: r.get("user"),
            csrf: r.get("csrf"),
            expires_at: r.get("expires_at"),
        }))
    }

    pub async fn end_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = ? OR expires_at <= ?")
            .bind(id_hash)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
