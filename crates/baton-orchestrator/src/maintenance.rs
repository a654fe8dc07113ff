//! Maintenance mode: the proxy answers an app's environment with 503, a
//! `Retry-After` and the message (a page for browsers, JSON for API
//! clients), while its targets keep running; recorded in the store with
//! its audit entry, so it survives restarts and deploys.

use baton_proxy::RouteKey;

use crate::{Actor, Error, Orchestrator, Result};

/// What a visitor is told when no message is given.
pub const DEFAULT_MESSAGE: &str = "down for maintenance; back soon";

impl Orchestrator {
    pub(crate) fn maintenance_of(&self, key: &RouteKey) -> Option<String> {
        self.maintenance
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Puts `app` in `environment` in maintenance (`Some(message)`) or out
    /// of it (`None`); returns the message now shown, if any.
    pub async fn set_maintenance(
        &self,
        app: &str,
        environment: &str,
        message: Option<String>,
        actor: &Actor,
    ) -> Result<Option<String>> {
        if self.store.route(app, environment).await?.is_none() {
            return Err(Error::NotFound(format!(
                "{app} has no route in {environment}: deploy it there first (`baton status` lists what runs where)"
            )));
        }
        let message = message.map(|m| {
            let m = m.trim().to_string();
            if m.is_empty() {
                DEFAULT_MESSAGE.to_string()
            } else {
                m
            }
        });
        if let Some(m) = &message {
            if m.len() > 1_000 {
                return Err(Error::Invalid(format!(
                    "the maintenance message is {} bytes; keep it under 1,000",
                    m.len()
                )));
            }
        }
        let key = RouteKey::new(app, environment);
        let action = if message.is_some() {
            "maintenance.on"
        } else {
            "maintenance.off"
        };
        let entry = actor.entry(
            action,
            format!("environment {app}/{environment}"),
            app,
            environment,
            serde_json::json!({ "message": message }),
        );
        self.store
            .set_maintenance(app, environment, message.as_deref(), &entry)
            .await?;
        {
            let mut on = self.maintenance.lock().unwrap_or_else(|e| e.into_inner());
            match &message {
                Some(m) => on.insert(key.clone(), m.clone()),
                None => on.remove(&key),
            };
        }
        let (kind, said) = match &message {
            Some(m) => (
                baton_store::EventKind::MaintenanceOn,
                format!(
                    "maintenance on by {}: visitors get 503 and {m:?}",
                    actor.name
                ),
            ),
            None => (
                baton_store::EventKind::MaintenanceOff,
                format!("maintenance off by {}: served again", actor.name),
            ),
        };
        self.event(&key, kind, &said).await;
        if let Some(spec) = self.proxy.route(&key) {
            let spec = baton_proxy::RouteSpec {
                maintenance: message.clone(),
                ..spec
            };
            self.proxy
                .set_route(spec)
                .await
                .map_err(|e| Error::Internal(format!("the proxy did not take the change: {e}")))?;
        }
        Ok(message)
    }
}
