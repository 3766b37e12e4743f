//! The Docker implementation of [`Runtime`], on bollard. The only module that imports bollard.
//!
//! The API version is negotiated at connect time (the engine here speaks 1.41). Engine responses
//! are mapped to [`RuntimeError`]: 404 → NotFound, 409 → Conflict, 304 → success (already in the
//! asked state), transport failures → Unavailable.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::exec::StartExecResults;
use bollard::models::{BuildInfo, EventMessage, ExecConfig, ImageSummary};
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, EndpointSettings, HostConfig,
    Ipam, IpamConfig, Network, NetworkCreateRequest, NetworkingConfig,
    PortBinding as DockerPortBinding, PortSummaryTypeEnum, ResourcesUlimits, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, ListNetworksOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    RenameContainerOptionsBuilder, RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

use super::{
    BuildOutput, ByteStream, ContainerSpec, ContainerState, EngineEvent, EventStream, ImageIndex,
    ImageInfo, NetworkSpec, Observed, ObservedNetwork, PortBinding, Result, Runtime, RuntimeError,
    Termination, Ulimit, LABEL_INSTANCE,
};
use crate::model::Protocol;

/// A connection to a Docker engine.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
}

impl DockerRuntime {
    /// Connects as the docker CLI would (`DOCKER_HOST`, else the local socket) and negotiates
    /// the API version. Fails only on a malformed address; an engine that is down is reported by
    /// the first call, so beast can start (and wait) while the engine is away.
    pub async fn connect() -> Result<DockerRuntime> {
        let docker = Docker::connect_with_defaults().map_err(map_err)?;
        let docker = match docker.clone().negotiate_version().await {
            Ok(negotiated) => negotiated,
            Err(err) => {
                tracing::warn!(error = %err, "could not negotiate the engine API version; will retry on use");
                docker
            }
        };
        Ok(DockerRuntime { docker })
    }

    /// The engine client, for the Swarm runtime that drives the same engine.
    pub(super) fn client(&self) -> &Docker {
        &self.docker
    }

