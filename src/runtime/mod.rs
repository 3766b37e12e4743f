//! The container runtime seam: beast's own view of containers and the few operations the
//! reconciler needs (a small "CRI-like" interface).
//!
//! Everything here is engine-neutral: the Docker implementation lives in [`docker`], a fake for
//! benchmarks and tests in [`fake`]. No other module may import bollard.

pub mod bounded;
pub mod docker;
pub mod fake;
pub mod swarm;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use crate::model::Protocol;

/// Label keys of SPEC §3.
pub const LABEL_INSTANCE: &str = "beast.instance";
pub const LABEL_CHALLENGE: &str = "beast.challenge";
pub const LABEL_REPLICA: &str = "beast.replica";
pub const LABEL_SPEC_HASH: &str = "beast.spec-hash";
/// Carried by service containers only (SPEC §7): the service's name.
pub const LABEL_SERVICE: &str = "beast.service";
/// The team a per-team instance's containers and network belong to (SPEC §8).
pub const LABEL_TEAM: &str = "beast.team";
/// The id of the per-team instance they run.
pub const LABEL_TEAM_INSTANCE: &str = "beast.team-instance";

/// What a labelled object runs for: its challenge, or `{challenge}.{id}` for a team's instance
/// (the key containers, networks, host ports and status are grouped by).
pub fn key_of(labels: &BTreeMap<String, String>) -> Option<String> {
    let challenge = labels.get(LABEL_CHALLENGE)?;
    Some(match labels.get(LABEL_TEAM_INSTANCE) {
        Some(id) => crate::model::instance_key(challenge, id),
        None => challenge.clone(),
    })
}

/// The label filter (`key=value` pairs) that selects the objects of one key.
pub fn key_labels(key: &str) -> Vec<(String, String)> {
    match crate::model::split_key(key) {
        Some((challenge, id)) => vec![
            (LABEL_CHALLENGE.to_string(), challenge.to_string()),
            (LABEL_TEAM_INSTANCE.to_string(), id.to_string()),
        ],
        None => vec![(LABEL_CHALLENGE.to_string(), key.to_string())],
    }
}

/// Labels of the images beast builds: the operator and the build (challenge, or
/// `challenge.service`). Not `beast.instance`/`beast.challenge`: the engine puts an image's labels
/// on the containers of its build steps too, and those must never look like beast's containers.
pub const LABEL_BUILD_INSTANCE: &str = "beast.build-instance";
pub const LABEL_BUILD_OF: &str = "beast.build-of";

/// A published port of a container.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, schemars::JsonSchema,
)]
pub struct PortBinding {
    pub port: u16,
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    pub protocol: Protocol,
}

impl serde::Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Serialised as `tcp` or `udp`.
impl schemars::JsonSchema for Protocol {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Protocol".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "enum": ["tcp", "udp"]})
    }
}

/// One ulimit (`nofile`, `nproc`), soft = hard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// Everything that shapes one container, in the engine-neutral form the runtime creates it from.
/// All of it except `name`, `image` and `labels` goes into the spec hash. Fields added later are
/// left out of the serialisation while they hold their default, so a spec that does not use a
/// feature hashes as it did before the feature existed.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ContainerSpec {
    #[serde(skip)]
    pub name: String,
    /// The reference the container is created from (as the manifest names it).
    #[serde(skip)]
    pub image: String,
    /// The resolved image id: a retagged image changes the hash.
    pub image_id: String,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    /// `KEY=value`, sorted by key.
    pub env: Vec<String>,
    pub ports: Vec<PortBinding>,
    pub nano_cpus: Option<i64>,
    pub memory: i64,
    pub pids: i64,
    pub cap_add: Vec<String>,
    pub no_new_privileges: bool,
    #[serde(skip)]
    pub labels: BTreeMap<String, String>,
    /// The network the container joins (its challenge's bridge), and its DNS aliases there.
    /// `None`: the engine's default bridge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Paths mounted as tmpfs (writable scratch when the root is read-only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    /// `uid[:gid]` or a user name of the image; `None`: the image's user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// OCI runtime (e.g. `runsc`); None = the engine's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Files written into the container after it is created and before it starts (a per-team
    /// instance's flag file).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileSpec>,
}

