//! The durable store of API-written desired state: the embedded default store under
//! `<state-dir>/store` (no server to run).
//!
//! # Guarantees
//!
//! - A write is acknowledged (`Ok`) only once it is on disk: the new file is fsynced, renamed over
//!   the old one, and the directory is fsynced so that the rename itself survives a power loss.
//! - A crash at any moment leaves a readable store: a file is only ever replaced whole by a rename,
//!   so a reader sees either the old or the new version. A failed (unacknowledged) write may or may
//!   not be visible after a restart; an acknowledged one always is.
//! - Optimistic concurrency: every record carries a `resourceVersion` from one counter shared by
//!   the whole store, strictly increasing across puts, deletes and lifecycle changes, also across
//!   restarts, so a deleted-and-recreated challenge never reuses a version (an old `ETag` never
//!   matches again). A put or delete with a stale `if_match` fails with [`StoreError::Conflict`].
//! - Lifecycle (deployed / undeployed) is kept per name independently of the manifest, so it
//!   applies to any challenge, including one owned by a watched directory.
//!
//! # Layout under `dir`
//!
//! - `challenges/<name>.json`: `{"resourceVersion": 7, "manifest": {...}}` — the manifest as
//!   [`raw::Manifest`] JSON with `metadata.resourceVersion` cleared (it is served from the record).
//! - `lifecycle/<name>.json`: `{"deployed": false, "resourceVersion": 8}`; no file means deployed.
//! - `version`: the counter's high-water mark as a JSON number. It is written (with the same
//!   discipline) only before a file is removed, since that is the only way the maximum version
//!   found in the records could go down; on open the counter is the maximum of it and every record.
//! - `.tmp-*`: a temp file of a write interrupted by a crash; removed on open.
//! - `<file>.corrupt-<n>`: a file that did not parse on open (e.g. torn on a filesystem without
//!   atomic rename), moved aside, reported in [`ApiStore::warnings`] and logged; never loaded.
//!
//! Names must be DNS labels (as `metadata.name`), which also keeps them safe as file names.
//!
//! # Concurrency
//!
//! [`ApiStore`] is a cheap `Clone` handle over one `Mutex`; every operation, including its fsyncs,
//! runs under the lock. That serialises writes, which is what makes "the highest version is the
//! last write" true on disk as in memory; API writes are rare, so simplicity wins over throughput.
//! The methods block: call them from `spawn_blocking` in async code if latency matters.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::manifest::raw;
use crate::manifest::validate::is_dns_label;

const CHALLENGES: &str = "challenges";
const LIFECYCLE: &str = "lifecycle";
const VERSION_FILE: &str = "version";
const TMP_PREFIX: &str = ".tmp-";
const CORRUPT_MARK: &str = ".corrupt-";

/// Errors of the API store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The precondition (`If-Match`, or "must not exist" for a create) does not hold.
    #[error("{}", conflict_message(*current))]
    Conflict { current: Option<u64> },
    #[error("{name:?} is not a valid challenge name (a DNS label)")]
    InvalidName { name: String },
    #[error("the manifest is named {found:?}, not {name:?}")]
    NameMismatch { name: String, found: Option<String> },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot encode {}: {source}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn conflict_message(current: Option<u64>) -> String {
    match current {
        Some(v) => {
            format!("the challenge was changed or already exists: its resourceVersion is {v}")
        }
        None => "the challenge does not exist".to_string(),
    }
}

/// A stored manifest with its version.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    /// As put, with `metadata.resourceVersion` cleared.
    pub manifest: raw::Manifest,
    pub resource_version: u64,
}

impl Stored {
    /// The manifest as served by the API: `metadata.resourceVersion` set to the record's version
    /// (the same value as the `ETag`).
    pub fn served_manifest(&self) -> raw::Manifest {
        let mut manifest = self.manifest.clone();
        manifest.metadata.resource_version = Some(self.resource_version.to_string());
        manifest
    }
}

/// The persisted lifecycle of one name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Lifecycle {
    pub deployed: bool,
    pub resource_version: u64,
}

/// `challenges/<name>.json`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ChallengeRecord<M> {
    resource_version: u64,
    manifest: M,
}

/// The durable store; see the module comment. Cloning shares the store.
#[derive(Clone, Debug)]
pub struct ApiStore {
    inner: Arc<Mutex<Inner>>,
    warnings: Arc<Vec<String>>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    challenges: BTreeMap<String, Stored>,
    lifecycle: BTreeMap<String, Lifecycle>,
    /// The highest version handed out (or found on disk).
    last_version: u64,
}

/// What a write requires of the current version: the conditional headers of RFC 9110 §13.1,
/// evaluated in its order (`If-Match`, then `If-None-Match`) under the store's lock, so the check
/// and the write are one step.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Precondition {
    /// The current version must be one of these (`None`: no condition).
    pub if_match: Option<Tags>,
    /// The current version must be none of these (`None`: no condition).
    pub if_none_match: Option<Tags>,
}