    /// Negotiates the API version again (after the engine came back).
    pub async fn renegotiate(&mut self) -> Result<()> {
        self.docker = self
            .docker
            .clone()
            .negotiate_version()
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

pub(super) fn map_err(err: BollardError) -> RuntimeError {
    match err {
        BollardError::DockerResponseServerError {
            status_code: 404,
            message,
        } => RuntimeError::NotFound(message),
        BollardError::DockerResponseServerError {
            status_code: 409,
            message,
        } => RuntimeError::Conflict(message),
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => RuntimeError::Engine {
            status: status_code,
            message,
        },
        BollardError::JsonDataError { message, .. } => RuntimeError::Engine { status: 0, message },
        other => RuntimeError::Unavailable(other.to_string()),
    }
}

/// 304 Not Modified means "already so": success for start/stop.
fn ignore_not_modified(result: std::result::Result<(), BollardError>) -> Result<()> {
    match result {
        Err(BollardError::DockerResponseServerError {
            status_code: 304, ..
        }) => Ok(()),
        other => other.map_err(map_err),
    }
}

fn state_of(state: Option<ContainerSummaryStateEnum>) -> ContainerState {
    match state {
        Some(ContainerSummaryStateEnum::CREATED) => ContainerState::Created,
        Some(ContainerSummaryStateEnum::RUNNING) => ContainerState::Running,
        Some(ContainerSummaryStateEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerSummaryStateEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerSummaryStateEnum::EXITED) => ContainerState::Exited,
        Some(ContainerSummaryStateEnum::REMOVING) => ContainerState::Removing,
        Some(ContainerSummaryStateEnum::DEAD) => ContainerState::Dead,
        _ => ContainerState::Unknown,
    }
}

fn observed_of(summary: ContainerSummary) -> Observed {
    let name = summary
        .names
        .as_ref()
        .and_then(|names| names.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default();
    let mut ports: Vec<PortBinding> = summary
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            let protocol = match p.typ {
                Some(PortSummaryTypeEnum::UDP) => Protocol::Udp,
                Some(PortSummaryTypeEnum::TCP) | None => Protocol::Tcp,
                Some(_) => return None,
            };
            Some(PortBinding {
                port: p.private_port,
                host_port: p.public_port?,
                protocol,
            })
        })
        .collect();
    // The engine lists a binding once per address family (0.0.0.0 and ::).
    ports.sort();
    ports.dedup();
    let mut observed = Observed {
        id: summary.id.unwrap_or_default(),
        name,
        labels: summary.labels.unwrap_or_default().into_iter().collect(),
        state: state_of(summary.state),
        status: summary.status.unwrap_or_default(),
        ports,
        created: summary.created.unwrap_or_default(),
        ip: None,
        node: None,
    };
    let networks = summary
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default();
    observed.ip = address_of(networks, observed.key().as_deref());
    observed
}

/// The container's address: on its only network; with several, on the one whose name ends
/// with its challenge (`{instance}_{challenge}`), else on the first by name.
fn address_of(
    networks: HashMap<String, EndpointSettings>,
    challenge: Option<&str>,
) -> Option<String> {
    let mut addresses: Vec<(String, String)> = networks
        .into_iter()
        .filter_map(|(name, e)| Some((name, e.ip_address.filter(|ip| !ip.is_empty())?)))
        .collect();
    addresses.sort();
    let own = challenge.and_then(|c| {
        let suffix = format!("_{c}");
        addresses
            .iter()
            .position(|(name, _)| name.ends_with(&suffix))
    });
    let index = own.unwrap_or(0);
    (index < addresses.len()).then(|| addresses.swap_remove(index).1)
}

/// Both output streams from the last `tail` lines on, followed or not (containers and Swarm
/// tasks alike).
pub(super) fn log_options(tail: usize, follow: bool) -> bollard::query_parameters::LogsOptions {
    LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .follow(follow)
        .tail(&tail.to_string())
        .build()
}

/// Ulimits as the engine takes them (containers and Swarm tasks alike); `None` for none.
pub(super) fn engine_ulimits(ulimits: &[Ulimit]) -> Option<Vec<ResourcesUlimits>> {
    (!ulimits.is_empty()).then(|| {
        ulimits
            .iter()
            .map(|u| ResourcesUlimits {
                name: Some(u.name.clone()),
                soft: Some(u.soft),
                hard: Some(u.hard),
            })
            .collect()
    })
}

/// A tar holding one file at `path` (relative to `/`), mode 0444, owned by root.
fn file_archive(path: &str, content: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o444);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path.trim_start_matches('/'), content)?;
    tar.into_inner()
}

fn event_of(msg: EventMessage, instance: &str) -> Option<EngineEvent> {
    let actor = msg.actor?;
    let attrs = actor.attributes.unwrap_or_default();
    if attrs.get(LABEL_INSTANCE).map(String::as_str) != Some(instance) {
        return None;
    }
    Some(EngineEvent {
        action: msg.action.unwrap_or_default(),
        container_id: actor.id.unwrap_or_default(),
        name: attrs.get("name").cloned().unwrap_or_default(),
        challenge: super::key_of(&attrs.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        replica: attrs.get(super::LABEL_REPLICA).and_then(|r| r.parse().ok()),
        exit_code: attrs.get("exitCode").and_then(|c| c.parse().ok()),
        time: msg.time.unwrap_or_default(),
    })
}

/// Mount options of every `tmpfs` path: writable, no setuid binaries or device files, and at
/// most 64 MiB (tmpfs pages count against the container's memory limit too). Executables are
/// allowed: JITs and challenge runtimes unpack code into /tmp. The engine's default mode (1777)
/// lets any `user` write there.
const TMPFS_OPTIONS: &str = "rw,nosuid,nodev,size=64m";

/// Translates beast's container spec into the engine's create body.
fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<DockerPortBinding>>> = HashMap::new();
    for p in &spec.ports {
        let key = format!("{}/{}", p.port, p.protocol);
        exposed.push(key.clone());
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(DockerPortBinding {
                host_ip: None,
                host_port: Some(p.host_port.to_string()),
            });
    }
    let mut security_opt = Vec::new();
    if spec.no_new_privileges {
        security_opt.push("no-new-privileges:true".to_string());
    }
    let host_config = HostConfig {
        port_bindings: Some(bindings),
        nano_cpus: spec.nano_cpus,
        memory: Some(spec.memory),
        // No swap beyond the memory limit: a memory-hungry exploit must not thrash the host.
        memory_swap: Some(spec.memory),
        pids_limit: Some(spec.pids),
        cap_drop: Some(vec!["ALL".to_string()]),
        cap_add: Some(spec.cap_add.clone()),
        security_opt: Some(security_opt),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        }),
        init: Some(false),
        // On the challenge's network only: naming it here keeps the container off the default
        // bridge.
        network_mode: spec.network.clone(),
        readonly_rootfs: Some(spec.read_only),
        tmpfs: (!spec.tmpfs.is_empty()).then(|| {
            spec.tmpfs
                .iter()
                .map(|path| (path.clone(), TMPFS_OPTIONS.to_string()))
                .collect()
        }),
        // Privileged gets every capability from the engine whatever cap_drop says.
        privileged: Some(spec.privileged),
        ulimits: engine_ulimits(&spec.ulimits),
        runtime: spec.runtime.clone(),
        ..Default::default()
    };
    let networking_config = spec.network.as_ref().map(|network| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            network.clone(),
            EndpointSettings {
                aliases: Some(spec.aliases.clone()),
                ..Default::default()
            },
        )])),
    });
    let labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        user: spec.user.clone(),
        networking_config,
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        working_dir: spec.working_dir.clone(),
        env: Some(spec.env.clone()),
        exposed_ports: Some(exposed),
        labels: Some(labels),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// The lines of one build stream message, for the build log.