/// A file put into a container before it starts. `content` is secret (a flag): never logged.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FileSpec {
    /// Absolute path in the container.
    pub path: String,
    pub content: String,
}

impl std::fmt::Debug for FileSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSpec")
            .field("path", &self.path)
            .field("content", &"<redacted>")
            .finish()
    }
}

/// A network to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// CIDR, e.g. 10.213.0.0/26
    pub subnet: String,
    pub gateway: String,
}

/// One network as listed by the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedNetwork {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// First IPv4 subnet of its IPAM config, CIDR.
    pub subnet: Option<String>,
    /// Ids of the containers attached, as the list call reports them: the engine's list leaves
    /// this out (empty), so an empty list does not prove the network unused.
    pub containers: Vec<String>,
}

impl ObservedNetwork {
    pub fn instance(&self) -> Option<&str> {
        self.labels.get(LABEL_INSTANCE).map(String::as_str)
    }
    pub fn challenge(&self) -> Option<&str> {
        self.labels.get(LABEL_CHALLENGE).map(String::as_str)
    }
    /// What the network serves: its challenge, or `{challenge}.{id}` for a team's instance.
    pub fn key(&self) -> Option<String> {
        key_of(&self.labels)
    }
}

/// Lifecycle state of a container as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Exited,
    Removing,
    Dead,
    Unknown,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Exited => "exited",
            ContainerState::Removing => "removing",
            ContainerState::Dead => "dead",
            ContainerState::Unknown => "unknown",
        }
    }
}

/// One container as listed by the engine (a single list call gives all of these).
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    /// The engine's human status, e.g. `Up 3 minutes (healthy)` or `Exited (137) 2 seconds ago`.
    pub status: String,
    pub ports: Vec<PortBinding>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// The container's address on its network, for beast's own health probes.
    pub ip: Option<String>,
    /// The node it runs on, where the engine schedules over several (Swarm); `None` on one engine.
    pub node: Option<String>,
}

impl Observed {
    pub fn instance(&self) -> Option<&str> {
        self.labels.get(LABEL_INSTANCE).map(String::as_str)
    }
    pub fn challenge(&self) -> Option<&str> {
        self.labels.get(LABEL_CHALLENGE).map(String::as_str)
    }
    pub fn replica(&self) -> Option<u32> {
        self.labels.get(LABEL_REPLICA).and_then(|r| r.parse().ok())
    }
    pub fn spec_hash(&self) -> Option<&str> {
        self.labels.get(LABEL_SPEC_HASH).map(String::as_str)
    }
    /// What the container runs for: its challenge, or `{challenge}.{id}` for a team's instance.
    pub fn key(&self) -> Option<String> {
        key_of(&self.labels)
    }
    /// The service this container runs (`beast.service`); `None` for a main container.
    pub fn service(&self) -> Option<&str> {
        self.labels.get(LABEL_SERVICE).map(String::as_str)
    }
}

/// A whole replicated workload, for engines that place replicas themselves (Swarm): the
/// challenge's main containers as one unit with `replicas`, or one of its services (replicas 1).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSpec {
    /// `{instance}_{key}[_{service}]`.
    pub name: String,
    /// What each replica runs; its `labels` (with `beast.spec-hash`) label the workload.
    pub container: ContainerSpec,
    pub replicas: u32,
    /// Placement constraints, passed through (`node.labels.pool==pwn`).
    pub constraints: Vec<String>,
    /// The engine's own healthcheck of each replica.
    pub healthcheck: Option<EngineHealthcheck>,
    /// Bumped to make the engine replace every replica of an unchanged spec (a redeploy).
    pub force: u64,
}

/// A healthcheck the engine runs inside the container (Docker's `HEALTHCHECK`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EngineHealthcheck {
    /// `["CMD", ...]` or `["CMD-SHELL", "..."]`.
    pub test: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

/// One workload as listed by the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedWorkload {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub replicas: u32,
    /// The engine's force-update counter (what a redeploy bumps).
    pub force: u64,
    /// The engine's object version, which an update must quote (never used to detect drift:
    /// the spec-hash label does that).
    pub version: u64,
}

