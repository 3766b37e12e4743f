//! Time from damage to a running replacement, on the real engine, in one run:
//!
//! - beast after `docker rm -f`, after `kill -9` of the container's process, after `docker stop`;
//! - the engine's own restart policy (`unless-stopped`) after `kill -9`, without beast;
//! - a single-node Swarm service after `docker rm -f` of its task.
//!
//! Times are taken from the engine's event stream: from the damage event (`destroy` or `die`) to
//! the `start` event of the replacement. Median of `BENCH_TRIES` (default 7) tries each.
//!
//!     cargo bench --bench heal
//!
//! Swarm: if the engine is not in a swarm, the benchmark initialises a single-node swarm and
//! leaves it afterwards. Every container it makes carries its own instance label and is removed.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;

use beast::runtime::docker::DockerRuntime;
use beast::runtime::{EngineEvent, EventStream, Runtime};

const IMAGE: &str = "beast-examples/busybox:1";

fn main() {
    common::run(run());
}

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Engine events of one instance, each stamped when it arrived. The stream is polled from the
/// start by its own task (a stream not yet polled has not subscribed and would miss events).
type Events = tokio::sync::mpsc::UnboundedReceiver<(Instant, EngineEvent)>;

async fn subscribe(docker: &DockerRuntime, instance: &str) -> Events {
    let mut stream: EventStream = docker.events(instance);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(e)) = stream.next().await {
            if tx.send((Instant::now(), e)).is_err() {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await; // connected
    rx
}

/// Waits for the next event with `action` whose container name satisfies `name_ok`.
async fn next_event(
    events: &mut Events,
    action: &str,
    name_ok: impl Fn(&str) -> bool,
) -> Result<Instant, String> {
    let deadline = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return Err(format!("no {action} event within 60 s")),
            item = events.recv() => match item {
                Some((at, e)) if e.action == action && name_ok(&e.name) => return Ok(at),
                Some(_) => {}
                None => return Err("event stream ended".into()),
            }
        }
    }
}

