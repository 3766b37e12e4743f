//! Bad inputs and lost sources never take down what runs.

use std::time::Duration;

use crate::common::*;

#[test]
fn a_vanished_directory_prunes_nothing() {
    let mut env = Env::new("vanish");
    env.write("a/challenge.yaml", &echo("a", ""));
    env.write("b/challenge.yaml", &echo("b", ""));
    env.start();
    env.wait_running("a");
    env.wait_running("b");
    let before = env.containers();
    let moved = env.dir.path().join("moved-away");
    std::fs::rename(&env.manifests, &moved).unwrap();
    std::thread::sleep(Duration::from_secs(5)); // several resyncs
    assert_eq!(env.containers(), before);
    assert_eq!(env.phase("a").as_deref(), Some("Running"));
    // It comes back: still nothing recreated.
    std::fs::rename(&moved, &env.manifests).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.containers(), before);
}

#[test]
fn a_name_defined_twice_keeps_what_runs() {
    let mut env = Env::new("dup");
    env.write("one.yaml", &echo("a", ""));
    env.start();
    env.wait_running("a");
    let before = env.containers();
    env.write("two.yaml", &echo("a", "  env: {X: y}\n"));
    env.wait_for("Valid=False", Duration::from_secs(20), |env| {
        env.condition("a", "Valid")
            .is_some_and(|c| c["status"] == "False")
    });
    let message = env.condition("a", "Valid").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("one.yaml") && message.contains("two.yaml"),
        "{message}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.containers(), before);
}

#[test]
fn a_missing_image_keeps_the_challenge_pending_with_a_reason() {
    let mut env = Env::new("noimage");
    env.write(
        "x.yaml",
        "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: x\nspec:\n  image: beast-examples/does-not-exist:1\n",
    );
    env.start();
    env.wait_for(
        "Ready=False ImageNotFound",
        Duration::from_secs(20),
        |env| {
            env.condition("x", "Ready")
                .is_some_and(|c| c["reason"] == "ImageNotFound")
        },
    );
    assert!(env.containers().is_empty());
}

#[test]
fn readyz_and_healthz_answer() {
    let mut env = Env::new("ready");
    env.write("a.yaml", &echo("a", ""));
    env.start();
    env.wait_for("/readyz 200", Duration::from_secs(30), |env| {
        env.get_status("/readyz")
            .is_some_and(|(code, _)| code == 200)
    });
    let (code, body) = env.get_status("/healthz").unwrap();
    assert_eq!(code, 200);
    assert_eq!(body["status"], "ok");
    let (code, body) = env.get_status("/api/v1/status/challenges/nope").unwrap();
    assert_eq!(code, 404);
    assert_eq!(body["error"]["code"], "NotFound");
}
