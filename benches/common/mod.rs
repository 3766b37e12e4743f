//! What the engine benchmarks share: running an async benchmark, building the images it needs,
//! and removing exactly the containers and built images of one run.

#![allow(dead_code)] // each benchmark uses its own subset

use std::future::Future;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `bench` on a tokio runtime; a failure is printed and exits non-zero.
pub fn run<F: Future<Output = Result<(), String>>>(bench: F) {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => return eprintln!("no runtime: {err}"),
    };
    if let Err(err) = rt.block_on(bench) {
        eprintln!("benchmark failed: {err}");
        std::process::exit(1);
    }
}

/// Builds the example and test images with the project's own script.
pub fn build_images() -> Result<(), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/build-images.sh");
    let status = Command::new("bash")
        .arg(script)
        .status()
        .map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err("examples/build-images.sh failed".to_string())
    }
}

/// Stops a `beast run` (SIGTERM, then waits) and removes everything of its instance when dropped,
/// also when the benchmark fails.
pub struct BeastGuard {
    pub instance: String,
    pub child: Option<std::process::Child>,
}

impl BeastGuard {
    /// Starts `beast run --no-auth` on `manifests` as `instance`, listening on loopback `listen`,
    /// with `extra` flags; quiet (warnings only, output discarded).
    pub fn spawn(
        manifests: &Path,
        state_dir: &Path,
        instance: &str,
        listen: u16,
        extra: &[&str],
    ) -> Result<BeastGuard, String> {
        let child = Command::new(env!("CARGO_BIN_EXE_beast"))
            .args(["run", "--manifests"])
            .arg(manifests)
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--instance", instance, "--listen"])
            .arg(format!("127.0.0.1:{listen}"))
            .arg("--no-auth")
            .args(extra)
            .env("BEAST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        Ok(BeastGuard {
            instance: instance.to_string(),
            child: Some(child),
        })
    }
}

impl Drop for BeastGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        cleanup(&self.instance);
    }
}

/// Removes exactly the containers labelled with this run's instance.
pub fn cleanup(instance: &str) {
    let filter = format!("label=beast.instance={instance}");
    let Ok(out) = Command::new("docker")
        .args(["ps", "-aq", "--filter", &filter])
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .stdout(Stdio::null())
            .status();
    }
    cleanup_networks(instance);
}

/// Removes exactly the images labelled with this run's instance (those beast built for it).
pub fn remove_images(instance: &str) {
    let filter = format!("label=beast.build-instance={instance}");
    let Ok(out) = Command::new("docker")
        .args(["images", "-q", "--filter", &filter])
        .output()
    else {
        return;
    };
    let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    ids.sort();
    ids.dedup();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rmi", "-f"])
            .args(&ids)
            .stdout(Stdio::null())
            .status();
    }
}

/// Removes exactly the networks and egress rules of this run's instance (the project's own
/// script). [`cleanup`] calls it after the containers: a network in use stays.
pub fn cleanup_networks(instance: &str) {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cleanup-instance.sh");
    let _ = Command::new("bash").arg(script).arg(instance).output();
}

/// Host ports nothing listens on right now, one per challenge (the kernel picks them).
pub fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("0.0.0.0:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string()))
        .collect()
}

/// Waits until every port answers with at least one byte; the time since `start`.
pub async fn all_answer(ports: &[u16], start: Instant) -> Duration {
    let waits = ports.iter().map(|&port| async move {
        while !answers(port).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    futures::future::join_all(waits).await;
    start.elapsed()
}

pub async fn answers(port: u16) -> bool {
    let attempt = async {
        use tokio::io::AsyncReadExt;
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut buf = [0u8; 8];
        stream.read(&mut buf).await
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Ok(read)) if read > 0
    )
}

/// A YAML flow sequence of strings.
pub fn flow(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    v.get(v.len() / 2).copied()
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
