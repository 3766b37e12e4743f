//! Which changed files matter to a build context: the watcher's paths are matched against a
//! challenge's `spec.build` with the same `.dockerignore` rules [`super::context`] packs by, so a
//! file the build would not send never triggers a rebuild.
//!
//! Pure file-system reads (the context's `.dockerignore`); deciding what to enqueue is the
//! operator's job.

use std::path::{Component, Path, PathBuf};

use super::context::read_dockerignore;
use crate::model::BuildSpec;

/// A context's root and the rules of what it sends, read once for a burst of changes.
#[derive(Debug)]
pub struct ContextFilter {
    root: PathBuf,
    dockerfile: String,
    /// `None` when the `.dockerignore` cannot be read or parsed: then every change matters (the
    /// next build reports the problem).
    matcher: Option<super::ignore::Matcher>,
}

impl ContextFilter {
    /// The filter of `spec` as its files are now.
    pub fn new(spec: &BuildSpec) -> ContextFilter {
        let root = spec
            .context
            .canonicalize()
            .unwrap_or_else(|_| spec.context.clone());
        let dockerfile = super::ignore::clean(&spec.dockerfile);
        let matcher = read_dockerignore(&root).ok().map(|mut m| {
            m.keep(&dockerfile);
            m.keep(".dockerignore");
            m
        });
        ContextFilter {
            root,
            dockerfile,
            matcher,
        }
    }

    /// Whether a change of `path` (absolute) can change what a build of this context sends:
    /// it lies under the context and is not `.dockerignore`d. The context directory itself, the
    /// Dockerfile and the `.dockerignore` always matter.
    pub fn matters(&self, path: &Path) -> bool {
        let Ok(rel) = path.strip_prefix(&self.root) else {
            return false;
        };
        let mut parts = Vec::new();
        for component in rel.components() {
            match component {
                Component::Normal(part) => match part.to_str() {
                    Some(part) => parts.push(part),
                    // A name the context refuses to pack: the build will say so.
                    None => return true,
                },
                _ => return true,
            }
        }
        let rel = parts.join("/");
        if rel.is_empty() || rel == ".dockerignore" || rel == self.dockerfile {
            return true;
        }
        match &self.matcher {
            Some(matcher) => !matcher.excludes(&rel),
            None => true,
        }
    }

    /// Whether any of `paths` matters.
    pub fn any_matters<'a>(&self, paths: impl IntoIterator<Item = &'a PathBuf>) -> bool {
        paths.into_iter().any(|p| self.matters(p))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;

    use super::*;

    fn context(ignore: Option<&str>) -> (tempfile::TempDir, BuildSpec, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("shared");
        fs::create_dir_all(ctx.join("www")).unwrap();
        fs::write(ctx.join("Dockerfile"), "FROM scratch\n").unwrap();
        if let Some(text) = ignore {
            fs::write(ctx.join(".dockerignore"), text).unwrap();
        }
        let spec = BuildSpec {
            context: ctx.clone(),
            dockerfile: "Dockerfile".into(),
            args: BTreeMap::new(),
        };
        let root = ctx.canonicalize().unwrap();
        (dir, spec, root)
    }

    #[test]
    fn files_under_the_context_matter_others_do_not() {
        let (dir, spec, root) = context(None);
        let filter = ContextFilter::new(&spec);
        assert!(filter.matters(&root.join("www/index.html")));
        assert!(filter.matters(&root));
        let outside = dir.path().canonicalize().unwrap().join("other/index.html");
        assert!(!filter.matters(&outside));
        // A sibling whose name starts like the context is not inside it.
        let sibling = dir.path().canonicalize().unwrap().join("shared2/x");
        assert!(!filter.matters(&sibling));
    }

    #[test]
    fn ignored_files_do_not_matter_but_exceptions_and_the_build_files_do() {
        let (_dir, spec, root) = context(Some(
            "*.md\nnotes/\n!notes/keep.txt\nDockerfile\n.dockerignore\n",
        ));
        let filter = ContextFilter::new(&spec);
        assert!(!filter.matters(&root.join("README.md")));
        assert!(!filter.matters(&root.join("notes/todo.txt")));
        assert!(!filter.matters(&root.join("notes")));
        assert!(filter.matters(&root.join("notes/keep.txt")));
        assert!(filter.matters(&root.join("www/index.html")));
        // Always sent, whatever the patterns say.
        assert!(filter.matters(&root.join("Dockerfile")));
        assert!(filter.matters(&root.join(".dockerignore")));
    }

    #[test]
    fn an_unreadable_dockerignore_makes_every_change_matter() {
        let (_dir, spec, root) = context(Some("!\n"));
        let filter = ContextFilter::new(&spec);
        assert!(filter.matters(&root.join("README.md")));
    }
}
