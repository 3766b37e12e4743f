//! `beast run`: wires the sources, the desired store, the queue and its workers, the resync loop,
//! the engine watchdog and the API server, and stops them all on one shutdown signal.
//!
//! On shutdown work stops and beast exits, leaving every container running: a restart of beast
//! adopts them without recreating anything.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};

use crate::api::{self, AppState, GitHook};
use crate::auth::Auth;
use crate::build::changes::ContextFilter;
use crate::containers::Defaults;
use crate::control::OperatorControl;
use crate::desired::{DesiredStore, Entry, Source};
use crate::egress::Egress;
use crate::events;
use crate::instances::book::BookError;
use crate::instances::{Instances, RateLimit};
use crate::manifest::validate;
use crate::metrics::{MetricsHandle, Sample};
use crate::model::{BuildSpec, ImageSource};
use crate::netpool::NetPool;
use crate::notify::{Delivery, Kind, Notifier, NotifierConfig, NotifyError, Webhooks};
use crate::policy::Policy;
use crate::ports::{PortAllocator, PortError, PortRange};
use crate::queue::{spawn_workers, Backoff, Outcome, WorkQueue};
use crate::reconcile::{Reconciler, Settings};
use crate::runtime::Runtime;
use crate::source::api_store::{ApiStore, StoreError};
use crate::source::dir;
use crate::source::git::{self, GitSource};
use crate::status::StatusBoard;
use crate::tasks::TaskBoard;

/// When a reconcile that raced with an outside change looks again.
const RACE_RETRY: Duration = Duration::from_millis(300);

/// Errors that stop `beast run` from starting.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error("API store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Notify(#[from] NotifyError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("API server failed: {0}")]
    Serve(std::io::Error),
    #[error("per-team instances: {0}")]
    Instances(#[from] BookError),
}

/// Settings of `beast run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub manifests: Vec<PathBuf>,
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    pub instance: String,
    pub workers: usize,
    pub resync: Duration,
    pub port_range: PortRange,
    pub defaults: Defaults,
    pub stop_grace: Duration,
    /// Image builds that may run at once.
    pub build_workers: usize,
    /// Quiet time that ends a burst of file changes.
    pub debounce: Duration,
    /// The API's token keys, or disabled (`--no-auth`).
    pub auth: Auth,
    /// GitOps (`--git`): a branch checked out as one more manifest directory.
    pub git: Option<GitConfig>,
    /// Where challenge networks get their subnets.
    pub pool: NetPool,
    /// `spec.network.egress` of manifests that leave it out.
    pub default_egress: bool,
    /// What manifests may ask for beyond the hardened defaults.
    pub policy: Policy,
    /// The iptables binary egress rules are set with; `None` leaves egress control off
    /// (reported on every challenge that wants it).
    pub iptables: Option<PathBuf>,
    /// The per-team rate limit on instance creates.
    pub instance_rate: RateLimit,
}

