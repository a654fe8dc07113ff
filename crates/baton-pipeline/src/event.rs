//! What a webhook delivery asks for, read from its headers and JSON payload:
//! GitHub's, Gitea's and Forgejo's push and pull-request events. Pure: no
//! I/O, so every rule (deleted branches, `[skip ci]`, `synchronize` and
//! `synchronized`) is tested here.

use serde_json::Value;

/// The forge that sent a delivery, known by its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    GitHub,
    Gitea,
    Forgejo,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::GitHub => "github",
            Source::Gitea => "gitea",
            Source::Forgejo => "forgejo",
        }
    }
}

/// A delivery's headers: who sent it, which event, its id and signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    pub source: Source,
    pub event: String,
    pub delivery: String,
    pub signature: Option<String>,
}

/// Reads the forge headers through `get` (case-insensitive header lookup).
/// Gitea and Forgejo also send GitHub's headers, so theirs are looked at first.
pub fn headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Headers, String> {
    for (source, prefix) in [
        (Source::Forgejo, "x-forgejo"),
        (Source::Gitea, "x-gitea"),
        (Source::GitHub, "x-github"),
    ] {
        let Some(event) = get(&format!("{prefix}-event")) else {
            continue;
        };
        let delivery = get(&format!("{prefix}-delivery"))
            .filter(|d| !d.trim().is_empty())
            .ok_or_else(|| format!("the delivery has no {prefix}-delivery header"))?;
        let signature = get("x-hub-signature-256")
            .or_else(|| match source {
                Source::GitHub => None,
                Source::Gitea => get("x-gitea-signature"),
                Source::Forgejo => get("x-forgejo-signature").or_else(|| get("x-gitea-signature")),
            })
            .map(str::to_string);
        return Ok(Headers {
            source,
            event: event.trim().to_string(),
            delivery: delivery.trim().to_string(),
            signature,
        });
    }
    Err("not a GitHub, Gitea or Forgejo webhook: no X-GitHub-Event, X-Gitea-Event or X-Forgejo-Event header".into())
}

/// What the pipeline does about a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Build a commit: a push to a branch, or a pull request's head.
    Build(BuildRequest),
    /// A pull request was closed (merged or not).
    Closed(PullRequest),
    /// Nothing to do, and why.
    Ignore(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRequest {
    pub repository: String,
    pub clone_url: String,
    /// `refs/heads/main`, or the pull request's head branch.
    pub git_ref: String,
    pub commit: String,
    /// The branch pushed to; `None` for a pull request.
    pub branch: Option<String>,
    pub pull_request: Option<PullRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub repository: String,
    pub number: u64,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    pub merged: bool,
}

const ZERO_COMMIT: &str = "0000000000000000000000000000000000000000";
const SKIP_MARKERS: &[&str] = &[
    "[skip ci]",
    "[ci skip]",
    "[no ci]",
    "[skip actions]",
    "[actions skip]",
];

/// Decides what a parsed payload of event `event` asks for. An `Err` is a
/// payload that lacks what its event must carry (a 400).
pub fn action(event: &str, payload: &Value) -> Result<Action, String> {
    match event {
        "push" => push(payload),
        "pull_request" => pull_request(payload),
        "ping" => Ok(Action::Ignore("ping: the webhook is set up".into())),
        other => Ok(Action::Ignore(format!(
            "{other} events are not used by the pipeline"
        ))),
    }
}

fn text<'a>(payload: &'a Value, pointer: &str) -> Result<&'a str, String> {
    payload
        .pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the payload has no {} (a string)", field_name(pointer)))
}

