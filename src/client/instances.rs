//! The client verbs of per-team instances (`beast instances list|get|create|renew|delete`) and
//! of the flag lookup (`beast flags lookup FLAG`), speaking the routes of SPEC §8, with their
//! table rendering. The server decides whose instances a token may see; this module only asks
//! and prints.

use std::io::Write;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::render::{self, PortView};
use super::verbs::segment;
use super::{Client, ClientError, EXIT_OK};
use crate::cli::OutputFormat;

/// An instance as the server reports it (every field defaulted, as in [`render`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct InstanceView {
    pub id: String,
    pub challenge: String,
    pub team: String,
    pub phase: String,
    pub connection: Vec<PortView>,
    pub created_at: String,
    pub expires_at: String,
    pub renewals: u32,
    pub max_renewals: u32,
}

/// Who a flag was issued to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FlagOwnerView {
    pub challenge: String,
    pub team: String,
    pub instance: String,
}

/// What to do with one team's instance of a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceVerb {
    Get,
    Create,
    Renew,
    Delete,
}

impl InstanceVerb {
    fn method_and_suffix(self) -> (Method, &'static str) {
        match self {
            InstanceVerb::Get => (Method::GET, ""),
            InstanceVerb::Create => (Method::POST, ""),
            InstanceVerb::Renew => (Method::POST, "/renew"),
            InstanceVerb::Delete => (Method::DELETE, ""),
        }
    }
}

/// The instances table: one row per instance.
pub fn instances_table(items: &[InstanceView]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            vec![
                i.challenge.clone(),
                i.team.clone(),
                i.id.clone(),
                i.phase.clone(),
                connection(&i.connection),
                i.expires_at.clone(),
                format!("{}/{}", i.renewals, i.max_renewals),
            ]
        })
        .collect();
    render::table(
        &[
            "CHALLENGE",
            "TEAM",
            "ID",
            "PHASE",
            "PORTS",
            "EXPIRES",
            "RENEWALS",
        ],
        &rows,
    )
}

