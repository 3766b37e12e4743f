//! GitOps: a branch of a git repository as a manifest directory (`beast run --git URL`).
//!
//! Everything lives under `<state-dir>/git/`:
//!
//! - `repo/`: a bare repository used only for fetching. The remote's URL is handed to git through
//!   `GIT_CONFIG_*` environment variables on every call, so it is never written to disk and never
//!   shows in the process list; a changed `--git` URL simply takes effect on the next fetch.
//! - `trees/<commit>/`: a plain checkout of one commit (no `.git`), written under a temporary
//!   name and renamed into place once complete.
//! - `current`: a relative symlink to `trees/<commit>`, switched atomically (a new symlink
//!   `current.tmp` renamed over `current`), so a reader going through `current` sees either the
//!   old tree or the new one, never a half-written checkout. The tree `current` pointed at before
//!   the switch is kept (a scan in progress may still be reading it); older trees are removed.
//!
//! The operator watches `<state-dir>/git/current` as one more manifest root, but rescans it
//! explicitly after a switch ([`SyncOutcome::changed`]) instead of relying on file events: a
//! notify watch follows the directory a symlink pointed at when it was attached.
//!
//! A fetch that fails (remote down, branch gone, bad credentials) is an error and leaves `current`
//! as it was, so everything keeps running; a force push is just another commit to check out.
//! Credentials in the URL (`https://user:token@host/...`) never appear in errors or logs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// How long one git command may take before it is killed (a hung remote must not wedge syncing).
const GIT_TIMEOUT: Duration = Duration::from_secs(300);

/// Errors of syncing a git source. Messages carry git's own (trimmed) complaint and never the
/// URL's credentials.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git {command} failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("git {command} took longer than {}s", .timeout.as_secs())]
    Timeout { command: String, timeout: Duration },
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("git {command} printed an unexpected commit id {output:?}")]
    BadCommit { command: String, output: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a successful [`GitSource::sync`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    /// The commit `current` now points at.
    pub commit: String,
    /// Whether `current` was switched (the manifests may have changed: rescan).
    pub changed: bool,
}

/// The last known state of a git source, for the status view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitStatus {
    /// The remote, without credentials.
    pub url: String,
    pub branch: String,
    /// The commit the manifests are read from.
    pub commit: Option<String>,
    /// When the last sync succeeded (RFC 3339).
    pub last_sync: Option<String>,
    /// Why the last sync failed; `None` once one succeeds.
    pub last_error: Option<String>,
}

/// One branch of one remote repository, checked out under a state directory.
#[derive(Debug)]
pub struct GitSource {
    url: String,
    branch: String,
    dir: PathBuf,
    /// One sync at a time (the periodic loop and a webhook may race).
    syncing: tokio::sync::Mutex<()>,
    status: Mutex<GitStatus>,
}

impl GitSource {
    /// A source for `branch` of `url`, kept under `dir` (normally `<state-dir>/git`). Nothing is
    /// fetched until [`GitSource::sync`].
    pub fn new(url: impl Into<String>, branch: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        let (url, branch, dir) = (url.into(), branch.into(), dir.into());
        let mut source = GitSource {
            status: Mutex::new(GitStatus {
                url: redact_url(&url),
                branch: branch.clone(),
                ..GitStatus::default()
            }),
            url,
            branch,
            dir,
            syncing: tokio::sync::Mutex::new(()),
        };
        let commit = source.current_commit();
        source.status_mut().commit = commit;
        source
    }

    /// The manifests directory to watch: `<dir>/current` (a symlink to the checked-out tree).
    pub fn tree(&self) -> PathBuf {
        self.dir.join("current")
    }

    /// The remote without credentials, fit for logs.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }

    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The commit `current` points at, if any (also after a restart, before the first sync).
    pub fn current_commit(&self) -> Option<String> {
        let target = std::fs::read_link(self.tree()).ok()?;
        let name = target.file_name()?.to_str()?;
        is_commit_id(name).then(|| name.to_string())
    }

    /// The last known state, for the status view.
    pub fn status(&self) -> GitStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn status_mut(&mut self) -> &mut GitStatus {
        self.status.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    /// Fetches the branch (creating the repository on first use) and, if its commit is not the
    /// one checked out, checks it out and switches `current` to it. On error `current` is left
    /// untouched; the error is also recorded in [`GitSource::status`].
    pub async fn sync(&self) -> Result<SyncOutcome, GitError> {
        let _one = self.syncing.lock().await;
        let result = self.sync_locked().await;
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(outcome) => {
                status.commit = Some(outcome.commit.clone());
                status.last_sync = Some(crate::status::now_rfc3339());
                status.last_error = None;
            }
            Err(err) => status.last_error = Some(err.to_string()),
        }
        result
    }

