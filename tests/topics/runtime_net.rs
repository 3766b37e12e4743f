//! The runtime seam's networks and security settings on the real engine, through
//! `DockerRuntime` directly: a labelled bridge with its own subnet, containers on it only that
//! reach each other by alias, a read-only root with a tmpfs, a user, ulimits, an unknown OCI
//! runtime reported in the engine's words. Everything it makes is removed by name, pass or fail.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use beast::runtime::docker::DockerRuntime;
use beast::runtime::{
    ContainerSpec, NetworkSpec, Runtime, RuntimeError, Ulimit, LABEL_CHALLENGE, LABEL_INSTANCE,
};

use crate::common::*;

/// Removes this test's containers, then its network, by their unique names.
struct Cleanup {
    containers: Vec<String>,
    network: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.containers {
            docker(&["rm", "-f", "-v", name]);
        }
        docker(&["network", "rm", &self.network]);
    }
}

fn labels(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_INSTANCE.to_string(), instance.to_string()),
        (LABEL_CHALLENGE.to_string(), "net".to_string()),
    ])
}

/// The `n`th /28 of 10.213.240.0/20 (this test's block; it wraps within the block).
fn block(n: u32) -> (String, String) {
    let base = u32::from(Ipv4Addr::new(10, 213, 240, 0)) + (n % 256) * 16;
    (
        format!("{}/28", Ipv4Addr::from(base)),
        Ipv4Addr::from(base + 1).to_string(),
    )
}

fn container(name: &str, network: &str, instance: &str, alias: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.to_string(),
        image: BUSYBOX.to_string(),
        memory: 64 << 20,
        pids: 64,
        no_new_privileges: true,
        labels: labels(instance),
        network: Some(network.to_string()),
        aliases: vec![alias.to_string()],
        ..ContainerSpec::default()
    }
}

async fn sh(runtime: &DockerRuntime, id: &str, script: &str) -> i64 {
    let command = ["sh".to_string(), "-c".to_string(), script.to_string()];
    runtime.exec(id, &command).await.unwrap()
}

