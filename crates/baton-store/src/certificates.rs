//! Certificates for the apps' hosts, one per app and environment (its
//! hosts and preview hosts together), and the ACME accounts they are
//! issued to. Private keys are kept here as PEM, like the rest of the store
//! readable by the server's user only (the data folder is owner-only).

use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{Result, Store};

pub(crate) const CERTIFICATES_SCHEMA: &str = "
CREATE TABLE certificates (
    app          TEXT NOT NULL,
    environment  TEXT NOT NULL,
    source       TEXT NOT NULL,
    hosts        TEXT NOT NULL,
    chain_pem    TEXT,
    key_pem      TEXT,
    issuer       TEXT,
    not_before   INTEGER,
    not_after    INTEGER,
    renewed_at   INTEGER,
    last_error   TEXT,
    failed_at    INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER,
    PRIMARY KEY (app, environment)
);
CREATE TABLE acme_accounts (
    directory   TEXT PRIMARY KEY,
    credentials TEXT NOT NULL,
    created_at  INTEGER NOT NULL
)";

/// One app and environment's certificate: what it covers, where it comes
/// from, the one served now (if any) and how getting the next one went.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    pub app: String,
    pub environment: String,
    /// `acme` or `files`.
    pub source: String,
    /// The hosts it must cover.
    pub hosts: Vec<String>,
    /// The certificate served now: chain (leaf first) and key, PEM.
    pub chain_pem: Option<String>,
    #[serde(skip_serializing)]
    pub key_pem: Option<String>,
    pub issuer: Option<String>,
    /// Validity of the certificate served, in ms since the epoch.
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    /// When it was obtained (issued, or read from its files).
    pub renewed_at: Option<i64>,
    /// Why the last attempt to get one failed, if it did.
    pub last_error: Option<String>,
    pub failed_at: Option<i64>,
    /// Failed attempts in a row.
    pub attempts: i64,
    /// Not tried again before this (backoff after a failure).
    pub next_attempt: Option<i64>,
}

impl std::fmt::Debug for CertificateRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateRecord")
            .field("app", &self.app)
            .field("environment", &self.environment)
            .field("source", &self.source)
            .field("hosts", &self.hosts)
            .field("not_after", &self.not_after)
            .field("last_error", &self.last_error)
            .finish_non_exhaustive()
    }
}

impl CertificateRecord {
    fn from_row(r: &SqliteRow) -> CertificateRecord {
        let hosts: String = r.get("hosts");
        CertificateRecord {
            app: r.get("app"),
            environment: r.get("environment"),
            source: r.get("source"),
            hosts: serde_json::from_str(&hosts).unwrap_or_default(),
            chain_pem: r.get("chain_pem"),
            key_pem: r.get("key_pem"),
            issuer: r.get("issuer"),
            not_before: r.get("not_before"),
            not_after: r.get("not_after"),
            renewed_at: r.get("renewed_at"),
            last_error: r.get("last_error"),
            failed_at: r.get("failed_at"),
            attempts: r.get("attempts"),
            next_attempt: r.get("next_attempt"),
        }
    }
}

impl Store {
    /// Every certificate record, by app and environment.
    pub async fn certificates(&self) -> Result<Vec<CertificateRecord>> {
        let rows = sqlx::query("SELECT * FROM certificates ORDER BY app, environment")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(CertificateRecord::from_row).collect())
    }

    /// Writes a certificate record whole (in one statement: a crash leaves
    /// the old one or the new one).
    pub async fn put_certificate(&self, c: &CertificateRecord) -> Result<()> {
        sqlx::query(
            "INSERT OR REPLACE INTO certificates (app, environment, source, hosts, chain_pem, key_pem,
                 issuer, not_before, not_after, renewed_at, last_error, failed_at, attempts, next_attempt)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.app)
        .bind(&c.environment)
        .bind(&c.source)
        .bind(serde_json::to_string(&c.hosts).unwrap_or_else(|_| "[]".into()))
        .bind(&c.chain_pem)
        .bind(&c.key_pem)
        .bind(&c.issuer)
        .bind(c.not_before)
        .bind(c.not_after)
        .bind(c.renewed_at)
        .bind(&c.last_error)
        .bind(c.failed_at)
        .bind(c.attempts)
        .bind(c.next_attempt)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn remove_certificate(&self, app: &str, environment: &str) -> Result<()> {
        sqlx::query("DELETE FROM certificates WHERE app = ? AND environment = ?")
            .bind(app)
            .bind(environment)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The saved credentials of the ACME account at `directory`, if any.
    pub async fn acme_account(&self, directory: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT credentials FROM acme_accounts WHERE directory = ?")
                .bind(directory)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn put_acme_account(&self, directory: &str, credentials: &str) -> Result<()> {
        sqlx::query(
            "INSERT OR REPLACE INTO acme_accounts (directory, credentials, created_at) VALUES (?, ?, ?)",
        )
        .bind(directory)
        .bind(credentials)
        .bind(crate::now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
