//! The validated challenge model: what a `beast/v1 Challenge` means once it has passed validation.
//!
//! Everything downstream of the manifest parser (desired store, planner, runtime, API) speaks these
//! types. They carry no YAML, serde or engine details, and every value in them is already checked:
//! names are DNS labels, ports are in range, paths are inside the watched directory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// One challenge, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Challenge {
    /// `metadata.name`: a DNS label, unique across all sources.
    pub name: String,
    /// `metadata.labels`: free-form, selectable in the API and CLI.
    pub labels: BTreeMap<String, String>,
    /// What players see (the info namespace).
    pub info: Info,
    /// `spec.flag`: never returned by info endpoints or written to logs.
    pub flag: Option<String>,
    /// How it runs; `None` for a static challenge (attachments only, no container).
    pub run: Option<RunSpec>,
    /// `spec.replicas` (default 1; 0 keeps the challenge known but runs nothing).
    pub replicas: u32,
    /// `spec.attachments`, resolved to absolute paths inside the manifest's folder.
    pub attachments: Vec<Attachment>,
    /// `spec.network`.
    pub network: NetworkPolicy,
    /// `spec.services`: supporting containers shared by all replicas (empty for a static
    /// challenge).
    pub services: Vec<Service>,
    /// `spec.instances`: per-team copies on demand (SPEC §8).
    pub instances: Option<InstancesSpec>,
    /// Set on the copy of a per-team challenge that one team's instance runs.
    pub team: Option<TeamInstance>,
    /// `spec.placement.constraints` (Swarm), passed through as written.
    pub placement: Vec<String>,
}

impl Challenge {
    /// The name of what runs: the challenge's, or `{challenge}.{id}` for a team's instance.
    /// Container names, the network, host ports and the status are keyed by it.
    pub fn key(&self) -> String {
        match &self.team {
            Some(t) => instance_key(&self.name, &t.id),
            None => self.name.clone(),
        }
    }

    /// Whether any of its containers (main or service) has a healthcheck beast probes.
    pub fn has_healthchecks(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.healthcheck.is_some())
            || self.services.iter().any(|s| s.run.healthcheck.is_some())
    }

    /// Whether this challenge runs only as per-team instances.
    pub fn per_team(&self) -> bool {
        self.team.is_none() && self.instances.as_ref().is_some_and(|i| i.per_team)
    }
}

/// `{challenge}.{id}`: the key of one team's instance (a challenge name has no dots).
pub fn instance_key(challenge: &str, id: &str) -> String {
    format!("{challenge}.{id}")
}

/// The challenge and instance id of an instance key; `None` for a challenge's own name.
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    key.rsplit_once('.')
}

/// `spec.instances`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancesSpec {
    pub per_team: bool,
    pub ttl: Duration,
    pub max_renewals: u32,
    pub max_per_team: u32,
    pub max_total: u32,
    pub flag: Option<DynamicFlag>,
}

/// `spec.instances.flag`: a flag unique to each instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicFlag {
    /// Contains `{random}` exactly where the 16 hex characters go.
    pub template: String,
    /// Environment variable that carries the flag.
    pub env: Option<String>,
    /// Absolute path of a file in the main containers that holds the flag.
    pub file: Option<String>,
}

/// The team and instance a challenge copy runs for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamInstance {
    pub team: String,
    pub id: String,
    /// The instance's flag, when the challenge has a dynamic one.
    pub flag: Option<String>,
}

/// `spec.network`: how the challenge's containers reach what is outside their own network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetworkPolicy {
    /// New outbound connections allowed; `None` takes the operator's `--default-egress`.
    pub egress: Option<bool>,
}

/// One entry of `spec.services`: a supporting container (database, cache, admin bot), never
/// published, reachable by its name from the challenge's other containers.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// A DNS label that is not all digits (replica containers end in digits).
    pub name: String,
    /// How it runs; `ports` is always empty.
    pub run: RunSpec,
}

/// `spec.security` (or a service's `security`): what the container may do beyond the hardened
/// defaults. Operator policy (`--allow-caps`, `--allow-privileged`) is checked by the desired
/// store, not here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Security {
    pub read_only_root_filesystem: bool,
    /// Absolute paths mounted as tmpfs.
    pub tmpfs: Vec<String>,
    /// `uid`, `uid:gid`, `name` or `name:group`.
    pub user: Option<String>,
    /// Capability names without the `CAP_` prefix, upper case, sorted, unique.
    pub cap_add: Vec<String>,
    pub privileged: bool,
    /// An OCI runtime the engine knows (e.g. `runsc`); `None` is the engine's default.
    pub runtime: Option<String>,
    pub ulimits: Ulimits,
}

/// `security.ulimits` (soft = hard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ulimits {
    pub nofile: Option<u64>,
    pub nproc: Option<u64>,
}

/// Player-facing description of a challenge.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Info {
    pub description: String,
    pub category: String,
    pub points: Option<u32>,
    pub tags: Vec<String>,
    pub hints: Vec<String>,
}

/// A file offered to players.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    /// The path as written in the manifest (relative to the manifest's folder), used in URLs.
    pub name: String,
    /// Where the file lives on disk.
    pub path: PathBuf,
}

/// What shapes the challenge's containers.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub source: ImageSource,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub ports: Vec<PortSpec>,
    pub resources: Resources,
    pub healthcheck: Option<Healthcheck>,
    pub security: Security,
}

/// Where the image comes from: exactly one of `spec.image` and `spec.build`.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// A reference the engine already has (`name:tag` or an image id).
    Image(String),
    /// Built from source.
    Build(BuildSpec),
}

/// `spec.build`, with paths resolved and checked to stay inside the watched directory.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildSpec {
    /// Absolute path of the build context.
    pub context: PathBuf,
    /// The Dockerfile, relative to the context (as the engine's build API wants it).
    pub dockerfile: String,
    pub args: BTreeMap<String, String>,
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of `spec.ports`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortSpec {
    /// Container port, 1-65535.
    pub port: u16,
    /// Fixed host port; `None` means allocated from the configured range and kept stable.
    pub host_port: Option<u16>,
    pub protocol: Protocol,
}

/// `spec.resources`; `None` fields fall back to the operator's configured defaults.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Resources {
    /// CPU limit in billionths of a CPU (Docker's NanoCPUs).
    pub nano_cpus: Option<i64>,
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// Maximum number of processes.
    pub pids: Option<i64>,
}

/// `spec.healthcheck`, probed by beast itself (works for images without a shell).
#[derive(Debug, Clone, PartialEq)]
pub struct Healthcheck {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

/// The one probe kind of a healthcheck.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Tcp { port: u16 },
    Http { port: u16, path: String },
    Exec { command: Vec<String> },
}

impl Challenge {
    /// A minimal valid challenge, for tests and benchmarks: one replica of `image`, no ports.
    pub fn with_image(name: &str, image: &str) -> Challenge {
        Challenge {
            name: name.to_string(),
            labels: BTreeMap::new(),
            info: Info::default(),
            flag: None,
            run: Some(RunSpec {
                source: ImageSource::Image(image.to_string()),
                command: None,
                entrypoint: None,
                working_dir: None,
                env: BTreeMap::new(),
                ports: Vec::new(),
                resources: Resources::default(),
                healthcheck: None,
                security: Security::default(),
            }),
            replicas: 1,
            attachments: Vec::new(),
            network: NetworkPolicy::default(),
            services: Vec::new(),
            instances: None,
            team: None,
            placement: Vec::new(),
        }
    }
}
