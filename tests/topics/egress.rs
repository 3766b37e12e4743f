//! Egress control on the real engine and the host's real iptables: a challenge network with
//! egress off opens no new connection out (to a listener in a test namespace, nor to the host),
//! while its containers still talk to each other and players still reach its published ports.
//! Only this test's network, containers and instance-commented rules are touched.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use beast::egress::Egress;

use crate::common::netns::{self, Netns};
use crate::common::*;

/// The namespace listener's port (the namespace is ours alone).
const OUTSIDE_PORT: u16 = 8000;

/// A docker network, its containers and the iptables rules of the test's instance ids; all
/// removed on Drop.
struct Fixture {
    network: String,
    subnet: String,
    gateway: Ipv4Addr,
    containers: Vec<String>,
    instances: Vec<String>,
}

impl Fixture {
    fn new() -> Fixture {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        for _ in 0..32 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let k = (pid.wrapping_mul(7) + n * 13) % 250;
            let network = format!("beast-egress-{pid}-{n}");
            let subnet = format!("10.214.{k}.0/28");
            let created = docker_ok(&[
                "network",
                "create",
                "--label",
                "beast.test=egress",
                "--subnet",
                &subnet,
                &network,
            ]);
            if created {
                return Fixture {
                    network,
                    subnet,
                    gateway: Ipv4Addr::new(10, 214, k as u8, 1),
                    containers: Vec::new(),
                    instances: Vec::new(),
                };
            }
        }
        panic!("could not create a test network in 10.214.X.0/28 (all taken?)");
    }

    /// Starts a busybox container on the network; `args` go before the image, `cmd` after it.
    fn run(&mut self, suffix: &str, args: &[&str], cmd: &[&str]) -> String {
        let name = format!("{}-{suffix}", self.network);
        self.containers.push(name.clone());
        let mut all = vec!["run", "-d", "--name", &name, "--network", &self.network];
        all.extend_from_slice(args);
        all.push(BUSYBOX);
        all.extend_from_slice(cmd);
        assert!(docker_ok(&all), "docker run {name} failed");
        name
    }

    async fn egress(&mut self, instance: &str) -> Egress {
        self.instances.push(instance.to_string());
        let egress = Egress::detect(instance, Path::new("iptables")).await;
        egress.available().expect("egress control on this machine");
        egress
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for instance in &self.instances {
            purge_rules(instance);
        }
        for name in &self.containers {
            let _ = docker_ok(&["rm", "-f", name]);
        }
        let _ = docker_ok(&["network", "rm", &self.network]);
    }
}

/// Deletes the rules commented `beast:{instance}:...`, without beast's code (so a bug there
/// cannot leave rules behind).
fn purge_rules(instance: &str) {
    let mark = format!("beast:{instance}:");
    for chain in ["DOCKER-USER", "FORWARD", "INPUT"] {
        let out = Command::new("iptables")
            .args(["-w", "-S", chain])
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let tokens: Vec<&str> = line
                .split_whitespace()
                .map(|t| t.trim_matches('"'))
                .collect();
            if tokens.first() == Some(&"-A") && tokens.iter().any(|t| t.starts_with(&mark)) {
                let _ = Command::new("iptables")
                    .args(["-w", "-D"])
                    .args(&tokens[1..])
                    .output();
            }
        }
    }
}

