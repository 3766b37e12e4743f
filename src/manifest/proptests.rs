//! Properties of the parser and validator: no input makes them panic, and every error they
//! report says where it is (`file:line:col`). Inputs are arbitrary text, YAML-shaped text, and
//! near-valid manifests: valid ones with a value of the wrong type or out of range, an unknown
//! key, or a required key deleted.

use std::path::Path;

use proptest::prelude::*;
use serde_yaml::{Mapping, Value};

use super::*;

const FILE: &str = "challenges/x/challenge.yaml";

/// Valid manifests covering every part of the schema.
const VALID: &[&str] = &[
    "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: echo\n  labels: {category: pwn}\nspec:\n  image: busybox:1\n  command: [nc, -l]\n  ports:\n    - port: 1337\n      hostPort: 31337\n    - {port: 53, protocol: udp}\n  env: {A: b}\n  resources: {cpus: 0.5, memory: 64Mi, pids: 32}\n  healthcheck:\n    tcp: {port: 1337}\n    interval: 5s\n    retries: 2\n  replicas: 1\n  flag: CTF{x}\n  points: 100\n  tags: [a, b]\n  hints: [h]\n  description: d\n",
    "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: web}\nspec:\n  build: {context: ., dockerfile: Dockerfile, args: {X: y}}\n  workingDir: /srv\n  entrypoint: [/bin/sh, -c]\n  healthcheck: {http: {port: 80, path: /health}, timeout: 1s, startPeriod: 3s}\n  replicas: 3\n  ports: [{port: 80}]\n",
    "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: files}\nspec:\n  attachments: [public/a.txt, b.bin]\n  category: misc\n",
    "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: one}\nspec:\n  image: x\n  healthcheck: {exec: {command: [true]}}\n---\napiVersion: beast/v1\nkind: Challenge\nmetadata: {name: two}\nspec: {image: y}\n",
];

fn parse(text: &str) -> ParsedFile {
    parse_str(
        text,
        FILE,
        Path::new("challenges/x"),
        Path::new("challenges"),
    )
}

/// Every error names the file and a line and column inside the text.
fn check_errors(text: &str) -> Result<(), TestCaseError> {
    let parsed = parse(text);
    let lines = text.lines().count().max(1) + 1;
    for error in parsed.errors() {
        prop_assert_eq!(&error.file, FILE);
        let (Some(line), Some(col)) = (error.line, error.col) else {
            return Err(TestCaseError::fail(format!(
                "no line:col in `{error}` for\n{text}"
            )));
        };
        prop_assert!(
            line >= 1 && line <= lines,
            "line {} of {}: {}",
            line,
            lines,
            error
        );
        prop_assert!(col >= 1, "{}", error);
        let prefix = format!("{FILE}:{line}:{col}: ");
        prop_assert!(error.to_string().starts_with(&prefix), "{}", error);
    }
    Ok(())
}

/// Values of every YAML type, including ones out of any field's range.
fn wrong_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        prop::sample::select(vec![0i64, -1, 65536, 70000, i64::MAX, i64::MIN])
            .prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|f| Value::Number(f.into())),
        "[ -~]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "",
            "../x",
            "/etc/passwd",
            "-5Mi",
            "1Ei",
            "0s",
            "tcp",
            "sctp",
            "Bad Name"
        ])
        .prop_map(|s| Value::String(s.to_string())),
        Just(Value::Sequence(vec![])),
        Just(Value::Sequence(vec![Value::Null, Value::Number(1.into())])),
        Just(Value::Mapping(Mapping::new())),
        Just(Value::Mapping(Mapping::from_iter([(
            Value::String("zz".into()),
            Value::Number(1.into()),
        )]))),
    ]
}

/// One change to a valid manifest.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the value at the n-th node (in walk order) with this one.
    Set(usize, Value),
    /// Add an unknown key to the n-th mapping.
    Unknown(usize, String),
    /// Delete the n-th key of the walk.
    Delete(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), wrong_value()).prop_map(|(n, v)| Mutation::Set(n, v)),
        (any::<usize>(), "[a-zA-Z]{1,8}").prop_map(|(n, k)| Mutation::Unknown(n, k)),
        any::<usize>().prop_map(Mutation::Delete),
    ]
}

