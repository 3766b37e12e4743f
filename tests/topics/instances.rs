//! Per-team instances (SPEC §8) on the real engine: concurrent creates with their own ports and
//! flags, the limits, player scoping, healing that keeps port and flag, renewals, expiry (also
//! across a restart of beast), adoption, flag lookup and isolation between teams.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(60);

/// A per-team challenge whose main serves its flag file on 1337; `instances` is the body of
/// `spec.instances` (indented 4 spaces).
fn per_team(name: &str, instances: &str) -> String {
    manifest(
        name,
        &format!(
            "  command: [sh, -c, \"nc -ll -p 1337 -e cat /flag.txt\"]\n  ports: [{{port: 1337}}]\n  instances:\n    perTeam: true\n{instances}    flag: {{template: \"flag{{{name}_{{random}}}}\", env: FLAG, file: /flag.txt}}\n"
        ),
    )
}

fn read_port(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let text = text.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn host_port(view: &Value) -> Option<u16> {
    view["connection"]
        .as_array()?
        .first()?
        .get("hostPort")?
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
}

/// Waits until the team's instance of `challenge` is Running with a host port that serves a
/// flag; returns (view, port, flag).
fn wait_served(env: &Env, token: &str, challenge: &str) -> (Value, u16, String) {
    let mut out = None;
    env.wait_for(&format!("{challenge} served for a team"), WAIT, |env| {
        let Some((200, view, _)) =
            env.call_as(token, "GET", &format!("/api/v1/instances/{challenge}"), "")
        else {
            return false;
        };
        if view["phase"] != "Running" {
            return false;
        }
        let Some(port) = host_port(&view) else {
            return false;
        };
        match read_port(port) {
            Some(flag) => {
                out = Some((view, port, flag));
                true
            }
            None => false,
        }
    });
    out.unwrap()
}

fn instance_containers(env: &Env, team: &str) -> Vec<String> {
    let filter = format!("label=beast.instance={}", env.instance);
    let team = format!("label=beast.team={team}");
    docker(&[
        "ps",
        "-a",
        "--filter",
        &filter,
        "--filter",
        &team,
        "--format",
        "{{.Names}}",
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn ten_teams_get_their_own_ports_and_flags_and_cannot_reach_each_other() {
    let _heavy = heavy();
    let mut env = Env::new("inst-ten");
    env.write(
        "pwn.yaml",
        &per_team("pwn", "    ttl: 30m\n    maxTotal: 20\n"),
    );
    env.start();
    env.wait_for("pwn known", WAIT, |env| env.status("pwn").is_some());
    // A per-team challenge runs nothing until a team asks.
    assert!(env.containers().is_empty());
    let teams: Vec<String> = (1..=10).map(|i| format!("team-{i}")).collect();
    let tokens: Vec<String> = teams.iter().map(|t| env.player_token(t)).collect();
    let codes: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = tokens
            .iter()
            .map(|token| {
                let env = &env;
                s.spawn(move || {
                    env.call_as(token, "POST", "/api/v1/instances/pwn", "")
                        .map(|(code, _, _)| code)
                        .unwrap_or(0)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(codes.iter().all(|c| *c == 201 || *c == 202), "{codes:?}");
    let mut ports = Vec::new();
    let mut flags = Vec::new();
    for (team, token) in teams.iter().zip(&tokens) {
        let (view, port, flag) = wait_served(&env, token, "pwn");
        assert_eq!(view["team"], team.as_str());
        assert!(
            flag.starts_with("flag{pwn_") && flag.len() == "flag{pwn_}".len() + 16,
            "{flag}"
        );
        // The player's own view never carries the flag.
        let (_, list, _) = env.call_as(token, "GET", "/api/v1/instances", "").unwrap();
        assert!(!list.to_string().contains(&flag), "{list}");
        let items = list["items"].as_array().unwrap();
        assert_eq!(
            items.len(),
            1,
            "a player sees only its team's instance: {list}"
        );
        ports.push(port);
        flags.push(flag);
    }
    let mut unique = ports.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 10, "{ports:?}");
    let mut unique = flags.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 10);
    // Labels and the env delivery.
    let c1 = instance_containers(&env, "team-1");
    assert_eq!(c1.len(), 1, "{c1:?}");
    let env_flag = docker(&["exec", &c1[0], "sh", "-c", "echo $FLAG"]);
    assert_eq!(env_flag, flags[0]);
    // A player is scoped: no status, no manage, no events.
    for path in ["/api/v1/status/challenges", "/api/v1/manage/challenges"] {
        let (code, _, _) = env.call_as(&tokens[0], "GET", path, "").unwrap();
        assert_eq!(code, 403, "{path}");
    }
    let (code, _, _) = env
        .call_as(&tokens[0], "GET", "/api/v1/info/challenges", "")
        .unwrap();
    assert_eq!(code, 200);
    // Flag lookup finds the team.
    let body = serde_json::json!({"flag": flags[3]}).to_string();
    let (code, owner, _) = env
        .call_as(&env.token, "POST", "/api/v1/manage/flags/lookup", &body)
        .unwrap();
    assert_eq!(code, 200, "{owner}");
    assert_eq!(owner["team"], "team-4");
    let (code, _, _) = env
        .call_as(&tokens[0], "POST", "/api/v1/manage/flags/lookup", &body)
        .unwrap();
    assert_eq!(code, 403, "a player may not look flags up");
    // Instances of two teams cannot reach each other.
    let c2 = instance_containers(&env, "team-2");
    let ip2 = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &c2[0],
    ]);
    let out = std::process::Command::new("docker")
        .args([
            "exec",
            &c1[0],
            "sh",
            "-c",
            &format!("nc -w 3 {ip2} 1337 </dev/null"),
        ])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("flag{"),
        "team-1 read team-2's flag"
    );
}

#[test]
fn limits_renewals_deletion_and_healing() {
    let mut env = Env::new("inst-limits");
    env.write(
        "web.yaml",
        &per_team(
            "web",
            "    ttl: 10m\n    maxRenewals: 1\n    maxPerTeam: 1\n    maxTotal: 2\n",
        ),
    );
    env.start();
    env.wait_for("web known", WAIT, |env| env.status("web").is_some());
    let a = env.player_token("a");
    let b = env.player_token("b");
    let (code, first, _) = env
        .call_as(&a, "POST", "/api/v1/instances/web", "")
        .unwrap();
    assert!(code == 201 || code == 202, "{code} {first}");
    let id = first["id"].as_str().unwrap().to_string();
    // maxPerTeam: 409 naming the live instance.
    let (code, body, _) = env
        .call_as(&a, "POST", "/api/v1/instances/web", "")
        .unwrap();
    assert_eq!(code, 409, "{body}");
    assert!(body.to_string().contains(&id), "{body}");
    // maxTotal: 429 with Retry-After.
    env.call_as(&b, "POST", "/api/v1/instances/web", "")
        .unwrap();
    let c = env.player_token("c");
    let (code, body, retry) = env
        .call_as(&c, "POST", "/api/v1/instances/web", "")
        .unwrap();
    assert_eq!(code, 429, "{body}");
    assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|s| s >= 1)));
    // Unknown or not per-team: 404.
    let (code, _, _) = env
        .call_as(&a, "POST", "/api/v1/instances/nope", "")
        .unwrap();
    assert_eq!(code, 404);

    // Healing keeps the port and the flag.
    let (view, port, flag) = wait_served(&env, &a, "web");
    let containers = instance_containers(&env, "a");
    let old = env.container_id(&containers[0]).unwrap();
    assert!(docker_ok(&["rm", "-f", &containers[0]]));
    env.wait_for("the instance to be healed", WAIT, |env| {
        env.container_id(&containers[0]).is_some_and(|id| id != old)
    });
    let (healed, port2, flag2) = wait_served(&env, &a, "web");
    assert_eq!((port2, flag2.as_str()), (port, flag.as_str()));
    assert_eq!(healed["id"], view["id"]);

    // An edit of the challenge rolls out to live instances: replaced, same port, flag, expiry.
    let before = env.container_id(&containers[0]).unwrap();
    env.write(
        "web.yaml",
        &per_team(
            "web",
            "    ttl: 10m\n    maxRenewals: 1\n    maxPerTeam: 1\n    maxTotal: 2\n",
        )
        .replace("  ports:", "  env: {EDITED: \"1\"}\n  ports:"),
    );
    env.wait_for("the instance to be replaced", WAIT, |env| {
        env.container_id(&containers[0])
            .is_some_and(|id| id != before)
    });
    let (rolled, port3, flag3) = wait_served(&env, &a, "web");
    assert_eq!((port3, flag3.as_str()), (port, flag.as_str()));
    assert_eq!(rolled["expiresAt"], view["expiresAt"]);
    assert_eq!(
        docker(&["exec", &containers[0], "sh", "-c", "echo $EDITED"]),
        "1"
    );

    // Renew moves the expiry, once; the second is refused.
    std::thread::sleep(Duration::from_secs(1));
    let (code, renewed, _) = env
        .call_as(&a, "POST", "/api/v1/instances/web/renew", "")
        .unwrap();
    assert_eq!(code, 200, "{renewed}");
    assert_eq!(renewed["renewals"], 1);
    assert!(
        renewed["expiresAt"].as_str() > view["expiresAt"].as_str(),
        "{renewed} {view}"
    );
    let (code, _, _) = env
        .call_as(&a, "POST", "/api/v1/instances/web/renew", "")
        .unwrap();
    assert_eq!(code, 409);

    // Delete: its containers and network go.
    let (code, _, _) = env
        .call_as(&a, "DELETE", "/api/v1/instances/web", "")
        .unwrap();
    assert_eq!(code, 202);
    env.wait_for("a's instance to go", WAIT, |env| {
        instance_containers(env, "a").is_empty()
            && !networks_of(&env.instance)
                .iter()
                .any(|n| n.contains(&format!(".{id}")))
    });
    let (code, _, _) = env.call_as(&a, "GET", "/api/v1/instances/web", "").unwrap();
    assert_eq!(code, 404);
}

