//! Turning the server's JSON into what a person reads: the `get` table, the `describe` page,
//! and the JSON / YAML printouts. The view types mirror `crate::status` (SPEC §6) but default
//! every field, so an older or newer server still renders.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

use super::ClientError;
use crate::cli::OutputFormat;

/// What `flag` values are shown as in describe output.
pub const HIDDEN: &str = "<hidden>";

/// A challenge's status as the status namespace returns it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ChallengeView {
    pub name: String,
    pub source: String,
    pub generation: u64,
    pub status: StatusView,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct StatusView {
    pub phase: String,
    pub observed_generation: u64,
    pub restarts: u64,
    pub conditions: Vec<ConditionView>,
    pub containers: Vec<ContainerView>,
    pub last_termination: Option<TerminationView>,
    pub events: Vec<EventView>,
    pub network: Option<NetworkView>,
}

/// `status.network`: the challenge's own bridge and its egress policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NetworkView {
    pub name: String,
    pub subnet: String,
    pub egress: bool,
    pub enforced: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerView {
    pub name: String,
    pub id: String,
    pub replica: u32,
    /// The service this container runs; `None` for a main container.
    pub service: Option<String>,
    pub state: String,
    pub health: String,
    pub ports: Vec<PortView>,
    /// The node it runs on (Swarm).
    pub node: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct PortView {
    pub port: u16,
    pub host_port: u16,
    pub protocol: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TerminationView {
    pub container: String,
    pub exit_code: i64,
    pub reason: String,
    pub oom_killed: bool,
    pub time: String,
    pub log_tail: Vec<String>,
    /// The engine's words (Swarm: the task's error); empty when it gave none.
    pub message: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EventView {
    pub time: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub reason: String,
    pub message: String,
}

/// Reads `value` as `T`, naming `what` on failure.
pub fn decode<T: serde::de::DeserializeOwned>(value: &Value, what: &str) -> Result<T, ClientError> {
    T::deserialize(value).map_err(|e| ClientError::Decode {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// `value` as pretty JSON or YAML (ending in a newline); `None` for the table format.
pub fn structured(value: &Value, format: OutputFormat) -> Result<Option<String>, ClientError> {
    let encode = |reason: String| ClientError::Decode {
        what: "printing the answer".into(),
        reason,
    };
    match format {
        OutputFormat::Table => Ok(None),
        OutputFormat::Json => serde_json::to_string_pretty(value)
            .map(|s| Some(s + "\n"))
            .map_err(|e| encode(e.to_string())),
        OutputFormat::Yaml => serde_yaml::to_string(value)
            .map(Some)
            .map_err(|e| encode(e.to_string())),
    }
}

/// Left-aligned columns two spaces apart, widths from the widest cell (in characters). Cells
/// are kept on one line.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let clean = |cell: &str| one_line(cell);
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(clean(cell).chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let cell = clean(cell);
            if i + 1 == row.len() {
                line.push_str(&cell);
            } else {
                let pad = widths.get(i).copied().unwrap_or(0);
                let _ = write!(line, "{cell:<pad$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Newlines in a cell become `; ` so a table row stays one row.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `31337->1337/tcp, ...`, each binding once, in the order first seen.
pub fn ports(containers: &[ContainerView]) -> String {
    let mut seen: Vec<&PortView> = Vec::new();
    for port in containers.iter().flat_map(|c| &c.ports) {
        if !seen.contains(&port) {
            seen.push(port);
        }
    }
    seen.iter()
        .map(|p| port_text(p))
        .collect::<Vec<_>>()
        .join(",")
}

fn port_text(p: &PortView) -> String {
    let protocol = if p.protocol.is_empty() {
        "tcp"
    } else {
        &p.protocol
    };
    format!("{}->{}/{protocol}", p.host_port, p.port)
}

/// `running/total` containers.
pub fn ready(containers: &[ContainerView]) -> String {
    let running = containers.iter().filter(|c| c.state == "running").count();
    format!("{running}/{}", containers.len())
}

/// The status of condition `kind`, or `-`.
fn condition_status(status: &StatusView, kind: &str) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.kind == kind)
        .map_or_else(|| "-".to_string(), |c| c.status.clone())
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text.to_string()
    }
}

/// The `get` table.
pub fn challenges_table(items: &[ChallengeView]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                or_dash(&c.status.phase),
                ready(&c.status.containers),
                condition_status(&c.status, "Healthy"),
                c.status.restarts.to_string(),
                or_dash(&ports(&c.status.containers)),
                or_dash(&c.source),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "PHASE", "READY", "HEALTHY", "RESTARTS", "PORTS", "SOURCE",
        ],
        &rows,
    )
}

/// The manifest with `spec.flag` replaced by [`HIDDEN`].
pub fn mask_flag(manifest: &Value) -> Value {
    let mut masked = manifest.clone();
    if let Some(flag) = masked.get_mut("spec").and_then(|spec| spec.get_mut("flag")) {
        *flag = Value::String(HIDDEN.to_string());
    }
    masked
}

/// The first 12 characters of a container id, like docker.
fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// Indents every line of `text` by `by` spaces.
fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// A kubectl-describe-like page. `manifest` is the manage route's answer (the flag is masked
/// here), or why it could not be read.
pub fn describe(status: &ChallengeView, manifest: Result<&Value, String>) -> String {
    let mut out = String::new();
    let field = |out: &mut String, key: &str, value: &str| {
        let _ = writeln!(out, "{:<21}{}", format!("{key}:"), or_dash(value));
    };
    let s = &status.status;
    field(&mut out, "Name", &status.name);
    field(&mut out, "Source", &status.source);
    if let Ok(m) = &manifest {
        field(&mut out, "Labels", &labels(m));
    }
    field(&mut out, "Generation", &status.generation.to_string());
    field(
        &mut out,
        "Observed Generation",
        &s.observed_generation.to_string(),
    );
    field(&mut out, "Phase", &s.phase);
    field(&mut out, "Ready", &ready(&s.containers));
    field(&mut out, "Restarts", &s.restarts.to_string());
    field(&mut out, "Network", &network(s.network.as_ref()));
    if let Ok(m) = &manifest {
        field(&mut out, "Security", &security(m.pointer("/spec/security")));
    }
    out.push_str(&conditions_section(&s.conditions));
    out.push_str(&containers_section(&s.containers));
    if let Ok(m) = &manifest {
        out.push_str(&services_section(m));
    }
    out.push_str(&termination_section(s.last_termination.as_ref()));
    out.push_str(&events_section(&s.events));
    out.push_str(&manifest_section(manifest));
    out
}

/// `name subnet, egress ...` of `status.network`; empty before the network exists.
fn network(net: Option<&NetworkView>) -> String {
    let Some(n) = net else {
        return String::new();
    };
    let egress = match (n.egress, n.enforced) {
        (true, _) => "egress on",
        (false, true) => "egress off (enforced)",
        (false, false) => "egress off but NOT ENFORCED (see the EgressPolicy condition)",
    };
    format!("{} {}, {egress}", n.name, n.subnet)
}

/// A manifest's `security` block as the raw manifest holds it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SecurityView {
    read_only_root_filesystem: bool,
    tmpfs: Vec<String>,
    user: Option<String>,
    cap_add: Vec<String>,
    privileged: bool,
    runtime: Option<String>,
    ulimits: UlimitsView,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct UlimitsView {
    nofile: Option<u64>,
    nproc: Option<u64>,
}

/// The settings of a manifest's `security` block (as `beast plan` words them), or `defaults`.
fn security(block: Option<&Value>) -> String {
    let Some(view) = block.and_then(|b| SecurityView::deserialize(b).ok()) else {
        return "defaults".to_string();
    };
    let model = crate::model::Security {
        read_only_root_filesystem: view.read_only_root_filesystem,
        tmpfs: view.tmpfs,
        user: view.user,
        cap_add: view.cap_add,
        privileged: view.privileged,
        runtime: view.runtime,
        ulimits: crate::model::Ulimits {
            nofile: view.ulimits.nofile,
            nproc: view.ulimits.nproc,
        },
    };
    crate::dryrun::security_text(&model).unwrap_or_else(|| "defaults".to_string())
}

/// `tcp:3306`, `http:80/health`, `exec` or `-` of a manifest's healthcheck.
fn healthcheck(check: Option<&Value>) -> String {
    let Some(check) = check else {
        return "-".to_string();
    };
    let port = |probe: &Value| probe.get("port").map(Value::to_string).unwrap_or_default();
    if let Some(tcp) = check.get("tcp") {
        format!("tcp:{}", port(tcp))
    } else if let Some(http) = check.get("http") {
        let path = http.get("path").and_then(Value::as_str).unwrap_or("/");
        format!("http:{}{path}", port(http))
    } else if check.get("exec").is_some() {
        "exec".to_string()
    } else {
        "-".to_string()
    }
}

/// `spec.services` of the manifest: name, image (or build context), healthcheck, security.
fn services_section(manifest: &Value) -> String {
    let services = manifest
        .pointer("/spec/services")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|svc| {
            let text = |key: &str| svc.get(key).and_then(Value::as_str).unwrap_or_default();
            let image = match svc.pointer("/build/context").and_then(Value::as_str) {
                Some(context) if text("image").is_empty() => format!("build {context}"),
                _ => text("image").to_string(),
            };
            vec![
                or_dash(text("name")),
                or_dash(&image),
                healthcheck(svc.get("healthcheck")),
                security(svc.get("security")),
            ]
        })
        .collect();
    section(
        "Services",
        &["NAME", "IMAGE", "HEALTHCHECK", "SECURITY"],
        &rows,
    )
}

/// `k=v,k2=v2` of `metadata.labels`.
fn labels(manifest: &Value) -> String {
    manifest
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// A titled sub-table, or `Title: <none>`.
fn section(title: &str, header: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return format!(
            "{title}:{}<none>\n",
            " ".repeat(20usize.saturating_sub(title.len()))
        );
    }
    format!("{title}:\n{}", indent(&table(header, rows), 2))
}

fn conditions_section(conditions: &[ConditionView]) -> String {
    let rows: Vec<Vec<String>> = conditions
        .iter()
        .map(|c| {
            vec![
                c.kind.clone(),
                c.status.clone(),
                or_dash(&c.reason),
                or_dash(&c.message),
                or_dash(&c.last_transition_time),
            ]
        })
        .collect();
    section(
        "Conditions",
        &["TYPE", "STATUS", "REASON", "MESSAGE", "LAST TRANSITION"],
        &rows,
    )
}

/// One row per container; a NODE column where the runtime places them on nodes (Swarm).
fn containers_section(containers: &[ContainerView]) -> String {
    let nodes = containers.iter().any(|c| c.node.is_some());
    let rows: Vec<Vec<String>> = containers
        .iter()
        .map(|c| {
            let (replica, service) = match &c.service {
                Some(service) => ("-".to_string(), service.clone()),
                None => (c.replica.to_string(), "-".to_string()),
            };
            let mut row = vec![
                c.name.clone(),
                or_dash(&short_id(&c.id)),
                replica,
                service,
                or_dash(&c.state),
                or_dash(&c.health),
            ];
            if nodes {
                row.push(or_dash(c.node.as_deref().unwrap_or("")));
            }
            row.push(or_dash(&ports(std::slice::from_ref(c))));
            row
        })
        .collect();
    let mut header = vec!["NAME", "ID", "REPLICA", "SERVICE", "STATE", "HEALTH"];
    if nodes {
        header.push("NODE");
    }
    header.push("PORTS");
    section("Containers", &header, &rows)
}

fn termination_section(last: Option<&TerminationView>) -> String {
    let Some(t) = last else {
        return "Last Termination:    <none>\n".to_string();
    };
    let mut out = String::from("Last Termination:\n");
    let reason = if t.oom_killed && t.reason != "OOMKilled" {
        format!("{} (OOMKilled)", t.reason)
    } else {
        t.reason.clone()
    };
    for (key, value) in [
        ("Container", t.container.clone()),
        ("Exit Code", t.exit_code.to_string()),
        ("Reason", reason),
        ("Time", t.time.clone()),
    ] {
        let _ = writeln!(out, "  {:<12}{}", format!("{key}:"), or_dash(&value));
    }
    if !t.message.is_empty() {
        let _ = writeln!(out, "  {:<12}{}", "Message:", one_line(&t.message));
    }
    if t.log_tail.is_empty() {
        out.push_str("  Log Tail:   <none>\n");
    } else {
        out.push_str("  Log Tail:\n");
        for line in &t.log_tail {
            let _ = writeln!(out, "    {line}");
        }
    }
    out
}

fn events_section(events: &[EventView]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.time.clone(),
                e.kind.clone(),
                e.reason.clone(),
                e.message.clone(),
            ]
        })
        .collect();
    section("Events", &["TIME", "TYPE", "REASON", "MESSAGE"], &rows)
}

