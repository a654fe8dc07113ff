//! The server's pipeline settings, `pipeline.toml` (given to `baton server
//! --pipeline FILE`): the webhook secret, limits, review-app lifetime, the
//! notification channels and the announcement gate. Configured once per
//! server; what an app builds and where it goes is in its own `baton.toml`.
//! Errors name the file, line, column and field, as the manifest's do.

use baton_store::EventKind;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The secret shared with the forge's webhook. Without one, every
    /// delivery is refused.
    pub webhook_secret: Option<String>,
    /// Largest webhook body accepted, in bytes.
    #[serde(default = "defaults::max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// A review app older than this is removed by the sweep.
    #[serde(default = "defaults::review_ttl", deserialize_with = "duration")]
    pub review_ttl: Duration,
    /// How often the sweep looks for review apps to remove.
    #[serde(default = "defaults::sweep_interval", deserialize_with = "duration")]
    pub sweep_interval: Duration,
    /// Delivery attempts per notification (the first and the retries).
    #[serde(default = "defaults::notify_attempts")]
    pub notify_attempts: u32,
    /// The wait before the first retry; it doubles after each failure.
    #[serde(default = "defaults::notify_backoff", deserialize_with = "duration")]
    pub notify_backoff: Duration,
    #[serde(default)]
    pub announcements: Announcements,
    #[serde(default)]
    pub channels: Vec<Channel>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announcements {
    /// Pull requests carrying this label give their release notes.
    #[serde(default = "defaults::label")]
    pub label: String,
    /// The channel (by name) that reaches the subscribers.
    pub channel: Option<String>,
    /// How long after the announcement was delivered production may get it.
    #[serde(default, deserialize_with = "duration")]
    pub notice: Duration,
}

impl Default for Announcements {
    fn default() -> Self {
        Announcements {
            label: defaults::label(),
            channel: None,
            notice: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// A JSON POST signed with `X-Baton-Signature-256`.
    Webhook,
    /// A Slack-compatible incoming webhook (`{"text": …}`).
    Slack,
    /// E-mail over SMTP.
    Email,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Slack => "slack",
            ChannelKind::Email => "email",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    /// webhook and slack: where to POST.
    pub url: Option<String>,
    /// webhook: the key of the body's HMAC-SHA256 signature.
    pub secret: Option<String>,
    /// email: the SMTP server, `host:port` (plain SMTP, as on a local relay).
    pub smtp: Option<String>,
    /// email: the sender.
    pub from: Option<String>,
    /// email: the recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// Which events it receives: build_failed, deployed, deployment_failed,
    /// rolled_back, certificate_failed, cron_failed (all of them by default).
    #[serde(default = "defaults::events")]
    pub events: Vec<String>,
}

/// The events a channel can subscribe to (by their names in `events`).
pub const EVENTS: [EventKind; 6] = [
    EventKind::BuildFailed,
    EventKind::Deployed,
    EventKind::DeploymentFailed,
    EventKind::RolledBack,
    EventKind::CertificateFailed,
    EventKind::CronFailed,
];

mod defaults {
    use std::time::Duration;
    pub fn max_payload_bytes() -> usize {
        1024 * 1024
    }
    pub fn review_ttl() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
    pub fn sweep_interval() -> Duration {
        Duration::from_secs(60)
    }
    pub fn notify_attempts() -> u32 {
        5
    }
    pub fn notify_backoff() -> Duration {
        Duration::from_secs(1)
    }
    pub fn label() -> String {
        "needs-announcement".into()
    }
    pub fn events() -> Vec<String> {
        super::EVENTS
            .iter()
            .map(|e| e.as_str().to_string())
            .collect()
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({e}); write it like \"500ms\", \"30s\" or \"10m\""
        ))
    })
}

