//! The original sdslabs/beast `beast.toml`, as serde types that only read it.
//!
//! Every table keeps what it does not know in `extra`, so that `import` can report each key it
//! did not carry over instead of dropping it silently. Nothing here decides what a field means
//! in `beast/v1`: that is the parent module's job.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Keys this reader does not know, per table.
pub type Extra = BTreeMap<String, toml::Value>;

/// The whole file.
#[derive(Deserialize, Debug, Default)]
pub struct BeastToml {
    #[serde(default)]
    pub author: Option<Author>,
    #[serde(default)]
    pub maintainer: Vec<Author>,
    #[serde(default)]
    pub challenge: ChallengeSection,
    /// `[resource]` in current versions, `[resources]` in older ones and the docs.
    #[serde(default, alias = "resources")]
    pub resource: Option<ResourceSection>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `[author]` and each `[[maintainer]]`.
#[derive(Deserialize, Debug, Default)]
pub struct Author {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub ssh_key: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `[challenge]`.
#[derive(Deserialize, Debug, Default)]
pub struct ChallengeSection {
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub env: Env,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `[challenge.metadata]`.
#[derive(Deserialize, Debug, Default)]
pub struct Metadata {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub flag: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub hints: Vec<Hint>,
    #[serde(default)]
    pub points: Option<i64>,
    #[serde(default)]
    pub assets: Vec<String>,
    #[serde(default)]
    pub difficulty: Option<String>,
    /// An older key: a database container run beside the challenge.
    #[serde(default)]
    pub sidecar: Option<String>,
    #[serde(rename = "dynamicFlag", default)]
    pub dynamic_flag: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A hint: a plain string (older files) or `{text, points}` (current ones).
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
pub enum Hint {
    Text(String),
    Priced {
        /// The original read a missing text as empty.
        #[serde(default)]
        text: String,
        #[serde(default)]
        points: Option<i64>,
    },
}

impl Hint {
    pub fn text(&self) -> &str {
        match self {
            Hint::Text(text) | Hint::Priced { text, .. } => text,
        }
    }
}

/// `[challenge.env]`.
#[derive(Deserialize, Debug, Default)]
pub struct Env {
    #[serde(default)]
    pub apt_deps: Vec<String>,
    #[serde(default)]
    pub ports: Vec<i64>,
    #[serde(default)]
    pub default_port: Option<i64>,
    #[serde(default)]
    pub port_mappings: Vec<String>,
    #[serde(default)]
    pub setup_scripts: Vec<String>,
    #[serde(default)]
    pub static_dir: Option<String>,
    #[serde(default)]
    pub run_cmd: Option<String>,
    #[serde(default)]
    pub base_image: Option<String>,
    #[serde(default)]
    pub web_root: Option<String>,
    #[serde(default)]
    pub service_path: Option<String>,
    #[serde(default)]
    pub entrypoint: Option<String>,
    #[serde(default)]
    pub docker_context: Option<String>,
    #[serde(default)]
    pub xinetd_conf: Option<String>,
    #[serde(default)]
    pub docker_compose: Option<String>,
    #[serde(default)]
    pub var: Vec<EnvVar>,
    #[serde(default)]
    pub traffic: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One `[[challenge.env.var]]`: the value is a path relative to the challenge folder.
#[derive(Deserialize, Debug, Default)]
pub struct EnvVar {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// `[resource]`.
#[derive(Deserialize, Debug, Default)]
pub struct ResourceSection {
    #[serde(default)]
    pub cpu_shares: Option<i64>,
    #[serde(default)]
    pub memory_limit: Option<i64>,
    #[serde(default)]
    pub pids_limit: Option<i64>,
    /// A CPU cap some example files carry (`cpuslimit = 0.25`).
    #[serde(default, alias = "cpus_limit")]
    pub cpuslimit: Option<f64>,
    #[serde(flatten)]
    pub extra: Extra,
}
