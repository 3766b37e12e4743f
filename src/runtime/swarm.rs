//! The Swarm runtime (SPEC §9): the same seam, driving a Docker Swarm through its manager.
//!
//! A challenge's main containers are ONE Swarm service with `replicas`, each of its services one
//! more; the reconciler hands them over whole ([`Runtime::put_workload`]) and Swarm places and
//! restarts the replicas (tasks) itself. [`Runtime::list`] reports the current task of every
//! slot as a replica, with the node it runs on, so planner, status and API see what they see on
//! one engine. Networks are overlays (not attachable). Images, builds and networks go through
//! the manager's engine; built images are pushed to `--registry` so every node pulls the same
//! bytes. The event stream is made by polling the task list once a second: Swarm has no task
//! events, and a task that failed is reported as a container's `die` would be.

mod translate;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::{Task, TaskState};
use bollard::query_parameters::{
    ListNodesOptions, ListServicesOptionsBuilder, ListTasksOptionsBuilder, PushImageOptionsBuilder,
    TagImageOptionsBuilder, UpdateServiceOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

pub use translate::PublishMode;

use super::docker::{create_network_request, map_err, network_err, DockerRuntime};
use super::{
    key_labels, BuildOutput, ByteStream, ContainerSpec, EngineEvent, EventStream, ImageIndex,
    ImageInfo, NetworkSpec, Observed, ObservedNetwork, ObservedWorkload, Result, Runtime,
    RuntimeError, Termination, WorkloadSpec, LABEL_INSTANCE,
};

/// How often the task list is polled for the event stream.
const POLL: Duration = Duration::from_secs(1);

/// What the operator chose for the swarm (`run --runtime swarm`).
#[derive(Debug, Clone)]
pub struct SwarmSettings {
    pub publish: PublishMode,
    /// `HOST:PORT` of the registry every node pulls beast's builds from.
    pub registry: Option<String>,
}

/// A Docker Swarm, driven through one of its managers.
#[derive(Clone)]
pub struct SwarmRuntime {
    engine: DockerRuntime,
    settings: SwarmSettings,
    /// Node ids → host names, refreshed when a task names an unknown node.
    nodes: Arc<Mutex<HashMap<String, String>>>,
}

/// What the swarm looks like, for the startup checks.
#[derive(Debug, Clone, PartialEq)]
pub struct SwarmInfo {
    /// Whether this engine is a manager of an active swarm.
    pub manager: bool,
    pub nodes: usize,
}

impl SwarmRuntime {
    pub fn new(engine: DockerRuntime, settings: SwarmSettings) -> SwarmRuntime {
        SwarmRuntime {
            engine,
            settings,
            nodes: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn settings(&self) -> &SwarmSettings {
        &self.settings
    }

    fn docker(&self) -> &Docker {
        self.engine.client()
    }

    /// Whether the engine manages a swarm, and how many nodes it has.
    pub async fn info(&self) -> Result<SwarmInfo> {
        let info = self.docker().info().await.map_err(map_err)?;
        let swarm = info.swarm.unwrap_or_default();
        let manager = swarm.control_available.unwrap_or(false);
        let nodes = usize::try_from(swarm.nodes.unwrap_or(0)).unwrap_or(0);
        Ok(SwarmInfo { manager, nodes })
    }

    async fn node_names(&self, tasks: &[Task]) -> Result<HashMap<String, String>> {
        let unknown = {
            let known = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            tasks
                .iter()
                .filter_map(|t| t.node_id.as_ref())
                .any(|id| !id.is_empty() && !known.contains_key(id))
        };
        if unknown {
            let listed = self
                .docker()
                .list_nodes(None::<ListNodesOptions>)
                .await
                .map_err(map_err)?;
            let mut known = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            for n in listed {
                let (Some(id), Some(host)) = (n.id, n.description.and_then(|d| d.hostname)) else {
                    continue;
                };
                known.insert(id, host);
            }
        }
        Ok(self.nodes.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    async fn services(
        &self,
        instance: &str,
        key: Option<&str>,
    ) -> Result<Vec<bollard::models::Service>> {
        let options = ListServicesOptionsBuilder::new()
            .filters(&label_filters(instance, key))
            .build();
        let services = self
            .docker()
            .list_services(Some(options))
            .await
            .map_err(map_err)?;
        // Never act on a service the filter should not have returned.
        Ok(services
            .into_iter()
            .filter(|s| {
                s.spec
                    .as_ref()
                    .and_then(|s| s.labels.as_ref())
                    .and_then(|l| l.get(LABEL_INSTANCE))
                    .map(String::as_str)
                    == Some(instance)
            })
            .collect())
    }

    /// The services of `instance` (of one key) and their current replicas: one service list
    /// and one task list (and a node list when a task names a node not seen before).
    async fn observe(
        &self,
        instance: &str,
        key: Option<&str>,
    ) -> Result<(Vec<bollard::models::Service>, Vec<Observed>)> {
        let services = self.services(instance, key).await?;
        let tasks = self.tasks(instance, key).await?;
        let nodes = self.node_names(&tasks).await?;
        let ports: HashMap<String, Vec<_>> = services
            .iter()
            .filter_map(|s| Some((s.id.clone()?, translate::service_ports(s))))
            .collect();
        let replicas = translate::replicas(&tasks, &ports, &nodes);
        Ok((services, replicas))
    }

    async fn tasks(&self, instance: &str, key: Option<&str>) -> Result<Vec<Task>> {
        let options = ListTasksOptionsBuilder::new()
            .filters(&label_filters(instance, key))
            .build();
        self.docker()
            .list_tasks(Some(options))
            .await
            .map_err(map_err)
    }
}

/// Whether the kernel beast runs on has IPVS, which Swarm's routing mesh and virtual IPs need
/// (beast is meant to run on a manager, whose kernel is like the others').
pub fn kernel_has_ipvs() -> bool {
    std::path::Path::new("/proc/net/ip_vs").exists()
        || std::path::Path::new("/sys/module/ip_vs").exists()
}

/// `label` filters selecting `instance`'s objects (of one key).
fn label_filters(instance: &str, key: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut labels = vec![format!("{LABEL_INSTANCE}={instance}")];
    if let Some(key) = key {
        labels.extend(key_labels(key).into_iter().map(|(k, v)| format!("{k}={v}")));
    }
    HashMap::from([("label".to_string(), labels)])
}

fn unsupported(what: &str) -> RuntimeError {
    RuntimeError::Engine {
        status: 501,
        message: format!("{what}: Swarm runs tasks, not containers beast manages one by one"),
    }
}

/// One poll's view of the tasks: state per task id.
type Seen = HashMap<String, TaskState>;

/// The events a poll tells against the previous one: `die` for a task that failed since,
/// `update` for any other change of state (so the challenge's status is looked at again).
fn task_events(previous: &Seen, tasks: &[Task], now: i64) -> Vec<EngineEvent> {
    tasks
        .iter()
        .filter_map(|t| {
            let id = t.id.clone()?;
            let state = t.status.as_ref()?.state?;
            if previous.get(&id) == Some(&state) {
                return None;
            }
            let labels = translate::task_labels(t);
            let failed = matches!(state, TaskState::FAILED | TaskState::REJECTED);
            Some(EngineEvent {
                action: if failed { "die" } else { "update" }.to_string(),
                container_id: id,
                name: translate::replica_name(&labels, t.slot),
                challenge: super::key_of(&labels),
                replica: t.slot.and_then(|s| u32::try_from(s).ok()),
                exit_code: t
                    .status
                    .as_ref()
                    .and_then(|s| s.container_status.as_ref())
                    .and_then(|c| c.exit_code),
                time: now,
            })
        })
        .collect()
}

impl Runtime for SwarmRuntime {
    async fn ping(&self) -> Result<()> {
        self.engine.ping().await
    }

    async fn list(&self, instance: &str, challenge: Option<&str>) -> Result<Vec<Observed>> {
        Ok(self.observe(instance, challenge).await?.1)
    }

    async fn images(&self) -> Result<ImageIndex> {
        self.engine.images().await
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>> {
        self.engine.image_id(reference).await
    }

    async fn build(
        &self,
        tar: Vec<u8>,
        tag: &str,
        dockerfile: &str,
        args: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> Result<BuildOutput> {
        self.engine.build(tar, tag, dockerfile, args, labels).await
    }

    async fn remove_image(&self, reference: &str) -> Result<()> {
        self.engine.remove_image(reference).await
    }

    async fn list_images_with_label(&self, key: &str, value: &str) -> Result<Vec<ImageInfo>> {
        self.engine.list_images_with_label(key, value).await
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        Err(unsupported(&format!("create {}", spec.name)))
    }

    async fn start(&self, id: &str) -> Result<()> {
        Err(unsupported(&format!("start {id}")))
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<()> {
        Err(unsupported(&format!("stop {id}")))
    }

    async fn unpause(&self, id: &str) -> Result<()> {
        Err(unsupported(&format!("unpause {id}")))
    }

    async fn rename(&self, id: &str, _name: &str) -> Result<()> {
        Err(unsupported(&format!("rename {id}")))
    }

    async fn remove(&self, id: &str) -> Result<()> {
        Err(unsupported(&format!("remove {id}")))
    }

    async fn restart(&self, id: &str, _grace: Duration) -> Result<()> {
        Err(unsupported(&format!("restart {id}")))
    }

    fn events(&self, instance: &str) -> EventStream {
        let me = self.clone();
        let instance = instance.to_string();
        futures::stream::unfold(
            (me, instance, None::<Seen>, Vec::<EngineEvent>::new()),
            |(me, instance, mut seen, mut pending)| async move {
                loop {
                    if let Some(event) = pending.pop() {
                        return Some((Ok(event), (me, instance, seen, pending)));
                    }
                    if seen.is_some() {
                        tokio::time::sleep(POLL).await;
                    }
                    let tasks = match me.tasks(&instance, None).await {
                        Ok(tasks) => tasks,
                        // The stream ends with the error; the follower reconnects and resyncs.
                        Err(err) => return Some((Err(err), (me, instance, seen, pending))),
                    };
                    let now = time::OffsetDateTime::now_utc().unix_timestamp();
                    if let Some(previous) = &seen {
                        pending = task_events(previous, &tasks, now);
                    }
                    seen = Some(
                        tasks
                            .iter()
                            .filter_map(|t| Some((t.id.clone()?, t.status.as_ref()?.state?)))
                            .collect(),
                    );
                }
            },
        )
        .boxed()
    }

    fn log_stream(&self, id: &str, tail: usize, follow: bool) -> ByteStream {
        self.docker()
            .task_logs(id, Some(super::docker::log_options(tail, follow)))
            .map(|chunk| chunk.map(|c| c.into_bytes()).map_err(map_err))
            .boxed()
    }

    async fn logs(&self, id: &str, tail: usize) -> Result<Vec<String>> {
        super::lines_of(self.log_stream(id, tail, false)).await
    }

    async fn exec(&self, id: &str, _command: &[String]) -> Result<i64> {
        Err(unsupported(&format!("exec in {id}")))
    }

    async fn termination(&self, id: &str) -> Result<Termination> {
        let task = self.docker().inspect_task(id).await.map_err(map_err)?;
        let status = task.status.unwrap_or_default();
        let running = status.state == Some(TaskState::RUNNING);
        Ok(Termination {
            exit_code: status
                .container_status
                .and_then(|c| c.exit_code)
                .unwrap_or(0),
            oom_killed: false,
            finished_at: if running {
                String::new()
            } else {
                status.timestamp.clone().unwrap_or_default()
            },
            restart_count: 0,
            started_at: task.created_at.unwrap_or_default(),
            running,
            message: status.err.unwrap_or_default(),
        })
    }

    async fn inspect(&self, id: &str) -> Result<ContainerSpec> {
        Err(unsupported(&format!("inspect {id}")))
    }

    async fn networks(&self, instance: &str) -> Result<Vec<ObservedNetwork>> {
        let mut networks = self.engine.networks(instance).await?;
        for n in &mut networks {
            if let Some(key) = n.key() {
                n.name = crate::containers::network_name(instance, &key);
            }
        }
        Ok(networks)
    }

    async fn subnets_in_use(&self) -> Result<Vec<String>> {
        self.engine.subnets_in_use().await
    }

    async fn create_network(&self, spec: &NetworkSpec) -> Result<String> {
        // An overlay spans the nodes; not attachable, so no stray container can join it.
        let mut spec = spec.clone();
        spec.name = translate::engine_name(&spec.name);
        let created = self
            .docker()
            .create_network(create_network_request(&spec, "overlay"))
            .await
            .map_err(network_err)?;
        if created.warning.contains("already exists") {
            let _ = self.docker().remove_network(&created.id).await;
            return Err(RuntimeError::Conflict(created.warning));
        }
        Ok(created.id)
    }

    async fn remove_network(&self, id: &str) -> Result<()> {
        self.engine.remove_network(id).await
    }

    async fn runtimes(&self) -> Result<Vec<String>> {
        self.engine.runtimes().await
    }

    async fn put_file(&self, id: &str, path: &str, _content: &[u8]) -> Result<()> {
        Err(unsupported(&format!("put {path} into {id}")))
    }

    fn schedules_replicas(&self) -> bool {
        true
    }

    async fn workloads(
        &self,
        instance: &str,
        key: Option<&str>,
    ) -> Result<(Vec<ObservedWorkload>, Vec<Observed>)> {
        let (services, replicas) = self.observe(instance, key).await?;
        let workloads = services
            .into_iter()
            .map(translate::workload_of)
            .map(|mut w| {
                if let Some(key) = w.key() {
                    w.name = crate::containers::workload_name(instance, &key, w.service());
                }
                w
            })
            .collect();
        Ok((workloads, replicas))
    }

    async fn put_workload(
        &self,
        spec: &WorkloadSpec,
        existing: Option<&ObservedWorkload>,
    ) -> Result<String> {
        let mut spec = spec.clone();
        spec.name = translate::engine_name(&spec.name);
        spec.container.network = spec
            .container
            .network
            .as_deref()
            .map(translate::engine_name);
        let body = translate::service_spec(&spec, self.settings.publish)?;
        match existing {
            None => {
                let created = self
                    .docker()
                    .create_service(body, None)
                    .await
                    .map_err(map_err)?;
                Ok(created.id.unwrap_or_default())
            }
            Some(old) => {
                let version = i32::try_from(old.version).unwrap_or(i32::MAX);
                let options = UpdateServiceOptionsBuilder::new().version(version).build();
                self.docker()
                    .update_service(&old.id, body, options, None)
                    .await
                    .map_err(map_err)?;
                Ok(old.id.clone())
            }
        }
    }

    async fn remove_workload(&self, id: &str) -> Result<()> {
        match self.docker().delete_service(id).await {
            Ok(()) => Ok(()),
            Err(err) => match map_err(err) {
                RuntimeError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn distribute(&self, tag: &str) -> Result<String> {
        let Some(registry) = &self.settings.registry else {
            let info = self.info().await?;
            if info.nodes > 1 {
                return Err(RuntimeError::Refused {
                    reason: "RegistryRequired",
                    message: format!(
                        "{tag} was built on the manager only, and this swarm has {} nodes: run beast with --registry HOST:PORT so every node can pull it",
                        info.nodes
                    ),
                });
            }
            return Ok(tag.to_string());
        };
        let (repo, version) = split_tag(tag);
        let remote = format!("{registry}/{repo}");
        let options = TagImageOptionsBuilder::new()
            .repo(&remote)
            .tag(version)
            .build();
        self.docker()
            .tag_image(tag, Some(options))
            .await
            .map_err(map_err)?;
        let options = PushImageOptionsBuilder::new().tag(version).build();
        let mut push = self.docker().push_image(&remote, Some(options), None);
        while let Some(step) = push.next().await {
            let step = step.map_err(map_err)?;
            if let Some(err) = step.error_detail.and_then(|e| e.message) {
                return Err(RuntimeError::Engine {
                    status: 502,
                    message: format!("pushing {remote}:{version}: {err}"),
                });
            }
        }
        let pushed = self
            .docker()
            .inspect_image(&format!("{remote}:{version}"))
            .await
            .map_err(map_err)?;
        let digest = pushed
            .repo_digests
            .unwrap_or_default()
            .into_iter()
            .find(|d| d.starts_with(&format!("{remote}@")))
            .ok_or_else(|| RuntimeError::Engine {
                status: 502,
                message: format!("{remote}:{version} was pushed but has no digest"),
            })?;
        Ok(digest)
    }
}

/// `repo:tag` → (`repo`, `tag`); `latest` when there is none.
fn split_tag(reference: &str) -> (&str, &str) {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    match last.rsplit_once(':') {
        Some((_, tag)) => (&reference[..reference.len() - tag.len() - 1], tag),
        None => (reference, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::TaskStatus;

    #[test]
    fn tags_split_at_the_last_colon_of_the_last_segment() {
        assert_eq!(
            split_tag("beast-build/web:ab12"),
            ("beast-build/web", "ab12")
        );
        assert_eq!(
            split_tag("localhost:5000/web"),
            ("localhost:5000/web", "latest")
        );
        assert_eq!(split_tag("web"), ("web", "latest"));
    }

    fn task(id: &str, state: TaskState) -> Task {
        Task {
            id: Some(id.into()),
            slot: Some(1),
            status: Some(TaskStatus {
                state: Some(state),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_failed_task_is_a_die_and_other_changes_are_updates() {
        let previous = Seen::from([("a".to_string(), TaskState::RUNNING)]);
        let tasks = vec![task("a", TaskState::FAILED), task("b", TaskState::STARTING)];
        let events = task_events(&previous, &tasks, 7);
        let actions: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e.container_id.as_str(), e.action.as_str()))
            .collect();
        assert_eq!(actions, vec![("a", "die"), ("b", "update")]);
        let unchanged = Seen::from([("a".to_string(), TaskState::FAILED)]);
        assert!(task_events(&unchanged, &tasks[..1], 7).is_empty());
    }
}