fn build_lines(info: &BuildInfo) -> Vec<String> {
    let text = info
        .stream
        .as_deref()
        .or(info.status.as_deref())
        .unwrap_or("");
    text.lines()
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The engine's error, prefixed with the step it failed in (`Step 3/4 : RUN false`) when the
/// log shows one and the message does not already name it.
fn build_failure(message: &str, log: &[String]) -> String {
    let step = log.iter().rev().find(|l| l.starts_with("Step "));
    match step {
        Some(step) if !message.contains(step.as_str()) => format!("{step}: {message}"),
        _ => message.to_string(),
    }
}

fn image_info(summary: ImageSummary) -> ImageInfo {
    ImageInfo {
        id: summary.id,
        tags: summary
            .repo_tags
            .into_iter()
            .filter(|t| t != "<none>:<none>")
            .collect(),
        created: summary.created,
        labels: summary.labels.into_iter().collect(),
    }
}

/// The IPv4 subnets of a network's IPAM config, in its order.
pub(super) fn ipv4_subnets(ipam: Option<Ipam>) -> Vec<String> {
    ipam.and_then(|i| i.config)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.subnet)
        .filter(|s| s.parse::<ipnet::Ipv4Net>().is_ok())
        .collect()
}

pub(super) fn network_of(n: Network) -> ObservedNetwork {
    ObservedNetwork {
        id: n.id.unwrap_or_default(),
        name: n.name.unwrap_or_default(),
        labels: n.labels.unwrap_or_default().into_iter().collect(),
        subnet: ipv4_subnets(n.ipam).into_iter().next(),
        // The list call does not report endpoints (bollard's list type has no such field).
        containers: Vec::new(),
    }
}

pub(super) fn create_network_request(spec: &NetworkSpec, driver: &str) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: spec.name.clone(),
        driver: Some(driver.to_string()),
        internal: Some(false),
        attachable: Some(false),
        ipam: Some(Ipam {
            driver: Some("default".to_string()),
            config: Some(vec![IpamConfig {
                subnet: Some(spec.subnet.clone()),
                gateway: Some(spec.gateway.clone()),
                ..Default::default()
            }]),
            options: None,
        }),
        labels: Some(spec.labels.clone().into_iter().collect()),
        ..Default::default()
    }
}

/// The engine refuses an overlapping subnet with 403 "Pool overlaps with other one on this
/// address space" and active endpoints on remove with 403 "... has active endpoints": both are
/// conflicts with other objects, not failures of the engine.
pub(super) fn network_err(err: BollardError) -> RuntimeError {
    match err {
        BollardError::DockerResponseServerError {
            status_code: 403,
            message,
        } => RuntimeError::Conflict(message),
        other => map_err(other),
    }
}

