//! The planner: `(desired, observed) → actions`, a pure function.
//!
//! No async, no engine types, no clock. The caller resolves images and host ports, computes the
//! spec hash of every wanted replica, lists the containers, and executes what comes back, in
//! order. Drift is decided by the `beast.spec-hash` label alone.

use std::collections::{BTreeMap, BTreeSet};

use crate::runtime::{ContainerState, Observed};

/// One replica the challenge wants, with the hash its container must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub replica: u32,
    pub hash: String,
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
            Why::Redeploy => f.write_str("redeploy requested"),
        }
    }
}

/// A corrective action. Executed in the order returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Remove a container (before anything is created, so its host ports are free).
    Remove { target: Target, why: Why },
    /// Replace a replica's container: stop the old one first (it may hold the same host ports),
    /// create and start the new one, then remove the old; on failure the old one comes back.
    Replace { replica: u32, old: Target, why: Why },
    /// Unpause a paused container whose spec is current.
    Unpause { replica: u32, target: Target },
    /// Start a stopped (exited or created) container whose spec is current.
    Start { replica: u32, target: Target },
    /// Create and start a missing replica.
    Create { replica: u32 },
}

impl Op {
    /// The replica this op concerns, if any.
    pub fn replica(&self) -> Option<u32> {
        match self {
            Op::Remove { .. } => None,
            Op::Replace { replica, .. }
            | Op::Unpause { replica, .. }
            | Op::Start { replica, .. }
            | Op::Create { replica } => Some(*replica),
        }
    }
}

/// Plans one challenge. `wants` is empty when the challenge is not desired (or scaled to 0);
/// `observed` are the containers of this instance labelled with this challenge. Containers of
/// another instance are ignored whatever they are passed in with.
pub fn plan_challenge(instance: &str, wants: &[Want], observed: &[&Observed]) -> Vec<Op> {
    let mut removes = Vec::new();
    let mut fixes = Vec::new();
    let wanted: BTreeMap<u32, &Want> = wants.iter().map(|w| (w.replica, w)).collect();
    let mut by_replica: BTreeMap<u32, Vec<&Observed>> = BTreeMap::new();

    for o in observed
        .iter()
        .copied()
        .filter(|o| o.instance() == Some(instance))
    {
        if o.state == ContainerState::Removing {
            continue; // already on its way out
        }
        match o.replica() {
            None => removes.push(Op::Remove {
                target: Target::of(o),
                why: Why::NoReplica,
            }),
            Some(_) if wants.is_empty() => removes.push(Op::Remove {
                target: Target::of(o),
                why: Why::NotDesired,
            }),
            Some(r) if !wanted.contains_key(&r) => removes.push(Op::Remove {
                target: Target::of(o),
                why: Why::ScaledDown,
            }),
            Some(r) => by_replica.entry(r).or_default().push(o),
        }
    }

    for (replica, want) in &wanted {
        let replica = *replica;
        let mut candidates = by_replica.remove(&replica).unwrap_or_default();
        if candidates.is_empty() {
            fixes.push(Op::Create { replica });
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
            let why = Why::SpecChanged {
                from: hash.to_string(),
                to: want.hash.clone(),
            };
            fixes.push(Op::Replace {
                replica,
                old: Target::of(keep),
                why,
            });
            continue;
        }
        match keep.state {
            ContainerState::Running | ContainerState::Restarting => {}
            ContainerState::Paused => fixes.push(Op::Unpause {
                replica,
                target: Target::of(keep),
            }),
            ContainerState::Exited | ContainerState::Created => fixes.push(Op::Start {
                replica,
                target: Target::of(keep),
            }),
            ContainerState::Dead | ContainerState::Unknown | ContainerState::Removing => fixes
                .push(Op::Replace {
                    replica,
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
/// containers of the instance. Returns only challenges with something to do.
pub fn plan_all(
    instance: &str,
    wants: &BTreeMap<String, Vec<Want>>,
    observed: &[Observed],
) -> BTreeMap<String, Vec<Op>> {
    let mut by_challenge: BTreeMap<&str, Vec<&Observed>> = BTreeMap::new();
    let mut unlabelled = Vec::new();
    for o in observed.iter().filter(|o| o.instance() == Some(instance)) {
        match o.challenge() {
            Some(c) => by_challenge.entry(c).or_default().push(o),
            None => unlabelled.push(o),
        }
    }
    let names: BTreeSet<&str> = wants
        .keys()
        .map(String::as_str)
        .chain(by_challenge.keys().copied())
        .collect();
    let mut out = BTreeMap::new();
    for name in names {
        let w = wants.get(name).map(Vec::as_slice).unwrap_or(&[]);
        let obs = by_challenge.get(name).map(Vec::as_slice).unwrap_or(&[]);
        let ops = plan_challenge(instance, w, obs);
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
        }
    }

    fn wants(n: u32, hash: &str) -> Vec<Want> {
        (1..=n)
            .map(|replica| Want {
                replica,
                hash: hash.into(),
            })
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
                vec![Op::Create { replica: 1 }, Op::Create { replica: 2 }],
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
                vec![Op::Create { replica: 2 }, Op::Create { replica: 3 }],
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
                    replica: 1,
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
                    replica: 1,
                    target: t("a", 1),
                }],
            ),
            (
                "created is started",
                1,
                "h",
                vec![c("a", 1, "h", Created)],
                vec![Op::Start {
                    replica: 1,
                    target: t("a", 1),
                }],
            ),
            (
                "paused is unpaused",
                1,
                "h",
                vec![c("a", 1, "h", Paused)],
                vec![Op::Unpause {
                    replica: 1,
                    target: t("a", 1),
                }],
            ),
            (
                "dead is replaced",
                1,
                "h",
                vec![c("a", 1, "h", Dead)],
                vec![Op::Replace {
                    replica: 1,
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
                vec![Op::Create { replica: 1 }],
            ),
        ];
        for (case, n, hash, observed, expected) in cases {
            let refs: Vec<&Observed> = observed.iter().collect();
            assert_eq!(
                plan_challenge(I, &wants(n, hash), &refs),
                expected,
                "case: {case}"
            );
        }
    }

    #[test]
    fn removals_come_before_creations() {
        let observed = [c("a", 1, "old", Running), c("b", 5, "old", Running)];
        let refs: Vec<&Observed> = observed.iter().collect();
        let ops = plan_challenge(I, &wants(2, "h"), &refs);
        assert!(matches!(ops[0], Op::Remove { .. }), "{ops:?}");
        assert!(
            matches!(ops.last(), Some(Op::Create { replica: 2 })),
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
        let plan = plan_all(I, &BTreeMap::new(), &observed);
        assert!(plan.is_empty(), "{plan:?}");
        let refs: Vec<&Observed> = observed.iter().collect();
        assert_eq!(
            plan_challenge(I, &wants(1, "h"), &refs),
            vec![Op::Create { replica: 1 }]
        );
    }

    #[test]
    fn orphans_of_this_instance_are_removed() {
        let observed = vec![c("a", 1, "h", Running)];
        let plan = plan_all(I, &BTreeMap::new(), &observed);
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
        let plan = plan_all(I, &w, &observed);
        assert_eq!(plan.keys().collect::<Vec<_>>(), vec!["new"]);
    }
}

#[cfg(test)]
mod proptests;
