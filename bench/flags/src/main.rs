//! Evaluates the same flag (a 30 % sticky rollout behind three constraints)
//! for the same 1,000 contexts with baton-flags and with unleash-yggdrasil,
//! checks that both engines agree on every context, and reports the time
//! per evaluation of each, best of several rounds.

use std::hint::black_box;
use std::time::Instant;

const FLAGS: &str = r#"{
  "version": 2,
  "features": [{
    "name": "new-checkout",
    "enabled": true,
    "strategies": [{
      "name": "flexibleRollout",
      "parameters": {"rollout": "30", "stickiness": "default", "groupId": "new-checkout"},
      "constraints": [
        {"contextName": "country", "operator": "IN", "values": ["fr", "de", "nl", "be"]},
        {"contextName": "plan", "operator": "NOT_IN", "values": ["free"]},
        {"contextName": "appVersion", "operator": "SEMVER_GT", "value": "1.2.0"}
      ]
    }]
  }]
}"#;

const CONTEXTS: usize = 1000;
const EVALUATIONS: usize = 2_000_000;
const ROUNDS: usize = 5;

fn context_json(i: usize) -> serde_json::Value {
    let countries = ["fr", "de", "nl", "be", "us"];
    let plans = ["pro", "team", "free"];
    serde_json::json!({
        "userId": format!("user-{i}"),
        "properties": {
            "country": countries[i % countries.len()],
            "plan": plans[i % plans.len()],
            "appVersion": format!("1.{}.{}", i % 4, i % 7),
        }
    })
}

fn best_ns_per_eval(mut eval: impl FnMut(usize) -> bool) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut enabled = 0;
    for _ in 0..ROUNDS {
        enabled = 0;
        let start = Instant::now();
        for n in 0..EVALUATIONS {
            if black_box(eval(n % CONTEXTS)) {
                enabled += 1;
            }
        }
        best = best.min(start.elapsed().as_nanos() as f64 / EVALUATIONS as f64);
    }
    (best, enabled)
}

fn main() {
    let baton = baton_flags::FlagSet::from_json(FLAGS).expect("baton-flags reads the flags");
    let baton_contexts: Vec<baton_flags::Context> = (0..CONTEXTS)
        .map(|i| serde_json::from_value(context_json(i)).unwrap())
        .collect();

    let engine = unleash_yggdrasil::EngineState::default();
    let features: unleash_yggdrasil::ClientFeatures =
        serde_json::from_str(FLAGS).expect("yggdrasil reads the flags");
    engine.take_state(unleash_yggdrasil::UpdateMessage::FullResponse(features));
    let ygg_contexts: Vec<unleash_yggdrasil::Context> = (0..CONTEXTS)
        .map(|i| serde_json::from_value(context_json(i)).unwrap())
        .collect();

    let mut agree = 0;
    for i in 0..CONTEXTS {
        let a = baton.is_enabled("new-checkout", &baton_contexts[i]);
        let b = engine.is_enabled("new-checkout", &ygg_contexts[i], &None);
        assert_eq!(
            a,
            b,
            "the engines disagree on context {i}: {}",
            context_json(i)
        );
        agree += a as usize;
    }
    println!("both engines agree on all {CONTEXTS} contexts ({agree} enabled)");

    let (b_ns, b_on) = best_ns_per_eval(|i| baton.is_enabled("new-checkout", &baton_contexts[i]));
    let (y_ns, y_on) =
        best_ns_per_eval(|i| engine.is_enabled("new-checkout", &ygg_contexts[i], &None));
    assert_eq!(b_on, y_on);
    println!("{EVALUATIONS} evaluations per round, best of {ROUNDS} rounds:");
    println!("  baton-flags        {b_ns:>8.1} ns/evaluation");
    println!("  unleash-yggdrasil  {y_ns:>8.1} ns/evaluation");
    println!(
        "  baton ÷ yggdrasil  {:>8.2} (time; below 1 is faster)",
        b_ns / y_ns
    );
}
