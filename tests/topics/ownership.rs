//! Adoption and ownership: restarts recreate nothing; foreign containers are never touched.

use std::time::Duration;

use crate::common::*;

#[test]
fn a_restart_of_beast_recreates_nothing() {
    let mut env = Env::new("restart");
    env.write("a.yaml", &echo("a", "  replicas: 2\n"));
    env.write(
        "b.yaml",
        &echo("b", &format!("      hostPort: {}\n", env.fixed_port(1))),
    );
    env.start();
    env.wait_running("a");
    env.wait_running("b");
    let before = env.containers();
    let ports = env.host_ports("a");
    let status = env.stop();
    assert!(status.success(), "beast exited with {status} on SIGTERM");
    // Containers keep running while beast is away.
    assert!(
        env.containers().iter().all(|(_, _, s)| s == "running"),
        "{:?}",
        env.containers()
    );

    let log_before = env.log().len();
    env.start();
    env.wait_for("/readyz", Duration::from_secs(30), |env| {
        env.get_status("/readyz")
            .is_some_and(|(code, _)| code == 200)
    });
    env.wait_running("a");
    assert_eq!(env.containers(), before, "a restart recreated containers");
    assert_eq!(env.host_ports("a"), ports);
    let after = env.log()[log_before..].to_string();
    assert!(
        !after.contains("applying"),
        "a restart applied operations:\n{after}"
    );
}

#[test]
fn a_lost_port_table_is_rebuilt_from_running_containers() {
    let mut env = Env::new("adopt-ports");
    env.write("a.yaml", &echo("a", ""));
    env.start();
    env.wait_running("a");
    let before = env.containers();
    env.stop();
    std::fs::remove_file(env.state.join("ports.json")).unwrap();
    env.start();
    env.wait_running("a");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.containers(), before);
}

#[test]
fn containers_of_other_instances_and_unlabelled_ones_are_never_touched() {
    let mut env = Env::new("foreign");
    let other = format!("{}-other", env.instance);
    // Same challenge name, same container-name pattern, other instance.
    let foreign = format!("{other}_a_1");
    let unlabelled = format!("{}-unlabelled", env.instance);
    env.extra_cleanup.push(foreign.clone());
    env.extra_cleanup.push(unlabelled.clone());
    assert!(docker_ok(&[
        "create",
        "--name",
        &foreign,
        "--label",
        &format!("beast.instance={other}"),
        "--label",
        "beast.challenge=a",
        "--label",
        "beast.replica=1",
        "--label",
        "beast.spec-hash=x",
        BUSYBOX,
        "sleep",
        "600",
    ]));
    assert!(docker_ok(&[
        "run",
        "-d",
        "--name",
        &unlabelled,
        BUSYBOX,
        "sleep",
        "600"
    ]));

    env.write("a.yaml", &echo("a", ""));
    env.start();
    env.wait_running("a");
    std::thread::sleep(Duration::from_secs(5)); // a few resyncs
                                                // The foreign one is still there, still only created (never started), still unlabelled.
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Status}}", &foreign]),
        "created"
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Status}}", &unlabelled]),
        "running"
    );
    env.remove("a.yaml");
    env.wait_for("a to be pruned", Duration::from_secs(20), |env| {
        env.containers().is_empty()
    });
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Status}}", &foreign]),
        "created"
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Status}}", &unlabelled]),
        "running"
    );
}

#[test]
fn orphans_of_this_instance_are_removed() {
    let mut env = Env::new("orphan");
    let orphan = format!("{}_ghost_1", env.instance);
    assert!(docker_ok(&[
        "run",
        "-d",
        "--name",
        &orphan,
        "--label",
        &format!("beast.instance={}", env.instance),
        "--label",
        "beast.challenge=ghost",
        "--label",
        "beast.replica=1",
        BUSYBOX,
        "sleep",
        "600",
    ]));
    env.write("a.yaml", &echo("a", ""));
    env.start();
    env.wait_running("a");
    env.wait_for("the orphan to be removed", Duration::from_secs(20), |env| {
        env.container_id(&orphan).is_none()
    });
}