fn field_name(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

fn repository(payload: &Value) -> Result<(String, String), String> {
    Ok((
        text(payload, "/repository/full_name")?.to_string(),
        text(payload, "/repository/clone_url")?.to_string(),
    ))
}

fn push(payload: &Value) -> Result<Action, String> {
    let git_ref = text(payload, "/ref")?;
    let after = text(payload, "/after")?;
    let (repository, clone_url) = repository(payload)?;
    let Some(branch) = git_ref.strip_prefix("refs/heads/") else {
        return Ok(Action::Ignore(format!("{git_ref} is not a branch")));
    };
    let deleted = payload["deleted"].as_bool().unwrap_or(false);
    if deleted || after == ZERO_COMMIT {
        return Ok(Action::Ignore(format!("branch {branch} was deleted")));
    }
    if !is_commit_id(after) {
        return Err(format!("after: {after:?} is not a commit id"));
    }
    let message = payload
        .pointer("/head_commit/message")
        .and_then(Value::as_str)
        .or_else(|| {
            payload["commits"]
                .as_array()
                .and_then(|c| c.last())
                .and_then(|c| c["message"].as_str())
        })
        .unwrap_or("");
    if let Some(marker) = SKIP_MARKERS.iter().find(|m| message.contains(*m)) {
        return Ok(Action::Ignore(format!(
            "the head commit's message says {marker}"
        )));
    }
    Ok(Action::Build(BuildRequest {
        repository,
        clone_url,
        git_ref: git_ref.to_string(),
        commit: after.to_string(),
        branch: Some(branch.to_string()),
        pull_request: None,
    }))
}

fn pull_request(payload: &Value) -> Result<Action, String> {
    let action = text(payload, "/action")?;
    let (repository, clone_url) = repository(payload)?;
    let number = payload["number"]
        .as_u64()
        .or_else(|| {
            payload
                .pointer("/pull_request/number")
                .and_then(Value::as_u64)
        })
        .ok_or("the payload has no number (the pull request's)")?;
    let pr = PullRequest {
        repository: repository.clone(),
        number,
        title: text(payload, "/pull_request/title")?.to_string(),
        body: payload
            .pointer("/pull_request/body")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        labels: payload
            .pointer("/pull_request/labels")
            .and_then(Value::as_array)
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|l| l["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        merged: payload
            .pointer("/pull_request/merged")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    match action {
        // GitHub says `synchronize`, Gitea and Forgejo `synchronized`.
        "opened" | "reopened" | "synchronize" | "synchronized" => {
            let commit = text(payload, "/pull_request/head/sha")?;
            if !is_commit_id(commit) {
                return Err(format!(
                    "pull_request.head.sha: {commit:?} is not a commit id"
                ));
            }
            let head_url = payload
                .pointer("/pull_request/head/repo/clone_url")
                .and_then(Value::as_str)
                .unwrap_or(&clone_url)
                .to_string();
            let head_ref = payload
                .pointer("/pull_request/head/ref")
                .and_then(Value::as_str)
                .unwrap_or("");
            if let Some(marker) = SKIP_MARKERS.iter().find(|m| pr.title.contains(*m)) {
                return Ok(Action::Ignore(format!(
                    "the pull request's title says {marker}"
                )));
            }
            Ok(Action::Build(BuildRequest {
                repository,
                clone_url: head_url,
                git_ref: format!("refs/heads/{head_ref}"),
                commit: commit.to_string(),
                branch: None,
                pull_request: Some(pr),
            }))
        }
        "closed" => Ok(Action::Closed(pr)),
        other => Ok(Action::Ignore(format!(
            "pull request action {other} changes no code"
        ))),
    }
}

fn is_commit_id(id: &str) -> bool {
    (id.len() == 40 || id.len() == 64) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHA: &str = "4f7d3c1e2b9a8d7c6b5a4f3e2d1c0b9a8f7e6d5c";

    fn push_payload(message: &str) -> Value {
        json!({
            "ref": "refs/heads/main",
            "before": ZERO_COMMIT,
            "after": SHA,
            "deleted": false,
            "head_commit": {"id": SHA, "message": message},
            "repository": {"full_name": "acme/shop", "clone_url": "file:///srv/shop.git"},
        })
    }

    fn pr_payload(action: &str) -> Value {
        json!({
            "action": action,
            "number": 7,
            "pull_request": {
                "number": 7, "title": "Add search", "body": "Finds things.",
                "merged": action == "closed",
                "labels": [{"name": "needs-announcement"}, {"name": "feature"}],
                "head": {"sha": SHA, "ref": "search", "repo": {"clone_url": "file:///srv/fork.git"}},
            },
            "repository": {"full_name": "acme/shop", "clone_url": "file:///srv/shop.git"},
        })
    }

    #[test]
    fn a_push_to_a_branch_builds_its_commit() {
        let Action::Build(b) = action("push", &push_payload("Fix the cart")).unwrap() else {
            panic!("expected a build");
        };
        assert_eq!(b.commit, SHA);
        assert_eq!(b.branch.as_deref(), Some("main"));
        assert_eq!(b.repository, "acme/shop");
        assert_eq!(b.clone_url, "file:///srv/shop.git");
        assert!(b.pull_request.is_none());
    }

    #[test]
    fn skip_markers_deletions_and_tags_are_ignored() {
        for message in ["Docs only [skip ci]", "x [ci skip]", "[no ci] typo"] {
            assert!(matches!(
                action("push", &push_payload(message)).unwrap(),
                Action::Ignore(_)
            ));
        }
        let mut deleted = push_payload("bye");
        deleted["deleted"] = json!(true);
        assert!(
            matches!(action("push", &deleted).unwrap(), Action::Ignore(r) if r.contains("deleted"))
        );
        // Gitea marks a deletion by the zero commit alone.
        let mut zero = push_payload("bye");
        zero["after"] = json!(ZERO_COMMIT);
        zero.as_object_mut().unwrap().remove("deleted");
        assert!(matches!(action("push", &zero).unwrap(), Action::Ignore(_)));
        let mut tag = push_payload("v1");
        tag["ref"] = json!("refs/tags/v1");
        assert!(matches!(action("push", &tag).unwrap(), Action::Ignore(_)));
    }

    #[test]
    fn both_spellings_of_synchronize_build_the_head() {
        for a in ["opened", "reopened", "synchronize", "synchronized"] {
            let Action::Build(b) = action("pull_request", &pr_payload(a)).unwrap() else {
                panic!("{a} should build");
            };
            let pr = b.pull_request.unwrap();
            assert_eq!(pr.number, 7);
            assert_eq!(b.commit, SHA);
            assert_eq!(b.clone_url, "file:///srv/fork.git");
            assert_eq!(pr.labels, vec!["needs-announcement", "feature"]);
        }
        assert!(matches!(
            action("pull_request", &pr_payload("labeled")).unwrap(),
            Action::Ignore(_)
        ));
        let Action::Closed(pr) = action("pull_request", &pr_payload("closed")).unwrap() else {
            panic!("closed");
        };
        assert!(pr.merged);
    }

    #[test]
    fn payloads_missing_what_their_event_needs_are_errors() {
        let err = action("push", &json!({"ref": "refs/heads/main"})).unwrap_err();
        assert!(err.contains("after"), "{err}");
        let mut bad = push_payload("x");
        bad["after"] = json!("not-a-sha");
        assert!(action("push", &bad).is_err());
        let err = action(
            "pull_request",
            &json!({"action": "opened", "repository": {"full_name": "a/b", "clone_url": "x"}}),
        )
        .unwrap_err();
        assert!(err.contains("number"), "{err}");
        assert!(matches!(
            action("issues", &json!({})).unwrap(),
            Action::Ignore(_)
        ));
    }

    #[test]
    fn headers_name_the_forge_and_find_its_signature() {
        let github = [
            ("x-github-event", "push"),
            ("x-github-delivery", "d-1"),
            ("x-hub-signature-256", "sha256=ab"),
        ];
        let h = headers(|n| github.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)).unwrap();
        assert_eq!(h.source, Source::GitHub);
        assert_eq!(h.signature.as_deref(), Some("sha256=ab"));
        let forgejo = [
            ("x-forgejo-event", "pull_request"),
            ("x-forgejo-delivery", "d-2"),
            ("x-forgejo-signature", "ab"),
            ("x-github-event", "pull_request"),
        ];
        let h = headers(|n| forgejo.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)).unwrap();
        assert_eq!((h.source, h.delivery.as_str()), (Source::Forgejo, "d-2"));
        assert_eq!(h.signature.as_deref(), Some("ab"));
        let gitea = [
            ("x-gitea-event", "push"),
            ("x-gitea-delivery", "d-3"),
            ("x-gitea-signature", "cd"),
        ];
        let h = headers(|n| gitea.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)).unwrap();
        assert_eq!(
            (h.source, h.signature.as_deref()),
            (Source::Gitea, Some("cd"))
        );
        assert!(headers(|_| None).is_err());
        let no_id = [("x-github-event", "push")];
        assert!(headers(|n| no_id.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)).is_err());
    }
}
