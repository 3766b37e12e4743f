//! The desired store: every challenge beast should run, from all sources, with the last valid
//! spec of each and the errors that currently stop it from being updated.
//!
//! Writers apply whole snapshots of a source (a directory rescan); readers take cheap `Arc`
//! clones. Rules that keep a live event safe live here: an invalid file keeps the last valid spec
//! of its challenges, a name claimed twice keeps whatever ran, an unreadable directory prunes
//! nothing. This module never talks to the engine.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use crate::model::{Challenge, Protocol};

/// Where a challenge's manifest comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file under a watched directory, named as in messages (`challenges/echo/challenge.yaml`).
    Dir { root: usize, file: String },
    /// The API's own store.
    Api,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Dir { file, .. } => write!(f, "dir:{file}"),
            Source::Api => f.write_str("api"),
        }
    }
}

/// One challenge in the desired state.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub source: Source,
    /// The last valid spec; `None` while the challenge has never been valid.
    pub spec: Option<Arc<Challenge>>,
    /// Bumped whenever `spec` changes.
    pub generation: u64,
    /// Why the current manifest cannot be applied (empty: Valid=True).
    pub errors: Vec<String>,
}

impl Entry {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

/// What one document of a scanned source claims.
#[derive(Debug, Clone)]
pub enum Claim {
    Valid(Box<Challenge>),
    Invalid(Vec<String>),
}

/// A complete scan of one directory source.
#[derive(Debug, Clone, Default)]
pub struct DirSnapshot {
    /// Claims by challenge name: (file, claim). More than one file per name is a conflict.
    pub claims: BTreeMap<String, Vec<(String, Claim)>>,
    /// Errors of files that could not be attributed to a name (e.g. a YAML syntax error), by file.
    pub file_errors: BTreeMap<String, Vec<String>>,
}

/// The store. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct DesiredStore {
    inner: Arc<RwLock<BTreeMap<String, Entry>>>,
}

impl DesiredStore {
    pub fn new() -> DesiredStore {
        DesiredStore::default()
    }

