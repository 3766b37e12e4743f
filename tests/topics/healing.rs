//! Self-healing: every kind of damage comes back without anyone touching beast.

use std::time::Duration;

use crate::common::*;

const HEAL: Duration = Duration::from_secs(10);

#[test]
fn a_removed_container_and_a_missing_replica_are_recreated() {
    let mut env = Env::new("heal-rm");
    env.write("a.yaml", &echo("a", "  replicas: 3\n"));
    env.start();
    env.wait_running("a");
    let ports = env.host_ports("a");
    let old = env.container_id(&env.name("a", 2)).unwrap();
    assert!(docker_ok(&["rm", "-f", &env.name("a", 2)]));
    env.wait_for("replica 2 to be recreated", HEAL, |env| {
        env.container_id(&env.name("a", 2))
            .is_some_and(|id| id != old)
            && env.running("a", 2)
    });
    env.wait_running("a");
    assert_eq!(
        env.host_ports("a"),
        ports,
        "a recreated replica must keep its host port"
    );
    env.wait_for("history to say so", HEAL, |env| {
        let reasons = env.event_reasons("a");
        reasons.contains(&"Removed".to_string()) && reasons.contains(&"Recreated".to_string())
    });
}

#[test]
fn a_killed_process_comes_back_and_is_counted() {
    let mut env = Env::new("heal-kill");
    env.write("a.yaml", &echo("a", ""));
    env.start();
    env.wait_running("a");
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &env.name("a", 1)]);
    assert!(std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap()
        .success());
    env.wait_for("a restart to be counted", HEAL, |env| {
        env.status("a")
            .is_some_and(|s| s["status"]["restarts"].as_u64().unwrap_or(0) >= 1)
    });
    env.wait_for("running again", HEAL, |env| env.running("a", 1));
    // The status shows the ports again once it has seen the restarted container.
    env.wait_for("its port in the status", HEAL, |env| {
        !env.host_ports("a").is_empty()
    });
    let s = env.status("a").unwrap();
    assert_eq!(s["status"]["lastTermination"]["exitCode"], 137, "{s}");
    assert!(echo_roundtrip(env.host_ports("a")[0]));
}

#[test]
fn a_stopped_or_paused_container_is_started_again() {
    let mut env = Env::new("heal-stop");
    env.write("a.yaml", &echo("a", ""));
    env.start();
    env.wait_running("a");
    let id = env.container_id(&env.name("a", 1)).unwrap();
    assert!(docker_ok(&["stop", "-t", "0", &env.name("a", 1)]));
    env.wait_for("started again", HEAL, |env| env.running("a", 1));
    assert!(docker_ok(&["pause", &env.name("a", 1)]));
    env.wait_for("unpaused", HEAL, |env| {
        docker(&["inspect", "-f", "{{.State.Paused}}", &env.name("a", 1)]) == "false"
            && env.running("a", 1)
    });
    assert_eq!(
        env.container_id(&env.name("a", 1)),
        Some(id),
        "healing a stop must not recreate"
    );
    assert!(echo_roundtrip(env.host_ports("a")[0]));
}

#[test]
fn a_foreign_container_squatting_a_host_port_is_reported_and_left_alone() {
    let mut env = Env::new("squat");
    let port = env.fixed_port(0);
    let squatter = format!("{}-squatter", env.instance);
    env.extra_cleanup.push(squatter.clone());
    assert!(docker_ok(&[
        "run",
        "-d",
        "--name",
        &squatter,
        "-p",
        &format!("{port}:1337"),
        BUSYBOX,
        "nc",
        "-ll",
        "-p",
        "1337",
        "-e",
        "cat",
    ]));
    env.write("a.yaml", &echo("a", &format!("      hostPort: {port}\n")));
    env.start();
    env.wait_for(
        "Ready=False HostPortInUse",
        Duration::from_secs(20),
        |env| {
            env.condition("a", "Ready")
                .is_some_and(|c| c["reason"] == "HostPortInUse")
        },
    );
    let msg = env.condition("a", "Ready").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains(&port.to_string()), "{msg}");
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Status}}", &squatter]),
        "running"
    );
    // Once the squatter is gone, the challenge comes up (within the backoff).
    assert!(docker_ok(&["rm", "-f", &squatter]));
    env.wait_for("a to run", Duration::from_secs(45), |env| {
        env.running("a", 1)
    });
}

