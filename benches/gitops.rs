//! GitOps and builds, on the real engine:
//!
//! - push → running: a commit adding an image-based challenge is pushed to a local bare
//!   repository, a signed webhook is sent, and the time until its container runs is taken
//!   (median of `BENCH_TRIES`, default 5);
//! - an unchanged 50-challenge tree: every challenge built from source once, then ensured again
//!   by a fresh builder (as after a restart of beast): the number of builds (target 0) and the
//!   time (target under one second);
//! - parallel builds, end to end: `beast run` on a directory of `BENCH_BUILDS` (default 50)
//!   challenges built from source, with `--build-workers 1`, one per core and the default (two
//!   per core), each with fresh content (no layer cache): the time from start until every
//!   container runs, and the ratio.
//!
//! Run with `cargo bench --bench gitops`; the build part alone with
//! `BENCH_ONLY=builds BENCH_BUILDS=50 cargo bench --bench gitops`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use beast::build::Builder;
use beast::model::BuildSpec;
use beast::runtime::docker::DockerRuntime;

const IMAGE: &str = "beast-examples/busybox:1";

fn main() {
    common::run(run());
}

fn sh(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
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

async fn run() -> Result<(), String> {
    common::build_images()?;
    let n: usize = std::env::var("BENCH_BUILDS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(50);
    let (serial, per_core, default) = parallel_builds(n).await?;
    let workers = beast::build::default_workers();
    println!("builds from source through beast run, {n} challenges");
    println!(
        "  --build-workers 1                                 {:>7.1} s",
        serial.as_secs_f64()
    );
    println!(
        "  --build-workers {} (one per core)                   {:>7.1} s",
        cores(),
        per_core.as_secs_f64()
    );
    println!(
        "  --build-workers {workers} (the default, two per core)      {:>7.1} s",
        default.as_secs_f64()
    );
    println!(
        "  speed-up of the default over one at a time        {:>7.2}x",
        serial.as_secs_f64() / default.as_secs_f64()
    );
    if std::env::var("BENCH_ONLY").as_deref() == Ok("builds") {
        return Ok(());
    }
    let push = push_to_running().await?;
    let (builds, took, first) = unchanged_tree().await?;
    println!("gitops and builds");
    println!(
        "  push -> webhook -> container running (median)   {:>7.0} ms",
        push.as_secs_f64() * 1000.0
    );
    println!(
        "  50 challenges built from source, first time (2 at a time, direct) {:>7.0} ms",
        first.as_secs_f64() * 1000.0
    );
    println!("  unchanged 50-challenge tree after a restart       {:>7.0} ms, {builds} builds (targets: < 1000 ms, 0 builds)", took.as_secs_f64() * 1000.0);
    Ok(())
}

fn manifest(name: &str) -> String {
    format!("apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: {name}\nspec:\n  image: {IMAGE}\n  command: [sleep, \"3600\"]\n")
}

async fn push_to_running() -> Result<Duration, String> {
    let tries: usize = std::env::var("BENCH_TRIES")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let d = dir.path();
    let git = |args: &[&str]| {
        let mut full = vec![
            "git",
            "-c",
            "user.name=bench",
            "-c",
            "user.email=b@b",
            "-c",
            "init.defaultBranch=main",
        ];
        full.extend_from_slice(args);
        sh(d, &full)
    };
    git(&["init", "--quiet", "--bare", "remote.git"])?;
    git(&["init", "--quiet", "work"])?;
    let work = d.join("work");
    let commit = |name: &str| -> Result<(), String> {
        std::fs::create_dir_all(work.join(name)).map_err(|e| e.to_string())?;
        std::fs::write(work.join(name).join("challenge.yaml"), manifest(name))
            .map_err(|e| e.to_string())?;
        let g = |args: &[&str]| {
            let mut full = vec!["git", "-c", "user.name=bench", "-c", "user.email=b@b"];
            full.extend_from_slice(args);
            sh(&work, &full)
        };
        g(&["add", "--all"])?;
        g(&["commit", "--quiet", "-m", name])?;
        g(&["push", "--quiet", "--force", "../remote.git", "HEAD:main"])?;
        Ok(())
    };
    commit("c0")?;
    let instance = format!("bench-git-{}", std::process::id());
    let secret = "bench-hook-secret";
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let mut beast = Command::new(env!("CARGO_BIN_EXE_beast"))
        .args(["run", "--no-auth", "--state-dir"])
        .arg(d.join("state"))
        .args(["--instance", &instance, "--listen", &listen.to_string()])
        .args([
            "--git",
            &format!("file://{}", d.join("remote.git").display()),
            "--git-interval",
            "1h",
        ])
        .args(["--git-webhook-secret", secret])
        .env("BEAST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let result = async {
        wait_running(&format!("{instance}_c0_1"), Duration::from_secs(60)).await?;
        let mut times = Vec::new();
        for i in 1..=tries {
            let name = format!("c{i}");
            commit(&name)?;
            let body = r#"{"ref":"refs/heads/main"}"#;
            let mut mac =
                Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
            mac.update(body.as_bytes());
            let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            let t = Instant::now();
            sh(
                d,
                &[
                    "curl",
                    "-sf",
                    "-o",
                    "/dev/null",
                    "-X",
                    "POST",
                    "-H",
                    &format!("X-Hub-Signature-256: {signature}"),
                    "--data-binary",
                    body,
                    &format!("http://{listen}/api/v1/manage/hooks/git"),
                ],
            )?;
            wait_running(&format!("{instance}_{name}_1"), Duration::from_secs(60)).await?;
            times.push(t.elapsed());
        }
        times.sort();
        Ok::<_, String>(times[times.len() / 2])
    }
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &beast.id().to_string()])
        .status();
    let _ = beast.wait();
    common::cleanup(&instance);
    result
}