/// The entity tags of a conditional header, as versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tags {
    /// `*`: any current version, i.e. the challenge exists.
    Any,
    /// A list of versions. Tags that are not a version are left out: they can never match, so
    /// an empty list matches nothing.
    Versions(Vec<u64>),
}

impl Tags {
    fn matches(&self, current: Option<u64>) -> bool {
        match self {
            Tags::Any => current.is_some(),
            Tags::Versions(versions) => current.is_some_and(|c| versions.contains(&c)),
        }
    }
}

impl Precondition {
    /// No condition: the write always applies.
    pub fn any() -> Precondition {
        Precondition::default()
    }

    /// The current version must be `version` (a missing challenge never matches); `None` is no
    /// condition.
    pub fn version(version: Option<u64>) -> Precondition {
        Precondition {
            if_match: version.map(|v| Tags::Versions(vec![v])),
            if_none_match: None,
        }
    }

    /// The challenge must not exist (a create).
    pub fn absent() -> Precondition {
        Precondition {
            if_match: None,
            if_none_match: Some(Tags::Any),
        }
    }

    /// Whether the condition holds for the `current` version.
    pub fn holds(&self, current: Option<u64>) -> bool {
        self.if_match.as_ref().is_none_or(|t| t.matches(current))
            && !self
                .if_none_match
                .as_ref()
                .is_some_and(|t| t.matches(current))
    }

    fn check(&self, current: Option<u64>) -> Result<(), StoreError> {
        if self.holds(current) {
            Ok(())
        } else {
            Err(StoreError::Conflict { current })
        }
    }
}

