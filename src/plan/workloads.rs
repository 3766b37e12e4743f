//! The planner for engines that place replicas themselves: `(wanted workloads, listed
//! workloads) → actions`, a pure function like [`super::plan_challenge`].
//!
//! A challenge wants one workload for its main containers (with `replicas`) and one per
//! service. Drift is the `beast.spec-hash` label alone (never the engine's version counter), so
//! a restarted beast that finds everything as it left it changes nothing. A change of
//! `replicas` or a redeploy (`force`) is an update too. Services come first, and the main
//! workload is created or updated only once every gating service passes its healthcheck; a main
//! workload that runs keeps running meanwhile. Workloads of another instance are never touched.

use crate::runtime::ObservedWorkload;

/// One workload the challenge wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadWant {
    /// `{instance}_{key}[_{service}]`.
    pub name: String,
    pub hash: String,
    pub replicas: u32,
    pub force: u64,
    /// A service (not the main containers).
    pub service: bool,
}

/// What to do to the engine's workloads, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadOp {
    Create {
        name: String,
    },
    /// `why`: what differs (spec, replicas, redeploy).
    Update {
        name: String,
        id: String,
        why: String,
    },
    Remove {
        name: String,
        id: String,
    },
}

impl WorkloadOp {
    pub fn name(&self) -> &str {
        match self {
            WorkloadOp::Create { name }
            | WorkloadOp::Update { name, .. }
            | WorkloadOp::Remove { name, .. } => name,
        }
    }
}

impl std::fmt::Display for WorkloadOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkloadOp::Create { name } => write!(f, "create service {name}"),
            WorkloadOp::Update { name, why, .. } => write!(f, "update service {name} ({why})"),
            WorkloadOp::Remove { name, .. } => write!(f, "remove service {name}"),
        }
    }
}

/// Plans one challenge's workloads. `observed` are the workloads listed for its key;
/// `services_ready`: every gating service passes its healthcheck.
pub fn plan_workloads(
    instance: &str,
    wants: &[WorkloadWant],
    observed: &[ObservedWorkload],
    services_ready: bool,
) -> Vec<WorkloadOp> {
    let ours: Vec<&ObservedWorkload> = observed
        .iter()
        .filter(|o| o.instance() == Some(instance))
        .collect();
    let mut ops: Vec<WorkloadOp> = ours
        .iter()
        .filter(|o| !wants.iter().any(|w| w.name == o.name))
        .map(|o| WorkloadOp::Remove {
            name: o.name.clone(),
            id: o.id.clone(),
        })
        .collect();
    let mut ordered: Vec<&WorkloadWant> = wants.iter().collect();
    ordered.sort_by_key(|w| !w.service);
    for want in ordered {
        if !want.service && !services_ready {
            continue;
        }
        match ours.iter().find(|o| o.name == want.name) {
            None => ops.push(WorkloadOp::Create {
                name: want.name.clone(),
            }),
            Some(o) => {
                let mut why = Vec::new();
                if o.spec_hash() != Some(want.hash.as_str()) {
                    why.push(format!(
                        "spec {} → {}",
                        o.spec_hash().unwrap_or("none"),
                        want.hash
                    ));
                }
                if o.replicas != want.replicas {
                    why.push(format!("replicas {} → {}", o.replicas, want.replicas));
                }
                if o.force < want.force {
                    why.push("redeploy".to_string());
                }
                if !why.is_empty() {
                    ops.push(WorkloadOp::Update {
                        name: want.name.clone(),
                        id: o.id.clone(),
                        why: why.join(", "),
                    });
                }
            }
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn want(name: &str, hash: &str, replicas: u32, service: bool) -> WorkloadWant {
        WorkloadWant {
            name: name.into(),
            hash: hash.into(),
            replicas,
            force: 0,
            service,
        }
    }

    fn seen(instance: &str, name: &str, hash: &str, replicas: u32) -> ObservedWorkload {
        ObservedWorkload {
            id: format!("id-{name}"),
            name: name.into(),
            labels: BTreeMap::from([
                ("beast.instance".to_string(), instance.to_string()),
                ("beast.spec-hash".to_string(), hash.to_string()),
            ]),
            replicas,
            force: 0,
            version: 17,
        }
    }

    fn create(name: &str) -> WorkloadOp {
        WorkloadOp::Create { name: name.into() }
    }

    fn update(name: &str, why: &str) -> WorkloadOp {
        WorkloadOp::Update {
            name: name.into(),
            id: format!("id-{name}"),
            why: why.into(),
        }
    }

    fn remove(name: &str) -> WorkloadOp {
        WorkloadOp::Remove {
            name: name.into(),
            id: format!("id-{name}"),
        }
    }

    #[test]
    fn table() {
        let main = want("i_web", "h1", 2, false);
        let db = want("i_web_db", "d1", 1, true);
        let mut forced = main.clone();
        forced.force = 1;
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            Vec<WorkloadWant>,
            Vec<ObservedWorkload>,
            bool,
            Vec<WorkloadOp>,
        )> = vec![
            (
                "nothing there: create",
                vec![main.clone()],
                vec![],
                true,
                vec![create("i_web")],
            ),
            (
                "as left: nothing to do, whatever the engine's version counter says",
                vec![main.clone()],
                vec![seen("i", "i_web", "h1", 2)],
                true,
                vec![],
            ),
            (
                "drifted spec: update",
                vec![main.clone()],
                vec![seen("i", "i_web", "old", 2)],
                true,
                vec![update("i_web", "spec old → h1")],
            ),
            (
                "scaled: update",
                vec![main.clone()],
                vec![seen("i", "i_web", "h1", 1)],
                true,
                vec![update("i_web", "replicas 1 → 2")],
            ),
            (
                "redeploy: update",
                vec![forced],
                vec![seen("i", "i_web", "h1", 2)],
                true,
                vec![update("i_web", "redeploy")],
            ),
            (
                "not wanted any more: remove",
                vec![],
                vec![seen("i", "i_web", "h1", 2)],
                true,
                vec![remove("i_web")],
            ),
            (
                "another instance's: untouched",
                vec![],
                vec![seen("other", "other_web", "h1", 2)],
                true,
                vec![],
            ),
            (
                "services first, the main waits for them",
                vec![main.clone(), db.clone()],
                vec![],
                false,
                vec![create("i_web_db")],
            ),
            (
                "services ready: services, then the main",
                vec![main.clone(), db.clone()],
                vec![],
                true,
                vec![create("i_web_db"), create("i_web")],
            ),
            (
                "a running main keeps running while a changed service is not ready",
                vec![main.clone(), db.clone()],
                vec![seen("i", "i_web", "old", 2), seen("i", "i_web_db", "d0", 1)],
                false,
                vec![update("i_web_db", "spec d0 → d1")],
            ),
            (
                "removals come first",
                vec![main.clone()],
                vec![seen("i", "i_web_cache", "c", 1)],
                true,
                vec![remove("i_web_cache"), create("i_web")],
            ),
        ];
        for (name, wants, observed, ready, expected) in cases {
            assert_eq!(
                plan_workloads("i", &wants, &observed, ready),
                expected,
                "{name}"
            );
        }
    }
}
