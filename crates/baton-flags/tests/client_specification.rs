//! Runs the official Unleash client specification against `baton-flags`:
//! every file listed in `specifications/index.json`, every `tests` entry
//! (on/off) and every `variantTests` entry (the variant). Delta-API files
//! (their `state` holds `events`, not `features`) test a transport Baton's
//! server will own, not evaluation, and are skipped with the reason printed.
//!
//! Where the specification lives: `$BATON_UNLEASH_SPEC_DIR` when set (the
//! `specifications` folder itself); otherwise the first
//! `shared/conformance/unleash-client-specification/specifications` found
//! walking up from this crate's folder; otherwise the workplace default.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use baton_flags::unleash::Payload;
use baton_flags::{ClientFeatures, Context, FlagSet};
use serde::Deserialize;
use serde_json::Value;

const SPEC_DIR_VARIABLE: &str = "BATON_UNLEASH_SPEC_DIR";
const SPEC_RELATIVE: &str = "shared/conformance/unleash-client-specification/specifications";
const SPEC_DEFAULT: &str = "/work/shared/conformance/unleash-client-specification/specifications";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecFile {
    state: Value,
    #[serde(default)]
    tests: Vec<EnabledTest>,
    #[serde(default)]
    variant_tests: Vec<VariantTest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnabledTest {
    description: String,
    context: Value,
    toggle_name: String,
    expected_result: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VariantTest {
    description: String,
    context: Value,
    toggle_name: String,
    expected_result: ExpectedVariant,
}

#[derive(Debug, PartialEq, Deserialize)]
struct ExpectedVariant {
    name: String,
    #[serde(default)]
    payload: Option<Payload>,
    enabled: bool,
    feature_enabled: bool,
}

fn spec_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(SPEC_DIR_VARIABLE) {
        return PathBuf::from(dir);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|ancestor| ancestor.join(SPEC_RELATIVE))
        .find(|candidate| candidate.join("index.json").is_file())
        .unwrap_or_else(|| PathBuf::from(SPEC_DEFAULT))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> T {
    let text = fs::read_to_string(path).unwrap_or_else(|error| {
        panic!(
            "cannot read {}: {error}; set {SPEC_DIR_VARIABLE} to the specification's \
             `specifications` folder",
            path.display()
        )
    });
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{} is not the expected JSON: {error}", path.display()))
}

/// Counts for one run, and a readable line per failure.
#[derive(Default)]
struct Tally {
    run: usize,
    passed: usize,
    failures: Vec<String>,
}

impl Tally {
    fn check<T: std::fmt::Debug + PartialEq>(
        &mut self,
        file: &str,
        description: &str,
        flag: &str,
        context: &Value,
        expected: T,
        got: T,
    ) {
        self.run += 1;
        if expected == got {
            self.passed += 1;
        } else {
            self.failures.push(format!(
                "{file}: {description}\n    flag:     {flag}\n    context:  {context}\n    \
                 expected: {expected:?}\n    got:      {got:?}"
            ));
        }
    }
}

fn context_of(file: &str, description: &str, raw: &Value) -> Context {
    serde_json::from_value(raw.clone()).unwrap_or_else(|error| {
        panic!("{file}: {description}: context {raw} is not readable: {error}")
    })
}

#[test]
fn unleash_client_specification() {
    let dir = spec_dir();
    let index: Vec<String> = read_json(&dir.join("index.json"));
    assert!(!index.is_empty(), "{} lists no files", dir.display());

    let mut tally = Tally::default();
    let mut report = String::new();
    let mut files_run = 0;
    for file in &index {
        let spec: SpecFile = read_json(&dir.join(file));
        if spec.state.get("features").is_none() && spec.state.get("events").is_some() {
            let _ = writeln!(
                report,
                "  {file}: skipped (delta-API events, a transport concern of the server, \
                 not flag evaluation)"
            );
            continue;
        }
        files_run += 1;
        let document: ClientFeatures = serde_json::from_value(spec.state).unwrap_or_else(|error| {
            panic!("{file}: state is not a client-features document: {error}")
        });
        let flags = FlagSet::compile(&document);
        let failures_before = tally.failures.len();
        let run_before = tally.run;

        for test in &spec.tests {
            let context = context_of(file, &test.description, &test.context);
            let got = flags.is_enabled(&test.toggle_name, &context);
            tally.check(
                file,
                &test.description,
                &test.toggle_name,
                &test.context,
                test.expected_result,
                got,
            );
        }
        for test in &spec.variant_tests {
            let context = context_of(file, &test.description, &test.context);
            let variant = flags.get_variant(&test.toggle_name, &context);
            let got = ExpectedVariant {
                name: variant.name.to_owned(),
                payload: variant.payload.cloned(),
                enabled: variant.enabled,
                feature_enabled: variant.feature_enabled,
            };
            tally.check(
                file,
                &test.description,
                &test.toggle_name,
                &test.context,
                &test.expected_result,
                &got,
            );
        }

        let run = tally.run - run_before;
        let failed = tally.failures.len() - failures_before;
        let _ = writeln!(report, "  {file}: {}/{run} passed", run - failed);
    }

    println!(
        "Unleash client specification from {}:\n{report}",
        dir.display()
    );
    println!(
        "spec tests: {} run, {} passed, {} failed ({files_run} files)",
        tally.run,
        tally.passed,
        tally.failures.len()
    );
    assert!(tally.run > 0, "no specification test ran");
    assert!(
        tally.failures.is_empty(),
        "{} of {} specification tests failed:\n\n{}",
        tally.failures.len(),
        tally.run,
        tally.failures.join("\n\n")
    );
}
