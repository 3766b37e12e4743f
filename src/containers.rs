//! From a validated challenge to the exact containers it wants: names, labels, hardened host
//! settings and the spec hash. Pure: the image id and host ports are resolved by the caller.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::model::{Challenge, Healthcheck, Probe, RunSpec, Security, Service};
use crate::plan::Slot;
use crate::runtime::{
    ContainerSpec, EngineHealthcheck, FileSpec, PortBinding, Ulimit, LABEL_CHALLENGE,
    LABEL_INSTANCE, LABEL_REPLICA, LABEL_SERVICE, LABEL_SPEC_HASH, LABEL_TEAM, LABEL_TEAM_INSTANCE,
};

/// Capabilities kept after dropping ALL: enough for typical challenge daemons (xinetd, socat,
/// a web server dropping privileges), nothing that reaches the host (no NET_RAW, SYS_*, MKNOD).
pub const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "NET_BIND_SERVICE",
];

/// Operator-wide defaults applied when a manifest leaves a limit unset.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    /// Memory limit in bytes.
    pub memory: i64,
    pub pids: i64,
    pub nano_cpus: Option<i64>,
}

impl Default for Defaults {
    fn default() -> Defaults {
        Defaults {
            memory: 256 * 1024 * 1024,
            pids: 256,
            nano_cpus: None,
        }
    }
}

/// `{instance}_{challenge}_{replica}`, like compose's project_service_1.
pub fn container_name(instance: &str, challenge: &str, replica: u32) -> String {
    format!("{instance}_{challenge}_{replica}")
}

/// `{instance}_{challenge}_{service}` (SPEC §7).
pub fn service_container_name(instance: &str, challenge: &str, service: &str) -> String {
    format!("{instance}_{challenge}_{service}")
}

/// `{instance}_{challenge}`: the challenge's own bridge network (SPEC §7).
pub fn network_name(instance: &str, challenge: &str) -> String {
    format!("{instance}_{challenge}")
}

/// An image as the manifest names it and as the engine identifies it.
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    pub reference: &'a str,
    pub id: &'a str,
}

/// The container spec of one replica. `host_ports[i]` is the host port of `run.ports[i]`.
pub fn replica_spec(
    instance: &str,
    challenge: &Challenge,
    run: &RunSpec,
    image: Image<'_>,
    replica: u32,
    host_ports: &[u16],
    defaults: &Defaults,
) -> ContainerSpec {
    let ports = run
        .ports
        .iter()
        .zip(host_ports)
        .map(|(p, host)| PortBinding {
            port: p.port,
            host_port: *host,
            protocol: p.protocol,
        })
        .collect();
    let key = challenge.key();
    let mut spec = base_spec(
        container_name(instance, &key, replica),
        run,
        image,
        defaults,
    );
    spec.ports = ports;
    spec.network = Some(network_name(instance, &key));
    spec.aliases = vec![challenge.name.clone()];
    if let (Some(team), Some(file)) = (
        &challenge.team,
        challenge
            .instances
            .as_ref()
            .and_then(|i| i.flag.as_ref())
            .and_then(|f| f.file.as_ref()),
    ) {
        if let Some(flag) = &team.flag {
            spec.files.push(FileSpec {
                path: file.clone(),
                content: format!("{flag}\n"),
            });
        }
    }
    let mut labels = owner_labels(instance, challenge);
    labels.push((LABEL_REPLICA, replica.to_string()));
    seal(spec, labels)
}

/// The labels that say whose a container or network is (SPEC §3, §8).
pub fn owner_labels(instance: &str, challenge: &Challenge) -> Vec<(&'static str, String)> {
    let mut labels = vec![
        (LABEL_INSTANCE, instance.to_string()),
        (LABEL_CHALLENGE, challenge.name.clone()),
    ];
    if let Some(team) = &challenge.team {
        labels.push((LABEL_TEAM, team.team.clone()));
        labels.push((LABEL_TEAM_INSTANCE, team.id.clone()));
    }
    labels
}

/// The container spec of one service: never published, reachable by its name on the
/// challenge's network.
pub fn service_spec(
    instance: &str,
    challenge: &Challenge,
    service: &Service,
    image: Image<'_>,
    defaults: &Defaults,
) -> ContainerSpec {
    let key = challenge.key();
    let mut spec = base_spec(
        service_container_name(instance, &key, &service.name),
        &service.run,
        image,
        defaults,
    );
    spec.network = Some(network_name(instance, &key));
    spec.aliases = vec![service.name.clone()];
    let mut labels = owner_labels(instance, challenge);
    labels.push((LABEL_SERVICE, service.name.clone()));
    seal(spec, labels)
}

