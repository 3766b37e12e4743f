//! Manifests in a watched directory become running containers, and edits converge.

use std::time::Duration;

use crate::common::*;

#[test]
fn several_challenges_converge_and_serve() {
    let mut env = Env::new("converge");
    let fixed = env.fixed_port(0);
    env.write(
        "echo/challenge.yaml",
        &echo("echo", &format!("      hostPort: {fixed}\n")),
    );
    env.write("auto/challenge.yaml", &echo("auto", ""));
    env.write("multi/challenge.yaml", &echo("multi", "  replicas: 3\n"));
    env.write(
        "web/challenge.yaml",
        &manifest(
            "web",
            "  command: [httpd, -f, -p, \"8080\", -h, /etc]\n  ports:\n    - port: 8080\n",
        ),
    );
    env.start();
    for name in ["echo", "auto", "multi", "web"] {
        env.wait_running(name);
    }
    assert!(
        echo_roundtrip(fixed),
        "fixed host port {fixed} does not echo"
    );
    let auto = env.host_ports("auto");
    assert_eq!(auto.len(), 1);
    assert!(
        echo_roundtrip(auto[0]),
        "auto port {} does not echo",
        auto[0]
    );
    let multi = env.host_ports("multi");
    assert_eq!(multi.len(), 3, "{multi:?}");
    let distinct: std::collections::BTreeSet<_> = multi.iter().collect();
    assert_eq!(distinct.len(), 3, "replicas share host ports: {multi:?}");
    for p in &multi {
        assert!(echo_roundtrip(*p), "replica on {p} does not echo");
    }
    let web = env.host_ports("web");
    let body = http_get(web[0], "/passwd").expect("web serves");
    assert!(body.contains("root"), "{body}");

    // Names and labels of SPEC §3, and the hardened defaults.
    let name = format!("{}_multi_2", env.instance);
    let labels = docker(&["inspect", "-f", "{{json .Config.Labels}}", &name]);
    let labels: serde_json::Value = serde_json::from_str(&labels).unwrap();
    assert_eq!(labels["beast.instance"], env.instance.as_str());
    assert_eq!(labels["beast.challenge"], "multi");
    assert_eq!(labels["beast.replica"], "2");
    assert!(labels["beast.spec-hash"]
        .as_str()
        .is_some_and(|h| !h.is_empty()));
    let host = docker(&["inspect", "-f", "{{json .HostConfig}}", &name]);
    let host: serde_json::Value = serde_json::from_str(&host).unwrap();
    assert_eq!(host["CapDrop"][0], "ALL");
    assert!(host["SecurityOpt"]
        .to_string()
        .contains("no-new-privileges"));
    assert!(host["Memory"].as_i64().unwrap_or(0) > 0);
    assert!(host["PidsLimit"].as_i64().unwrap_or(0) > 0);

    // Status shape of SPEC §6.
    let s = env.status("echo").unwrap();
    assert_eq!(s["name"], "echo");
    assert!(s["source"].as_str().unwrap().starts_with("dir:"), "{s}");
    assert!(
        s["source"]
            .as_str()
            .unwrap()
            .ends_with("echo/challenge.yaml"),
        "{s}"
    );
    assert_eq!(s["status"]["containers"][0]["state"], "running");
    assert_eq!(s["status"]["containers"][0]["ports"][0]["hostPort"], fixed);
    let list = env.get_status("/api/v1/status/challenges").unwrap().1;
    assert_eq!(list["items"].as_array().unwrap().len(), 4);
}

#[test]
fn an_edit_replaces_only_the_edited_challenge() {
    let mut env = Env::new("edit");
    env.write("a.yaml", &echo("a", ""));
    env.write("b.yaml", &echo("b", ""));
    env.start();
    env.wait_running("a");
    env.wait_running("b");
    let a_name = format!("{}_a_1", env.instance);
    let b_name = format!("{}_b_1", env.instance);
    let a_id = env.container_id(&a_name).unwrap();
    let b_id = env.container_id(&b_name).unwrap();
    let a_port = env.host_ports("a")[0];

    env.write("a.yaml", &echo("a", "  env: {GREETING: hello}\n"));
    env.wait_for("a to be replaced", Duration::from_secs(30), |env| {
        env.container_id(&a_name).is_some_and(|id| id != a_id)
            && env.phase("a").as_deref() == Some("Running")
    });
    assert_eq!(
        env.container_id(&b_name),
        Some(b_id),
        "b was recreated by an edit of a"
    );
    assert_eq!(
        env.host_ports("a"),
        vec![a_port],
        "an allocated port changed on replace"
    );
    let env_vars = docker(&["inspect", "-f", "{{json .Config.Env}}", &a_name]);
    assert!(env_vars.contains("GREETING=hello"), "{env_vars}");
    assert!(echo_roundtrip(a_port));
    // Only one container per replica remains (the old one was removed).
    assert_eq!(env.containers().len(), 2, "{:?}", env.containers());

    // A player-facing edit (description) recreates nothing.
    let a_id = env.container_id(&a_name).unwrap();
    env.write(
        "a.yaml",
        &echo(
            "a",
            "  env: {GREETING: hello}\n  description: new words\n  points: 300\n",
        ),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.container_id(&a_name), Some(a_id));
}