impl ObservedWorkload {
    pub fn instance(&self) -> Option<&str> {
        self.labels.get(LABEL_INSTANCE).map(String::as_str)
    }
    pub fn spec_hash(&self) -> Option<&str> {
        self.labels.get(LABEL_SPEC_HASH).map(String::as_str)
    }
    pub fn key(&self) -> Option<String> {
        key_of(&self.labels)
    }
    pub fn service(&self) -> Option<&str> {
        self.labels.get(LABEL_SERVICE).map(String::as_str)
    }
}

/// Image references the engine knows, mapped to their ids (one list call).
#[derive(Debug, Clone, Default)]
pub struct ImageIndex {
    ids: BTreeMap<String, String>,
}

impl ImageIndex {
    pub fn insert(&mut self, reference: &str, id: &str) {
        self.ids.insert(normalize_ref(reference), id.to_string());
        self.ids.insert(id.to_string(), id.to_string());
    }

    /// Forgets `reference` (an image untagged or removed).
    pub fn remove(&mut self, reference: &str) {
        self.ids.remove(&normalize_ref(reference));
    }

    /// The id of `reference` (`name`, `name:tag` or an id), if the engine has it.
    pub fn resolve(&self, reference: &str) -> Option<&str> {
        self.ids.get(&normalize_ref(reference)).map(String::as_str)
    }
}

/// `busybox` and `busybox:latest` name the same image; ids and digests are left alone.
pub fn normalize_ref(reference: &str) -> String {
    if reference.starts_with("sha256:") || reference.contains('@') {
        return reference.to_string();
    }
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if last.contains(':') {
        reference.to_string()
    } else {
        format!("{reference}:latest")
    }
}

/// Something the engine reports about one of this instance's containers.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineEvent {
    /// The engine's action: `die`, `oom`, `destroy`, `stop`, `kill`, `pause`, `health_status: ...`.
    pub action: String,
    pub container_id: String,
    /// The container's name when the event happened.
    pub name: String,
    pub challenge: Option<String>,
    pub replica: Option<u32>,
    /// `exitCode` of a `die` event.
    pub exit_code: Option<i64>,
    /// Seconds since the epoch.
    pub time: i64,
}

/// How a container last ended, read back after it died (one inspect; never on the hot path).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Termination {
    pub exit_code: i64,
    pub oom_killed: bool,
    /// RFC 3339.
    pub finished_at: String,
    pub restart_count: i64,
    /// RFC 3339: when the current (or last) run started. Changes with every start.
    pub started_at: String,
    /// Whether it runs now (not exited, restarting, paused or dead).
    pub running: bool,
    /// The engine's own words on why it ended, where it gives them (a Swarm task's error);
    /// empty otherwise.
    pub message: String,
}

/// What a successful image build gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutput {
    pub image_id: String,
    /// The builder's output, one line an entry.
    pub log: Vec<String>,
}

/// One image as listed by the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    /// `name:tag` references; empty for a dangling image.
    pub tags: Vec<String>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    pub labels: BTreeMap<String, String>,
}

/// A stream of raw bytes (container output).
pub type ByteStream = futures::stream::BoxStream<'static, Result<bytes::Bytes>>;

/// The lines of a (finite) output stream.
pub async fn lines_of(stream: ByteStream) -> Result<Vec<String>> {
    use futures::StreamExt;
    let chunks: Vec<_> = stream.collect().await;
    let mut text = String::new();
    for chunk in chunks {
        text.push_str(&String::from_utf8_lossy(&chunk?));
    }
    Ok(text.lines().map(str::to_string).collect())
}

/// A stream of engine events.
pub type EventStream = futures::stream::BoxStream<'static, Result<EngineEvent>>;

/// Errors of runtime operations, classified so callers can react (404 vs conflict vs outage).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("engine error {status}: {message}")]
    Engine { status: u16, message: String },
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    /// The runtime cannot do what the spec asks (Swarm and `privileged`, a build without a
    /// registry to share it): `reason` becomes the condition's reason, `message` says what to do.
    #[error("{message}")]
    Refused {
        reason: &'static str,
        message: String,
    },
    /// The build ran and failed; `message` is the engine's (the failing step and its exit code
    /// where the engine says them), `log` the builder's output up to the failure.
    #[error("build failed: {message}")]
    Build { message: String, log: Vec<String> },
}

