//! Notifications: every event of interest (a failed build, a deploy that
//! succeeded or failed, a rollback) becomes one recorded message per
//! subscribed channel, then is delivered with retries, each attempt
//! recorded. Events are read from the store's event log after a saved
//! cursor, so deploys made by hand notify too, and a restart neither loses
//! nor repeats them (one message per event and channel, enforced by the store).

use std::sync::Arc;
use std::time::Duration;

use baton_store::{Event, NewNotification, Notification};
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::json;

use baton_store::EventKind;

use crate::config::{Channel, ChannelKind};
use crate::signature;
use crate::Pipeline;

const CURSOR: &str = "notifier";

/// The event kinds that notify, and how a person reads them.
fn title(kind: Option<EventKind>) -> Option<&'static str> {
    Some(match kind? {
        EventKind::BuildFailed => "build failed",
        EventKind::Deployed => "deployed",
        EventKind::DeploymentFailed => "deployment failed",
        EventKind::RolledBack => "rolled back",
        EventKind::CertificateFailed => "certificate failed",
        EventKind::CronFailed => "cron job failed",
        _ => return None,
    })
}

impl Pipeline {
    /// Reads new events and queues their notifications; runs for ever.
    pub(crate) async fn notify_loop(self: Arc<Self>) {
        if self.config.channels.is_empty() {
            return;
        }
        let mut cursor = match self.store().cursor(CURSOR).await {
            Ok(Some(c)) => c,
            // First start: history is not news.
            _ => {
                let last = self.store().last_event_id().await.unwrap_or(0);
                let _ = self.store().set_cursor(CURSOR, last).await;
                last
            }
        };
        if let Ok(pending) = self.store().pending_notifications().await {
            for n in pending {
                self.spawn_delivery(n);
            }
        }
        loop {
            match self.store().events_after(cursor, 100).await {
                Ok(events) => {
                    for event in events {
                        // The place is saved only after an event that
                        // notified: re-reading the others after a restart
                        // sends nothing, and the store sees fewer writes.
                        if self.notify_event(&event).await {
                            if let Err(e) = self.store().set_cursor(CURSOR, event.id).await {
                                tracing::error!(error = %e, "cannot save the notifier's place");
                            }
                        }
                        cursor = event.id;
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read events to notify"),
            }
            let _ = tokio::time::timeout(Duration::from_millis(250), self.wake.notified()).await;
        }
    }

    /// Queues the event's notifications; whether there were any.
    async fn notify_event(self: &Arc<Self>, event: &Event) -> bool {
        let Some(what) = title(event.kind()) else {
            return false;
        };
        let mut any = false;
        let subject = format!("[baton] {} {}: {what}", event.app, event.environment);
        for channel in &self.config.channels {
            if !channel.events.iter().any(|e| e == &event.kind) {
                continue;
            }
            let new = NewNotification {
                event_id: Some(event.id),
                channel: channel.name.clone(),
                kind: channel.kind.as_str().to_string(),
                event_kind: event.kind.clone(),
                app: event.app.clone(),
                environment: event.environment.clone(),
                subject: subject.clone(),
                body: event.message.clone(),
            };
            self.queue_notification(new).await;
            any = true;
        }
        any
    }

    /// Records a message and starts delivering it.
    pub(crate) async fn queue_notification(self: &Arc<Self>, new: NewNotification) -> Option<i64> {
        match self.store().create_notification(&new).await {
            Ok(Some(n)) => {
                let id = n.id;
                self.spawn_delivery(n);
                Some(id)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(channel = new.channel, error = %e, "cannot record a notification");
                None
            }
        }
    }

    fn spawn_delivery(self: &Arc<Self>, n: Notification) {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.deliver(n).await });
    }

    async fn deliver(&self, n: Notification) {
        let Some(channel) = self.config.channel(&n.channel).cloned() else {
            let _ = self
                .store()
                .record_notification_attempt(
                    n.id,
                    "failed",
                    Some("the channel is no longer configured"),
                )
                .await;
            return;
        };
        let attempts = self.config.notify_attempts.max(1) as i64;
        let mut wait = self.config.notify_backoff;
        for attempt in n.attempts..attempts {
            match self.send(&channel, &n).await {
                Ok(()) => {
                    let _ = self
                        .store()
                        .record_notification_attempt(n.id, "delivered", None)
                        .await;
                    self.wake.notify_waiters();
                    return;
                }
                Err(e) => {
                    let last = attempt + 1 >= attempts;
                    tracing::warn!(channel = channel.name, notification = n.id, attempt = attempt + 1, error = %e, "notification not delivered");
                    let state = if last { "failed" } else { "pending" };
                    let _ = self
                        .store()
                        .record_notification_attempt(n.id, state, Some(&e))
                        .await;
                    if last {
                        return;
                    }
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2);
                }
            }
        }
    }

    async fn send(&self, channel: &Channel, n: &Notification) -> Result<(), String> {
        match channel.kind {
            ChannelKind::Webhook => {
                let body = serde_json::to_vec(&json!({
                    "notification": n.id,
                    "event": n.event_kind,
                    "app": n.app,
                    "environment": n.environment,
                    "subject": n.subject,
                    "message": n.body,
                    "at": n.created_at,
                }))
                .map_err(|e| e.to_string())?;
                let mut request = self
                    .http
                    .post(channel.url.as_deref().unwrap_or_default())
                    .header("content-type", "application/json")
                    .header("x-baton-event", &n.event_kind)
                    .header("x-baton-delivery", n.id.to_string());
                if let Some(secret) = &channel.secret {
                    request = request.header(
                        "x-baton-signature-256",
                        signature::sign(secret.as_bytes(), &body),
                    );
                }
                check(request.body(body).send().await).await
            }
            ChannelKind::Slack => {
                let text = format!("*{}*\n{}", n.subject, n.body);
                let request = self
                    .http
                    .post(channel.url.as_deref().unwrap_or_default())
                    .json(&json!({"text": text}));
                check(request.send().await).await
            }
            ChannelKind::Email => send_mail(channel, n).await,
        }
    }
}

async fn check(response: reqwest::Result<reqwest::Response>) -> Result<(), String> {
    let response = response.map_err(|e| format!("cannot reach the receiver: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {}", response.status()))
    }
}

async fn send_mail(channel: &Channel, n: &Notification) -> Result<(), String> {
    let smtp = channel.smtp.as_deref().unwrap_or_default();
    let (host, port) = smtp
        .rsplit_once(':')
        .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h, p)))
        .ok_or_else(|| format!("smtp {smtp:?} is not host:port"))?;
    let mut message = Message::builder()
        .from(
            channel
                .from
                .as_deref()
                .unwrap_or_default()
                .parse()
                .map_err(|e| format!("from: {e}"))?,
        )
        .subject(&n.subject)
        .header(ContentType::TEXT_PLAIN);
    for to in &channel.to {
        message = message.to(to.parse().map_err(|e| format!("to {to}: {e}"))?);
    }
    let message = message
        .body(n.body.clone())
        .map_err(|e| format!("cannot build the e-mail: {e}"))?;
    // Plain SMTP: the relay is the server's own (a local MTA); TLS is for it.
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .timeout(Some(Duration::from_secs(10)))
        .build();
    mailer
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| format!("SMTP {smtp}: {e}"))
}