#[test]
fn expiry_removes_instances_also_across_a_restart_and_a_restart_adopts() {
    let mut env = Env::new("inst-ttl");
    env.write("short.yaml", &per_team("short", "    ttl: 8s\n"));
    env.write("long.yaml", &per_team("long", "    ttl: 30m\n"));
    env.start();
    env.wait_for("both known", WAIT, |env| {
        env.status("short").is_some() && env.status("long").is_some()
    });
    let t = env.player_token("t");
    env.call_as(&t, "POST", "/api/v1/instances/long", "")
        .unwrap();
    let (_, _, long_flag) = wait_served(&env, &t, "long");
    let long_container = instance_containers(&env, "t")[0].clone();
    let long_id = env.container_id(&long_container).unwrap();
    // Expiry while beast runs: the instance and its network go within seconds.
    let (_, short, _) = env
        .call_as(&t, "POST", "/api/v1/instances/short", "")
        .unwrap();
    let short_id = short["id"].as_str().unwrap().to_string();
    env.wait_for("the short instance to expire", WAIT, |env| {
        !networks_of(&env.instance)
            .iter()
            .any(|n| n.contains(&short_id))
            && env
                .call_as(&t, "GET", "/api/v1/instances/short", "")
                .is_some_and(|(code, _, _)| code == 404)
    });
    // Expiry while beast is down.
    let (_, short, _) = env
        .call_as(&t, "POST", "/api/v1/instances/short", "")
        .unwrap();
    let short_id = short["id"].as_str().unwrap().to_string();
    let (_, _, short_flag) = wait_served(&env, &t, "short");
    env.stop();
    std::thread::sleep(Duration::from_secs(9));
    env.start();
    env.wait_for("the instance that expired meanwhile to go", WAIT, |env| {
        !networks_of(&env.instance)
            .iter()
            .any(|n| n.contains(&short_id))
    });
    // The live one was adopted, not recreated, and keeps its flag.
    let (_, port, flag) = wait_served(&env, &t, "long");
    assert_eq!(flag, long_flag);
    assert_eq!(env.container_id(&long_container), Some(long_id));
    assert!(read_port(port).is_some());
    // Lookup finds the team for an expired instance's flag.
    let body = serde_json::json!({"flag": short_flag}).to_string();
    let (code, owner, _) = env
        .call_as(&env.token, "POST", "/api/v1/manage/flags/lookup", &body)
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(owner["instance"], short_id.as_str());
}
