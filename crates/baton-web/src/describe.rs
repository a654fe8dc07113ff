//! Words for records, with no I/O: a flag's whole rule, an audit entry's
//! detail, and whether a release may still be offered for a deploy. Pages
//! call these; they never read the store themselves, so every sentence a
//! page shows can be tested here.

use baton_flags::model::DEFAULT_STICKINESS;
use baton_flags::FlagSpec;
use baton_store::{Deployment, DeploymentState, StepKind, StepState};
use serde_json::Value;

// ---- flags ----

/// One line of a flag's rule: a label ("Users", "Everyone else") and what
/// it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleLine {
    pub label: String,
    pub text: String,
}

fn line(label: &str, text: String) -> RuleLine {
    RuleLine {
        label: label.into(),
        text,
    }
}

/// Who gets a flag when it is on, as `FlagSpec`'s model combines the parts:
/// listed users and groups always; everyone else when they meet every
/// constraint and fall in the rollout; nobody else when only users or
/// groups are listed.
pub fn rule(spec: &FlagSpec) -> Vec<RuleLine> {
    let mut lines = Vec::new();
    if !spec.users.is_empty() {
        lines.push(line("Users", spec.users.join(", ")));
    }
    if !spec.groups.is_empty() {
        lines.push(line("Groups", spec.groups.join(", ")));
    }
    let listed = !lines.is_empty();
    let sticky = spec.stickiness.as_deref().unwrap_or(DEFAULT_STICKINESS);
    let mut conditions: Vec<String> = spec
        .constraints
        .iter()
        .map(|c| {
            let mut text = format!(
                "{} {}{}",
                c.field,
                if c.inverted { "NOT " } else { "" },
                c.operator.as_str()
            );
            match &c.value {
                Some(value) if c.values.is_empty() => text.push_str(&format!(" {value}")),
                _ => text.push_str(&format!(" [{}]", c.values.join(", "))),
            }
            if c.case_insensitive {
                text.push_str(" (case-insensitive)");
            }
            text
        })
        .collect();
    if let Some(rollout) = spec.rollout {
        conditions.push(format!("{rollout} % of them, sticky on {sticky}"));
    }
    let label = if listed { "Everyone else" } else { "Everyone" };
    if !conditions.is_empty() {
        lines.push(line(label, format!("when {}", conditions.join("; and "))));
    } else if listed {
        lines.push(line("Everyone else", "no".into()));
    } else {
        lines.push(line("Everyone", "yes".into()));
    }
    lines
}

/// The variants with their weights and shares, and what each carries.
pub fn variants(spec: &FlagSpec) -> Vec<RuleLine> {
    let total: u64 = spec.variants.iter().map(|v| u64::from(v.weight)).sum();
    let sticky = spec.stickiness.as_deref().unwrap_or(DEFAULT_STICKINESS);
    spec.variants
        .iter()
        .map(|v| {
            let share = if total == 0 {
                0.0
            } else {
                f64::from(v.weight) * 100.0 / total as f64
            };
            let mut text = format!("weight {} ({share:.0} %)", v.weight);
            if let Some(payload) = &v.payload {
                text.push_str(&format!(
                    ", {} payload {}",
                    payload.kind.as_str(),
                    payload.value
                ));
            }
            if spec.variants.len() > 1 {
                text.push_str(&format!(", sticky on {sticky}"));
            }
            line(&v.name, text)
        })
        .collect()
}

// ---- audit log ----

