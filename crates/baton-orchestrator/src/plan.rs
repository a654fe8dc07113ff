//! The pure part of a deployment: which steps it takes, what a restarted
//! server must do with a deployment it finds unfinished, and when the
//! contract half of its migrations may run. No I/O here.

use baton_store::{Deployment, DeploymentKind, StepKind, TargetRecord, TargetState};

/// What a deployment is, as far as its steps go.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub kind: DeploymentKind,
    /// A rollback to a release whose target is still warm.
    pub warm_target: bool,
    pub preview: bool,
    /// Something is live before it.
    pub has_previous: bool,
    pub has_database: bool,
    pub canary: bool,
    pub watch: bool,
    /// `[deploy] release_command`.
    pub release_command: bool,
    /// Workers to start (`[processes.NAME]`) or to stop (an older
    /// release's).
    pub processes: bool,
}

/// The steps of a deployment, in order.
///
/// A deploy of an app with a database first applies the expand half of its
/// pending migrations, then runs its release command; it starts a new
/// target and checks it; a rollback to a release that is still warm only
/// re-checks the warm target. All then hold, switch, release, and (when
/// something was live before) drain and keep warm. The contract half runs
/// later, outside the deployment, once no older release is live or warm.
pub fn steps(shape: &Shape) -> Vec<StepKind> {
    let deploy = shape.kind == DeploymentKind::Deploy;
    let mut steps = Vec::new();
    if shape.has_database && deploy {
        steps.push(StepKind::Migrate);
    }
    if shape.release_command && deploy {
        steps.push(StepKind::ReleaseCommand);
    }
    if !(shape.kind == DeploymentKind::Rollback && shape.warm_target) {
        steps.push(StepKind::StartTarget);
    }
    steps.push(StepKind::HealthCheck);
    if shape.preview {
        steps.push(StepKind::Preview);
    }
    // A canary needs a release to compare with; a rollback goes at once.
    if shape.canary && shape.has_previous && deploy {
        steps.push(StepKind::Canary);
    }
    steps.extend([StepKind::Hold, StepKind::Switch, StepKind::Release]);
    // Workers follow the web release once it is live.
    if shape.processes {
        steps.push(StepKind::Processes);
    }
    if shape.has_previous {
        steps.extend([StepKind::Drain, StepKind::KeepWarm]);
        // Watched against the release kept warm, to roll back to.
        if shape.watch && deploy {
            steps.push(StepKind::Watch);
        }
    }
    steps
}

/// What to do with a deployment that was running when the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The route already points at the new release: the deployment took
    /// effect; finish it (the old target goes warm) and call it a success.
    Finish,
    /// The switch never happened: the live release is untouched; stop the
    /// new target and call the deployment failed.
    Undo,
}

/// Decides from the recorded route, never from the recorded steps alone: a
/// crash can fall between writing the route and recording the step's end.
pub fn recovery(deployment: &Deployment, live_target: Option<i64>) -> Recovery {
    let switch_begun = deployment.steps.iter().any(|s| s.step == StepKind::Switch);
    if switch_begun && deployment.target_id.is_some() && live_target == deployment.target_id {
        Recovery::Finish
    } else {
        Recovery::Undo
    }
}

/// Why the contract half of a release's migrations may not run yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractWait {
    /// Its release is not the live one (another went live since, or none is).
    NotLive { live: Option<String> },
    /// The live release lacks these contract migrations (applied by hand
    /// ahead of the release that ships them): its code may still use what
    /// they remove.
    AheadOfLive { live: String, missing: Vec<String> },
    /// A target of another release still runs (warm, draining, starting…).
    OtherRunning { release: String, state: TargetState },
}

impl std::fmt::Display for ContractWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = baton_package::short_id;
        match self {
            ContractWait::NotLive { live: Some(live) } => {
                write!(f, "release {} went live since", short(live))
            }
            ContractWait::NotLive { live: None } => f.write_str("no release is live"),
            ContractWait::AheadOfLive { live, missing } => write!(
                f,
                "the live release {} does not have {}, so its code may still use what they remove; deploy the release that ships them first",
                short(live),
                missing.join(", ")
            ),
            ContractWait::OtherRunning { release, state } => {
                write!(f, "release {} is still {state}", short(release))
            }
        }
    }
}