fn manifest_section(manifest: Result<&Value, String>) -> String {
    match manifest {
        Err(why) => format!("Manifest:            <not readable: {}>\n", one_line(&why)),
        Ok(m) => match serde_yaml::to_string(&mask_flag(m)) {
            Ok(yaml) => format!("Manifest:\n{}", indent(&yaml, 2)),
            Err(e) => format!("Manifest:            <not printable: {e}>\n"),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A status as `crate::status::view` serializes it (SPEC §6 plus lastTermination, events).
    pub(crate) fn sample_status() -> Value {
        serde_json::json!({
            "name": "echo-tcp", "source": "dir:challenges/echo/challenge.yaml", "generation": 3,
            "status": {"phase": "Degraded", "observedGeneration": 3, "restarts": 4,
              "conditions": [
                {"type": "Valid", "status": "True", "reason": "Valid", "message": "",
                 "lastTransitionTime": "2025-01-01T00:00:00Z"},
                {"type": "Ready", "status": "False", "reason": "CrashLoopBackOff",
                 "message": "replica 2 exited\nagain", "lastTransitionTime": "2025-01-01T00:01:00Z"},
                {"type": "Healthy", "status": "Unknown", "reason": "", "message": "",
                 "lastTransitionTime": "2025-01-01T00:00:00Z"}],
              "containers": [
                {"name": "beast_echo-tcp_1", "id": "0123456789abcdef0123", "replica": 1,
                 "state": "running", "health": "healthy",
                 "ports": [{"port": 1337, "hostPort": 31337, "protocol": "tcp"}]},
                {"name": "beast_echo-tcp_2", "id": "fedcba9876543210", "replica": 2,
                 "state": "exited", "health": "",
                 "ports": [{"port": 1337, "hostPort": 31338, "protocol": "tcp"},
                           {"port": 53, "hostPort": 31053, "protocol": "udp"}]}],
              "lastTermination": {"container": "beast_echo-tcp_2", "exitCode": 137,
                "reason": "OOMKilled", "oomKilled": true, "time": "2025-01-01T00:01:00Z",
                "logTail": ["starting", "out of memory"]},
              "events": [{"time": "2025-01-01T00:01:00Z", "type": "Warning",
                "reason": "Exited", "message": "beast_echo-tcp_2 exited with 137"}]}
        })
    }

    fn view(value: &Value) -> ChallengeView {
        decode(value, "status").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_get_table_has_aligned_columns() {
        let mut idle = sample_status();
        idle["name"] = "a-much-longer-name".into();
        idle["status"] = serde_json::json!({"phase": "Stopped", "containers": []});
        let text = challenges_table(&[view(&sample_status()), view(&idle)]);
        let expected = "\
NAME                PHASE     READY  HEALTHY  RESTARTS  PORTS                                          SOURCE
echo-tcp            Degraded  1/2    Unknown  4         31337->1337/tcp,31338->1337/tcp,31053->53/udp  dir:challenges/echo/challenge.yaml
a-much-longer-name  Stopped   0/0    -        0         -                                              dir:challenges/echo/challenge.yaml
";
        assert_eq!(text, expected);
    }

    #[test]
    fn multi_line_cells_stay_on_one_row() {
        let text = table(&["A", "B"], &[vec!["x\ny".into(), "z".into()]]);
        assert_eq!(text, "A     B\nx; y  z\n");
    }

    #[test]
    fn describe_shows_every_section_and_hides_the_flag() {
        let manifest = serde_json::json!({
            "apiVersion": "beast/v1", "kind": "Challenge",
            "metadata": {"name": "echo-tcp", "labels": {"category": "misc"}, "resourceVersion": "7"},
            "spec": {"image": "example/echo:1", "flag": "flag{s3cr3t}"}
        });
        let text = describe(&view(&sample_status()), Ok(&manifest));
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("flag: <hidden>"), "{text}");
        for needle in [
            "Name:                echo-tcp\n",
            "Source:              dir:challenges/echo/challenge.yaml\n",
            "Labels:              category=misc\n",
            "Observed Generation: 3\n",
            "Phase:               Degraded\n",
            "  Ready    False    CrashLoopBackOff  replica 2 exited; again  2025-01-01T00:01:00Z\n",
            "beast_echo-tcp_1  0123456789ab  1        -        running  healthy  31337->1337/tcp",
            "Network:             -\n",
            "Security:            defaults\n",
            "Services:            <none>\n",
            "  Exit Code:  137\n",
            "  Reason:     OOMKilled\n",
            "    out of memory\n",
            "Warning  Exited  beast_echo-tcp_2 exited with 137",
            "    resourceVersion: '7'\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    /// A challenge with a service, its own network with egress off, and a security block.
    fn web_status(enforced: bool) -> Value {
        let (reason, message) = if enforced {
            (
                "Blocked",
                "new outbound connections from 10.10.0.0/26 are refused",
            )
        } else {
            (
                "Unenforced",
                "spec.network.egress is false but beast cannot enforce it",
            )
        };
        serde_json::json!({
            "name": "web", "source": "api", "generation": 1,
            "status": {"phase": "Running", "observedGeneration": 1,
              "conditions": [
                {"type": "EgressPolicy", "status": if enforced { "True" } else { "False" },
                 "reason": reason, "message": message,
                 "lastTransitionTime": "2025-01-01T00:00:00Z"}],
              "containers": [
                {"name": "beast_web_db", "id": "aaaaaaaaaaaaaaaa", "replica": 0, "service": "db",
                 "state": "running", "health": "healthy", "ports": []},
                {"name": "beast_web_1", "id": "bbbbbbbbbbbbbbbb", "replica": 1,
                 "state": "running", "health": "",
                 "ports": [{"port": 80, "hostPort": 30080, "protocol": "tcp"}]}],
              "network": {"name": "beast_web", "subnet": "10.10.0.0/26", "egress": false,
                          "enforced": enforced}}
        })
    }

    fn web_manifest() -> Value {
        serde_json::json!({
            "apiVersion": "beast/v1", "kind": "Challenge", "metadata": {"name": "web"},
            "spec": {"image": "example/web:1", "flag": "flag{w}",
              "security": {"readOnlyRootFilesystem": true, "tmpfs": ["/tmp"], "user": "1000:1000",
                           "capAdd": ["NET_RAW"], "runtime": "runsc",
                           "ulimits": {"nofile": 1024, "nproc": 64}},
              "services": [
                {"name": "db", "image": "example/mariadb:1",
                 "healthcheck": {"tcp": {"port": 3306}}, "security": {"privileged": true}},
                {"name": "bot", "build": {"context": "bot"},
                 "healthcheck": {"http": {"port": 8080, "path": "/ready"}}},
                {"name": "cache", "image": "example/redis:1"}]}
        })
    }

    #[test]
    fn describe_shows_network_services_and_security() {
        let text = describe(&view(&web_status(true)), Ok(&web_manifest()));
        for needle in [
            "Network:             beast_web 10.10.0.0/26, egress off (enforced)\n",
            "Security:            read-only root, tmpfs /tmp, user 1000:1000, capAdd NET_RAW, runtime runsc, ulimits nofile=1024,nproc=64\n",
            "  EgressPolicy  True    Blocked  new outbound connections from 10.10.0.0/26 are refused",
            "  NAME          ID            REPLICA  SERVICE  STATE    HEALTH   PORTS\n",
            "  beast_web_db  aaaaaaaaaaaa  -        db       running  healthy  -\n",
            "  beast_web_1   bbbbbbbbbbbb  1        -        running  -        30080->80/tcp\n",
            "Services:\n",
            "  NAME   IMAGE              HEALTHCHECK      SECURITY\n",
            "  db     example/mariadb:1  tcp:3306         PRIVILEGED\n",
            "  bot    build bot          http:8080/ready  defaults\n",
            "  cache  example/redis:1    -                defaults\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    #[test]
    fn containers_on_nodes_get_a_node_column() {
        let on = |name: &str, node: Option<&str>| ContainerView {
            name: name.into(),
            id: "t1".into(),
            replica: 1,
            state: "running".into(),
            health: "none".into(),
            node: node.map(str::to_string),
            ..ContainerView::default()
        };
        let swarm = containers_section(&[on("i_web.1", Some("worker1")), on("i_web.2", None)]);
        assert!(swarm.contains("HEALTH  NODE     PORTS"), "{swarm}");
        assert!(swarm.contains("none    worker1  -"), "{swarm}");
        let single = containers_section(&[on("i_web_1", None)]);
        assert!(!single.contains("NODE"), "{single}");
    }

    #[test]
    fn describe_says_when_egress_off_is_not_enforced() {
        let text = describe(&view(&web_status(false)), Err("forbidden".into()));
        assert!(
            text.contains("Network:             beast_web 10.10.0.0/26, egress off but NOT ENFORCED (see the EgressPolicy condition)\n"),
            "{text}"
        );
        assert!(text.contains("EgressPolicy  False   Unenforced"), "{text}");
        // Without the manifest there is nothing to say about services or security.
        assert!(!text.contains("Services:"), "{text}");
        assert!(!text.contains("Security:"), "{text}");
    }

    #[test]
    fn describe_without_a_manifest_or_history() {
        let bare = serde_json::json!({"name": "x", "status": {"phase": "Pending"}});
        let text = describe(&view(&bare), Err("forbidden (403 Forbidden)".into()));
        assert!(text.contains("Conditions:          <none>\n"), "{text}");
        assert!(text.contains("Last Termination:    <none>\n"), "{text}");
        assert!(text.contains("Events:              <none>\n"), "{text}");
        assert!(
            text.contains("Manifest:            <not readable: forbidden"),
            "{text}"
        );
    }

    #[test]
    fn structured_output_is_the_servers_json() {
        let value = serde_json::json!({"spec": {"flag": "flag{x}"}});
        let json = structured(&value, OutputFormat::Json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            json.as_deref(),
            Some("{\n  \"spec\": {\n    \"flag\": \"flag{x}\"\n  }\n}\n")
        );
        let yaml = structured(&value, OutputFormat::Yaml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(yaml.as_deref(), Some("spec:\n  flag: flag{x}\n"));
        assert!(matches!(structured(&value, OutputFormat::Table), Ok(None)));
    }
}