impl Default for Config {
    fn default() -> Self {
        Config {
            webhook_secret: None,
            max_payload_bytes: defaults::max_payload_bytes(),
            review_ttl: defaults::review_ttl(),
            sweep_interval: defaults::sweep_interval(),
            notify_attempts: defaults::notify_attempts(),
            notify_backoff: defaults::notify_backoff(),
            announcements: Announcements::default(),
            channels: Vec::new(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, String> {
        let file = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{file}: cannot read: {e}"))?;
        Config::parse(&text, &file)
    }

    pub fn parse(text: &str, file: &str) -> Result<Config, String> {
        let config: Config = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let field = e.path().to_string();
                let inner = e.into_inner();
                let (line, column) = inner
                    .span()
                    .map(|s| line_column(text, s.start))
                    .unwrap_or((1, 1));
                format!(
                    "{file}:{line}:{column}: field `{field}`: {}",
                    inner.message().trim()
                )
            })?;
        config
            .validate()
            .map_err(|(field, reason)| format!("{file}: field `{field}`: {reason}"))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if self.webhook_secret.as_deref().is_some_and(|s| s.is_empty()) {
            return Err(("webhook_secret".into(), "must not be empty".into()));
        }
        if self.notify_attempts == 0 {
            return Err(("notify_attempts".into(), "must be at least 1".into()));
        }
        for (i, c) in self.channels.iter().enumerate() {
            let at = |f: &str| format!("channels[{i}].{f}");
            if c.name.trim().is_empty() {
                return Err((at("name"), "must not be empty".into()));
            }
            if self.channels[..i].iter().any(|o| o.name == c.name) {
                return Err((at("name"), format!("{:?} names two channels", c.name)));
            }
            match c.kind {
                ChannelKind::Webhook | ChannelKind::Slack => {
                    let url = c.url.as_deref().unwrap_or("");
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err((at("url"), format!("{url:?} is not an http(s) URL")));
                    }
                }
                ChannelKind::Email => {
                    if c.smtp.as_deref().and_then(|s| s.rsplit_once(':')).is_none() {
                        return Err((
                            at("smtp"),
                            "must be host:port, like \"127.0.0.1:25\"".into(),
                        ));
                    }
                    if c.from
                        .as_deref()
                        .is_none_or(|f| f.parse::<lettre::message::Mailbox>().is_err())
                    {
                        return Err((at("from"), "must be an e-mail address".into()));
                    }
                    if c.to.is_empty() {
                        return Err((at("to"), "must name at least one recipient".into()));
                    }
                    for to in &c.to {
                        if to.parse::<lettre::message::Mailbox>().is_err() {
                            return Err((at("to"), format!("{to:?} is not an e-mail address")));
                        }
                    }
                }
            }
            for e in &c.events {
                if !EventKind::parse(e).is_some_and(|kind| EVENTS.contains(&kind)) {
                    let names: Vec<&str> = EVENTS.iter().map(|k| k.as_str()).collect();
                    return Err((
                        at("events"),
                        format!("{e:?} is not an event; use {}", names.join(", ")),
                    ));
                }
            }
        }
        if let Some(name) = &self.announcements.channel {
            if !self.channels.iter().any(|c| &c.name == name) {
                return Err((
                    "announcements.channel".into(),
                    format!("no channel is named {name:?}"),
                ));
            }
        }
        Ok(())
    }

    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name == name)
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_channels() {
        let c = Config::parse(
            r#"
webhook_secret = "s"
[announcements]
channel = "support"
notice = "2s"
[[channels]]
name = "support"
kind = "email"
smtp = "127.0.0.1:2525"
from = "baton@example.com"
to = ["support@example.com"]
[[channels]]
name = "ops"
kind = "slack"
url = "http://127.0.0.1:9/hook"
events = ["build_failed"]
"#,
            "pipeline.toml",
        )
        .unwrap();
        assert_eq!(c.announcements.label, "needs-announcement");
        assert_eq!(c.announcements.notice, Duration::from_secs(2));
        assert_eq!(c.max_payload_bytes, 1024 * 1024);
        assert_eq!(c.channel("support").unwrap().events.len(), EVENTS.len());
    }

    #[test]
    fn errors_name_the_field() {
        let err =
            Config::parse("[[channels]]\nname = \"x\"\nkind = \"pager\"\n", "p.toml").unwrap_err();
        assert!(
            err.starts_with("p.toml:3:8: field `channels[0].kind`"),
            "{err}"
        );
        let err = Config::parse(
            "[[channels]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"ftp://x\"\n",
            "p.toml",
        )
        .unwrap_err();
        assert!(err.contains("channels[0].url"), "{err}");
        let err = Config::parse("[announcements]\nchannel = \"nobody\"\n", "p.toml").unwrap_err();
        assert!(err.contains("announcements.channel"), "{err}");
    }
}