#[test]
fn a_failing_probe_restarts_the_container_until_it_is_healthy_again() {
    let mut env = Env::new("probe");
    env.write("web.yaml", &probed_web("web"));
    env.start();
    env.wait_for("Healthy=True", Duration::from_secs(30), |env| {
        env.condition("web", "Healthy")
            .is_some_and(|c| c["status"] == "True")
    });
    let id = env.container_id(&env.name("web", 1)).unwrap();
    let started = docker(&["inspect", "-f", "{{.State.StartedAt}}", &env.name("web", 1)]);
    // Break the probe target from inside the container.
    assert!(docker_ok(&[
        "exec",
        &env.name("web", 1),
        "rm",
        "/tmp/www/health"
    ]));
    env.wait_for("an Unhealthy event", Duration::from_secs(20), |env| {
        env.event_reasons("web").contains(&"Unhealthy".to_string())
    });
    env.wait_for("restarted", Duration::from_secs(20), |env| {
        docker(&["inspect", "-f", "{{.State.StartedAt}}", &env.name("web", 1)]) != started
    });
    env.wait_for("Healthy=True again", Duration::from_secs(20), |env| {
        env.condition("web", "Healthy")
            .is_some_and(|c| c["status"] == "True")
    });
    assert_eq!(
        env.container_id(&env.name("web", 1)),
        Some(id),
        "a probe restart must not recreate"
    );
    assert!(http_get(env.host_ports("web")[0], "/health").is_some());
}

#[test]
fn an_exec_probe_works_on_a_scratch_image() {
    let mut env = Env::new("probe-exec");
    env.write(
        "x.yaml",
        &manifest(
            "x",
            "  command: [sleep, \"600\"]\n  healthcheck:\n    exec: {command: [\"true\"]}\n    interval: 500ms\n    retries: 2\n",
        ),
    );
    env.start();
    env.wait_for("Healthy=True", Duration::from_secs(30), |env| {
        env.condition("x", "Healthy")
            .is_some_and(|c| c["status"] == "True")
    });
}

#[test]
fn a_crash_loop_backs_off_and_says_why() {
    let mut env = Env::new("crash");
    env.write(
        "boom.yaml",
        &manifest(
            "boom",
            "  command: [sh, -c, \"echo boom: cannot open /flag; exit 3\"]\n",
        ),
    );
    env.write("fine.yaml", &echo("fine", ""));
    env.start();
    env.wait_running("fine");
    let window = Duration::from_secs(12);
    std::thread::sleep(window);
    let restarts: u64 = docker(&["inspect", "-f", "{{.RestartCount}}", &env.name("boom", 1)])
        .parse()
        .unwrap_or(999);
    // The engine's backoff doubles from 100 ms: about 7 starts in 12 s. A tight loop would be hundreds.
    assert!(
        restarts <= 12,
        "{restarts} restarts in {window:?}: not backing off"
    );
    assert!(restarts >= 2, "{restarts} restarts: not restarting at all");
    env.wait_for("CrashLoopBackOff", Duration::from_secs(20), |env| {
        env.condition("boom", "Ready")
            .is_some_and(|c| c["reason"] == "CrashLoopBackOff")
    });
    let s = env.status("boom").unwrap();
    let phase = s["status"]["phase"].as_str().unwrap();
    assert!(phase == "Degraded" || phase == "Failed", "{s}");
    assert_eq!(s["status"]["lastTermination"]["exitCode"], 3, "{s}");
    let tail = s["status"]["lastTermination"]["logTail"].to_string();
    assert!(tail.contains("cannot open /flag"), "{s}");
    assert!(s["status"]["restarts"].as_u64().unwrap() >= 2, "{s}");
    // The other challenge is unaffected.
    assert_eq!(env.phase("fine").as_deref(), Some("Running"));
}
