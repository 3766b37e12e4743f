//! The reconciler: for one challenge, read desired and observed state, plan, and carry the plan
//! out on the runtime; and the resync pass that plans every challenge from one list call.
//!
//! Level-triggered: whatever caused a call (a file change, a resync, later an engine event), the
//! reconciler re-reads both states. It holds no per-challenge memory besides the status board and
//! the port table, so a restart of beast converges from scratch without recreating anything.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::build::{BuildError, Builder};
use crate::containers::{as_workloads, hash_of, replica_spec, service_spec, Defaults, Image};
use crate::desired::{DesiredStore, Entry};
use crate::egress::{Egress, EgressError};
use crate::instances::Instances;
use crate::model::{split_key, BuildSpec, Challenge, Healthcheck, ImageSource, RunSpec};
use crate::netpool::NetPool;
use crate::notify::{Kind, Notifier};
use crate::plan::{plan_all, plan_challenge, waiting_for, Op, Slot, Target, Want, Why};
use crate::ports::{write_table, PortAllocator, PortError, PortKey};
use crate::probe::{ProbeHost, Prober};
use crate::queue::WorkQueue;
use crate::runtime::{ContainerSpec, ContainerState, ImageIndex, Observed, Runtime, RuntimeError};
use crate::status::{valid_reason, ContainerStatus, Phase, StatusBoard};

/// Why beast expects a container's exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// beast stops, replaces or removes it: not a crash, nothing to heal.
    Beast,
    /// beast restarts it after failed probes: the probe counted the restart already.
    Probe,
}

/// How long an expectation lasts when no event consumes it (a missed `destroy`).
const EXPECT_FOR: Duration = Duration::from_secs(120);

/// Why a reconcile of one challenge did not converge (the queue backs off and retries).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("image {0:?} not found in the engine (build or load it, or fix spec.image)")]
    ImageNotFound(String),
    /// A resync pass leaves builds to the workers.
    #[error("challenge {0} is built from source; a worker builds it")]
    BuildDeferred(String),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error("{name}: host port {port} is already in use on this host (by another container or process); free it or choose another hostPort")]
    HostPortInUse { name: String, port: String },
    #[error("network {name}: {message}")]
    Network { name: String, message: String },
    #[error(transparent)]
    Egress(#[from] EgressError),
    #[error("{action} {name}: {source}")]
    Runtime {
        action: &'static str,
        name: String,
        #[source]
        source: RuntimeError,
    },
}

impl ReconcileError {
    fn reason(&self) -> &'static str {
        match self {
            ReconcileError::ImageNotFound(_) => "ImageNotFound",
            ReconcileError::BuildDeferred(_) => "Building",
            ReconcileError::Build(e) if e.is_engine_outage() => "EngineUnavailable",
            ReconcileError::Build(e) => e.reason(),
            ReconcileError::Ports(_) => "PortAllocation",
            ReconcileError::HostPortInUse { .. } => "HostPortInUse",
            ReconcileError::Network { .. } => "NetworkError",
            ReconcileError::Egress(_) => "EgressError",
            ReconcileError::Runtime { source, .. } if source.is_unavailable() => {
                "EngineUnavailable"
            }
            ReconcileError::Runtime {
                source: RuntimeError::Refused { reason, .. },
                ..
            } => reason,
            ReconcileError::Runtime { source, .. }
                if source.to_string().to_ascii_lowercase().contains("runtime") =>
            {
                "UnknownRuntime"
            }
            ReconcileError::Runtime { .. } => "EngineError",
        }
    }

    /// True when an operation raced with a change made from outside (the container was removed,
    /// is being removed, or changed state under beast): worth a prompt second look, not a backoff.
    pub fn is_race(&self) -> bool {
        match self {
            ReconcileError::Runtime { source, .. } => source.is_race(),
            _ => false,
        }
    }

    /// True when the engine could not be reached: not the challenge's fault.
    pub fn is_engine_outage(&self) -> bool {
        match self {
            ReconcileError::Runtime { source, .. } => source.is_unavailable(),
            ReconcileError::Build(e) => e.is_engine_outage(),
            _ => false,
        }
    }
}

fn rt<'a>(action: &'static str, name: &'a str) -> impl FnOnce(RuntimeError) -> ReconcileError + 'a {
    move |source| ReconcileError::Runtime {
        action,
        name: name.to_string(),
        source,
    }
}

/// Settings of the reconciler.
#[derive(Debug, Clone)]
pub struct Settings {
    pub instance: String,
    pub defaults: Defaults,
    /// How long a container gets to stop before it is killed (on replace and remove).
    pub stop_grace: Duration,
    /// Builds from source that may run at once.
    pub build_workers: usize,
    /// Where challenge networks get their subnets.
    pub pool: NetPool,
    /// `spec.network.egress` of manifests that leave it out.
    pub default_egress: bool,
}

/// Readiness facts shared with `/readyz`.
#[derive(Default)]
pub struct Readiness {
    pub first_pass_done: AtomicBool,
    pub engine_up: AtomicBool,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.first_pass_done.load(Ordering::Relaxed) && self.engine_up.load(Ordering::Relaxed)
    }
}

/// Counters for metrics.
#[derive(Default)]
pub struct Counters {
    /// Reconciles run, and those that failed.
    pub reconciles: AtomicU64,
    pub reconcile_failures: AtomicU64,
    /// Damage seen: exits, removals, stops beast did not cause.
    pub damage: AtomicU64,
    /// Corrective operations on a challenge whose spec had not changed (heals).
    pub heals: AtomicU64,
}

