//! Retention: after a successful deploy, an app keeps the folders, records
//! and images of its newest `[retention] releases` (by creation or last
//! deploy), and the output of its stopped targets for `[retention] logs`
//! (at most `log_files` files). Never removed, whatever the numbers say: a
//! release a target still runs (live, warm, a review app's, another
//! environment's), one a pending contract migration, an unfinished
//! deployment or a waiting promotion names, and the one just deployed.
//! Records go before files, so nothing the store names is ever missing
//! from disk but output.

use std::time::Duration;

use baton_manifest::RetentionSection;
use baton_proxy::RouteKey;
use baton_store::{EventKind, ReleaseUse};

use crate::Orchestrator;

/// The releases to remove: all but the newest `keep`, the needed ones
/// and `current`. `uses` is most recently used first.
pub(crate) fn releases_to_remove(uses: &[ReleaseUse], keep: usize, current: &str) -> Vec<String> {
    uses.iter()
        .enumerate()
        .filter(|(rank, r)| *rank >= keep && !r.needed && r.id != current)
        .map(|(_, r)| r.id.clone())
        .collect()
}

/// The stopped targets whose output goes: beyond the newest `keep_files`,
/// or last changed more than `age` before `now` (ms), or whose release is
/// being removed. `stopped` is newest first: (target, release, changed).
pub(crate) fn outputs_to_remove(
    stopped: &[(i64, String, i64)],
    keep_files: usize,
    age: Duration,
    now: i64,
    removed_releases: &[String],
) -> Vec<i64> {
    let oldest = now.saturating_sub(age.as_millis().min(i64::MAX as u128) as i64);
    stopped
        .iter()
        .enumerate()
        .filter(|(rank, (_, release, changed))| {
            *rank >= keep_files || *changed < oldest || removed_releases.contains(release)
        })
        .map(|(_, (id, _, _))| *id)
        .collect()
}

impl Orchestrator {
    /// Applies `retention` to the app of `key` after `current` went live.
    /// Failures are logged: they never fail the deployment.
    pub(crate) async fn apply_retention(
        &self,
        key: &RouteKey,
        retention: &RetentionSection,
        current: &str,
    ) {
        let app = &key.app;
        let uses = match self.store.release_uses(app).await {
            Ok(uses) => uses,
            Err(e) => {
                tracing::warn!(app, error = %e, "retention: cannot read the releases");
                return;
            }
        };
        let chosen = releases_to_remove(&uses, retention.releases, current);
        let stopped = self.store.stopped_targets(app).await.unwrap_or_default();
        let (removed, deployments) = match self.store.delete_releases(app, &chosen).await {
            Ok(removed) => removed,
            Err(e) => {
                tracing::warn!(app, error = %e, "retention: cannot remove old releases");
                (Vec::new(), Vec::new())
            }
        };
        for deployment in deployments {
            let _ = std::fs::remove_file(self.release_command_log(deployment));
        }
        for release in &removed {
            if let Err(e) = baton_package::remove(&self.releases_dir, release) {
                tracing::warn!(release, error = %e, "retention: cannot remove a release folder");
            }
            for log in self.release_logs(release) {
                let _ = std::fs::remove_file(log);
            }
        }
        let outputs = outputs_to_remove(
            &stopped,
            retention.log_files,
            retention.logs,
            baton_store::now_ms(),
            &removed,
        );
        let mut files = 0;
        for target in outputs {
            if std::fs::remove_file(self.logs.path(target)).is_ok() {
                files += 1;
            }
        }
        let had_images = uses
            .iter()
            .any(|u| u.image.is_some() && removed.contains(&u.id));
        if had_images {
            let kept: Vec<String> = uses
                .iter()
                .filter(|u| !removed.contains(&u.id))
                .filter_map(|u| u.image.clone())
                .collect();
            if let Err(e) = self.runtimes.docker.prune_images(app, &kept).await {
                tracing::warn!(app, error = %e, "retention: cannot remove old images");
            }
        }
        if !removed.is_empty() || files > 0 {
            let message = format!(
                "retention: removed {} old releases and {files} output files, keeping the newest {} releases",
                removed.len(),
                retention.releases
            );
            self.event(key, EventKind::ReleasesPruned, &message).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uses(needed: &[bool]) -> Vec<ReleaseUse> {
        needed
            .iter()
            .enumerate()
            .map(|(i, needed)| ReleaseUse {
                id: format!("r{i}"),
                last_used: 100 - i as i64,
                image: None,
                needed: *needed,
            })
            .collect()
    }

    #[test]
    fn keeps_the_newest_and_every_needed_release() {
        let all = uses(&[false, false, false, true, false, false]);
        assert_eq!(releases_to_remove(&all, 2, "r0"), ["r2", "r4", "r5"]);
        // The release being deployed stays even when older than the rest.
        assert_eq!(releases_to_remove(&all, 2, "r5"), ["r2", "r4"]);
        assert!(releases_to_remove(&all, 10, "r0").is_empty());
    }

    #[test]
    fn output_goes_by_count_age_and_release() {
        let day = 24 * 3600 * 1000;
        let now = 10 * day;
        let stopped = vec![
            (9, "a".to_string(), now - 1),
            (8, "b".to_string(), now - 2 * day),
            (7, "a".to_string(), now - 3),
            (6, "a".to_string(), now - 4),
        ];
        let week = Duration::from_secs(7 * 24 * 3600);
        assert_eq!(outputs_to_remove(&stopped, 3, week, now, &[]), [6]);
        assert_eq!(
            outputs_to_remove(&stopped, 10, Duration::from_secs(24 * 3600), now, &[]),
            [8]
        );
        assert_eq!(
            outputs_to_remove(&stopped, 10, week, now, &["b".to_string()]),
            [8]
        );
    }
}