/// Settings of the git source.
#[derive(Clone)]
pub struct GitConfig {
    pub url: String,
    pub branch: String,
    /// Time between fetches (a verified webhook call fetches at once).
    pub interval: Duration,
    /// Secret of the webhook; `None` or empty turns the hook off.
    pub webhook_secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for GitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitConfig")
            .field("url", &git::redact_url(&self.url))
            .field("branch", &self.branch)
            .field("interval", &self.interval)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Runs the operator until `shutdown` resolves. Containers are left running.
pub async fn run<R: Runtime>(
    config: RunConfig,
    runtime: Arc<R>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), OperatorError> {
    std::fs::create_dir_all(&config.state_dir).map_err(|source| OperatorError::StateDir {
        path: config.state_dir.clone(),
        source,
    })?;
    let ports = PortAllocator::open(config.port_range, &config.state_dir)?;
    let api_store = ApiStore::open(&config.state_dir.join("store"))?;
    for warning in api_store.warnings() {
        tracing::warn!(%warning, "API store");
    }
    let api_dir = config.state_dir.join("api");
    std::fs::create_dir_all(&api_dir).map_err(|source| OperatorError::StateDir {
        path: api_dir.clone(),
        source,
    })?;
    let store = DesiredStore::with_policy(config.policy.clone());
    for name in api_store.undeployed() {
        store.set_deployed(&name, false);
    }
    let tasks = TaskBoard::new();
    let status = StatusBoard::new();
    let settings = Settings {
        instance: config.instance.clone(),
        defaults: config.defaults.clone(),
        stop_grace: config.stop_grace,
        build_workers: config.build_workers,
        pool: config.pool,
        default_egress: config.default_egress,
    };
    let reconciler = Reconciler::new(
        runtime.clone(),
        store.clone(),
        status.clone(),
        settings,
        ports,
    );
    if let Some(iptables) = &config.iptables {
        let egress = Egress::detect(&config.instance, iptables).await;
        if let Err(why) = egress.available() {
            tracing::warn!(%why, "egress control is unavailable: challenges with spec.network.egress false run with egress OPEN and say so in their EgressPolicy condition");
        }
        reconciler.attach_egress(Arc::new(egress));
    }
    let readiness = reconciler.readiness.clone();
    let webhooks = Webhooks::open(&config.state_dir, Delivery::default())?;
    let notifier = Notifier::new(NotifierConfig::default(), Some(webhooks.clone()));

    // Bind first: a port clash must fail the start, not a background task.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| OperatorError::Listen {
            addr: config.listen,
            source,
        })?;
    tracing::info!(listen = %config.listen, instance = %config.instance, "beast is starting");

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    // The git tree is the last manifest root; it is rescanned after each switch, not watched.
    let git = match &config.git {
        Some(g) => Some(first_git_sync(g, &config.state_dir).await),
        None => None,
    };
    let mut manifests = config.manifests.clone();
    if let Some(source) = &git {
        manifests.push(source.tree());
    }
    rescan(&manifests, &store);
    load_api(&api_store, &store, &api_dir);

    let queue: WorkQueue<String> = WorkQueue::new(Backoff::default());
    reconciler.attach_queue(queue.clone());
    reconciler.attach_notifier(notifier.clone());
    let instances = Arc::new(Instances::open(
        &config.state_dir,
        store.clone(),
        status.clone(),
        config.instance_rate,
    )?);
    {
        let queue = queue.clone();
        instances.attach_poke(Arc::new(move |key: &str| {
            queue.add_now_ignoring_backoff(key.to_string())
        }));
        let notifier = notifier.clone();
        instances.attach_announce(Arc::new(
            move |what: &str, challenge: &str, team: &str, id: &str| {
                notifier.publish(
                    Kind::Status,
                    challenge,
                    format!("instance {id} of team {team} {what}"),
                    serde_json::json!({"instance": id, "team": team, "change": what}),
                );
            },
        ));
    }
    reconciler.attach_instances(instances.clone());
    spawn_reaper(instances.clone(), stop_rx.clone());
    // Asks the resync loop for a pass now (engine events reconnected, engine came back).
    let resync_now = Arc::new(Notify::new());
    tokio::spawn(events::follow(
        reconciler.clone(),
        queue.clone(),
        notifier.clone(),
        resync_now.clone(),
        stop_rx.clone(),
    ));
    // Keys of the first pass not yet reconciled once; /readyz waits for them.
    let first_pass: Arc<Mutex<Option<HashSet<String>>>> = Arc::new(Mutex::new(None));
    let metrics = MetricsHandle::new();
    let workers = {
        let metrics = metrics.clone();
        let notifier = notifier.clone();
        let tasks = tasks.clone();
        let reconciler = reconciler.clone();
        let first_pass = first_pass.clone();
        let readiness = readiness.clone();
        spawn_workers(&queue, config.workers.max(1), move |name: String| {
            let reconciler = reconciler.clone();
            let first_pass = first_pass.clone();
            let readiness = readiness.clone();
            let tasks = tasks.clone();
            let metrics = metrics.clone();
            let notifier = notifier.clone();
            async move {
                tasks.start(&name);
                let started = tokio::time::Instant::now();
                let result = reconciler.reconcile(&name).await;
                metrics.observe_reconcile(started.elapsed());
                let finished = tasks.finish(
                    &name,
                    &result.as_ref().map(|_| ()).map_err(ToString::to_string),
                );
                for task in finished {
                    let message = format!("{} {}: {:?}", task.action, task.challenge, task.state);
                    let data = serde_json::json!({"task": task});
                    notifier.publish(Kind::Task, &name, message, data);
                }
                let mut pending = first_pass.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(set) = pending.as_mut() {
                    set.remove(&name);
                    if set.is_empty() {
                        readiness.first_pass_done.store(true, Ordering::Relaxed);
                    }
                }
                match result {
                    Ok(()) => Outcome::Done,
                    // Raced with damage done from outside: look again soon, without the
                    // growing backoff a real failure earns (chaos must not delay healing).
                    Err(err) if err.is_race() => {
                        tracing::debug!(challenge = %name, error = %err, "raced with an outside change; looking again");
                        Outcome::RequeueAfter(RACE_RETRY)
                    }
                    Err(err) => Outcome::Failed(err.to_string()),
                }
            }
        })
    };

    // File changes → one rescan per burst → the changed names, at once (even if backing off:
    // an author who fixed a manifest should not wait for a retry timer). A change under a build
    // context that the build would send (not `.dockerignore`d) enqueues that challenge too: its
    // reconcile hashes the context again and rebuilds when the content changed.
    let (burst_tx, mut burst_rx) = mpsc::channel::<dir::Burst>(1);
    let roots: Vec<PathBuf> = config
        .manifests
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect();
    tokio::spawn(dir::watch(
        roots.clone(),
        burst_tx,
        config.debounce,
        Duration::from_secs(2),
    ));
    {
        let manifests = manifests.clone();
        let store = store.clone();
        let queue = queue.clone();
        let mut stop = stop_rx.clone();
        let (api_store, api_dir) = (api_store.clone(), api_dir.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    got = burst_rx.recv() => {
                        let Some(burst) = got else { return; };
                        let mut changed = Vec::new();
                        if burst.touches_manifests(&roots) {
                            changed = rescan(&manifests, &store);
                            changed.extend(load_api(&api_store, &store, &api_dir));
                        }
                        changed.extend(built_touched(&store, &burst));
                        changed.sort();
                        changed.dedup();
                        for name in changed {
                            queue.add_now_ignoring_backoff(name);
                        }
                    }
                }
            }
        });
    }

    // Resync: the safety net, and the first pass. Also rescans the directories, in case the
    // watcher missed something. A failed pass (engine down) is retried every second.
    {
        let reconciler = reconciler.clone();
        let queue = queue.clone();
        let manifests = manifests.clone();
        let store = store.clone();
        let mut stop = stop_rx.clone();
        let every = config.resync;
        let resync_now = resync_now.clone();
        tokio::spawn(async move {
            let mut first = true;
            let mut engine_was_up = true;
            loop {
                for name in rescan(&manifests, &store) {
                    queue.add_now_ignoring_backoff(name);
                }
                let wait = match reconciler.resync().await {
                    Ok(names) => {
                        if first {
                            first = false;
                            let mut pending = first_pass.lock().unwrap_or_else(|p| p.into_inner());
                            if names.is_empty() {
                                reconciler
                                    .readiness
                                    .first_pass_done
                                    .store(true, Ordering::Relaxed);
                            }
                            *pending = Some(names.iter().cloned().collect());
                        }
                        if !engine_was_up {
                            tracing::info!("engine is back; reconverging");
                            engine_was_up = true;
                        }
                        for name in names {
                            queue.add(name);
                        }
                        every
                    }
                    Err(err) => {
                        if engine_was_up {
                            tracing::warn!(error = %err, "engine unavailable; keeping desired state and retrying");
                            engine_was_up = false;
                        }
                        Duration::from_secs(1)
                    }
                };
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(wait) => {}
                    _ = resync_now.notified() => {}
                }
            }
        });
    }

    // Engine watchdog: readiness follows the engine, and its return triggers a pass at once.
    {
        let runtime = runtime.clone();
        let readiness = readiness.clone();
        let mut stop = stop_rx.clone();
        let resync_now = resync_now.clone();
        tokio::spawn(async move {
            let mut was_up = true;
            loop {
                let up = matches!(
                    tokio::time::timeout(Duration::from_secs(2), runtime.ping()).await,
                    Ok(Ok(()))
                );
                readiness.engine_up.store(up, Ordering::Relaxed);
                if up && !was_up {
                    resync_now.notify_one();
                }
                was_up = up;
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
    }

    let mut git_hook = None;
    if let (Some(source), Some(config)) = (git.clone(), &config.git) {
        let trigger = Arc::new(Notify::new());
        git_hook = config
            .webhook_secret
            .clone()
            .filter(|s| !s.is_empty())
            .map(|secret| GitHook {
                secret,
                trigger: trigger.clone(),
            });
        let rescan_to = RescanTo {
            manifests: manifests.clone(),
            store: store.clone(),
            queue: queue.clone(),
        };
        spawn_git_sync(source, config.interval, trigger, rescan_to, stop_rx.clone());
    }

    let control = Arc::new(OperatorControl {
        reconciler: reconciler.clone(),
        queue: queue.clone(),
    });
    {
        let reconciler = reconciler.clone();
        let queue = queue.clone();
        metrics.set_gauges(Box::new(move || gauges(&reconciler, &queue)));
    }
    let app = api::router(AppState {
        metrics: metrics.clone(),
        status_cache: api::ResponseCache::default(),
        store: store.clone(),
        status: status.clone(),
        readiness: readiness.clone(),
        tasks: tasks.clone(),
        api_store: api_store.clone(),
        control,
        api_dir: api_dir.clone(),
        auth: config.auth.clone(),
        notifier: notifier.clone(),
        webhooks,
        git_hook,
        git,
        instances: Some(instances.clone()),
    });
    let mut stop = stop_rx.clone();
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop.changed().await;
        // Event streams never end on their own; without this the server would wait for them.
        notifier.shutdown();
    });
    let served = serve.await;
    tracing::info!("shutting down: finishing in-flight work, leaving containers running");
    workers.shutdown().await;
    served.map_err(OperatorError::Serve)
}