impl DockerRuntime {
    /// Runs a build stream to its end: the log, the image id the builder announced (if it did),
    /// or the engine's error.
    async fn run_build(
        &self,
        options: bollard::query_parameters::BuildImageOptions,
        tar: Vec<u8>,
    ) -> Result<(Vec<String>, Option<String>)> {
        let mut stream = self.docker.build_image(
            options,
            None,
            Some(bollard::body_full(bytes::Bytes::from(tar))),
        );
        let mut log = Vec::new();
        let mut image_id = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    log.extend(build_lines(&info));
                    if let Some(id) = info.aux.and_then(|aux| aux.id) {
                        image_id = Some(id);
                    }
                }
                Err(BollardError::DockerStreamError { error }) => {
                    log.push(error.trim_end().to_string());
                    let message = build_failure(error.trim_end(), &log);
                    return Err(RuntimeError::Build { message, log });
                }
                // The engine refused the request itself (e.g. 400 for a bad Dockerfile path or
                // a missing FROM image, 500 for a broken context): still a failed build.
                Err(BollardError::DockerResponseServerError {
                    status_code,
                    message,
                }) if status_code < 500 || !log.is_empty() => {
                    log.push(message.clone());
                    return Err(RuntimeError::Build { message, log });
                }
                Err(err) => return Err(map_err(err)),
            }
        }
        Ok((log, image_id))
    }
}