impl ApiStore {
    /// Opens (creating if needed) the store at `dir` and loads it. Leftover temp files are
    /// removed; files that do not parse are moved aside and reported in [`ApiStore::warnings`].
    /// Fails only when the directories cannot be created or listed.
    pub fn open(dir: &Path) -> Result<ApiStore, StoreError> {
        let mut warnings = Vec::new();
        for sub in [CHALLENGES, LIFECYCLE] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(io_err(&path))?;
        }
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        let challenges = load_records(&dir.join(CHALLENGES), &mut warnings, challenge_from)?;
        let lifecycle = load_records(&dir.join(LIFECYCLE), &mut warnings, lifecycle_from)?;
        clean_dir(dir, &mut warnings)?;
        let high_water = load_version_file(dir, &mut warnings);
        let last_version = challenges
            .values()
            .map(|s| s.resource_version)
            .chain(lifecycle.values().map(|l| l.resource_version))
            .chain(high_water)
            .max()
            .unwrap_or(0);
        let inner = Inner {
            dir: dir.to_path_buf(),
            challenges,
            lifecycle,
            last_version,
        };
        Ok(ApiStore {
            inner: Arc::new(Mutex::new(inner)),
            warnings: Arc::new(warnings),
        })
    }

    /// What `open` found wrong (corrupt files moved aside, unreadable or unexpected files).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The store's directory.
    pub fn dir(&self) -> PathBuf {
        self.lock().dir.clone()
    }

    /// The stored challenge `name`.
    pub fn get(&self, name: &str) -> Option<Stored> {
        self.lock().challenges.get(name).cloned()
    }

    /// Every stored challenge, sorted by name.
    pub fn list(&self) -> Vec<(String, Stored)> {
        let inner = self.lock();
        inner
            .challenges
            .iter()
            .map(|(name, stored)| (name.clone(), stored.clone()))
            .collect()
    }

    /// Stores `manifest` as `name` and returns its new version once it is durable. With
    /// `if_match`, the current version must equal it (a missing challenge never matches).
    /// `metadata.name` must be `name`; `metadata.resourceVersion` is not stored. Putting a
    /// manifest identical to the stored one writes nothing and keeps the version (as Kubernetes
    /// does for a no-op update).
    pub fn put(
        &self,
        name: &str,
        manifest: raw::Manifest,
        if_match: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.write(name, manifest, &Precondition::version(if_match))
    }

    /// [`ApiStore::put`] under any [`Precondition`] (the API's `If-Match` / `If-None-Match`).
    pub fn put_if(
        &self,
        name: &str,
        manifest: raw::Manifest,
        precondition: &Precondition,
    ) -> Result<u64, StoreError> {
        self.write(name, manifest, precondition)
    }

    /// Stores `manifest` as `name` only if no challenge of that name is stored (`POST`);
    /// otherwise [`StoreError::Conflict`] with the current version.
    pub fn create(&self, name: &str, manifest: raw::Manifest) -> Result<u64, StoreError> {
        self.write(name, manifest, &Precondition::absent())
    }

    /// Removes the challenge `name`; whether it existed. With `if_match`, the current version
    /// must equal it. The lifecycle record is kept (see [`ApiStore::forget_lifecycle`]).
    pub fn delete(&self, name: &str, if_match: Option<u64>) -> Result<bool, StoreError> {
        self.delete_if(name, &Precondition::version(if_match))
    }

    /// [`ApiStore::delete`] under any [`Precondition`].
    pub fn delete_if(&self, name: &str, precondition: &Precondition) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let current = inner.challenges.get(name).map(|s| s.resource_version);
        precondition.check(current)?;
        if current.is_none() {
            return Ok(false);
        }
        let path = inner.dir.join(CHALLENGES).join(file_name(name));
        inner.remove_file(&path)?;
        inner.challenges.remove(name);
        Ok(true)
    }

    /// Whether `name` should be deployed: true unless it was undeployed.
    /// Names whose lifecycle record says undeployed.
    pub fn undeployed(&self) -> Vec<String> {
        self.lock()
            .lifecycle
            .iter()
            .filter(|(_, l)| !l.deployed)
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub fn deployed(&self, name: &str) -> bool {
        self.lifecycle(name).is_none_or(|l| l.deployed)
    }

    /// The lifecycle record of `name`, if one was written.
    pub fn lifecycle(&self, name: &str) -> Option<Lifecycle> {
        self.lock().lifecycle.get(name).copied()
    }

    /// Durably records whether `name` should be deployed. Setting what is already in effect
    /// writes nothing.
    pub fn set_deployed(&self, name: &str, deployed: bool) -> Result<(), StoreError> {
        check_name(name)?;
        let mut inner = self.lock();
        let effective = inner.lifecycle.get(name).is_none_or(|l| l.deployed);
        if effective == deployed {
            return Ok(());
        }
        let version = inner.last_version + 1;
        let record = Lifecycle {
            deployed,
            resource_version: version,
        };
        let path = inner.dir.join(LIFECYCLE).join(file_name(name));
        inner.last_version = version;
        write_json(&path, &record)?;
        inner.lifecycle.insert(name.to_string(), record);
        Ok(())
    }

    /// Drops the lifecycle record of `name` (when the challenge is purged), so that a challenge
    /// created later under that name starts deployed.
    pub fn forget_lifecycle(&self, name: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if !inner.lifecycle.contains_key(name) {
            return Ok(());
        }
        let path = inner.dir.join(LIFECYCLE).join(file_name(name));
        inner.remove_file(&path)?;
        inner.lifecycle.remove(name);
        Ok(())
    }

    fn write(
        &self,
        name: &str,
        mut manifest: raw::Manifest,
        precondition: &Precondition,
    ) -> Result<u64, StoreError> {
        check_name(name)?;
        if manifest.metadata.name.as_deref() != Some(name) {
            return Err(StoreError::NameMismatch {
                name: name.to_string(),
                found: manifest.metadata.name,
            });
        }
        manifest.metadata.resource_version = None;
        let mut inner = self.lock();
        let current = inner.challenges.get(name);
        precondition.check(current.map(|s| s.resource_version))?;
        if let Some(current) = current.filter(|c| c.manifest == manifest) {
            return Ok(current.resource_version);
        }
        let version = inner.last_version + 1;
        let path = inner.dir.join(CHALLENGES).join(file_name(name));
        // Consume the version even if the write fails: it may have reached the disk.
        inner.last_version = version;
        let record = ChallengeRecord {
            resource_version: version,
            manifest: &manifest,
        };
        write_json(&path, &record)?;
        let stored = Stored {
            manifest,
            resource_version: version,
        };
        inner.challenges.insert(name.to_string(), stored);
        Ok(version)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    /// Removes a record file durably. The version high-water mark is saved first: the removed
    /// record may have held the highest version, which must never be handed out again.
    fn remove_file(&mut self, path: &Path) -> Result<(), StoreError> {
        self.last_version += 1;
        write_json(&self.dir.join(VERSION_FILE), &self.last_version)?;
        crash_point(Stage::VersionSaved, None, path)?;
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(path)(e)),
        }
        crash_point(Stage::Unlinked, None, path)?;
        sync_dir(parent_of(path))
    }
}

fn check_name(name: &str) -> Result<(), StoreError> {
    if is_dns_label(name) {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            name: name.to_string(),
        })
    }
}

fn file_name(name: &str) -> String {
    format!("{name}.json")
}

fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes the directory entries of `dir` (creations, renames, removals) durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Writes `value` as JSON to `path` atomically and durably: temp file in the same directory,
/// fsync, rename over `path`, fsync the directory.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    let dir = parent_of(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    crash_point(Stage::TempCreated, Some(&tmp), path)?;
    tmp.write_all(&bytes).map_err(io_err(tmp.path()))?;
    crash_point(Stage::TempTorn, Some(&tmp), path)?;
    crash_point(Stage::TempWritten, Some(&tmp), path)?;
    tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
    crash_point(Stage::TempSynced, Some(&tmp), path)?;
    tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
    crash_point(Stage::Renamed, None, path)?;
    sync_dir(dir)
}