async fn unchanged_tree() -> Result<(usize, Duration, Duration), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let instance = format!("bench-build-{}", std::process::id());
    let mut specs = Vec::new();
    for i in 0..50 {
        let ctx = dir.path().join(format!("c{i}"));
        std::fs::create_dir_all(&ctx).map_err(|e| e.to_string())?;
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("FROM {IMAGE}\nCOPY hello.txt /hello.txt\n"),
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(ctx.join("hello.txt"), format!("challenge {i}\n"))
            .map_err(|e| e.to_string())?;
        specs.push((
            format!("bench{i}"),
            BuildSpec {
                context: ctx,
                dockerfile: "Dockerfile".into(),
                args: Default::default(),
            },
        ));
    }
    let runtime = Arc::new(DockerRuntime::connect().await.map_err(|e| e.to_string())?);
    let first = Builder::new(runtime.clone(), 2);
    let t = Instant::now();
    let builds = specs
        .iter()
        .map(|(name, spec)| first.ensure(&instance, name, spec));
    for result in futures::future::join_all(builds).await {
        result.map_err(|e| e.to_string())?;
    }
    let first_took = t.elapsed();
    // A fresh builder: nothing remembered but what the engine has.
    let again = Builder::new(runtime.clone(), 2);
    let t = Instant::now();
    let mut builds = 0;
    for (name, spec) in &specs {
        if again
            .ensure(&instance, name, spec)
            .await
            .map_err(|e| e.to_string())?
            .rebuilt
        {
            builds += 1;
        }
    }
    let took = t.elapsed();
    for (name, _) in &specs {
        again.forget(&instance, name).await;
    }
    Ok((builds, took, first_took))
}

/// `beast run` on `n` fresh challenges built from source, once one build at a time, once one
/// per core and once with the default (two per core): (serial, per core, default) times until
/// all run.
async fn parallel_builds(n: usize) -> Result<(Duration, Duration, Duration), String> {
    let serial = builds_until_running(n, Some(1), "serial").await?;
    let per_core = builds_until_running(n, Some(cores()), "per-core").await?;
    let default = builds_until_running(n, None, "default").await?;
    Ok((serial, per_core, default))
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1)
}

/// One phase: writes `n` challenges whose content is new to the engine, starts beast, and
/// times until all `n` containers run. Its containers and images are removed after.
async fn builds_until_running(
    n: usize,
    workers: Option<usize>,
    phase: &str,
) -> Result<Duration, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let manifests = dir.path().join("challenges");
    let instance = format!("bench-bw-{phase}-{}", std::process::id());
    let nonce = format!(
        "{phase} {}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    for i in 0..n {
        let ctx = manifests.join(format!("b{i}"));
        std::fs::create_dir_all(&ctx).map_err(|e| e.to_string())?;
        let files = [
            (
                "challenge.yaml",
                format!("apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: b{i}\nspec:\n  build: {{context: .}}\n  command: [sleep, \"3600\"]\n"),
            ),
            (
                "Dockerfile",
                format!("FROM {IMAGE}\nCOPY hello.txt /hello.txt\n"),
            ),
            ("hello.txt", format!("challenge {i}, {nonce}\n")),
        ];
        for (name, text) in files {
            std::fs::write(ctx.join(name), text).map_err(|e| e.to_string())?;
        }
    }
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_beast"));
    command
        .args(["run", "--no-auth", "--manifests"])
        .arg(&manifests)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--instance", &instance, "--listen", &listen.to_string()])
        .args(["--resync", "1h"]);
    if let Some(w) = workers {
        command.args(["--build-workers", &w.to_string()]);
    }
    let t = Instant::now();
    let mut beast = command
        .env("BEAST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let result = wait_all_running(&instance, n, Duration::from_secs(900)).await;
    let took = t.elapsed();
    let _ = Command::new("kill")
        .args(["-TERM", &beast.id().to_string()])
        .status();
    let _ = beast.wait();
    common::cleanup(&instance);
    common::remove_images(&instance);
    result.map(|()| took)
}

/// Waits until `n` containers of `instance` run.
async fn wait_all_running(instance: &str, n: usize, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let filter = format!("label=beast.instance={instance}");
    while Instant::now() < deadline {
        let out = Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                &filter,
                "--filter",
                "status=running",
            ])
            .output()
            .map_err(|e| e.to_string())?;
        let running = String::from_utf8_lossy(&out.stdout).lines().count();
        if running >= n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "{n} containers of {instance} did not all run within {timeout:?}"
    ))
}

async fn wait_running(name: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Running}}", name])
            .output();
        if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("{name} did not run within {timeout:?}"))
}
