//! Pure translations between beast's engine-neutral types and Swarm's: a [`WorkloadSpec`] into
//! the body of a service create or update, and a service's tasks into [`Observed`] replicas.
//! No I/O here, so every rule is a plain unit test.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, EndpointSpecModeEnum, HealthConfig, Limit, Mount, MountTmpfsOptions, MountType,
    NetworkAttachmentConfig, ResourceObject, Service, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, Task, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement,
    TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};

use super::super::{
    key_of, ContainerState, Observed, ObservedWorkload, PortBinding, RuntimeError, WorkloadSpec,
    LABEL_INSTANCE, LABEL_REPLICA, LABEL_SERVICE,
};
use crate::model::Protocol;

/// How published ports reach the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PublishMode {
    /// Swarm's routing mesh: every node answers on the port and forwards to some replica
    /// (needs IPVS in every node's kernel).
    Ingress,
    /// Each replica binds the port on the node it runs on: one replica per node and port.
    Host,
}

impl PublishMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PublishMode::Ingress => "ingress",
            PublishMode::Host => "host",
        }
    }
}

/// Label of the tasks whose container runs the engine's healthcheck.
const LABEL_ENGINE_HEALTHCHECK: &str = "beast.engine-healthcheck";

/// Size of the tmpfs mounts, as on one engine (`rw,nosuid,nodev,size=64m`).
const TMPFS_BYTES: i64 = 64 << 20;

