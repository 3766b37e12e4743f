//! Harness for integration tests on the real Docker engine.
//!
//! Each test gets its own `--instance` id, manifest dir, state dir, listen port and host-port
//! block, runs the real `beast` binary, and removes exactly its own containers (label filter on
//! its instance id) when it ends — pass or fail.

#![allow(dead_code)]

pub mod chaos;
pub mod netns;
pub mod swarm;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BUSYBOX: &str = "beast-examples/busybox:1";

/// The JWT secret every test operator runs with (`BEAST_JWT_SECRET`).
pub const TEST_SECRET: &str = "beast-integration-tests-secret-0123456789";

/// An admin token for [`TEST_SECRET`], as `beast token --role admin` would mint it.
pub fn admin_token() -> String {
    let keys = beast::auth::Keys::new(TEST_SECRET.as_bytes()).unwrap();
    beast::auth::mint(
        &keys,
        beast::auth::Role::Admin,
        "tests",
        Duration::from_secs(6 * 3600),
    )
    .unwrap()
}

/// Serialises the tests that load the engine hardest (chaos, mass crash loops): run side by side
/// on a 2-core host they stall each other's engine requests for minutes, which measures the host,
/// not beast. Hold the guard for the whole test.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Builds the images once per test run (the project's own script; nothing is pulled).
pub fn images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/build-images.sh");
        let out = Command::new("bash")
            .arg(script)
            .output()
            .expect("run examples/build-images.sh");
        assert!(
            out.status.success(),
            "build-images.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A block of 40 host ports per test: 0..20 for allocation, 20..40 for fixed host ports.
/// Below the kernel's ephemeral range (32768+), where outgoing connections could hold a port,
/// and below beast's default range (30000+).
fn port_block() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let pid_offset = (std::process::id() % 24) as u16 * 400;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    20000 + ((pid_offset + n * 40) % 9600)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// One test's world.
pub struct Env {
    pub instance: String,
    pub dir: tempfile::TempDir,
    pub manifests: PathBuf,
    pub state: PathBuf,
    pub api: String,
    pub listen: u16,
    pub ports: u16,
    pub beast: Option<Child>,
    pub extra_cleanup: Vec<String>,
    /// Sent as `Authorization: Bearer` by [`Env::get_status`].
    pub token: String,
    /// `--resync` of the beast it starts (short by default, so tests do not wait for the net).
    pub resync: &'static str,
}

impl Env {
    pub fn new(name: &str) -> Env {
        images();
        let dir = tempfile::tempdir().unwrap();
        let manifests = dir.path().join("challenges");
        std::fs::create_dir_all(&manifests).unwrap();
        let state = dir.path().join("state");
        let listen = free_port();
        let instance = format!("t-{name}-{}", std::process::id());
        Env {
            instance,
            manifests,
            state,
            api: format!("http://127.0.0.1:{listen}"),
            listen,
            ports: port_block(),
            beast: None,
            dir,
            extra_cleanup: Vec::new(),
            token: admin_token(),
            resync: "2s",
        }
    }

    /// A fixed host port of this test's block (i < 20).
    pub fn fixed_port(&self, i: u16) -> u16 {
        self.ports + 20 + i
    }

    pub fn port_range(&self) -> String {
        format!("{}-{}", self.ports, self.ports + 19)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.manifests.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Write-then-rename, as editors and git do.
        let tmp = path.with_extension("tmp~");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.manifests.join(rel)).unwrap();
    }

    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    pub fn start_with(&mut self, extra: &[&str]) {
        self.start_env(extra, &[]);
    }

    /// Starts beast with extra flags and environment variables (e.g. `DOCKER_HOST`).
    pub fn start_env(&mut self, extra: &[&str], vars: &[(&str, &str)]) {
        assert!(self.beast.is_none(), "beast already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("beast.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_beast"))
            .args(["run", "--manifests"])
            .arg(&self.manifests)
            .arg("--state-dir")
            .arg(&self.state)
            .args([
                "--instance",
                &self.instance,
                "--listen",
                &format!("127.0.0.1:{}", self.listen),
            ])
            .args([
                "--port-range",
                &self.port_range(),
                "--resync",
                self.resync,
                "--workers",
                "4",
            ])
            .args(extra)
            .env("BEAST_JWT_SECRET", TEST_SECRET)
            .envs(vars.iter().copied())
            .env("BEAST_LOG", "beast=debug,info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start beast");
        self.beast = Some(child);
        self.wait_for("beast to answer /healthz", Duration::from_secs(20), |env| {
            env.get_status("/healthz")
                .map(|(code, _)| code == 200)
                .unwrap_or(false)
        });
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.beast.take().expect("beast running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("beast did not exit within 20s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("beast.log")).unwrap_or_default()
    }

    pub fn get_status(&self, path: &str) -> Option<(u16, Value)> {
        self.call("GET", path, "")
    }

    /// Any request with the admin token: (status, JSON body).
    pub fn call(&self, method: &str, path: &str, body: &str) -> Option<(u16, Value)> {
        let url = format!("{}{}", self.api, path);
        let auth = format!("Authorization: Bearer {}", self.token);
        let out = Command::new("curl")
            .args([
                "-s",
                "-m",
                "10",
                "-X",
                method,
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                "-H",
                &auth,
            ])
            .args([
                "-H",
                "Content-Type: application/yaml",
                "--data-binary",
                body,
                &url,
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n')?;
        let code: u16 = code.trim().parse().ok()?;
        Some((code, serde_json::from_str(body).unwrap_or(Value::Null)))
    }

    /// Any request with `token`: (status, JSON body, the `Retry-After` header if any).
    pub fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: &str,
    ) -> Option<(u16, Value, Option<String>)> {
        let url = format!("{}{}", self.api, path);
        let auth = format!("Authorization: Bearer {token}");
        let out = Command::new("curl")
            .args([
                "-s",
                "-m",
                "30",
                "-X",
                method,
                "-D",
                "/dev/stderr",
                "-o",
                "-",
            ])
            .args(["-w", "\n%{http_code}", "-H", &auth])
            .args(["-H", "Content-Type: application/json"])
            .args(if body.is_empty() {
                vec![]
            } else {
                vec!["--data-binary", body]
            })
            .arg(&url)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n')?;
        let code: u16 = code.trim().parse().ok()?;
        let headers = String::from_utf8_lossy(&out.stderr).to_string();
        let retry_after = headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("retry-after")
                .then(|| v.trim().to_string())
        });
        Some((
            code,
            serde_json::from_str(body).unwrap_or(Value::Null),
            retry_after,
        ))
    }

    /// A player token for `team`, minted by the admin through `POST /api/v1/auth/token`.
    pub fn player_token(&self, team: &str) -> String {
        let body = serde_json::json!({"role": "player", "team": team, "subject": team}).to_string();
        let (code, reply, _) = self
            .call_as(&self.token, "POST", "/api/v1/auth/token", &body)
            .expect("mint a player token");
        assert!(
            code == 200 || code == 201,
            "minting a player token: {code} {reply}"
        );
        reply["token"].as_str().expect("a token").to_string()
    }

    /// Waits for a lifecycle task to succeed.
    pub fn wait_task(&self, reply: &Value) {
        let id = reply["task"]["id"].as_str().expect("a task").to_string();
        self.wait_for(&format!("task {id}"), Duration::from_secs(60), |env| {
            env.get_status(&format!("/api/v1/status/tasks/{id}"))
                .is_some_and(|(_, t)| t["state"] == "succeeded")
        });
    }

    /// The status object of a challenge (SPEC §6), if beast knows it.
    pub fn status(&self, name: &str) -> Option<Value> {
        match self.get_status(&format!("/api/v1/status/challenges/{name}")) {
            Some((200, v)) => Some(v),
            _ => None,
        }
    }

    pub fn phase(&self, name: &str) -> Option<String> {
        self.status(name)
            .and_then(|s| s["status"]["phase"].as_str().map(str::to_string))
    }

    pub fn condition(&self, name: &str, kind: &str) -> Option<Value> {
        let s = self.status(name)?;
        s["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == kind)
            .cloned()
    }

    /// Waits until `name` is Running with all replicas up, and returns its status.
    pub fn wait_running(&self, name: &str) -> Value {
        self.wait_for(
            &format!("{name} to be Running"),
            Duration::from_secs(60),
            |env| env.phase(name).as_deref() == Some("Running"),
        );
        self.status(name).unwrap()
    }

    pub fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut(&Env) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if check(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}\n--- beast log ---\n{}",
            self.log()
        );
    }

    /// `name → id` of this instance's containers, any state.
    pub fn containers(&self) -> Vec<(String, String, String)> {
        let filter = format!("label=beast.instance={}", self.instance);
        docker(&[
            "ps",
            "-a",
            "--filter",
            &filter,
            "--format",
            "{{.Names}} {{.ID}} {{.State}}",
        ])
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((
                parts.next()?.to_string(),
                parts.next()?.to_string(),
                parts.next()?.to_string(),
            ))
        })
        .collect()
    }

    /// The full name of a replica's container.
    pub fn name(&self, challenge: &str, replica: u32) -> String {
        format!("{}_{challenge}_{replica}", self.instance)
    }

    /// Whether the replica's container is running.
    pub fn running(&self, challenge: &str, replica: u32) -> bool {
        let name = self.name(challenge, replica);
        self.containers()
            .iter()
            .any(|(n, _, s)| *n == name && s == "running")
    }

    /// The history reasons of a challenge's status.
    pub fn event_reasons(&self, name: &str) -> Vec<String> {
        self.status(name)
            .and_then(|s| s["status"]["events"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e["reason"].as_str().map(str::to_string))
            .collect()
    }

    pub fn container_id(&self, name: &str) -> Option<String> {
        self.containers()
            .into_iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, id, _)| id)
    }

    /// Host ports of a challenge's containers, from its status.
    pub fn host_ports(&self, name: &str) -> Vec<u16> {
        let Some(s) = self.status(name) else {
            return vec![];
        };
        s["status"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["hostPort"].as_u64().map(|p| p as u16))
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut child) = self.beast.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let filter = format!("label=beast.instance={}", self.instance);
        let ids = docker(&["ps", "-aq", "--filter", &filter]);
        for id in ids.lines().filter(|l| !l.is_empty()) {
            docker_ok(&["rm", "-f", id]);
        }
        for name in &self.extra_cleanup {
            docker_ok(&["rm", "-f", name]);
        }
        remove_networks_and_rules(&self.instance);
        self.remove_built_images();
    }
}