/// Loads every `<name>.json` of `dir` with `parse`; see the module comment for the rest.
fn load_records<T>(
    dir: &Path,
    warnings: &mut Vec<String>,
    parse: fn(&str, &[u8]) -> Result<T, String>,
) -> Result<BTreeMap<String, T>, StoreError> {
    let mut records = BTreeMap::new();
    let mut changed = false;
    for path in list_dir(dir)? {
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            warn(
                warnings,
                format!("{}: unexpected file ignored", path.display()),
            );
            continue;
        };
        if file.starts_with(TMP_PREFIX) {
            changed |= remove_temp(&path, warnings);
            continue;
        }
        if file.contains(CORRUPT_MARK) {
            continue;
        }
        let Some(name) = file.strip_suffix(".json").filter(|n| is_dns_label(n)) else {
            warn(
                warnings,
                format!("{}: unexpected file ignored", path.display()),
            );
            continue;
        };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                warn(warnings, format!("{}: cannot be read: {e}", path.display()));
                continue;
            }
        };
        match parse(name, &bytes) {
            Ok(record) => {
                records.insert(name.to_string(), record);
            }
            Err(message) => {
                move_aside(&path, &message, warnings);
                changed = true;
            }
        }
    }
    if changed {
        sync_dir(dir)?;
    }
    Ok(records)
}

/// Removes leftovers (temp files) from the top directory.
fn clean_dir(dir: &Path, warnings: &mut Vec<String>) -> Result<(), StoreError> {
    let mut changed = false;
    for path in list_dir(dir)? {
        let is_temp = path
            .file_name()
            .and_then(|f| f.to_str())
            .is_some_and(|f| f.starts_with(TMP_PREFIX));
        if is_temp {
            changed |= remove_temp(&path, warnings);
        }
    }
    if changed {
        sync_dir(dir)?;
    }
    Ok(())
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        paths.push(entry.map_err(io_err(dir))?.path());
    }
    paths.sort();
    Ok(paths)
}

fn challenge_from(name: &str, bytes: &[u8]) -> Result<Stored, String> {
    let record: ChallengeRecord<raw::Manifest> =
        serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut manifest = record.manifest;
    if manifest.metadata.name.as_deref() != Some(name) {
        return Err(format!(
            "the manifest is named {:?}, not {name:?}",
            manifest.metadata.name
        ));
    }
    manifest.metadata.resource_version = None;
    Ok(Stored {
        manifest,
        resource_version: record.resource_version,
    })
}

fn lifecycle_from(_name: &str, bytes: &[u8]) -> Result<Lifecycle, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// The saved high-water mark, if any (a corrupt one is moved aside: the records still give a
/// lower bound).
fn load_version_file(dir: &Path, warnings: &mut Vec<String>) -> Option<u64> {
    let path = dir.join(VERSION_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn(warnings, format!("{}: cannot be read: {e}", path.display()));
            return None;
        }
    };
    match serde_json::from_slice::<u64>(&bytes) {
        Ok(version) => Some(version),
        Err(e) => {
            move_aside(&path, &e.to_string(), warnings);
            // Best effort: the warning already says what happened.
            let _ = sync_dir(dir);
            None
        }
    }
}

/// Removes an interrupted write's temp file; whether it was removed.
fn remove_temp(path: &Path, warnings: &mut Vec<String>) -> bool {
    match std::fs::remove_file(path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "removed the temp file of an interrupted write");
            true
        }
        Err(e) => {
            warn(
                warnings,
                format!(
                    "{}: leftover temp file cannot be removed: {e}",
                    path.display()
                ),
            );
            false
        }
    }
}

/// Moves a file that does not parse to `<file>.corrupt-<n>` (the first free `n`) and reports it.
fn move_aside(path: &Path, problem: &str, warnings: &mut Vec<String>) {
    let aside = (1u32..)
        .map(|n| {
            let mut name = path.as_os_str().to_os_string();
            name.push(format!("{CORRUPT_MARK}{n}"));
            PathBuf::from(name)
        })
        .find(|p| !p.exists());
    let message = match aside {
        Some(aside) => match std::fs::rename(path, &aside) {
            Ok(()) => format!(
                "{}: does not parse ({problem}); moved aside to {}",
                path.display(),
                aside.display()
            ),
            Err(e) => format!(
                "{}: does not parse ({problem}) and cannot be moved aside: {e}; ignored",
                path.display()
            ),
        },
        None => format!("{}: does not parse ({problem}); ignored", path.display()),
    };
    warn(warnings, message);
}

