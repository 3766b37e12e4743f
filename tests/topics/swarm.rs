//! `run --runtime swarm` on a single-node swarm of the local engine (SPEC §9): services and
//! their labels, node in the status, published ports, services reachable by name, healing what
//! Swarm does not, crash reporting, drift, scale, adoption, orphans and foreign services.

use std::time::Duration;

use crate::common::swarm::{banner, eventually, RemoveService, SwarmGuard};
use crate::common::{docker, docker_ok, echo, echo_roundtrip, manifest, Env};

/// An echo challenge with a `db` service (a TCP listener with a healthcheck).
fn with_db(name: &str) -> String {
    echo(
        name,
        "  healthcheck:\n    tcp: {port: 1337}\n    interval: 1s\n  services:\n    - name: db\n      image: beast-examples/busybox:1\n      command: [nc, -ll, -p, \"3306\", -e, echo, db-says-hi]\n      healthcheck:\n        tcp: {port: 3306}\n        interval: 1s\n",
    )
}

#[test]
fn a_challenge_runs_as_services_with_nodes_ports_and_names() {
    let _swarm = SwarmGuard::join();
    let mut env = Env::new("swarm-run");
    env.write("web.yaml", &with_db("web"));
    env.start_swarm(&[]);
    let status = env.wait_running("web");

    // One service for the main containers, one for the db, both labelled as on one engine.
    let main = env.service("web").expect("service {instance}_web");
    let labels = &main["Spec"]["Labels"];
    assert_eq!(labels["beast.instance"], env.instance.as_str());
    assert_eq!(labels["beast.challenge"], "web");
    assert!(labels["beast.spec-hash"].as_str().is_some());
    assert_eq!(main["Spec"]["Mode"]["Replicated"]["Replicas"], 1);
    let db = env.service("web_db").expect("service {instance}_web_db");
    assert_eq!(db["Spec"]["Labels"]["beast.service"], "db");

    // The status names each replica's node; the port answers.
    let node = docker(&["info", "--format", "{{.Name}}"]);
    let replicas = env.replicas("web");
    assert_eq!(replicas.len(), 2, "{status}");
    assert!(
        replicas
            .iter()
            .all(|(_, state, n)| state == "running" && *n == node),
        "{replicas:?}"
    );
    let port = env.host_ports("web")[0];
    assert!(echo_roundtrip(port), "port {port} does not echo");

    // The main container reaches its service by name on the challenge's overlay.
    let filter = format!("label=com.docker.swarm.service.name={}_web", env.instance);
    let container = docker(&["ps", "-q", "--filter", &filter]);
    let said = docker(&["exec", &container, "sh", "-c", "nc -w 2 db 3306 </dev/null"]);
    assert_eq!(said, "db-says-hi");
    let net = format!("{}_web", env.instance);
    assert_eq!(
        docker(&[
            "network",
            "inspect",
            &net,
            "--format",
            "{{.Driver}} {{.Attachable}}"
        ]),
        "overlay false"
    );

    // Egress is reported unenforced, and no iptables rule of this instance exists (on this host
    // it would hit whatever bridge holds the same subnet).
    let egress = env.condition("web", "EgressPolicy").unwrap();
    assert_eq!(egress["reason"], "Unenforced", "{egress}");
    std::thread::sleep(Duration::from_secs(3));
    let rules = std::process::Command::new("iptables").arg("-S").output();
    if let Ok(rules) = rules {
        let mine = format!("beast:{}:", env.instance);
        assert!(
            !String::from_utf8_lossy(&rules.stdout).contains(&mine),
            "egress rules on swarm"
        );
    }
}

