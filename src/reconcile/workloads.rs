//! The reconcile pass on an engine that places replicas itself (Swarm, SPEC §9).
//!
//! The same desired state, ports, network, egress, status and history as the container pass;
//! only the unit handed to the engine differs: one workload for the main containers (with
//! `replicas`) and one per service, planned by [`plan_workloads`]. The engine replaces failed
//! replicas itself; beast acts where it does not (a workload removed by hand, a spec that
//! drifted, a redeploy) and reports what it did (restarts and moves, from the task list).

use super::*;
use crate::containers::{engine_healthcheck, workload_name};
use crate::plan::workloads::{plan_workloads, WorkloadOp, WorkloadWant};
use crate::runtime::{ObservedWorkload, WorkloadSpec};

impl<R: Runtime> Reconciler<R> {
    pub(super) async fn reconcile_workloads(&self, name: &str) -> Result<(), ReconcileError> {
        let entry = self.entry(name);
        let (listed, observed) = self
            .runtime
            .workloads(self.instance(), Some(name))
            .await
            .map_err(rt("list services and tasks of", name))?;
        let specs = self.specs_of(name, entry.as_ref(), &observed).await?;
        let challenge = entry.as_ref().and_then(|e| e.spec.clone());
        let redeploy = self.take_redeploy(name);
        let workloads = match (&challenge, specs.is_empty()) {
            (Some(challenge), false) => {
                self.workloads_of(challenge, &specs, &listed, redeploy)
                    .await?
            }
            _ => Vec::new(),
        };
        let wants: Vec<WorkloadWant> = workloads
            .iter()
            .map(|w| WorkloadWant {
                name: w.name.clone(),
                hash: hash_of(&w.container).to_string(),
                replicas: w.replicas,
                force: w.force,
                service: w
                    .container
                    .labels
                    .contains_key(crate::runtime::LABEL_SERVICE),
            })
            .collect();
        let healthy = self.healthy_services(name, &observed, &specs);
        let ready = waiting_for(&wants_of(&specs, challenge.as_deref()), &healthy).is_empty();
        let ops = plan_workloads(self.instance(), &wants, &listed, ready);
        self.persist_ports()?;
        if let (Some(challenge), false) = (&challenge, specs.is_empty()) {
            let net = self.ensure_network(challenge).await?;
            self.apply_egress(challenge, &net).await?;
        }
        let healing = self.is_healing(name, entry.as_ref(), !ops.is_empty());
        let mut first_error = None;
        for op in &ops {
            tracing::info!(challenge = %name, op = %op, "applying");
            let result = self.execute_workload(op, &workloads, &listed).await;
            let (reason, restores) = match op {
                WorkloadOp::Create { .. } if healing => ("Recreated", true),
                WorkloadOp::Create { .. } => ("Created", false),
                WorkloadOp::Update { .. } => ("Updated", false),
                WorkloadOp::Remove { .. } => ("Removed", false),
            };
            let done = result.as_ref().map_err(ToString::to_string).copied();
            let what = op.to_string();
            self.report_op(
                name,
                entry.is_some(),
                (healing, restores),
                reason,
                &what,
                done,
            );
            if let Err(err) = result {
                tracing::warn!(challenge = %name, error = %err, "operation failed");
                self.forget_network(name);
                first_error.get_or_insert(err);
            }
        }
        if specs.is_empty() && first_error.is_none() {
            // The removed workloads' tasks leave the overlay on their own; until they have,
            // the network stays and a later pass (or the resync) removes it.
            self.drop_network(name, &[]).await;
        }
        match &entry {
            None => self.forget_challenge(name).await?,
            Some(entry) => {
                let observed = if ops.is_empty() {
                    observed
                } else {
                    self.runtime
                        .list(self.instance(), Some(name))
                        .await
                        .map_err(rt("list tasks of", name))?
                };
                self.note_moves(name, &observed);
                self.record(entry, &specs, &observed, first_error.is_none());
                if let Some(c) = entry.spec.as_ref() {
                    self.ports().release(name, c.replicas);
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

    /// The workloads `challenge` wants, from its specs (shaped by [`as_workloads`]): the main
    /// one with `replicas`, one per service. Images built here are handed to the engine to
    /// distribute first (pushed to the registry). A redeploy bumps every workload's force
    /// counter past the one listed.
    async fn workloads_of(
        &self,
        challenge: &Challenge,
        specs: &BTreeMap<Slot, ContainerSpec>,
        listed: &[ObservedWorkload],
        redeploy: bool,
    ) -> Result<Vec<WorkloadSpec>, ReconcileError> {
        let key = challenge.key();
        let mut out = Vec::new();
        let mut add =
            |name: String, container: ContainerSpec, replicas, hc: Option<&Healthcheck>| {
                let before = listed.iter().find(|w| w.name == name).map(|w| w.force);
                let force = before.unwrap_or(0) + u64::from(redeploy);
                out.push(WorkloadSpec {
                    name,
                    container,
                    replicas,
                    constraints: challenge.placement.clone(),
                    healthcheck: hc.map(engine_healthcheck),
                    force,
                });
            };
        let Some(run) = challenge.run.as_ref() else {
            return Ok(Vec::new());
        };
        if let Some(main) = specs.get(&Slot::Replica(1)) {
            let mut main = main.clone();
            if matches!(run.source, ImageSource::Build(_)) {
                main.image = self.distribute(&challenge.name, &main).await?;
            }
            let name = workload_name(self.instance(), &key, None);
            add(name, main, challenge.replicas, run.healthcheck.as_ref());
        }
        for service in &challenge.services {
            let Some(spec) = specs.get(&Slot::Service(service.name.clone())) else {
                continue;
            };
            let mut spec = spec.clone();
            if matches!(service.run.source, ImageSource::Build(_)) {
                spec.image = self.distribute(&challenge.name, &spec).await?;
            }
            let name = workload_name(self.instance(), &key, Some(&service.name));
            add(name, spec, 1, service.run.healthcheck.as_ref());
        }
        Ok(out)
    }

    /// The reference every node can pull a built image by (once per image id).
    async fn distribute(&self, name: &str, spec: &ContainerSpec) -> Result<String, ReconcileError> {
        if let Some(done) = self.distributed().get(&spec.image_id) {
            return Ok(done.clone());
        }
        let reference = self
            .runtime
            .distribute(&spec.image)
            .await
            .map_err(|source| ReconcileError::Runtime {
                action: "distribute the image of",
                name: name.to_string(),
                source,
            })?;
        if reference != spec.image {
            self.status.update(name, |s| {
                s.event(
                    false,
                    "Pushed",
                    format!("pushed {} as {reference}", spec.image),
                )
            });
        }
        self.distributed()
            .insert(spec.image_id.clone(), reference.clone());
        Ok(reference)
    }

    fn distributed(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.distributed.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn execute_workload(
        &self,
        op: &WorkloadOp,
        wanted: &[WorkloadSpec],
        listed: &[ObservedWorkload],
    ) -> Result<(), ReconcileError> {
        let spec = || wanted.iter().find(|w| w.name == op.name());
        let fail = |action: &'static str| {
            let name = op.name().to_string();
            move |source| ReconcileError::Runtime {
                action,
                name,
                source,
            }
        };
        match op {
            WorkloadOp::Create { .. } => {
                let Some(spec) = spec() else { return Ok(()) };
                self.runtime
                    .put_workload(spec, None)
                    .await
                    .map_err(fail("create service"))?;
            }
            WorkloadOp::Update { id, .. } => {
                let Some(spec) = spec() else { return Ok(()) };
                let existing = listed.iter().find(|w| &w.id == id);
                self.runtime
                    .put_workload(spec, existing)
                    .await
                    .map_err(fail("update service"))?;
            }
            WorkloadOp::Remove { id, .. } => {
                self.runtime
                    .remove_workload(id)
                    .await
                    .map_err(fail("remove service"))?;
            }
        }
        Ok(())
    }

    /// Says so in the history when a replica now runs on another node than where it last ran
    /// (the engine moved it, e.g. off a node that went down).
    fn note_moves(&self, name: &str, observed: &[Observed]) {
        let running: Vec<(String, String)> = observed
            .iter()
            .filter(|o| o.state == ContainerState::Running)
            .filter_map(|o| Some((Slot::of(o)?.to_string(), o.node.clone()?)))
            .collect();
        let moves: Vec<(String, String, String)> = {
            let mut placed = self.placed.lock().unwrap_or_else(|p| p.into_inner());
            let last = placed.entry(name.to_string()).or_default();
            running
                .into_iter()
                .filter_map(|(slot, node)| {
                    let old = last.insert(slot.clone(), node.clone())?;
                    (old != node).then_some((slot, old, node))
                })
                .collect()
        };
        for (slot, old, node) in moves {
            let message = format!("{slot} moved from node {old} to {node}");
            self.status
                .update(name, |s| s.event(true, "Rescheduled", message.clone()));
            self.publish(
                Kind::Heal,
                name,
                message,
                serde_json::json!({"from": old, "to": node}),
            );
        }
    }
}