fn warn(warnings: &mut Vec<String>, message: String) {
    tracing::warn!("api store: {message}");
    warnings.push(message);
}

/// Points of a write or removal where tests simulate a crash (the process killed there: nothing
/// after it runs, temp files are left behind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    TempCreated,
    /// After writing the temp file, with only half of it reaching the disk (power loss).
    TempTorn,
    TempWritten,
    TempSynced,
    Renamed,
    VersionSaved,
    Unlinked,
}

#[cfg(not(test))]
#[inline(always)]
fn crash_point(
    _stage: Stage,
    _tmp: Option<&tempfile::NamedTempFile>,
    _path: &Path,
) -> Result<(), StoreError> {
    Ok(())
}

#[cfg(test)]
thread_local! {
    static CRASH_AT: std::cell::Cell<Option<Stage>> = const { std::cell::Cell::new(None) };
}

/// In tests: when `stage` is the armed crash point (per thread), leave the temp file behind as a
/// killed process would and fail.
#[cfg(test)]
fn crash_point(
    stage: Stage,
    tmp: Option<&tempfile::NamedTempFile>,
    path: &Path,
) -> Result<(), StoreError> {
    if CRASH_AT.with(|c| c.get()) != Some(stage) {
        return Ok(());
    }
    CRASH_AT.with(|c| c.set(None));
    if let Some(tmp) = tmp {
        if stage == Stage::TempTorn {
            let len = tmp.as_file().metadata().map(|m| m.len()).unwrap_or(0);
            tmp.as_file().set_len(len / 2).map_err(io_err(path))?;
        }
        // A killed process does not clean up: keep the temp file's content on disk under
        // another temp name (the original is removed when the handle drops).
        let kept = parent_of(path).join(format!("{TMP_PREFIX}crashed-{stage:?}"));
        std::fs::hard_link(tmp.path(), &kept).map_err(io_err(&kept))?;
    }
    Err(StoreError::Io {
        path: path.to_path_buf(),
        source: io::Error::other(format!("simulated crash at {stage:?}")),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn manifest(name: &str, description: &str) -> raw::Manifest {
        let mut m = raw::Manifest {
            api_version: Some("beast/v1".to_string()),
            kind: Some("Challenge".to_string()),
            ..Default::default()
        };
        m.metadata.name = Some(name.to_string());
        m.spec.description = Some(description.to_string());
        m.spec.image = Some("nginx:1".to_string());
        m.spec.ports = vec![raw::Port {
            port: 80,
            host_port: None,
            protocol: Some("tcp".to_string()),
        }];
        m.spec.resources = Some(raw::Resources {
            cpus: Some(0.5),
            memory: Some(raw::Quantity::Text("64Mi".to_string())),
            pids: None,
        });
        m
    }

    fn description(store: &ApiStore, name: &str) -> Option<String> {
        store.get(name).and_then(|s| s.manifest.spec.description)
    }

    fn open(dir: &Path) -> ApiStore {
        ApiStore::open(dir).unwrap()
    }

    fn arm(stage: Stage) {
        CRASH_AT.with(|c| c.set(Some(stage)));
    }

    fn files(dir: &Path) -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn put_get_list_roundtrip() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        assert!(store.warnings().is_empty());
        assert_eq!(store.get("web"), None);
        let mut web = manifest("web", "a web challenge");
        web.metadata.resource_version = Some("99".to_string());
        let v1 = store.put("web", web.clone(), None).unwrap();
        let v2 = store
            .put("pwn", manifest("pwn", "a pwn one"), None)
            .unwrap();

        web.metadata.resource_version = None;
        let got = store.get("web").unwrap();
        assert_eq!(
            got.manifest, web,
            "resourceVersion is not stored in the manifest"
        );
        assert_eq!(got.resource_version, v1);
        assert_eq!(
            got.served_manifest().metadata.resource_version,
            Some(v1.to_string())
        );
        let names: Vec<_> = store
            .list()
            .into_iter()
            .map(|(n, s)| (n, s.resource_version))
            .collect();
        assert_eq!(
            names,
            vec![("pwn".to_string(), v2), ("web".to_string(), v1)]
        );

        // The same after a restart, and the file is the documented JSON.
        let reopened = open(tmp.path());
        assert_eq!(reopened.list(), store.list());
        let text = std::fs::read_to_string(tmp.path().join("challenges/web.json")).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["resourceVersion"], v1);
        assert_eq!(json["manifest"]["metadata"]["name"], "web");
        assert_eq!(json["manifest"]["spec"]["resources"]["memory"], "64Mi");
    }

    #[test]
    fn names_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        for bad in ["../etc", "Web", "", "a/b", "-x"] {
            let err = store.put(bad, manifest(bad, "x"), None).unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidName { .. }),
                "{bad}: {err}"
            );
            assert!(store.set_deployed(bad, false).is_err());
        }
        let err = store.put("web", manifest("pwn", "x"), None).unwrap_err();
        assert!(matches!(err, StoreError::NameMismatch { .. }), "{err}");
        assert!(store.list().is_empty());
    }

    #[test]
    fn versions_strictly_increase_across_puts_deletes_and_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let a1 = store.put("a", manifest("a", "1"), None).unwrap();
        let b1 = store.put("b", manifest("b", "1"), None).unwrap();
        let a2 = store.put("a", manifest("a", "2"), None).unwrap();
        assert!(a1 < b1 && b1 < a2);
        // The highest version is deleted, then the store restarts: never reused.
        assert!(store.delete("a", None).unwrap());
        drop(store);
        let store = open(tmp.path());
        let a3 = store.put("a", manifest("a", "3"), None).unwrap();
        assert!(a3 > a2, "{a3} > {a2}");
        store.set_deployed("b", false).unwrap();
        let lifecycle = store.lifecycle("b").unwrap().resource_version;
        assert!(lifecycle > a3);
        store.forget_lifecycle("b").unwrap();
        drop(store);
        let store = open(tmp.path());
        let b2 = store.put("b", manifest("b", "2"), None).unwrap();
        assert!(b2 > lifecycle);
    }

    #[test]
    fn an_identical_put_keeps_the_version() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let v1 = store.put("a", manifest("a", "1"), None).unwrap();
        assert_eq!(store.put("a", manifest("a", "1"), Some(v1)).unwrap(), v1);
        let v2 = store.put("a", manifest("a", "2"), Some(v1)).unwrap();
        assert!(v2 > v1);
    }

    #[test]
    fn if_match_is_enforced() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let err = store.put("a", manifest("a", "1"), Some(1)).unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { current: None }),
            "{err}"
        );
        let v1 = store.put("a", manifest("a", "1"), None).unwrap();
        let v2 = store.put("a", manifest("a", "2"), Some(v1)).unwrap();
        // A second writer still holding v1 loses.
        let err = store.put("a", manifest("a", "3"), Some(v1)).unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { current: Some(v) } if v == v2),
            "{err}"
        );
        assert!(err.to_string().contains(&v2.to_string()), "{err}");
        assert_eq!(description(&store, "a").as_deref(), Some("2"));
        // Create refuses an existing name.
        let err = store.create("a", manifest("a", "4")).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { current: Some(v) } if v == v2));
        assert!(store.create("b", manifest("b", "1")).unwrap() > v2);
        // Delete with a stale version fails and keeps the challenge.
        let err = store.delete("a", Some(v1)).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { current: Some(v) } if v == v2));
        assert!(store.get("a").is_some());
        let err = store.delete("zzz", Some(v1)).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { current: None }));
    }

    #[test]
    fn preconditions_follow_rfc_9110() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let exists = Precondition {
            if_match: Some(Tags::Any),
            if_none_match: None,
        };
        let err = store.put_if("a", manifest("a", "1"), &exists).unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { current: None }),
            "{err}"
        );
        let v = store
            .put_if("a", manifest("a", "1"), &Precondition::absent())
            .unwrap();
        let err = store
            .put_if("a", manifest("a", "2"), &Precondition::absent())
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { current: Some(c) } if c == v));
        let one_of = Precondition {
            if_match: Some(Tags::Versions(vec![v + 100, v])),
            if_none_match: None,
        };
        let v2 = store.put_if("a", manifest("a", "2"), &one_of).unwrap();
        let nothing = Precondition {
            if_match: Some(Tags::Versions(vec![])),
            if_none_match: None,
        };
        assert!(store.delete_if("a", &nothing).is_err());
        assert!(store.delete_if("a", &exists).unwrap());
        assert!(!Precondition::version(Some(v2)).holds(None));
        assert!(Precondition::any().holds(None));
    }

    #[test]
    fn delete_removes_durably() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let v = store.put("a", manifest("a", "1"), None).unwrap();
        store.put("b", manifest("b", "1"), None).unwrap();
        assert!(store.delete("a", Some(v)).unwrap());
        assert!(!store.delete("a", None).unwrap());
        assert_eq!(store.get("a"), None);
        let reopened = open(tmp.path());
        assert_eq!(reopened.get("a"), None);
        assert!(reopened.get("b").is_some());
        assert!(reopened.warnings().is_empty());
    }

    #[test]
    fn lifecycle_defaults_to_deployed_and_survives_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        assert!(store.deployed("web"));
        assert_eq!(store.lifecycle("web"), None);
        // Any name, stored here or not (a watched directory's challenge).
        store.set_deployed("web", false).unwrap();
        store.put("pwn", manifest("pwn", "1"), None).unwrap();
        store.set_deployed("pwn", false).unwrap();
        assert!(!store.deployed("web"));
        let reopened = open(tmp.path());
        assert!(!reopened.deployed("web"));
        assert!(!reopened.deployed("pwn"));
        // Deleting the manifest keeps the lifecycle; forgetting it does not.
        reopened.delete("pwn", None).unwrap();
        assert!(!reopened.deployed("pwn"));
        reopened.forget_lifecycle("pwn").unwrap();
        reopened.set_deployed("web", true).unwrap();
        let v = reopened.lifecycle("web").unwrap();
        assert!(v.deployed);
        // Setting what is in effect writes nothing.
        reopened.set_deployed("web", true).unwrap();
        assert_eq!(reopened.lifecycle("web"), Some(v));
        let again = open(tmp.path());
        assert!(again.deployed("pwn"));
        assert!(again.deployed("web"));
        assert_eq!(again.lifecycle("pwn"), None);
    }

    #[test]
    fn leftover_temp_files_and_corrupt_files_are_handled_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let va = store.put("a", manifest("a", "1"), None).unwrap();
        store.put("b", manifest("b", "1"), None).unwrap();
        store.set_deployed("a", false).unwrap();
        drop(store);
        let challenges = tmp.path().join(CHALLENGES);
        std::fs::write(challenges.join(".tmp-abc123"), b"{\"resourceVers").unwrap();
        std::fs::write(tmp.path().join(".tmp-zz"), b"12").unwrap();
        std::fs::write(
            challenges.join("b.json"),
            b"{\"resourceVersion\": 3, \"manif",
        )
        .unwrap();
        std::fs::write(challenges.join("c.json"), b"not json at all").unwrap();
        // Parses, but under the wrong name.
        let a_text = std::fs::read(challenges.join("a.json")).unwrap();
        std::fs::write(challenges.join("d.json"), &a_text).unwrap();
        std::fs::write(
            tmp.path().join(LIFECYCLE).join("a.json"),
            b"{\"deployed\": fa",
        )
        .unwrap();

        let store = open(tmp.path());
        assert_eq!(store.get("a").unwrap().resource_version, va);
        assert_eq!(store.get("b"), None);
        assert_eq!(store.get("c"), None);
        assert_eq!(store.get("d"), None);
        assert!(
            store.deployed("a"),
            "a corrupt lifecycle record reads as the default"
        );
        let warnings = store.warnings().join("\n");
        assert_eq!(store.warnings().len(), 4, "{warnings}");
        for file in ["b.json", "c.json", "d.json"] {
            assert!(
                warnings.contains(&format!("{file}: does not parse")),
                "{warnings}"
            );
        }
        assert!(warnings.contains("moved aside to"), "{warnings}");
        assert_eq!(
            files(&challenges),
            [
                "a.json",
                "b.json.corrupt-1",
                "c.json.corrupt-1",
                "d.json.corrupt-1"
            ]
            .map(String::from)
            .into()
        );
        assert!(!files(tmp.path()).iter().any(|f| f.starts_with(TMP_PREFIX)));

        // The name is usable again, a second corruption gets the next number, and the moved-aside
        // files are not reported again.
        store.put("b", manifest("b", "2"), None).unwrap();
        drop(store);
        std::fs::write(challenges.join("b.json"), b"").unwrap();
        let store = open(tmp.path());
        assert_eq!(store.warnings().len(), 1, "{:?}", store.warnings());
        assert!(challenges.join("b.json.corrupt-2").exists());
    }

    /// A crash at every point of a write leaves a readable store holding the old or the new
    /// value, and the last acknowledged write always survives.
    #[test]
    fn a_crash_at_any_point_of_a_put_leaves_a_readable_store() {
        let cases = [
            (Stage::TempCreated, false),
            (Stage::TempTorn, false),
            (Stage::TempWritten, false),
            (Stage::TempSynced, false),
            (Stage::Renamed, true),
        ];
        for (stage, new_visible) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let store = open(tmp.path());
            let v1 = store.put("a", manifest("a", "old"), None).unwrap();
            store.put("b", manifest("b", "other"), None).unwrap();
            arm(stage);
            let err = store.put("a", manifest("a", "new"), Some(v1)).unwrap_err();
            assert!(
                err.to_string().contains("simulated crash"),
                "{stage:?}: {err}"
            );
            drop(store);

            let store = open(tmp.path());
            assert!(
                store.warnings().is_empty(),
                "{stage:?}: {:?}",
                store.warnings()
            );
            let want = if new_visible { "new" } else { "old" };
            assert_eq!(description(&store, "a").as_deref(), Some(want), "{stage:?}");
            assert_eq!(description(&store, "b").as_deref(), Some("other"));
            assert!(
                !files(&tmp.path().join(CHALLENGES))
                    .iter()
                    .any(|f| f.starts_with(TMP_PREFIX)),
                "{stage:?}: temp files are removed"
            );
            // The store keeps working and versions keep increasing.
            let current = store.get("a").unwrap().resource_version;
            assert!(
                store
                    .put("a", manifest("a", "next"), Some(current))
                    .unwrap()
                    > current
            );
        }
    }

    #[test]
    fn a_crash_at_any_point_of_a_delete_or_lifecycle_change_leaves_a_readable_store() {
        for (stage, gone) in [
            (Stage::TempWritten, false),
            (Stage::Renamed, false),
            (Stage::VersionSaved, false),
            (Stage::Unlinked, true),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let store = open(tmp.path());
            let v1 = store.put("a", manifest("a", "old"), None).unwrap();
            arm(stage);
            assert!(store.delete("a", Some(v1)).is_err(), "{stage:?}");
            drop(store);
            let store = open(tmp.path());
            assert!(
                store.warnings().is_empty(),
                "{stage:?}: {:?}",
                store.warnings()
            );
            assert_eq!(store.get("a").is_none(), gone, "{stage:?}");
            assert!(store.put("a", manifest("a", "new"), None).unwrap() > v1);
        }
        for stage in [Stage::TempTorn, Stage::TempSynced, Stage::Renamed] {
            let tmp = tempfile::tempdir().unwrap();
            let store = open(tmp.path());
            store.set_deployed("a", false).unwrap();
            arm(stage);
            assert!(store.set_deployed("a", true).is_err());
            drop(store);
            let store = open(tmp.path());
            assert!(
                store.warnings().is_empty(),
                "{stage:?}: {:?}",
                store.warnings()
            );
            assert_eq!(store.deployed("a"), stage == Stage::Renamed, "{stage:?}");
        }
    }

    /// A file torn in place (a filesystem without atomic rename) is reported and moved aside;
    /// the other challenges still load.
    #[test]
    fn a_truncated_challenge_file_is_reported_and_the_rest_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        store.put("a", manifest("a", "1"), None).unwrap();
        store.put("b", manifest("b", "1"), None).unwrap();
        drop(store);
        let path = tmp.path().join(CHALLENGES).join("a.json");
        let full = std::fs::read(&path).unwrap();
        for len in [0, 1, full.len() / 2, full.len() - 3] {
            std::fs::write(&path, &full[..len]).unwrap();
            let store = open(tmp.path());
            assert_eq!(store.get("a"), None, "{len}");
            assert_eq!(description(&store, "b").as_deref(), Some("1"));
            assert_eq!(store.warnings().len(), 1, "{len}: {:?}", store.warnings());
            assert!(store.warnings()[0].contains("a.json"));
            assert!(!path.exists());
        }
    }

    #[test]
    fn a_corrupt_version_file_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let v = store.put("a", manifest("a", "1"), None).unwrap();
        drop(store);
        std::fs::write(tmp.path().join(VERSION_FILE), b"12x").unwrap();
        let store = open(tmp.path());
        assert_eq!(store.warnings().len(), 1, "{:?}", store.warnings());
        assert!(store.put("b", manifest("b", "1"), None).unwrap() > v);
    }

    #[test]
    fn concurrent_puts_are_all_durable_with_unique_versions() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    for i in 0..50 {
                        let name = if i % 2 == 0 {
                            format!("own-{t}")
                        } else {
                            "shared".to_string()
                        };
                        let text = format!("{t}-{i}");
                        let version = store.put(&name, manifest(&name, &text), None).unwrap();
                        acked.push((name, version, text));
                    }
                    acked
                })
            })
            .collect();
        let acked: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(acked.len(), 400);
        let versions: BTreeSet<u64> = acked.iter().map(|(_, v, _)| *v).collect();
        assert_eq!(versions.len(), 400, "versions are unique");

        // For each name, the acknowledged write with the highest version is what a restart reads.
        let mut last: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
        for (name, version, text) in &acked {
            let entry = last.entry(name).or_insert((0, ""));
            if *version > entry.0 {
                *entry = (*version, text);
            }
        }
        drop(store);
        let store = open(tmp.path());
        assert!(store.warnings().is_empty());
        assert_eq!(store.list().len(), 9);
        for (name, (version, text)) in last {
            let stored = store.get(name).unwrap();
            assert_eq!(stored.resource_version, version, "{name}");
            assert_eq!(stored.manifest.spec.description.as_deref(), Some(text));
        }
    }

    #[test]
    fn a_poisoned_lock_does_not_break_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let clone = store.clone();
        let _ = std::thread::spawn(move || {
            let _guard = clone.inner.lock().unwrap();
            panic!("poison");
        })
        .join();
        store.put("a", manifest("a", "1"), None).unwrap();
        assert!(store.get("a").is_some());
    }
}