/// The reconciler of one beast instance.
pub struct Reconciler<R: Runtime> {
    pub runtime: Arc<R>,
    pub store: DesiredStore,
    pub status: StatusBoard,
    pub readiness: Arc<Readiness>,
    pub counters: Counters,
    pub prober: Prober,
    settings: Settings,
    ports: Mutex<PortAllocator>,
    /// Serialises writes of the port table (taken before the table's own lock).
    port_writer: Mutex<()>,
    builder: Builder<R>,
    /// Challenges whose next reconcile recreates everything (`redeploy`).
    redeploy: Mutex<HashSet<String>>,
    /// Containers beast itself is stopping, restarting or removing (their exits are no crash),
    /// with when beast said so: an expectation nobody consumed lapses after [`EXPECT_FOR`].
    expected: Mutex<HashMap<String, (Expected, Instant)>>,
    queue: Mutex<Option<WorkQueue<String>>>,
    notifier: Mutex<Option<Notifier>>,
    /// Challenge networks known to exist, by challenge name.
    nets: Mutex<HashMap<String, network::NetState>>,
    /// Serialises beast's own network creations (subnet choice, then create).
    net_lock: tokio::sync::Mutex<()>,
    /// The egress mechanism; `None` where it was not set up (enforcement unavailable).
    egress: Mutex<Option<Arc<Egress>>>,
    /// Challenges whose egress rules are in place, with the subnet they cover.
    blocked: Mutex<HashMap<String, String>>,
    /// Per-team instances, when the operator offers them: more desired state, keyed
    /// `{challenge}.{id}`.
    instances: Mutex<Option<Arc<Instances>>>,
    /// Build keys (`challenge.service`) of services built from source, by challenge: their
    /// images go with the challenge.
    service_builds: Mutex<HashMap<String, BTreeSet<String>>>,
    /// Built images made pullable by every node (image id → reference), where the runtime
    /// distributes them (Swarm's registry push).
    distributed: Mutex<HashMap<String, String>>,
    /// Where the engine last ran each replica of a challenge (slot → node), where it places them
    /// itself: a replica found running elsewhere has been moved.
    placed: Mutex<HashMap<String, BTreeMap<String, String>>>,
    me: Weak<Reconciler<R>>,
}

mod network;
mod workloads;

/// What the wanted containers of a challenge are, or why they cannot be worked out.
enum Wanted {
    /// Nothing should run (not desired, replicas 0, static challenge).
    Nothing,
    Specs(BTreeMap<Slot, ContainerSpec>),
}

impl<R: Runtime> Reconciler<R> {
    pub fn new(
        runtime: Arc<R>,
        store: DesiredStore,
        status: StatusBoard,
        settings: Settings,
        ports: PortAllocator,
    ) -> Arc<Reconciler<R>> {
        let builder = Builder::new(runtime.clone(), settings.build_workers);
        Arc::new_cyclic(|me| Reconciler {
            runtime,
            store,
            status,
            readiness: Arc::new(Readiness::default()),
            counters: Counters::default(),
            prober: Prober::default(),
            settings,
            ports: Mutex::new(ports),
            port_writer: Mutex::new(()),
            builder,
            redeploy: Mutex::new(HashSet::new()),
            expected: Mutex::new(HashMap::new()),
            queue: Mutex::new(None),
            notifier: Mutex::new(None),
            nets: Mutex::new(HashMap::new()),
            net_lock: tokio::sync::Mutex::new(()),
            egress: Mutex::new(None),
            blocked: Mutex::new(HashMap::new()),
            service_builds: Mutex::new(HashMap::new()),
            distributed: Mutex::new(HashMap::new()),
            placed: Mutex::new(HashMap::new()),
            instances: Mutex::new(None),
            me: me.clone(),
        })
    }

    /// Lets probes and events ask for a reconcile.
    pub fn attach_queue(&self, queue: WorkQueue<String>) {
        *self.queue.lock().unwrap_or_else(|p| p.into_inner()) = Some(queue);
    }

    /// Gives the reconciler the egress mechanism (without it, `egress: false` is reported as
    /// not enforced).
    pub fn attach_egress(&self, egress: Arc<Egress>) {
        *self.egress.lock().unwrap_or_else(|p| p.into_inner()) = Some(egress);
    }

    /// Makes per-team instances part of the desired state.
    pub fn attach_instances(&self, instances: Arc<Instances>) {
        *self.instances.lock().unwrap_or_else(|p| p.into_inner()) = Some(instances);
    }

    /// The per-team instances, when attached.
    pub fn instance_book(&self) -> Option<Arc<Instances>> {
        self.instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The desired state of `name`: a challenge, or one team's instance (`{challenge}.{id}`).
    pub fn entry(&self, name: &str) -> Option<Entry> {
        if split_key(name).is_some() {
            return self.instance_book()?.entry(name);
        }
        self.store.get(name)
    }

    /// Every challenge and every live instance.
    pub fn snapshot(&self) -> Vec<Entry> {
        let mut entries = self.store.snapshot();
        if let Some(instances) = self.instance_book() {
            entries.extend(instances.entries());
        }
        entries
    }

    /// Lets the reconciler announce phase changes and heals.
    pub fn attach_notifier(&self, notifier: Notifier) {
        *self.notifier.lock().unwrap_or_else(|p| p.into_inner()) = Some(notifier);
    }

    fn publish(&self, kind: Kind, name: &str, message: String, data: serde_json::Value) {
        if let Some(n) = self
            .notifier
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            n.publish(kind, name, message, data);
        }
    }

    /// Announces a phase change of `name` since `before`.
    fn announce_phase(&self, name: &str, before: Option<Phase>, generation: u64) {
        let after = self.status.phase(name);
        if let (Some(after), true) = (after, after != before) {
            let message = match before {
                Some(before) => format!("{before:?} → {after:?}"),
                None => format!("{after:?}"),
            };
            let data =
                serde_json::json!({"phase": after, "previous": before, "generation": generation});
            self.publish(Kind::Status, name, message, data);
        }
    }

    /// Asks the next reconcile of `name` to recreate its containers even if nothing changed
    /// (and to build again a source that failed to build before).
    pub fn request_redeploy(&self, name: &str) {
        self.builder.retry(name);
        self.redeploy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
    }

    fn take_redeploy(&self, name: &str) -> bool {
        let asked = self
            .redeploy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if asked {
            // A redeploy is a fresh start: the crash-loop verdict starts clean.
            self.status.update(name, |s| s.clear_exits());
        }
        asked
    }

    /// Makes port allocations durable (one write for any number of changes since the last).
    fn persist_ports(&self) -> Result<(), ReconcileError> {
        let _writer = self.port_writer.lock().unwrap_or_else(|p| p.into_inner());
        let pending = self.ports().take_pending();
        match pending {
            Some((file, bytes)) => Ok(write_table(&file, &bytes)?),
            None => Ok(()),
        }
    }

    /// Whether (and why) beast itself is stopping, restarting or removing container `id`.
    pub fn expectation(&self, id: &str) -> Option<Expected> {
        let expected = self.expected.lock().unwrap_or_else(|p| p.into_inner());
        expected
            .get(id)
            .filter(|(_, at)| at.elapsed() < EXPECT_FOR)
            .map(|(why, _)| *why)
    }

