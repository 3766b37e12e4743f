//! The planner: `(desired, observed) → actions`, a pure function.
//!
//! No async, no engine types, no clock. The caller resolves images and host ports, computes the
//! spec hash of every wanted container (replicas and services), lists the containers, says which
//! services pass their healthcheck, and executes what comes back, in order. Drift is decided by
//! the `beast.spec-hash` label alone, per container: a changed service replaces that service only.
//!
//! Services come first. A replica is created (or replaced) only once every service that gates
//! it (one with a healthcheck) passes it, like compose's `service_healthy`; replicas that run
//! keep running meanwhile.

use std::collections::{BTreeMap, BTreeSet};

use crate::runtime::{ContainerState, Observed};

pub mod workloads;

/// One container of a challenge: a service (by name) or a replica (1-based). Services order
/// before replicas.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    Service(String),
    Replica(u32),
}

impl Slot {
    /// The slot a container of this instance fills, from its labels.
    pub fn of(o: &Observed) -> Option<Slot> {
        match o.service() {
            Some(service) => Some(Slot::Service(service.to_string())),
            None => o.replica().map(Slot::Replica),
        }
    }

    pub fn replica(&self) -> Option<u32> {
        match self {
            Slot::Replica(r) => Some(*r),
            Slot::Service(_) => None,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Slot::Service(name) => write!(f, "service {name}"),
            Slot::Replica(r) => write!(f, "replica {r}"),
        }
    }
}

/// One container the challenge wants, with the hash it must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub slot: Slot,
    pub hash: String,
    /// A service with a healthcheck: replicas wait until it passes.
    pub gates: bool,
}

impl Want {
    /// A replica (no gating).
    pub fn replica(replica: u32, hash: &str) -> Want {
        Want {
            slot: Slot::Replica(replica),
            hash: hash.to_string(),
            gates: false,
        }
    }
}

/// A container the planner acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    pub name: String,
}

impl Target {
    fn of(o: &Observed) -> Target {
        Target {
            id: o.id.clone(),
            name: o.name.clone(),
        }
    }
}

/// Why a container is replaced or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Its spec hash differs from the wanted one.
    SpecChanged { from: String, to: String },
    /// Its challenge is not (or no longer) desired.
    NotDesired,
    /// Its replica number is above `spec.replicas`.
    ScaledDown,
    /// Another container already serves its replica.
    Duplicate,
    /// It has no usable `beast.replica` label.
    NoReplica,
    /// The engine reports it dead.
    Dead,
    /// Its service is no longer in `spec.services`.
    ServiceRemoved,
    /// Recreation was asked for (`redeploy`).
    Redeploy,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::SpecChanged { from, to } => write!(f, "spec changed ({from} → {to})"),
            Why::NotDesired => f.write_str("challenge is not desired"),
            Why::ScaledDown => f.write_str("replica above spec.replicas"),
            Why::Duplicate => f.write_str("duplicate container for the replica"),
            Why::NoReplica => f.write_str("no valid beast.replica label"),
            Why::Dead => f.write_str("container is dead"),
            Why::ServiceRemoved => f.write_str("service no longer in spec.services"),
            Why::Redeploy => f.write_str("redeploy requested"),
        }
    }
}

/// A corrective action. Executed in the order returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Remove a container (before anything is created, so its host ports are free).
    Remove { target: Target, why: Why },
    /// Replace a container: stop the old one first (it may hold the same host ports), create
    /// and start the new one, then remove the old; on failure the old one comes back.
    Replace { slot: Slot, old: Target, why: Why },
    /// Unpause a paused container whose spec is current.
    Unpause { slot: Slot, target: Target },
    /// Start a stopped (exited or created) container whose spec is current.
    Start { slot: Slot, target: Target },
    /// Create and start a missing container.
    Create { slot: Slot },
}

impl Op {
    /// The slot this op concerns, if any.
    pub fn slot(&self) -> Option<&Slot> {
        match self {
            Op::Remove { .. } => None,
            Op::Replace { slot, .. }
            | Op::Unpause { slot, .. }
            | Op::Start { slot, .. }
            | Op::Create { slot } => Some(slot),
        }
    }

    /// The replica this op concerns, if it concerns one.
    pub fn replica(&self) -> Option<u32> {
        self.slot().and_then(Slot::replica)
    }
}

