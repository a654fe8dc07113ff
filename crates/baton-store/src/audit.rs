//! Reading the audit log a page at a time: entries matching a filter (app,
//! environment, actor, action), newest first, before or after a given entry.
//! Pages are keyed by entry id, not by offset, so an entry written while
//! someone reads never shifts the pages they follow. Writing stays in
//! `flags.rs`, beside the changes it is written with.

use sqlx::QueryBuilder;

use crate::{AuditEntry, Result, Store};

/// Which entries to read; every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub app: Option<String>,
    pub environment: Option<String>,
    pub actor: Option<String>,
    /// An action (`flag.enable`) or a family of them (`flag`).
    pub action: Option<String>,
}

/// Where a page starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuditCursor {
    /// The newest entries.
    #[default]
    Newest,
    /// Entries older than the one with this id.
    Before(i64),
    /// Entries newer than the one with this id (the page before, going back).
    After(i64),
}

/// The values an audit filter can take, each sorted, for choosing from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditValues {
    pub apps: Vec<String>,
    pub environments: Vec<String>,
    pub actors: Vec<String>,
    pub actions: Vec<String>,
}

impl Store {
    /// Up to `limit` entries matching `filter` from `cursor`, newest first.
    pub async fn audit_entries(
        &self,
        filter: &AuditFilter,
        cursor: AuditCursor,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        let mut query = QueryBuilder::new("SELECT * FROM audit_log WHERE 1 = 1");
        for (column, value) in [
            ("app", &filter.app),
            ("environment", &filter.environment),
            ("actor", &filter.actor),
        ] {
            if let Some(value) = value {
                query
                    .push(format!(" AND {column} = "))
                    .push_bind(value.clone());
            }
        }
        if let Some(action) = &filter.action {
            query
                .push(" AND (action = ")
                .push_bind(action.clone())
                .push(" OR substr(action, 1, length(")
                .push_bind(action.clone())
                .push(") + 1) = ")
                .push_bind(format!("{action}."))
                .push(")");
        }
        match cursor {
            AuditCursor::Newest => query.push(" ORDER BY id DESC"),
            AuditCursor::Before(id) => query
                .push(" AND id < ")
                .push_bind(id)
                .push(" ORDER BY id DESC"),
            // Nearest first, so the limit keeps the entries next to the cursor.
            AuditCursor::After(id) => query
                .push(" AND id > ")
                .push_bind(id)
                .push(" ORDER BY id ASC"),
        };
        query.push(" LIMIT ").push_bind(limit);
        let rows = query.build().fetch_all(&self.pool).await?;
        let mut entries: Vec<AuditEntry> = rows.iter().map(AuditEntry::from_row).collect();
        if matches!(cursor, AuditCursor::After(_)) {
            entries.reverse();
        }
        Ok(entries)
    }

    /// Every app, environment, actor and action the audit log names.
    pub async fn audit_values(&self) -> Result<AuditValues> {
        let mut values = AuditValues::default();
        for (column, out) in [
            ("app", &mut values.apps),
            ("environment", &mut values.environments),
            ("actor", &mut values.actors),
            ("action", &mut values.actions),
        ] {
            *out = sqlx::query_scalar(&format!(
                "SELECT DISTINCT {column} FROM audit_log WHERE {column} IS NOT NULL ORDER BY {column}"
            ))
            .fetch_all(&self.pool)
            .await?;
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(actor: &str, action: &str, app: &str, environment: &str) -> AuditEntry {
        AuditEntry::new(actor.into(), None, action, format!("thing of {app}"))
            .about(Some(app), Some(environment))
    }

    async fn store_with(entries: &[AuditEntry]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("baton.db")).await.unwrap();
        for e in entries {
            store.record_audit(e).await.unwrap();
        }
        (dir, store)
    }

    fn ids(entries: &[AuditEntry]) -> Vec<i64> {
        entries.iter().map(|e| e.id).collect()
    }

    #[tokio::test]
    async fn pages_go_back_and_forth_without_gaps_or_repeats() {
        let all: Vec<AuditEntry> = (0..7)
            .map(|_| entry("ada", "flag.enable", "a", "production"))
            .collect();
        let (_dir, store) = store_with(&all).await;
        let any = AuditFilter::default();
        let first = store
            .audit_entries(&any, AuditCursor::Newest, 3)
            .await
            .unwrap();
        assert_eq!(ids(&first), [7, 6, 5]);
        let second = store
            .audit_entries(&any, AuditCursor::Before(5), 3)
            .await
            .unwrap();
        assert_eq!(ids(&second), [4, 3, 2]);
        let last = store
            .audit_entries(&any, AuditCursor::Before(2), 3)
            .await
            .unwrap();
        assert_eq!(ids(&last), [1]);
        let back = store
            .audit_entries(&any, AuditCursor::After(4), 3)
            .await
            .unwrap();
        assert_eq!(ids(&back), [7, 6, 5], "the page before, newest first");
        let back = store
            .audit_entries(&any, AuditCursor::After(1), 3)
            .await
            .unwrap();
        assert_eq!(ids(&back), [4, 3, 2]);
    }

    #[tokio::test]
    async fn a_filter_keeps_only_entries_matching_every_field() {
        let (_dir, store) = store_with(&[
            entry("ada", "flag.enable", "a", "production"),
            entry("bob", "flag.disable", "a", "staging"),
            entry("ada", "deployment.create", "b", "production"),
            entry("ada", "flagship.launch", "a", "production"),
        ])
        .await;
        let read = |filter: AuditFilter| {
            let store = store.clone();
            async move {
                ids(&store
                    .audit_entries(&filter, AuditCursor::Newest, 50)
                    .await
                    .unwrap())
            }
        };
        let flag = AuditFilter {
            action: Some("flag".into()),
            ..Default::default()
        };
        assert_eq!(read(flag).await, [2, 1], "a family, not a prefix of a word");
        let exact = AuditFilter {
            action: Some("flag.enable".into()),
            ..Default::default()
        };
        assert_eq!(read(exact).await, [1]);
        let ada_in_a = AuditFilter {
            app: Some("a".into()),
            actor: Some("ada".into()),
            ..Default::default()
        };
        assert_eq!(read(ada_in_a).await, [4, 1]);
        let staging = AuditFilter {
            environment: Some("staging".into()),
            ..Default::default()
        };
        assert_eq!(read(staging).await, [2]);
        let values = store.audit_values().await.unwrap();
        assert_eq!(values.actors, ["ada", "bob"]);
        assert_eq!(values.apps, ["a", "b"]);
        assert_eq!(values.environments, ["production", "staging"]);
        assert_eq!(values.actions.len(), 4);
    }
}
