//! Chaos for a bounded time: random `docker rm -f` / `kill` / `stop` / `pause` of this test's
//! containers, manifest edits in the watched directory and API writes; then a check that beast
//! converged to exactly the desired containers, with the last edit deployed, no duplicates, no
//! leftovers, and the foreign containers it was given untouched.
//!
//! Shared by the integration test (short) and `benches/chaos.rs` (long). Every op is on this
//! test's own instance; the seed is printed so a failing run can be replayed (`CHAOS_SEED`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::{docker, docker_ok, echo, Env, BUSYBOX};

/// The challenges of a chaos run: (name, replicas, owned by the API rather than a file).
pub const CHALLENGES: &[(&str, u32, bool)] = &[
    ("d1", 2, false),
    ("d2", 1, false),
    ("d3", 1, false),
    ("a1", 2, true),
    ("a2", 1, true),
];

/// The world a chaos run acts on.
pub struct World {
    /// The generation (`GEN` env) last written and acknowledged, per challenge.
    pub gen: BTreeMap<String, u32>,
    /// Containers of another instance and without labels: (name, id). Must stay untouched.
    pub foreign: Vec<(String, String)>,
    /// How many of each op were done.
    pub ops: BTreeMap<&'static str, u32>,
}

fn manifest(name: &str, replicas: u32, gen: u32) -> String {
    let probe = if name == "d2" {
        "  healthcheck:\n    tcp: {port: 1337}\n    interval: 1s\n    retries: 3\n"
    } else {
        ""
    };
    echo(
        name,
        &format!("  replicas: {replicas}\n  env: {{GEN: \"{gen}\"}}\n{probe}"),
    )
}

fn put(env: &Env, name: &str, replicas: u32, gen: u32) -> bool {
    matches!(
        env.call(
            "PUT",
            &format!("/api/v1/manage/challenges/{name}"),
            &manifest(name, replicas, gen),
        ),
        Some((200 | 201, _))
    )
}

/// Writes the challenges, starts beast, adds foreign containers, and waits until all run.
pub fn setup(env: &mut Env) -> World {
    let mut gen = BTreeMap::new();
    for (name, replicas, api) in CHALLENGES {
        gen.insert(name.to_string(), 1);
        if !api {
            env.write(&format!("{name}.yaml"), &manifest(name, *replicas, 1));
        }
    }
    env.start();
    for (name, replicas, api) in CHALLENGES {
        if *api {
            assert!(put(env, name, *replicas, 1), "PUT {name}");
        }
    }
    // A container of another instance claiming one of our names' labels, and one without any.
    let other = format!("{}-other", env.instance);
    let mut foreign = Vec::new();
    for (suffix, labels) in [
        (
            "foreign-labelled",
            vec![
                format!("beast.instance={other}"),
                "beast.challenge=d1".to_string(),
                "beast.replica=1".to_string(),
            ],
        ),
        ("foreign-bare", vec![]),
    ] {
        let name = format!("{}-{suffix}", env.instance);
        let mut args = vec!["run", "-d", "--name", &name];
        let label_args: Vec<String> = labels.iter().map(|l| format!("--label={l}")).collect();
        args.extend(label_args.iter().map(String::as_str));
        args.extend([BUSYBOX, "sleep", "100000"]);
        let id = docker(&args);
        assert!(!id.is_empty(), "start {name}");
        env.extra_cleanup.push(name.clone());
        foreign.push((name, id));
    }
    for (name, _, _) in CHALLENGES {
        env.wait_running(name);
    }
    World {
        gen,
        foreign,
        ops: BTreeMap::new(),
    }
}

/// The seed of this run: `CHAOS_SEED`, or from the clock. Printed for replay.
pub fn seed() -> u64 {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    eprintln!("chaos seed: {seed} (CHAOS_SEED={seed} replays the choices)");
    seed
}

