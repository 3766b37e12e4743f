//! A watched directory of manifests: scanning it into a [`DirSnapshot`] and watching it (notify)
//! with a debounce, so an editor's atomic save or a `git pull` touching hundreds of files becomes
//! one rescan.
//!
//! A directory that is missing or unreadable yields no snapshot at all (and so prunes nothing);
//! a file that cannot be read or parsed yields file errors that keep its challenges as they were.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::desired::{Claim, DirSnapshot};
use crate::manifest::{self, DocOutcome};

/// Errors of a directory source.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("manifest directory {path} cannot be read: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// Scans `root` completely. Files are named in messages as `root` joined with their relative path.
pub fn scan(root: &Path) -> Result<DirSnapshot, DirError> {
    let unreadable = |message: String| DirError::Unreadable {
        path: root.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(root).map_err(|e| unreadable(e.to_string()))?;
    if !meta.is_dir() {
        return Err(unreadable("not a directory".to_string()));
    }
    std::fs::read_dir(root).map_err(|e| unreadable(e.to_string()))?;
    let files = manifest::discover(root).map_err(|e| unreadable(e.to_string()))?;
    let mut snapshot = DirSnapshot {
        commit: checkout_commit(root),
        ..DirSnapshot::default()
    };
    for path in files {
        let display = display_name(root, &path);
        match manifest::load_file(&path, root, &display) {
            Err(err) => snapshot
                .file_errors
                .entry(display)
                .or_default()
                .push(err.to_string()),
            Ok(parsed) => {
                for doc in parsed.docs {
                    match doc {
                        DocOutcome::Valid { challenge, raw, .. } => snapshot
                            .claims
                            .entry(challenge.name.clone())
                            .or_default()
                            .push((
                                display.clone(),
                                Claim::Valid {
                                    challenge: Box::new(challenge),
                                    raw: Some(raw),
                                },
                            )),
                        DocOutcome::Invalid {
                            name: Some(name),
                            errors,
                            ..
                        } => {
                            let errors = errors.iter().map(ToString::to_string).collect();
                            snapshot
                                .claims
                                .entry(name)
                                .or_default()
                                .push((display.clone(), Claim::Invalid(errors)));
                        }
                        DocOutcome::Invalid {
                            name: None, errors, ..
                        } => snapshot
                            .file_errors
                            .entry(display.clone())
                            .or_default()
                            .extend(errors.iter().map(ToString::to_string)),
                    }
                }
            }
        }
    }
    Ok(snapshot)
}

/// The commit of a git checkout root: the `--git` source's `current` link points at a tree
/// named after its commit.
fn checkout_commit(root: &Path) -> Option<String> {
    let target = std::fs::read_link(root).ok()?;
    let name = target.file_name()?.to_str()?;
    let is_sha =
        (name.len() == 40 || name.len() == 64) && name.chars().all(|c| c.is_ascii_hexdigit());
    is_sha.then(|| name.to_string())
}

/// How a file is named in messages and in `source`: the root as given plus the relative path.
pub fn display_name(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap_or(file);
    root.join(rel)
        .to_string_lossy()
        .trim_start_matches("./")
        .to_string()
}

/// Whether a changed path can matter: not inside a dot-directory, not an editor's swap file.
fn relevant(root: &Path, path: &Path) -> bool {
    let rel = path.strip_prefix(root).unwrap_or(path);
    !rel.components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
}

/// What changed during one burst of file events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Burst {
    /// The paths events named (absolute, under the watched roots).
    pub paths: BTreeSet<PathBuf>,
    /// Anything may have changed: a root was (re)attached, the watcher reported an error or an
    /// event without paths, or more than [`MAX_BURST_PATHS`] paths changed.
    pub everything: bool,
}

impl Burst {
    /// Whether a rescan of the manifests is needed: something changed outside a dot-directory
    /// or an editor's swap file of `roots`.
    pub fn touches_manifests(&self, roots: &[PathBuf]) -> bool {
        self.everything
            || self
                .paths
                .iter()
                .any(|p| roots.iter().any(|r| !p.starts_with(r) || relevant(r, p)))
    }

    fn add(&mut self, paths: Vec<PathBuf>) {
        if paths.is_empty() {
            self.everything = true;
        }
        if self.everything {
            return;
        }
        self.paths.extend(paths);
        if self.paths.len() > MAX_BURST_PATHS {
            self.paths.clear();
            self.everything = true;
        }
    }
}

/// Paths remembered per burst; beyond, the burst counts as "everything changed".
pub const MAX_BURST_PATHS: usize = 4096;

