//! Converging N challenges on a Docker Swarm, beast next to `docker stack deploy` of the same N
//! services (issue 11's benchmark line), in the same run on the same swarm:
//!
//! - each challenge: one busybox replica answering on a published port (host mode: this
//!   kernel has no IPVS for the routing mesh), on its own overlay network, with the same limits;
//! - stack: one compose v3 file of N services, each on its own overlay, `docker stack deploy`;
//! - beast: `beast run --runtime swarm` on a directory of N manifests;
//! - both timed from the start until every service answers on its port (its task running and
//!   serving: a byte read back).
//!
//! Run it:
//!
//!     cargo bench --bench swarm                       # N = 20, 3 rounds (median)
//!     BENCH_N=5 BENCH_ROUNDS=1 cargo bench --bench swarm
//!
//! The local engine is made a single-node swarm for the run when it is in none (and left after);
//! a swarm it is already part of is used as it is. Every round removes what it created (the
//! stack with `docker stack rm`, beast's services and networks by its instance label).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "beast-examples/busybox:1";
const CMD: [&str; 7] = ["nc", "-ll", "-p", "1337", "-e", "echo", "hi"];
const DEADLINE: Duration = Duration::from_secs(240);

fn main() {
    let joined = join_swarm();
    common::run(run());
    if joined {
        docker(&["swarm", "leave", "--force"]);
    }
}

/// Makes the engine a single-node swarm when it is in none; true when it did.
fn join_swarm() -> bool {
    let state = Command::new("docker")
        .args(["info", "--format", "{{.Swarm.LocalNodeState}}"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    state == "inactive" && docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"])
}

fn docker(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn run() -> Result<(), String> {
    common::build_images()?;
    let n = common::env_or("BENCH_N", 20);
    let rounds = common::env_or("BENCH_ROUNDS", 3);
    println!(
        "converge {n} challenges on swarm until every one answers (median of {rounds} rounds)"
    );
    let (mut stack, mut beast) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        stack.push(stack_run(n, round).await?);
        beast.push(beast_run(n, round).await?);
    }
    let (Some(s), Some(b)) = (common::median(stack), common::median(beast)) else {
        return Err("no rounds".into());
    };
    println!("stack deploy: {:>7.0} ms", common::ms(s));
    println!("beast:        {:>7.0} ms", common::ms(b));
    println!("beast/stack:  {:.2}x", b.as_secs_f64() / s.as_secs_f64());
    Ok(())
}

/// `docker stack deploy` of N services; the stack is removed when this returns.
async fn stack_run(n: usize, round: usize) -> Result<Duration, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ports = common::free_ports(n)?;
    let file = dir.path().join("stack.yml");
    std::fs::write(&file, stack_file(&ports)).map_err(|e| e.to_string())?;
    let name = format!("benchstack{}r{round}", std::process::id());
    let _stack = Stack(name.clone());
    let t = Instant::now();
    let deployed = Command::new("docker")
        .args(["stack", "deploy", "-c"])
        .arg(&file)
        .arg(&name)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    if !deployed.status.success() {
        return Err(format!(
            "docker stack deploy: {}",
            String::from_utf8_lossy(&deployed.stderr)
        ));
    }
    tokio::time::timeout(DEADLINE, common::all_answer(&ports, t))
        .await
        .map_err(|_| format!("stack: not every service answered within {DEADLINE:?}"))
}

/// Removes a stack, and waits for its networks to go, when dropped.
struct Stack(String);

impl Drop for Stack {
    fn drop(&mut self) {
        docker(&["stack", "rm", &self.0]);
        let filter = format!("label=com.docker.stack.namespace={}", self.0);
        for _ in 0..120 {
            let left = Command::new("docker")
                .args(["network", "ls", "-q", "--filter", &filter])
                .output()
                .map(|o| !o.stdout.is_empty())
                .unwrap_or(false);
            if !left {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn stack_file(ports: &[u16]) -> String {
    let mut services = String::from("version: \"3.8\"\nservices:\n");
    let mut networks = String::from("networks:\n");
    for (i, port) in ports.iter().enumerate() {
        services.push_str(&format!(
            "  s{i}:\n    image: {IMAGE}\n    command: {}\n    ports:\n      - {{target: 1337, published: {port}, protocol: tcp, mode: host}}\n    networks: [n{i}]\n    cap_drop: [ALL]\n    deploy:\n      replicas: 1\n      endpoint_mode: dnsrr\n      resources:\n        limits: {{memory: 256M}}\n",
            common::flow(&CMD)
        ));
        networks.push_str(&format!("  n{i}:\n    driver: overlay\n"));
    }
    services + &networks
}

/// `beast run --runtime swarm` on N manifests, from spawning the process until every one
/// answers; the guard removes the instance's services and networks.
async fn beast_run(n: usize, round: usize) -> Result<Duration, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let manifests = dir.path().join("m");
    std::fs::create_dir_all(&manifests).map_err(|e| e.to_string())?;
    let ports = common::free_ports(n)?;
    for (i, port) in ports.iter().enumerate() {
        let manifest = format!(
            "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: s{i}\nspec:\n  image: {IMAGE}\n  command: {}\n  ports:\n    - port: 1337\n      hostPort: {port}\n  network:\n    egress: true\n",
            common::flow(&CMD)
        );
        std::fs::write(manifests.join(format!("s{i}.yaml")), manifest)
            .map_err(|e| e.to_string())?;
    }
    let instance = format!("bench-swarm-{}-{round}", std::process::id());
    let listen = common::free_ports(1)?[0];
    let t = Instant::now();
    let _guard = common::BeastGuard::spawn(
        &manifests,
        &dir.path().join("state"),
        &instance,
        listen,
        &["--runtime", "swarm"],
    )?;
    tokio::time::timeout(DEADLINE, common::all_answer(&ports, t))
        .await
        .map_err(|_| format!("beast: not every challenge answered within {DEADLINE:?}"))
}