/// Damage, edits and writes for `duration`.
pub fn run(env: &Env, world: &mut World, duration: Duration, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let roll: u32 = rng.random_range(0..100);
        let op = match roll {
            0..=24 => "rm",
            25..=44 => "kill",
            45..=59 => "stop",
            60..=74 => "pause",
            75..=89 => "edit",
            _ => "api",
        };
        let done = match op {
            "edit" | "api" => {
                let candidates: Vec<_> = CHALLENGES
                    .iter()
                    .filter(|(_, _, api)| *api == (op == "api"))
                    .collect();
                let (name, replicas, _) = candidates[rng.random_range(0..candidates.len())];
                let next = world.gen[*name] + 1;
                let ok = if op == "edit" {
                    env.write(&format!("{name}.yaml"), &manifest(name, *replicas, next));
                    true
                } else {
                    put(env, name, *replicas, next)
                };
                assert!(ok || op == "edit", "an API write failed during chaos");
                world.gen.insert(name.to_string(), next);
                true
            }
            _ => {
                let mine = env.containers();
                if mine.is_empty() {
                    false
                } else {
                    let (name, _, _) = &mine[rng.random_range(0..mine.len())];
                    match op {
                        "rm" => docker_ok(&["rm", "-f", name]),
                        "kill" => docker_ok(&["kill", name]),
                        "stop" => docker_ok(&["stop", "-t", "1", name]),
                        _ => docker_ok(&["pause", name]),
                    }
                }
            }
        };
        if done {
            *world.ops.entry(op).or_default() += 1;
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(50..250)));
    }
}

/// Whether beast has converged: exactly the desired containers, running, with the last
/// generation's env, every challenge Running, and the foreign containers as they were.
pub fn converged(env: &Env, world: &World) -> Result<(), String> {
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    for (name, replicas, _) in CHALLENGES {
        for r in 1..=*replicas {
            want.insert(env.name(name, r), format!("GEN={}", world.gen[*name]));
        }
    }
    let have = env.containers();
    let mut problems = Vec::new();
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    for (name, _, state) in &have {
        *seen.entry(name.as_str()).or_default() += 1;
        if !want.contains_key(name) {
            problems.push(format!("leftover {name} ({state})"));
        } else if state != "running" {
            problems.push(format!("{name} is {state}"));
        }
    }
    for (name, n) in &seen {
        if *n > 1 {
            problems.push(format!("{n} containers named {name}"));
        }
    }
    for name in want.keys() {
        if !seen.contains_key(name.as_str()) {
            problems.push(format!("missing {name}"));
        }
    }
    if problems.is_empty() {
        let names: Vec<&str> = want.keys().map(String::as_str).collect();
        let mut args = vec![
            "inspect",
            "--format",
            "{{.Name}} {{range .Config.Env}}{{.}} {{end}}",
        ];
        args.extend(names);
        for line in docker(&args).lines() {
            let mut words = line.split_whitespace();
            let name = words.next().unwrap_or("").trim_start_matches('/');
            let envs: Vec<&str> = words.collect();
            if let Some(gen) = want.get(name) {
                if !envs.contains(&gen.as_str()) {
                    problems.push(format!("{name} runs {envs:?}, want {gen}"));
                }
            }
        }
    }
    match env.get_status("/api/v1/status/challenges") {
        Some((200, list)) => {
            for item in list["items"].as_array().into_iter().flatten() {
                let phase = item["status"]["phase"].as_str().unwrap_or("?");
                if phase != "Running" {
                    problems.push(format!("{} is {phase}", item["name"]));
                }
            }
        }
        other => problems.push(format!("status list: {other:?}")),
    }
    for (name, id) in &world.foreign {
        let now = docker(&["inspect", "-f", "{{.Id}} {{.State.Status}}", name]);
        if !now.starts_with(id.as_str()) || !now.ends_with("running") {
            problems.push(format!("foreign {name} was touched: {now}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Polls [`converged`] until it holds or `limit` passes; the time it took, or the last problems.
pub fn wait_converged(env: &Env, world: &World, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let verdict = converged(env, world);
        match verdict {
            Ok(()) => return Ok(start.elapsed()),
            Err(problems) if start.elapsed() > limit => return Err(problems),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The status list, for a failure message.
pub fn phases(env: &Env) -> Value {
    env.get_status("/api/v1/status/challenges")
        .map(|(_, v)| v)
        .unwrap_or(Value::Null)
}