    async fn sync_locked(&self) -> Result<SyncOutcome, GitError> {
        self.ensure_repo().await?;
        self.fetch().await?;
        let commit = self.resolve().await?;
        let before = self.current_commit();
        if before.as_deref() == Some(commit.as_str()) && self.tree().is_dir() {
            return Ok(SyncOutcome {
                commit,
                changed: false,
            });
        }
        self.checkout(&commit).await?;
        self.switch(&commit)?;
        self.prune(&commit, before.as_deref());
        Ok(SyncOutcome {
            commit,
            changed: true,
        })
    }

    fn repo(&self) -> PathBuf {
        self.dir.join("repo")
    }

    fn trees(&self) -> PathBuf {
        self.dir.join("trees")
    }

    /// Creates the bare repository if it is missing or broken (an interrupted first run).
    async fn ensure_repo(&self) -> Result<(), GitError> {
        let repo = self.repo();
        if repo.join("HEAD").is_file() && repo.join("objects").is_dir() {
            return Ok(());
        }
        if repo.exists() {
            std::fs::remove_dir_all(&repo).map_err(io(&repo))?;
        }
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let tmp = self.dir.join("repo.tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        let tmp_arg = tmp.to_string_lossy().into_owned();
        self.git(None, &["init", "--quiet", "--bare", &tmp_arg], &[])
            .await?;
        std::fs::rename(&tmp, &repo).map_err(io(&repo))?;
        Ok(())
    }

    async fn fetch(&self) -> Result<(), GitError> {
        let refspec = format!("+refs/heads/{0}:refs/remotes/origin/{0}", self.branch);
        let repo = self.repo();
        self.git(
            Some(&repo),
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--force",
                "origin",
                &refspec,
            ],
            &[],
        )
        .await
        .map(drop)
    }

    async fn resolve(&self) -> Result<String, GitError> {
        let rev = format!("refs/remotes/origin/{}^{{commit}}", self.branch);
        let repo = self.repo();
        let out = self
            .git(
                Some(&repo),
                &["rev-parse", "--verify", "--quiet", &rev],
                &[],
            )
            .await?;
        let commit = out.trim().to_string();
        if is_commit_id(&commit) {
            Ok(commit)
        } else {
            Err(GitError::BadCommit {
                command: "rev-parse".to_string(),
                output: commit,
            })
        }
    }

    /// Writes `trees/<commit>` completely (through a temporary directory and index).
    async fn checkout(&self, commit: &str) -> Result<(), GitError> {
        let trees = self.trees();
        let target = trees.join(commit);
        if target.is_dir() {
            return Ok(()); // checked out before (a switch back to the previous commit)
        }
        let tmp = trees.join(format!("{commit}.tmp"));
        let index = trees.join(format!("{commit}.index"));
        for stale in [&tmp, &index] {
            remove_any(stale)?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let repo = self.repo();
        let env = [("GIT_INDEX_FILE", index.as_os_str())];
        let result = async {
            self.git(Some(&repo), &["read-tree", commit], &env).await?;
            let work_tree = format!("--work-tree={}", tmp.to_string_lossy());
            self.git(
                Some(&repo),
                &[&work_tree, "checkout-index", "--all", "--force"],
                &env,
            )
            .await
        }
        .await;
        let _ = std::fs::remove_file(&index);
        if let Err(err) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(err);
        }
        std::fs::rename(&tmp, &target).map_err(io(&target))
    }

