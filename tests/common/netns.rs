//! A network namespace that plays "the outside world" for egress tests: a veth pair routed
//! through the host (host side 10.250.X.1/30, namespace side 10.250.X.2/30) and TCP listeners
//! inside it. Traffic from containers reaches it only through the host's FORWARD path, as
//! traffic to the internet would, yet never leaves the machine. Everything it made (listeners,
//! veth, namespace) is removed on Drop, pass or fail.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The static busybox that `examples/build-images.sh` installs (Debian's busybox-static).
pub const HOST_BUSYBOX: &str = "/bin/busybox";

pub struct Netns {
    /// `beast-<pid>-<n>`, as `ip netns list` shows it.
    pub name: String,
    host_if: String,
    /// The host's end of the veth pair, the namespace's gateway.
    pub host_addr: Ipv4Addr,
    /// The namespace's address, where its listeners answer.
    pub addr: Ipv4Addr,
    listeners: Vec<Child>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// True when some interface on the host already holds an address in 10.250.`a`.`b`/30.
fn slot_taken(a: u32, b: u32) -> bool {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .expect("run ip addr");
    let text = String::from_utf8_lossy(&out.stdout);
    (b..b + 4).any(|host| text.contains(&format!(" 10.250.{a}.{host}/")))
}

impl Netns {
    /// Creates the namespace, the veth pair and the routes.
    pub fn new() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let (n, a, b) = loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let slot = (pid.wrapping_mul(16) + n) % 16384;
            let (a, b) = (slot / 64, (slot % 64) * 4);
            if !slot_taken(a, b) {
                break (n, a, b);
            }
            assert!(n < 64, "no free 10.250.X.Y/30 for a test namespace");
        };
        let name = format!("beast-{pid}-{n}");
        let host_if = format!("bv{pid}x{n}h");
        let ns_if = format!("bv{pid}x{n}n");
        let host_addr = Ipv4Addr::new(10, 250, a as u8, b as u8 + 1);
        let addr = Ipv4Addr::new(10, 250, a as u8, b as u8 + 2);
        ip(&["netns", "add", &name]);
        // From here on Drop cleans up whatever was made.
        let netns = Netns {
            name,
            host_if,
            host_addr,
            addr,
            listeners: Vec::new(),
        };
        let ns = netns.name.as_str();
        ip(&[
            "link",
            "add",
            &netns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", ns]);
        ip(&[
            "addr",
            "add",
            &format!("{host_addr}/30"),
            "dev",
            &netns.host_if,
        ]);
        ip(&["link", "set", &netns.host_if, "up"]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/30"),
            "dev",
            &ns_if,
        ]);
        ip(&["-n", ns, "link", "set", &ns_if, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            &host_addr.to_string(),
        ]);
        netns
    }

    /// Starts a TCP listener on `port` inside the namespace that answers every connection with
    /// `reply` and a newline; returns once it answers from the host.
    pub fn listen(&mut self, port: u16, reply: &str) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, HOST_BUSYBOX, "nc", "-ll", "-p"])
            .arg(port.to_string())
            .args(["-e", HOST_BUSYBOX, "echo", reply])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start busybox nc in the namespace (is busybox-static installed?)");
        self.listeners.push(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.answer(port).as_deref() == Some(reply) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "listener {}:{port} in {} never answered",
                self.addr,
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the listener on `port` says to a connection from the host; None when it is not there.
    pub fn answer(&self, port: u16) -> Option<String> {
        let to = SocketAddr::from((self.addr, port));
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text.trim().to_string())
    }

    /// Runs a command inside the namespace (e.g. a "player" connecting to a published port).
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("run ip netns exec")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for child in &mut self.listeners {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting one end removes the pair; the namespace goes once no process holds it.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
