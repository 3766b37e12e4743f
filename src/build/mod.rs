//! `spec.build`: turns a build context into an image on the engine, at most once per content.
//!
//! [`Builder::ensure`] packs the context ([`context::prepare`], deterministic, `.dockerignore`
//! honoured), names the image by the content hash (`beast-build/<challenge>:<hash>`) and builds only
//! when the engine lacks that tag: unchanged sources cost no build, across restarts of beast too.
//! Builds run under a semaphore (`--build-workers`, default [`default_workers`]), so that many
//! run on the engine at once. The last build's log is kept per challenge.
//! After a successful build, older images of the challenge (this instance's only) are removed but
//! the newest previous one; an image a container still uses is never removed (the engine refuses).
//! A failed build is remembered by its tag: the same content answers the same failure without
//! building again (resyncs must not loop on a broken Dockerfile) until the sources change or
//! [`Builder::retry`] (a redeploy) asks.
//!
//! Not here: deciding when to build or replacing containers (the reconciler does), engine calls
//! (through [`Runtime`] only).

pub mod changes;
pub mod context;
pub mod ignore;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Semaphore;

pub use context::{image_tag, prepare, Context};

use crate::model::BuildSpec;
use crate::runtime::{ImageInfo, Runtime, RuntimeError, LABEL_BUILD_INSTANCE, LABEL_BUILD_OF};

/// Lines of build output kept per challenge (the last ones).
pub const MAX_LOG_LINES: usize = 500;

/// Default of `--build-workers`: two builds per core the process may use (two when the core
/// count cannot be read).
///
/// Measured (docs/benchmarks.md, 2 cores, the engine's legacy builder): a build of a small
/// context spends its time in the engine (creating the step's container, committing the layer),
/// not on a core, so 50 builds took 150 s one at a time, 76 s two at a time and 43 s four at a
/// time. A CPU-heavy build (`RUN make`) gains nothing past one per core, but two per core costs
/// it little; one per core would leave the engine idle half the time on the common case.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1)
        .saturating_mul(2)
}

/// Why a challenge's image could not be had.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Something in the context that must not be sent (escaping symlink, socket, Dockerfile
    /// outside the context, ...).
    #[error("{}: {reason}", path.display())]
    Refused { path: PathBuf, reason: String },
    #[error("{}:{line}: {message}", path.display())]
    Dockerignore {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The context could not be packed ([`BuildError::Io`], `Refused` or `Dockerignore` inside).
    #[error("challenge {challenge}: build context: {cause}")]
    Context {
        challenge: String,
        cause: Box<BuildError>,
    },
    /// The build ran and failed: `message` names the failing step and exit code.
    #[error("challenge {challenge}: build failed: {message}")]
    Failed {
        challenge: String,
        message: String,
        log: Vec<String>,
    },
    #[error("challenge {challenge}: {step}: {source}")]
    Engine {
        challenge: String,
        step: &'static str,
        #[source]
        source: RuntimeError,
    },
}

impl BuildError {
    /// A CamelCase reason for a status condition.
    pub fn reason(&self) -> &'static str {
        match self {
            BuildError::Failed { .. } => "BuildFailed",
            BuildError::Engine { source, .. } if source.is_unavailable() => "EngineUnavailable",
            BuildError::Engine { .. } => "EngineError",
            _ => "BuildContextInvalid",
        }
    }

    /// True when the engine could not be reached: not the challenge's fault.
    pub fn is_engine_outage(&self) -> bool {
        matches!(self, BuildError::Engine { source, .. } if source.is_unavailable())
    }

    /// The build output up to a failure (empty for failures before the build ran).
    pub fn log(&self) -> &[String] {
        match self {
            BuildError::Failed { log, .. } => log,
            _ => &[],
        }
    }
}

/// The image a challenge runs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// `beast-build/<challenge>:<hash>`.
    pub tag: String,
    pub image_id: String,
    /// False when the engine already had the tag (no build ran).
    pub rebuilt: bool,
}