/// Everything but ports, network and labels: the hardened defaults with the manifest's
/// resources and security block applied.
fn base_spec(name: String, run: &RunSpec, image: Image<'_>, defaults: &Defaults) -> ContainerSpec {
    let sec: &Security = &run.security;
    let mut cap_add: Vec<String> = DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
    for cap in &sec.cap_add {
        if !cap_add.contains(cap) {
            cap_add.push(cap.clone());
        }
    }
    let ulimits = [("nofile", sec.ulimits.nofile), ("nproc", sec.ulimits.nproc)]
        .into_iter()
        .filter_map(|(name, v)| {
            let v = i64::try_from(v?).ok()?;
            Some(Ulimit {
                name: name.to_string(),
                soft: v,
                hard: v,
            })
        })
        .collect();
    ContainerSpec {
        name,
        image: image.reference.to_string(),
        image_id: image.id.to_string(),
        command: run.command.clone(),
        entrypoint: run.entrypoint.clone(),
        working_dir: run.working_dir.clone(),
        env: run.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        ports: Vec::new(),
        nano_cpus: run.resources.nano_cpus.or(defaults.nano_cpus),
        memory: run.resources.memory.unwrap_or(defaults.memory),
        pids: run.resources.pids.unwrap_or(defaults.pids),
        cap_add,
        no_new_privileges: true,
        network: None,
        aliases: Vec::new(),
        read_only: sec.read_only_root_filesystem,
        tmpfs: sec.tmpfs.clone(),
        user: sec.user.clone(),
        privileged: sec.privileged,
        ulimits,
        runtime: sec.runtime.clone(),
        files: Vec::new(),
        labels: BTreeMap::new(),
    }
}

/// Puts the labels and the spec hash on a finished spec.
fn seal(mut spec: ContainerSpec, labels: Vec<(&str, String)>) -> ContainerSpec {
    let hash = spec_hash(&spec);
    spec.labels = labels
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain([(LABEL_SPEC_HASH.to_string(), hash)])
        .collect();
    spec
}

/// The name of a workload on an engine that places replicas itself: `{instance}_{key}` for the
/// main containers, `{instance}_{key}_{service}` for a service (SPEC §9).
pub fn workload_name(instance: &str, key: &str, service: Option<&str>) -> String {
    match service {
        Some(service) => service_container_name(instance, key, service),
        None => format!("{instance}_{key}"),
    }
}

/// The specs of `challenge` as an engine that places replicas itself runs them: every replica
/// shares one container spec (the main workload's, named and labelled as the workload, its
/// ports those of replica 1), and each hash also covers what only such an engine is given (the
/// placement constraints and the engine's healthcheck), so changing those updates the workload.
pub fn as_workloads(
    instance: &str,
    challenge: &Challenge,
    specs: BTreeMap<Slot, ContainerSpec>,
) -> BTreeMap<Slot, ContainerSpec> {
    let key = challenge.key();
    let main = specs.get(&Slot::Replica(1)).map(|first| {
        let mut spec = first.clone();
        spec.name = workload_name(instance, &key, None);
        spec.labels.remove(LABEL_REPLICA);
        let hc = challenge.run.as_ref().and_then(|r| r.healthcheck.as_ref());
        reseal(spec, &challenge.placement, hc)
    });
    specs
        .into_iter()
        .map(|(slot, spec)| match (&slot, &main) {
            (Slot::Replica(_), Some(main)) => (slot, main.clone()),
            (Slot::Service(name), _) => {
                let hc = challenge
                    .services
                    .iter()
                    .find(|s| &s.name == name)
                    .and_then(|s| s.run.healthcheck.as_ref());
                let spec = reseal(spec, &challenge.placement, hc);
                (slot, spec)
            }
            _ => (slot, spec),
        })
        .collect()
}

