//! `beast plan`: the reconciler's plan for every challenge, printed for a terminal, without
//! executing anything. Replacements are explained field by field (one inspect per replaced
//! container: fine for a dry run, never done on the hot path). With `--git`, the branch is
//! checked out by the same [`GitSource`] `beast run` uses, into a temporary directory.

use std::fmt::Write;
use std::path::PathBuf;

use crate::containers::diff;
use crate::plan::{Op, Why};
use crate::reconcile::{describe, Reconciler};
use crate::runtime::{Runtime, RuntimeError};
use crate::source::git::{GitError, GitSource};

/// Why the git tree of a plan could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("cannot create a temporary directory for the git checkout: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("git {url} (branch {branch}): {source}")]
    Git {
        url: String,
        branch: String,
        #[source]
        source: GitError,
    },
}

/// Fetches `branch` of `url` into a new temporary directory, as `beast run --git` would check it
/// out. Returns the directory (removed when dropped: keep it until the plan is printed), the
/// manifest root to scan, and a line naming the commit the plan is made from.
pub async fn checkout(
    url: &str,
    branch: &str,
) -> Result<(tempfile::TempDir, PathBuf, String), CheckoutError> {
    let dir = tempfile::Builder::new()
        .prefix("beast-plan-git-")
        .tempdir()
        .map_err(CheckoutError::TempDir)?;
    let source = GitSource::new(url, branch, dir.path().join("git"));
    let outcome = source
        .sync()
        .await
        .map_err(|source_err| CheckoutError::Git {
            url: source.display_url(),
            branch: branch.to_string(),
            source: source_err,
        })?;
    let heading = format!(
        "Planned from git {} (branch {branch}) at commit {}.\n",
        source.display_url(),
        outcome.commit
    );
    Ok((dir, source.tree(), heading))
}

/// Counts of a plan, for the summary line and the exit code.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub create: usize,
    pub replace: usize,
    pub remove: usize,
    pub other: usize,
    pub errors: usize,
}

impl Summary {
    pub fn is_empty(&self) -> bool {
        *self == Summary::default()
    }
}

/// Renders the plan as text.
pub async fn render<R: Runtime>(
    reconciler: &Reconciler<R>,
) -> Result<(String, Summary), RuntimeError> {
    let plan = reconciler.dry_run().await?;
    let mut out = String::new();
    let mut sum = Summary::default();
    let total = reconciler.store.len();
    let in_sync = reconciler
        .store
        .names()
        .iter()
        .filter(|n| !plan.contains_key(*n))
        .count();
    for entry in reconciler.store.snapshot().iter().filter(|e| !e.is_valid()) {
        let _ = writeln!(
            out,
            "{}: invalid (the last valid spec stays deployed)",
            entry.name
        );
        for e in &entry.errors {
            let _ = writeln!(out, "  ! {e}");
        }
    }
    for (name, ops) in &plan {
        let label = if name.is_empty() {
            "(unlabelled containers of this instance)"
        } else {
            name
        };
        let _ = writeln!(out, "{label}:");
        match ops {
            Err(err) => {
                sum.errors += 1;
                let _ = writeln!(out, "  ! {err}");
            }
            Ok(ops) => {
                for op in ops {
                    let mark = match op {
                        Op::Create { .. } => {
                            sum.create += 1;
                            '+'
                        }
                        Op::Replace { .. } => {
                            sum.replace += 1;
                            '~'
                        }
                        Op::Remove { .. } => {
                            sum.remove += 1;
                            '-'
                        }
                        Op::Start { .. } | Op::Unpause { .. } => {
                            sum.other += 1;
                            '>'
                        }
                    };
                    let _ = writeln!(out, "  {mark} {}", describe(op));
                    if let Op::Replace {
                        slot,
                        old,
                        why: Why::SpecChanged { .. },
                    } = op
                    {
                        for line in explain(reconciler, name, slot, &old.id).await {
                            let _ = writeln!(out, "      {line}");
                        }
                    }
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "\n{} challenges, {in_sync} in sync. Plan: {} to create, {} to replace, {} to remove, {} to start.{}",
        total,
        sum.create,
        sum.replace,
        sum.remove,
        sum.other,
        if sum.errors > 0 { format!(" {} cannot be planned.", sum.errors) } else { String::new() }
    );
    Ok((out, sum))
}

async fn explain<R: Runtime>(
    reconciler: &Reconciler<R>,
    name: &str,
    slot: &crate::plan::Slot,
    id: &str,
) -> Vec<String> {
    let Some(new) = reconciler.wanted_spec(name, slot).await else {
        return Vec::new();
    };
    match reconciler.runtime.inspect(id).await {
        Ok(old) => {
            let fields = diff(&old, &new);
            if fields.is_empty() {
                vec!["(created by another version of beast; same settings, new hash)".to_string()]
            } else {
                fields
            }
        }
        Err(err) => vec![format!("(cannot inspect the old container: {err})")],
    }
}