/// How long startup waits for the first git sync (later syncs run in the background).
const FIRST_GIT_SYNC: Duration = Duration::from_secs(60);
/// Floor of `--git-interval`: a zero interval must not fetch in a busy loop.
const MIN_GIT_INTERVAL: Duration = Duration::from_secs(1);

/// Creates the git source and syncs it once, before the first scan. A failure is logged and
/// beast goes on with the tree a previous run checked out, if any.
async fn first_git_sync(config: &GitConfig, state_dir: &Path) -> Arc<GitSource> {
    let source = Arc::new(GitSource::new(
        config.url.clone(),
        config.branch.clone(),
        state_dir.join("git"),
    ));
    match tokio::time::timeout(FIRST_GIT_SYNC, source.sync()).await {
        Ok(Ok(outcome)) => {
            tracing::info!(url = %source.display_url(), branch = source.branch(), commit = %outcome.commit, "git: synced")
        }
        Err(_) => {
            tracing::warn!(url = %source.display_url(), kept = ?source.current_commit(), "git: first sync is taking too long; starting with the tree of a previous run, if any, and retrying in the background")
        }
        Ok(Err(err)) => {
            tracing::warn!(url = %source.display_url(), error = %err, kept = ?source.current_commit(), "git: first sync failed; using the tree of a previous run, if any")
        }
    }
    source
}

