//! The pure part of a deployment: which steps it takes, and what a restarted
//! server must do with a deployment it finds unfinished. No I/O here.

use baton_store::{Deployment, DeploymentKind, StepKind};

/// The steps of a deployment, in order.
///
/// A deploy of an app with a database first applies the expand half of its
/// pending migrations; it starts a new target and checks it; a rollback to a
/// release that is still warm only re-checks the warm target. All then hold,
/// switch, release, and (when something was live before) drain and keep
/// warm. The contract half runs later, outside the deployment, once no
/// older release is live or warm.
pub fn steps(
    kind: DeploymentKind,
    warm_target: bool,
    preview: bool,
    has_previous: bool,
    has_database: bool,
) -> Vec<StepKind> {
    let mut steps = Vec::new();
    if has_database && kind == DeploymentKind::Deploy {
        steps.push(StepKind::Migrate);
    }
    if !(kind == DeploymentKind::Rollback && warm_target) {
        steps.push(StepKind::StartTarget);
    }
    steps.push(StepKind::HealthCheck);
    if preview {
        steps.push(StepKind::Preview);
    }
    steps.extend([StepKind::Hold, StepKind::Switch, StepKind::Release]);
    if has_previous {
        steps.extend([StepKind::Drain, StepKind::KeepWarm]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use baton_store::{DeploymentState, Step, StepState};
    use StepKind::*;

    #[test]
    fn a_deploy_with_a_database_migrates_first_and_a_rollback_never_does() {
        assert_eq!(
            steps(DeploymentKind::Deploy, false, false, true, true)[..2],
            [Migrate, StartTarget]
        );
        assert!(!steps(DeploymentKind::Rollback, false, false, true, true).contains(&Migrate));
    }

    #[test]
    fn first_deploy_has_nothing_to_drain() {
        assert_eq!(
            steps(DeploymentKind::Deploy, false, false, false, false),
            vec![StartTarget, HealthCheck, Hold, Switch, Release]
        );
    }

    #[test]
    fn later_deploy_drains_and_keeps_the_old_target_warm() {
        assert_eq!(
            steps(DeploymentKind::Deploy, false, false, true, false),
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
            steps(DeploymentKind::Deploy, false, true, true, false),
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
            steps(DeploymentKind::Rollback, true, false, true, false),
            vec![HealthCheck, Hold, Switch, Release, Drain, KeepWarm]
        );
        // A release no longer warm is deployed like any other.
        assert_eq!(
            steps(DeploymentKind::Rollback, false, false, true, false)[0],
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

    #[test]
    fn a_rollback_to_the_warm_target_is_finished_once_its_route_landed() {
        // The warm target was live before; only a recorded switch counts.
        let d = deployment(OLD, &[HealthCheck, Hold]);
        assert_eq!(recovery(&d, Some(OLD)), Recovery::Undo);
        let d = deployment(OLD, &[HealthCheck, Hold, Switch]);
        assert_eq!(recovery(&d, Some(OLD)), Recovery::Finish);
    }
}
