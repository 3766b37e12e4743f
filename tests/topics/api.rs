//! The API end to end on the real engine: durable API-written state and lifecycle actions.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

#[test]
fn put_runs_undeploy_persists_redeploy_recreates_and_a_restart_adopts() {
    let mut env = Env::new("api");
    env.start();
    let (code, body) = env
        .call("PUT", "/api/v1/manage/challenges/web", &echo("web", ""))
        .unwrap();
    assert_eq!(code, 201, "{body}");
    env.wait_running("web");
    assert!(echo_roundtrip(env.host_ports("web")[0]));

    // A restart brings the API-created challenge back with the same container.
    let before = env.containers();
    assert!(env.stop().success());
    env.start();
    env.wait_running("web");
    assert_eq!(
        env.containers(),
        before,
        "a restart recreated the API challenge"
    );

    // Redeploy recreates even though nothing changed.
    let old = env.container_id(&env.name("web", 1)).unwrap();
    let (code, reply) = env
        .call("POST", "/api/v1/manage/challenges/web/redeploy", "")
        .unwrap();
    assert_eq!(code, 202, "{reply}");
    env.wait_task(&reply);
    env.wait_for("a new container", Duration::from_secs(20), |env| {
        env.container_id(&env.name("web", 1))
            .is_some_and(|id| id != old)
            && env.running("web", 1)
    });

    // Undeploy: gone, and still gone after a restart.
    let (code, reply) = env
        .call("POST", "/api/v1/manage/challenges/web/undeploy", "")
        .unwrap();
    assert_eq!(code, 202, "{reply}");
    env.wait_task(&reply);
    env.wait_for("no containers", Duration::from_secs(20), |env| {
        env.containers().is_empty()
    });
    assert_eq!(env.phase("web").as_deref(), Some("Stopped"));
    assert!(env.stop().success());
    env.start();
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        env.containers().is_empty(),
        "an undeployed challenge came back after a restart"
    );
    assert_eq!(env.phase("web").as_deref(), Some("Stopped"));

    // Deploy brings it back; DELETE purges it.
    let (_, reply) = env
        .call("POST", "/api/v1/manage/challenges/web/deploy", "")
        .unwrap();
    env.wait_task(&reply);
    env.wait_running("web");
    let (code, reply) = env
        .call("DELETE", "/api/v1/manage/challenges/web", "")
        .unwrap();
    assert_eq!(code, 202, "{reply}");
    env.wait_for("purged", Duration::from_secs(20), |env| {
        env.containers().is_empty() && env.status("web").is_none()
    });
}

#[test]
fn a_sigkill_during_a_burst_of_puts_loses_no_acknowledged_write() {
    let mut env = Env::new("api-kill");
    env.start();
    // 4 writers, each PUTting its own challenges with changing replicas; record what was acknowledged.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (acked, stop) = (acked.clone(), stop.clone());
        let (api, token) = (env.api.clone(), env.token.clone());
        writers.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 200 {
                let name = format!("w{w}-{}", i % 5);
                let body = manifest(
                    &name,
                    &format!("  replicas: 0\n  description: \"write {i}\"\n"),
                );
                let out = Command::new("curl")
                    .args([
                        "-s",
                        "-m",
                        "5",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "-X",
                        "PUT",
                    ])
                    .args([
                        "-H",
                        &format!("Authorization: Bearer {token}"),
                        "--data-binary",
                        &body,
                    ])
                    .arg(format!("{api}/api/v1/manage/challenges/{name}"))
                    .output();
                if let Ok(out) = out {
                    let code = String::from_utf8_lossy(&out.stdout).to_string();
                    if code == "200" || code == "201" {
                        acked.lock().unwrap().push((name, format!("write {i}")));
                    }
                }
                i += 1;
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let pid = env.beast.as_ref().unwrap().id();
    assert!(Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let _ = env.beast.take().map(|mut c| c.wait());
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 10,
        "too few writes were acknowledged to test anything: {}",
        acked.len()
    );

    // Per name, the last acknowledged write must be what the restarted beast serves.
    let mut last = std::collections::BTreeMap::new();
    for (name, what) in &acked {
        last.insert(name.clone(), what.clone());
    }
    env.start();
    for (name, what) in last {
        let (code, body) = env
            .call("GET", &format!("/api/v1/manage/challenges/{name}"), "")
            .unwrap();
        assert_eq!(code, 200, "{name} lost after SIGKILL: {body}");
        let served = body["spec"]["description"].as_str().unwrap_or("");
        // A write that was sent but not acknowledged may have landed after the last acknowledged one.
        let n = |s: &str| s.trim_start_matches("write ").parse::<u32>().unwrap_or(0);
        assert!(
            n(served) >= n(&what),
            "{name}: acknowledged {what:?} but serves {served:?}"
        );
    }
}

#[test]
fn attachments_are_served_with_type_and_etag_and_nothing_else_is() {
    let mut env = Env::new("attach");
    env.write("static/public/handout.txt", "read me\n");
    env.write("static/secret.txt", "flag{not_for_you}\n");
    env.write(
        "static/challenge.yaml",
        "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: docs\nspec:\n  description: a static challenge\n  flag: flag{x}\n  attachments: [public/handout.txt]\n",
    );
    env.start();
    env.wait_running("docs");
    let url = format!(
        "{}/api/v1/info/challenges/docs/attachments/public/handout.txt",
        env.api
    );
    let auth = format!("Authorization: Bearer {}", env.token);
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-H", &auth, &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_lowercase().contains("content-type: text/plain"),
        "{text}"
    );
    assert!(text.to_lowercase().contains("etag: \""), "{text}");
    assert!(text.ends_with("read me\n"), "{text}");
    let info = env.get_status("/api/v1/info/challenges/docs").unwrap().1;
    let listed = &info["attachments"][0];
    assert_eq!(listed["name"], "public/handout.txt");
    assert_eq!(
        listed["url"],
        "/api/v1/info/challenges/docs/attachments/public/handout.txt"
    );
    assert_eq!(listed["size"], 8);
    assert_eq!(
        listed["sha256"].as_str().map(str::len),
        Some(64),
        "{listed}"
    );
    assert!(!info.to_string().contains("flag{"), "{info}");
    for bad in [
        "secret.txt",
        "../static/secret.txt",
        "public/../secret.txt",
        "%2e%2e/secret.txt",
        "..%2fsecret.txt",
        "/etc/passwd",
    ] {
        let (code, _) = env
            .get_status(&format!("/api/v1/info/challenges/docs/attachments/{bad}"))
            .unwrap();
        assert_eq!(code, 404, "{bad} was served");
    }
}
