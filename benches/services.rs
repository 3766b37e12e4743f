//! Converging N challenges that each have one service, on the real engine, beast next to
//! docker-compose (issue 9's benchmark line):
//!
//! - every challenge is a main busybox container answering on a published port, plus one service
//!   (busybox `nc` answering on 6379) with a TCP health check, on the challenge's own network;
//!   the main starts only once its service is healthy;
//! - compose: N compose projects (each its own default network), main `depends_on` the service
//!   with `condition: service_healthy`; all N `docker-compose up -d` started at once;
//! - beast: `beast run` on a directory of N manifests with `spec.services` (SPEC §7);
//! - both timed from the start until every main answers on its host port (a byte read back, so
//!   the engine's port proxy accepting a connection is not mistaken for the container).
//!
//! Both sides use the same images, commands, health-check interval (1 s) and hardened settings;
//! beast's challenges ask for `egress: true`, as compose's containers have.
//!
//!     cargo bench --bench services                        # N = 20, 3 rounds (median)
//!     BENCH_N=5 BENCH_ROUNDS=1 cargo bench --bench services
//!     BENCH_SIDES=compose cargo bench --bench services    # only one side (compose|beast)
//!
//! Every run uses its own project names / instance id and removes what it created, also when a
//! side fails: compose projects with `down`, beast's containers and networks by its instance label.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "beast-examples/busybox:1";
const MAIN_CMD: [&str; 7] = ["nc", "-ll", "-p", "1337", "-e", "echo", "hi"];
const SERVICE_CMD: [&str; 7] = ["nc", "-ll", "-p", "6379", "-e", "echo", "ok"];
/// Busybox's `nc` has no `-z`; connecting and reading the service's answer exits 0 when it
/// listens, 1 when refused.
const COMPOSE_CHECK: [&str; 6] = ["CMD", "nc", "-w", "1", "127.0.0.1", "6379"];
const DEADLINE: Duration = Duration::from_secs(180);

fn main() {
    common::run(run());
}

async fn run() -> Result<(), String> {
    common::build_images()?;
    let n: usize = common::env_or("BENCH_N", 20);
    let rounds: usize = common::env_or("BENCH_ROUNDS", 3);
    let sides = std::env::var("BENCH_SIDES").unwrap_or_else(|_| "compose,beast".to_string());
    let (do_compose, do_beast) = (sides.contains("compose"), sides.contains("beast"));
    println!("converge {n} challenges with one service each, until every main answers (median of {rounds} rounds)");
    let (mut compose, mut beast) = (Vec::new(), Vec::new());
    let mut beast_error = None;
    for round in 0..rounds {
        if do_compose {
            compose.push(compose_run(n, round).await?);
        }
        if do_beast && beast_error.is_none() {
            match beast_run(n, round).await {
                Ok(took) => beast.push(took),
                Err(err) => beast_error = Some(err),
            }
        }
    }
    let compose = common::median(compose);
    let beast = common::median(beast);
    if let Some(c) = compose {
        println!(
            "compose: {:>7.0} ms ({:.0} ms per challenge)",
            common::ms(c),
            common::ms(c) / n as f64
        );
    }
    if let Some(b) = beast {
        println!(
            "beast:   {:>7.0} ms ({:.0} ms per challenge)",
            common::ms(b),
            common::ms(b) / n as f64
        );
    }
    if let (Some(c), Some(b)) = (compose, beast) {
        println!("beast/compose: {:.2}x", b.as_secs_f64() / c.as_secs_f64());
    }
    match beast_error {
        Some(err) => Err(format!("beast side: {err}")),
        None => Ok(()),
    }
}

