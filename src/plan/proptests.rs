//! Properties of the planner over arbitrary observed states: applying a plan converges (planning
//! again yields nothing), no op ever targets a container of another instance or one without the
//! instance label, and only replicas whose spec hash changed (or whose container is dead) are
//! replaced.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;

use super::*;
use crate::runtime::{LABEL_CHALLENGE, LABEL_INSTANCE, LABEL_REPLICA, LABEL_SPEC_HASH};

const I: &str = "test";
const CHALLENGES: &[&str] = &["a", "b", "c"];
const HASHES: &[&str] = &["h1", "h2", "h3"];

fn state() -> impl Strategy<Value = ContainerState> {
    use ContainerState::*;
    prop::sample::select(vec![
        Created, Running, Paused, Restarting, Exited, Removing, Dead, Unknown,
    ])
}

/// A container with any mix of labels: this instance, another one or none; a desired challenge,
/// an undesired one or none; a replica number, garbage or none; any hash and state.
fn container() -> impl Strategy<Value = Observed> {
    (
        prop::sample::select(vec![Some(I), Some("other"), None]),
        prop::option::of(prop::sample::select(vec!["a", "b", "c", "gone"])),
        prop::option::of(prop::sample::select(vec!["0", "1", "2", "3", "4", "x"])),
        prop::option::of(prop::sample::select(HASHES.to_vec())),
        state(),
        0i64..100,
    )
        .prop_map(|(instance, challenge, replica, hash, state, created)| {
            let mut labels = BTreeMap::new();
            let pairs = [
                (LABEL_INSTANCE, instance),
                (LABEL_CHALLENGE, challenge),
                (LABEL_REPLICA, replica),
                (LABEL_SPEC_HASH, hash),
            ];
            for (key, value) in pairs {
                if let Some(value) = value {
                    labels.insert(key.to_string(), value.to_string());
                }
            }
            Observed {
                id: String::new(),
                name: String::new(),
                labels,
                state,
                status: String::new(),
                ports: vec![],
                created,
                ip: None,
                node: None,
            }
        })
}

fn world() -> impl Strategy<Value = (BTreeMap<String, Vec<Want>>, Vec<Observed>)> {
    let wants = prop::collection::btree_map(
        prop::sample::select(CHALLENGES.to_vec()).prop_map(str::to_string),
        (0u32..4, prop::sample::select(HASHES.to_vec())),
        0..=3,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(name, (replicas, hash))| {
                let wants = (1..=replicas)
                    .map(|replica| Want {
                        slot: Slot::Replica(replica),
                        gates: false,
                        hash: hash.to_string(),
                    })
                    .collect();
                (name, wants)
            })
            .collect()
    });
    let observed = prop::collection::vec(container(), 0..12).prop_map(|mut list| {
        for (i, o) in list.iter_mut().enumerate() {
            o.id = format!("c{i}");
            o.name = format!("name{i}");
        }
        list
    });
    (wants, observed)
}

/// What the reconciler does with a plan, on a model of the engine: containers by id.
fn apply(
    plan: &BTreeMap<String, Vec<Op>>,
    wants: &BTreeMap<String, Vec<Want>>,
    observed: &mut Vec<Observed>,
) {
    let mut next = observed.len();
    for (challenge, ops) in plan {
        let hash_of = |replica: u32| {
            wants[challenge]
                .iter()
                .find(|w| w.slot == Slot::Replica(replica))
                .map(|w| w.hash.clone())
                .unwrap_or_default()
        };
        for op in ops {
            let mut fresh = |replica: u32| {
                next += 1;
                let labels = [
                    (LABEL_INSTANCE, I.to_string()),
                    (LABEL_CHALLENGE, challenge.clone()),
                    (LABEL_REPLICA, replica.to_string()),
                    (LABEL_SPEC_HASH, hash_of(replica)),
                ];
                Observed {
                    id: format!("new{next}"),
                    name: format!("new{next}"),
                    labels: labels
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                    state: ContainerState::Running,
                    status: String::new(),
                    ports: vec![],
                    created: 1000 + next as i64,
                    ip: None,
                    node: None,
                }
            };
            match op {
                Op::Remove { target, .. } => observed.retain(|o| o.id != target.id),
                Op::Replace {
                    slot: Slot::Replica(replica),
                    old,
                    ..
                } => {
                    observed.retain(|o| o.id != old.id);
                    observed.push(fresh(*replica));
                }
                Op::Create {
                    slot: Slot::Replica(replica),
                } => observed.push(fresh(*replica)),
                Op::Replace { .. } | Op::Create { .. } => {}
                Op::Start { target, .. } | Op::Unpause { target, .. } => {
                    for o in observed.iter_mut().filter(|o| o.id == target.id) {
                        o.state = ContainerState::Running;
                    }
                }
            }
        }
    }
}

