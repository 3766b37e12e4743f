//! GitOps and builds, on the real engine:
//!
//! - push → running: a commit adding an image-based challenge is pushed to a local bare
//!   repository, a signed webhook is sent, and the time until its container runs is taken
//!   (median of `BENCH_TRIES`, default 5);
//! - an unchanged 50-challenge tree: every challenge built from source once, then ensured again
//!   by a fresh builder (as after a restart of beast): the number of builds (target 0) and the
//!   time (target under one second).
//!
//!     cargo bench --bench gitops

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
    let push = push_to_running().await?;
    let (builds, took, first) = unchanged_tree().await?;
    println!("gitops and builds");
    println!(
        "  push -> webhook -> container running (median)   {:>7.0} ms",
        push.as_secs_f64() * 1000.0
    );
    println!(
        "  50 challenges built from source, first time       {:>7.0} ms",
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
    for (name, spec) in &specs {
        first
            .ensure(&instance, name, spec)
            .await
            .map_err(|e| e.to_string())?;
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
