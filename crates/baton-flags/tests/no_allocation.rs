//! Evaluating a compiled `FlagSet` must not allocate: the server answers
//! OFREP requests with it, and in-process users call it on hot paths. A
//! counting allocator proves it for every kind of rule at once.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use baton_flags::{Context, FlagSet};

struct CountingAllocator;

thread_local! {
    // Const-initialised so reading them never allocates.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter only observes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|count| count.set(count.get() + 1));
        }
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations_during(work: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|count| count.set(0));
    COUNTING.with(|counting| counting.set(true));
    work();
    COUNTING.with(|counting| counting.set(false));
    ALLOCATIONS.with(Cell::get)
}

const DOCUMENT: &str = r#"{
  "version": 2,
  "segments": [{"id": 1, "constraints": [
    {"contextName": "version", "operator": "SEMVER_GTE", "value": "1.2.0"}]}],
  "features": [
    {"name": "parent", "enabled": true, "strategies": [{"name": "default"}],
     "variants": [{"name": "blue", "weight": 50}, {"name": "green", "weight": 50}]},
    {"name": "everything", "enabled": true,
     "dependencies": [{"feature": "parent", "variants": ["blue", "green"]}],
     "strategies": [
       {"name": "flexibleRollout",
        "parameters": {"rollout": "100", "stickiness": "default", "groupId": "everything"},
        "segments": [1],
        "constraints": [
          {"contextName": "environment", "operator": "IN", "values": ["production", "staging"]},
          {"contextName": "email", "operator": "STR_ENDS_WITH", "values": ["@ACME.COM"], "caseInsensitive": true},
          {"contextName": "seats", "operator": "NUM_GT", "value": "10"},
          {"contextName": "currentTime", "operator": "DATE_AFTER", "value": "2020-01-01T00:00:00Z"},
          {"contextName": "userId", "operator": "REGEX", "value": "^user-[0-9]+$"},
          {"contextName": "remoteAddress", "operator": "IN_CIDR", "values": ["10.0.0.0/8"]},
          {"contextName": "plan", "operator": "NOT_IN", "values": ["free"]}
        ],
        "variants": [{"name": "a", "weight": 1, "payload": {"type": "string", "value": "A"}},
                     {"name": "b", "weight": 1, "payload": {"type": "string", "value": "B"}}]}
     ]},
    {"name": "users", "enabled": true,
     "strategies": [{"name": "userWithId", "parameters": {"userIds": "user-1, user-2"}},
                    {"name": "remoteAddress", "parameters": {"IPs": "10.0.0.0/8"}}],
     "variants": [{"name": "only", "weight": 1,
                   "overrides": [{"contextName": "userId", "values": ["user-9"]}]}]}
  ]
}"#;

#[test]
fn evaluating_allocates_nothing() {
    let flags = match FlagSet::from_json(DOCUMENT) {
        Ok(flags) => flags,
        Err(error) => panic!("{error}"),
    };
    assert!(flags.warnings().is_empty(), "{:?}", flags.warnings());
    let contexts: Vec<Context> = (0..50)
        .map(|n| {
            Context {
                user_id: Some(format!("user-{n}")),
                session_id: Some(format!("session-{n}")),
                remote_address: Some(format!("10.0.{n}.1")),
                environment: Some("production".into()),
                current_time: Some("2024-06-01T12:00:00Z".into()),
                ..Context::default()
            }
            .with_property("email", format!("person{n}@acme.com"))
            .with_property("seats", "25")
            .with_property("version", "1.4.2")
            .with_property("plan", "pro")
        })
        .collect();

    let evaluate_all = || {
        let mut on = 0;
        for context in &contexts {
            for name in ["parent", "everything", "users", "missing"] {
                on += usize::from(flags.is_enabled(name, context));
                on += usize::from(flags.get_variant(name, context).enabled);
                let evaluation = flags.evaluate(name, context);
                on += usize::from(evaluation.is_on());
                on += usize::from(evaluation.missing_sticky_field.is_some());
            }
        }
        on
    };
    // The regex engine builds its per-thread cache on first use.
    let expected = evaluate_all();
    assert_eq!(expected, 50 * 9, "every rule holds for every context");

    let boxed = allocations_during(|| drop(std::hint::black_box(Box::new(1_u64))));
    assert_eq!(boxed, 1, "the counter sees allocations");

    let allocations = allocations_during(|| {
        for _ in 0..20 {
            assert_eq!(evaluate_all(), expected);
        }
    });
    assert_eq!(allocations, 0, "evaluation allocated {allocations} times");
}
