//! The `beast` binary: parses the command line, sets up logging, and hands over to the library.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use beast::auth::{self, Auth, Keys};
use beast::cli::{
    Cli, Command, LogFormat, PlanArgs, RunArgs, RuntimeKind, SecretArgs, SourceArgs, SwarmPublish,
    TokenArgs,
};
use beast::client::{self, Action};
use beast::containers::Defaults;
use beast::desired::DesiredStore;
use beast::instances::Instances;
use beast::netpool::NetPool;
use beast::operator::{self, GitConfig, RunConfig};
use beast::policy::Policy;
use beast::ports::PortAllocator;
use beast::reconcile::{Reconciler, Settings};
use beast::runtime::bounded::Bounded;
use beast::runtime::docker::DockerRuntime;
use beast::runtime::swarm::{PublishMode, SwarmRuntime, SwarmSettings};
use beast::runtime::Runtime;
use beast::status::StatusBoard;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Offline commands need no async runtime.
    match &cli.command {
        Command::Import { path, dry_run } => return import(path, *dry_run),
        Command::Completions { shell } => {
            beast::cli::completions(*shell, &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man { out_dir } => return man(out_dir.as_deref()),
        Command::Schema => {
            let schema = beast::manifest::json_schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run(*args).await,
            Command::Validate { paths } => validate(&paths),
            Command::Plan(args) => plan(args).await,
            Command::Import { path, dry_run } => Ok(import(&path, dry_run)),
            Command::Completions { .. } | Command::Man { .. } | Command::Schema => {
                Ok(ExitCode::SUCCESS)
            }
            Command::Token(args) => token(args),
            Command::Apply(args) => Ok(client::apply(args).await),
            Command::Get(args) => Ok(client::get(args).await),
            Command::Describe(args) => Ok(client::describe(args).await),
            Command::Delete(args) => Ok(client::action(Action::Delete, args).await),
            Command::Deploy(args) => Ok(client::action(Action::Deploy, args).await),
            Command::Undeploy(args) => Ok(client::action(Action::Undeploy, args).await),
            Command::Redeploy(args) => Ok(client::action(Action::Redeploy, args).await),
            Command::Logs(args) => Ok(client::logs(args).await),
            Command::Instances(args) => Ok(client::instances(args.verb).await),
            Command::Flags(args) => Ok(client::flags(args.verb).await),
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BEAST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn defaults(source: &SourceArgs) -> anyhow::Result<Defaults> {
    let memory = beast::manifest::validate::parse_memory(&source.default_memory)
        .map_err(|e| anyhow::anyhow!("--default-memory: {e}"))?;
    Ok(Defaults {
        memory,
        pids: source.default_pids,
        nano_cpus: None,
    })
}

/// The subnet pool of challenge networks from `--network-pool` and `--network-size`.
fn pool(source: &SourceArgs) -> anyhow::Result<NetPool> {
    NetPool::new(&source.network_pool, source.network_size)
        .map_err(|e| anyhow::anyhow!("--network-pool/--network-size: {e}"))
}

/// What manifests may ask for, from `--allow-caps` and `--allow-privileged`.
fn policy(source: &SourceArgs) -> Policy {
    Policy::new(&source.allow_caps, source.allow_privileged)
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    init_logs(args.log_format);
    if args.no_auth && !args.listen.ip().is_loopback() && !args.insecure {
        anyhow::bail!(
            "--no-auth on the non-loopback address {} needs --insecure as well",
            args.listen
        );
    }
    let auth = if args.no_auth {
        tracing::warn!(listen = %args.listen, "--no-auth: every API request is an anonymous admin");
        Auth::disabled()
    } else {
        Auth::enabled(keys(&args.secret).context("API authentication")?)
    };
    let config = RunConfig {
        manifests: args.source.manifests.clone(),
        state_dir: args.source.state_dir.clone(),
        listen: args.listen,
        instance: args.source.instance.clone(),
        workers: args
            .workers
            .unwrap_or_else(|| 4 * std::thread::available_parallelism().map_or(2, |n| n.get())),
        resync: args.resync.into(),
        port_range: args.source.port_range,
        defaults: defaults(&args.source)?,
        stop_grace: args.stop_grace.into(),
        build_workers: args.build_workers,
        debounce: args.debounce.into(),
        pool: pool(&args.source)?,
        default_egress: args.source.default_egress,
        policy: policy(&args.source),
        iptables: Some(args.iptables.clone()),
        instance_rate: args.instance_create_rate,
        auth,
        git: args.git.url.clone().map(|url| GitConfig {
            url,
            branch: args.git.branch.clone(),
            interval: args.git.interval.into(),
            webhook_secret: args.git.webhook_secret.clone().map(String::into_bytes),
        }),
    };
    let engine = DockerRuntime::connect()
        .await
        .context("connecting to the Docker engine")?;
    match args.runtime {
        RuntimeKind::Docker => {
            let runtime = Bounded::new(engine, args.engine_concurrency);
            operator::run(config, Arc::new(runtime), shutdown_signal()).await?;
        }
        RuntimeKind::Swarm => {
            let swarm = swarm_runtime(engine, &args).await?;
            let runtime = Bounded::new(swarm, args.engine_concurrency);
            operator::run(config, Arc::new(runtime), shutdown_signal()).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The Swarm runtime of `run --runtime swarm`: the engine must manage a swarm; the publish
/// mode is the one asked for, or what the kernel supports.
async fn swarm_runtime(engine: DockerRuntime, args: &RunArgs) -> anyhow::Result<SwarmRuntime> {
    let publish = match args.swarm_publish {
        SwarmPublish::Ingress => PublishMode::Ingress,
        SwarmPublish::Host => PublishMode::Host,
        SwarmPublish::Auto if beast::runtime::swarm::kernel_has_ipvs() => PublishMode::Ingress,
        SwarmPublish::Auto => {
            tracing::warn!("no IPVS in this kernel: Swarm's routing mesh cannot work, so ports are published in host mode (each replica on the port of the node it runs on) and service names resolve to the replicas (dnsrr)");
            PublishMode::Host
        }
    };
    let swarm = SwarmRuntime::new(
        engine,
        SwarmSettings {
            publish,
            registry: args.registry.clone(),
        },
    );
    let info = swarm
        .info()
        .await
        .context("asking the Docker engine about its swarm")?;
    if !info.manager {
        anyhow::bail!("--runtime swarm: the engine is not a manager of an active swarm (run `docker swarm init`, or point DOCKER_HOST at a manager)");
    }
    if info.nodes > 1 && args.registry.is_none() {
        tracing::warn!(nodes = info.nodes, "no --registry: challenges built from source are refused on this swarm (its nodes could not pull the images)");
    }
    tracing::info!(nodes = info.nodes, publish = publish.as_str(), registry = ?args.registry, "driving a Docker Swarm");
    Ok(swarm)
}

/// Signing keys from `--jwt-secret` / `--jwt-secret-file` (or their env vars).
fn keys(secret: &SecretArgs) -> anyhow::Result<Keys> {
    let bytes = auth::load_secret(secret.jwt_secret.clone(), secret.jwt_secret_file.clone())?;
    Ok(Keys::new(&bytes)?)
}

/// `beast token`: prints a freshly minted token and nothing else on stdout.
fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let keys = keys(&args.secret)?;
    let subject = args
        .subject
        .or_else(|| args.team.clone())
        .unwrap_or_else(|| args.role.as_str().to_string());
    let token = auth::mint_for_team(
        &keys,
        args.role,
        &subject,
        args.team.as_deref(),
        args.ttl.into(),
    )?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn validate(paths: &[std::path::PathBuf]) -> anyhow::Result<ExitCode> {
    let (files, errors) = beast::manifest::validate_paths(paths);
    let mut count = 0;
    for file in &files {
        count += file.challenges().count();
    }
    for err in &errors {
        println!("{err}");
    }
    for file in &files {
        for err in file.errors() {
            println!("{err}");
        }
    }
    let bad = errors.len() + files.iter().map(|f| f.errors().count()).sum::<usize>();
    if bad == 0 {
        eprintln!("{count} challenge(s) in {} file(s): all valid", files.len());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{bad} error(s)");
        Ok(ExitCode::from(1))
    }
}

async fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let store = DesiredStore::with_policy(policy(&args.source));
    for root in &args.source.manifests {
        if !root.is_dir() {
            anyhow::bail!("--manifests {}: not a readable directory", root.display());
        }
    }
    // The git tree is the last root, as in `beast run`; the temporary checkout lives until the
    // plan is printed.
    let mut roots = args.source.manifests.clone();
    let _checkout = match &args.git {
        Some(url) => {
            let (dir, tree, heading) = beast::dryrun::checkout(url, &args.git_branch).await?;
            roots.push(tree);
            println!("{heading}");
            Some(dir)
        }
        None => None,
    };
    operator::rescan(&roots, &store);
    let ports = PortAllocator::open(args.source.port_range, &args.source.state_dir)?.detached();
    let engine = DockerRuntime::connect()
        .await
        .context("connecting to the Docker engine")?;
    match args.runtime {
        RuntimeKind::Docker => plan_on(engine, &args, store, ports).await,
        RuntimeKind::Swarm => {
            let settings = SwarmSettings {
                publish: PublishMode::Host,
                registry: None,
            };
            plan_on(SwarmRuntime::new(engine, settings), &args, store, ports).await
        }
    }
}

/// The plan of `store` against what `runtime` runs, printed.
async fn plan_on<R: Runtime>(
    runtime: R,
    args: &PlanArgs,
    store: DesiredStore,
    ports: PortAllocator,
) -> anyhow::Result<ExitCode> {
    let settings = Settings {
        instance: args.source.instance.clone(),
        defaults: defaults(&args.source)?,
        stop_grace: std::time::Duration::from_secs(2),
        build_workers: 1,
        pool: pool(&args.source)?,
        default_egress: args.source.default_egress,
    };
    let status = StatusBoard::new();
    let reconciler = Reconciler::new(
        Arc::new(runtime),
        store.clone(),
        status.clone(),
        settings,
        ports,
    );
    // The live per-team instances are desired state too: without them every instance's
    // containers would show up as orphans to remove. Read only; nothing expires here.
    let instances = Instances::open(&args.source.state_dir, store, status, Default::default())
        .context("reading the per-team instances under --state-dir")?;
    reconciler.attach_instances(Arc::new(instances));
    let egress = beast::dryrun::EgressCheck {
        default: args.source.default_egress,
        enforceable: beast::egress::Egress::detect(&args.source.instance, &args.iptables)
            .await
            .available(),
    };
    let (text, _summary) = beast::dryrun::render(reconciler.as_ref(), &egress)
        .await
        .context("reading containers from the Docker engine")?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// `beast man`: beast(1) on stdout, or every page into a folder.
fn man(out_dir: Option<&std::path::Path>) -> ExitCode {
    let result = match out_dir {
        Some(dir) => beast::cli::man_pages(dir),
        None => beast::cli::man_page(&mut std::io::stdout()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: cannot write the man page: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `beast import`: the manifest (and Dockerfile) on stdout, notes on stderr.
fn import(path: &std::path::Path, dry_run: bool) -> ExitCode {
    match beast::import::import(path, dry_run) {
        Ok(report) => {
            print!("{}", report.manifest_yaml);
            if let Some(dockerfile) = &report.dockerfile {
                println!("# --- Dockerfile ---");
                print!("{dockerfile}");
            }
            for note in &report.notes {
                eprintln!("note: {note}");
            }
            for file in &report.written {
                eprintln!("wrote {}", file.display());
            }
            if dry_run {
                eprintln!("dry run: nothing written");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
