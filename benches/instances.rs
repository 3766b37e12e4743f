//! Per-team instances on the real engine (issue 10's benchmark):
//!
//! - create → reachable: one team at a time, from `POST /api/v1/instances/{challenge}` until the
//!   instance's host port answers with a byte; p50 and p95 over N creates;
//! - a burst: M teams create at once; the time until every instance answers;
//! - the engine's floor for the same work: a bridge network plus one container on it with a
//!   published port, created and started through the same engine API beast uses (no beast),
//!   until the port answers; p50 and p95 over N.
//!
//! Run with:
//!
//!     cargo bench --bench instances                    # N = 20, M = 50
//!     BENCH_N=5 BENCH_M=10 cargo bench --bench instances
//!
//! beast runs with egress off (the default), so its instances also get their iptables rules;
//! the floor has none. Everything made is removed by instance label, also on failure.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use beast::runtime::docker::DockerRuntime;
use beast::runtime::{ContainerSpec, NetworkSpec, PortBinding, Runtime, LABEL_INSTANCE};

const IMAGE: &str = "beast-examples/busybox:1";
const DEADLINE: Duration = Duration::from_secs(180);

fn main() {
    common::run(run());
}

async fn run() -> Result<(), String> {
    common::build_images()?;
    let n = common::env_or("BENCH_N", 20);
    let m = common::env_or("BENCH_M", 50);
    let floor = floor_run(n).await?;
    let (creates, burst) = beast_run(n, m).await?;
    let (f50, f95) = (pct(&floor, 50), pct(&floor, 95));
    let (b50, b95) = (pct(&creates, 50), pct(&creates, 95));
    println!("engine floor (network + container, until it answers), {n} runs: p50 {f50:.0} ms, p95 {f95:.0} ms");
    println!("beast create → reachable, {n} teams one at a time: p50 {b50:.0} ms, p95 {b95:.0} ms");
    println!("beast/floor: p50 {:.2}x, p95 {:.2}x", b50 / f50, b95 / f95);
    println!(
        "{m} teams creating at once: all reachable after {:.0} ms ({:.0} ms per instance)",
        common::ms(burst),
        common::ms(burst) / m as f64
    );
    Ok(())
}

/// The floor: network + container + start through the engine API, until the port answers.
async fn floor_run(n: usize) -> Result<Vec<f64>, String> {
    let engine = DockerRuntime::connect().await.map_err(|e| e.to_string())?;
    let instance = format!("bench-floor-{}", std::process::id());
    let _guard = Cleanup(instance.clone());
    let ports = common::free_ports(n)?;
    let mut out = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let labels = BTreeMap::from([(LABEL_INSTANCE.to_string(), instance.clone())]);
        let name = format!("{instance}_{i}");
        let in_use = engine.subnets_in_use().await.map_err(|e| e.to_string())?;
        let (subnet, gateway) = beast::netpool::NetPool::default()
            .choose(&in_use, 0)
            .ok_or("no free subnet")?;
        let t = Instant::now();
        engine
            .create_network(&NetworkSpec {
                name: name.clone(),
                labels: labels.clone(),
                subnet,
                gateway,
            })
            .await
            .map_err(|e| e.to_string())?;
        let spec = ContainerSpec {
            name: format!("{name}_1"),
            image: IMAGE.to_string(),
            command: Some(
                ["nc", "-ll", "-p", "1337", "-e", "echo", "hi"]
                    .map(String::from)
                    .to_vec(),
            ),
            ports: vec![PortBinding {
                port: 1337,
                host_port: *port,
                protocol: beast::model::Protocol::Tcp,
            }],
            memory: 256 * 1024 * 1024,
            pids: 256,
            network: Some(name.clone()),
            labels,
            ..ContainerSpec::default()
        };
        let id = engine.create(&spec).await.map_err(|e| e.to_string())?;
        engine.start(&id).await.map_err(|e| e.to_string())?;
        wait_answer(*port).await?;
        out.push(common::ms(t.elapsed()));
    }
    Ok(out)
}

/// beast: N creates one at a time, then M at once.
async fn beast_run(n: usize, m: usize) -> Result<(Vec<f64>, Duration), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let manifests = dir.path().join("m");
    std::fs::create_dir_all(&manifests).map_err(|e| e.to_string())?;
    std::fs::write(
        manifests.join("pwn.yaml"),
        format!("apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: pwn\nspec:\n  image: {IMAGE}\n  command: [nc, -ll, -p, \"1337\", -e, echo, hi]\n  ports: [{{port: 1337}}]\n  instances:\n    perTeam: true\n    ttl: 1h\n    maxTotal: {}\n", n + m + 5),
    )
    .map_err(|e| e.to_string())?;
    let instance = format!("bench-inst-{}", std::process::id());
    let listen = common::free_ports(1)?[0];
    let _guard = common::BeastGuard::spawn(
        &manifests,
        &dir.path().join("state"),
        &instance,
        listen,
        &["--instance-create-rate", "1000/1s"],
    )?;
    let api = format!("http://127.0.0.1:{listen}");
    let http = reqwest::Client::new();
    // Ready, and the challenge known.
    let ready = async {
        loop {
            if let Ok(r) = http.get(format!("{api}/readyz")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), ready)
        .await
        .map_err(|_| "beast never became ready".to_string())?;
    let mut creates = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let port = create(&http, &api, &format!("seq-{i}")).await?;
        wait_answer(port).await?;
        creates.push(common::ms(t.elapsed()));
    }
    let t = Instant::now();
    let burst = (0..m).map(|i| {
        let http = http.clone();
        let api = api.clone();
        async move {
            let port = create(&http, &api, &format!("burst-{i}")).await?;
            wait_answer(port).await
        }
    });
    for result in futures::future::join_all(burst).await {
        result?;
    }
    Ok((creates, t.elapsed()))
}

/// Creates the team's instance and waits for its host port to be known.
async fn create(http: &reqwest::Client, api: &str, team: &str) -> Result<u16, String> {
    let url = format!("{api}/api/v1/instances/pwn?team={team}");
    let reply = http.post(&url).send().await.map_err(|e| e.to_string())?;
    if !reply.status().is_success() {
        return Err(format!("create for {team}: {}", reply.status()));
    }
    let deadline = Instant::now() + DEADLINE;
    let mut view: serde_json::Value = reply.json().await.map_err(|e| e.to_string())?;
    loop {
        if let Some(port) = view["connection"][0]["hostPort"].as_u64() {
            return u16::try_from(port).map_err(|e| e.to_string());
        }
        if Instant::now() > deadline {
            return Err(format!("{team}: no host port within {DEADLINE:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let reply = http.get(&url).send().await.map_err(|e| e.to_string())?;
        view = reply.json().await.map_err(|e| e.to_string())?;
    }
}

async fn wait_answer(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + DEADLINE;
    while !common::answers(port).await {
        if Instant::now() > deadline {
            return Err(format!("port {port} never answered"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Removes an instance's containers, networks and rules when dropped.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        common::cleanup(&self.0);
    }
}

fn pct(samples: &[f64], p: usize) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len().saturating_sub(1)) * p + 50) / 100;
    v.get(i).copied().unwrap_or(f64::NAN)
}
