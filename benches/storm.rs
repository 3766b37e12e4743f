//! A mass crash loop: `STORM_N` (default 200) running challenges get a broken image at once (a
//! broken base image pushed to every challenge) beside 5 healthy ones; watched for `STORM_SECS`
//! (default 300) from the push.
//!
//! Prints: the API's latency during the storm (GET /api/v1/status/challenges, p50/p99/max), the
//! container starts per second that beast asked for (its `beast_engine_starts_total`) against
//! those the engine made (its `start` events; the rest are the restart policy's), the host's load
//! (1-minute average, sampled), and whether the healthy ones were ever restarted.
//!
//!     cargo bench --bench storm
//!     STORM_N=50 STORM_SECS=60 cargo bench --bench storm
//!
//! beast runs with its defaults (`--workers 8` on 2 cores, `--engine-concurrency 8`).
//!
//! Half of the broken challenges exit at once; the other half run for 2 s first with a TCP probe
//! that never passes (beast's probes must not stack restarts on the engine's policy). beast's own
//! starts are counted apart for the rollout (the replacements it must make) and after it (where
//! it should add none). Every container carries this run's own instance label and is removed at
//! the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod harness;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{echo, manifest, Env};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One GET over a fresh connection; the time it took.
fn get(port: u16, path: &str, token: &str) -> Option<Duration> {
    let start = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).ok()?;
    body.starts_with(b"HTTP/1.1 200").then(|| start.elapsed())
}

fn metric(env: &Env, name: &str) -> u64 {
    let out = Command::new("curl")
        .args(["-s", &format!("{}/metrics", env.api)])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    out.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0)
}

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Id and start time of each healthy challenge's container: unchanged means never restarted.
fn healthy_runs(env: &Env) -> Vec<String> {
    (1..=5)
        .map(|i| {
            harness::docker(&[
                "inspect",
                "-f",
                "{{.Id}} {{.State.StartedAt}}",
                &env.name(&format!("healthy{i}"), 1),
            ])
        })
        .collect()
}

/// A running challenge: an echo service on container port 1337, not published (a test's port
/// block is 20 ports), probed over TCP for odd `i`.
fn app(i: u64) -> String {
    let probe = "  healthcheck:\n    tcp: {port: 1337}\n    interval: 1s\n    retries: 2\n    startPeriod: 500ms\n";
    manifest(
        &format!("app{i}"),
        &format!(
            "  command: [nc, -ll, -p, \"1337\", -e, cat]\n{}",
            if i % 2 == 1 { probe } else { "" }
        ),
    )
}

/// The same challenge after a broken base image was pushed: odd ones run 2 s and keep their
/// probe (which never passes), even ones exit at once.
fn broken(i: u64) -> String {
    let name = format!("app{i}");
    let body = if i % 2 == 0 {
        "  command: [sh, -c, \"echo 'broken base image: /lib/ld.so missing'; exit 127\"]\n"
            .to_string()
    } else {
        "  command: [sh, -c, \"sleep 2; exit 1\"]\n  healthcheck:\n    tcp: {port: 1337}\n    interval: 1s\n    retries: 2\n    startPeriod: 500ms\n".to_string()
    };
    manifest(&name, &body)
}

/// Whether every broken challenge has been rolled out (its status observed the new generation).
fn rolled_out(env: &Env, n: u64) -> bool {
    let Some((200, list)) = env.get_status("/api/v1/status/challenges") else {
        return false;
    };
    let done = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with("app")))
        .filter(|c| c["generation"] == 2 && c["status"]["observedGeneration"] == 2)
        .count();
    done as u64 == n
}

