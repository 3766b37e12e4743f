//! The local engine as a single-node swarm, for the tests of `run --runtime swarm`.
//!
//! An engine that is already part of a swarm is used as it is and never left. One that is not
//! is made a swarm by the first test that needs it, and left by the last such test that ends
//! (a later one makes it again): no other test, and nothing outside this run, is disturbed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{docker, docker_ok, Env};

/// Tests holding a guard now, and whether this run made the swarm.
static USERS: Mutex<(usize, bool)> = Mutex::new((0, false));

/// Held for the whole of a swarm test.
pub struct SwarmGuard;

impl SwarmGuard {
    pub fn join() -> SwarmGuard {
        let mut users = USERS.lock().unwrap_or_else(|p| p.into_inner());
        if users.0 == 0 {
            let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
            if state == "inactive" {
                assert!(
                    docker_ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]),
                    "docker swarm init failed"
                );
                users.1 = true;
            } else {
                assert_eq!(state, "active", "the engine's swarm is {state}");
            }
        }
        users.0 += 1;
        SwarmGuard
    }
}

impl Drop for SwarmGuard {
    fn drop(&mut self) {
        let mut users = USERS.lock().unwrap_or_else(|p| p.into_inner());
        users.0 -= 1;
        if users.0 == 0 && users.1 {
            docker_ok(&["swarm", "leave", "--force"]);
            users.1 = false;
        }
    }
}

impl Env {
    /// Starts beast on the swarm (host-mode publishing: this kernel has no IPVS).
    pub fn start_swarm(&mut self, extra: &[&str]) {
        let mut args = vec!["--runtime", "swarm"];
        args.extend_from_slice(extra);
        self.start_with(&args);
    }

    /// The Swarm service of a challenge (`{instance}_{challenge}[_{service}]`), inspected.
    pub fn service(&self, name: &str) -> Option<Value> {
        let full = format!("{}_{name}", self.instance);
        let text = docker(&["service", "inspect", &full]);
        let list: Value = serde_json::from_str(&text).ok()?;
        list.as_array()?.first().cloned()
    }

    /// `name → version index` of this instance's services.
    pub fn service_versions(&self) -> Vec<(String, u64)> {
        let filter = format!("label=beast.instance={}", self.instance);
        let mut out: Vec<(String, u64)> = docker(&[
            "service",
            "ls",
            "--filter",
            &filter,
            "--format",
            "{{.Name}}",
        ])
        .lines()
        .filter_map(|name| {
            let v = docker(&["service", "inspect", name, "--format", "{{.Version.Index}}"]);
            Some((name.to_string(), v.parse().ok()?))
        })
        .collect();
        out.sort();
        out
    }

    /// The status containers of a challenge as (name, state, node).
    pub fn replicas(&self, name: &str) -> Vec<(String, String, String)> {
        self.status(name)
            .and_then(|s| s["status"]["containers"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|c| {
                let text = |k: &str| c[k].as_str().unwrap_or("").to_string();
                (text("name"), text("state"), text("node"))
            })
            .collect()
    }

    /// Waits for `what`, up to `secs` seconds.
    pub fn wait_secs(&self, what: &str, secs: u64, check: impl FnMut(&Env) -> bool) {
        self.wait_for(what, Duration::from_secs(secs), check);
    }
}

/// Polls `check` for up to `timeout`; true once it holds.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Removes a Swarm service a test made itself (a foreign instance's), pass or fail.
pub struct RemoveService(pub String);

impl Drop for RemoveService {
    fn drop(&mut self) {
        docker_ok(&["service", "rm", &self.0]);
    }
}

/// What 127.0.0.1:`port` says before it closes (empty when nothing answers).
pub fn banner(port: u16) -> String {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    ) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}
