//! An engine outage: beast stays up, reports not ready, loses nothing, and reconverges.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

struct Proxy {
    child: Child,
}

impl Proxy {
    fn start(sock: &std::path::Path) -> Proxy {
        let _ = std::fs::remove_file(sock);
        let child = Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", sock.display()))
            .arg("UNIX-CONNECT:/var/run/docker.sock")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (apt-get install socat)");
        for _ in 0..50 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Proxy { child }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_engine_outage_loses_nothing_and_reconverges() {
    let mut env = Env::new("outage");
    let sock = env.dir.path().join("docker.sock");
    let proxy = Proxy::start(&sock);
    env.write("a.yaml", &echo("a", ""));
    env.write("b.yaml", &echo("b", "  replicas: 2\n"));
    let host = format!("unix://{}", sock.display());
    env.start_env(&[], &[("DOCKER_HOST", &host)]);
    env.wait_running("a");
    env.wait_running("b");
    env.wait_for("ready", Duration::from_secs(20), |env| {
        env.get_status("/readyz").is_some_and(|(c, _)| c == 200)
    });

    // Cut the engine off.
    drop(proxy);
    let _ = std::fs::remove_file(&sock);
    env.wait_for("/readyz 503", Duration::from_secs(15), |env| {
        env.get_status("/readyz").is_some_and(|(c, _)| c == 503)
    });
    // Damage while beast cannot see; desired state is intact and nothing was pruned.
    assert!(docker_ok(&["rm", "-f", &env.name("a", 1)]));
    std::thread::sleep(Duration::from_secs(3));
    assert!(env.status("a").is_some() && env.status("b").is_some());
    assert!(env.running("b", 1) && env.running("b", 2));

    // The engine returns: everything reconverges within a few seconds.
    let _proxy = Proxy::start(&sock);
    env.wait_for("a to be recreated", Duration::from_secs(15), |env| {
        env.running("a", 1)
    });
    env.wait_for("/readyz 200", Duration::from_secs(15), |env| {
        env.get_status("/readyz").is_some_and(|(c, _)| c == 200)
    });
    env.wait_running("a");
    assert!(
        env.beast.as_mut().unwrap().try_wait().unwrap().is_none(),
        "beast died during the outage"
    );
}