/// Watches `roots` and sends one [`Burst`] on `tx` per burst of changes (quiet for `quiet`, but
/// at most `max_delay` after the first change). Every path is reported, dot-files included
/// (a build context may send them); [`Burst::touches_manifests`] tells whether to rescan. Roots
/// that vanish are re-watched when they return. Runs until `tx` is closed.
pub async fn watch(
    roots: Vec<PathBuf>,
    tx: mpsc::Sender<Burst>,
    quiet: Duration,
    max_delay: Duration,
) {
    // An empty list: the watcher failed or named no path; anything may have changed.
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            let _ = raw_tx.send(Vec::new());
            return;
        };
        if event.kind.is_access() {
            return;
        }
        let _ = raw_tx.send(event.paths);
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(err) => {
            tracing::error!(error = %err, "cannot create a file watcher; relying on periodic resync");
            return;
        }
    };
    let mut watched: Vec<bool> = vec![false; roots.len()];
    let mut recheck = tokio::time::interval(Duration::from_secs(2));
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // (Re)watch roots that exist and are not watched (a directory deleted and recreated).
        for (i, root) in roots.iter().enumerate() {
            let exists = root.is_dir();
            if exists && !watched[i] {
                match watcher.watch(root, RecursiveMode::Recursive) {
                    Ok(()) => {
                        watched[i] = true;
                        tracing::debug!(root = %root.display(), "watching");
                        let _ = tx.try_send(Burst {
                            everything: true,
                            ..Burst::default()
                        });
                    }
                    Err(err) => {
                        tracing::warn!(root = %root.display(), error = %err, "cannot watch directory")
                    }
                }
            } else if !exists && watched[i] {
                let _ = watcher.unwatch(root);
                watched[i] = false;
                tracing::warn!(root = %root.display(), "watched directory is gone; keeping its challenges");
            }
        }
        let mut burst = Burst::default();
        tokio::select! {
            _ = tx.closed() => return,
            _ = recheck.tick() => continue,
            got = raw_rx.recv() => match got {
                Some(paths) => burst.add(paths),
                None => return,
            }
        }
        // Debounce: wait until the burst is quiet, bounded by max_delay.
        let deadline = tokio::time::Instant::now() + max_delay;
        loop {
            let quiet_until = (tokio::time::Instant::now() + quiet).min(deadline);
            tokio::select! {
                _ = tokio::time::sleep_until(quiet_until) => break,
                got = raw_rx.recv() => {
                    let Some(paths) = got else { break };
                    burst.add(paths);
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        if tx.send(burst).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_keep_the_root_as_given() {
        assert_eq!(
            display_name(
                Path::new("challenges"),
                Path::new("challenges/echo/challenge.yaml")
            ),
            "challenges/echo/challenge.yaml"
        );
        assert_eq!(
            display_name(Path::new("./c"), Path::new("./c/a.yaml")),
            "c/a.yaml"
        );
    }

    #[test]
    fn dot_directories_do_not_matter() {
        assert!(!relevant(Path::new("/r"), Path::new("/r/.git/index")));
        assert!(relevant(
            Path::new("/r"),
            Path::new("/r/echo/challenge.yaml")
        ));
    }

    #[test]
    fn a_burst_of_dot_files_needs_no_rescan_but_keeps_its_paths() {
        let roots = vec![PathBuf::from("/r")];
        let mut burst = Burst::default();
        burst.add(vec![PathBuf::from("/r/web/.env")]);
        assert!(!burst.touches_manifests(&roots));
        assert_eq!(burst.paths.len(), 1);
        burst.add(vec![PathBuf::from("/r/web/www/index.html")]);
        assert!(burst.touches_manifests(&roots));
    }

    #[test]
    fn an_event_without_paths_or_too_many_paths_is_everything() {
        let mut burst = Burst::default();
        burst.add(Vec::new());
        assert!(burst.everything && burst.paths.is_empty());
        let mut many = Burst::default();
        many.add(
            (0..=MAX_BURST_PATHS)
                .map(|n| PathBuf::from(format!("/r/{n}")))
                .collect(),
        );
        assert!(many.everything && many.paths.is_empty());
        assert!(many.touches_manifests(&[PathBuf::from("/r")]));
    }

    #[test]
    fn a_missing_directory_is_unreadable_not_empty() {
        assert!(matches!(
            scan(Path::new("/nonexistent/beast")),
            Err(DirError::Unreadable { .. })
        ));
    }
}