impl RuntimeError {
    /// True when the engine could not be reached at all (as opposed to refusing a request).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RuntimeError::Unavailable(_))
    }

    /// True when the request raced with a change made by someone else: the container is gone,
    /// going, or in a state that changed since it was listed. A fresh look settles it.
    pub fn is_race(&self) -> bool {
        const RACES: &[&str] = &[
            "no such container",
            "in progress",
            "marked for removal",
            "is not running",
            "is restarting",
            "is paused",
            "is not paused",
            "sandbox",
            "is dead",
        ];
        match self {
            RuntimeError::NotFound(_) => true,
            RuntimeError::Conflict(m) | RuntimeError::Engine { message: m, .. } => {
                let m = m.to_ascii_lowercase();
                RACES.iter().any(|r| m.contains(r))
            }
            _ => false,
        }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// The operations the reconciler performs on the engine.
pub trait Runtime: Send + Sync + 'static {
    /// Cheap liveness check of the engine.
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;
    /// All containers (any state) of `instance`, optionally of one challenge: ONE list call.
    fn list(
        &self,
        instance: &str,
        challenge: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Observed>>> + Send;
    /// Every image reference the engine has, with its id: ONE list call.
    fn images(&self) -> impl Future<Output = Result<ImageIndex>> + Send;
    /// The id of one image reference, `None` when the engine does not have it.
    fn image_id(&self, reference: &str) -> impl Future<Output = Result<Option<String>>> + Send;
    /// Builds an image from a context tar and tags it `tag`. Never pulls (there may be no
    /// registry): every `FROM` must already be on the engine. A failed build is
    /// [`RuntimeError::Build`].
    fn build(
        &self,
        tar: Vec<u8>,
        tag: &str,
        dockerfile: &str,
        args: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<BuildOutput>> + Send;
    /// Removes an image reference (untags it; removes the image with its last tag) without
    /// force: an image a container uses is a [`RuntimeError::Conflict`]. Gone already is success.
    fn remove_image(&self, reference: &str) -> impl Future<Output = Result<()>> + Send;
    /// Every image carrying the label `key=value`: ONE list call.
    fn list_images_with_label(
        &self,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<Vec<ImageInfo>>> + Send;
    /// Creates (does not start) a container; returns its id.
    fn create(&self, spec: &ContainerSpec) -> impl Future<Output = Result<String>> + Send;
    fn start(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    fn stop(&self, id: &str, grace: Duration) -> impl Future<Output = Result<()>> + Send;
    fn unpause(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    fn rename(&self, id: &str, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// Force-removes a container (and its anonymous volumes).
    fn remove(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Restarts a container (stop with `grace`, then start).
    fn restart(&self, id: &str, grace: Duration) -> impl Future<Output = Result<()>> + Send;
    /// Container events of `instance`, from now on. Ends or errors when the connection breaks.
    fn events(&self, instance: &str) -> EventStream;
    /// A container's output (stdout and stderr) from the last `tail` lines on; with `follow`
    /// it stays open and yields new output as it comes.
    fn log_stream(&self, id: &str, tail: usize, follow: bool) -> ByteStream;
    /// The last `tail` lines of a container's output (stdout and stderr).
    fn logs(&self, id: &str, tail: usize) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Runs `command` inside a running container and returns its exit code.
    fn exec(&self, id: &str, command: &[String]) -> impl Future<Output = Result<i64>> + Send;
    /// How a container last ended.
    fn termination(&self, id: &str) -> impl Future<Output = Result<Termination>> + Send;
    /// Reads back what shapes an existing container (one inspect; for `beast plan`, never on the
    /// hot path). Env holds the container's whole environment, the image's included.
    fn inspect(&self, id: &str) -> impl Future<Output = Result<ContainerSpec>> + Send;
    /// Networks labelled `beast.instance=instance`: ONE list call.
    fn networks(&self, instance: &str)
        -> impl Future<Output = Result<Vec<ObservedNetwork>>> + Send;
    /// The IPv4 subnets (CIDR) of EVERY network on the engine, whoever owns it (for choosing a
    /// free one): ONE list call.
    fn subnets_in_use(&self) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Creates a bridge network with the given subnet, gateway and labels; returns its id.
    /// Name taken → [`RuntimeError::Conflict`]; a subnet overlapping another network's →
    /// [`RuntimeError::Conflict`] whose message contains "overlap".
    fn create_network(&self, spec: &NetworkSpec) -> impl Future<Output = Result<String>> + Send;
    /// Removes a network. Gone already → Ok(()). Containers still attached →
    /// [`RuntimeError::Conflict`].
    fn remove_network(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// OCI runtimes the engine knows (`docker info` Runtimes keys, e.g. `["runc"]`).
    fn runtimes(&self) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Writes `content` (mode 0444) at absolute `path` in a created container, parent folders
    /// included, without needing a shell in the image.
    fn put_file(
        &self,
        id: &str,
        path: &str,
        content: &[u8],
    ) -> impl Future<Output = Result<()>> + Send;
    /// Counters of the requests beast made, where the runtime keeps them ([`bounded`]).
    fn engine_ops(&self) -> Option<std::sync::Arc<bounded::EngineOps>> {
        None
    }
    /// Whether the engine places replicas itself (Swarm). Then the reconciler hands it whole
    /// workloads ([`Runtime::put_workload`]) and [`Runtime::list`] lists their replicas (tasks).
    fn schedules_replicas(&self) -> bool {
        false
    }
    /// The workloads of `instance`, optionally of one key, with their current replicas (as
    /// [`Runtime::list`] gives them): ONE workload list and ONE replica list.
    fn workloads(
        &self,
        _instance: &str,
        _key: Option<&str>,
    ) -> impl Future<Output = Result<(Vec<ObservedWorkload>, Vec<Observed>)>> + Send {
        async { Ok((Vec::new(), Vec::new())) }
    }
    /// Creates the workload, or updates `existing` to `spec`; returns its id.
    fn put_workload(
        &self,
        spec: &WorkloadSpec,
        _existing: Option<&ObservedWorkload>,
    ) -> impl Future<Output = Result<String>> + Send {
        let name = spec.name.clone();
        async move { Err(unsupported(&format!("workload {name}"))) }
    }
    /// Removes a workload and its replicas. Gone already → Ok(()).
    fn remove_workload(&self, id: &str) -> impl Future<Output = Result<()>> + Send {
        let id = id.to_string();
        async move { Err(unsupported(&format!("workload {id}"))) }
    }
    /// Makes a freshly built image reachable by every node that may run it; returns the
    /// reference to run it by (a registry digest on Swarm). One engine: the tag itself.
    fn distribute(&self, tag: &str) -> impl Future<Output = Result<String>> + Send {
        let tag = tag.to_string();
        async move { Ok(tag) }
    }
}

fn unsupported(what: &str) -> RuntimeError {
    RuntimeError::Engine {
        status: 501,
        message: format!("{what}: this runtime runs containers, not workloads"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_normalize_to_a_tag() {
        assert_eq!(normalize_ref("busybox"), "busybox:latest");
        assert_eq!(normalize_ref("beast/echo:1"), "beast/echo:1");
        assert_eq!(normalize_ref("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(normalize_ref("sha256:abc"), "sha256:abc");
    }

    #[test]
    fn index_resolves_names_and_ids() {
        let mut index = ImageIndex::default();
        index.insert("busybox:latest", "sha256:1");
        assert_eq!(index.resolve("busybox"), Some("sha256:1"));
        assert_eq!(index.resolve("sha256:1"), Some("sha256:1"));
        assert_eq!(index.resolve("other"), None);
    }

    #[test]
    fn unused_features_stay_out_of_the_serialised_spec() {
        let plain = serde_json::to_string(&ContainerSpec::default()).unwrap();
        for key in [
            "network",
            "aliases",
            "read_only",
            "tmpfs",
            "user",
            "privileged",
            "ulimits",
            "runtime",
        ] {
            assert!(!plain.contains(key), "{key} in {plain}");
        }
        let hardened = ContainerSpec {
            network: Some("i_c".into()),
            read_only: true,
            ulimits: vec![Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 1024,
            }],
            ..ContainerSpec::default()
        };
        let text = serde_json::to_string(&hardened).unwrap();
        assert!(text.contains(r#""network":"i_c""#), "{text}");
        assert!(text.contains(r#""read_only":true"#), "{text}");
        assert!(text.contains(r#""nofile""#), "{text}");
    }
}
