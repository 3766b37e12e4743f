//! The command line without an operator: validate, plan.

use std::process::Command;

use crate::common::*;

fn beast(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_beast"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn validate_accepts_the_examples() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let (code, out, err) = beast(&["validate", examples]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn validate_reports_file_line_column_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: bad\nspec:\n  image: x\n  ports:\n    - port: 70000\n",
    )
    .unwrap();
    let (code, out, _) = beast(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        out.contains("bad.yaml:8:7: spec.ports[0].port: must be 1-65535"),
        "{out}"
    );

    std::fs::write(&file, "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: ok}\nspec: {image: x, portz: []}\n")
        .unwrap();
    let (code, out, _) = beast(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("portz"), "{out}");
}

#[test]
fn plan_shows_what_would_change_and_why() {
    let mut env = Env::new("plan");
    env.write("a.yaml", &echo("a", ""));
    env.write("b.yaml", &echo("b", ""));
    let plan = |env: &Env| {
        let (code, out, err) = beast(&[
            "plan",
            "--manifests",
            env.manifests.to_str().unwrap(),
            "--instance",
            &env.instance,
            "--state-dir",
            env.state.to_str().unwrap(),
            "--port-range",
            &env.port_range(),
        ]);
        assert_eq!(code, 0, "{out}{err}");
        out
    };
    let out = plan(&env);
    assert!(out.contains("+ create replica 1"), "{out}");
    assert!(out.contains("2 to create"), "{out}");
    env.start();
    env.wait_running("a");
    env.wait_running("b");
    env.stop();
    let out = plan(&env);
    assert!(out.contains("2 in sync"), "{out}");
    env.write("a.yaml", &echo("a", "  env: {COLOR: blue}\n"));
    env.remove("b.yaml");
    let out = plan(&env);
    assert!(out.contains("~ replace replica 1"), "{out}");
    assert!(out.contains("env: COLOR changed"), "{out}");
    assert!(out.contains("- remove"), "{out}");
    // A dry run changes nothing.
    assert_eq!(env.containers().len(), 2);
}