/// The names of `instance`'s networks.
pub fn networks_of(instance: &str) -> Vec<String> {
    let filter = format!("label=beast.instance={instance}");
    docker(&[
        "network",
        "ls",
        "--filter",
        &filter,
        "--format",
        "{{.Name}}",
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

/// Removes the networks and egress rules of `instance` (the project's own script, which matches
/// only that instance's labels and rule comments).
pub fn remove_networks_and_rules(instance: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cleanup-instance.sh");
    let _ = Command::new("bash").arg(script).arg(instance).output();
}

/// A manifest of a busybox challenge.
pub fn manifest(name: &str, body: &str) -> String {
    format!(
        "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: {name}\nspec:\n  image: {BUSYBOX}\n{body}"
    )
}

/// A TCP echo service on container port 1337.
pub fn echo(name: &str, extra: &str) -> String {
    manifest(
        name,
        &format!(
            "  command: [nc, -ll, -p, \"1337\", -e, cat]\n  ports:\n    - port: 1337\n{extra}"
        ),
    )
}

/// An httpd on container port 8080 whose probe reads /health, a file `rm /tmp/www/health`
/// inside the container breaks (restarting the container makes it again).
pub fn probed_web(name: &str) -> String {
    manifest(
        name,
        "  command: [sh, -c, \"mkdir -p /tmp/www && echo ok > /tmp/www/health && exec httpd -f -p 8080 -h /tmp/www\"]\n  ports:\n    - port: 8080\n  healthcheck:\n    http: {port: 8080, path: /health}\n    interval: 500ms\n    timeout: 1s\n    retries: 2\n    startPeriod: 500ms\n",
    )
}

/// Sends a line to 127.0.0.1:port and reads it back; retries while the service comes up.
pub fn echo_roundtrip(port: u16) -> bool {
    use std::io::{BufRead, BufReader, Write};
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], port).into(),
            Duration::from_secs(2),
        ) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            if s.write_all(b"ping\n").is_ok() {
                let mut line = String::new();
                if BufReader::new(&s).read_line(&mut line).is_ok() && line.trim() == "ping" {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// GETs http://127.0.0.1:port/path and returns the body; retries while the service comes up.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let out = Command::new("curl")
            .args(["-sf", "-m", "3", &format!("http://127.0.0.1:{port}{path}")])
            .output()
            .ok()?;
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).to_string());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

impl Env {
    /// Removes the images built for this test's instance (after its containers are gone).
    pub fn remove_built_images(&self) {
        let filter = format!("label=beast.build-instance={}", self.instance);
        for id in docker(&["images", "-q", "--filter", &filter])
            .lines()
            .filter(|l| !l.is_empty())
        {
            docker_ok(&["rmi", "-f", id]);
        }
    }
}
