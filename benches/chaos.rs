//! The long chaos run: random `docker rm -f` / `kill` / `stop` / `pause`, manifest edits and API
//! writes for `CHAOS_SECS` (default 90), then the time until beast has converged to exactly the
//! desired containers (the last edit deployed, no duplicates, no leftovers, foreign containers
//! untouched). `CHAOS_ROUNDS` rounds (default 3), each on a fresh instance; `CHAOS_SEED` replays.
//!
//!     cargo bench --bench chaos
//!
//! The same harness as the short chaos test in `tests/topics/recovery.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod harness;

use std::time::Duration;

use harness::{chaos, Env};

fn main() {
    let secs: u64 = std::env::var("CHAOS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(90);
    let rounds: u64 = std::env::var("CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut times = Vec::new();
    for round in 1..=rounds {
        let mut env = Env::new(&format!("chaos-bench{round}"));
        env.resync = "30s";
        let mut world = chaos::setup(&mut env);
        let seed = chaos::seed();
        chaos::run(&env, &mut world, Duration::from_secs(secs), seed);
        let ops: u32 = world.ops.values().sum();
        match chaos::wait_converged(&env, &world, Duration::from_secs(60)) {
            Ok(took) => {
                println!(
                    "round {round}: {ops} ops in {secs} s {:?} → converged {:.2} s after the chaos stopped (seed {seed})",
                    world.ops,
                    took.as_secs_f64()
                );
                times.push(took.as_secs_f64());
            }
            Err(problems) => {
                println!("round {round}: NOT converged 60 s after the chaos stopped (seed {seed}): {problems}");
                times.push(f64::INFINITY);
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let within = times.iter().filter(|t| **t <= 15.0).count();
    println!(
        "chaos: {within}/{} rounds converged within 15 s; median {:.2} s, worst {:.2} s",
        times.len(),
        times.get(times.len() / 2).copied().unwrap_or(0.0),
        times.last().copied().unwrap_or(0.0)
    );
}
