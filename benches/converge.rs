//! Converging N challenges from empty, on the real engine, next to the engine's own floor and
//! docker-compose:
//!
//! - floor: the same N containers (same image, command, published port, hardened host config)
//!   created and started through the engine API directly, 8 at a time;
//! - compose: `docker-compose up -d` of the same N services (Debian's docker-compose);
//! - beast: `beast run` on a directory of N manifests, from spawning the process until the
//!   engine reports all N containers started (its event stream).
//!
//! Run it with:
//!
//!     cargo bench --bench converge            # N = 20 and 50, 3 rounds each (median)
//!     BENCH_N=10 BENCH_ROUNDS=1 cargo bench --bench converge
//!
//! Every run uses its own instance / project name and removes its containers afterwards.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};

use beast::containers::{replica_spec, Defaults, Image};
use beast::model::{Challenge, PortSpec, Protocol};
use beast::runtime::docker::DockerRuntime;
use beast::runtime::Runtime;

const IMAGE: &str = "beast-examples/busybox:1";
const CMD: [&str; 6] = ["nc", "-ll", "-p", "1337", "-e", "cat"];

fn main() {
    common::run(run());
}

async fn run() -> Result<(), String> {
    common::build_images()?;
    let sizes: Vec<usize> = match std::env::var("BENCH_N") {
        Ok(v) => v.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
        Err(_) => vec![20, 50],
    };
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let docker = Arc::new(DockerRuntime::connect().await.map_err(|e| e.to_string())?);
    println!("converge N challenges from empty (median of {rounds} rounds)");
    println!(
        "{:>4} {:>10} {:>10} {:>10} {:>12} {:>14}",
        "N", "floor", "compose", "beast", "beast/floor", "beast/compose"
    );
    for n in sizes {
        let (mut floor, mut compose, mut beast) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            floor.push(floor_run(&docker, n, round).await?);
            compose.push(compose_run(n, round)?);
            beast.push(beast_run(&docker, n, round).await?);
        }
        let (f, c, b) = (median(floor), median(compose), median(beast));
        println!(
            "{n:>4} {:>8.0}ms {:>8.0}ms {:>8.0}ms {:>11.2}x {:>13.2}x",
            ms(f),
            ms(c),
            ms(b),
            b.as_secs_f64() / f.as_secs_f64(),
            b.as_secs_f64() / c.as_secs_f64()
        );
        println!(
            "     per container: floor {:.0} ms, compose {:.0} ms, beast {:.0} ms",
            ms(f) / n as f64,
            ms(c) / n as f64,
            ms(b) / n as f64
        );
    }
    Ok(())
}

async fn floor_run(
    docker: &Arc<DockerRuntime>,
    n: usize,
    round: usize,
) -> Result<Duration, String> {
    let instance = format!("bench-floor-{}-{round}", std::process::id());
    let mut c = Challenge::with_image("x", IMAGE);
    let Some(run) = c.run.as_mut() else {
        return Err("no run".into());
    };
    run.command = Some(CMD.iter().map(|s| s.to_string()).collect());
    run.ports.push(PortSpec {
        port: 1337,
        host_port: None,
        protocol: Protocol::Tcp,
    });
    let run = run.clone();
    let image_id = docker
        .image_id(IMAGE)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("image missing")?;
    let specs: Vec<_> = (0..n)
        .map(|i| {
            let mut c = c.clone();
            c.name = format!("c{i}");
            let image = Image {
                reference: IMAGE,
                id: &image_id,
            };
            replica_spec(
                &instance,
                &c,
                &run,
                image,
                1,
                &[45000 + i as u16],
                &Defaults::default(),
            )
        })
        .collect();
    let t = Instant::now();
    let results: Vec<Result<(), String>> = stream::iter(specs)
        .map(|spec| {
            let docker = docker.clone();
            async move {
                let id = docker.create(&spec).await.map_err(|e| e.to_string())?;
                docker.start(&id).await.map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let took = t.elapsed();
    common::cleanup(&instance);
    results.into_iter().collect::<Result<Vec<()>, String>>()?;
    Ok(took)
}

fn compose_run(n: usize, round: usize) -> Result<Duration, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut yml = String::from("version: \"3\"\nservices:\n");
    for i in 0..n {
        yml.push_str(&format!(
            "  c{i}:\n    image: {IMAGE}\n    command: [{}]\n    ports: [\"{}:1337\"]\n    restart: unless-stopped\n    mem_limit: 256m\n    pids_limit: 256\n    cap_drop: [ALL]\n    security_opt: [\"no-new-privileges:true\"]\n",
            CMD.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", "),
            46000 + i
        ));
    }
    std::fs::write(dir.path().join("docker-compose.yml"), yml).map_err(|e| e.to_string())?;
    let project = format!("beastbench{}r{round}", std::process::id());
    let compose = |args: &[&str]| {
        Command::new("docker-compose")
            .current_dir(dir.path())
            .args(["-p", &project])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("docker-compose: {e}"))
    };
    let t = Instant::now();
    let status = compose(&["up", "-d"])?;
    let took = t.elapsed();
    let _ = compose(&["down", "-t", "0"]);
    if !status.success() {
        return Err("docker-compose up failed".into());
    }
    Ok(took)
}

/// Times `beast run` from spawn until the engine has started all N containers: the `start`
/// events of the instance are counted as they arrive (no polling, as precise as the floor's
/// timing, which ends when the last start call returns).
async fn beast_run(docker: &DockerRuntime, n: usize, round: usize) -> Result<Duration, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let manifests = dir.path().join("m");
    std::fs::create_dir_all(&manifests).map_err(|e| e.to_string())?;
    for i in 0..n {
        let m = format!(
            "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: c{i}\nspec:\n  image: {IMAGE}\n  command: [{}]\n  ports:\n    - port: 1337\n",
            CMD.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
        );
        std::fs::write(manifests.join(format!("c{i}.yaml")), m).map_err(|e| e.to_string())?;
    }
    let instance = format!("bench-beast-{}-{round}", std::process::id());
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let mut events = docker.events(&instance);
    tokio::time::sleep(Duration::from_millis(200)).await; // let the event stream connect
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_beast"))
        .args(["run", "--manifests"])
        .arg(&manifests)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args([
            "--instance",
            &instance,
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--port-range",
            "47000-47999",
            "--no-auth",
        ])
        .env("BEAST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut started = std::collections::BTreeSet::new();
    let wait = async {
        while started.len() < n {
            match events.next().await {
                Some(Ok(e)) if e.action == "start" => {
                    started.insert(e.name);
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err.to_string()),
                None => return Err("event stream ended".to_string()),
            }
        }
        Ok(t.elapsed())
    };
    let took = tokio::time::timeout(Duration::from_secs(120), wait).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    common::cleanup(&instance);
    took.map_err(|_| "beast did not converge within 120 s".to_string())?
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