/// Replaces the spec-hash label with one that also covers `constraints` and the engine
/// healthcheck of `hc`.
fn reseal(
    mut spec: ContainerSpec,
    constraints: &[String],
    hc: Option<&Healthcheck>,
) -> ContainerSpec {
    #[derive(serde::Serialize)]
    struct Shape<'a> {
        container: &'a str,
        constraints: &'a [String],
        healthcheck: Option<EngineHealthcheck>,
    }
    let container = spec_hash(&spec);
    let shape = Shape {
        container: &container,
        constraints,
        healthcheck: hc.map(engine_healthcheck),
    };
    let digest = Sha256::digest(serde_json::to_vec(&shape).unwrap_or_default());
    spec.labels
        .insert(LABEL_SPEC_HASH.to_string(), hex::encode(&digest[..12]));
    spec
}

/// A manifest healthcheck as the engine runs it inside the container (Swarm): `exec` as is;
/// `tcp` and `http` through the image's `sh` and `nc`, which every busybox or distribution
/// image has (an image without them needs an `exec` probe on Swarm).
pub fn engine_healthcheck(hc: &Healthcheck) -> EngineHealthcheck {
    let test = match &hc.probe {
        Probe::Exec { command } => std::iter::once("CMD".to_string())
            .chain(command.iter().cloned())
            .collect(),
        Probe::Tcp { port } => vec![
            "CMD-SHELL".to_string(),
            format!("nc -w 3 127.0.0.1 {port} </dev/null"),
        ],
        Probe::Http { port, path } => vec![
            "CMD-SHELL".to_string(),
            format!(
                "printf 'GET {path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' | nc -w 3 127.0.0.1 {port} | head -n 1 | grep -q ' [23][0-9][0-9] '"
            ),
        ],
    };
    EngineHealthcheck {
        test,
        interval: hc.interval,
        timeout: hc.timeout,
        retries: hc.retries,
        start_period: hc.start_period,
    }
}

/// Hash of everything that shapes the container (image id included), and nothing else: the
/// name, labels, player-facing info and the healthcheck (probed by beast, not the engine) stay out,
/// so editing a description never recreates a container.
pub fn spec_hash(spec: &ContainerSpec) -> String {
    // serde_json of a struct is deterministic: fields in declaration order, env pre-sorted.
    let canonical = serde_json::to_vec(spec).unwrap_or_default();
    let digest = Sha256::digest(&canonical);
    hex::encode(&digest[..12])
}

/// The spec-hash label of a spec built by [`replica_spec`].
pub fn hash_of(spec: &ContainerSpec) -> &str {
    spec.labels
        .get(LABEL_SPEC_HASH)
        .map(String::as_str)
        .unwrap_or("")
}

/// The fields that differ between a container read back from the engine and the wanted spec,
/// as `field: old → new`, for `beast plan`. The engine adds the image's env to a container's, so
/// env is compared on the wanted variables only.
pub fn diff(old: &ContainerSpec, new: &ContainerSpec) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name}: {a} → {b}"));
        }
    };
    field("image", short_id(&old.image_id), short_id(&new.image_id));
    if new.command.is_some() {
        field(
            "command",
            format!("{:?}", old.command),
            format!("{:?}", new.command),
        );
    }
    if new.entrypoint.is_some() {
        field(
            "entrypoint",
            format!("{:?}", old.entrypoint),
            format!("{:?}", new.entrypoint),
        );
    }
    if new.working_dir.is_some() {
        field(
            "workingDir",
            format!("{:?}", old.working_dir),
            format!("{:?}", new.working_dir),
        );
    }
    let missing: Vec<&str> = new
        .env
        .iter()
        .filter(|kv| !old.env.contains(kv))
        .map(|kv| kv.split_once('=').map(|(k, _)| k).unwrap_or(kv))
        .collect();
    let ports = |s: &ContainerSpec| {
        s.ports
            .iter()
            .map(|p| format!("{}:{}/{}", p.host_port, p.port, p.protocol))
            .collect::<Vec<_>>()
            .join(",")
    };
    field("ports", ports(old), ports(new));
    field("memory", old.memory.to_string(), new.memory.to_string());
    field("pids", old.pids.to_string(), new.pids.to_string());
    field(
        "cpus",
        format!("{:?}", old.nano_cpus),
        format!("{:?}", new.nano_cpus),
    );
    field("capAdd", old.cap_add.join(","), new.cap_add.join(","));
    field(
        "noNewPrivileges",
        old.no_new_privileges.to_string(),
        new.no_new_privileges.to_string(),
    );
    if !missing.is_empty() {
        out.push(format!("env: {} changed", missing.join(", ")));
    }
    out
}

