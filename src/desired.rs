//! The desired store: every challenge beast should run, from all sources, with the last valid
//! spec of each and the errors that currently stop it from being updated.
//!
//! Writers apply whole snapshots of a source (a directory rescan); readers take cheap `Arc`
//! clones. Rules that keep a live event safe live here: an invalid file keeps the last valid spec
//! of its challenges, a name claimed twice keeps whatever ran, an unreadable directory prunes
//! nothing. This module never talks to the engine.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use crate::manifest::raw;
use crate::model::{Challenge, Protocol};
use crate::policy::Policy;

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
    /// The manifest of `spec` as written (served by the manage API).
    pub raw: Option<Arc<raw::Manifest>>,
    /// Bumped whenever `spec` changes.
    pub generation: u64,
    /// The API store's version of an API-owned challenge; the generation for a file's.
    pub resource_version: u64,
    /// Why the current manifest cannot be applied (empty: Valid=True).
    pub errors: Vec<String>,
    /// Lifecycle: an undeployed challenge stays known but runs nothing.
    pub deployed: bool,
    /// The git commit the current spec came from (a `--git` source).
    pub commit: Option<String>,
}

impl Entry {
    fn new(name: &str, source: Source, deployed: bool) -> Entry {
        Entry {
            name: name.to_string(),
            source,
            spec: None,
            raw: None,
            generation: 0,
            resource_version: 0,
            errors: Vec::new(),
            deployed,
            commit: None,
        }
    }

    /// Takes a valid spec; bumps the generation when it changed. Returns whether it changed.
    fn accept(&mut self, challenge: Challenge, raw: Option<raw::Manifest>) -> bool {
        self.errors.clear();
        self.raw = raw.map(Arc::new);
        if self.spec.as_deref() == Some(&challenge) {
            return false;
        }
        self.spec = Some(Arc::new(challenge));
        self.generation += 1;
        true
    }
}

impl Entry {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    /// The file that owns this challenge, if a watched directory does.
    pub fn file(&self) -> Option<&str> {
        match &self.source {
            Source::Dir { file, .. } => Some(file),
            Source::Api => None,
        }
    }
}

/// What one document of a scanned source claims.
#[derive(Debug, Clone)]
pub enum Claim {
    Valid {
        challenge: Box<Challenge>,
        raw: Option<Box<raw::Manifest>>,
    },
    Invalid(Vec<String>),
}

/// A complete scan of one directory source.
#[derive(Debug, Clone, Default)]
pub struct DirSnapshot {
    /// Claims by challenge name: (file, claim). More than one file per name is a conflict.
    pub claims: BTreeMap<String, Vec<(String, Claim)>>,
    /// Errors of files that could not be attributed to a name (e.g. a YAML syntax error), by file.
    pub file_errors: BTreeMap<String, Vec<String>>,
    /// The git commit the scanned tree was checked out from (a `--git` source).
    pub commit: Option<String>,
}

/// The store. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct DesiredStore {
    inner: Arc<RwLock<BTreeMap<String, Entry>>>,
    /// Names undeployed through the lifecycle API (persisted by the API store).
    undeployed: Arc<RwLock<BTreeSet<String>>>,
    version: Arc<std::sync::atomic::AtomicU64>,
    /// What manifests may ask for beyond the hardened defaults.
    policy: Arc<RwLock<Policy>>,
}

impl DesiredStore {
    pub fn new() -> DesiredStore {
        DesiredStore::default()
    }

    /// A store that holds manifests to `policy`.
    pub fn with_policy(policy: Policy) -> DesiredStore {
        let store = DesiredStore::default();
        *store.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
        store
    }

    /// How `challenge` breaks this store's policy (empty when it does not).
    pub fn policy_violations(&self, challenge: &Challenge) -> Vec<String> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .violations(challenge)
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
        let undeployed = self.undeployed();
        let mut entries = self.write();
        let mut changed = BTreeSet::new();
        let owned_by_root =
            |e: &Entry| matches!(&e.source, Source::Dir { root: r, .. } if *r == root);