    pub fn get(&self, name: &str) -> Option<Entry> {
        self.read().get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// A consistent copy of all entries.
    pub fn snapshot(&self) -> Vec<Entry> {
        self.read().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Host ports fixed by any challenge's last valid spec (allocations must avoid them).
    pub fn fixed_host_ports(&self) -> BTreeSet<(u16, Protocol)> {
        self.read()
            .values()
            .filter_map(|e| e.spec.as_ref()?.run.as_ref())
            .flat_map(|run| {
                run.ports
                    .iter()
                    .filter_map(|p| Some((p.host_port?, p.protocol)))
            })
            .collect()
    }

    /// Applies a full scan of directory source `root`; returns the names whose entry changed.
    /// Only entries of `root` are pruned, and only when no file claims them any more.
    pub fn apply_dir(&self, root: usize, snapshot: DirSnapshot) -> Vec<String> {
        let mut entries = self.write();
        let mut changed = BTreeSet::new();
        let owned_by_root =
            |e: &Entry| matches!(&e.source, Source::Dir { root: r, .. } if *r == root);

        // Fixed host ports claimed by valid manifests, to refuse two challenges on one port.
        let mut port_owners: BTreeMap<(u16, Protocol), BTreeSet<String>> = BTreeMap::new();
        for (name, claims) in &snapshot.claims {
            if let [(_, Claim::Valid(c))] = claims.as_slice() {
                for p in c.run.iter().flat_map(|r| &r.ports) {
                    if let Some(hp) = p.host_port {
                        port_owners
                            .entry((hp, p.protocol))
                            .or_default()
                            .insert(name.clone());
                    }
                }
            }
        }
        for e in entries.values().filter(|e| !owned_by_root(e)) {
            for p in e
                .spec
                .iter()
                .flat_map(|c| c.run.iter())
                .flat_map(|r| &r.ports)
            {
                if let Some(hp) = p.host_port {
                    port_owners
                        .entry((hp, p.protocol))
                        .or_default()
                        .insert(e.name.clone());
                }
            }
        }

        for (name, claims) in &snapshot.claims {
            let (file, claim) = match claims.as_slice() {
                [] => continue,
                [(file, claim)] => (file.clone(), claim.clone()),
                many => {
                    let files: Vec<&str> = many.iter().map(|(f, _)| f.as_str()).collect();
                    let msg = format!(
                        "metadata.name {name:?} is defined in more than one file: {}",
                        files.join(", ")
                    );
                    let first = files.first().map(|f| f.to_string()).unwrap_or_default();
                    (first, Claim::Invalid(vec![msg]))
                }
            };
            if let Some(existing) = entries.get(name) {
                if !owned_by_root(existing) {
                    // Owned by another source: report on this file's side only through the log.
                    tracing::warn!(challenge = %name, %file, owner = %existing.source, "challenge name already owned by another source; ignoring this manifest");
                    continue;
                }
            }
            let claim = match claim {
                Claim::Valid(c) => match port_conflict(&c, &port_owners) {
                    Some(msg) => Claim::Invalid(vec![format!("{file}: {msg}")]),
                    None => Claim::Valid(c),
                },
                invalid => invalid,
            };
            let source = Source::Dir { root, file };
            let entry = entries.entry(name.clone()).or_insert_with(|| Entry {
                name: name.clone(),
                source: source.clone(),
                spec: None,
                generation: 0,
                errors: Vec::new(),
            });
            let before = entry.clone();
            entry.source = source;
            match claim {
                Claim::Valid(c) => {
                    if entry.spec.as_deref() != Some(&*c) {
                        entry.spec = Some(Arc::new(*c));
                        entry.generation += 1;
                    }
                    entry.errors.clear();
                }
                Claim::Invalid(errors) => entry.errors = errors,
            }
            if *entry != before {
                changed.insert(name.clone());
            }
        }

        // Entries of this root no file claims any more.
        let unclaimed: Vec<String> = entries
            .values()
            .filter(|e| owned_by_root(e) && !snapshot.claims.contains_key(&e.name))
            .map(|e| e.name.clone())
            .collect();
        for name in unclaimed {
            let Some(entry) = entries.get_mut(&name) else {
                continue;
            };
            let Source::Dir { file, .. } = &entry.source else {
                continue;
            };
            match snapshot.file_errors.get(file) {
                // Its file still exists but is broken: keep the last valid spec, show the error.
                Some(errors) => {
                    if entry.errors != *errors {
                        entry.errors = errors.clone();
                        changed.insert(name);
                    }
                }
                None => {
                    entries.remove(&name);
                    changed.insert(name);
                }
            }
        }
        changed.into_iter().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn port_conflict(
    c: &Challenge,
    owners: &BTreeMap<(u16, Protocol), BTreeSet<String>>,
) -> Option<String> {
    for (i, p) in c.run.iter().flat_map(|r| r.ports.iter()).enumerate() {
        let Some(hp) = p.host_port else { continue };
        let others: Vec<&str> = owners
            .get(&(hp, p.protocol))
            .into_iter()
            .flatten()
            .filter(|n| **n != c.name)
            .map(String::as_str)
            .collect();
        if !others.is_empty() {
            return Some(format!(
                "spec.ports[{i}].hostPort: {hp}/{} is also claimed by {}",
                p.protocol,
                others.join(", ")
            ));
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::PortSpec;

    fn snap(claims: &[(&str, &str, Claim)], file_errors: &[(&str, &str)]) -> DirSnapshot {
        let mut s = DirSnapshot::default();
        for (name, file, claim) in claims {
            s.claims
                .entry(name.to_string())
                .or_default()
                .push((file.to_string(), claim.clone()));
        }
        for (file, err) in file_errors {
            s.file_errors
                .entry(file.to_string())
                .or_default()
                .push(err.to_string());
        }
        s
    }

    fn valid(name: &str, image: &str) -> Claim {
        Claim::Valid(Box::new(Challenge::with_image(name, image)))
    }

    #[test]
    fn a_valid_scan_adds_and_a_missing_file_prunes() {
        let store = DesiredStore::new();
        assert_eq!(
            store.apply_dir(0, snap(&[("a", "a.yaml", valid("a", "x"))], &[])),
            vec!["a"]
        );
        assert_eq!(store.get("a").unwrap().generation, 1);
        assert_eq!(
            store.apply_dir(0, snap(&[("a", "a.yaml", valid("a", "x"))], &[])),
            Vec::<String>::new()
        );
        assert_eq!(store.apply_dir(0, snap(&[], &[])), vec!["a"]);
        assert!(store.get("a").is_none());
    }

    #[test]
    fn an_invalid_edit_keeps_the_last_valid_spec() {
        let store = DesiredStore::new();
        store.apply_dir(0, snap(&[("a", "a.yaml", valid("a", "x"))], &[]));
        store.apply_dir(
            0,
            snap(
                &[(
                    "a",
                    "a.yaml",
                    Claim::Invalid(vec!["a.yaml:3:1: bad".into()]),
                )],
                &[],
            ),
        );
        let e = store.get("a").unwrap();
        assert_eq!(e.spec.as_ref().unwrap().name, "a");
        assert_eq!(e.errors, vec!["a.yaml:3:1: bad"]);
        assert_eq!(e.generation, 1);
    }

    #[test]
    fn a_broken_file_keeps_its_challenges() {
        let store = DesiredStore::new();
        store.apply_dir(0, snap(&[("a", "a.yaml", valid("a", "x"))], &[]));
        let changed = store.apply_dir(0, snap(&[], &[("a.yaml", "a.yaml:1:1: syntax")]));
        assert_eq!(changed, vec!["a"]);
        assert!(store.get("a").unwrap().spec.is_some());
        assert!(!store.get("a").unwrap().is_valid());
    }

    #[test]
    fn a_name_in_two_files_is_an_error_and_keeps_what_ran() {
        let store = DesiredStore::new();
        store.apply_dir(0, snap(&[("a", "a.yaml", valid("a", "x"))], &[]));
        store.apply_dir(
            0,
            snap(
                &[
                    ("a", "a.yaml", valid("a", "x")),
                    ("a", "b.yaml", valid("a", "y")),
                ],
                &[],
            ),
        );
        let e = store.get("a").unwrap();
        assert!(e.errors[0].contains("a.yaml, b.yaml"), "{:?}", e.errors);
        assert_eq!(
            e.spec
                .as_ref()
                .unwrap()
                .run
                .as_ref()
                .map(|r| r.source.clone()),
            Challenge::with_image("a", "x").run.map(|r| r.source)
        );
    }

    #[test]
    fn two_challenges_on_one_fixed_host_port_are_both_invalid() {
        let store = DesiredStore::new();
        let with_port = |name: &str| {
            let mut c = Challenge::with_image(name, "x");
            if let Some(run) = c.run.as_mut() {
                run.ports.push(PortSpec {
                    port: 80,
                    host_port: Some(31337),
                    protocol: Protocol::Tcp,
                });
            }
            Claim::Valid(Box::new(c))
        };
        store.apply_dir(
            0,
            snap(
                &[
                    ("a", "a.yaml", with_port("a")),
                    ("b", "b.yaml", with_port("b")),
                ],
                &[],
            ),
        );
        assert!(!store.get("a").unwrap().is_valid());
        assert!(!store.get("b").unwrap().is_valid());
        assert!(store.get("a").unwrap().spec.is_none());
    }

    #[test]
    fn other_roots_are_left_alone() {
        let store = DesiredStore::new();
        store.apply_dir(0, snap(&[("a", "a.yaml", valid("a", "x"))], &[]));
        store.apply_dir(1, snap(&[], &[]));
        assert!(store.get("a").is_some());
    }
}