#[test]
fn swarm_heals_what_it_does_not_itself_and_reports_crashes() {
    let _swarm = SwarmGuard::join();
    let mut env = Env::new("swarm-heal");
    env.write("web.yaml", &echo("web", ""));
    env.write(
        "crash.yaml",
        &manifest(
            "crash",
            "  command: [sh, -c, \"echo about to fail; sleep 1; exit 3\"]\n",
        ),
    );
    env.start_swarm(&[]);
    env.wait_running("web");

    // A service removed by hand comes back.
    let name = format!("{}_web", env.instance);
    assert!(docker_ok(&["service", "rm", &name]));
    env.wait_secs("the removed service to be recreated", 30, |env| {
        env.service("web").is_some() && env.event_reasons("web").iter().any(|r| r == "Recreated")
    });
    env.wait_secs("its replica to publish its port again", 30, |env| {
        !env.host_ports("web").is_empty()
    });
    let port = env.host_ports("web")[0];
    assert!(echo_roundtrip(port));

    // Swarm restarts the crashing task; beast counts it and keeps how it ended.
    env.wait_secs("crashes to be reported", 60, |env| {
        env.status("crash").is_some_and(|s| {
            s["status"]["restarts"].as_u64().unwrap_or(0) >= 1
                && s["status"]["lastTermination"]["exitCode"] == 3
        })
    });
    env.wait_secs("the log tail and the task's error", 30, |env| {
        env.status("crash").is_some_and(|s| {
            let last = &s["status"]["lastTermination"];
            last["logTail"].to_string().contains("about to fail")
                && last["message"].as_str().is_some_and(|m| m.contains("exit"))
        })
    });
}

#[test]
fn drift_scale_and_restart_update_only_what_changed() {
    let _swarm = SwarmGuard::join();
    let mut env = Env::new("swarm-drift");
    // No published port: three replicas can share the one node.
    env.write(
        "many.yaml",
        &manifest("many", "  command: [sleep, \"1000\"]\n  replicas: 3\n"),
    );
    env.write("web.yaml", &echo("web", ""));
    env.start_swarm(&[]);
    env.wait_running("many");
    env.wait_running("web");
    assert_eq!(env.replicas("many").len(), 3);

    // beast restarted with nothing changed: no service updated.
    let before = env.service_versions();
    env.stop();
    env.start_swarm(&[]);
    env.wait_running("many");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.service_versions(), before, "a restart updated services");

    // A changed env updates that service only; a scale changes its replicas.
    let hash =
        |env: &Env| env.service("many").unwrap()["Spec"]["Labels"]["beast.spec-hash"].clone();
    let old = hash(&env);
    env.write(
        "many.yaml",
        &manifest(
            "many",
            "  command: [sleep, \"1000\"]\n  replicas: 2\n  env: {MODE: two}\n",
        ),
    );
    env.wait_secs("the service to be updated", 60, |env| {
        let s = env.service("many").unwrap();
        s["Spec"]["Mode"]["Replicated"]["Replicas"] == 2
            && s["Spec"]["Labels"]["beast.spec-hash"] != old
    });
    let web = format!("{}_web", env.instance);
    let web_version = before.iter().find(|(n, _)| *n == web).unwrap().1;
    let now = env.service_versions();
    assert_eq!(now.iter().find(|(n, _)| *n == web).unwrap().1, web_version);
    env.wait_secs("two replicas of the new spec", 60, |env| {
        env.phase("many").as_deref() == Some("Running") && env.replicas("many").len() == 2
    });
}

#[test]
fn orphans_go_and_other_instances_services_stay() {
    let _swarm = SwarmGuard::join();
    let mut env = Env::new("swarm-own");
    let foreign = format!("{}-foreign", env.instance);
    let foreign_name = format!("{foreign}_web");
    let _foreign = RemoveService(foreign_name.clone());
    assert!(docker_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        &foreign_name,
        "--label",
        &format!("beast.instance={foreign}"),
        "--label",
        "beast.challenge=web",
        "--container-label",
        &format!("beast.instance={foreign}"),
        "beast-examples/busybox:1",
        "sleep",
        "1000",
    ]));
    env.write("web.yaml", &echo("web", ""));
    env.start_swarm(&[]);
    env.wait_running("web");

    // A service of this instance that no manifest wants is removed.
    let stray = format!("{}_stray", env.instance);
    assert!(docker_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        &stray,
        "--label",
        &format!("beast.instance={}", env.instance),
        "--label",
        "beast.challenge=stray",
        "--container-label",
        &format!("beast.instance={}", env.instance),
        "--container-label",
        "beast.challenge=stray",
        "beast-examples/busybox:1",
        "sleep",
        "1000",
    ]));
    env.wait_secs("the orphan service to go", 30, |_| {
        !docker_ok(&["service", "inspect", &stray])
    });

    // A deleted challenge leaves no service and, once its tasks are gone, no network.
    env.remove("web.yaml");
    env.wait_secs("the service to go", 30, |env| env.service("web").is_none());
    let net = format!("{}_web", env.instance);
    assert!(
        eventually(Duration::from_secs(60), || !docker_ok(&[
            "network", "inspect", &net
        ])),
        "network {net} stayed"
    );
    assert!(
        docker_ok(&["service", "inspect", &foreign_name]),
        "a foreign service was touched"
    );
}