    /// Whether beast itself is stopping, restarting or removing container `id`.
    pub fn is_expected(&self, id: &str) -> bool {
        self.expectation(id).is_some()
    }

    pub fn forget_expected(&self, id: &str) {
        self.expected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn expect_exit(&self, id: &str) {
        self.expect(id, Expected::Beast);
    }

    /// Marks the coming exit of `id` as caused by beast, for [`EXPECT_FOR`].
    pub fn expect(&self, id: &str, why: Expected) {
        let mut expected = self.expected.lock().unwrap_or_else(|p| p.into_inner());
        if expected.len() > 1_000 {
            // Ids whose destroy event was missed: never grow without bound.
            expected.retain(|_, (_, at)| at.elapsed() < EXPECT_FOR);
        }
        expected.insert(id.to_string(), (why, Instant::now()));
    }

    /// Counts damage seen by the event stream.
    pub fn count_heal_needed(&self) {
        self.counters.damage.fetch_add(1, Ordering::Relaxed);
    }

    pub fn instance(&self) -> &str {
        &self.settings.instance
    }

    fn ports(&self) -> std::sync::MutexGuard<'_, PortAllocator> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings one challenge to its desired state. An error leaves running containers alone.
    pub async fn reconcile(&self, name: &str) -> Result<(), ReconcileError> {
        let result = self.reconcile_inner(name).await;
        self.note_engine(&result);
        self.counters.reconciles.fetch_add(1, Ordering::Relaxed);
        if let Some(err) = result.as_ref().err().filter(|e| !e.is_race()) {
            self.counters
                .reconcile_failures
                .fetch_add(1, Ordering::Relaxed);
            self.status.update(name, |s| {
                let running = s.containers.iter().any(|c| c.state == "running");
                s.phase = if running {
                    Phase::Degraded
                } else {
                    Phase::Failed
                };
                if err.is_engine_outage() {
                    s.phase = Phase::Pending;
                }
                s.set_condition("Ready", Some(false), err.reason(), &err.to_string());
            });
        }
        result
    }

    fn note_engine(&self, result: &Result<(), ReconcileError>) {
        let up = !matches!(result, Err(e) if e.is_engine_outage());
        self.readiness.engine_up.store(up, Ordering::Relaxed);
    }

    async fn reconcile_inner(&self, name: &str) -> Result<(), ReconcileError> {
        if self.runtime.schedules_replicas() {
            return self.reconcile_workloads(name).await;
        }
        let entry = self.entry(name);
        let observed = self
            .runtime
            .list(self.instance(), Some(name))
            .await
            .map_err(rt("list containers of", name))?;
        let specs = self.specs_of(name, entry.as_ref(), &observed).await?;
        let challenge = entry.as_ref().and_then(|e| e.spec.clone());
        let wants: Vec<Want> = wants_of(&specs, challenge.as_deref());
        let refs: Vec<&Observed> = observed.iter().collect();
        let healthy = self.healthy_services(name, &observed, &specs);
        let mut ops = plan_challenge(self.instance(), &wants, &refs, &healthy);
        if self.take_redeploy(name) {
            ops = redeploy_ops(self.instance(), &wants, &refs);
        }
        // New allocations are durable before any container publishes them.
        self.persist_ports()?;
        // The network, and its egress rules, exist before any container joins it.
        if let (Some(challenge), false) = (&challenge, specs.is_empty()) {
            let net = self.ensure_network(challenge).await?;
            self.apply_egress(challenge, &net).await?;
        }

        let healing = self.is_healing(name, entry.as_ref(), !ops.is_empty());
        let mut first_error = None;
        let mut after: Vec<Observed> = observed.clone();
        for op in ops {
            tracing::info!(challenge = %name, op = %describe(&op), "applying");
            let result = self.execute(&op, &specs, &observed).await;
            let restores = matches!(
                op,
                Op::Create { .. } | Op::Start { .. } | Op::Unpause { .. }
            );
            let done = result.as_ref().map(|_| ()).map_err(ToString::to_string);
            let reason = op_reason(&op, healing);
            let what = describe(&op);
            self.report_op(
                name,
                entry.is_some(),
                (healing, restores),
                reason,
                &what,
                done,
            );
            match result {
                Ok(created) => apply_effect(&mut after, &op, created, &specs),
                Err(err) => {
                    tracing::warn!(challenge = %name, error = %err, "operation failed");
                    // The network may have gone from under the cache: look again next time.
                    self.forget_network(name);
                    first_error.get_or_insert(err);
                }
            }
        }
        if specs.is_empty() && first_error.is_none() {
            // Runs nothing: the network goes once no container of the challenge is left on it.
            self.drop_network(name, &after).await;
        }

        match &entry {
            None => self.forget_challenge(name).await?,
            Some(entry) => {
                // What the ops did is known; read back only when something failed, or when
                // probes need the new containers' addresses.
                let probed = entry.spec.as_ref().is_some_and(|c| c.has_healthchecks());
                let acted = after != observed;
                let observed = if first_error.is_some() || (probed && acted) {
                    self.runtime
                        .list(self.instance(), Some(name))
                        .await
                        .map_err(rt("list containers of", name))?
                } else {
                    after
                };
                self.record(entry, &specs, &observed, first_error.is_none());
                let keep = entry.spec.as_ref().map(|c| c.replicas).unwrap_or(0);
                if entry.spec.is_some() {
                    self.ports().release(name, keep);
                    self.persist_ports()?;
                }
            }
        }
        self.roll_out_to_instances(name);
        match first_error {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Marks `Valid` from the entry and works out the specs it wants (none when it is gone,
    /// undeployed, per-team, static or scaled to 0).
    async fn specs_of(
        &self,
        name: &str,
        entry: Option<&Entry>,
        observed: &[Observed],
    ) -> Result<BTreeMap<Slot, ContainerSpec>, ReconcileError> {
        let Some(entry) = entry else {
            return Ok(BTreeMap::new());
        };
        self.status.update(name, |s| {
            s.set_condition(
                "Valid",
                Some(entry.is_valid()),
                valid_reason(entry),
                &entry.errors.join("\n"),
            )
        });
        Ok(match self.wanted(entry, observed, None).await? {
            Wanted::Nothing => BTreeMap::new(),
            Wanted::Specs(specs) => specs,
        })
    }

    /// Whether corrective ops now are heals: the challenge's current generation had converged.
    /// Ops about to run put it in `Deploying`.
    fn is_healing(&self, name: &str, entry: Option<&Entry>, acting: bool) -> bool {
        let healing = entry.is_some_and(|e| {
            e.generation > 0 && self.status.observed_generation(name) == Some(e.generation)
        });
        if acting && entry.is_some() {
            self.status.update(name, |s| s.phase = Phase::Deploying);
        }
        healing
    }

    /// Counts, announces and records in the history one op carried out on `name`. While
    /// `healing`, a successful op is announced as a heal, and counted as one when it `restores`
    /// something the challenge had.
    fn report_op(
        &self,
        name: &str,
        known: bool,
        (healing, restores): (bool, bool),
        reason: &str,
        what: &str,
        result: Result<(), String>,
    ) {
        if healing && restores && result.is_ok() {
            self.counters.heals.fetch_add(1, Ordering::Relaxed);
        }
        if !known {
            return;
        }
        if healing && result.is_ok() {
            self.publish(
                Kind::Heal,
                name,
                format!("{reason}: {what}"),
                serde_json::json!({"op": what}),
            );
        }
        let (reason, warning, message) = match result {
            Ok(()) => (reason, false, what.to_string()),
            Err(err) => ("Failed", true, format!("{what}: {err}")),
        };
        self.status
            .update(name, |s| s.event(warning, reason, message));
    }

    /// Drops everything kept about a challenge that is gone: probes, builds, status, ports.
    async fn forget_challenge(&self, name: &str) -> Result<(), ReconcileError> {
        self.prober.forget(name);
        self.builder.forget(self.instance(), name).await;
        let services = self
            .service_builds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .unwrap_or_default();
        for key in services {
            self.builder.forget(self.instance(), &key).await;
        }
        self.status.remove(name);
        self.placed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        self.ports().release(name, 0);
        self.persist_ports()
    }

    /// A change of a per-team challenge rolls out to its teams' instances.
    fn roll_out_to_instances(&self, name: &str) {
        if split_key(name).is_some() {
            return;
        }
        if let Some(instances) = self.instance_book() {
            for key in instances.keys_of(name) {
                ProbeHost::poke(self, &key);
            }
        }
    }

    /// The containers `entry` wants. Resolves the image (through `images` when given, else one
    /// inspect call) and host ports; adopts ports of existing containers the table lacks.
    async fn wanted(
        &self,
        entry: &Entry,
        observed: &[Observed],
        images: Option<&PassContext>,
    ) -> Result<Wanted, ReconcileError> {
        let Some(challenge) = entry.spec.as_deref() else {
            return Ok(Wanted::Nothing);
        };
        if !entry.deployed || challenge.per_team() {
            // A per-team challenge runs only as its teams' instances.
            return Ok(Wanted::Nothing);
        }
        let Some(run) = challenge.run.as_ref() else {
            return Ok(Wanted::Nothing);
        };
        if challenge.replicas == 0 {
            return Ok(Wanted::Nothing);
        }
        let (image, image_id) = self
            .image_of(&challenge.key(), &challenge.name, &run.source, images)
            .await?;
        let reserved = match images {
            Some(pass) => std::borrow::Cow::Borrowed(&pass.reserved),
            None => std::borrow::Cow::Owned(self.store.fixed_host_ports()),
        };
        let host_ports = self.host_ports(challenge, run, observed, &reserved)?;
        let mut specs: BTreeMap<Slot, ContainerSpec> = (1..=challenge.replicas)
            .map(|replica| {
                let ports = host_ports.get(&replica).map(Vec::as_slice).unwrap_or(&[]);
                let image = Image {
                    reference: &image,
                    id: &image_id,
                };
                let spec = replica_spec(
                    self.instance(),
                    challenge,
                    run,
                    image,
                    replica,
                    ports,
                    &self.settings.defaults,
                );
                (Slot::Replica(replica), spec)
            })
            .collect();
        for service in &challenge.services {
            let key = format!("{}.{}", challenge.name, service.name);
            let (reference, id) = self
                .image_of(&challenge.key(), &key, &service.run.source, images)
                .await?;
            let image = Image {
                reference: &reference,
                id: &id,
            };
            let spec = service_spec(
                self.instance(),
                challenge,
                service,
                image,
                &self.settings.defaults,
            );
            specs.insert(Slot::Service(service.name.clone()), spec);
        }
        if self.runtime.schedules_replicas() {
            specs = as_workloads(self.instance(), challenge, specs);
        }
        Ok(Wanted::Specs(specs))
    }

    /// The image reference and id of one container's source. `key` names the build (the
    /// challenge, or `challenge.service`); status goes to challenge `name`.
    async fn image_of(
        &self,
        name: &str,
        key: &str,
        source: &ImageSource,
        images: Option<&PassContext>,
    ) -> Result<(String, String), ReconcileError> {
        match source {
            ImageSource::Image(image) => {
                let id = match images {
                    Some(pass) => pass.images.resolve(image).map(str::to_string),
                    None => self
                        .runtime
                        .image_id(image)
                        .await
                        .map_err(rt("inspect image for", name))?,
                };
                let id = id.ok_or_else(|| ReconcileError::ImageNotFound(image.clone()))?;
                Ok((image.clone(), id))
            }
            ImageSource::Build(spec) => {
                if images.is_some() {
                    return Err(ReconcileError::BuildDeferred(name.to_string()));
                }
                // A service's build (`challenge.service`) goes with its challenge; a team's
                // instance shares its challenge's builds and owns none.
                if key.starts_with(&format!("{name}.")) {
                    self.service_builds
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(name.to_string())
                        .or_default()
                        .insert(key.to_string());
                }
                self.build(name, key, spec).await
            }
        }
    }

    /// The image of a challenge built from source: the existing build of the same content, or a
    /// new one. A failed build keeps what runs (nothing is planned) and says why in `Built`.
    async fn build(
        &self,
        name: &str,
        key: &str,
        spec: &BuildSpec,
    ) -> Result<(String, String), ReconcileError> {
        let status = self.status.clone();
        let announce = || {
            status.update(name, |s| {
                s.phase = Phase::Building;
                s.set_condition("Built", None, "Building", "building the image");
            })
        };
        match self
            .builder
            .ensure_with(self.instance(), key, spec, announce)
            .await
        {
            Ok(built) => {
                let (reason, message) = if built.rebuilt {
                    ("Built", format!("built {}", built.tag))
                } else {
                    ("UpToDate", format!("{} is current", built.tag))
                };
                self.status.update(name, |s| {
                    if built.rebuilt {
                        s.event(false, "Built", message.clone());
                    }
                    s.set_condition("Built", Some(true), reason, &message);
                });
                Ok((built.tag, built.image_id))
            }
            Err(err) => {
                self.status.update(name, |s| {
                    s.set_condition("Built", Some(false), err.reason(), &err.to_string());
                    s.event(true, "BuildFailed", err.to_string());
                });
                Err(err.into())
            }
        }
    }

    /// The output of the last build of `name`.
    pub fn build_log(&self, name: &str) -> Vec<String> {
        self.builder.log(name)
    }

    /// Host ports of every replica, in `run.ports` order: fixed, or allocated and kept.
    fn host_ports(
        &self,
        challenge: &Challenge,
        run: &RunSpec,
        observed: &[Observed],
        reserved: &BTreeSet<(u16, crate::model::Protocol)>,
    ) -> Result<BTreeMap<u32, Vec<u16>>, ReconcileError> {
        let mut table = self.ports();
        let mut out = BTreeMap::new();
        for replica in 1..=challenge.replicas {
            let mut ports = Vec::with_capacity(run.ports.len());
            for p in &run.ports {
                if let Some(fixed) = p.host_port {
                    ports.push(fixed);
                    continue;
                }
                let key = PortKey {
                    challenge: challenge.key(),
                    replica,
                    port: p.port,
                    protocol: p.protocol,
                };
                if table.get(&key).is_none() {
                    // Adopt the port an existing container of this replica already publishes.
                    let existing = observed
                        .iter()
                        .filter(|o| o.replica() == Some(replica))
                        .flat_map(|o| &o.ports)
                        .find(|b| {
                            b.port == p.port
                                && b.protocol == p.protocol
                                && table.range().contains(b.host_port)
                        });
                    if let Some(binding) = existing {
                        table.adopt(key.clone(), binding.host_port);
                    }
                }
                let (port, _) = table.get_or_allocate(&key, reserved)?;
                ports.push(port);
            }
            out.insert(replica, ports);
        }
        Ok(out)
    }

    /// Carries out one op; returns the id of a container it created. `observed` is what the
    /// plan was made from (the state of the containers the ops name).
    async fn execute(
        &self,
        op: &Op,
        specs: &BTreeMap<Slot, ContainerSpec>,
        observed: &[Observed],
    ) -> Result<Option<String>, ReconcileError> {
        let spec_of = |slot: &Slot| specs.get(slot);
        let grace = self.settings.stop_grace;
        match op {
            Op::Remove { target, .. } => {
                self.expect_exit(&target.id);
                self.remove_if_there(target).await.map(|()| None)
            }
            Op::Start { target, .. } => {
                self.runtime
                    .start(&target.id)
                    .await
                    .map_err(rt("start", &target.name))?;
                Ok(None)
            }
            Op::Unpause { target, .. } => {
                self.runtime
                    .unpause(&target.id)
                    .await
                    .map_err(rt("unpause", &target.name))?;
                Ok(None)
            }
            Op::Create { slot } => {
                let Some(spec) = spec_of(slot) else {
                    return Ok(None);
                };
                self.create_and_start(spec).await.map(Some)
            }
            Op::Replace { slot, old, .. } => {
                let Some(spec) = spec_of(slot) else {
                    return Ok(None);
                };
                self.expect_exit(&old.id);
                let serving = observed.iter().find(|o| o.id == old.id).is_some_and(|o| {
                    matches!(o.state, ContainerState::Running | ContainerState::Paused)
                });
                if !serving {
                    // Crash-looping (in the engine's restart delay), exited or dead: it serves
                    // nobody, so there is nothing to roll back to. Remove it, then create.
                    self.remove_if_there(old).await?;
                    return self.create_and_start(spec).await.map(Some);
                }
                // Stop the old one first (it may bind the same host ports; a stop also ends a
                // restart delay the engine may have put it in since the list), then park it
                // under another name: the new container reuses the name.
                match self.runtime.stop(&old.id, grace).await {
                    Ok(()) => {}
                    Err(RuntimeError::NotFound(_)) => {
                        // Removed meanwhile (from outside): nothing to park or roll back to.
                        return self.create_and_start(spec).await.map(Some);
                    }
                    Err(source) => {
                        let _ = self.runtime.start(&old.id).await;
                        return Err(ReconcileError::Runtime {
                            action: "stop",
                            name: old.name.clone(),
                            source,
                        });
                    }
                }
                let parked = format!("{}_replaced_{}", old.name, &old.id[..old.id.len().min(12)]);
                if let Err(err) = self.runtime.rename(&old.id, &parked).await {
                    // It is stopped and cannot be parked: it serves nobody now, so remove it
                    // rather than fail the replace (the new version is wanted anyway).
                    tracing::debug!(container = %old.name, error = %err, "could not park the old container; removing it");
                    self.remove_if_there(old).await?;
                    return self.create_and_start(spec).await.map(Some);
                }
                match self.create_and_start(spec).await {
                    Ok(id) => {
                        if let Err(err) = self.remove_if_there(old).await {
                            // The new one serves; the parked one is a duplicate of its replica
                            // and the next pass removes it.
                            tracing::warn!(container = %parked, error = %err, "could not remove the replaced container");
                        }
                        Ok(Some(id))
                    }
                    Err(err) => {
                        // Roll back: the old version keeps serving until the new one can.
                        if let Ok(list) = self.runtime.list(self.instance(), None).await {
                            if let Some(new) = list.iter().find(|o| o.name == spec.name) {
                                let _ = self.runtime.remove(&new.id).await;
                            }
                        }
                        let _ = self.runtime.rename(&old.id, &old.name).await;
                        let _ = self.runtime.start(&old.id).await;
                        self.forget_expected(&old.id);
                        Err(err)
                    }
                }
            }
        }
    }

    /// Removes a container; one already gone (removed from outside meanwhile) is no error.
    async fn remove_if_there(&self, target: &Target) -> Result<(), ReconcileError> {
        match self.runtime.remove(&target.id).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => Ok(()),
            Err(source) => Err(ReconcileError::Runtime {
                action: "remove",
                name: target.name.clone(),
                source,
            }),
        }
    }

    async fn create_and_start(&self, spec: &ContainerSpec) -> Result<String, ReconcileError> {
        let id = self
            .runtime
            .create(spec)
            .await
            .map_err(rt("create", &spec.name))?;
        for file in &spec.files {
            // The path only: the content is a flag.
            if let Err(source) = self
                .runtime
                .put_file(&id, &file.path, file.content.as_bytes())
                .await
            {
                self.expect_exit(&id);
                let _ = self.runtime.remove(&id).await;
                return Err(ReconcileError::Runtime {
                    action: "write a file into",
                    name: format!("{} ({})", spec.name, file.path),
                    source,
                });
            }
        }
        if let Err(source) = self.runtime.start(&id).await {
            // A container that cannot start (e.g. its host port is taken) must not linger half-made.
            self.expect_exit(&id);
            let _ = self.runtime.remove(&id).await;
            if let Some(port) = port_in_use(&source) {
                return Err(ReconcileError::HostPortInUse {
                    name: spec.name.clone(),
                    port,
                });
            }
            return Err(ReconcileError::Runtime {
                action: "start",
                name: spec.name.clone(),
                source,
            });
        }
        Ok(id)
    }

    /// Writes the status of `entry` from the containers now observed.
    fn record(
        &self,
        entry: &Entry,
        specs: &BTreeMap<Slot, ContainerSpec>,
        observed: &[Observed],
        clean: bool,
    ) {
        let serving: Vec<&Observed> = observed
            .iter()
            .filter(|o| Slot::of(o).is_some_and(|slot| specs.contains_key(&slot)))
            .collect();
        let mut containers: Vec<ContainerStatus> =
            serving.iter().map(|o| container_status(o)).collect();
        containers.sort_by(|a, b| {
            (a.service.is_none(), a.replica, &a.name).cmp(&(
                b.service.is_none(),
                b.replica,
                &b.name,
            ))
        });
        let replicas = || specs.iter().filter(|(slot, _)| slot.replica().is_some());
        let wanted = replicas().count();
        let current = replicas()
            .filter(|(slot, spec)| {
                observed.iter().any(|o| {
                    Slot::of(o).as_ref() == Some(*slot)
                        && o.spec_hash() == Some(hash_of(spec))
                        && o.state == ContainerState::Running
                })
            })
            .count();
        let challenge = entry.spec.as_deref();
        let is_static = challenge.is_some_and(|c| c.run.is_none());
        // Where the engine places replicas, it also runs their healthchecks (beast cannot
        // reach a task on another node's overlay).
        let beast_probes = !self.runtime.schedules_replicas();
        let probed: Vec<(Observed, Healthcheck)> = serving
            .iter()
            .filter(|_| beast_probes)
            .filter_map(|o| {
                let hc = healthcheck_of(challenge?, &Slot::of(o)?)?;
                Some(((*o).clone(), hc.clone()))
            })
            .collect();
        let has_checks = challenge.is_some_and(Challenge::has_healthchecks);
        if let Some(me) = self.me.upgrade() {
            self.prober.sync(&me, &entry.name, &probed);
        }
        let wants = wants_of(specs, challenge);
        let waiting = waiting_for(&wants, &self.healthy_services(&entry.name, observed, specs));
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let before = self.status.phase(&entry.name);
        self.record_status(
            entry,
            containers,
            has_checks,
            Counts {
                current,
                wanted,
                waiting,
            },
            is_static,
            clean,
            now,
        );
        self.announce_phase(&entry.name, before, entry.generation);
    }

    /// The services of `name` whose current container runs and passes its probe.
    fn healthy_services(
        &self,
        name: &str,
        observed: &[Observed],
        specs: &BTreeMap<Slot, ContainerSpec>,
    ) -> BTreeSet<String> {
        let passing = self.status.healthy_ids(name);
        // A task with a healthcheck runs only once it passes it (the engine probes it).
        let engine_probed = self.runtime.schedules_replicas();
        observed
            .iter()
            .filter(|o| o.state == ContainerState::Running)
            .filter(|o| {
                passing.contains(&o.id) || (engine_probed && o.status.contains("(healthy)"))
            })
            .filter_map(|o| {
                let slot = Slot::of(o)?;
                let spec = specs.get(&slot)?;
                match slot {
                    Slot::Service(service) if o.spec_hash() == Some(hash_of(spec)) => Some(service),
                    _ => None,
                }
            })
            .collect()
    }

    /// The status part of [`Reconciler::record`].
    #[allow(clippy::too_many_arguments)]
    fn record_status(
        &self,
        entry: &Entry,
        mut containers: Vec<ContainerStatus>,
        probed: bool,
        counts: Counts,
        is_static: bool,
        clean: bool,
        now: i64,
    ) {
        let Counts {
            current,
            wanted,
            waiting,
        } = counts;
        self.status.update(&entry.name, |s| {
            for c in containers.iter_mut() {
                if let Some(h) = s.health.get(&c.id) {
                    c.health = h.clone();
                }
            }
            let verdicts: Vec<&str> = containers.iter().map(|c| c.health.as_str()).collect();
            let healthy = if !probed {
                (Some(true), "NoHealthcheck", String::new())
            } else if verdicts.contains(&"unhealthy") {
                (Some(false), "ProbeFailing", "a container fails its health probe".to_string())
            } else if !verdicts.is_empty() && verdicts.iter().all(|h| *h == "healthy") {
                (Some(true), "ProbesPassing", format!("{} container(s) pass their probe", verdicts.len()))
            } else {
                (None, "Probing", "waiting for the first probe results".to_string())
            };
            s.set_condition("Healthy", healthy.0, healthy.1, &healthy.2);
            let unhealthy = healthy.0 == Some(false);
            s.containers = containers;
            s.set_condition("Valid", Some(entry.is_valid()), valid_reason(entry), &entry.errors.join("\n"));
            if entry.spec.is_none() {
                s.phase = Phase::Pending;
                s.set_condition("Ready", Some(false), "NeverValid", "no valid manifest has been seen yet");
                return;
            }
            if !entry.deployed {
                s.phase = Phase::Stopped;
                s.set_condition("Ready", Some(false), "Undeployed", "undeployed through the API");
                s.observed_generation = entry.generation;
                return;
            }
            if wanted == 0 {
                let per_team = entry.spec.as_ref().is_some_and(|c| c.per_team());
                let idle = is_static || per_team;
                s.phase = if idle { Phase::Running } else { Phase::Stopped };
                let (reason, msg) = if per_team {
                    ("PerTeam", "runs only as per-team instances, started on demand (GET /api/v1/instances)")
                } else if is_static {
                    ("Static", "static challenge: nothing to run")
                } else {
                    ("ScaledToZero", "spec.replicas is 0")
                };
                s.set_condition("Ready", Some(idle), reason, msg);
                s.observed_generation = entry.generation;
                return;
            }
            s.start_generation(entry.generation);
            if let Some(failed) = s.crash_loop(now) {
                let exits = s.recent_exits.len();
                let rate = s.restart_rate(now);
                s.phase = if failed { Phase::Failed } else { Phase::Degraded };
                let msg = format!(
                    "{exits} crashes in the last 10 minutes ({rate:.1}/min); the engine restarts it with a growing delay (up to 1 minute)"
                );
                s.set_condition("Ready", Some(current == wanted), "CrashLoopBackOff", &msg);
                if clean {
                    s.observed_generation = entry.generation;
                }
            } else if current == wanted {
                s.phase = if unhealthy { Phase::Degraded } else { Phase::Running };
                s.set_condition("Ready", Some(true), "AllReplicasRunning", &format!("{current}/{wanted} replicas running"));
                if clean {
                    s.observed_generation = entry.generation;
                }
            } else if !waiting.is_empty() {
                s.phase = if current > 0 { Phase::Degraded } else { Phase::Deploying };
                let msg = format!(
                    "{current}/{wanted} replicas running; waiting for service(s) {} to pass their healthcheck",
                    waiting.join(", ")
                );
                s.set_condition("Ready", Some(false), "WaitingForServices", &msg);
            } else {
                s.phase = if current > 0 { Phase::Degraded } else { Phase::Deploying };
                s.set_condition("Ready", Some(false), "ReplicasNotRunning", &format!("{current}/{wanted} replicas running"));
            }
        });
    }

    /// The resync pass: one list call for all containers and one for images, then a pure plan
    /// of every challenge. Returns the names that need a worker (including orphans). Status of
    /// converged challenges is refreshed from the same list.
    pub async fn resync(&self) -> Result<Vec<String>, RuntimeError> {
        let listed = self.runtime.list(self.instance(), None).await;
        self.readiness
            .engine_up
            .store(listed.is_ok(), Ordering::Relaxed);
        let observed = listed?;
        let pass = PassContext {
            images: self.runtime.images().await?,
            reserved: self.store.fixed_host_ports(),
        };
        let mut by_challenge: BTreeMap<String, Vec<Observed>> = BTreeMap::new();
        for o in &observed {
            if let Some(c) = o.key() {
                by_challenge.entry(c).or_default().push(o.clone());
            }
        }
        let mut wants = BTreeMap::new();
        let mut healthy = BTreeMap::new();
        let mut needs_work = BTreeSet::new();
        let mut specs_of = BTreeMap::new();
        let entries = self.snapshot();
        for entry in &entries {
            let mine = by_challenge
                .get(entry.name.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            match self.wanted(entry, mine, Some(&pass)).await {
                Ok(Wanted::Nothing) => {
                    wants.insert(entry.name.clone(), Vec::new());
                }
                Ok(Wanted::Specs(specs)) => {
                    let w = wants_of(&specs, entry.spec.as_deref());
                    wants.insert(entry.name.clone(), w);
                    healthy.insert(
                        entry.name.clone(),
                        self.healthy_services(&entry.name, mine, &specs),
                    );
                    specs_of.insert(entry.name.clone(), specs);
                }
                Err(_) => {
                    needs_work.insert(entry.name.clone());
                }
            }
            let reported_valid = self.status.valid(&entry.name);
            if reported_valid != Some(entry.is_valid()) {
                needs_work.insert(entry.name.clone());
            }
        }
        let plan = plan_all(self.instance(), &wants, &observed, &healthy);
        self.sync_networks(&specs_of, &entries, &observed).await;
        if let Err(err) = self.persist_ports() {
            tracing::warn!(error = %err, "could not save the port table");
        }
        needs_work.extend(plan.keys().filter(|k| !k.is_empty()).cloned());
        if let Some(debris) = plan.get("") {
            for op in debris {
                if let Op::Remove { target, .. } = op {
                    let _ = self.runtime.remove(&target.id).await;
                }
            }
        }
        for entry in &entries {
            if needs_work.contains(&entry.name) {
                continue;
            }
            let mine = by_challenge
                .get(entry.name.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let empty = BTreeMap::new();
            let specs = specs_of.get(&entry.name).unwrap_or(&empty);
            self.record(entry, specs, mine, true);
        }
        Ok(needs_work.into_iter().collect())
    }

    /// The dry run of `beast plan`: every challenge with its ops, without executing any.
    pub async fn dry_run(&self) -> Result<BTreeMap<String, Result<Vec<Op>, String>>, RuntimeError> {
        let observed = self.runtime.list(self.instance(), None).await?;
        let pass = PassContext {
            images: self.runtime.images().await?,
            reserved: self.store.fixed_host_ports(),
        };
        let mut out = BTreeMap::new();
        let mut wants = BTreeMap::new();
        let mut healthy = BTreeMap::new();
        for entry in self.snapshot() {
            let mine: Vec<Observed> = observed
                .iter()
                .filter(|o| o.key().as_deref() == Some(entry.name.as_str()))
                .cloned()
                .collect();
            match self.wanted(&entry, &mine, Some(&pass)).await {
                Ok(Wanted::Nothing) => {
                    wants.insert(entry.name.clone(), Vec::new());
                }
                Ok(Wanted::Specs(specs)) => {
                    let w = wants_of(&specs, entry.spec.as_deref());
                    healthy.insert(
                        entry.name.clone(),
                        self.healthy_services(&entry.name, &mine, &specs),
                    );
                    wants.insert(entry.name.clone(), w);
                }
                Err(err) => {
                    out.insert(entry.name.clone(), Err(err.to_string()));
                }
            }
        }
        for (name, ops) in plan_all(self.instance(), &wants, &observed, &healthy) {
            out.entry(name).or_insert(Ok(ops));
        }
        Ok(out)
    }

    /// The wanted spec of one container, for explaining a replace in `beast plan`.
    pub async fn wanted_spec(&self, name: &str, slot: &Slot) -> Option<ContainerSpec> {
        let entry = self.entry(name)?;
        let observed = self.runtime.list(self.instance(), Some(name)).await.ok()?;
        match self.wanted(&entry, &observed, None).await.ok()? {
            Wanted::Specs(mut specs) => specs.remove(slot),
            Wanted::Nothing => None,
        }
    }
}

fn container_status(o: &Observed) -> ContainerStatus {
    let health = if o.status.contains("(healthy)") {
        "healthy"
    } else if o.status.contains("(unhealthy)") {
        "unhealthy"
    } else if o.status.contains("(health: starting)") {
        "starting"
    } else {
        "none"
    };
    ContainerStatus {
        name: o.name.clone(),
        id: o.id.clone(),
        replica: o.replica().unwrap_or(0),
        service: o.service().map(str::to_string),
        state: o.state.as_str().to_string(),
        health: health.to_string(),
        ports: o.ports.clone(),
        node: o.node.clone(),
    }
}

/// The host port named by the engine's "address already in use" / "port is already allocated".
fn port_in_use(err: &RuntimeError) -> Option<String> {
    let RuntimeError::Engine { message, .. } = err else {
        return None;
    };
    if !(message.contains("address already in use")
        || message.contains("port is already allocated"))
    {
        return None;
    }
    // "... listen tcp4 0.0.0.0:31337: bind: address already in use" or "Bind for 0.0.0.0:31337 failed"
    let port = message
        .split(char::is_whitespace)
        .filter_map(|w| w.trim_end_matches(':').rsplit(':').next())
        .find(|p| p.parse::<u16>().is_ok())
        .unwrap_or("?");
    Some(port.to_string())
}

/// The history reason of a successful op.
fn op_reason(op: &Op, healing: bool) -> &'static str {
    match (op, healing) {
        (Op::Create { .. }, true) => "Recreated",
        (Op::Create { .. }, false) => "Created",
        (Op::Replace { .. }, _) => "Replaced",
        (Op::Start { .. }, _) => "Started",
        (Op::Unpause { .. }, _) => "Unpaused",
        (Op::Remove { .. }, _) => "Removed",
    }
}

impl<R: Runtime> ProbeHost for Reconciler<R> {
    type R = R;
    fn runtime(&self) -> &Arc<R> {
        &self.runtime
    }
    fn instance(&self) -> &str {
        &self.settings.instance
    }
    fn status(&self) -> &StatusBoard {
        &self.status
    }
    fn expect(&self, id: &str) {
        Reconciler::expect(self, id, Expected::Probe);
    }
    fn announce_restart(&self, challenge: &str, container: &str, message: &str) {
        self.counters.heals.fetch_add(1, Ordering::Relaxed);
        self.publish(
            Kind::Heal,
            challenge,
            message.to_string(),
            serde_json::json!({"container": container, "action": "probe-restart"}),
        );
    }
    fn poke(&self, challenge: &str) {
        if let Some(queue) = self
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            queue.add(challenge.to_string());
        }
    }
}

/// What the planner needs of the wanted specs: each container with its hash, and which
/// services gate the replicas (those with a healthcheck).
fn wants_of(specs: &BTreeMap<Slot, ContainerSpec>, challenge: Option<&Challenge>) -> Vec<Want> {
    specs
        .iter()
        .map(|(slot, s)| Want {
            slot: slot.clone(),
            hash: hash_of(s).to_string(),
            gates: matches!(slot, Slot::Service(_))
                && challenge.is_some_and(|c| healthcheck_of(c, slot).is_some()),
        })
        .collect()
}

/// The healthcheck of one container of `challenge`.
fn healthcheck_of<'a>(challenge: &'a Challenge, slot: &Slot) -> Option<&'a Healthcheck> {
    match slot {
        Slot::Replica(_) => challenge.run.as_ref()?.healthcheck.as_ref(),
        Slot::Service(name) => challenge
            .services
            .iter()
            .find(|s| &s.name == name)?
            .run
            .healthcheck
            .as_ref(),
    }
}

/// Replica counts for the status, and the services the replicas wait for.
struct Counts {
    current: usize,
    wanted: usize,
    waiting: Vec<String>,
}

/// The ops of a redeploy: every wanted container is recreated (planned against a hash no
/// container carries), services and replicas together, whatever else the plan says.
fn redeploy_ops(instance: &str, wants: &[Want], observed: &[&Observed]) -> Vec<Op> {
    let forced: Vec<Want> = wants
        .iter()
        .map(|w| Want {
            hash: String::new(),
            gates: false,
            ..w.clone()
        })
        .collect();
    plan_challenge(instance, &forced, observed, &BTreeSet::new())
        .into_iter()
        .map(|op| match op {
            Op::Replace {
                slot,
                old,
                why: Why::SpecChanged { .. },
            } => Op::Replace {
                slot,
                old,
                why: Why::Redeploy,
            },
            other => other,
        })
        .collect()
}

/// Updates the observed containers with the effect of a successful op.
fn apply_effect(
    after: &mut Vec<Observed>,
    op: &Op,
    created: Option<String>,
    specs: &BTreeMap<Slot, ContainerSpec>,
) {
    match op {
        Op::Remove { target, .. } | Op::Replace { old: target, .. } => {
            after.retain(|o| o.id != target.id)
        }
        Op::Start { target, .. } | Op::Unpause { target, .. } => {
            for o in after.iter_mut().filter(|o| o.id == target.id) {
                o.state = ContainerState::Running;
            }
        }
        Op::Create { .. } => {}
    }
    if let (Some(id), Some(spec)) = (created, op.slot().and_then(|slot| specs.get(slot))) {
        after.push(Observed {
            id,
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            state: ContainerState::Running,
            status: "Up".to_string(),
            ports: spec.ports.clone(),
            created: time::OffsetDateTime::now_utc().unix_timestamp(),
            ip: None,
            node: None,
        });
    }
}

/// What a pass reads once for all challenges.
struct PassContext {
    images: ImageIndex,
    reserved: BTreeSet<(u16, crate::model::Protocol)>,
}

/// One line describing an op, for logs and `beast plan`.
pub fn describe(op: &Op) -> String {
    match op {
        Op::Remove { target, why } => format!("remove {} ({why})", target.name),
        Op::Replace { slot, old, why } => {
            format!("replace {slot}: {} ({why})", old.name)
        }
        Op::Unpause { target, .. } => format!("unpause {} (paused)", target.name),
        Op::Start { target, .. } => format!("start {} (not running)", target.name),
        Op::Create { slot } => format!("create {slot} (missing)"),
    }
}
