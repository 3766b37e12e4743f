//! Isolation and multi-container challenges (SPEC §7) on the real engine: a network per
//! challenge, services gated on their healthcheck, egress off by default, the security block,
//! and adoption of networks and services across a restart of beast.

use std::time::Duration;

use serde_json::Value;

use crate::common::netns::Netns;
use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);

/// Runs `sh -c script` in a container; (exit ok, stdout+stderr).
fn sh(container: &str, script: &str) -> (bool, String) {
    let out = std::process::Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_string())
}

/// A web main (busybox httpd on 8080, published) with one service `db` that listens on 6379
/// after `delay` seconds and answers `dbok`, with a tcp healthcheck.
fn web_with_db(name: &str, delay: u32, extra: &str) -> String {
    manifest(
        name,
        &format!(
            "  command: [sh, -c, \"echo {name} > /tmp/index.html; httpd -f -p 8080 -h /tmp\"]\n  ports: [{{port: 8080}}]\n  services:\n    - name: db\n      image: {BUSYBOX}\n      command: [sh, -c, \"sleep {delay}; nc -ll -p 6379 -e echo dbok\"]\n      healthcheck: {{tcp: {{port: 6379}}, interval: 500ms, retries: 3, startPeriod: {delay}s}}\n{extra}"
        ),
    )
}

fn service_name(env: &Env, challenge: &str, service: &str) -> String {
    format!("{}_{challenge}_{service}", env.instance)
}

fn ip_of(container: &str) -> String {
    docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        container,
    ])
}

fn created_at(container: &str) -> String {
    docker(&["inspect", "-f", "{{.Created}}", container])
}

fn started_at(container: &str) -> String {
    docker(&["inspect", "-f", "{{.State.StartedAt}}", container])
}

#[test]
fn challenges_are_isolated_and_services_gate_their_mains() {
    let mut env = Env::new("iso-net");
    env.write("a.yaml", &web_with_db("a", 3, ""));
    env.write(
        "b.yaml",
        &manifest(
            "b",
            "  command: [sh, -c, \"echo b > /tmp/index.html; httpd -p 8080 -h /tmp; nc -ll -p 9000 -e echo secret\"]\n  ports: [{port: 8080}]\n",
        ),
    );
    env.start();
    let main = env.name("a", 1);
    let db = service_name(&env, "a", "db");
    // While the service is not healthy yet the main waits, and the status says for what.
    env.wait_for("a to wait for its service", WAIT, |env| {
        env.condition("a", "Ready")
            .is_some_and(|c| c["reason"] == "WaitingForServices")
            || env.container_id(&main).is_some()
    });
    let s = env.wait_running("a");
    env.wait_running("b");
    // The main was created only after the service passed its probe (it listens after 3 s).
    assert!(
        created_at(&main) > started_at(&db),
        "main created {} before its service started {}",
        created_at(&main),
        started_at(&db)
    );
    let containers = s["status"]["containers"].as_array().unwrap();
    assert!(
        containers
            .iter()
            .any(|c| c["service"] == "db" && c["name"] == db),
        "{s}"
    );
    assert_eq!(
        s["status"]["network"]["name"],
        format!("{}_a", env.instance),
        "{s}"
    );
    let mut nets = networks_of(&env.instance);
    nets.sort();
    assert_eq!(
        nets,
        vec![format!("{}_a", env.instance), format!("{}_b", env.instance)]
    );

    // Same challenge: the service answers by name.
    let (ok, out) = sh(&main, "nc -w 3 db 6379 </dev/null");
    assert!(ok && out.contains("dbok"), "db by name: {out}");
    // Other challenge: not by name, not by IP, not on a port it never published.
    let b1 = env.name("b", 1);
    let (ok, out) = sh(&main, &format!("nc -w 3 {b1} 8080 </dev/null"));
    assert!(!ok || out.is_empty(), "b reached by name: {out}");
    let b_ip = ip_of(&b1);
    let (_, out) = sh(&b1, &format!("nc -w 3 {b_ip} 9000 </dev/null"));
    assert!(
        out.contains("secret"),
        "b's unpublished listener is not up: {out}"
    );
    let (ok, out) = sh(&main, &format!("nc -w 3 {b_ip} 9000 </dev/null"));
    assert!(!out.contains("secret"), "b reached by IP ({ok}): {out}");
    let (_, out) = sh(&b1, &format!("nc -w 3 {} 6379 </dev/null", ip_of(&db)));
    assert!(!out.contains("dbok"), "a's service reached from b: {out}");
    // Published ports work exactly as before.
    let port = env.host_ports("a")[0];
    assert_eq!(
        http_get(port, "/index.html").as_deref().map(str::trim),
        Some("a")
    );

    // Removing the service container heals it without touching the main.
    let main_id = env.container_id(&main).unwrap();
    let db_id = env.container_id(&db).unwrap();
    assert!(docker_ok(&["rm", "-f", &db]));
    env.wait_for("the service to come back", WAIT, |env| {
        env.container_id(&db).is_some_and(|id| id != db_id)
    });
    env.wait_for("the healed service to answer by name", WAIT, |_| {
        sh(&main, "nc -w 2 db 6379 </dev/null").1.contains("dbok")
    });
    env.wait_running("a");
    assert_eq!(env.container_id(&main).as_deref(), Some(main_id.as_str()));

    // A restart of beast adopts networks and service containers: nothing recreated.
    let before: Vec<(String, String, String)> = env.containers();
    env.stop();
    env.start();
    env.wait_running("a");
    env.wait_running("b");
    std::thread::sleep(Duration::from_secs(3));
    let mut after = env.containers();
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(before, after, "a restart of beast recreated containers");
    assert_eq!(networks_of(&env.instance).len(), 2);

    // A deleted challenge leaves no network (and no service) behind.
    env.remove("a.yaml");
    env.wait_for("a's containers and network to go", WAIT, |env| {
        env.containers().iter().all(|(n, _, _)| !n.contains("_a_"))
            && networks_of(&env.instance) == vec![format!("{}_b", env.instance)]
    });
}