/// The service body for `spec`. Errors name what Swarm cannot do that the spec asks for.
pub fn service_spec(
    spec: &WorkloadSpec,
    publish: PublishMode,
) -> Result<ServiceSpec, RuntimeError> {
    let c = &spec.container;
    if c.privileged {
        return Err(refused(
            &spec.name,
            "security.privileged: Swarm services cannot run privileged containers",
        ));
    }
    if let Some(runtime) = &c.runtime {
        return Err(refused(
            &spec.name,
            &format!("security.runtime {runtime:?}: Swarm services run the nodes' default OCI runtime; configure it in each node's daemon.json instead"),
        ));
    }
    if !c.files.is_empty() {
        return Err(refused(
            &spec.name,
            "a flag file (spec.instances.flag.file): files cannot be put into Swarm tasks; deliver the flag by env",
        ));
    }
    let mut labels: HashMap<String, String> = c.labels.clone().into_iter().collect();
    if spec.healthcheck.is_some() {
        // Read back from the tasks (the engine's field name differs from the one sent).
        labels.insert(LABEL_ENGINE_HEALTHCHECK.to_string(), "true".to_string());
    }
    let mounts: Vec<Mount> = c
        .tmpfs
        .iter()
        .map(|path| Mount {
            target: Some(path.clone()),
            typ: Some(MountType::TMPFS),
            tmpfs_options: Some(MountTmpfsOptions {
                size_bytes: Some(TMPFS_BYTES),
                mode: Some(0o1777),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let health_check = spec.healthcheck.as_ref().map(|h| HealthConfig {
        test: Some(h.test.clone()),
        interval: Some(nanos(h.interval)),
        timeout: Some(nanos(h.timeout)),
        retries: Some(i64::from(h.retries)),
        start_period: Some(nanos(h.start_period)),
        start_interval: None,
    });
    let container_spec = TaskSpecContainerSpec {
        image: Some(c.image.clone()),
        labels: Some(labels.clone()),
        command: c.entrypoint.clone(),
        args: c.command.clone(),
        env: Some(c.env.clone()),
        dir: c.working_dir.clone(),
        user: c.user.clone(),
        read_only: Some(c.read_only),
        mounts: (!mounts.is_empty()).then_some(mounts),
        health_check,
        capability_add: Some(c.cap_add.clone()),
        capability_drop: Some(vec!["ALL".to_string()]),
        ulimits: super::super::docker::engine_ulimits(&c.ulimits),
        stop_grace_period: Some(2_000_000_000),
        ..Default::default()
    };
    let limits = Limit {
        nano_cpus: c.nano_cpus,
        memory_bytes: (c.memory > 0).then_some(c.memory),
        pids: (c.pids > 0).then_some(c.pids),
    };
    // Reserve a quarter of each limit: the scheduler spreads replicas by what nodes have left,
    // without refusing a node that is merely busy on paper.
    let reservations = ResourceObject {
        nano_cpus: c.nano_cpus.map(|n| n / 4),
        memory_bytes: (c.memory > 0).then_some(c.memory / 4),
        generic_resources: None,
    };
    let networks = c.network.as_ref().map(|net| {
        vec![NetworkAttachmentConfig {
            target: Some(net.clone()),
            aliases: Some(c.aliases.clone()),
            driver_opts: None,
        }]
    });
    let ports: Vec<EndpointPortConfig> = c
        .ports
        .iter()
        .map(|p| EndpointPortConfig {
            name: None,
            protocol: Some(match p.protocol {
                Protocol::Tcp => EndpointPortConfigProtocolEnum::TCP,
                Protocol::Udp => EndpointPortConfigProtocolEnum::UDP,
            }),
            target_port: Some(i64::from(p.port)),
            published_port: Some(i64::from(p.host_port)),
            publish_mode: Some(match publish {
                PublishMode::Ingress => EndpointPortConfigPublishModeEnum::INGRESS,
                PublishMode::Host => EndpointPortConfigPublishModeEnum::HOST,
            }),
        })
        .collect();
    // Host-mode ports bind the node's port: a new replica cannot start beside the old one on
    // the same node, so those roll stop-first. Everything else starts the new one first.
    let host_bound = publish == PublishMode::Host && !ports.is_empty();
    let order = if host_bound {
        ServiceSpecUpdateConfigOrderEnum::STOP_FIRST
    } else {
        ServiceSpecUpdateConfigOrderEnum::START_FIRST
    };
    Ok(ServiceSpec {
        name: Some(spec.name.clone()),
        labels: Some(labels),
        task_template: Some(TaskSpec {
            container_spec: Some(container_spec),
            resources: Some(TaskSpecResources {
                limits: Some(limits),
                reservations: Some(reservations),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(1_000_000_000),
                max_attempts: Some(0),
                window: None,
            }),
            placement: Some(TaskSpecPlacement {
                constraints: Some(spec.constraints.clone()),
                ..Default::default()
            }),
            force_update: Some(spec.force),
            networks,
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(i64::from(spec.replicas)),
            }),
            ..Default::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::PAUSE),
            monitor: Some(2_000_000_000),
            max_failure_ratio: None,
            order: Some(order),
        }),
        endpoint_spec: Some(EndpointSpec {
            // VIPs need IPVS too: without the mesh, names resolve to the replicas themselves.
            mode: Some(match publish {
                PublishMode::Ingress => EndpointSpecModeEnum::VIP,
                PublishMode::Host => EndpointSpecModeEnum::DNSRR,
            }),
            ports: Some(ports),
        }),
        ..Default::default()
    })
}

fn refused(name: &str, why: &str) -> RuntimeError {
    RuntimeError::Refused {
        reason: "NotSupportedOnSwarm",
        message: format!("{name}: {why}"),
    }
}

fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A listed service as beast sees it.
pub fn workload_of(s: Service) -> ObservedWorkload {
    let spec = s.spec.unwrap_or_default();
    let replicas = spec
        .mode
        .and_then(|m| m.replicated)
        .and_then(|r| r.replicas)
        .unwrap_or(0);
    ObservedWorkload {
        id: s.id.unwrap_or_default(),
        name: spec.name.unwrap_or_default(),
        labels: spec.labels.unwrap_or_default().into_iter().collect(),
        replicas: u32::try_from(replicas).unwrap_or(0),
        force: spec.task_template.and_then(|t| t.force_update).unwrap_or(0),
        version: s.version.and_then(|v| v.index).unwrap_or(0),
    }
}

/// The published ports of a service as its endpoint reports them (ingress mode).
pub fn service_ports(s: &Service) -> Vec<PortBinding> {
    let ports = s
        .endpoint
        .as_ref()
        .and_then(|e| e.ports.clone())
        .unwrap_or_default();
    bindings(&ports)
}

fn bindings(ports: &[EndpointPortConfig]) -> Vec<PortBinding> {
    let mut out: Vec<PortBinding> = ports
        .iter()
        .filter_map(|p| {
            Some(PortBinding {
                port: u16::try_from(p.target_port?).ok()?,
                host_port: u16::try_from(p.published_port?).ok().filter(|h| *h > 0)?,
                protocol: match p.protocol {
                    Some(EndpointPortConfigProtocolEnum::UDP) => Protocol::Udp,
                    _ => Protocol::Tcp,
                },
            })
        })
        .collect();
    // The engine may list a host-mode binding once per address family.
    out.sort();
    out.dedup();
    out
}

/// A name as Swarm takes it: services and overlay networks must be DNS name components, so the
/// `.` of a per-team instance's key (`{challenge}.{id}`) becomes `_`. Listed objects get their
/// beast names back from their labels.
pub fn engine_name(name: &str) -> String {
    name.replace('.', "_")
}

/// The name a task's replica has in the status (`{instance}_{key}.{slot}`, or the service's
/// `{instance}_{key}_{service}`, as the engine names the service), from its labels.
pub fn replica_name(labels: &BTreeMap<String, String>, slot: Option<i64>) -> String {
    let (Some(instance), Some(key)) = (labels.get(LABEL_INSTANCE), key_of(labels)) else {
        return String::new();
    };
    let service = labels.get(LABEL_SERVICE).map(String::as_str);
    let name = engine_name(&crate::containers::workload_name(instance, &key, service));
    match (service, slot) {
        (None, Some(slot)) => format!("{name}.{slot}"),
        _ => name,
    }
}

/// The current replica of every (service, slot) among `tasks`: the newest task Swarm wants
/// running, else the newest, as a container would be listed. `service_ports` has an entry for
/// every service listed (tasks of others are going with their removed service); `nodes` maps
/// node ids to host names.
pub fn replicas(
    tasks: &[Task],
    service_ports: &HashMap<String, Vec<PortBinding>>,
    nodes: &HashMap<String, String>,
) -> Vec<Observed> {
    let mut slots: BTreeMap<(String, i64), Vec<&Task>> = BTreeMap::new();
    for t in tasks {
        let (Some(service), Some(_)) = (&t.service_id, &t.id) else {
            continue;
        };
        if !service_ports.contains_key(service) {
            // The service was removed: its tasks are going too.
            continue;
        }
        slots
            .entry((service.clone(), t.slot.unwrap_or(0)))
            .or_default()
            .push(t);
    }
    slots
        .into_iter()
        .filter_map(|((service, slot), mut tasks)| {
            tasks.sort_by_key(|t| std::cmp::Reverse(created(t)));
            let current = tasks
                .iter()
                .find(|t| t.desired_state == Some(TaskState::RUNNING))
                .or_else(|| tasks.first())?;
            let ports = service_ports.get(&service).cloned().unwrap_or_default();
            Some(observed_of(current, slot, ports, nodes))
        })
        .collect()
}

/// Creation time in nanoseconds since the epoch (0 when the engine did not say).
fn created(t: &Task) -> i128 {
    t.created_at
        .as_deref()
        .and_then(|at| {
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(|at| at.unix_timestamp_nanos())
        .unwrap_or(0)
}

/// One task as a replica: labels of the task's container (beast's, with `beast.replica` = the
/// slot for main replicas), its state and the node it was given.
pub fn observed_of(
    t: &Task,
    slot: i64,
    service_ports: Vec<PortBinding>,
    nodes: &HashMap<String, String>,
) -> Observed {
    let mut labels = task_labels(t);
    let name = replica_name(&labels, Some(slot));
    if !labels.contains_key(LABEL_SERVICE) {
        labels.insert(LABEL_REPLICA.to_string(), slot.to_string());
    }
    let status = t.status.clone().unwrap_or_default();
    let task_state = status.state.unwrap_or(TaskState::NEW);
    let has_check = labels.contains_key(LABEL_ENGINE_HEALTHCHECK);
    let node = t
        .node_id
        .as_ref()
        .filter(|n| !n.is_empty())
        .map(|id| nodes.get(id).cloned().unwrap_or_else(|| id.clone()));
    let ports = match status.port_status.as_ref().and_then(|p| p.ports.clone()) {
        Some(host_mode) if !host_mode.is_empty() => bindings(&host_mode),
        _ if task_state == TaskState::RUNNING => service_ports,
        _ => Vec::new(),
    };
    Observed {
        id: t.id.clone().unwrap_or_default(),
        name,
        labels,
        state: state_of(task_state),
        status: status_text(task_state, &status, node.as_deref(), has_check),
        ports,
        created: i64::try_from(created(t) / 1_000_000_000).unwrap_or(0),
        // On the overlay, unreachable from the manager: beast does not probe tasks itself.
        ip: None,
        node,
    }
}

/// The labels of a task's container (beast's own, as put on the service's task template).
pub fn task_labels(t: &Task) -> BTreeMap<String, String> {
    t.spec
        .as_ref()
        .and_then(|s| s.container_spec.as_ref())
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// Swarm's task states in the container states the planner and status know.
pub fn state_of(state: TaskState) -> ContainerState {
    match state {
        TaskState::RUNNING => ContainerState::Running,
        TaskState::NEW
        | TaskState::ALLOCATED
        | TaskState::PENDING
        | TaskState::ASSIGNED
        | TaskState::ACCEPTED
        | TaskState::PREPARING
        | TaskState::READY
        | TaskState::STARTING => ContainerState::Created,
        TaskState::COMPLETE | TaskState::SHUTDOWN => ContainerState::Exited,
        TaskState::FAILED | TaskState::REJECTED => ContainerState::Dead,
        TaskState::REMOVE | TaskState::ORPHANED => ContainerState::Removing,
    }
}

/// The human status, in the engine's words: `running on node1 (healthy)`, `pending: no
/// suitable node (...)`. A task with a healthcheck runs only once it passes it.
fn status_text(
    state: TaskState,
    status: &bollard::models::TaskStatus,
    node: Option<&str>,
    has_check: bool,
) -> String {
    let mut text = state.to_string();
    if let Some(node) = node {
        text.push_str(&format!(" on {node}"));
    }
    match state {
        TaskState::RUNNING if has_check => text.push_str(" (healthy)"),
        TaskState::STARTING if has_check => text.push_str(" (health: starting)"),
        _ => {}
    }
    if let Some(err) = status.err.as_ref().filter(|e| !e.is_empty()) {
        text.push_str(&format!(": {err}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{ContainerSpec, EngineHealthcheck, Ulimit};
    use bollard::models::{PortStatus, TaskStatus};
    use std::time::Duration;

    fn workload(ports: Vec<PortBinding>) -> WorkloadSpec {
        WorkloadSpec {
            name: "i_web".into(),
            container: ContainerSpec {
                image: "reg:5000/web@sha256:ab".into(),
                command: Some(vec!["httpd".into()]),
                env: vec!["A=b".into()],
                ports,
                memory: 256 << 20,
                pids: 64,
                cap_add: vec!["CHOWN".into()],
                network: Some("i_web".into()),
                aliases: vec!["web".into()],
                tmpfs: vec!["/tmp".into()],
                ulimits: vec![Ulimit {
                    name: "nofile".into(),
                    soft: 64,
                    hard: 64,
                }],
                labels: BTreeMap::from([("beast.instance".into(), "i".into())]),
                ..ContainerSpec::default()
            },
            replicas: 3,
            constraints: vec!["node.labels.pool==pwn".into()],
            healthcheck: Some(EngineHealthcheck {
                test: vec!["CMD".into(), "true".into()],
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                retries: 3,
                start_period: Duration::ZERO,
            }),
            force: 2,
        }
    }

    fn tcp(port: u16, host: u16) -> PortBinding {
        PortBinding {
            port,
            host_port: host,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn a_workload_becomes_one_replicated_service() {
        let s = service_spec(&workload(vec![tcp(80, 31000)]), PublishMode::Host).unwrap();
        assert_eq!(s.name.as_deref(), Some("i_web"));
        let mode = s.mode.unwrap().replicated.unwrap();
        assert_eq!(mode.replicas, Some(3));
        let task = s.task_template.unwrap();
        assert_eq!(task.force_update, Some(2));
        assert_eq!(
            task.placement.unwrap().constraints.unwrap(),
            vec!["node.labels.pool==pwn"]
        );
        let c = task.container_spec.unwrap();
        assert_eq!(c.args, Some(vec!["httpd".to_string()]));
        assert_eq!(c.labels.unwrap().get("beast.instance").unwrap(), "i");
        assert!(c.health_check.is_some());
        assert_eq!(c.mounts.unwrap()[0].typ, Some(MountType::TMPFS));
        let limits = task.resources.unwrap();
        assert_eq!(limits.limits.unwrap().memory_bytes, Some(256 << 20));
        assert_eq!(limits.reservations.unwrap().memory_bytes, Some(64 << 20));
        let net = &task.networks.unwrap()[0];
        assert_eq!(net.aliases.as_deref(), Some(&["web".to_string()][..]));
        let endpoint = s.endpoint_spec.unwrap();
        assert_eq!(endpoint.mode, Some(EndpointSpecModeEnum::DNSRR));
        let port = &endpoint.ports.unwrap()[0];
        assert_eq!(port.published_port, Some(31000));
        assert_eq!(
            port.publish_mode,
            Some(EndpointPortConfigPublishModeEnum::HOST)
        );
        // Host-bound ports cannot overlap old and new on one node.
        assert_eq!(
            s.update_config.unwrap().order,
            Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST)
        );
    }

    #[test]
    fn the_mesh_uses_virtual_ips_and_starts_new_replicas_first() {
        let s = service_spec(&workload(vec![tcp(80, 31000)]), PublishMode::Ingress).unwrap();
        assert_eq!(
            s.endpoint_spec.unwrap().mode,
            Some(EndpointSpecModeEnum::VIP)
        );
        assert_eq!(
            s.update_config.unwrap().order,
            Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST)
        );
        let unpublished = service_spec(&workload(Vec::new()), PublishMode::Host).unwrap();
        assert_eq!(
            unpublished.update_config.unwrap().order,
            Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST)
        );
    }

    #[test]
    fn what_swarm_cannot_do_is_refused_by_name() {
        let mut w = workload(Vec::new());
        w.container.privileged = true;
        let err = service_spec(&w, PublishMode::Host).unwrap_err();
        assert!(
            matches!(
                err,
                RuntimeError::Refused {
                    reason: "NotSupportedOnSwarm",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = err.to_string();
        assert!(err.contains("privileged"), "{err}");
        let mut w = workload(Vec::new());
        w.container.runtime = Some("runsc".into());
        let err = service_spec(&w, PublishMode::Host).unwrap_err().to_string();
        assert!(err.contains("runsc"), "{err}");
    }

    fn task(
        id: &str,
        service: &str,
        slot: i64,
        state: TaskState,
        desired: TaskState,
        at: &str,
    ) -> Task {
        Task {
            id: Some(id.into()),
            service_id: Some(service.into()),
            slot: Some(slot),
            node_id: Some("n1".into()),
            created_at: Some(at.into()),
            desired_state: Some(desired),
            status: Some(TaskStatus {
                state: Some(state),
                port_status: Some(PortStatus {
                    ports: Some(vec![EndpointPortConfig {
                        target_port: Some(80),
                        published_port: Some(31000),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            }),
            spec: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    labels: Some(HashMap::from([
                        ("beast.instance".to_string(), "i".to_string()),
                        ("beast.challenge".to_string(), "web".to_string()),
                    ])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn each_slot_shows_its_current_task() {
        let tasks = vec![
            task(
                "old",
                "s1",
                1,
                TaskState::FAILED,
                TaskState::SHUTDOWN,
                "2026-01-01T00:00:01Z",
            ),
            task(
                "new",
                "s1",
                1,
                TaskState::RUNNING,
                TaskState::RUNNING,
                "2026-01-01T00:00:02Z",
            ),
            task(
                "two",
                "s1",
                2,
                TaskState::PENDING,
                TaskState::RUNNING,
                "2026-01-01T00:00:01Z",
            ),
            task(
                "gone",
                "removed",
                1,
                TaskState::RUNNING,
                TaskState::SHUTDOWN,
                "2026-01-01T00:00:01Z",
            ),
        ];
        let services = HashMap::from([("s1".to_string(), Vec::new())]);
        let nodes = HashMap::from([("n1".to_string(), "worker1".to_string())]);
        let replicas = replicas(&tasks, &services, &nodes);
        assert_eq!(replicas.len(), 2);
        let first = &replicas[0];
        assert_eq!(first.id, "new");
        assert_eq!(first.name, "i_web.1");
        assert_eq!(first.replica(), Some(1));
        assert_eq!(first.state, ContainerState::Running);
        assert_eq!(first.node.as_deref(), Some("worker1"));
        assert_eq!(first.ports, vec![tcp(80, 31000)]);
        assert_eq!(replicas[1].state, ContainerState::Created);
        assert!(replicas[1].status.starts_with("pending on worker1"));
    }
}