/// `31337->1337/tcp,...`, or `-` while the instance has no published port yet.
fn connection(ports: &[PortView]) -> String {
    if ports.is_empty() {
        return "-".to_string();
    }
    ports
        .iter()
        .map(|p| {
            let protocol = if p.protocol.is_empty() {
                "tcp"
            } else {
                &p.protocol
            };
            format!("{}->{}/{protocol}", p.host_port, p.port)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The line under a single instance's table: what happened and what to do next.
pub fn outcome(verb: InstanceVerb, status: StatusCode, view: &InstanceView) -> Option<String> {
    let who = format!(
        "instance {} of {} for team {}",
        view.id, view.challenge, view.team
    );
    match verb {
        InstanceVerb::Create if status == StatusCode::ACCEPTED => Some(format!(
            "{who} created; still starting ({}): 'beast instances get {}' shows when it runs",
            view.phase, view.challenge
        )),
        InstanceVerb::Create => Some(format!("{who} created and running")),
        InstanceVerb::Renew => Some(format!(
            "{who} renewed ({} of {}); expires {}",
            view.renewals, view.max_renewals, view.expires_at
        )),
        InstanceVerb::Delete => Some(format!("{who} deleted")),
        InstanceVerb::Get => None,
    }
}

/// `instances list [--team T] [--challenge C]`.
pub async fn list(
    client: &Client,
    team: Option<&str>,
    challenge: Option<&str>,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<u8, ClientError> {
    let mut query = Vec::new();
    if let Some(team) = team {
        query.push(("team", team));
    }
    if let Some(challenge) = challenge {
        query.push(("challenge", challenge));
    }
    let request = client
        .request(Method::GET, "/api/v1/instances")
        .query(&query);
    let (_, value) = client.send_json(request).await?;
    if let Some(text) = render::structured(&value, format)? {
        out.write_all(text.as_bytes())?;
        return Ok(EXIT_OK);
    }
    let items: Vec<InstanceView> = render::decode(
        value.get("items").unwrap_or(&Value::Null),
        "a list of instances",
    )?;
    if items.is_empty() {
        writeln!(out, "No instances found.")?;
    } else {
        out.write_all(instances_table(&items).as_bytes())?;
    }
    Ok(EXIT_OK)
}

/// `instances get|create|renew|delete NAME [--team T]`.
pub async fn act(
    client: &Client,
    verb: InstanceVerb,
    name: &str,
    team: Option<&str>,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<u8, ClientError> {
    let (method, suffix) = verb.method_and_suffix();
    let path = format!("/api/v1/instances/{}{suffix}", segment(name));
    let mut request = client.request(method, &path);
    if let Some(team) = team {
        request = request.query(&[("team", team)]);
    }
    let (status, value) = client.send_json(request).await?;
    if let Some(text) = render::structured(&value, format)? {
        out.write_all(text.as_bytes())?;
        return Ok(EXIT_OK);
    }
    let view: InstanceView = render::decode(&value, "an instance")?;
    out.write_all(instances_table(std::slice::from_ref(&view)).as_bytes())?;
    if let Some(line) = outcome(verb, status, &view) {
        writeln!(out, "{line}")?;
    }
    Ok(EXIT_OK)
}

/// `flags lookup FLAG`: the owner, or the server's 404 as an error (exit 1).
pub async fn lookup(
    client: &Client,
    flag: &str,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<u8, ClientError> {
    let request = client
        .request(Method::POST, "/api/v1/manage/flags/lookup")
        .json(&serde_json::json!({ "flag": flag }));
    let (_, value) = client.send_json(request).await?;
    if let Some(text) = render::structured(&value, format)? {
        out.write_all(text.as_bytes())?;
        return Ok(EXIT_OK);
    }
    let owner: FlagOwnerView = render::decode(&value, "a flag owner")?;
    writeln!(
        out,
        "issued to team {} (challenge {}, instance {})",
        owner.team, owner.challenge, owner.instance
    )?;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(phase: &str, ports: Vec<PortView>) -> InstanceView {
        InstanceView {
            id: "0a1b2c3d".into(),
            challenge: "pwn".into(),
            team: "team-1".into(),
            phase: phase.into(),
            connection: ports,
            created_at: "2025-01-01T00:00:00Z".into(),
            expires_at: "2025-01-01T00:30:00Z".into(),
            renewals: 1,
            max_renewals: 3,
        }
    }

    #[test]
    fn the_table_shows_ports_expiry_and_renewals() {
        let ports = vec![PortView {
            port: 1337,
            host_port: 31337,
            protocol: String::new(),
        }];
        let text = instances_table(&[view("Running", ports), view("Pending", Vec::new())]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("CHALLENGE  TEAM    ID        PHASE    PORTS"),
            "{text}"
        );
        assert!(lines[1].contains("31337->1337/tcp"), "{text}");
        assert!(lines[1].contains("2025-01-01T00:30:00Z  1/3"), "{text}");
        assert!(lines[2].contains("Pending  -"), "{text}");
    }

    #[test]
    fn a_view_from_the_server_decodes_and_unknown_fields_are_ignored() {
        let value = serde_json::json!({
            "id": "x", "challenge": "web", "team": "t", "phase": "Running",
            "connection": [{"port": 80, "hostPort": 30001, "protocol": "tcp"}],
            "createdAt": "a", "expiresAt": "b", "renewals": 0, "maxRenewals": 2, "later": true
        });
        let v: InstanceView = render::decode(&value, "an instance").unwrap();
        assert_eq!(v.connection[0].host_port, 30001);
        assert_eq!(v.max_renewals, 2);
    }

    #[test]
    fn outcomes_say_what_happened() {
        let v = view("Pending", Vec::new());
        let started = outcome(InstanceVerb::Create, StatusCode::ACCEPTED, &v).unwrap();
        assert!(started.contains("still starting (Pending)"), "{started}");
        assert!(started.contains("beast instances get pwn"), "{started}");
        let running = outcome(InstanceVerb::Create, StatusCode::CREATED, &v).unwrap();
        assert!(running.ends_with("created and running"), "{running}");
        let renewed = outcome(InstanceVerb::Renew, StatusCode::OK, &v).unwrap();
        assert!(renewed.contains("renewed (1 of 3)"), "{renewed}");
        assert_eq!(outcome(InstanceVerb::Get, StatusCode::OK, &v), None);
    }

    /// The verbs against the real router (no engine: a task plays the reconciler and marks
    /// every instance Running).
    #[tokio::test]
    async fn the_verbs_against_the_real_api() {
        use crate::api::{router, AppState};
        use crate::auth::{mint, mint_for_team, Auth, Keys, Role};
        use crate::manifest::{self, DocOutcome};
        use std::sync::Arc;
        use std::time::Duration;

        const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
        let keys = Keys::new(SECRET).unwrap();
        let mut state = AppState::for_tests(Auth::enabled(keys.clone()));
        let yaml = "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: pwn}\nspec:\n  image: img\n  instances:\n    perTeam: true\n    ttl: 10m\n    maxRenewals: 1\n    flag: {template: 'flag{p_{random}}', env: FLAG}\n";
        let root = std::path::Path::new("/");
        for doc in manifest::parse_str(yaml, "t", root, root).docs {
            if let DocOutcome::Valid { challenge, raw, .. } = doc {
                state.store.apply_api(challenge, *raw, 1).unwrap();
            }
        }
        let instances = Arc::new(
            crate::instances::Instances::open(
                &state.api_dir,
                state.store.clone(),
                state.status.clone(),
                crate::instances::RateLimit::default(),
            )
            .unwrap(),
        );
        state.instances = Some(instances.clone());
        let status = state.status.clone();
        let marker = instances.clone();
        let runner = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                for v in marker.list(None, None) {
                    status.update(&crate::model::instance_key(&v.challenge, &v.id), |s| {
                        s.phase = crate::status::Phase::Running
                    });
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = format!("http://{}", listener.local_addr().unwrap());
        let serve = tokio::spawn(async move { axum::serve(listener, router(state)).await });

        let ttl = Duration::from_secs(600);
        let player = mint_for_team(&keys, Role::Player, "t1", Some("t1"), ttl).unwrap();
        let author = mint(&keys, Role::Author, "org", ttl).unwrap();
        let as_player = Client::new(&server, Some(&player)).unwrap();
        let as_author = Client::new(&server, Some(&author)).unwrap();
        let table = OutputFormat::Table;

        let mut out = Vec::new();
        act(
            &as_player,
            InstanceVerb::Create,
            "pwn",
            None,
            table,
            &mut out,
        )
        .await
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("created and running"), "{text}");
        assert!(!text.contains("flag{"), "{text}");

        let mut out = Vec::new();
        act(
            &as_player,
            InstanceVerb::Renew,
            "pwn",
            None,
            OutputFormat::Json,
            &mut out,
        )
        .await
        .unwrap();
        let json: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["renewals"], 1);
        // Out of renewals: the server's 409 comes back as an error (exit 1).
        let err = act(
            &as_player,
            InstanceVerb::Renew,
            "pwn",
            None,
            table,
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("(409 Conflict)"), "{err}");
        assert_eq!(err.exit_code(), super::super::EXIT_FAILED);

        // The author lists every team's and names the team to act.
        let mut out = Vec::new();
        list(&as_author, None, Some("pwn"), table, &mut out)
            .await
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("t1") && text.contains("Running"), "{text}");
        let err = act(
            &as_author,
            InstanceVerb::Get,
            "pwn",
            None,
            table,
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("?team="), "{err}");

        // Flag lookup: found for the author, refused for the player, 404 for a guess.
        let flag = instances
            .entries()
            .iter()
            .find_map(|e| e.spec.as_ref()?.team.as_ref()?.flag.clone())
            .unwrap();
        let mut out = Vec::new();
        lookup(&as_author, &flag, table, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("issued to team t1 (challenge pwn"),
            "{text}"
        );
        let err = lookup(&as_player, &flag, table, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("403"), "{err}");
        let err = lookup(&as_author, "flag{nope}", table, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("404"), "{err}");

        let mut out = Vec::new();
        act(
            &as_author,
            InstanceVerb::Delete,
            "pwn",
            Some("t1"),
            table,
            &mut out,
        )
        .await
        .unwrap();
        assert!(String::from_utf8(out).unwrap().contains("deleted"));
        let mut out = Vec::new();
        list(&as_player, None, None, table, &mut out).await.unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "No instances found.\n");
        runner.abort();
        serve.abort();
    }
}