/// What `nc` in `container` reads from `host:port` (None when it cannot connect), and how long
/// it took.
fn reach(container: &str, host: &str, port: u16) -> (Option<String>, Duration) {
    let started = Instant::now();
    let out = Command::new("docker")
        .args(["exec", container, "nc", "-w", "5", host, &port.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let got = (out.status.success() && !text.is_empty()).then_some(text);
    (got, started.elapsed())
}

/// Refused, and fast: REJECT answers at once where a DROP would wait out nc's 5 s.
fn assert_refused(container: &str, host: &str, port: u16) {
    let (got, took) = reach(container, host, port);
    assert_eq!(got, None, "{container} still reaches {host}:{port}");
    assert!(took < Duration::from_secs(4), "refusal took {took:?}");
}

fn read_from(addr: &str) -> Option<String> {
    let mut stream =
        TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text.trim().to_string())
}

fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A listener on the host (the bridge's gateway address) that greets with "host".
fn host_listener(gateway: Ipv4Addr) -> u16 {
    let listener = std::net::TcpListener::bind((gateway, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut stream, b"host\n");
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_off_refuses_new_outbound_connections_and_keeps_players_in() {
    images();
    let mut outside = Netns::new();
    outside.listen(OUTSIDE_PORT, "hello");
    let mut fx = Fixture::new();
    let far = outside.addr.to_string();
    let loopback_port = free_port("127.0.0.1");
    let player_port = free_port(&outside.host_addr.to_string());
    let client = fx.run("client", &[], &["sleep", "600"]);
    let server = fx.run(
        "server",
        &[
            "-p",
            &format!("127.0.0.1:{loopback_port}:8080"),
            "-p",
            &format!("{}:{player_port}:8080", outside.host_addr),
        ],
        &["nc", "-ll", "-p", "8080", "-e", "echo", "same"],
    );
    let host_port = host_listener(fx.gateway);
    let gateway = fx.gateway.to_string();

    // Without rules everything is reachable: the test means something.
    assert_eq!(
        reach(&client, &far, OUTSIDE_PORT).0.as_deref(),
        Some("hello")
    );
    assert_eq!(
        reach(&client, &gateway, host_port).0.as_deref(),
        Some("host")
    );

    let instance = format!("egress-{}", std::process::id());
    let egress = fx.egress(&instance).await;
    egress.block("web", &fx.subnet).await.unwrap();
    let rules = egress.rules().await.unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules["web"].len(), 3, "{rules:?}");
    egress.block("web", &fx.subnet).await.unwrap();
    assert_eq!(
        egress.rules().await.unwrap(),
        rules,
        "block is not idempotent"
    );

    // Out: refused, to the outside and to the host itself.
    assert_refused(&client, &far, OUTSIDE_PORT);
    assert_refused(&client, &gateway, host_port);
    // Inside the challenge's network: open.
    assert_eq!(reach(&client, &server, 8080).0.as_deref(), Some("same"));
    // Players: through the loopback (docker-proxy) and from the "outside" (DNAT + FORWARD).
    let local = format!("127.0.0.1:{loopback_port}");
    assert_eq!(read_from(&local).as_deref(), Some("same"));
    let player = outside.exec(&[
        netns::HOST_BUSYBOX,
        "nc",
        "-w",
        "5",
        &outside.host_addr.to_string(),
        &player_port.to_string(),
    ]);
    assert_eq!(String::from_utf8_lossy(&player.stdout).trim(), "same");

    // Egress turned on: reachable again, no rules left.
    egress.allow("web").await.unwrap();
    assert!(egress.rules().await.unwrap().is_empty());
    assert_eq!(
        reach(&client, &far, OUTSIDE_PORT).0.as_deref(),
        Some("hello")
    );
    egress.allow("web").await.unwrap();

    // Another instance's rules survive this one's resync.
    let other = fx.egress(&format!("{instance}-other")).await;
    other.block("web", "198.51.100.0/28").await.unwrap();
    let wanted = BTreeMap::from([("web".to_string(), fx.subnet.clone())]);
    assert_eq!(egress.sync_changes(&wanted).await.unwrap(), 3);
    assert_eq!(
        egress.sync_changes(&wanted).await.unwrap(),
        0,
        "resync churns"
    );
    assert_refused(&client, &far, OUTSIDE_PORT);

    // A new subnet replaces the old rules.
    egress.block("web", "203.0.113.0/28").await.unwrap();
    let rules = egress.rules().await.unwrap();
    assert!(
        rules["web"].iter().all(|r| r.contains("203.0.113.0/28")),
        "{rules:?}"
    );
    assert_eq!(
        reach(&client, &far, OUTSIDE_PORT).0.as_deref(),
        Some("hello")
    );

    egress.sync(&BTreeMap::new()).await.unwrap();
    assert!(egress.rules().await.unwrap().is_empty());
    assert_eq!(other.rules().await.unwrap()["web"].len(), 3);
    other.allow("web").await.unwrap();
    assert!(other.rules().await.unwrap().is_empty());
}

#[tokio::test]
async fn egress_without_iptables_says_why() {
    let egress = Egress::detect("egress-missing", Path::new("/nonexistent/iptables")).await;
    let reason = egress.available().unwrap_err();
    assert!(
        reason.contains("not found at /nonexistent/iptables"),
        "{reason}"
    );
}