async fn run() -> Result<(), String> {
    common::build_images()?;
    let tries: usize = std::env::var("BENCH_TRIES")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(7);
    let docker = DockerRuntime::connect().await.map_err(|e| e.to_string())?;
    let pid = std::process::id();

    // beast, with one echo challenge.
    let instance = format!("bench-heal-{pid}");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let manifests = dir.path().join("m");
    std::fs::create_dir_all(&manifests).map_err(|e| e.to_string())?;
    std::fs::write(
        manifests.join("echo.yaml"),
        format!("apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: echo\nspec:\n  image: {IMAGE}\n  command: [nc, -ll, -p, \"1337\", -e, cat]\n  ports:\n    - port: 1337\n"),
    )
    .map_err(|e| e.to_string())?;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let mut beast = Command::new(env!("CARGO_BIN_EXE_beast"))
        .args(["run", "--no-auth", "--manifests"])
        .arg(&manifests)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args([
            "--instance",
            &instance,
            "--listen",
            &listen.to_string(),
            "--port-range",
            "48000-48099",
        ])
        .env("BEAST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let name = format!("{instance}_echo_1");
    let result = async {
        wait_running(&name).await?;
        let mut rows = Vec::new();
        for (label, damage) in [
            ("beast: docker rm -f", Damage::Remove),
            ("beast: kill -9", Damage::Kill),
            ("beast: docker stop", Damage::Stop),
        ] {
            let mut times = Vec::new();
            for _ in 0..tries {
                let mut events = subscribe(&docker, &instance).await;
                times.push(damage_and_wait(&mut events, &name, damage, |n| n == name).await?);
                wait_running(&name).await?;
                tokio::time::sleep(Duration::from_millis(1500)).await; // let restart backoffs reset a little
            }
            rows.push((label, median(times)));
        }
        Ok::<_, String>(rows)
    }
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &beast.id().to_string()])
        .status();
    let _ = beast.wait();
    common::cleanup(&instance);
    let mut rows = result?;

    // The engine's restart policy alone.
    let rp_instance = format!("bench-heal-rp-{pid}");
    let rp_name = format!("{rp_instance}_echo");
    sh(&[
        "docker",
        "run",
        "-d",
        "--name",
        &rp_name,
        "--restart",
        "unless-stopped",
        "--label",
        &format!("beast.instance={rp_instance}"),
        IMAGE,
        "nc",
        "-ll",
        "-p",
        "1337",
        "-e",
        "cat",
    ])?;
    let rp = async {
        let mut times = Vec::new();
        for _ in 0..tries {
            wait_running(&rp_name).await?;
            let mut events = subscribe(&docker, &rp_instance).await;
            times.push(
                damage_and_wait(&mut events, &rp_name, Damage::Kill, |n| n == rp_name).await?,
            );
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        Ok::<_, String>(median(times))
    }
    .await;
    common::cleanup(&rp_instance);
    rows.push(("restart policy: kill -9", rp?));

    // A single-node Swarm service.
    match swarm(&docker, pid, tries).await {
        Ok(t) => rows.push(("swarm service: docker rm -f", t)),
        Err(err) => eprintln!("swarm skipped: {err}"),
    }

    println!("time from damage to a running replacement (median of {tries})");
    for (label, t) in &rows {
        println!("  {label:<30} {:>8.0} ms", t.as_secs_f64() * 1000.0);
    }
    let get = |l: &str| {
        rows.iter()
            .find(|(label, _)| *label == l)
            .map(|(_, t)| t.as_secs_f64())
    };
    if let (Some(b), Some(r)) = (get("beast: kill -9"), get("restart policy: kill -9")) {
        println!(
            "  beast kill -9 / restart policy = {:.2}x (target <= 1.2x)",
            b / r
        );
    }
    if let (Some(b), Some(s)) = (
        get("beast: docker rm -f"),
        get("swarm service: docker rm -f"),
    ) {
        println!(
            "  beast rm -f / swarm rm -f = {:.2}x (target <= 0.1x); beast rm -f target <= 500 ms",
            b / s
        );
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Damage {
    Remove,
    Kill,
    Stop,
}

/// Damages `name` and returns the time from the damage event to the replacement's start event.
async fn damage_and_wait(
    events: &mut Events,
    name: &str,
    damage: Damage,
    matches: impl Fn(&str) -> bool + Copy,
) -> Result<Duration, String> {
    let damage_action = match damage {
        Damage::Remove => {
            sh(&["docker", "rm", "-f", name])?;
            "destroy"
        }
        Damage::Kill => {
            let pid = sh(&["docker", "inspect", "-f", "{{.State.Pid}}", name])?;
            sh(&["kill", "-9", &pid])?;
            "die"
        }
        Damage::Stop => {
            sh(&["docker", "stop", "-t", "1", name])?;
            "die"
        }
    };
    let hit = next_event(events, damage_action, matches).await?;
    let back = next_event(events, "start", matches).await?;
    Ok(back.duration_since(hit))
}

async fn wait_running(name: &str) -> Result<(), String> {
    for _ in 0..300 {
        if sh(&["docker", "inspect", "-f", "{{.State.Running}}", name]).is_ok_and(|s| s == "true") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{name} is not running"))
}

async fn swarm(docker: &DockerRuntime, pid: u32, tries: usize) -> Result<Duration, String> {
    let state = sh(&["docker", "info", "-f", "{{.Swarm.LocalNodeState}}"])?;
    let we_initialised = state != "active";
    if we_initialised {
        sh(&["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"])?;
    }
    let instance = format!("bench-heal-swarm-{pid}");
    let service = format!("benchheal{pid}");
    let result = async {
        sh(&[
            "docker",
            "service",
            "create",
            "--detach",
            "--name",
            &service,
            "--container-label",
            &format!("beast.instance={instance}"),
            IMAGE,
            "nc",
            "-ll",
            "-p",
            "1337",
            "-e",
            "cat",
        ])?;
        let mut times = Vec::new();
        let prefix = format!("{service}.1.");
        for _ in 0..tries {
            let mut task = String::new();
            for _ in 0..300 {
                task = sh(&[
                    "docker",
                    "ps",
                    "-q",
                    "--filter",
                    &format!("label=beast.instance={instance}"),
                    "--filter",
                    "status=running",
                ])?;
                if !task.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let task = task.lines().next().unwrap_or("").to_string();
            if task.is_empty() {
                return Err("the swarm task never ran".to_string());
            }
            let mut events = subscribe(docker, &instance).await;
            times.push(
                damage_and_wait(&mut events, &task, Damage::Remove, |n| {
                    n.starts_with(&prefix)
                })
                .await?,
            );
        }
        Ok(median(times))
    }
    .await;
    let _ = sh(&["docker", "service", "rm", &service]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    common::cleanup(&instance);
    if we_initialised {
        let _ = sh(&["docker", "swarm", "leave", "--force"]);
    }
    result
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}
