//! A challenge's own bridge network and its egress rules, as the reconciler keeps them: the
//! network exists (with rules in place when egress is off) before any container joins it, and
//! goes once the challenge runs nothing. The resync pass adopts networks after a restart,
//! removes orphans of this instance, and puts back rules someone flushed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::containers::{network_name, owner_labels};
use crate::desired::Entry;
use crate::egress::Egress;
use crate::model::Challenge;
use crate::plan::Slot;
use crate::runtime::{
    key_of, ContainerSpec, NetworkSpec, Observed, ObservedNetwork, Runtime, RuntimeError,
    LABEL_INSTANCE,
};
use crate::status::NetworkStatus;

use super::{ReconcileError, Reconciler};

/// A network known to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NetState {
    pub id: String,
    pub subnet: String,
}

/// How many subnets beast tries when others take them first.
const ATTEMPTS: usize = 8;

/// Why egress cannot be enforced on Swarm.
const SWARM_EGRESS: &str = "on Swarm a task's outbound traffic leaves through the docker_gwbridge of whichever node runs it, out of reach of beast's rules on this host (an internal overlay would block it, but also the published ports)";

fn net_error(name: &str, message: impl Into<String>) -> ReconcileError {
    ReconcileError::Network {
        name: name.to_string(),
        message: message.into(),
    }
}

/// A network of the wanted name as listed: with its subnet, or without one (by id).
enum Found {
    Usable(NetState),
    Unallocated(String),
}

fn state_of(n: &ObservedNetwork) -> Option<NetState> {
    Some(NetState {
        id: n.id.clone(),
        subnet: n.subnet.clone()?,
    })
}