        // Fixed host ports claimed by valid manifests, to refuse two challenges on one port.
        let mut port_owners: BTreeMap<(u16, Protocol), BTreeSet<String>> = BTreeMap::new();
        for (name, claims) in &snapshot.claims {
            if let [(_, Claim::Valid { challenge: c, .. })] = claims.as_slice() {
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
                match &existing.source {
                    Source::Dir { root: r, file: f } if *r != root => {
                        // Claimed by another watched directory first: it keeps it.
                        tracing::warn!(challenge = %name, %file, owner = %f, "challenge name already defined in another watched directory; ignoring this manifest");
                        continue;
                    }
                    Source::Api => {
                        // A directory owns the names it claims; the API's copy is shadowed.
                        tracing::warn!(challenge = %name, %file, "a watched directory now defines this API-created challenge; the file wins");
                    }
                    Source::Dir { .. } => {}
                }
            }
            let claim = match claim {
                Claim::Valid { challenge, raw } => {
                    let mut errors = self.policy_violations(&challenge);
                    errors.extend(port_conflict(&challenge, &port_owners));
                    if errors.is_empty() {
                        Claim::Valid { challenge, raw }
                    } else {
                        Claim::Invalid(errors.iter().map(|e| format!("{file}: {e}")).collect())
                    }
                }
                invalid => invalid,
            };
            let source = Source::Dir { root, file };
            let deployed = !undeployed.contains(name);
            let entry = entries
                .entry(name.clone())
                .or_insert_with(|| Entry::new(name, source.clone(), deployed));
            let before = entry.clone();
            entry.source = source;
            match claim {
                Claim::Valid { challenge, raw } => {
                    entry.accept(*challenge, raw.map(|r| *r));
                    entry.resource_version = entry.generation;
                    entry.commit = snapshot.commit.clone();
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

    /// Who owns `name`, if anyone.
    pub fn owner(&self, name: &str) -> Option<Source> {
        self.read().get(name).map(|e| e.source.clone())
    }

    /// Puts an API-owned challenge in place (already durable in the API store). Refuses a name
    /// a watched directory owns, returning that file. Returns whether the entry changed.
    pub fn apply_api(
        &self,
        challenge: Challenge,
        raw: raw::Manifest,
        resource_version: u64,
    ) -> Result<bool, String> {
        let deployed = !self.undeployed().contains(&challenge.name);
        let mut entries = self.write();
        let name = challenge.name.clone();
        if let Some(Source::Dir { file, .. }) = entries.get(&name).map(|e| &e.source) {
            return Err(file.clone());
        }
        let violations = self.policy_violations(&challenge);
        let entry = entries
            .entry(name.clone())
            .or_insert_with(|| Entry::new(&name, Source::Api, deployed));
        let before = entry.clone();
        if violations.is_empty() {
            entry.accept(challenge, Some(raw));
        } else {
            // Stored before a stricter policy: the last valid spec (if any) keeps running.
            entry.errors = violations;
        }
        entry.resource_version = resource_version;
        Ok(*entry != before)
    }

    /// Removes an API-owned challenge. Returns whether it was there.
    pub fn remove_api(&self, name: &str) -> bool {
        let mut entries = self.write();
        if entries.get(name).is_some_and(|e| e.source == Source::Api) {
            entries.remove(name);
            return true;
        }
        false
    }

    /// Sets the lifecycle of `name` (known or not yet known). Returns whether it changed.
    pub fn set_deployed(&self, name: &str, deployed: bool) -> bool {
        {
            let mut undeployed = self.undeployed.write().unwrap_or_else(|p| p.into_inner());
            if deployed {
                undeployed.remove(name);
            } else {
                undeployed.insert(name.to_string());
            }
        }
        let mut entries = self.write();
        match entries.get_mut(name) {
            Some(e) if e.deployed != deployed => {
                e.deployed = deployed;
                true
            }
            _ => false,
        }
    }

    fn undeployed(&self) -> BTreeSet<String> {
        self.undeployed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Any write may change what readers see: the version is bumped when the write ends,
    /// still under the lock (readers that cache a view compare it).
    fn write(&self) -> WriteGuard<'_> {
        WriteGuard {
            guard: self.inner.write().unwrap_or_else(|p| p.into_inner()),
            version: &self.version,
        }
    }

    /// Changes whenever the store may have changed.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// A write lock on the entries that bumps the store's version when released.
struct WriteGuard<'a> {
    guard: std::sync::RwLockWriteGuard<'a, BTreeMap<String, Entry>>,
    version: &'a std::sync::atomic::AtomicU64,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }
}

impl std::ops::Deref for WriteGuard<'_> {
    type Target = BTreeMap<String, Entry>;
    fn deref(&self) -> &Self::Target {
        &self.guard
    }
}

impl std::ops::DerefMut for WriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.guard
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
        Claim::Valid {
            challenge: Box::new(Challenge::with_image(name, image)),
            raw: None,
        }
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
            Claim::Valid {
                challenge: Box::new(c),
                raw: None,
            }
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
