//! The command line (SPEC §4): clap definitions, and the shell completions and man pages
//! generated from them (clap_complete, clap_mangen). Every flag of `run` also reads
//! `BEAST_<FLAG>` from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

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
    /// A flag given twice takes its last value (a wrapper's defaults can be overridden).
    #[command(args_override_self = true)]
    Run(Box<RunArgs>),
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
    /// Create or replace challenges from a manifest file or directory (client).
    #[command(after_long_help = CLIENT_HELP)]
    Apply(ApplyArgs),
    /// List challenges with their status, or show one (client).
    #[command(after_long_help = CLIENT_HELP)]
    Get(GetArgs),
    /// Show a challenge in detail: network, security, conditions, containers, services, last
    /// termination, events (client).
    #[command(after_long_help = CLIENT_HELP)]
    Describe(NameArgs),
    /// Remove a challenge and its containers (client).
    #[command(after_long_help = CLIENT_HELP)]
    Delete(ActionArgs),
    /// Deploy a challenge (client).
    #[command(after_long_help = CLIENT_HELP)]
    Deploy(ActionArgs),
    /// Stop running a challenge, keeping it known; persisted (client).
    #[command(after_long_help = CLIENT_HELP)]
    Undeploy(ActionArgs),
    /// Recreate a challenge's containers even if nothing changed (client).
    #[command(after_long_help = CLIENT_HELP)]
    Redeploy(ActionArgs),
    /// Print a challenge's container logs (client).
    #[command(after_long_help = CLIENT_HELP)]
    Logs(LogsArgs),
    /// Per-team instances: list, get, create, renew or delete (client).
    Instances(InstancesArgs),
    /// Dynamic flags: who a flag was issued to, for flag-sharing detection (client).
    Flags(FlagsArgs),
    /// Print the shell completion script, e.g. `beast completions bash > /etc/bash_completion.d/beast`.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page beast(1) as roff, e.g. `beast man | man -l -`.
    Man {
        /// Write beast.1 and one page per subcommand (beast-run.1, ...) into this folder instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Print the JSON schema of a challenge manifest (manifests/challenge.schema.json).
    Schema,
}

/// The completion script for `shell`, generated from the definitions above.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "beast", out);
}

/// beast(1) as roff.
pub fn man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

/// beast.1 and one page per subcommand in `dir` (created if missing).
pub fn man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)
}

/// Shown under `--help` of every client verb.
const CLIENT_HELP: &str = "\
Exit codes: 0 ok; 1 the server refused the request, a manifest is invalid or a task failed;
2 usage error; 3 the server cannot be reached.";

/// How a client verb prints what the server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable tables.
    Table,
    /// The server's JSON, pretty-printed.
    Json,
    /// The server's JSON as YAML.
    Yaml,
}

/// Where the API server is and how to talk to it: shared by every client verb.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// URL of the beast API server.
    #[arg(long, env = "BEAST_SERVER", default_value = "http://127.0.0.1:5005")]
    pub server: String,
    /// Bearer token (a JWT from `beast token`).
    #[arg(long, env = "BEAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Debug, Args, Clone)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// A manifest file or a directory of them (recursive; repeatable).
    #[arg(short = 'f', long = "filename", required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct GetArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// One challenge; all when omitted.
    pub name: Option<String>,
    /// Only challenges whose labels match, e.g. `category=web,level=easy`.
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct NameArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The challenge.
    pub name: String,
}

#[derive(Debug, Args, Clone)]
pub struct ActionArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The challenge.
    pub name: String,
    /// Return once the task is queued instead of waiting for it to finish.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the task to finish.
    #[arg(long, default_value = "60s")]
    pub timeout: humantime::Duration,
}

#[derive(Debug, Args, Clone)]
pub struct LogsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The challenge.
    pub name: String,
    /// Keep streaming new lines until interrupted.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Lines to show from the end of the log.
    #[arg(long, default_value_t = 100)]
    pub tail: u64,
    /// Which replica (1-based); the server's default when omitted.
    #[arg(long)]
    pub replica: Option<u32>,
    /// Show the last image build's output (spec.build) instead of the containers'.
    #[arg(long)]
    pub build: bool,
}