/// Builds challenge images, bounded and at most once per content.
pub struct Builder<R: Runtime> {
    runtime: Arc<R>,
    permits: Semaphore,
    logs: Mutex<HashMap<String, Vec<String>>>,
    /// The last failed build per challenge: (tag, message, log). The same content is not built
    /// again (a resync must not rebuild a broken Dockerfile forever) until [`Builder::retry`].
    failures: Mutex<HashMap<String, Failure>>,
}

/// A failed build: the tag it would have had, the engine's message, the log.
struct Failure {
    tag: String,
    message: String,
    log: Vec<String>,
}

impl<R: Runtime> Builder<R> {
    /// `workers` builds may run at once (at least one).
    pub fn new(runtime: Arc<R>, workers: usize) -> Builder<R> {
        Builder {
            runtime,
            permits: Semaphore::new(workers.max(1)),
            logs: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The image for `spec`: the existing one when the engine has this content's tag, else a
    /// fresh build (then older images of the challenge are pruned). On failure the previous
    /// image is untouched, so what runs keeps running.
    pub async fn ensure(
        &self,
        instance: &str,
        challenge: &str,
        spec: &BuildSpec,
    ) -> Result<Built, BuildError> {
        self.ensure_with(instance, challenge, spec, || {}).await
    }

    /// [`Builder::ensure`], calling `on_build` just before an actual build starts (to show the
    /// `Building` phase only when there is something to build).
    pub async fn ensure_with(
        &self,
        instance: &str,
        challenge: &str,
        spec: &BuildSpec,
        on_build: impl FnOnce() + Send,
    ) -> Result<Built, BuildError> {
        let context = self.prepare(challenge, spec).await?;
        let tag = image_tag(challenge, &context.hash);
        if let Some(built) = self.existing(challenge, &tag).await? {
            return Ok(built);
        }
        if let Some(err) = self.failed_before(challenge, &tag) {
            return Err(err);
        }
        let Ok(_permit) = self.permits.acquire().await else {
            // The semaphore is never closed; answer as if the engine refused.
            return Err(BuildError::Engine {
                challenge: challenge.to_string(),
                step: "waiting for a build slot",
                source: RuntimeError::Unavailable("build slots closed".to_string()),
            });
        };
        // The same content may have been built while this one waited.
        if let Some(built) = self.existing(challenge, &tag).await? {
            return Ok(built);
        }
        on_build();
        let image_id = self.build(instance, challenge, spec, context, &tag).await?;
        self.prune(instance, challenge, &[&image_id]).await;
        Ok(Built {
            tag,
            image_id,
            rebuilt: true,
        })
    }

    /// Lets the next [`Builder::ensure`] build content that failed before (for a redeploy: the
    /// failure may have been transient).
    pub fn retry(&self, challenge: &str) {
        lock(&self.failures).remove(challenge);
    }

    /// The last build's output of `challenge` (empty when none ran since beast started).
    pub fn log(&self, challenge: &str) -> Vec<String> {
        self.logs().get(challenge).cloned().unwrap_or_default()
    }

    /// Removes this instance's built images of `challenge` except those in `keep` and the newest
    /// other one (the previous version). Images a container uses stay (the engine refuses).
    /// Returns the references removed; failures are logged, never fatal.
    pub async fn prune(&self, instance: &str, challenge: &str, keep: &[&str]) -> Vec<String> {
        self.remove_old(instance, challenge, keep, 1).await
    }

    /// Forgets a challenge that is gone: its log and every built image of this instance that no
    /// container uses.
    pub async fn forget(&self, instance: &str, challenge: &str) -> Vec<String> {
        self.logs().remove(challenge);
        self.retry(challenge);
        self.remove_old(instance, challenge, &[], 0).await
    }

    /// Removes the images of `challenge` not in `keep`, but the `spare` newest of them.
    async fn remove_old(
        &self,
        instance: &str,
        challenge: &str,
        keep: &[&str],
        spare: usize,
    ) -> Vec<String> {
        let images = match self
            .runtime
            .list_images_with_label(LABEL_BUILD_OF, challenge)
            .await
        {
            Ok(images) => images,
            Err(err) => {
                tracing::warn!(challenge, error = %err, "listing built images to prune failed");
                return Vec::new();
            }
        };
        let mut old: Vec<_> = images
            .into_iter()
            .filter(|i| i.labels.get(LABEL_BUILD_INSTANCE).map(String::as_str) == Some(instance))
            .filter(|i| !keep.contains(&i.id.as_str()))
            .collect();
        old.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        let prefix = context::tag_prefix(challenge);
        let mut removed = Vec::new();
        for image in old.iter().skip(spare) {
            for reference in references_to_remove(image, &prefix) {
                if self.remove_image(challenge, &reference).await {
                    removed.push(reference);
                }
            }
        }
        removed
    }

    async fn prepare(&self, challenge: &str, spec: &BuildSpec) -> Result<Context, BuildError> {
        let owned = spec.clone();
        let prepared = tokio::task::spawn_blocking(move || prepare(&owned))
            .await
            .map_err(|e| BuildError::Refused {
                path: spec.context.clone(),
                reason: format!("packing the context stopped: {e}"),
            })
            .and_then(|r| r);
        prepared.map_err(|cause| {
            let err = BuildError::Context {
                challenge: challenge.to_string(),
                cause: Box::new(cause),
            };
            self.keep_log(challenge, vec![err.to_string()]);
            err
        })
    }

    async fn existing(&self, challenge: &str, tag: &str) -> Result<Option<Built>, BuildError> {
        let found = self
            .runtime
            .image_id(tag)
            .await
            .map_err(|source| BuildError::Engine {
                challenge: challenge.to_string(),
                step: "looking up the built image",
                source,
            })?;
        Ok(found.map(|image_id| Built {
            tag: tag.to_string(),
            image_id,
            rebuilt: false,
        }))
    }

    /// Runs one build; keeps its log either way.
    async fn build(
        &self,
        instance: &str,
        challenge: &str,
        spec: &BuildSpec,
        context: Context,
        tag: &str,
    ) -> Result<String, BuildError> {
        let labels = BTreeMap::from([
            (LABEL_BUILD_INSTANCE.to_string(), instance.to_string()),
            (LABEL_BUILD_OF.to_string(), challenge.to_string()),
        ]);
        tracing::info!(challenge, tag, "building");
        let result = self
            .runtime
            .build(context.tar, tag, &context.dockerfile, &spec.args, &labels)
            .await;
        match result {
            Ok(out) => {
                self.keep_log(challenge, out.log);
                self.retry(challenge);
                Ok(out.image_id)
            }
            Err(RuntimeError::Build { message, log }) => {
                self.keep_log(challenge, log.clone());
                let failure = Failure {
                    tag: tag.to_string(),
                    message: message.clone(),
                    log: log.clone(),
                };
                lock(&self.failures).insert(challenge.to_string(), failure);
                Err(BuildError::Failed {
                    challenge: challenge.to_string(),
                    message,
                    log,
                })
            }
            Err(source) => {
                self.keep_log(challenge, vec![source.to_string()]);
                Err(BuildError::Engine {
                    challenge: challenge.to_string(),
                    step: "build",
                    source,
                })
            }
        }
    }

    /// True when removed (or gone already).
    async fn remove_image(&self, challenge: &str, reference: &str) -> bool {
        match self.runtime.remove_image(reference).await {
            Ok(()) => {
                tracing::info!(challenge, image = reference, "removed an old build");
                true
            }
            Err(RuntimeError::Conflict(message)) => {
                tracing::debug!(challenge, image = reference, %message, "old build still in use; kept");
                false
            }
            Err(err) => {
                tracing::warn!(challenge, image = reference, error = %err, "removing an old build failed");
                false
            }
        }
    }

    fn keep_log(&self, challenge: &str, mut log: Vec<String>) {
        if log.len() > MAX_LOG_LINES {
            log.drain(..log.len() - MAX_LOG_LINES);
        }
        self.logs().insert(challenge.to_string(), log);
    }

    /// The failure of the last build of `challenge` when it was of this very content.
    fn failed_before(&self, challenge: &str, tag: &str) -> Option<BuildError> {
        let failures = lock(&self.failures);
        let failure = failures.get(challenge)?;
        (failure.tag == tag).then(|| BuildError::Failed {
            challenge: challenge.to_string(),
            message: failure.message.clone(),
            log: failure.log.clone(),
        })
    }

    fn logs(&self) -> MutexGuard<'_, HashMap<String, Vec<String>>> {
        lock(&self.logs)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// beast's own tags of an image; its id when it is dangling (ours only by its labels); nothing
/// when only someone else's tags are left on it.
fn references_to_remove(image: &ImageInfo, prefix: &str) -> Vec<String> {
    if image.tags.is_empty() {
        return vec![image.id.clone()];
    }
    image
        .tags
        .iter()
        .filter(|t| t.starts_with(prefix))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::runtime::fake::FakeRuntime;

    fn tree() -> (tempfile::TempDir, BuildSpec) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        fs::write(dir.path().join("hello.txt"), "1").unwrap();
        let spec = BuildSpec {
            context: dir.path().to_path_buf(),
            dockerfile: "Dockerfile".into(),
            args: BTreeMap::new(),
        };
        (dir, spec)
    }

    fn builder() -> (Arc<FakeRuntime>, Builder<FakeRuntime>) {
        let runtime = Arc::new(FakeRuntime::new());
        (runtime.clone(), Builder::new(runtime, 2))
    }

    #[tokio::test]
    async fn unchanged_sources_build_once() {
        let (runtime, builder) = builder();
        let (_dir, spec) = tree();
        let first = builder.ensure("i", "web", &spec).await.unwrap();
        assert!(first.rebuilt);
        assert!(first.tag.starts_with("beast-build/web:"));
        let second = builder.ensure("i", "web", &spec).await.unwrap();
        assert!(!second.rebuilt);
        assert_eq!(second.image_id, first.image_id);
        assert_eq!(runtime.builds(), 1);
        // A new Builder (beast restarted) finds the image on the engine.
        let again = Builder::new(runtime.clone(), 1);
        assert!(!again.ensure("i", "web", &spec).await.unwrap().rebuilt);
        assert_eq!(runtime.builds(), 1);
    }

    #[tokio::test]
    async fn old_images_are_pruned_but_the_previous_one() {
        let (runtime, builder) = builder();
        let (dir, spec) = tree();
        let mut tags = Vec::new();
        for n in 0..4 {
            fs::write(dir.path().join("hello.txt"), n.to_string()).unwrap();
            tags.push(builder.ensure("i", "web", &spec).await.unwrap().tag);
        }
        let left: Vec<String> = runtime
            .built_images()
            .into_iter()
            .flat_map(|i| i.tags)
            .collect();
        assert_eq!(left, tags[2..]);
    }

    #[tokio::test]
    async fn an_image_in_use_and_other_instances_images_are_kept() {
        let (runtime, builder) = builder();
        let (dir, spec) = tree();
        let other = builder.ensure("other", "web", &spec).await.unwrap();
        fs::write(dir.path().join("hello.txt"), "a").unwrap();
        let in_use = builder.ensure("i", "web", &spec).await.unwrap();
        runtime.use_image(&in_use.image_id);
        for n in 0..3 {
            fs::write(dir.path().join("hello.txt"), n.to_string()).unwrap();
            builder.ensure("i", "web", &spec).await.unwrap();
        }
        let ids: Vec<String> = runtime.built_images().into_iter().map(|i| i.id).collect();
        assert!(ids.contains(&other.image_id));
        assert!(ids.contains(&in_use.image_id));
        assert_eq!(ids.len(), 4, "{ids:?}");
    }

    #[tokio::test]
    async fn a_failed_build_keeps_its_log_and_names_the_challenge() {
        let (runtime, builder) = builder();
        let (_dir, spec) = tree();
        runtime.fail_builds(true);
        let err = builder.ensure("i", "web", &spec).await.unwrap_err();
        assert_eq!(err.reason(), "BuildFailed");
        let text = err.to_string();
        assert!(text.contains("challenge web"), "{text}");
        assert!(text.contains("returned a non-zero code: 1"), "{text}");
        assert!(!builder.log("web").is_empty());
        assert_eq!(err.log(), builder.log("web"));
        // The same content is not built again (a resync must not loop on a broken build)...
        runtime.fail_builds(false);
        let again = builder.ensure("i", "web", &spec).await.unwrap_err();
        assert_eq!(again.to_string(), text);
        assert_eq!(runtime.builds(), 1);
        // ... until a redeploy asks for a retry, or the sources change.
        builder.retry("web");
        assert!(builder.ensure("i", "web", &spec).await.unwrap().rebuilt);
        assert_eq!(runtime.builds(), 2);
    }

    #[tokio::test]
    async fn changed_sources_after_a_failure_build_again() {
        let (runtime, builder) = builder();
        let (dir, spec) = tree();
        runtime.fail_builds(true);
        builder.ensure("i", "web", &spec).await.unwrap_err();
        runtime.fail_builds(false);
        fs::write(dir.path().join("hello.txt"), "fixed").unwrap();
        assert!(builder.ensure("i", "web", &spec).await.unwrap().rebuilt);
    }

    #[tokio::test]
    async fn a_refused_context_is_a_context_error_naming_the_path() {
        let (runtime, builder) = builder();
        let (dir, spec) = tree();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("passwd")).unwrap();
        let err = builder.ensure("i", "web", &spec).await.unwrap_err();
        assert!(matches!(err, BuildError::Context { .. }));
        assert!(err.to_string().contains("passwd"), "{err}");
        assert_eq!(runtime.builds(), 0);
        assert_eq!(builder.log("web"), [err.to_string()]);
    }

    #[test]
    fn there_are_two_build_workers_per_core() {
        assert!(default_workers() >= 2);
        assert_eq!(default_workers() % 2, 0);
    }

    #[tokio::test]
    async fn builds_of_different_challenges_overlap_up_to_the_workers() {
        for workers in [1, 3] {
            let runtime = Arc::new(FakeRuntime::new());
            runtime.set_build_time(std::time::Duration::from_millis(50));
            let builder = Builder::new(runtime.clone(), workers);
            let trees: Vec<_> = (0..6).map(|_| tree()).collect();
            let builds = trees
                .iter()
                .enumerate()
                .map(|(n, (_, spec))| builder.ensure("i", ["a", "b", "c", "d", "e", "f"][n], spec));
            for built in futures::future::join_all(builds).await {
                assert!(built.unwrap().rebuilt);
            }
            assert_eq!(runtime.builds(), 6);
            assert_eq!(runtime.peak_builds(), workers as u64, "workers = {workers}");
        }
    }

    #[tokio::test]
    async fn the_log_is_capped() {
        let (_runtime, builder) = builder();
        builder.keep_log("web", (0..2000).map(|n| n.to_string()).collect());
        let log = builder.log("web");
        assert_eq!(log.len(), MAX_LOG_LINES);
        assert_eq!(log.last().map(String::as_str), Some("1999"));
    }

    #[tokio::test]
    async fn forget_removes_every_unused_build() {
        let (runtime, builder) = builder();
        let (dir, spec) = tree();
        builder.ensure("i", "web", &spec).await.unwrap();
        fs::write(dir.path().join("hello.txt"), "2").unwrap();
        builder.ensure("i", "web", &spec).await.unwrap();
        builder.forget("i", "web").await;
        assert!(runtime.built_images().is_empty());
        assert!(builder.log("web").is_empty());
    }
}