#[test]
fn an_invalid_edit_keeps_the_old_container_and_says_why() {
    let mut env = Env::new("invalid");
    env.write("echo/challenge.yaml", &echo("echo", ""));
    env.start();
    env.wait_running("echo");
    let name = format!("{}_echo_1", env.instance);
    let id = env.container_id(&name).unwrap();

    let broken = echo("echo", "").replace("port: 1337", "port: 70000");
    env.write("echo/challenge.yaml", &broken);
    env.wait_for("Valid=False", Duration::from_secs(20), |env| {
        env.condition("echo", "Valid")
            .is_some_and(|c| c["status"] == "False")
    });
    let valid = env.condition("echo", "Valid").unwrap();
    let message = valid["message"].as_str().unwrap();
    assert!(message.contains("echo/challenge.yaml:"), "{message}");
    assert!(message.contains("spec.ports[0].port"), "{message}");
    // file:line:col
    let after_file = message.split("challenge.yaml:").nth(1).unwrap();
    assert!(
        after_file.split(':').next().unwrap().parse::<u32>().is_ok(),
        "{message}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.container_id(&name), Some(id.clone()));
    assert_eq!(env.phase("echo").as_deref(), Some("Running"));

    // A YAML syntax error is no different.
    env.write(
        "echo/challenge.yaml",
        "apiVersion: beast/v1\nkind: [unclosed\n",
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.container_id(&name), Some(id));
    assert!(env
        .condition("echo", "Valid")
        .is_some_and(|c| c["status"] == "False"));

    // Fixing it makes it valid again.
    env.write("echo/challenge.yaml", &echo("echo", ""));
    env.wait_for("Valid=True", Duration::from_secs(20), |env| {
        env.condition("echo", "Valid")
            .is_some_and(|c| c["status"] == "True")
    });
}

#[test]
fn deleting_a_file_prunes_its_containers() {
    let mut env = Env::new("prune");
    env.write("keep.yaml", &echo("keep", ""));
    env.write("gone.yaml", &echo("gone", "  replicas: 2\n"));
    env.start();
    env.wait_running("keep");
    env.wait_running("gone");
    env.remove("gone.yaml");
    env.wait_for(
        "gone's containers to be removed",
        Duration::from_secs(30),
        |env| {
            env.containers()
                .iter()
                .all(|(n, _, _)| !n.contains("_gone_"))
        },
    );
    assert!(env.status("gone").is_none());
    assert_eq!(env.phase("keep").as_deref(), Some("Running"));
}

#[test]
fn scaling_up_and_down_keeps_the_other_replicas() {
    let mut env = Env::new("scale");
    env.write("s.yaml", &echo("s", "  replicas: 1\n"));
    env.start();
    env.wait_running("s");
    let first = env.container_id(&format!("{}_s_1", env.instance)).unwrap();
    env.write("s.yaml", &echo("s", "  replicas: 3\n"));
    env.wait_for("3 replicas", Duration::from_secs(30), |env| {
        env.containers()
            .iter()
            .filter(|(_, _, s)| s == "running")
            .count()
            == 3
    });
    env.write("s.yaml", &echo("s", "  replicas: 0\n"));
    env.wait_for("0 replicas", Duration::from_secs(30), |env| {
        env.containers().is_empty()
    });
    env.wait_for("Stopped", Duration::from_secs(10), |env| {
        env.phase("s").as_deref() == Some("Stopped")
    });
    env.write("s.yaml", &echo("s", "  replicas: 2\n"));
    env.wait_running("s");
    assert_ne!(
        env.container_id(&format!("{}_s_1", env.instance)),
        Some(first)
    );
}