/// The gating services (with a healthcheck) not in `healthy`, by name: what replicas wait for.
pub fn waiting_for(wants: &[Want], healthy: &BTreeSet<String>) -> Vec<String> {
    wants
        .iter()
        .filter(|w| w.gates)
        .filter_map(|w| match &w.slot {
            Slot::Service(name) if !healthy.contains(name) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// Plans one challenge. `wants` is empty when the challenge is not desired (or scaled to 0);
/// `observed` are the containers of this instance labelled with this challenge; `healthy` names
/// the services whose current container passes its healthcheck. Containers of another instance
/// are ignored whatever they are passed in with.
pub fn plan_challenge(
    instance: &str,
    wants: &[Want],
    observed: &[&Observed],
    healthy: &BTreeSet<String>,
) -> Vec<Op> {
    let mut removes = Vec::new();
    let mut fixes = Vec::new();
    let wanted: BTreeMap<&Slot, &Want> = wants.iter().map(|w| (&w.slot, w)).collect();
    let mut by_slot: BTreeMap<Slot, Vec<&Observed>> = BTreeMap::new();
    let waiting = !waiting_for(wants, healthy).is_empty();

    for o in observed
        .iter()
        .copied()
        .filter(|o| o.instance() == Some(instance))
    {
        if o.state == ContainerState::Removing {
            continue; // already on its way out
        }
        let why = match Slot::of(o) {
            None => Some(Why::NoReplica),
            Some(_) if wants.is_empty() => Some(Why::NotDesired),
            Some(Slot::Service(_)) if o.replica().is_some() => Some(Why::NoReplica),
            Some(slot) if !wanted.contains_key(&slot) => Some(match slot {
                Slot::Service(_) => Why::ServiceRemoved,
                Slot::Replica(_) => Why::ScaledDown,
            }),
            Some(slot) => {
                by_slot.entry(slot).or_default().push(o);
                None
            }
        };
        if let Some(why) = why {
            removes.push(Op::Remove {
                target: Target::of(o),
                why,
            });
        }
    }

    for (slot, want) in &wanted {
        let slot = (*slot).clone();
        // Replicas wait for the gating services; running ones are left alone meanwhile.
        let held = waiting && matches!(slot, Slot::Replica(_));
        let mut candidates = by_slot.remove(&slot).unwrap_or_default();
        if candidates.is_empty() {
            if !held {
                fixes.push(Op::Create { slot });
            }
            continue;
        }
        // Keep the best container; the rest are duplicates.
        candidates.sort_by_key(|o| std::cmp::Reverse(rank(o, &want.hash)));
        let keep = candidates[0];
        for dup in &candidates[1..] {
            removes.push(Op::Remove {
                target: Target::of(dup),
                why: Why::Duplicate,
            });
        }
        let hash = keep.spec_hash().unwrap_or("");
        if hash != want.hash {
            if !held {
                let why = Why::SpecChanged {
                    from: hash.to_string(),
                    to: want.hash.clone(),
                };
                fixes.push(Op::Replace {
                    slot,
                    old: Target::of(keep),
                    why,
                });
            }
            continue;
        }
        match keep.state {
            ContainerState::Running | ContainerState::Restarting => {}
            ContainerState::Paused => fixes.push(Op::Unpause {
                slot,
                target: Target::of(keep),
            }),
            ContainerState::Exited | ContainerState::Created => fixes.push(Op::Start {
                slot,
                target: Target::of(keep),
            }),
            ContainerState::Dead | ContainerState::Unknown | ContainerState::Removing => fixes
                .push(Op::Replace {
                    slot,
                    old: Target::of(keep),
                    why: Why::Dead,
                }),
        }
    }

    removes.extend(fixes);
    removes
}

/// Preference among several containers claiming one replica: current spec, then running, then newest.
fn rank(o: &Observed, hash: &str) -> (bool, bool, i64) {
    (
        o.spec_hash() == Some(hash),
        o.state == ContainerState::Running,
        o.created,
    )
}

/// Plans every challenge at once (the resync pass): `wants` by challenge name, all observed
/// containers of the instance, the healthy services by challenge. Returns only challenges with
/// something to do.
pub fn plan_all(
    instance: &str,
    wants: &BTreeMap<String, Vec<Want>>,
    observed: &[Observed],
    healthy: &BTreeMap<String, BTreeSet<String>>,
) -> BTreeMap<String, Vec<Op>> {
    let none = BTreeSet::new();
    let mut by_challenge: BTreeMap<String, Vec<&Observed>> = BTreeMap::new();
    let mut unlabelled = Vec::new();
    for o in observed.iter().filter(|o| o.instance() == Some(instance)) {
        match o.key() {
            Some(c) => by_challenge.entry(c).or_default().push(o),
            None => unlabelled.push(o),
        }
    }
    let names: BTreeSet<&str> = wants
        .keys()
        .map(String::as_str)
        .chain(by_challenge.keys().map(String::as_str))
        .collect();
    let mut out = BTreeMap::new();
    for name in names {
        let w = wants.get(name).map(Vec::as_slice).unwrap_or(&[]);
        let obs = by_challenge.get(name).map(Vec::as_slice).unwrap_or(&[]);
        let ops = plan_challenge(instance, w, obs, healthy.get(name).unwrap_or(&none));
        if !ops.is_empty() {
            out.insert(name.to_string(), ops);
        }
    }
    // A container of this instance without a challenge label is beast's debris: remove it.
    let debris: Vec<Op> = unlabelled
        .into_iter()
        .map(|o| Op::Remove {
            target: Target::of(o),
            why: Why::NotDesired,
        })
        .collect();
    if !debris.is_empty() {
        out.insert(String::new(), debris);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{LABEL_CHALLENGE, LABEL_INSTANCE, LABEL_REPLICA, LABEL_SPEC_HASH};

    const I: &str = "test";

    fn c(id: &str, replica: u32, hash: &str, state: ContainerState) -> Observed {
        Observed {
            id: id.into(),
            name: format!("{I}_web_{replica}"),
            labels: [
                (LABEL_INSTANCE, I),
                (LABEL_CHALLENGE, "web"),
                (LABEL_REPLICA, &replica.to_string()),
                (LABEL_SPEC_HASH, hash),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            state,
            status: String::new(),
            ports: vec![],
            created: 0,
            ip: None,
            node: None,
        }
    }

    fn wants(n: u32, hash: &str) -> Vec<Want> {
        (1..=n)
            .map(|replica| Want::replica(replica, hash))
            .collect()
    }

    fn t(id: &str, replica: u32) -> Target {
        Target {
            id: id.into(),
            name: format!("{I}_web_{replica}"),
        }
    }

    use ContainerState::*;

    /// (case, wanted replicas, wanted hash, observed, expected ops)
    type Case = (&'static str, u32, &'static str, Vec<Observed>, Vec<Op>);

    #[test]
    fn table() {
        let cases: Vec<Case> = vec![
            ("nothing wanted, nothing there", 0, "h", vec![], vec![]),
            (
                "create from empty",
                2,
                "h",
                vec![],
                vec![
                    Op::Create {
                        slot: Slot::Replica(1),
                    },
                    Op::Create {
                        slot: Slot::Replica(2),
                    },
                ],
            ),
            (
                "converged is a no-op",
                1,
                "h",
                vec![c("a", 1, "h", Running)],
                vec![],
            ),
            (
                "restarting is left to the engine",
                1,
                "h",
                vec![c("a", 1, "h", Restarting)],
                vec![],
            ),
            (
                "scale up adds the missing replicas only",
                3,
                "h",
                vec![c("a", 1, "h", Running)],
                vec![
                    Op::Create {
                        slot: Slot::Replica(2),
                    },
                    Op::Create {
                        slot: Slot::Replica(3),
                    },
                ],
            ),
            (
                "scale down removes the highest replicas",
                1,
                "h",
                vec![
                    c("a", 1, "h", Running),
                    c("b", 2, "h", Running),
                    c("c", 3, "h", Running),
                ],
                vec![
                    Op::Remove {
                        target: t("b", 2),
                        why: Why::ScaledDown,
                    },
                    Op::Remove {
                        target: t("c", 3),
                        why: Why::ScaledDown,
                    },
                ],
            ),
            (
                "scale to zero removes everything",
                0,
                "h",
                vec![c("a", 1, "h", Running)],
                vec![Op::Remove {
                    target: t("a", 1),
                    why: Why::NotDesired,
                }],
            ),
            (
                "hash change replaces (stop old before the new binds its host port)",
                1,
                "new",
                vec![c("a", 1, "old", Running)],
                vec![Op::Replace {
                    slot: Slot::Replica(1),
                    old: t("a", 1),
                    why: Why::SpecChanged {
                        from: "old".into(),
                        to: "new".into(),
                    },
                }],
            ),
            (
                "exited with current spec is started, not recreated",
                1,
                "h",
                vec![c("a", 1, "h", Exited)],
                vec![Op::Start {
                    slot: Slot::Replica(1),
                    target: t("a", 1),
                }],
            ),
            (
                "created is started",
                1,
                "h",
                vec![c("a", 1, "h", Created)],
                vec![Op::Start {
                    slot: Slot::Replica(1),
                    target: t("a", 1),
                }],
            ),
            (
                "paused is unpaused",
                1,
                "h",
                vec![c("a", 1, "h", Paused)],
                vec![Op::Unpause {
                    slot: Slot::Replica(1),
                    target: t("a", 1),
                }],
            ),
            (
                "dead is replaced",
                1,
                "h",
                vec![c("a", 1, "h", Dead)],
                vec![Op::Replace {
                    slot: Slot::Replica(1),
                    old: t("a", 1),
                    why: Why::Dead,
                }],
            ),
            (
                "duplicates keep the current running one",
                1,
                "h",
                vec![c("old", 1, "x", Exited), c("good", 1, "h", Running)],
                vec![Op::Remove {
                    target: t("old", 1),
                    why: Why::Duplicate,
                }],
            ),
            (
                "removing containers are ignored",
                1,
                "h",
                vec![c("a", 1, "h", Removing)],
                vec![Op::Create {
                    slot: Slot::Replica(1),
                }],
            ),
        ];
        for (case, n, hash, observed, expected) in cases {
            let refs: Vec<&Observed> = observed.iter().collect();
            assert_eq!(
                plan_challenge(I, &wants(n, hash), &refs, &BTreeSet::new()),
                expected,
                "case: {case}"
            );
        }
    }

    #[test]
    fn removals_come_before_creations() {
        let observed = [c("a", 1, "old", Running), c("b", 5, "old", Running)];
        let refs: Vec<&Observed> = observed.iter().collect();
        let ops = plan_challenge(I, &wants(2, "h"), &refs, &BTreeSet::new());
        assert!(matches!(ops[0], Op::Remove { .. }), "{ops:?}");
        assert!(
            matches!(
                ops.last(),
                Some(Op::Create {
                    slot: Slot::Replica(2)
                })
            ),
            "{ops:?}"
        );
    }

    #[test]
    fn foreign_containers_are_never_touched() {
        let mut foreign = c("f", 1, "h", Exited);
        foreign.labels.insert(LABEL_INSTANCE.into(), "other".into());
        let mut unlabelled = c("u", 1, "h", Running);
        unlabelled.labels.clear();
        let observed = vec![foreign, unlabelled];
        let plan = plan_all(I, &BTreeMap::new(), &observed, &BTreeMap::new());
        assert!(plan.is_empty(), "{plan:?}");
        let refs: Vec<&Observed> = observed.iter().collect();
        assert_eq!(
            plan_challenge(I, &wants(1, "h"), &refs, &BTreeSet::new()),
            vec![Op::Create {
                slot: Slot::Replica(1)
            }]
        );
    }

    #[test]
    fn orphans_of_this_instance_are_removed() {
        let observed = vec![c("a", 1, "h", Running)];
        let plan = plan_all(I, &BTreeMap::new(), &observed, &BTreeMap::new());
        assert_eq!(
            plan["web"],
            vec![Op::Remove {
                target: t("a", 1),
                why: Why::NotDesired
            }]
        );
    }

    #[test]
    fn plan_all_skips_converged_challenges() {
        let observed = vec![c("a", 1, "h", Running)];
        let w = BTreeMap::from([
            ("web".to_string(), wants(1, "h")),
            ("new".to_string(), wants(1, "h")),
        ]);
        let plan = plan_all(I, &w, &observed, &BTreeMap::new());
        assert_eq!(plan.keys().collect::<Vec<_>>(), vec!["new"]);
    }
    fn svc(id: &str, service: &str, hash: &str, state: ContainerState) -> Observed {
        let mut o = c(id, 1, hash, state);
        o.labels.remove(LABEL_REPLICA);
        o.labels
            .insert(crate::runtime::LABEL_SERVICE.into(), service.into());
        o.name = format!("{I}_web_{service}");
        o
    }

    fn service_want(name: &str, hash: &str, gates: bool) -> Want {
        Want {
            slot: Slot::Service(name.into()),
            hash: hash.into(),
            gates,
        }
    }

    fn healthy(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn create(slot: Slot) -> Op {
        Op::Create { slot }
    }

    /// (case, wants, observed, healthy services, expected ops)
    type ServiceCase = (
        &'static str,
        Vec<Want>,
        Vec<Observed>,
        &'static [&'static str],
        Vec<Op>,
    );

    #[test]
    fn services_table() {
        let db = || Slot::Service("db".into());
        let cache = || Slot::Service("cache".into());
        let cases: Vec<ServiceCase> = vec![
            (
                "cold start: services first, replicas wait for the gating one",
                vec![
                    Want::replica(1, "m"),
                    service_want("db", "d", true),
                    service_want("cache", "c", false),
                ],
                vec![],
                &[],
                vec![create(cache()), create(db())],
            ),
            (
                "without a healthcheck nothing gates: all at once, services first",
                vec![Want::replica(1, "m"), service_want("cache", "c", false)],
                vec![],
                &[],
                vec![create(cache()), create(Slot::Replica(1))],
            ),
            (
                "the gating service passes: the replicas come",
                vec![
                    Want::replica(1, "m"),
                    Want::replica(2, "m"),
                    service_want("db", "d", true),
                ],
                vec![svc("s", "db", "d", Running)],
                &["db"],
                vec![create(Slot::Replica(1)), create(Slot::Replica(2))],
            ),
            (
                "still starting: nothing to do yet",
                vec![Want::replica(1, "m"), service_want("db", "d", true)],
                vec![svc("s", "db", "d", Running)],
                &[],
                vec![],
            ),
            (
                "a changed service replaces that service only",
                vec![
                    Want::replica(1, "m"),
                    service_want("db", "new", true),
                    service_want("cache", "c", false),
                ],
                vec![
                    c("a", 1, "m", Running),
                    svc("s", "db", "old", Running),
                    svc("k", "cache", "c", Running),
                ],
                &[],
                vec![Op::Replace {
                    slot: db(),
                    old: Target {
                        id: "s".into(),
                        name: format!("{I}_web_db"),
                    },
                    why: Why::SpecChanged {
                        from: "old".into(),
                        to: "new".into(),
                    },
                }],
            ),
            (
                "a removed service container is healed; running replicas are left alone",
                vec![Want::replica(1, "m"), service_want("db", "d", true)],
                vec![c("a", 1, "m", Running)],
                &[],
                vec![create(db())],
            ),
            (
                "a replica whose spec changed waits for the services too, and keeps serving",
                vec![Want::replica(1, "new"), service_want("db", "d", true)],
                vec![c("a", 1, "old", Running), svc("s", "db", "d", Running)],
                &[],
                vec![],
            ),
            (
                "a stopped replica is started even while a service is unhealthy",
                vec![Want::replica(1, "m"), service_want("db", "d", true)],
                vec![c("a", 1, "m", Exited), svc("s", "db", "d", Running)],
                &[],
                vec![Op::Start {
                    slot: Slot::Replica(1),
                    target: t("a", 1),
                }],
            ),
            (
                "a service dropped from the spec is removed",
                vec![Want::replica(1, "m")],
                vec![c("a", 1, "m", Running), svc("s", "db", "d", Running)],
                &[],
                vec![Op::Remove {
                    target: Target {
                        id: "s".into(),
                        name: format!("{I}_web_db"),
                    },
                    why: Why::ServiceRemoved,
                }],
            ),
            (
                "not desired: services go with the replicas",
                vec![],
                vec![c("a", 1, "m", Running), svc("s", "db", "d", Running)],
                &[],
                vec![
                    Op::Remove {
                        target: t("a", 1),
                        why: Why::NotDesired,
                    },
                    Op::Remove {
                        target: Target {
                            id: "s".into(),
                            name: format!("{I}_web_db"),
                        },
                        why: Why::NotDesired,
                    },
                ],
            ),
        ];
        for (case, wants, observed, ok, expected) in cases {
            let refs: Vec<&Observed> = observed.iter().collect();
            assert_eq!(
                plan_challenge(I, &wants, &refs, &healthy(ok)),
                expected,
                "case: {case}"
            );
        }
    }

    #[test]
    fn waiting_names_the_gating_services_not_passing() {
        let wants = vec![
            Want::replica(1, "m"),
            service_want("db", "d", true),
            service_want("bot", "b", true),
            service_want("cache", "c", false),
        ];
        assert_eq!(
            waiting_for(&wants, &healthy(&["bot"])),
            vec!["db".to_string()]
        );
        assert!(waiting_for(&wants, &healthy(&["bot", "db"])).is_empty());
    }
}

#[cfg(test)]
mod proptests;