/// The contract rule, one for every way a contract half runs (the server
/// once a deployment's older release is gone, `baton db migrate` by hand):
/// contract migrations run only once their release is live and no target
/// of another release runs in the environment (live, warm, draining,
/// starting). `release` is the contract's release; for one applied by hand,
/// the live release, of which `missing` are the scripts it lacks.
pub fn contract_may_run(
    release: Option<&str>,
    missing: &[String],
    live: Option<&str>,
    running: &[TargetRecord],
) -> Result<(), ContractWait> {
    if let (Some(live), false) = (live, missing.is_empty()) {
        return Err(ContractWait::AheadOfLive {
            live: live.to_string(),
            missing: missing.to_vec(),
        });
    }
    if release != live {
        return Err(ContractWait::NotLive {
            live: live.map(str::to_string),
        });
    }
    match running
        .iter()
        .find(|t| Some(t.release_id.as_str()) != release && t.state != TargetState::Stopped)
    {
        Some(other) => Err(ContractWait::OtherRunning {
            release: other.release_id.clone(),
            state: other.state,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_store::{DeploymentState, Step, StepState};
    use StepKind::*;

    fn steps_of(
        kind: DeploymentKind,
        warm_target: bool,
        preview: bool,
        has_previous: bool,
        has_database: bool,
        canary: bool,
        watch: bool,
    ) -> Vec<StepKind> {
        steps(&Shape {
            kind,
            warm_target,
            preview,
            has_previous,
            has_database,
            canary,
            watch,
            release_command: false,
            processes: false,
        })
    }

    #[test]
    fn a_release_command_runs_after_the_expand_migrations_and_before_the_target_starts() {
        let shape = Shape {
            kind: DeploymentKind::Deploy,
            warm_target: false,
            preview: false,
            has_previous: true,
            has_database: true,
            canary: false,
            watch: false,
            release_command: true,
            processes: false,
        };
        assert_eq!(steps(&shape)[..3], [Migrate, ReleaseCommand, StartTarget]);
        for kind in [DeploymentKind::Rollback, DeploymentKind::Restart] {
            assert!(!steps(&Shape { kind, ..shape }).contains(&ReleaseCommand));
        }
    }

    #[test]
    fn a_deploy_with_a_database_migrates_first_and_a_rollback_never_does() {
        assert_eq!(
            steps_of(
                DeploymentKind::Deploy,
                false,
                false,
                true,
                true,
                false,
                false
            )[..2],
            [Migrate, StartTarget]
        );
        assert!(!steps_of(
            DeploymentKind::Rollback,
            false,
            false,
            true,
            true,
            false,
            false
        )
        .contains(&Migrate));
    }

    #[test]
    fn first_deploy_has_nothing_to_drain() {
        assert_eq!(
            steps_of(
                DeploymentKind::Deploy,
                false,
                false,
                false,
                false,
                false,
                false
            ),
            vec![StartTarget, HealthCheck, Hold, Switch, Release]
        );
    }

    #[test]
    fn later_deploy_drains_and_keeps_the_old_target_warm() {
        assert_eq!(
            steps_of(
                DeploymentKind::Deploy,
                false,
                false,
                true,
                false,
                false,
                false
            ),
            vec![
                StartTarget,
                HealthCheck,
                Hold,
                Switch,
                Release,
                Drain,
                KeepWarm
            ]
        );
    }

    #[test]
    fn preview_comes_between_the_health_check_and_the_hold() {
        assert_eq!(
            steps_of(
                DeploymentKind::Deploy,
                false,
                true,
                true,
                false,
                false,
                false
            ),
            vec![
                StartTarget,
                HealthCheck,
                Preview,
                Hold,
                Switch,
                Release,
                Drain,
                KeepWarm
            ]
        );
    }

    #[test]
    fn rollback_to_a_warm_target_starts_nothing() {
        assert_eq!(
            steps_of(
                DeploymentKind::Rollback,
                true,
                false,
                true,
                false,
                false,
                false
            ),
            vec![HealthCheck, Hold, Switch, Release, Drain, KeepWarm]
        );
        // A canary comes after the checks, before the switch; never for a
        // first deploy (nothing to compare with) or a rollback.
        assert_eq!(
            steps_of(
                DeploymentKind::Deploy,
                false,
                false,
                true,
                false,
                true,
                false
            ),
            vec![
                StartTarget,
                HealthCheck,
                Canary,
                Hold,
                Switch,
                Release,
                Drain,
                KeepWarm
            ]
        );
        assert!(!steps_of(
            DeploymentKind::Deploy,
            false,
            false,
            false,
            false,
            true,
            false
        )
        .contains(&Canary));
        assert!(!steps_of(
            DeploymentKind::Rollback,
            true,
            false,
            true,
            false,
            true,
            false
        )
        .contains(&Canary));
        // A watch comes last, with the old release warm.
        assert_eq!(
            steps_of(
                DeploymentKind::Deploy,
                false,
                false,
                true,
                false,
                false,
                true
            )
            .last(),
            Some(&Watch)
        );
        assert!(!steps_of(
            DeploymentKind::Deploy,
            false,
            false,
            false,
            false,
            false,
            true
        )
        .contains(&Watch));
        // A release no longer warm is deployed like any other.
        assert_eq!(
            steps_of(
                DeploymentKind::Rollback,
                false,
                false,
                true,
                false,
                false,
                false
            )[0],
            StartTarget
        );
    }

    const OLD: i64 = 1;
    const NEW: i64 = 2;

    fn deployment(target: i64, recorded: &[StepKind]) -> Deployment {
        Deployment {
            id: 1,
            app: "a".into(),
            environment: "production".into(),
            release_id: "r".into(),
            kind: DeploymentKind::Deploy,
            state: DeploymentState::Running,
            error: None,
            previous_release: Some("old".into()),
            target_id: Some(target),
            created_at: 0,
            finished_at: None,
            actor: None,
            config_version: None,
            steps: recorded
                .iter()
                .enumerate()
                .map(|(i, s)| Step {
                    seq: i as i64 + 1,
                    step: *s,
                    state: StepState::Done,
                    started_at: 0,
                    finished_at: None,
                    detail: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_crash_before_the_switch_is_undone() {
        for recorded in [
            &[][..],
            &[StartTarget],
            &[StartTarget, HealthCheck],
            &[StartTarget, HealthCheck, Hold],
        ] {
            assert_eq!(
                recovery(&deployment(NEW, recorded), Some(OLD)),
                Recovery::Undo
            );
        }
    }

    #[test]
    fn a_crash_after_the_route_was_written_is_finished() {
        let d = deployment(NEW, &[StartTarget, HealthCheck, Hold, Switch]);
        assert_eq!(recovery(&d, Some(NEW)), Recovery::Finish);
        let d = deployment(
            NEW,
            &[StartTarget, HealthCheck, Hold, Switch, Release, Drain],
        );
        assert_eq!(recovery(&d, Some(NEW)), Recovery::Finish);
    }

    #[test]
    fn a_switch_step_whose_route_write_never_landed_is_undone() {
        let d = deployment(NEW, &[StartTarget, HealthCheck, Hold, Switch]);
        assert_eq!(recovery(&d, Some(OLD)), Recovery::Undo);
        assert_eq!(recovery(&d, None), Recovery::Undo);
    }

    fn target(release: &str, state: TargetState) -> TargetRecord {
        TargetRecord {
            id: 1,
            app: "a".into(),
            environment: "staging".into(),
            release_id: release.into(),
            deployment_id: None,
            port: 1,
            runtime: "process".into(),
            process: "web".into(),
            handle: None,
            state,
            restarts: 0,
            warm_until: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn a_contract_runs_only_once_no_older_release_is_live_or_warm() {
        let v2_live = target("v2", TargetState::Live);
        let v1_warm = target("v1", TargetState::Warm);
        // The server's contract of v2 while v1 is warm, then once it is gone.
        assert_eq!(
            contract_may_run(
                Some("v2"),
                &[],
                Some("v2"),
                &[v2_live.clone(), v1_warm.clone()]
            ),
            Err(ContractWait::OtherRunning {
                release: "v1".into(),
                state: TargetState::Warm
            })
        );
        assert_eq!(
            contract_may_run(Some("v2"), &[], Some("v2"), std::slice::from_ref(&v2_live)),
            Ok(())
        );
        // Rolled back: v1 is live again, v2's contract must not run.
        assert!(matches!(
            contract_may_run(
                Some("v2"),
                &[],
                Some("v1"),
                &[target("v1", TargetState::Live)]
            ),
            Err(ContractWait::NotLive { .. })
        ));
        // By hand, with the same rule: the live release's contract…
        assert!(
            contract_may_run(Some("v2"), &[], Some("v2"), &[v2_live.clone(), v1_warm]).is_err()
        );
        // …not one the live release does not ship yet…
        let missing = vec!["V4__drop.sql".to_string()];
        assert!(matches!(
            contract_may_run(Some("v2"), &missing, Some("v2"), &[v2_live]),
            Err(ContractWait::AheadOfLive { .. })
        ));
        // …and where nothing runs, nothing can break.
        assert_eq!(contract_may_run(None, &missing, None, &[]), Ok(()));
        assert!(contract_may_run(None, &[], None, &[target("v3", TargetState::Starting)]).is_err());
    }

    #[test]
    fn a_rollback_to_the_warm_target_is_finished_once_its_route_landed() {
        // The warm target was live before; only a recorded switch counts.
        let d = deployment(OLD, &[HealthCheck, Hold]);
        assert_eq!(recovery(&d, Some(OLD)), Recovery::Undo);
        let d = deployment(OLD, &[HealthCheck, Hold, Switch]);
        assert_eq!(recovery(&d, Some(OLD)), Recovery::Finish);
    }
}