/// Where a git switch is applied: the same rescan as a burst of file changes.
struct RescanTo {
    manifests: Vec<PathBuf>,
    store: DesiredStore,
    queue: WorkQueue<String>,
}

/// Fetches every `interval` and whenever `trigger` is notified (the webhook); after a switch to
/// a new commit, rescans and enqueues the changed challenges at once. A failed fetch keeps
/// everything as it runs; it is logged and recorded in [`GitSource::status`].
fn spawn_git_sync(
    source: Arc<GitSource>,
    interval: Duration,
    trigger: Arc<Notify>,
    to: RescanTo,
    mut stop: watch::Receiver<bool>,
) {
    let interval = interval.max(MIN_GIT_INTERVAL);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(interval) => {}
                _ = trigger.notified() => {}
            }
            match source.sync().await {
                Ok(outcome) if outcome.changed => {
                    tracing::info!(commit = %outcome.commit, "git: new commit; rescanning");
                    let mut changed = rescan(&to.manifests, &to.store);
                    // A commit may change only files of a build context: every challenge built
                    // from the tree is reconciled, which rebuilds only when its content hash moved.
                    changed.extend(built_in_root(&to.store, to.manifests.len() - 1));
                    changed.sort();
                    changed.dedup();
                    for name in changed {
                        to.queue.add_now_ignoring_backoff(name);
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(url = %source.display_url(), error = %err, "git: sync failed; keeping what runs")
                }
            }
        }
    });
}