#[test]
fn a_changed_service_replaces_that_service_only() {
    let mut env = Env::new("iso-drift");
    env.write("a.yaml", &web_with_db("a", 0, ""));
    env.start();
    env.wait_running("a");
    let main = env.name("a", 1);
    let db = service_name(&env, "a", "db");
    let main_id = env.container_id(&main).unwrap();
    let db_id = env.container_id(&db).unwrap();
    env.write(
        "a.yaml",
        &web_with_db("a", 0, "").replace("echo dbok", "echo dbok2"),
    );
    env.wait_for("the service to be replaced", WAIT, |env| {
        env.container_id(&db).is_some_and(|id| id != db_id)
    });
    env.wait_running("a");
    assert_eq!(
        env.container_id(&main),
        Some(main_id),
        "the main was recreated"
    );
    let (ok, out) = sh(&main, "sleep 1; nc -w 3 db 6379 </dev/null");
    assert!(ok && out.contains("dbok2"), "{out}");
}

#[test]
fn egress_is_off_by_default_and_on_when_asked() {
    let mut outside = Netns::new();
    outside.listen(7777, "outside");
    let mut env = Env::new("iso-egress");
    // First: a plain container (not beast's) reaches the listener, so the test means something.
    let plain = format!("{}-plain", env.instance);
    env.extra_cleanup.push(plain.clone());
    assert!(docker_ok(&[
        "run", "-d", "--name", &plain, BUSYBOX, "sleep", "300"
    ]));
    let target = format!("{} 7777", outside.addr);
    let probe = format!("nc -w 3 {target} </dev/null");
    let (_, out) = sh(&plain, &probe);
    assert_eq!(out, "outside", "a plain container must reach the listener");

    let sleeper = |name: &str, extra: &str| {
        manifest(
            name,
            &format!(
                "  command: [sh, -c, \"echo up > /tmp/index.html; httpd -f -p 8080 -h /tmp\"]\n  ports: [{{port: 8080}}]\n{extra}"
            ),
        )
    };
    env.write("closed.yaml", &sleeper("closed", ""));
    env.write(
        "open.yaml",
        &sleeper("open", "  network:\n    egress: true\n"),
    );
    env.start();
    env.wait_running("closed");
    env.wait_running("open");
    let c = env.condition("closed", "EgressPolicy").unwrap();
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("True"), Some("Blocked")),
        "{c}"
    );
    let o = env.condition("open", "EgressPolicy").unwrap();
    assert_eq!(o["reason"], "Allowed", "{o}");

    let (_, out) = sh(&env.name("closed", 1), &probe);
    assert_ne!(out, "outside", "egress off, yet the listener answered");
    let (_, out) = sh(&env.name("open", 1), &probe);
    assert_eq!(out, "outside", "egress on, yet the listener did not answer");
    // Players still reach the egress-off challenge through its published port, also from
    // "outside" (the namespace), through the host.
    let port = env.host_ports("closed")[0];
    assert!(http_get(port, "/index.html").is_some());

    // Turning egress on opens it; the rules go.
    env.write(
        "closed.yaml",
        &sleeper("closed", "  network:\n    egress: true\n"),
    );
    env.wait_for("egress to be allowed", WAIT, |env| {
        env.condition("closed", "EgressPolicy")
            .is_some_and(|c| c["reason"] == "Allowed")
    });
    let (_, out) = sh(&env.name("closed", 1), &probe);
    assert_eq!(out, "outside");
}

#[test]
fn egress_that_cannot_be_enforced_is_reported() {
    let mut env = Env::new("iso-noipt");
    env.write("a.yaml", &echo("a", ""));
    env.start_with(&["--iptables", "/nonexistent/iptables"]);
    env.wait_running("a");
    let c = env.condition("a", "EgressPolicy").unwrap();
    assert_eq!(c["status"], "False", "{c}");
    assert_eq!(c["reason"], "Unenforced", "{c}");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/iptables"),
        "{c}"
    );
    let s = env.status("a").unwrap();
    assert_eq!(s["status"]["network"]["enforced"], false, "{s}");
    assert!(
        env.log().contains("egress control is unavailable"),
        "no startup warning"
    );
}