    /// Points `current` at `trees/<commit>` in one rename.
    fn switch(&self, commit: &str) -> Result<(), GitError> {
        let link = self.tree();
        let tmp = self.dir.join("current.tmp");
        remove_any(&tmp)?;
        let target = Path::new("trees").join(commit);
        std::os::unix::fs::symlink(&target, &tmp).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &link).map_err(io(&link))?;
        tracing::info!(url = %self.display_url(), branch = %self.branch, %commit, "git: switched to a new commit");
        Ok(())
    }

    /// Removes every tree but `keep` and `previous` (a scan may still read the previous one).
    fn prune(&self, keep: &str, previous: Option<&str>) {
        let trees = self.trees();
        let Ok(entries) = std::fs::read_dir(&trees) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == keep || Some(name.as_ref()) == previous {
                continue;
            }
            if let Err(err) = remove_any(&entry.path()) {
                tracing::warn!(error = %err, "git: cannot remove an old tree");
            }
        }
    }

    /// Runs git with the remote configured through the environment; returns its stdout.
    async fn git(
        &self,
        repo: Option<&Path>,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<String, GitError> {
        let command = args
            .iter()
            .find(|a| !a.starts_with('-'))
            .copied()
            .unwrap_or("git")
            .to_string();
        let mut cmd = tokio::process::Command::new("git");
        if let Some(repo) = repo {
            cmd.arg("--git-dir").arg(repo);
        }
        cmd.args(args)
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "remote.origin.url")
            .env("GIT_CONFIG_VALUE_0", &self.url)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "true")
            .env("LC_ALL", "C")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = match tokio::time::timeout(GIT_TIMEOUT, cmd.output()).await {
            Err(_) => {
                return Err(GitError::Timeout {
                    command,
                    timeout: GIT_TIMEOUT,
                })
            }
            Ok(out) => out.map_err(GitError::Spawn)?,
        };
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut message = redact_text(&clean_stderr(&stderr), &self.url);
        if message.is_empty() {
            message = out.status.to_string();
        }
        Err(GitError::Command {
            command,
            stderr: message,
        })
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GitError + '_ {
    move |source| GitError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Removes a file, symlink or directory tree; a missing one is fine.
fn remove_any(path: &Path) -> Result<(), GitError> {
    let result = match std::fs::symlink_metadata(path) {
        Err(_) => return Ok(()),
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// A full SHA-1 or SHA-256 object id in lowercase hex.
fn is_commit_id(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// git's complaint on one line: non-empty lines joined with `; `.
fn clean_stderr(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `url` without the `user:password@` of its authority (`https://u:p@host/x` → `https://host/x`).
pub fn redact_url(url: &str) -> String {
    match userinfo(url) {
        Some(info) => url.replacen(&format!("{info}@"), "", 1),
        None => url.to_string(),
    }
}

/// The `user[:password]` part of a `scheme://user[:password]@host/...` URL.
fn userinfo(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let (info, _) = authority.rsplit_once('@')?;
    (!info.is_empty()).then_some(info)
}

/// `text` with `url`'s credentials removed wherever they appear.
fn redact_text(text: &str, url: &str) -> String {
    let mut text = text.replace(url, &redact_url(url));
    if let Some(info) = userinfo(url) {
        text = text.replace(&format!("{info}@"), "");
        if let Some((_, password)) = info.split_once(':') {
            if !password.is_empty() {
                text = text.replace(password, "***");
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_stripped_from_urls() {
        assert_eq!(
            redact_url("https://bot:s3cret@git.example/ctf/challenges.git"),
            "https://git.example/ctf/challenges.git"
        );
        assert_eq!(
            redact_url("https://git.example/a@b.git"),
            "https://git.example/a@b.git"
        );
        assert_eq!(
            redact_url("git@github.com:org/repo.git"),
            "git@github.com:org/repo.git"
        );
        assert_eq!(redact_url("file:///srv/repo.git"), "file:///srv/repo.git");
    }

    #[test]
    fn credentials_are_stripped_from_git_messages() {
        let url = "https://bot:s3cret@git.example/x.git";
        let text = "fatal: unable to access 'https://bot:s3cret@git.example/x.git/': 403; s3cret";
        let out = redact_text(text, url);
        assert!(!out.contains("s3cret"), "{out}");
        assert!(!out.contains("bot"), "{out}");
        assert!(out.contains("https://git.example/x.git/"), "{out}");
    }

    #[test]
    fn stderr_becomes_one_line() {
        assert_eq!(
            clean_stderr("fatal: a\n\n  fatal: b  \n"),
            "fatal: a; fatal: b"
        );
    }

    #[test]
    fn commit_ids_are_full_lowercase_hex() {
        assert!(is_commit_id(&"a".repeat(40)));
        assert!(is_commit_id(&"0".repeat(64)));
        assert!(!is_commit_id("abc123"));
        assert!(!is_commit_id(&"A".repeat(40)));
        assert!(!is_commit_id(&format!("{}.tmp", "a".repeat(36))));
    }

    #[test]
    fn no_current_tree_means_no_commit() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let source = GitSource::new("file:///nowhere", "main", dir.path());
        assert_eq!(source.current_commit(), None);
        assert_eq!(source.tree(), dir.path().join("current"));
    }
}