fn main() {
    let n = env_or("STORM_N", 200);
    let secs = env_or("STORM_SECS", 300);
    let mut env = Env::new("storm");
    env.resync = "30s";
    for i in 1..=5 {
        let name = format!("healthy{i}");
        env.write(
            &format!("{name}.yaml"),
            &echo(
                &name,
                "  healthcheck:\n    tcp: {port: 1337}\n    interval: 2s\n    retries: 3\n",
            ),
        );
    }
    for i in 1..=n {
        env.write(&format!("app{i}.yaml"), &app(i));
    }
    // The default workers on this 2-core host (4 per core; the test harness uses 4).
    env.start_with(&["--workers", "8"]);
    env.wait_for("all challenges Running", Duration::from_secs(600), |env| {
        env.get_status("/api/v1/status/challenges")
            .and_then(|(_, list)| list["items"].as_array().cloned())
            .is_some_and(|items| {
                items.len() as u64 == n + 5
                    && items.iter().all(|c| c["status"]["phase"] == "Running")
            })
    });
    let healthy_before = healthy_runs(&env);

    // Count the engine's start events of this instance from now on.
    let mut events = Command::new("docker")
        .args([
            "events",
            "--filter",
            &format!("label=beast.instance={}", env.instance),
            "--filter",
            "event=start",
            "--format",
            "{{.Actor.Attributes.name}}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker events");
    let starts_out = events.stdout.take().expect("events stdout");
    let engine_starts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let engine_starts = engine_starts.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for _ in std::io::BufReader::new(starts_out).lines() {
                engine_starts.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    let stop = Arc::new(AtomicBool::new(false));
    let api = {
        let stop = stop.clone();
        let (port, token) = (env.listen, env.token.clone());
        std::thread::spawn(move || {
            let mut lat = Vec::new();
            let mut failed = 0u32;
            while !stop.load(Ordering::Relaxed) {
                match get(port, "/api/v1/status/challenges", &token) {
                    Some(d) => lat.push(d),
                    None => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (lat, failed)
        })
    };

    // The push: every app's image is broken at once.
    let beast_before = metric(&env, "beast_engine_starts_total");
    let creates_before = metric(&env, "beast_engine_creates_total");
    let probes_before = metric(&env, "beast_probe_restarts_total");
    let engine_before = engine_starts.load(Ordering::Relaxed);
    let pushed = Instant::now();
    for i in 1..=n {
        env.write(&format!("app{i}.yaml"), &broken(i));
    }
    let mut loads = Vec::new();
    let mut rollout: Option<(Duration, u64, u64)> = None;
    let mut last_load = Instant::now();
    while pushed.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(500));
        if rollout.is_none() && rolled_out(&env, n) {
            rollout = Some((
                pushed.elapsed(),
                metric(&env, "beast_engine_starts_total"),
                engine_starts.load(Ordering::Relaxed),
            ));
        }
        if last_load.elapsed() >= Duration::from_secs(5) {
            loads.push(load1());
            last_load = Instant::now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (mut lat, failed) = api.join().expect("api thread");
    let elapsed = pushed.elapsed().as_secs_f64();
    let beast_end = metric(&env, "beast_engine_starts_total");
    let engine_end = engine_starts.load(Ordering::Relaxed);
    let _ = events.kill();
    let _ = events.wait();
    let probe_restarts = metric(&env, "beast_probe_restarts_total");
    let creates = metric(&env, "beast_engine_creates_total") - creates_before;
    lat.sort();
    let healthy_after = healthy_runs(&env);
    let healthy_restarts: u64 = (1..=5)
        .filter_map(|i| env.status(&format!("healthy{i}")))
        .map(|s| s["status"]["restarts"].as_u64().unwrap_or(0))
        .sum();
    let crash_looping = (1..=n)
        .filter(|i| {
            env.condition(&format!("app{i}"), "Ready")
                .is_some_and(|c| c["reason"] == "CrashLoopBackOff")
        })
        .count();
    let mean_load = loads.iter().sum::<f64>() / loads.len().max(1) as f64;
    let max_load = loads.iter().copied().fold(0.0, f64::max);

    println!("storm: a broken image pushed to {n} running challenges (5 healthy beside them), watched {elapsed:.0} s, 2 cores");
    println!(
        "API GET /api/v1/status/challenges: {} requests, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {failed} failed",
        lat.len(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    match rollout {
        Some((took, beast_at, engine_at)) => {
            let after = elapsed - took.as_secs_f64();
            let policy_after = (engine_end - engine_at).saturating_sub(beast_end - beast_at);
            println!(
                "rollout of the broken image: {:.1} s; beast started {} containers for it (the replacements), the engine {} in all meanwhile",
                took.as_secs_f64(),
                beast_at - beast_before,
                engine_at - engine_before,
            );
            println!(
                "after the rollout ({after:.0} s): engine starts {} ({:.2}/s); asked for by beast: {} ({:.3}/s); by the restart policy: {policy_after} ({:.2}/s)",
                engine_end - engine_at,
                (engine_end - engine_at) as f64 / after.max(1.0),
                beast_end - beast_at,
                (beast_end - beast_at) as f64 / after.max(1.0),
                policy_after as f64 / after.max(1.0),
            );
        }
        None => println!(
            "rollout NOT finished within {elapsed:.0} s; engine starts {}, by beast {}",
            engine_end - engine_before,
            beast_end - beast_before
        ),
    }
    let probes = probe_restarts - probes_before;
    println!(
        "beast's starts since the push: {} = {creates} new containers (the replacements) + {probes} probe restarts + {} starts of existing containers",
        beast_end - beast_before,
        (beast_end - beast_before).saturating_sub(creates + probes),
    );
    println!("host load (1-min average, every 5 s): mean {mean_load:.1}, max {max_load:.1}");
    println!("shown as crash-looping (Ready reason CrashLoopBackOff): {crash_looping}/{n}");
    println!(
        "healthy challenges restarted: {} (containers unchanged: {}, status restarts {healthy_restarts})",
        if healthy_before == healthy_after && healthy_restarts == 0 { "never" } else { "YES" },
        healthy_before == healthy_after,
    );
}