fn valid(env: &Env, name: &str) -> Option<Value> {
    env.condition(name, "Valid")
}

#[test]
fn the_security_block_is_enforced_and_policed() {
    let mut env = Env::new("iso-sec");
    env.write(
        "ro.yaml",
        &manifest(
            "ro",
            "  command: [sleep, \"3600\"]\n  security:\n    readOnlyRootFilesystem: true\n    tmpfs: [/scratch]\n    user: \"1000:1000\"\n    ulimits: {nofile: 512}\n",
        ),
    );
    env.write(
        "raw.yaml",
        &manifest(
            "raw",
            "  command: [sleep, \"3600\"]\n  security:\n    capAdd: [NET_RAW]\n",
        ),
    );
    env.write(
        "admin.yaml",
        &manifest(
            "admin",
            "  command: [sleep, \"3600\"]\n  security:\n    capAdd: [SYS_ADMIN]\n",
        ),
    );
    env.write(
        "priv.yaml",
        &manifest(
            "priv",
            "  command: [sleep, \"3600\"]\n  security:\n    privileged: true\n",
        ),
    );
    env.write(
        "gvisor.yaml",
        &manifest(
            "gvisor",
            "  command: [sleep, \"3600\"]\n  security:\n    runtime: no-such-runtime\n",
        ),
    );
    env.start_with(&["--allow-caps", "NET_RAW"]);
    env.wait_running("ro");
    env.wait_running("raw");
    let ro = env.name("ro", 1);
    let (ok, out) = sh(&ro, "touch /x");
    assert!(!ok && out.contains("Read-only"), "{out}");
    let (ok, _) = sh(&ro, "touch /scratch/x");
    assert!(ok, "tmpfs not writable");
    assert_eq!(sh(&ro, "id -u").1, "1000");
    assert_eq!(sh(&ro, "ulimit -n").1, "512");
    let caps = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.CapAdd}}",
        &env.name("raw", 1),
    ]);
    assert!(caps.contains("NET_RAW"), "{caps}");

    for (name, needle) in [("admin", "--allow-caps"), ("priv", "--allow-privileged")] {
        env.wait_for(&format!("{name} to be invalid"), WAIT, |env| {
            valid(env, name).is_some_and(|c| c["status"] == "False")
        });
        let c = valid(&env, name).unwrap();
        assert!(c["message"].as_str().unwrap().contains(needle), "{c}");
        assert!(env.container_id(&env.name(name, 1)).is_none());
    }
    let c = valid(&env, "admin").unwrap();
    assert!(c["message"].as_str().unwrap().contains("SYS_ADMIN"), "{c}");

    // An unknown runtime is a clear error, never a crash loop.
    env.wait_for("the runtime error", WAIT, |env| {
        env.condition("gvisor", "Ready").is_some_and(|c| {
            c["message"]
                .as_str()
                .is_some_and(|m| m.to_lowercase().contains("runtime"))
        })
    });
    std::thread::sleep(Duration::from_secs(2));
    let s = env.status("gvisor").unwrap();
    assert_eq!(s["status"]["restarts"], 0, "{s}");
    assert_eq!(s["status"]["phase"], "Failed", "{s}");
    assert!(env.container_id(&env.name("gvisor", 1)).is_none());
}

#[test]
fn another_instances_networks_are_untouched() {
    let mut env = Env::new("iso-own");
    let other = format!("{}-other", env.instance);
    let foreign = format!("{other}_a");
    assert!(docker_ok(&[
        "network",
        "create",
        "--label",
        &format!("beast.instance={other}"),
        "--label",
        "beast.challenge=a",
        &foreign
    ]));
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            docker_ok(&["network", "rm", &self.0]);
        }
    }
    let _cleanup = Cleanup(foreign.clone());
    env.write("a.yaml", &echo("a", ""));
    env.start();
    env.wait_running("a");
    env.remove("a.yaml");
    env.wait_for("a's network to go", WAIT, |env| {
        networks_of(&env.instance).is_empty()
    });
    assert_eq!(networks_of(&other), vec![foreign]);
}

#[test]
fn a_service_built_from_source_runs_and_answers_by_name() {
    let mut env = Env::new("iso-build");
    env.write(
        "a/Dockerfile",
        &format!("FROM {BUSYBOX}\nCMD [\"nc\", \"-ll\", \"-p\", \"6379\", \"-e\", \"echo\", \"built\"]\n"),
    );
    env.write(
        "a/challenge.yaml",
        &manifest(
            "a",
            "  command: [sleep, \"3600\"]\n  services:\n    - name: cache\n      build: {context: .}\n      healthcheck: {tcp: {port: 6379}, interval: 500ms}\n",
        ),
    );
    env.start();
    env.wait_running("a");
    let main = env.name("a", 1);
    env.wait_for("the built service to answer by name", WAIT, |_| {
        sh(&main, "nc -w 2 cache 6379 </dev/null")
            .1
            .contains("built")
    });
    let s = env.status("a").unwrap();
    assert_eq!(
        env.condition("a", "Built").map(|c| c["status"].clone()),
        Some(Value::from("True")),
        "{s}"
    );
}