fn short_id(id: &str) -> String {
    let id = id.trim_start_matches("sha256:");
    id[..id.len().min(12)].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PortSpec, Protocol};

    fn img(id: &str) -> Image<'_> {
        Image {
            reference: "img",
            id,
        }
    }

    fn spec_for(challenge: &Challenge, host_ports: &[u16]) -> ContainerSpec {
        let run = challenge
            .run
            .clone()
            .unwrap_or_else(|| unreachable!("test challenges run"));
        replica_spec(
            "t",
            challenge,
            &run,
            img("sha256:1"),
            1,
            host_ports,
            &Defaults::default(),
        )
    }

    #[test]
    fn names_and_labels_follow_the_contract() {
        let c = Challenge::with_image("echo", "img");
        let s = spec_for(&c, &[]);
        assert_eq!(s.name, "t_echo_1");
        assert_eq!(s.labels[LABEL_INSTANCE], "t");
        assert_eq!(s.labels[LABEL_CHALLENGE], "echo");
        assert_eq!(s.labels[LABEL_REPLICA], "1");
        assert_eq!(s.labels[LABEL_SPEC_HASH], spec_hash(&s));
    }

    #[test]
    fn info_changes_do_not_change_the_hash_but_shape_changes_do() {
        let base = Challenge::with_image("echo", "img");
        let mut info = base.clone();
        info.info.description = "new words".into();
        info.info.points = Some(500);
        info.flag = Some("flag{x}".into());
        assert_eq!(
            hash_of(&spec_for(&base, &[])),
            hash_of(&spec_for(&info, &[]))
        );

        let mut env = base.clone();
        if let Some(run) = env.run.as_mut() {
            run.env.insert("A".into(), "1".into());
        }
        assert_ne!(
            hash_of(&spec_for(&base, &[])),
            hash_of(&spec_for(&env, &[]))
        );

        let mut ported = base.clone();
        if let Some(run) = ported.run.as_mut() {
            run.ports.push(PortSpec {
                port: 80,
                host_port: None,
                protocol: Protocol::Tcp,
            });
        }
        assert_ne!(
            hash_of(&spec_for(&ported, &[30000])),
            hash_of(&spec_for(&ported, &[30001]))
        );
    }

    #[test]
    fn services_and_the_security_block_follow_the_contract() {
        use crate::model::{Security, Service, Ulimits};
        let mut c = Challenge::with_image("web", "img");
        let mut run = c.run.clone().unwrap_or_else(|| unreachable!());
        run.security = Security {
            read_only_root_filesystem: true,
            tmpfs: vec!["/tmp".into()],
            user: Some("1000".into()),
            cap_add: vec!["NET_RAW".into()],
            privileged: false,
            runtime: Some("runsc".into()),
            ulimits: Ulimits {
                nofile: Some(64),
                nproc: None,
            },
        };
        c.services.push(Service {
            name: "db".into(),
            run: run.clone(),
        });
        let svc = service_spec(
            "t",
            &c,
            &c.services[0],
            img("sha256:1"),
            &Defaults::default(),
        );
        assert_eq!(svc.name, "t_web_db");
        assert_eq!(svc.labels[LABEL_SERVICE], "db");
        assert!(!svc.labels.contains_key(LABEL_REPLICA));
        assert_eq!(svc.network.as_deref(), Some("t_web"));
        assert_eq!(svc.aliases, ["db"]);
        assert!(svc.ports.is_empty());
        assert!(svc.read_only && svc.no_new_privileges);
        assert!(svc.cap_add.contains(&"NET_RAW".to_string()));
        assert_eq!(svc.ulimits.len(), 1);
        assert_eq!(svc.runtime.as_deref(), Some("runsc"));

        let main = spec_for(&c, &[]);
        assert_eq!(main.network.as_deref(), Some("t_web"));
        assert_eq!(main.aliases, ["web"]);
        assert!(!main.read_only, "the service's security is its own");
        let mut secured = c.clone();
        secured.run = Some(run);
        assert_ne!(hash_of(&spec_for(&secured, &[])), hash_of(&main));
    }

    #[test]
    fn image_id_is_part_of_the_hash() {
        let c = Challenge::with_image("echo", "img");
        let Some(run) = c.run.clone() else { return };
        let d = Defaults::default();
        let a = replica_spec("t", &c, &run, img("sha256:1"), 1, &[], &d);
        let b = replica_spec("t", &c, &run, img("sha256:2"), 1, &[], &d);
        assert_ne!(hash_of(&a), hash_of(&b));
    }
}