#[test]
fn a_challenge_built_from_source_runs_on_a_single_node_swarm() {
    let _swarm = SwarmGuard::join();
    let mut env = Env::new("swarm-build");
    env.write(
        "built/Dockerfile",
        "FROM beast-examples/busybox:1\nRUN echo built-here > /motd\nCMD [\"nc\", \"-ll\", \"-p\", \"1337\", \"-e\", \"cat\", \"/motd\"]\n",
    );
    env.write(
        "built/challenge.yaml",
        "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: built\nspec:\n  build: {context: .}\n  ports:\n    - port: 1337\n",
    );
    env.start_swarm(&[]);
    env.wait_secs("the built challenge to run", 120, |env| {
        env.phase("built").as_deref() == Some("Running")
    });
    let port = env.host_ports("built")[0];
    let got = eventually(Duration::from_secs(15), || {
        banner(port).contains("built-here")
    });
    assert!(got, "the built image does not answer on {port}");
}

#[test]
fn a_teams_instance_runs_as_its_own_services_on_its_own_overlay() {
    let _swarm = SwarmGuard::join();
    let mut env = Env::new("swarm-team");
    env.write(
        "pwn.yaml",
        &manifest(
            "pwn",
            "  command: [sh, -c, \"nc -ll -p 1337 -e sh -c 'echo $FLAG'\"]\n  ports: [{port: 1337}]\n  instances:\n    perTeam: true\n    flag: {template: \"flag{pwn_{random}}\", env: FLAG}\n",
        ),
    );
    env.start_swarm(&[]);
    env.wait_running("pwn");
    let token = env.player_token("red");
    let (code, created, _) = env
        .call_as(&token, "POST", "/api/v1/instances/pwn", "")
        .unwrap();
    assert!(code == 201 || code == 202, "{code} {created}");
    let mut port = 0;
    env.wait_secs("the team's instance to serve its flag", 60, |env| {
        let Some((200, view, _)) = env.call_as(&token, "GET", "/api/v1/instances/pwn", "") else {
            return false;
        };
        port = view["connection"][0]["hostPort"].as_u64().unwrap_or(0) as u16;
        view["phase"] == "Running" && port > 0 && banner(port).starts_with("flag{pwn_")
    });
    // Swarm names are DNS name components: the key's `.` becomes `_` on the engine.
    let services = docker(&[
        "service",
        "ls",
        "--filter",
        &format!("label=beast.instance={}", env.instance),
        "--format",
        "{{.Name}}",
    ]);
    assert!(
        services.starts_with(&format!("{}_pwn_", env.instance)),
        "{services}"
    );
    let (code, _, _) = env
        .call_as(&token, "DELETE", "/api/v1/instances/pwn", "")
        .unwrap();
    assert!(code == 202 || code == 204, "{code}");
    env.wait_secs("the instance's service to go", 30, |env| {
        docker(&[
            "service",
            "ls",
            "-q",
            "--filter",
            &format!("label=beast.instance={}", env.instance),
        ])
        .is_empty()
    });
}

#[test]
fn what_swarm_cannot_run_is_refused_with_a_clear_reason() {
    let _swarm = SwarmGuard::join();
    let mut env = Env::new("swarm-refuse");
    env.write(
        "priv.yaml",
        &manifest(
            "priv",
            "  command: [sleep, \"1000\"]\n  security: {privileged: true}\n",
        ),
    );
    env.write("web.yaml", &echo("web", ""));
    env.start_swarm(&["--allow-privileged"]);
    env.wait_running("web");
    env.wait_secs("privileged refused on swarm", 30, |env| {
        env.condition("priv", "Ready").is_some_and(|c| {
            c["status"] == "False"
                && c["reason"] == "NotSupportedOnSwarm"
                && c["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("privileged"))
        })
    });
    assert!(
        env.service("priv").is_none(),
        "a service was created for it"
    );
}
