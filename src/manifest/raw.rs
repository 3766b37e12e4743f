//! The manifest as written: serde types that mirror a `beast/v1 Challenge` YAML document exactly.
//!
//! These types only parse and print. Every field that validation range-checks is kept wide (`i64`,
//! `String`) so that a bad value reaches `validate` and gets a message such as "must be 1-65535"
//! instead of a serde overflow error; fields whose absence validation reports are `Option`s so that
//! one pass can report every missing field. Unknown keys are refused (`deny_unknown_fields`).
//! Nothing here checks meaning: that is `validate`'s job. Optional fields are skipped when empty, so
//! a parsed manifest prints back as a clean one.
//!
//! String-typed fields take any YAML scalar verbatim (serde_yaml's behaviour): `KEY: 8080` in `env`
//! is the string `"8080"`, `0x1F` stays `"0x1F"`. A null in a string map is reported by validation.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A `beast/v1 Challenge` manifest.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Manifest {
    /// Always `beast/v1`.
    #[schemars(required, extend("const" = "beast/v1"))]
    pub api_version: Option<String>,
    /// Always `Challenge`.
    #[schemars(required, extend("const" = "Challenge"))]
    pub kind: Option<String>,
    // `metadata` and `spec` are required, but defaulted here so that their absence is reported
    // by validation (`metadata.name: required`) together with every other error;
    // `json_schema` marks them required.
    /// The challenge's identity.
    #[serde(default)]
    pub metadata: Metadata,
    /// What players see and how the challenge runs.
    #[serde(default)]
    pub spec: Spec,
}

/// `metadata`: the challenge's identity.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// A DNS label (`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`), unique across all sources.
    #[schemars(
        required,
        extend("pattern" = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    )]
    pub name: Option<String>,
    /// Free-form labels, selectable in the API and CLI.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Set by the API server when it returns a manifest; sent back for optimistic concurrency.
    /// Validation ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

/// `spec`: what players see and how the challenge runs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4294967295u32))]
    pub points: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
    /// Never returned by info endpoints or written to logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    /// An image reference; exactly one of `image` and `build` (neither for a static challenge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Build the image from source; exactly one of `image` and `build`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    /// Overrides the image's CMD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Overrides the image's ENTRYPOINT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// An absolute path inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// Default 1; 0 keeps the challenge known but runs nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 64))]
    pub replicas: Option<i64>,
    /// Files for players, relative to the manifest's folder.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<String>,
    /// How the challenge's containers reach what is outside their own network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// Supporting containers (a database, a cache, an admin bot), never published; created
    /// before the main containers, which wait until every service with a healthcheck passes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// What the main containers may do beyond the hardened defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Security>,
    /// Per-team copies on demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Instances>,
    /// Where the replicas may run, on an engine with several nodes (Swarm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
}

/// `spec.placement`: honoured by the Swarm runtime, accepted (and ignored) by one engine.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Placement {
    /// Swarm placement constraints, e.g. `node.labels.pool==pwn` or `node.role!=manager`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
}

/// `spec.instances`: one copy of the challenge per team, started on demand.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Instances {
    /// Nothing runs until a team asks; each team gets its own copy (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_team: Option<bool>,
    /// A humantime duration: an instance is removed this long after its creation or last
    /// renewal (default `30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Renewals allowed per instance (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_renewals: Option<i64>,
    /// Live instances of this challenge per team (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_per_team: Option<i64>,
    /// Live instances of this challenge in all (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_total: Option<i64>,
    /// A flag unique to each instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<InstanceFlag>,
}

/// `spec.instances.flag`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceFlag {
    /// The flag, with `{random}` where 16 hex characters unique to the instance go.
    pub template: String,
    /// Environment variable of the main containers that carries the flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Absolute path of a file written into the main containers before they start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// `spec.network`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Network {
    /// New outbound connections allowed (default: the operator's `--default-egress`, itself
    /// false). Players reach published ports either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<bool>,
}

/// One entry of `spec.services`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Service {
    /// A DNS label, not all digits; the host name the challenge's containers reach it by.
    #[schemars(
        required,
        extend("pattern" = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    )]
    pub name: Option<String>,
    /// An image reference; exactly one of `image` and `build`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Build the image from source; exactly one of `image` and `build`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// The main containers are created once this passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Security>,
}

/// `spec.security` (or a service's `security`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Security {
    /// Mount the image's filesystem read-only (default false); use `tmpfs` for scratch space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
    /// Absolute paths mounted as writable tmpfs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    /// `uid`, `uid:gid`, `name` or `name:group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Extra capabilities (e.g. `NET_RAW`); only those in the operator's `--allow-caps`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Refused unless the operator runs with `--allow-privileged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    /// An OCI runtime the engine knows, e.g. `runsc` (gVisor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ulimits: Option<Ulimits>,
}

/// `security.ulimits`: soft and hard limit alike.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ulimits {
    /// Open files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1048576))]
    pub nofile: Option<i64>,
    /// Processes of the container's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1048576))]
    pub nproc: Option<i64>,
}

/// `spec.build`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Build {
    /// Relative to the manifest file's folder (default `.`); may not escape the watched directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Relative to the context (default `Dockerfile`); may not escape it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
}

/// One entry of `spec.ports`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Port {
    /// Container port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i64,
    /// Fixed host port; when omitted, one is allocated from the configured range and kept stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub host_port: Option<i64>,
    /// `tcp` (default) or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["tcp", "udp"]))]
    pub protocol: Option<String>,
}

/// `spec.resources`; what is left out falls back to the operator's defaults.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// Fractional CPUs, e.g. `0.5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Bytes, or an integer with a `Ki`, `Mi`, `Gi` or `Ti` suffix; at least `6Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Maximum number of processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub pids: Option<i64>,
}

/// A memory size as written: a plain number of bytes or a string such as `128Mi`.
#[derive(Serialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum Quantity {
    Bytes(i64),
    #[schemars(extend("pattern" = "^[0-9]+(Ki|Mi|Gi|Ti)?$"))]
    Text(String),
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of bytes or a quantity such as \"128Mi\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity::Bytes(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                // Too large for i64: keep the digits so validation says "too large".
                Ok(
                    i64::try_from(v)
                        .map_or_else(|_| Quantity::Text(v.to_string()), Quantity::Bytes),
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity::Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `spec.healthcheck`: exactly one of `tcp`, `http`, `exec`, plus timing.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Healthcheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecProbe>,
    /// A humantime duration (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// A humantime duration (default `2s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Consecutive failures before unhealthy (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub retries: Option<i64>,
    /// A humantime duration during which failures don't count (default `0s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<String>,
}

/// `healthcheck.tcp`: the port accepts a connection.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpProbe {
    #[schemars(range(min = 1, max = 65535))]
    pub port: i64,
}

/// `healthcheck.http`: a GET answers 2xx or 3xx.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpProbe {
    #[schemars(range(min = 1, max = 65535))]
    pub port: i64,
    /// Starts with `/` (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// `healthcheck.exec`: the command exits 0 inside the container.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecProbe {
    pub command: Vec<String>,
}