impl<R: Runtime> Reconciler<R> {
    fn nets(&self) -> std::sync::MutexGuard<'_, HashMap<String, NetState>> {
        self.nets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn blocked(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.blocked.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn egress_mechanism(&self) -> Option<Arc<Egress>> {
        self.egress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The egress mechanism when beast can enforce `egress: false` with it, else why not. Never
    /// on Swarm ([`SWARM_EGRESS`]): rules on this host would not reach the nodes, and would hit
    /// whatever bridge here holds an overlay's subnet.
    fn usable_egress(&self) -> Result<Arc<Egress>, String> {
        if self.runtime.schedules_replicas() {
            return Err(SWARM_EGRESS.to_string());
        }
        match self.egress_mechanism() {
            Some(m) => m.available().map(|()| m),
            None => Err("egress control is not set up in this process".to_string()),
        }
    }

    /// Forgets what is known of `challenge`'s network (it may have been removed from outside).
    pub(super) fn forget_network(&self, challenge: &str) {
        self.nets().remove(challenge);
    }

    /// The network of `challenge`: known, found on the engine (adopted), or created in a free
    /// block of the pool.
    pub(super) async fn ensure_network(
        &self,
        spec: &Challenge,
    ) -> Result<NetState, ReconcileError> {
        let key = spec.key();
        let challenge = key.as_str();
        if let Some(known) = self.nets().get(challenge).cloned() {
            return Ok(known);
        }
        let name = network_name(self.instance(), challenge);
        let _one_at_a_time = self.net_lock.lock().await;
        for attempt in 0..ATTEMPTS {
            match self.find_network(&name).await? {
                Some(Found::Usable(found)) => {
                    self.nets().insert(challenge.to_string(), found.clone());
                    return Ok(found);
                }
                Some(Found::Unallocated(id)) => {
                    // A swarm accepts an overlay and allocates its subnet afterwards; one whose
                    // allocation failed has none and never will: make it anew.
                    tracing::warn!(network = %name, "network has no subnet (its allocation failed); recreating it");
                    let _ = self.runtime.remove_network(&id).await;
                }
                None => {}
            }
            let mut in_use = self
                .runtime
                .subnets_in_use()
                .await
                .map_err(|e| net_error(&name, e.to_string()))?;
            // What this process handed out counts even before the engine lists it (a swarm
            // shows an overlay's subnet only once it has allocated it).
            in_use.extend(self.nets().values().map(|n| n.subnet.clone()));
            let Some((subnet, gateway)) = self.settings.pool.choose(&in_use, 0) else {
                return Err(net_error(
                    &name,
                    format!(
                        "the network pool is full ({} networks); widen --network-pool",
                        self.settings.pool.capacity()
                    ),
                ));
            };
            let spec = NetworkSpec {
                name: name.clone(),
                labels: owner_labels(self.instance(), spec)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                subnet: subnet.clone(),
                gateway,
            };
            match self.runtime.create_network(&spec).await {
                Ok(id) => {
                    tracing::info!(%challenge, network = %name, %subnet, "network created");
                    let state = NetState { id, subnet };
                    self.nets().insert(challenge.to_string(), state.clone());
                    return Ok(state);
                }
                // Someone else took the subnet (another operator) or made the network
                // meanwhile: look again.
                Err(RuntimeError::Conflict(message)) => {
                    tracing::debug!(network = %name, attempt, %message, "network create raced; retrying");
                }
                Err(e) => return Err(net_error(&name, e.to_string())),
            }
        }
        Err(net_error(
            &name,
            format!("could not create it after {ATTEMPTS} attempts (subnets keep being taken)"),
        ))
    }

    async fn find_network(&self, name: &str) -> Result<Option<Found>, ReconcileError> {
        let listed = self
            .runtime
            .networks(self.instance())
            .await
            .map_err(|e| net_error(name, e.to_string()))?;
        Ok(listed
            .iter()
            .find(|n| n.name == name)
            .map(|n| match state_of(n) {
                Some(state) => Found::Usable(state),
                None => Found::Unallocated(n.id.clone()),
            }))
    }

    /// Puts the egress rules of `challenge` in place (or takes them away when egress is on),
    /// and reports the policy in the status. An unavailable mechanism is reported, never
    /// silent; a failure to set rules stops the reconcile before any container runs open.
    pub(super) async fn apply_egress(
        &self,
        challenge: &Challenge,
        net: &NetState,
    ) -> Result<(), ReconcileError> {
        let key = challenge.key();
        let name = key.as_str();
        let egress = challenge
            .network
            .egress
            .unwrap_or(self.settings.default_egress);
        let mechanism = self.egress_mechanism();
        let usable = self.usable_egress();
        let in_place = self.blocked().get(name).cloned();
        let (ok, reason, message) = match (egress, usable) {
            (true, _) => {
                if let (Some(m), Some(_)) = (&mechanism, in_place) {
                    m.allow(name).await?;
                    self.blocked().remove(name);
                }
                (true, "Allowed", "egress allowed by spec.network.egress".to_string())
            }
            (false, Ok(m)) => {
                if in_place.as_deref() != Some(net.subnet.as_str()) {
                    m.block(name, &net.subnet).await?;
                    self.blocked().insert(name.to_string(), net.subnet.clone());
                }
                let message = format!("new outbound connections from {} are refused", net.subnet);
                (true, "Blocked", message)
            }
            (false, Err(why)) => (
                false,
                "Unenforced",
                format!("spec.network.egress is false but beast cannot enforce it: {why}; the challenge's containers CAN open outbound connections"),
            ),
        };
        let network = NetworkStatus {
            name: network_name(self.instance(), name),
            subnet: net.subnet.clone(),
            egress,
            enforced: ok,
        };
        self.status.update(name, |s| {
            s.set_condition("EgressPolicy", Some(ok), reason, &message);
            s.network = Some(network);
        });
        Ok(())
    }

    /// Removes `challenge`'s network and rules once none of its containers is left in `after`
    /// (what the reconcile left). A network still in use stays for the next pass.
    pub(super) async fn drop_network(&self, challenge: &str, after: &[Observed]) {
        if after.iter().any(|o| o.key().as_deref() == Some(challenge)) {
            return;
        }
        let known = self.nets().remove(challenge);
        let name = network_name(self.instance(), challenge);
        let id = match known {
            Some(state) => Some(state.id),
            None => self
                .find_network(&name)
                .await
                .ok()
                .flatten()
                .map(|found| match found {
                    Found::Usable(state) => state.id,
                    Found::Unallocated(id) => id,
                }),
        };
        if let Some(id) = id {
            self.remove_network(challenge, &id).await;
        }
        self.status.update(challenge, |s| s.network = None);
    }

    async fn remove_network(&self, challenge: &str, id: &str) {
        match self.runtime.remove_network(id).await {
            Ok(()) => {
                tracing::info!(%challenge, "network removed");
            }
            Err(e) => {
                tracing::debug!(%challenge, error = %e, "network not removed yet");
                return;
            }
        }
        if let Some(m) = self.egress_mechanism() {
            if let Err(e) = m.allow(challenge).await {
                tracing::warn!(%challenge, error = %e, "could not remove egress rules");
            }
        }
        self.blocked().remove(challenge);
    }

    /// The resync pass's share: adopts this instance's networks, removes orphans (a challenge
    /// that runs nothing and has no container left), and puts back missing egress rules.
    pub(super) async fn sync_networks(
        &self,
        specs_of: &BTreeMap<String, BTreeMap<Slot, ContainerSpec>>,
        entries: &[Entry],
        observed: &[Observed],
    ) {
        let listed = match self.runtime.networks(self.instance()).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::debug!(error = %e, "could not list networks");
                return;
            }
        };
        let mut seen = HashMap::new();
        for n in listed
            .iter()
            .filter(|n| n.labels.get(LABEL_INSTANCE).map(String::as_str) == Some(self.instance()))
        {
            let Some(key) = key_of(&n.labels) else {
                continue;
            };
            let challenge = &key;
            let wanted = specs_of.get(challenge).is_some_and(|s| !s.is_empty());
            let used = observed
                .iter()
                .any(|o| o.key().as_deref() == Some(challenge.as_str()));
            if !wanted && !used {
                self.nets().remove(challenge);
                self.remove_network(challenge, &n.id).await;
                continue;
            }
            if let Some(state) = state_of(n) {
                seen.insert(challenge.clone(), state);
            }
        }
        *self.nets() = seen.clone();
        let Ok(mechanism) = self.usable_egress() else {
            return;
        };
        let blocked: BTreeMap<String, String> = entries
            .iter()
            .filter_map(|e| {
                let c = e.spec.as_deref()?;
                let egress = c.network.egress.unwrap_or(self.settings.default_egress);
                let state = seen.get(&e.name)?;
                (!egress).then(|| (e.name.clone(), state.subnet.clone()))
            })
            .collect();
        match mechanism.sync(&blocked).await {
            Ok(()) => *self.blocked() = blocked.into_iter().collect(),
            Err(e) => tracing::warn!(error = %e, "could not sync egress rules"),
        }
    }
}