/// Applies `m` to the node numbered `*n` in a depth-first walk; returns whether it was applied.
fn apply(value: &mut Value, m: &Mutation, n: &mut usize) -> bool {
    if *n == 0 {
        match m {
            Mutation::Set(_, v) => {
                *value = v.clone();
                return true;
            }
            Mutation::Unknown(_, key) => {
                if let Value::Mapping(map) = value {
                    map.insert(Value::String(key.clone()), Value::Number(1.into()));
                    return true;
                }
            }
            Mutation::Delete(_) => {}
        }
    }
    *n = n.saturating_sub(1);
    match value {
        Value::Mapping(map) => {
            let keys: Vec<Value> = map.keys().cloned().collect();
            for key in keys {
                if matches!(m, Mutation::Delete(_)) && *n == 0 {
                    map.remove(&key);
                    return true;
                }
                if let Some(child) = map.get_mut(&key) {
                    if apply(child, m, n) {
                        return true;
                    }
                }
            }
            false
        }
        Value::Sequence(items) => items.iter_mut().any(|child| apply(child, m, n)),
        _ => false,
    }
}

fn count(value: &Value) -> usize {
    1 + match value {
        Value::Mapping(map) => map.values().map(count).sum(),
        Value::Sequence(items) => items.iter().map(count).sum(),
        _ => 0,
    }
}

/// A valid manifest (first document) with a few mutations, as YAML text.
fn near_valid() -> impl Strategy<Value = String> {
    (
        prop::sample::select(VALID.to_vec()),
        prop::collection::vec(mutation(), 1..4),
    )
        .prop_map(|(text, mutations)| {
            let mut doc: Value = serde_yaml::from_str(text.split("\n---\n").next().unwrap_or(text))
                .unwrap_or(Value::Null);
            for m in &mutations {
                let index = match m {
                    Mutation::Set(i, _) | Mutation::Unknown(i, _) | Mutation::Delete(i) => *i,
                };
                let mut n = index % count(&doc);
                apply(&mut doc, m, &mut n);
            }
            serde_yaml::to_string(&doc).unwrap_or_default()
        })
}

/// Text made of YAML's punctuation, indentation and scalars: reaches the parser's corners far more
/// often than arbitrary Unicode does.
fn yamlish() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "apiVersion: beast/v1",
        "kind: Challenge",
        "metadata:",
        "spec:",
        "name: x",
        "image: y",
        "ports:",
        "- port: 1",
        "  ",
        "    ",
        "\n",
        "\n",
        "\n",
        "- ",
        ": ",
        "{",
        "}",
        "[",
        "]",
        ",",
        "&a ",
        "*a",
        "!!str ",
        "!tag ",
        "'q'",
        "\"q\\u00e9\"",
        "|",
        ">",
        "#c",
        "---",
        "...",
        "~",
        "? ",
        "%YAML 1.2",
        "\t",
        "1e9",
        "-1",
        "0x1F",
        "null",
        "true",
        "<<: *a",
        "hostPort: 99999",
    ]);
    prop::collection::vec(pieces, 0..40).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        // Failures are kept as plain tests below, not in a proptest-regressions/ folder.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_text_never_panics_and_errors_have_a_place(text in "\\PC{0,200}") {
        check_errors(&text)?;
    }

    #[test]
    fn yaml_shaped_text_never_panics_and_errors_have_a_place(text in yamlish()) {
        check_errors(&text)?;
    }

    #[test]
    fn near_valid_manifests_never_panic_and_errors_have_a_place(text in near_valid()) {
        check_errors(&text)?;
        // Appended after a valid document, the broken one keeps its own lines.
        check_errors(&format!("{}---\n{text}", VALID[0]))?;
    }
}

/// Inputs the properties found: serde_yaml reads a scalar where yaml-rust2 (the position index)
/// gives up, and the error still points at the document.
#[test]
fn found_by_the_properties() {
    for text in [">#", "'q'#c"] {
        check_errors(text).unwrap();
        let parsed = parse(text);
        let error = parsed.errors().next().unwrap();
        assert_eq!((error.line, error.col), (Some(1), Some(1)), "{error}");
    }
}

#[test]
fn the_valid_bases_are_valid() {
    for text in VALID {
        let parsed = parse(text);
        assert!(
            parsed.is_valid(),
            "{text}\n{:?}",
            parsed.errors().collect::<Vec<_>>()
        );
    }
}

#[test]
fn mutations_do_produce_errors() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = near_valid();
    let mut invalid = 0;
    let mut samples = Vec::new();
    for _ in 0..200 {
        let text = strategy.new_tree(&mut runner).unwrap().current();
        let parsed = parse(&text);
        if !parsed.is_valid() {
            invalid += 1;
            if samples.len() < 8 {
                samples.push(parsed.errors().next().unwrap().to_string());
            }
        }
    }
    // Most mutations break the manifest; the rest (e.g. deleting an optional key) need not.
    assert!(invalid > 100, "{invalid}/200 invalid: {samples:#?}");
}