#[derive(Debug, Args, Clone)]
pub struct InstancesArgs {
    #[command(subcommand)]
    pub verb: InstancesVerb,
}

/// What to do with per-team instances. A player token acts for its own team; an author or
/// admin names the team with --team.
#[derive(Debug, Subcommand, Clone)]
pub enum InstancesVerb {
    /// List live instances (a player sees its team's only).
    #[command(after_long_help = CLIENT_HELP)]
    List(InstancesListArgs),
    /// Show the team's instance of a challenge.
    #[command(after_long_help = CLIENT_HELP)]
    Get(InstanceArgs),
    /// Start an instance of a challenge for the team.
    #[command(after_long_help = CLIENT_HELP)]
    Create(InstanceArgs),
    /// Push the team's instance's expiry to now + ttl (up to maxRenewals).
    #[command(after_long_help = CLIENT_HELP)]
    Renew(InstanceArgs),
    /// Remove the team's instance.
    #[command(after_long_help = CLIENT_HELP)]
    Delete(InstanceArgs),
}

#[derive(Debug, Args, Clone)]
pub struct InstancesListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only this team's.
    #[arg(long)]
    pub team: Option<String>,
    /// Only this challenge's.
    #[arg(long)]
    pub challenge: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct InstanceArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The challenge.
    pub name: String,
    /// The team (needed with an author or admin token; a player token names its own).
    #[arg(long)]
    pub team: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct FlagsArgs {
    #[command(subcommand)]
    pub verb: FlagsVerb,
}

#[derive(Debug, Subcommand, Clone)]
pub enum FlagsVerb {
    /// Which team (challenge, instance) a dynamic flag was issued to; exit 1 if none (author).
    #[command(after_long_help = CLIENT_HELP)]
    Lookup(FlagLookupArgs),
}

#[derive(Debug, Args, Clone)]
pub struct FlagLookupArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The flag as a team submitted it.
    pub flag: String,
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
    /// player, viewer, author or admin.
    #[arg(long)]
    pub role: Role,
    /// The team a player token acts for (required with --role player, refused otherwise).
    #[arg(long, required_if_eq("role", "player"))]
    pub team: Option<String>,
    /// Who the token is for (default: the team for a player, else the role's name).
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
    /// Address pool the challenges' own networks are carved from (IPv4 CIDR).
    #[arg(long, env = "BEAST_NETWORK_POOL", default_value = crate::netpool::DEFAULT_POOL)]
    pub network_pool: String,
    /// Prefix length of one challenge network (26 = 61 containers).
    #[arg(long, env = "BEAST_NETWORK_SIZE", default_value_t = crate::netpool::DEFAULT_BLOCK)]
    pub network_size: u8,
    /// Let challenges that leave `spec.network.egress` out open outbound connections.
    #[arg(long, env = "BEAST_DEFAULT_EGRESS")]
    pub default_egress: bool,
    /// Capabilities a manifest may add with `security.capAdd` beyond the defaults
    /// (comma-separated, e.g. NET_RAW,SYS_PTRACE). Others make the manifest invalid.
    #[arg(long, env = "BEAST_ALLOW_CAPS", value_delimiter = ',')]
    pub allow_caps: Vec<String>,
    /// Allow `security.privileged: true` (a privileged container can take over the host).
    #[arg(long, env = "BEAST_ALLOW_PRIVILEGED")]
    pub allow_privileged: bool,
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
    /// Engine requests that may run at once (creates, starts, lists, inspects, probes' execs...);
    /// the rest wait their turn, so a mass crash loop cannot swamp the engine.
    #[arg(long, env = "BEAST_ENGINE_CONCURRENCY", default_value_t = crate::runtime::bounded::DEFAULT_LIMIT)]
    pub engine_concurrency: usize,
    /// Period of the full resync, the safety net (humantime, e.g. 30s).
    #[arg(long, env = "BEAST_RESYNC", default_value = "30s")]
    pub resync: humantime::Duration,
    /// Quiet time that ends a burst of manifest changes.
    #[arg(long, env = "BEAST_DEBOUNCE", default_value = "150ms")]
    pub debounce: humantime::Duration,
    /// Grace period for a container to stop before it is killed.
    #[arg(long, env = "BEAST_STOP_GRACE", default_value = "2s")]
    pub stop_grace: humantime::Duration,
    /// Image builds (spec.build) that may run at once (default: two per core).
    #[arg(long, env = "BEAST_BUILD_WORKERS", default_value_t = crate::build::default_workers())]
    pub build_workers: usize,
    /// Log format.
    #[arg(long, env = "BEAST_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Per-team rate limit on instance creates: N/DURATION (a burst of N, then N per DURATION).
    #[arg(long, env = "BEAST_INSTANCE_CREATE_RATE", default_value = "5/1m")]
    pub instance_create_rate: crate::instances::RateLimit,
    /// What runs the challenges: one Docker engine, or a Docker Swarm driven through the
    /// manager that DOCKER_HOST (or the local socket) names (SPEC §9).
    #[arg(long, env = "BEAST_RUNTIME", value_enum, default_value = "docker")]
    pub runtime: RuntimeKind,
    /// Swarm: the registry (HOST:PORT) built images are pushed to, so every node can pull
    /// them. Without it, a swarm of several nodes refuses challenges built from source.
    #[arg(long, env = "BEAST_REGISTRY", value_name = "HOST:PORT")]
    pub registry: Option<String>,
    /// Swarm: how ports are published. `auto` takes the routing mesh (ingress) where the
    /// kernel beast runs on has IPVS, else host mode (each replica on its node's port).
    #[arg(long, env = "BEAST_SWARM_PUBLISH", value_enum, default_value = "auto")]
    pub swarm_publish: SwarmPublish,
    /// The iptables program that keeps the egress rules (must be the one Docker uses: nft or
    /// legacy); without it, or without root, egress cannot be enforced and beast says so.
    #[arg(long, env = "BEAST_IPTABLES", default_value = "iptables")]
    pub iptables: PathBuf,
    #[command(flatten)]
    pub git: GitArgs,
}

