//! The command line (SPEC §4): clap definitions only. Every flag of `run` also reads
//! `BEAST_<FLAG>` from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::Role;
use crate::ports::PortRange;

#[derive(Debug, Parser)]
#[command(
    name = "beast",
    version,
    about = "A reconciliation operator for Docker that hosts CTF challenges"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator: watch manifests, reconcile containers, serve the API.
    Run(RunArgs),
    /// Check manifests offline; exit 0 when all are valid, 1 otherwise.
    Validate {
        /// Manifest files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Dry run against the live engine: what would be created, replaced or removed, and why.
    Plan(PlanArgs),
    /// Convert an sdslabs/beast `beast.toml` into `challenge.yaml` (+ Dockerfile) beside it.
    Import {
        /// A `beast.toml` file or the folder holding one.
        path: PathBuf,
        /// Print what would be written; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Mint an API token with the configured secret; prints only the token.
    Token(TokenArgs),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the JWT secret comes from (`run` and `token`). Exactly one of the two may be set.
#[derive(Debug, Args, Clone)]
pub struct SecretArgs {
    /// Secret that signs API tokens (at least 32 bytes). Prefer the env var or a file: a flag
    /// shows in the process list.
    #[arg(long, env = "BEAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// File holding the secret (one trailing newline is ignored).
    #[arg(long, env = "BEAST_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct TokenArgs {
    /// viewer, author or admin.
    #[arg(long)]
    pub role: Role,
    /// Who the token is for (default: the role's name).
    #[arg(long)]
    pub subject: Option<String>,
    /// How long the token lives (humantime, e.g. 1h, 7d).
    #[arg(long, default_value = "24h")]
    pub ttl: humantime::Duration,
    #[command(flatten)]
    pub secret: SecretArgs,
}

/// Flags shared by `run` and `plan`: what the desired state is and whose containers to look at.
#[derive(Debug, Args, Clone)]
pub struct SourceArgs {
    /// A directory of manifests to watch (repeatable; comma-separated in the env var).
    #[arg(long = "manifests", env = "BEAST_MANIFESTS", value_delimiter = ',')]
    pub manifests: Vec<PathBuf>,
    /// Where beast keeps its state (port table, later the API store).
    #[arg(long, env = "BEAST_STATE_DIR", default_value = ".beast")]
    pub state_dir: PathBuf,
    /// This operator's id: the `beast.instance` label of every container it owns.
    #[arg(long, env = "BEAST_INSTANCE", default_value = "beast", value_parser = parse_instance)]
    pub instance: String,
    /// Host ports handed out when a manifest omits `hostPort`.
    #[arg(long, env = "BEAST_PORT_RANGE", default_value = "30000-32767")]
    pub port_range: PortRange,
    /// Memory limit for challenges that set none (bytes or Ki/Mi/Gi).
    #[arg(long, env = "BEAST_DEFAULT_MEMORY", default_value = "256Mi")]
    pub default_memory: String,
    /// Process limit for challenges that set none.
    #[arg(long, env = "BEAST_DEFAULT_PIDS", default_value_t = 256)]
    pub default_pids: i64,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Address of the API server.
    #[arg(long, env = "BEAST_LISTEN", default_value = "127.0.0.1:5005")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Serve the API without authentication: every request is an anonymous admin.
    #[arg(long, env = "BEAST_NO_AUTH")]
    pub no_auth: bool,
    /// Allow --no-auth on a non-loopback address.
    #[arg(long, env = "BEAST_INSECURE")]
    pub insecure: bool,
    /// Reconcile workers (default: 4 per core).
    #[arg(long, env = "BEAST_WORKERS")]
    pub workers: Option<usize>,
    /// Period of the full resync, the safety net (humantime, e.g. 30s).
    #[arg(long, env = "BEAST_RESYNC", default_value = "30s")]
    pub resync: humantime::Duration,
    /// Quiet time that ends a burst of manifest changes.
    #[arg(long, env = "BEAST_DEBOUNCE", default_value = "150ms")]
    pub debounce: humantime::Duration,
    /// Grace period for a container to stop before it is killed.
    #[arg(long, env = "BEAST_STOP_GRACE", default_value = "2s")]
    pub stop_grace: humantime::Duration,
    /// Log format.
    #[arg(long, env = "BEAST_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Args, Clone)]
pub struct PlanArgs {
    #[command(flatten)]
    pub source: SourceArgs,
}

/// An instance id must be usable in container names and label filters.
fn parse_instance(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 40
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(s.to_string())
    } else {
        Err(
            "an instance id is 1-40 characters of [a-zA-Z0-9.-], starting with a letter or digit"
                .to_string(),
        )
    }
}