/// Removes instances at expiry, within a second (and at once those that expired while beast
/// was down).
fn spawn_reaper(instances: Arc<Instances>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {
                    let now = time::OffsetDateTime::now_utc().unix_timestamp();
                    if let Err(err) = instances.reap(now) {
                        tracing::warn!(error = %err, "could not remove expired instances; retrying");
                    }
                }
            }
        }
    });
}

/// The build specs of the valid challenges in the store (the main container's and each
/// service's), with their entry.
fn built(store: &DesiredStore) -> impl Iterator<Item = (Entry, BuildSpec)> {
    store.snapshot().into_iter().flat_map(|entry| {
        let specs: Vec<BuildSpec> = entry
            .spec
            .as_deref()
            .map(|c| {
                c.run
                    .iter()
                    .chain(c.services.iter().map(|s| &s.run))
                    .filter_map(|run| match &run.source {
                        ImageSource::Build(spec) => Some(spec.clone()),
                        ImageSource::Image(_) => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        specs.into_iter().map(move |spec| (entry.clone(), spec))
    })
}

/// The challenges built from source whose build context a burst of file changes touched
/// (every one of them when the burst may have missed paths). Ignored files do not count.
pub fn built_touched(store: &DesiredStore, burst: &dir::Burst) -> Vec<String> {
    built(store)
        .filter(|(_, spec)| {
            burst.everything || ContextFilter::new(spec).any_matters(burst.paths.iter())
        })
        .map(|(entry, _)| entry.name)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The challenges built from source that the manifest root `root` defines.
fn built_in_root(store: &DesiredStore, root: usize) -> Vec<String> {
    built(store)
        .filter(|(entry, _)| matches!(entry.source, Source::Dir { root: r, .. } if r == root))
        .map(|(entry, _)| entry.name)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Counters kept by the reconciler and the queue, for `/metrics`.
fn gauges<R: Runtime>(reconciler: &Reconciler<R>, queue: &WorkQueue<String>) -> Vec<Sample> {
    let c = &reconciler.counters;
    let p = &reconciler.prober.counters;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let sample = |name, help, counter, value| Sample {
        name,
        help,
        counter,
        value,
        by: None,
    };
    let mut samples = vec![
        sample(
            "reconciles",
            "Reconciles of one challenge",
            true,
            n(&c.reconciles),
        ),
        sample(
            "reconcile_failures",
            "Reconciles that failed",
            true,
            n(&c.reconcile_failures),
        ),
        sample(
            "damage",
            "Container exits, removals and stops beast did not cause",
            true,
            n(&c.damage),
        ),
        sample(
            "heals",
            "Corrective operations on converged challenges",
            true,
            n(&c.heals),
        ),
        sample(
            "probe_failures",
            "Failed health probes",
            true,
            n(&p.failures),
        ),
        sample(
            "probe_restarts",
            "Containers restarted after failing probes",
            true,
            n(&p.restarts),
        ),
        sample(
            "queue_depth",
            "Challenges waiting in the work queue",
            false,
            queue.len() as u64,
        ),
        sample(
            "queue_in_flight",
            "Challenges being reconciled",
            false,
            queue.in_flight() as u64,
        ),
        sample(
            "challenges",
            "Challenges in the desired state",
            false,
            reconciler.store.len() as u64,
        ),
    ];
    if let Some(instances) = reconciler.instance_book() {
        let i = &instances.counters;
        let live: u64 = instances.live_counts().values().sum();
        samples.extend([
            sample(
                "instances_live",
                "Per-team instances alive now",
                false,
                live,
            ),
            Sample {
                by: Some(("challenge", instances.live_counts().into_iter().collect())),
                ..sample(
                    "instances_live_by_challenge",
                    "Per-team instances alive now, by challenge",
                    false,
                    0,
                )
            },
            sample(
                "instance_creates",
                "Per-team instances created",
                true,
                n(&i.creates),
            ),
            sample(
                "instance_renewals",
                "Per-team instances renewed",
                true,
                n(&i.renewals),
            ),
            sample(
                "instance_deletes",
                "Per-team instances deleted on request",
                true,
                n(&i.deletes),
            ),
            sample(
                "instance_expiries",
                "Per-team instances removed at expiry",
                true,
                n(&i.expiries),
            ),
        ]);
    }
    if let Some(ops) = reconciler.runtime.engine_ops() {
        samples.extend([
            sample("engine_requests", "Requests beast made to the engine (bounded by --engine-concurrency)", true, n(&ops.total)),
            sample("engine_starts", "Container starts beast asked the engine for (create+start, start, restart, unpause); the restart policy's own restarts are not among them", true, n(&ops.starts)),
            sample("engine_creates", "Containers beast created (each then started, so among engine_starts too)", true, n(&ops.creates)),
            sample("engine_stops", "Container stops and removals beast asked the engine for", true, n(&ops.stops)),
            sample("engine_requests_waiting", "Engine requests waiting for a slot under --engine-concurrency", false, n(&ops.waiting)),
        ]);
    }
    samples
}

/// Puts the API store's challenges into the desired store (those no watched file claims);
/// returns the names that changed. A stored manifest that no longer validates is reported and
/// left as it was.
pub fn load_api(api_store: &ApiStore, store: &DesiredStore, api_dir: &Path) -> Vec<String> {
    let mut changed = Vec::new();
    for (name, stored) in api_store.list() {
        if matches!(store.owner(&name), Some(Source::Dir { .. })) {
            continue;
        }
        let ctx = validate::Context {
            manifest_dir: api_dir,
            root: api_dir,
        };
        match validate::validate(&stored.manifest, &ctx) {
            Ok(challenge) => {
                if let Ok(true) =
                    store.apply_api(challenge, stored.manifest, stored.resource_version)
                {
                    changed.push(name);
                }
            }
            Err(errors) => {
                let errors: Vec<String> = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.path, e.message))
                    .collect();
                tracing::error!(challenge = %name, errors = ?errors, "stored API manifest no longer validates; keeping what runs");
            }
        }
    }
    changed
}

/// Rescans every manifest directory into the store; returns the names whose entry changed.
/// A directory that cannot be read changes nothing. Rescans run one at a time, so a scan that
/// read a git tree before a switch cannot land after the rescan the switch asked for.
pub fn rescan(roots: &[PathBuf], store: &DesiredStore) -> Vec<String> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut changed = Vec::new();
    for (i, root) in roots.iter().enumerate() {
        match dir::scan(root) {
            Ok(snapshot) => changed.extend(store.apply_dir(i, snapshot)),
            Err(err) => {
                tracing::warn!(error = %err, "skipping manifest directory; its challenges are kept")
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fs;

    use super::*;

    /// A watched root with `web` built from `../shared` (ignoring `notes.txt`) and `plain`
    /// running an image.
    fn world() -> (tempfile::TempDir, PathBuf, DesiredStore) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("web")).unwrap();
        fs::create_dir_all(root.join("shared/www")).unwrap();
        fs::write(root.join("shared/Dockerfile"), "FROM scratch\n").unwrap();
        fs::write(root.join("shared/.dockerignore"), "notes.txt\n").unwrap();
        fs::write(
            root.join("web/challenge.yaml"),
            "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: web\nspec:\n  build: {context: ../shared}\n",
        )
        .unwrap();
        fs::write(
            root.join("plain.yaml"),
            "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: plain\nspec:\n  image: busybox\n",
        )
        .unwrap();
        let store = DesiredStore::new();
        rescan(std::slice::from_ref(&root), &store);
        assert_eq!(store.len(), 2);
        (dir, root, store)
    }

    fn burst(paths: &[PathBuf]) -> dir::Burst {
        dir::Burst {
            paths: paths.iter().cloned().collect::<BTreeSet<_>>(),
            everything: false,
        }
    }

    #[test]
    fn a_sent_file_of_a_context_enqueues_its_challenge_an_ignored_one_does_not() {
        let (_dir, root, store) = world();
        let index = root.join("shared/www/index.html");
        assert_eq!(built_touched(&store, &burst(&[index])), ["web"]);
        let notes = root.join("shared/notes.txt");
        assert!(built_touched(&store, &burst(&[notes])).is_empty());
        let manifest = root.join("plain.yaml");
        assert!(built_touched(&store, &burst(&[manifest])).is_empty());
        let everything = dir::Burst {
            everything: true,
            ..dir::Burst::default()
        };
        assert_eq!(built_touched(&store, &everything), ["web"]);
    }

    #[test]
    fn the_built_challenges_of_a_root_are_found() {
        let (_dir, _root, store) = world();
        assert_eq!(built_in_root(&store, 0), ["web"]);
        assert!(built_in_root(&store, 1).is_empty());
    }
}
