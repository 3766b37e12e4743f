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

/// What a write requires of the current version.
#[derive(Clone, Copy)]
enum Precondition {
    Any,
    Matches(u64),
    Absent,
}

impl Precondition {
    fn from_if_match(if_match: Option<u64>) -> Precondition {
        if_match.map_or(Precondition::Any, Precondition::Matches)
    }

    fn check(self, current: Option<u64>) -> Result<(), StoreError> {
        let ok = match self {
            Precondition::Any => true,
            Precondition::Matches(v) => current == Some(v),
            Precondition::Absent => current.is_none(),
        };
        if ok {
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
        self.write(name, manifest, Precondition::from_if_match(if_match))
    }

    /// Stores `manifest` as `name` only if no challenge of that name is stored (`POST`);
    /// otherwise [`StoreError::Conflict`] with the current version.
    pub fn create(&self, name: &str, manifest: raw::Manifest) -> Result<u64, StoreError> {
        self.write(name, manifest, Precondition::Absent)
    }

    /// Removes the challenge `name`; whether it existed. With `if_match`, the current version
    /// must equal it. The lifecycle record is kept (see [`ApiStore::forget_lifecycle`]).
    pub fn delete(&self, name: &str, if_match: Option<u64>) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let current = inner.challenges.get(name).map(|s| s.resource_version);
        Precondition::from_if_match(if_match).check(current)?;
        if current.is_none() {
            return Ok(false);
        }
        let path = inner.dir.join(CHALLENGES).join(file_name(name));
        inner.remove_file(&path)?;
        inner.challenges.remove(name);
        Ok(true)
    }

    /// Whether `name` should be deployed: true unless it was undeployed.
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
        precondition: Precondition,
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