#[tokio::test]
async fn containers_on_a_network_reach_each_other_by_alias_and_run_hardened() {
    images();
    let runtime = DockerRuntime::connect().await.unwrap();
    let pid = std::process::id();
    let instance = format!("t-rtnet-{pid}");
    let network = format!("{instance}_net");
    let server = format!("{instance}_srv");
    let client = format!("{instance}_cli");
    let odd = format!("{instance}_odd");
    let _cleanup = Cleanup {
        containers: vec![server.clone(), client.clone(), odd.clone()],
        network: network.clone(),
    };

    // A free /28, stepping past subnets other networks hold.
    let mut attempt = pid % 200;
    let (net_id, subnet) = loop {
        let (subnet, gateway) = block(attempt);
        let spec = NetworkSpec {
            name: network.clone(),
            labels: labels(&instance),
            subnet: subnet.clone(),
            gateway,
        };
        match runtime.create_network(&spec).await {
            Ok(id) => break (id, subnet),
            Err(RuntimeError::Conflict(m)) if m.contains("overlap") && attempt < pid % 200 + 40 => {
                attempt += 1;
            }
            Err(err) => panic!("creating {network} on {subnet}: {err}"),
        }
    };

    // Seen by its instance and among the engine's subnets; another instance sees nothing.
    let ours = runtime.networks(&instance).await.unwrap();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0].id, net_id);
    assert_eq!(ours[0].name, network);
    assert_eq!(ours[0].subnet.as_deref(), Some(subnet.as_str()));
    assert!(runtime
        .networks(&format!("{instance}-other"))
        .await
        .unwrap()
        .is_empty());
    assert!(runtime.subnets_in_use().await.unwrap().contains(&subnet));

    // The same subnet again overlaps; the same name again is taken (and leaves no twin).
    let (next, next_gateway) = block(attempt + 1);
    let overlap = runtime
        .create_network(&NetworkSpec {
            name: format!("{network}2"),
            labels: labels(&instance),
            subnet: subnet.clone(),
            gateway: block(attempt).1,
        })
        .await;
    assert!(
        matches!(&overlap, Err(RuntimeError::Conflict(m)) if m.contains("overlap")),
        "{overlap:?}"
    );
    let twin = runtime
        .create_network(&NetworkSpec {
            name: network.clone(),
            labels: labels(&instance),
            subnet: next,
            gateway: next_gateway,
        })
        .await;
    assert!(matches!(twin, Err(RuntimeError::Conflict(_))), "{twin:?}");
    assert_eq!(runtime.networks(&instance).await.unwrap().len(), 1);

    // A hardened server and a plain client on the network only.
    let mut srv = container(&server, &network, &instance, "web");
    srv.command = Some(vec![
        "sh".into(),
        "-c".into(),
        "mkdir -p /tmp/www && echo hello-alias > /tmp/www/index.html \
         && exec httpd -f -p 8080 -h /tmp/www"
            .into(),
    ]);
    srv.read_only = true;
    srv.tmpfs = vec!["/tmp".into()];
    srv.user = Some("1000:1000".into());
    srv.ulimits = vec![Ulimit {
        name: "nofile".into(),
        soft: 256,
        hard: 256,
    }];
    let srv_id = runtime.create(&srv).await.unwrap();
    let mut cli = container(&client, &network, &instance, "client");
    cli.command = Some(vec!["sleep".into(), "300".into()]);
    let cli_id = runtime.create(&cli).await.unwrap();
    runtime.start(&srv_id).await.unwrap();
    runtime.start(&cli_id).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let code = sh(
            &runtime,
            &cli_id,
            // busybox's `wget -q` segfaults here; nc speaks HTTP well enough.
            r#"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 web 8080 | grep -q hello-alias"#,
        )
        .await;
        if code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client never reached the server by its alias (last exit {code}); server logs: {:?}",
            runtime.logs(&srv_id, 20).await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    assert_ne!(
        sh(&runtime, &srv_id, "touch /x").await,
        0,
        "the root is writable"
    );
    assert_eq!(
        sh(&runtime, &srv_id, "touch /tmp/x").await,
        0,
        "/tmp is not"
    );
    assert_eq!(
        sh(&runtime, &srv_id, r#"[ "$(id -u):$(id -g)" = 1000:1000 ]"#).await,
        0
    );
    assert_eq!(
        sh(&runtime, &srv_id, r#"[ "$(ulimit -n)" = 256 ]"#).await,
        0
    );

    // On this network only, with an address in its subnet; inspect reads the settings back.
    let listed = runtime.list(&instance, None).await.unwrap();
    let srv_seen = listed.iter().find(|o| o.id == srv_id).unwrap();
    let ip: Ipv4Addr = srv_seen.ip.as_deref().unwrap().parse().unwrap();
    let net: ipnet::Ipv4Net = subnet.parse().unwrap();
    assert!(net.contains(&ip), "{ip} outside {subnet}");
    let back = runtime.inspect(&srv_id).await.unwrap();
    assert_eq!(back.network.as_deref(), Some(network.as_str()));
    assert!(
        back.aliases.contains(&"web".to_string()),
        "{:?}",
        back.aliases
    );
    assert!(back.read_only);
    assert_eq!(back.tmpfs, ["/tmp"]);
    assert_eq!(back.user.as_deref(), Some("1000:1000"));
    assert_eq!(back.ulimits, srv.ulimits);
    assert_eq!(back.runtime, None);
    assert!(!back.privileged);
    let attached = docker(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        &srv_id,
    ]);
    assert_eq!(attached, network, "not on its network only");

    // An unknown OCI runtime: the engine's words reach the caller.
    assert!(runtime
        .runtimes()
        .await
        .unwrap()
        .contains(&"runc".to_string()));
    let mut bad = container(&odd, &network, &instance, "odd");
    bad.runtime = Some("beast-no-such-runtime".into());
    let err = match runtime.create(&bad).await {
        Err(err) => err,
        // Engines that check only at start.
        Ok(id) => runtime.start(&id).await.unwrap_err(),
    };
    let text = err.to_string();
    assert!(
        text.contains("beast-no-such-runtime") && text.to_lowercase().contains("runtime"),
        "{text}"
    );

    // A network with containers attached is not removed; once they are gone it is, and again.
    let busy = runtime.remove_network(&net_id).await;
    assert!(matches!(busy, Err(RuntimeError::Conflict(_))), "{busy:?}");
    runtime.remove(&srv_id).await.unwrap();
    runtime.remove(&cli_id).await.unwrap();
    runtime.remove_network(&net_id).await.unwrap();
    runtime.remove_network(&net_id).await.unwrap();
    assert!(runtime.networks(&instance).await.unwrap().is_empty());
}