/// A value as a person reads it: text without quotes, a release id short,
/// lists joined, an object as `(key: value, …)`, nothing as "none".
pub fn show(value: &Value) -> String {
    match value {
        Value::Null => "none".into(),
        Value::String(s) if is_release_id(s) => baton_package::short_id(s).to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "none".into(),
        Value::Array(items) => {
            let nested = items.iter().any(|i| i.is_object() || i.is_array());
            let parts: Vec<String> = items.iter().map(show).collect();
            parts.join(if nested { "; " } else { ", " })
        }
        Value::Object(fields) => format!(
            "({})",
            fields
                .iter()
                .map(|(k, v)| format!("{k}: {}", show(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

fn is_release_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// An audit entry's detail as `key: value` lines; for a change (`before`
/// and `after`), one `key: before → after` line per setting that changed.
pub fn detail(detail: &Value) -> Vec<RuleLine> {
    let Value::Object(fields) = detail else {
        return match detail {
            Value::Null => Vec::new(),
            other => vec![line("detail", show(other))],
        };
    };
    let mut lines: Vec<RuleLine> = fields
        .iter()
        .filter(|(key, _)| *key != "before" && *key != "after")
        .map(|(key, value)| line(key, show(value)))
        .collect();
    match (fields.get("before"), fields.get("after")) {
        (Some(Value::Object(before)), Some(Value::Object(after))) => {
            let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
            keys.sort();
            keys.dedup();
            let changed: Vec<RuleLine> = keys
                .into_iter()
                .filter(|k| before.get(*k) != after.get(*k))
                .map(|k| {
                    let side = |v: Option<&Value>| v.map(show).unwrap_or_else(|| "none".into());
                    line(
                        k,
                        format!("{} → {}", side(before.get(k)), side(after.get(k))),
                    )
                })
                .collect();
            if changed.is_empty() {
                lines.push(line("change", "none".into()));
            }
            lines.extend(changed);
        }
        (before, after) => {
            for (label, side) in [("before", before), ("after", after)] {
                match side {
                    Some(Value::Object(values)) => {
                        lines.extend(values.iter().map(|(k, v)| line(k, show(v))))
                    }
                    Some(other) => lines.push(line(label, show(other))),
                    None => {}
                }
            }
        }
    }
    lines
}

// ---- releases ----

/// Whether a release can still be offered for a deploy, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Deployable,
    /// Its folder was removed (a review app's release, once its pull
    /// request closed); it cannot start until its folder is sent again.
    FilesRemoved,
    /// It never went live anywhere, and a deployment of it failed to start
    /// or failed its health check.
    NeverWentLive {
        deployment: i64,
        step: StepKind,
    },
}

/// Judges a release from whether its files are on disk and the app's
/// deployments (any order). A release that went live once stays
/// deployable; an aborted preview says nothing against a release.
pub fn standing(release: &str, files_present: bool, deployments: &[Deployment]) -> Standing {
    if !files_present {
        return Standing::FilesRemoved;
    }
    let of_release = || deployments.iter().filter(|d| d.release_id == release);
    if of_release().any(|d| d.state == DeploymentState::Succeeded) {
        return Standing::Deployable;
    }
    of_release()
        .filter(|d| d.state == DeploymentState::Failed)
        .max_by_key(|d| d.id)
        .and_then(|d| {
            d.steps
                .iter()
                .find(|s| {
                    s.state == StepState::Failed
                        && matches!(s.step, StepKind::StartTarget | StepKind::HealthCheck)
                })
                .map(|s| Standing::NeverWentLive {
                    deployment: d.id,
                    step: s.step,
                })
        })
        .unwrap_or(Standing::Deployable)
}

impl Standing {
    /// A few words for the release history.
    pub fn mark(&self) -> Option<String> {
        match self {
            Standing::Deployable => None,
            Standing::FilesRemoved => Some("files removed".into()),
            Standing::NeverWentLive { deployment, step } => Some(format!(
                "never went live: {} in deployment {deployment}",
                failed_how(*step)
            )),
        }
    }

    /// Why a deploy of it is refused, and the way out.
    pub fn refusal(&self, app: &str, short: &str) -> Option<String> {
        match self {
            Standing::Deployable => None,
            Standing::FilesRemoved => Some(format!(
                "release {short} of {app} cannot be deployed: its files were removed (a review app's release goes when its pull request closes). Deploy its folder again with `baton deploy DIR`, or push its commit again so the pipeline builds it."
            )),
            Standing::NeverWentLive { deployment, step } => Some(format!(
                "release {short} of {app} never went live: it {} in deployment {deployment}. Deploy a fixed release; to retry this one on purpose, run `baton deploy DIR -e ENVIRONMENT` with its folder.",
                failed_how(*step)
            )),
        }
    }
}

fn failed_how(step: StepKind) -> &'static str {
    match step {
        StepKind::StartTarget => "failed to start",
        _ => "failed its health check",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_store::{DeploymentKind, Step};
    use serde_json::json;

    fn spec(value: Value) -> FlagSpec {
        serde_json::from_value(value).unwrap()
    }

    fn texts(lines: &[RuleLine]) -> Vec<String> {
        lines
            .iter()
            .map(|l| format!("{}: {}", l.label, l.text))
            .collect()
    }

    #[test]
    fn a_rule_shows_users_groups_constraints_rollout_and_stickiness() {
        let flag = spec(json!({
            "enabled": true,
            "users": ["alice", "bob"],
            "groups": ["staff"],
            "constraints": [
                {"field": "country", "operator": "IN", "values": ["de", "fr"]},
                {"field": "email", "operator": "STR_ENDS_WITH", "values": ["@example.com"],
                 "inverted": true, "case_insensitive": true},
                {"field": "age", "operator": "NUM_GT", "value": "30"}
            ],
            "rollout": 30,
            "stickiness": "sessionId",
        }));
        assert_eq!(
            texts(&rule(&flag)),
            [
                "Users: alice, bob",
                "Groups: staff",
                "Everyone else: when country IN [de, fr]; and email NOT STR_ENDS_WITH [@example.com] (case-insensitive); and age NUM_GT 30; and 30 % of them, sticky on sessionId",
            ]
        );
    }

    #[test]
    fn a_rule_says_who_else_gets_it_when_nothing_limits_the_rest() {
        assert_eq!(
            texts(&rule(&spec(json!({"enabled": true})))),
            ["Everyone: yes"]
        );
        assert_eq!(
            texts(&rule(&spec(json!({"users": ["alice"]})))),
            ["Users: alice", "Everyone else: no"]
        );
        assert_eq!(
            texts(&rule(&spec(json!({"rollout": 5})))),
            ["Everyone: when 5 % of them, sticky on userId"]
        );
    }

    #[test]
    fn variants_show_their_weights_shares_and_payloads() {
        let flag = spec(json!({
            "enabled": true,
            "variants": [
                {"name": "blue", "weight": 1, "payload": {"type": "json", "value": "{\"a\":1}"}},
                {"name": "green", "weight": 3}
            ]
        }));
        assert_eq!(
            texts(&variants(&flag)),
            [
                "blue: weight 1 (25 %), json payload {\"a\":1}, sticky on userId",
                "green: weight 3 (75 %), sticky on userId",
            ]
        );
    }

    #[test]
    fn an_audited_change_reads_as_before_and_after_of_what_changed() {
        let entry = json!({
            "before": {"enabled": false, "users": ["alice"], "description": "x"},
            "after": {"enabled": true, "users": ["alice", "bob"], "description": "x"},
            "source": "flags.toml",
        });
        assert_eq!(
            texts(&detail(&entry)),
            [
                "source: flags.toml",
                "enabled: false → true",
                "users: alice → alice, bob",
            ]
        );
    }

    #[test]
    fn other_audit_details_read_as_key_and_value() {
        let release = "a".repeat(64);
        let entry = json!({"release": release, "from": null, "via": "dashboard"});
        assert_eq!(
            texts(&detail(&entry)),
            ["from: none", "release: aaaaaaaaaaaa", "via: dashboard"]
        );
        assert_eq!(
            texts(&detail(&json!({"after": {"enabled": true}}))),
            ["enabled: true"]
        );
        assert!(detail(&json!({})).is_empty());
        let variants = json!({
            "before": {},
            "after": {"variants": [{"name": "blue", "weight": 1}, {"name": "green", "weight": 3}]},
        });
        assert_eq!(
            texts(&detail(&variants)),
            ["variants: none → (name: blue, weight: 1); (name: green, weight: 3)"]
        );
    }

    fn deployment(
        id: i64,
        release: &str,
        state: DeploymentState,
        failed: Option<StepKind>,
    ) -> Deployment {
        Deployment {
            id,
            app: "a".into(),
            environment: "staging".into(),
            release_id: release.into(),
            kind: DeploymentKind::Deploy,
            state,
            error: None,
            previous_release: None,
            target_id: None,
            created_at: 0,
            finished_at: None,
            actor: None,
            config_version: None,
            steps: failed
                .map(|step| Step {
                    seq: 1,
                    step,
                    state: StepState::Failed,
                    started_at: 0,
                    finished_at: None,
                    detail: None,
                })
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn a_release_is_offered_unless_its_files_are_gone_or_it_never_went_live() {
        use DeploymentState::*;
        let failed_health = deployment(2, "r", Failed, Some(StepKind::HealthCheck));
        assert_eq!(standing("r", false, &[]), Standing::FilesRemoved);
        assert_eq!(standing("r", true, &[]), Standing::Deployable);
        assert_eq!(
            standing("r", true, std::slice::from_ref(&failed_health)),
            Standing::NeverWentLive {
                deployment: 2,
                step: StepKind::HealthCheck
            }
        );
        let went_live = deployment(1, "r", Succeeded, None);
        assert_eq!(
            standing("r", true, &[went_live, failed_health.clone()]),
            Standing::Deployable,
            "once live, a later failure does not bar it"
        );
        let aborted = deployment(3, "r", Failed, Some(StepKind::Preview));
        assert_eq!(standing("r", true, &[aborted]), Standing::Deployable);
        let other = deployment(4, "other", Failed, Some(StepKind::StartTarget));
        assert_eq!(standing("r", true, &[other]), Standing::Deployable);
        let refusal = Standing::FilesRemoved.refusal("shop", "abc").unwrap();
        assert!(refusal.contains("baton deploy DIR"), "{refusal}");
    }
}
