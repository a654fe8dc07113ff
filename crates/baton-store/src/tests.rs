use super::*;
use crate::Actor;

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("baton.db")).await.unwrap();
    (dir, store)
}

fn release(id: &str, app: &str) -> Release {
    Release {
        id: id.into(),
        app: app.into(),
        created_at: now_ms(),
        size: 10,
        files: 1,
        manifest: "name = \"a\"".into(),
        image: None,
    }
}

#[tokio::test]
async fn the_schema_is_brought_up_to_date_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    Store::open(&path).await.unwrap();
    // Opening again must not re-apply the migrations (a second ALTER fails).
    let s = Store::open(&path).await.unwrap();
    let mut r = release("img1", "a");
    r.image = Some("sha256:abc".into());
    s.put_release(&r).await.unwrap();
    assert_eq!(
        s.release("img1").await.unwrap().image.as_deref(),
        Some("sha256:abc")
    );
}

#[tokio::test]
async fn a_release_is_recorded_once() {
    let (_dir, s) = store().await;
    let (_, created) = s.put_release(&release("abc123", "a")).await.unwrap();
    assert!(created);
    let (again, created) = s.put_release(&release("abc123", "a")).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, "abc123");
    assert!(matches!(
        s.put_release(&release("abc123", "b")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.find_release("a", "abc").await.unwrap().id, "abc123");
    s.put_release(&release("abd999", "a")).await.unwrap();
    assert!(matches!(
        s.find_release("a", "ab").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.find_release("a", "zz").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.apps().await.unwrap(), vec!["a".to_string()]);
}

#[tokio::test]
async fn one_running_deployment_per_app_and_environment() {
    let (_dir, s) = store().await;
    s.put_release(&release("r1", "a")).await.unwrap();
    let d = s
        .begin_deployment(
            "a",
            "production",
            "r1",
            DeploymentKind::Deploy,
            None,
            None,
            &Actor::system("test"),
            "deployment.create",
            serde_json::json!({}),
        )
        .await
        .unwrap();
    assert!(matches!(
        s.begin_deployment(
            "a",
            "production",
            "r1",
            DeploymentKind::Deploy,
            None,
            None,
            &Actor::system("test"),
            "deployment.create",
            serde_json::json!({})
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
    // Another environment is independent.
    s.begin_deployment(
        "a",
        "staging",
        "r1",
        DeploymentKind::Deploy,
        None,
        None,
        &Actor::system("test"),
        "deployment.create",
        serde_json::json!({}),
    )
    .await
    .unwrap();
    s.set_deployment_state(d.id, DeploymentState::Succeeded, None)
        .await
        .unwrap();
    s.begin_deployment(
        "a",
        "production",
        "r1",
        DeploymentKind::Deploy,
        None,
        None,
        &Actor::system("test"),
        "deployment.create",
        serde_json::json!({}),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn steps_are_recorded_in_order_and_cut_short_when_the_deployment_fails() {
    let (_dir, s) = store().await;
    s.put_release(&release("r1", "a")).await.unwrap();
    let d = s
        .begin_deployment(
            "a",
            "production",
            "r1",
            DeploymentKind::Deploy,
            None,
            None,
            &Actor::system("test"),
            "deployment.create",
            serde_json::json!({}),
        )
        .await
        .unwrap();
    let one = s
        .begin_step(d.id, StepKind::StartTarget, Some("port 1"))
        .await
        .unwrap();
    s.end_step(d.id, one, StepState::Done, None).await.unwrap();
    let two = s
        .begin_step(d.id, StepKind::HealthCheck, None)
        .await
        .unwrap();
    assert_eq!((one, two), (1, 2));
    assert_eq!(s.unfinished_deployments().await.unwrap().len(), 1);
    s.set_deployment_state(d.id, DeploymentState::Failed, Some("unhealthy"))
        .await
        .unwrap();
    let d = s.deployment(d.id).await.unwrap();
    assert_eq!(d.state, DeploymentState::Failed);
    assert_eq!(d.error.as_deref(), Some("unhealthy"));
    assert!(d.finished_at.is_some());
    assert_eq!(d.steps[0].detail.as_deref(), Some("port 1"));
    assert_eq!(d.steps[0].state, StepState::Done);
    assert_eq!(d.steps[1].state, StepState::Failed);
    assert!(s.unfinished_deployments().await.unwrap().is_empty());
}

#[tokio::test]
async fn targets_and_routes_survive_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    {
        let s = Store::open(&path).await.unwrap();
        s.put_release(&release("r1", "a")).await.unwrap();
        let d = s
            .begin_deployment(
                "a",
                "production",
                "r1",
                DeploymentKind::Deploy,
                None,
                None,
                &Actor::system("test"),
                "deployment.create",
                serde_json::json!({}),
            )
            .await
            .unwrap();
        let t = s
            .create_target(&NewTarget {
                app: "a",
                environment: "production",
                release_id: "r1",
                deployment_id: d.id,
                port: 4000,
                runtime: "process",
                process: "web",
            })
            .await
            .unwrap();
        s.set_target_handle(t.id, "123@456").await.unwrap();
        s.set_target_state(t.id, TargetState::Live, None)
            .await
            .unwrap();
        s.put_route(&RouteRecord {
            app: "a".into(),
            environment: "production".into(),
            hosts: vec!["a.test".into()],
            preview_hosts: vec![],
            hold_timeout_ms: 5000,
            live_target: Some(t.id),
            preview_target: None,
        })
        .await
        .unwrap();
        s.record_event("a", "production", EventKind::TargetExited, "boom")
            .await
            .unwrap();
    }
    let s = Store::open(&path).await.unwrap();
    let targets = s.active_targets().await.unwrap();
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].handle.as_deref(), Some("123@456"));
    assert_eq!(targets[0].state, TargetState::Live);
    let routes = s.routes().await.unwrap();
    assert_eq!(routes[0].hosts, vec!["a.test".to_string()]);
    assert_eq!(routes[0].live_target, Some(targets[0].id));
    assert_eq!(s.events("a", 10).await.unwrap()[0].message, "boom");
}

#[tokio::test]
async fn a_contract_applied_by_hand_is_recorded_applied_with_its_audit_entry() {
    let (_dir, s) = store().await;
    s.put_release(&release("r2", "a")).await.unwrap();
    let d = s
        .begin_deployment(
            "a",
            "staging",
            "r2",
            DeploymentKind::Deploy,
            None,
            None,
            &Actor::system("test"),
            "deployment.create",
            serde_json::json!({}),
        )
        .await
        .unwrap();
    let scripts = vec!["V3__contract.sql".to_string()];
    let pending = s
        .put_contract("a", "staging", "r2", d.id, &scripts)
        .await
        .unwrap();
    let entry = AuditEntry::new(
        "user:ada".into(),
        None,
        "contract.apply_by_hand",
        "contract a/staging".into(),
    )
    .about(Some("a"), Some("staging"));
    let by_hand = s
        .record_contract_by_hand(
            "a",
            "staging",
            Some("r2"),
            Some(d.id),
            &scripts,
            "applied by hand by user:ada",
            &entry,
        )
        .await
        .unwrap();
    assert_eq!(by_hand.state, ContractState::Applied);
    assert_eq!(by_hand.actor.as_deref(), Some("user:ada"));
    let all = s.contracts("a", "staging").await.unwrap();
    assert_eq!(all.len(), 2);
    // The deploy's pending contract is applied with it: nothing left to run.
    let before = all.iter().find(|c| c.id == pending.id).unwrap();
    assert_eq!(before.state, ContractState::Applied);
    assert!(s.pending_contracts().await.unwrap().is_empty());
    assert_eq!(
        s.audit_log(Some("a"), 10).await.unwrap()[0].action,
        "contract.apply_by_hand"
    );
    // Where nothing ran yet, it belongs to no release.
    let none = s
        .record_contract_by_hand("a", "qa", None, None, &scripts, "by hand", &entry)
        .await
        .unwrap();
    assert_eq!(none.release_id, None);
}