/// `run --runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    Docker,
    Swarm,
}

/// `run --swarm-publish`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SwarmPublish {
    Auto,
    Ingress,
    Host,
}

/// GitOps: a branch of a git repository as one more manifest directory.
#[derive(Debug, Args, Clone)]
pub struct GitArgs {
    /// Repository to deploy from (any URL git accepts; credentials in it are never logged). It is
    /// cloned under the state directory and fetched periodically.
    #[arg(
        long = "git",
        env = "BEAST_GIT",
        value_name = "URL",
        hide_env_values = true
    )]
    pub url: Option<String>,
    /// Branch to deploy.
    #[arg(long = "git-branch", env = "BEAST_GIT_BRANCH", default_value = "main")]
    pub branch: String,
    /// How often to fetch (humantime, e.g. 60s, 5m).
    #[arg(
        long = "git-interval",
        env = "BEAST_GIT_INTERVAL",
        default_value = "60s"
    )]
    pub interval: humantime::Duration,
    /// Secret of `POST /api/v1/manage/hooks/git` (GitHub HMAC signature or GitLab token);
    /// without it the hook is off.
    #[arg(
        long = "git-webhook-secret",
        env = "BEAST_GIT_WEBHOOK_SECRET",
        hide_env_values = true,
        requires = "url"
    )]
    pub webhook_secret: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct PlanArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Also plan from this repository's branch, as `beast run --git` would see it. It is fetched
    /// into a temporary directory (never the state directory) and the plan names the commit.
    #[arg(
        long = "git",
        env = "BEAST_GIT",
        value_name = "URL",
        hide_env_values = true
    )]
    pub git: Option<String>,
    /// Branch to plan from.
    #[arg(long = "git-branch", env = "BEAST_GIT_BRANCH", default_value = "main")]
    pub git_branch: String,
    /// The runtime `beast run` drives (`swarm`: plan against the swarm's services and tasks).
    #[arg(long, env = "BEAST_RUNTIME", value_enum, default_value = "docker")]
    pub runtime: RuntimeKind,
    /// The iptables program `beast run` would keep egress rules with: the plan says whether
    /// egress off can be enforced with it (it only lists rules, never changes them).
    #[arg(long, env = "BEAST_IPTABLES", default_value = "iptables")]
    pub iptables: PathBuf,
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