/// The container an op acts on, if any.
fn target(op: &Op) -> Option<&Target> {
    match op {
        Op::Remove { target, .. } | Op::Start { target, .. } | Op::Unpause { target, .. } => {
            Some(target)
        }
        Op::Replace { old, .. } => Some(old),
        Op::Create { .. } => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // Failures are kept as plain tests below, not in a proptest-regressions/ folder.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn applying_the_plan_converges((wants, mut observed) in world()) {
        let plan = plan_all(I, &wants, &observed, &BTreeMap::new());
        apply(&plan, &wants, &mut observed);
        let again = plan_all(I, &wants, &observed, &BTreeMap::new());
        prop_assert!(again.is_empty(), "planned again: {again:?}\nafter: {observed:#?}");
    }

    #[test]
    fn ops_only_target_this_instances_containers((wants, observed) in world()) {
        let by_id: HashMap<&str, &Observed> = observed.iter().map(|o| (o.id.as_str(), o)).collect();
        for ops in plan_all(I, &wants, &observed, &BTreeMap::new()).values() {
            for op in ops {
                if let Some(t) = target(op) {
                    let o = by_id[t.id.as_str()];
                    prop_assert_eq!(o.instance(), Some(I), "{:?} on {:?}", op, o);
                }
            }
        }
        // plan_challenge too, handed every container whatever its labels.
        for (name, w) in &wants {
            let refs: Vec<&Observed> = observed.iter().collect();
            for op in plan_challenge(I, w, &refs, &BTreeSet::new()) {
                if let Some(t) = target(&op) {
                    prop_assert_eq!(by_id[t.id.as_str()].instance(), Some(I), "{} {:?}", name, op);
                }
            }
        }
    }

    #[test]
    fn only_changed_or_dead_replicas_are_replaced((wants, observed) in world()) {
        let by_id: HashMap<&str, &Observed> = observed.iter().map(|o| (o.id.as_str(), o)).collect();
        let plan = plan_all(I, &wants, &observed, &BTreeMap::new());
        for (name, ops) in &plan {
            for op in ops {
                if let Op::Replace { slot, old, why } = op {
                    let o = by_id[old.id.as_str()];
                    let want = wants[name].iter().find(|w| &w.slot == slot).map(|w| w.hash.as_str());
                    prop_assert!(want.is_some(), "replaced an unwanted replica: {:?}", op);
                    let changed = o.spec_hash() != want;
                    let dead = matches!(o.state, ContainerState::Dead | ContainerState::Unknown | ContainerState::Removing);
                    prop_assert!(changed || dead, "replaced a current container: {:?} {:?}", op, o);
                    prop_assert_eq!(matches!(why, Why::SpecChanged { .. }), changed);
                }
            }
        }
        // A replica served by exactly one running container of the wanted hash is left alone.
        for (name, w) in &wants {
            for want in w {
                let serving: Vec<&Observed> = observed
                    .iter()
                    .filter(|o| {
                        o.instance() == Some(I)
                            && o.challenge() == Some(name)
                            && o.replica() == want.slot.replica()
                            && o.state != ContainerState::Removing
                    })
                    .collect();
                if let [only] = serving.as_slice() {
                    if only.spec_hash() == Some(&want.hash) && only.state == ContainerState::Running {
                        let touched = plan.get(name).into_iter().flatten().any(|op| {
                            op.replica() == want.slot.replica()
                                || target(op).is_some_and(|t| t.id == only.id)
                        });
                        prop_assert!(!touched, "touched a converged replica {:?}: {:?}", only, plan);
                    }
                }
            }
        }
    }
}