impl Runtime for DockerRuntime {
    async fn build(
        &self,
        tar: Vec<u8>,
        tag: &str,
        dockerfile: &str,
        args: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> Result<BuildOutput> {
        let args: HashMap<String, String> = args.clone().into_iter().collect();
        let labels: HashMap<String, String> = labels.clone().into_iter().collect();
        // `pull` is left unset: the engine then never pulls (there is no registry here).
        let options = BuildImageOptionsBuilder::new()
            .t(tag)
            .dockerfile(dockerfile)
            .buildargs(&args)
            .labels(&labels)
            .rm(true)
            .forcerm(true)
            .build();
        let (log, announced) = self.run_build(options, tar).await?;
        // The legacy builder announces the id in an `aux` message; ask the engine otherwise.
        let image_id = match announced {
            Some(id) => id,
            None => self
                .image_id(tag)
                .await?
                .ok_or_else(|| RuntimeError::Build {
                    message: format!("the build ended without an image tagged {tag}"),
                    log: log.clone(),
                })?,
        };
        Ok(BuildOutput { image_id, log })
    }

    async fn remove_image(&self, reference: &str) -> Result<()> {
        let options = RemoveImageOptionsBuilder::new().force(false).build();
        match self
            .docker
            .remove_image(reference, Some(options), None)
            .await
        {
            Ok(_)
            | Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(err) => Err(map_err(err)),
        }
    }

    async fn list_images_with_label(&self, key: &str, value: &str) -> Result<Vec<ImageInfo>> {
        let filters: HashMap<&str, Vec<String>> =
            HashMap::from([("label", vec![format!("{key}={value}")])]);
        let options = ListImagesOptionsBuilder::new()
            .all(false)
            .filters(&filters)
            .build();
        let images = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(map_err)?;
        Ok(images
            .into_iter()
            .map(image_info)
            // Never act on an image the filter should not have returned.
            .filter(|i| i.labels.get(key).map(String::as_str) == Some(value))
            .collect())
    }

    async fn ping(&self) -> Result<()> {
        self.docker.ping().await.map(|_| ()).map_err(map_err)
    }

    async fn list(&self, instance: &str, challenge: Option<&str>) -> Result<Vec<Observed>> {
        let mut labels = vec![format!("{LABEL_INSTANCE}={instance}")];
        if let Some(key) = challenge {
            labels.extend(
                super::key_labels(key)
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}")),
            );
        }
        let filters: HashMap<&str, Vec<String>> = HashMap::from([("label", labels)]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(map_err)?;
        Ok(summaries
            .into_iter()
            .map(observed_of)
            // Belt and braces: never act on a container the filter should not have returned.
            .filter(|o| o.instance() == Some(instance))
            .filter(|o| challenge.is_none() || o.key().as_deref() == challenge)
            .collect())
    }

    async fn images(&self) -> Result<ImageIndex> {
        let options = ListImagesOptionsBuilder::new().all(false).build();
        let images = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(map_err)?;
        let mut index = ImageIndex::default();
        for image in images {
            index.insert(&image.id, &image.id);
            for tag in &image.repo_tags {
                index.insert(tag, &image.id);
            }
        }
        Ok(index)
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>> {
        match self.docker.inspect_image(reference).await {
            Ok(image) => Ok(image.id),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(err) => Err(map_err(err)),
        }
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        let created = self
            .docker
            .create_container(Some(options), create_body(spec))
            .await
            .map_err(map_err)?;
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> Result<()> {
        ignore_not_modified(self.docker.start_container(id, None).await)
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let seconds = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(seconds).build();
        ignore_not_modified(self.docker.stop_container(id, Some(options)).await)
    }

    async fn unpause(&self, id: &str) -> Result<()> {
        self.docker.unpause_container(id).await.map_err(map_err)
    }

    async fn rename(&self, id: &str, name: &str) -> Result<()> {
        let options = RenameContainerOptionsBuilder::new().name(name).build();
        self.docker
            .rename_container(id, options)
            .await
            .map_err(map_err)
    }

    async fn restart(&self, id: &str, grace: Duration) -> Result<()> {
        let seconds = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = RestartContainerOptionsBuilder::new().t(seconds).build();
        self.docker
            .restart_container(id, Some(options))
            .await
            .map_err(map_err)
    }

    fn events(&self, instance: &str) -> EventStream {
        let filters: HashMap<&str, Vec<String>> = HashMap::from([
            ("type", vec!["container".to_string()]),
            ("label", vec![format!("{LABEL_INSTANCE}={instance}")]),
        ]);
        let options = EventsOptionsBuilder::new().filters(&filters).build();
        let instance = instance.to_string();
        self.docker
            .events(Some(options))
            .filter_map(move |item| {
                let out = match item {
                    Err(err) => Some(Err(map_err(err))),
                    Ok(msg) => event_of(msg, &instance).map(Ok),
                };
                futures::future::ready(out)
            })
            .boxed()
    }

    fn log_stream(&self, id: &str, tail: usize, follow: bool) -> ByteStream {
        self.docker
            .logs(id, Some(log_options(tail, follow)))
            .map(|chunk| chunk.map(|c| c.into_bytes()).map_err(map_err))
            .boxed()
    }

    async fn logs(&self, id: &str, tail: usize) -> Result<Vec<String>> {
        super::lines_of(self.log_stream(id, tail, false)).await
    }

    async fn exec(&self, id: &str, command: &[String]) -> Result<i64> {
        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(command.to_vec()),
            ..Default::default()
        };
        let exec = self.docker.create_exec(id, config).await.map_err(map_err)?;
        if let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(map_err)?
        {
            while let Some(chunk) = output.next().await {
                chunk.map_err(map_err)?;
            }
        }
        let inspected = self.docker.inspect_exec(&exec.id).await.map_err(map_err)?;
        Ok(inspected.exit_code.unwrap_or(-1))
    }

    async fn termination(&self, id: &str) -> Result<Termination> {
        let c = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(map_err)?;
        let state = c.state.unwrap_or_default();
        Ok(Termination {
            exit_code: state.exit_code.unwrap_or_default(),
            oom_killed: state.oom_killed.unwrap_or_default(),
            finished_at: state.finished_at.unwrap_or_default(),
            restart_count: c.restart_count.unwrap_or_default(),
            started_at: state.started_at.unwrap_or_default(),
            running: state.running.unwrap_or_default()
                && !state.restarting.unwrap_or_default()
                && !state.paused.unwrap_or_default(),
            message: String::new(),
        })
    }

    async fn inspect(&self, id: &str) -> Result<ContainerSpec> {
        let c = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(map_err)?;
        let config = c.config.unwrap_or_default();
        let host = c.host_config.unwrap_or_default();
        let mut ports: Vec<PortBinding> = Vec::new();
        for (key, bindings) in host.port_bindings.unwrap_or_default() {
            let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
            let Ok(port) = port.parse() else { continue };
            let protocol = if proto == "udp" {
                Protocol::Udp
            } else {
                Protocol::Tcp
            };
            for b in bindings.unwrap_or_default() {
                if let Some(host_port) = b.host_port.and_then(|h| h.parse().ok()) {
                    ports.push(PortBinding {
                        port,
                        host_port,
                        protocol,
                    });
                }
            }
        }
        ports.sort();
        ports.dedup();
        let mut env = config.env.unwrap_or_default();
        env.sort();
        // The engine names the default bridge `default` (or `bridge`); beast's spec says None.
        let network = host
            .network_mode
            .clone()
            .filter(|m| !matches!(m.as_str(), "" | "default" | "bridge"));
        let endpoint = network.as_ref().and_then(|net| {
            c.network_settings
                .as_ref()
                .and_then(|s| s.networks.as_ref())
                .and_then(|n| n.get(net))
        });
        // The engine adds the short id as an alias of its own.
        let short_id = c.id.as_deref().unwrap_or_default().get(..12).unwrap_or("");
        let aliases = endpoint
            .and_then(|e| e.aliases.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a != short_id)
            .collect();
        let mut tmpfs: Vec<String> = host.tmpfs.clone().unwrap_or_default().into_keys().collect();
        tmpfs.sort();
        // The engine fills in its default runtime; beast's spec says None for it.
        let runtime = match host.runtime.clone().filter(|r| !r.is_empty()) {
            Some(r) => {
                let default = match self.docker.info().await {
                    Ok(info) => info.default_runtime,
                    Err(_) => None,
                };
                (r != default.as_deref().unwrap_or("runc")).then_some(r)
            }
            None => None,
        };
        Ok(ContainerSpec {
            name: c
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            image: config.image.unwrap_or_default(),
            image_id: c.image.unwrap_or_default(),
            command: config.cmd,
            entrypoint: config.entrypoint,
            working_dir: config.working_dir.filter(|w| !w.is_empty()),
            env,
            ports,
            nano_cpus: host.nano_cpus.filter(|n| *n > 0),
            memory: host.memory.unwrap_or_default(),
            pids: host.pids_limit.unwrap_or_default(),
            cap_add: host.cap_add.unwrap_or_default(),
            no_new_privileges: host
                .security_opt
                .unwrap_or_default()
                .iter()
                .any(|o| o.starts_with("no-new-privileges")),
            files: Vec::new(),
            labels: config.labels.unwrap_or_default().into_iter().collect(),
            network,
            aliases,
            read_only: host.readonly_rootfs.unwrap_or_default(),
            tmpfs,
            user: config.user.filter(|u| !u.is_empty()),
            privileged: host.privileged.unwrap_or_default(),
            ulimits: host
                .ulimits
                .unwrap_or_default()
                .into_iter()
                .map(|u| Ulimit {
                    name: u.name.unwrap_or_default(),
                    soft: u.soft.unwrap_or_default(),
                    hard: u.hard.unwrap_or_default(),
                })
                .collect(),
            runtime,
        })
    }

    async fn networks(&self, instance: &str) -> Result<Vec<ObservedNetwork>> {
        let filters: HashMap<&str, Vec<String>> =
            HashMap::from([("label", vec![format!("{LABEL_INSTANCE}={instance}")])]);
        let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
        let networks = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(map_err)?;
        Ok(networks
            .into_iter()
            .map(network_of)
            // Never act on a network the filter should not have returned.
            .filter(|n| n.instance() == Some(instance))
            .collect())
    }

    async fn subnets_in_use(&self) -> Result<Vec<String>> {
        let networks = self
            .docker
            .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
            .await
            .map_err(map_err)?;
        Ok(networks
            .into_iter()
            .flat_map(|n| ipv4_subnets(n.ipam))
            .collect())
    }

    async fn create_network(&self, spec: &NetworkSpec) -> Result<String> {
        let created = self
            .docker
            .create_network(create_network_request(spec, "bridge"))
            .await
            .map_err(network_err)?;
        // Engines before API 1.44 create a second network of the same name unless asked to
        // check (bollard's request type has no `CheckDuplicate`), and only warn: undo it.
        if created.warning.contains("already exists") {
            if let Err(err) = self.docker.remove_network(&created.id).await {
                tracing::warn!(network = %spec.name, error = %err, "could not remove a duplicate network");
            }
            return Err(RuntimeError::Conflict(created.warning));
        }
        Ok(created.id)
    }

    async fn put_file(&self, id: &str, path: &str, content: &[u8]) -> Result<()> {
        let archive = file_archive(path, content).map_err(|e| RuntimeError::Engine {
            status: 0,
            message: format!("packing {path}: {e}"),
        })?;
        let options = bollard::query_parameters::UploadToContainerOptionsBuilder::new()
            .path("/")
            .build();
        self.docker
            .upload_to_container(
                id,
                Some(options),
                bollard::body_full(bytes::Bytes::from(archive)),
            )
            .await
            .map_err(map_err)
    }

    async fn remove_network(&self, id: &str) -> Result<()> {
        match self.docker.remove_network(id).await {
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            other => other.map_err(network_err),
        }
    }

    async fn runtimes(&self) -> Result<Vec<String>> {
        let info = self.docker.info().await.map_err(map_err)?;
        let mut names: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        names.sort();
        Ok(names)
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            // Already gone (or already being removed): the goal is reached.
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            }) if message.contains("already in progress") => Ok(()),
            other => other.map_err(map_err),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn endpoint(ip: &str) -> EndpointSettings {
        EndpointSettings {
            ip_address: Some(ip.to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn the_address_on_the_challenges_network_wins() {
        let one = HashMap::from([("i_web".to_string(), endpoint("10.0.0.2"))]);
        assert_eq!(address_of(one, Some("web")).as_deref(), Some("10.0.0.2"));
        let several = HashMap::from([
            ("a_other".to_string(), endpoint("10.0.1.2")),
            ("i_web".to_string(), endpoint("10.0.0.2")),
            ("bridge".to_string(), endpoint("")),
        ]);
        assert_eq!(
            address_of(several.clone(), Some("web")).as_deref(),
            Some("10.0.0.2")
        );
        assert_eq!(address_of(several, None).as_deref(), Some("10.0.1.2"));
        assert_eq!(address_of(HashMap::new(), Some("web")), None);
    }

    #[test]
    fn the_security_block_reaches_the_create_body() {
        let spec = ContainerSpec {
            image: "img".into(),
            network: Some("i_web".into()),
            aliases: vec!["web".into()],
            read_only: true,
            tmpfs: vec!["/tmp".into()],
            user: Some("1000:1000".into()),
            ulimits: vec![Ulimit {
                name: "nofile".into(),
                soft: 64,
                hard: 64,
            }],
            runtime: Some("runsc".into()),
            ..ContainerSpec::default()
        };
        let body = create_body(&spec);
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("i_web"));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.tmpfs.unwrap()["/tmp"], TMPFS_OPTIONS);
        assert_eq!(host.runtime.as_deref(), Some("runsc"));
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.ulimits.unwrap()[0].soft, Some(64));
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(
            endpoints["i_web"].aliases.as_deref(),
            Some(&["web".to_string()][..])
        );
    }

    #[test]
    fn a_plain_spec_stays_on_the_default_bridge() {
        let body = create_body(&ContainerSpec::default());
        assert!(body.networking_config.is_none());
        let host = body.host_config.unwrap();
        assert!(host.network_mode.is_none() && host.tmpfs.is_none() && host.ulimits.is_none());
    }

    #[test]
    fn only_ipv4_subnets_count() {
        let ipam = Ipam {
            config: Some(vec![
                IpamConfig {
                    subnet: Some("fd00::/64".into()),
                    ..Default::default()
                },
                IpamConfig {
                    subnet: Some("172.17.0.0/16".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        assert_eq!(ipv4_subnets(Some(ipam)), vec!["172.17.0.0/16"]);
        assert!(ipv4_subnets(None).is_empty());
    }
}