/// One compose project per challenge, all `up -d` at once; every project is taken down when
/// this returns, whatever happened.
async fn compose_run(n: usize, round: usize) -> Result<Duration, String> {
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ports = common::free_ports(n)?;
    let mut projects = ComposeProjects(Vec::new());
    for (i, port) in ports.iter().enumerate() {
        let dir = root.path().join(format!("c{i}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("docker-compose.yml"), compose_file(*port))
            .map_err(|e| e.to_string())?;
        let name = format!("beastsvc{}r{round}c{i}", std::process::id());
        projects.0.push((dir, name));
    }
    let t = Instant::now();
    let ups: Vec<_> = projects
        .0
        .iter()
        .map(|(dir, name)| compose(dir, name, &["up", "-d"]))
        .collect::<Result<_, _>>()?;
    let statuses =
        tokio::task::spawn_blocking(move || ups.into_iter().map(wait_child).collect::<Vec<bool>>());
    let took = tokio::time::timeout(DEADLINE, common::all_answer(&ports, t))
        .await
        .map_err(|_| format!("compose: not every main answered within {DEADLINE:?}"));
    let statuses = statuses.await.map_err(|e| e.to_string())?;
    if statuses.iter().any(|ok| !ok) {
        return Err("docker-compose up failed".into());
    }
    took
}

/// The compose projects of one round; `down` for each when dropped.
struct ComposeProjects(Vec<(PathBuf, String)>);

impl Drop for ComposeProjects {
    fn drop(&mut self) {
        let downs: Vec<_> = self
            .0
            .iter()
            .filter_map(|(dir, name)| compose(dir, name, &["down", "-t", "0"]).ok())
            .collect();
        for child in downs {
            wait_child(child);
        }
    }
}

fn compose(dir: &Path, project: &str, args: &[&str]) -> Result<Child, String> {
    Command::new("docker-compose")
        .current_dir(dir)
        .args(["-p", project])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("docker-compose: {e}"))
}

fn wait_child(mut child: Child) -> bool {
    child.wait().is_ok_and(|s| s.success())
}

fn compose_file(port: u16) -> String {
    let hardened = "    restart: unless-stopped\n    mem_limit: 256m\n    pids_limit: 256\n    cap_drop: [ALL]\n    security_opt: [\"no-new-privileges:true\"]\n";
    format!(
        "services:\n  cache:\n    image: {IMAGE}\n    command: {}\n    healthcheck:\n      test: {}\n      interval: 1s\n      timeout: 2s\n      retries: 30\n{hardened}  main:\n    image: {IMAGE}\n    command: {}\n    ports: [\"{port}:1337\"]\n    depends_on:\n      cache:\n        condition: service_healthy\n{hardened}",
        common::flow(&SERVICE_CMD),
        common::flow(&COMPOSE_CHECK),
        common::flow(&MAIN_CMD),
    )
}

/// `beast run` on N manifests with one service each, from spawning the process until every main
/// answers; beast then removes its challenges itself (manifests deleted), the guard removes
/// whatever is left by label.
async fn beast_run(n: usize, round: usize) -> Result<Duration, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let manifests = dir.path().join("m");
    std::fs::create_dir_all(&manifests).map_err(|e| e.to_string())?;
    let ports = common::free_ports(n)?;
    for (i, port) in ports.iter().enumerate() {
        std::fs::write(manifests.join(format!("s{i}.yaml")), manifest(i, *port))
            .map_err(|e| e.to_string())?;
    }
    // Fail fast (not after the deadline) when this beast does not accept the manifests.
    let check = Command::new(env!("CARGO_BIN_EXE_beast"))
        .arg("validate")
        .arg(&manifests)
        .output()
        .map_err(|e| e.to_string())?;
    if !check.status.success() {
        let out = String::from_utf8_lossy(&check.stdout);
        let err = String::from_utf8_lossy(&check.stderr);
        let first = out.lines().chain(err.lines()).next().unwrap_or("");
        return Err(format!("beast validate refuses the manifests: {first}"));
    }
    let instance = format!("bench-svc-{}-{round}", std::process::id());
    let listen = common::free_ports(1)?[0];
    let t = Instant::now();
    let _guard = common::BeastGuard::spawn(
        &manifests,
        &dir.path().join("state"),
        &instance,
        listen,
        &[],
    )?;
    let took = tokio::time::timeout(DEADLINE, common::all_answer(&ports, t))
        .await
        .map_err(|_| format!("beast: not every main answered within {DEADLINE:?}"))?;
    // Let beast remove its own challenges (containers, networks, anything else it made).
    for i in 0..n {
        let _ = std::fs::remove_file(manifests.join(format!("s{i}.yaml")));
    }
    let gone = async {
        while !containers_of(&instance).is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(60), gone).await;
    Ok(took)
}

fn manifest(i: usize, port: u16) -> String {
    format!(
        "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: s{i}\nspec:\n  image: {IMAGE}\n  command: {}\n  ports:\n    - port: 1337\n      hostPort: {port}\n  network:\n    egress: true\n  services:\n    - name: cache\n      image: {IMAGE}\n      command: {}\n      healthcheck:\n        tcp: {{port: 6379}}\n        interval: 1s\n        timeout: 2s\n        retries: 30\n",
        common::flow(&MAIN_CMD),
        common::flow(&SERVICE_CMD),
    )
}

fn containers_of(instance: &str) -> Vec<String> {
    let filter = format!("label=beast.instance={instance}");
    Command::new("docker")
        .args(["ps", "-aq", "--filter", &filter])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}
