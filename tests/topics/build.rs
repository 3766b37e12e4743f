//! `spec.build` on the real engine: content-hash tags, no rebuild for unchanged or ignored
//! sources, rebuild on change, failing steps reported with their log, build args delivered.
//! Each test has its own instance and challenge names and removes the images it made.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use beast::build::{BuildError, Builder};
use beast::model::BuildSpec;
use beast::runtime::docker::DockerRuntime;

use crate::common::*;

/// One test's build world: a context dir, unique names, and cleanup of its images.
struct BuildEnv {
    instance: String,
    challenge: String,
    dir: tempfile::TempDir,
    builder: Builder<DockerRuntime>,
}

impl BuildEnv {
    async fn new(name: &str, dockerfile: &str) -> BuildEnv {
        images();
        let runtime = DockerRuntime::connect().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
        std::fs::write(dir.path().join("hello.txt"), "hello 1\n").unwrap();
        BuildEnv {
            instance: format!("t-build-{name}-{}", std::process::id()),
            challenge: format!("b-{name}-{}", std::process::id()),
            dir,
            builder: Builder::new(Arc::new(runtime), 2),
        }
    }

    fn spec(&self) -> BuildSpec {
        BuildSpec {
            context: self.dir.path().to_path_buf(),
            dockerfile: "Dockerfile".to_string(),
            args: BTreeMap::new(),
        }
    }

    fn write(&self, file: &str, content: &str) {
        std::fs::write(self.dir.path().join(file), content).unwrap();
    }

    async fn ensure(&self, spec: &BuildSpec) -> Result<beast::build::Built, BuildError> {
        self.builder
            .ensure(&self.instance, &self.challenge, spec)
            .await
    }

    /// The tags of this challenge's built images on the engine.
    fn tags(&self) -> Vec<String> {
        let out = docker(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            &format!("beast-build/{}", self.challenge),
        ]);
        let mut tags: Vec<String> = out.lines().map(str::to_string).collect();
        tags.sort();
        tags
    }
}

impl Drop for BuildEnv {
    fn drop(&mut self) {
        let ids = docker(&[
            "images",
            "-q",
            "--filter",
            &format!("label=beast.build-instance={}", self.instance),
        ]);
        let mut ids: Vec<&str> = ids.lines().collect();
        ids.sort();
        ids.dedup();
        if !ids.is_empty() {
            let mut args = vec!["rmi", "-f"];
            args.extend(ids);
            docker(&args);
        }
    }
}

fn run_in(image: &str, command: &[&str]) -> String {
    let mut args = vec!["run", "--rm", image];
    args.extend(command);
    docker(&args)
}

const COPY_HELLO: &str = "FROM beast-examples/busybox:1\nCOPY hello.txt /hello.txt\n";

#[tokio::test]
async fn a_built_image_is_reused_until_its_sources_change() {
    let env = BuildEnv::new("reuse", COPY_HELLO).await;
    let spec = env.spec();
    let first = env.ensure(&spec).await.unwrap();
    assert!(first.rebuilt);
    assert!(first
        .tag
        .starts_with(&format!("beast-build/{}:", env.challenge)));
    assert!(docker_ok(&["image", "inspect", &first.tag]));
    assert_eq!(
        docker(&["image", "inspect", "-f", "{{.Id}}", &first.tag]),
        first.image_id
    );
    assert_eq!(run_in(&first.tag, &["cat", "/hello.txt"]), "hello 1");
    assert!(env
        .builder
        .log(&env.challenge)
        .iter()
        .any(|l| l.contains("COPY hello.txt")));

    let second = env.ensure(&spec).await.unwrap();
    assert!(!second.rebuilt, "unchanged sources must not rebuild");
    assert_eq!(
        second,
        beast::build::Built {
            rebuilt: false,
            ..first.clone()
        }
    );

    // beast restarted: a fresh builder finds the image by its tag.
    let restarted = Builder::new(Arc::new(DockerRuntime::connect().await.unwrap()), 1);
    let third = restarted
        .ensure(&env.instance, &env.challenge, &spec)
        .await
        .unwrap();
    assert!(!third.rebuilt);
    assert_eq!(third.image_id, first.image_id);
}

#[tokio::test]
async fn a_changed_file_rebuilds_an_ignored_one_does_not_and_old_builds_are_pruned() {
    let env = BuildEnv::new("change", COPY_HELLO).await;
    env.write(".dockerignore", "# scratch files\n*.log\n");
    env.write("debug.log", "1");
    let spec = env.spec();
    let first = env.ensure(&spec).await.unwrap();
    assert!(first.rebuilt);

    env.write("debug.log", "2");
    let ignored = env.ensure(&spec).await.unwrap();
    assert!(!ignored.rebuilt, "a .dockerignored change must not rebuild");
    assert_eq!(ignored.tag, first.tag);

    env.write("hello.txt", "hello 2\n");
    let second = env.ensure(&spec).await.unwrap();
    assert!(second.rebuilt);
    assert_ne!(second.tag, first.tag);
    assert_ne!(second.image_id, first.image_id);
    assert_eq!(run_in(&second.tag, &["cat", "/hello.txt"]), "hello 2");
    // The previous build is kept.
    let mut both = vec![first.tag.clone(), second.tag.clone()];
    both.sort();
    assert_eq!(env.tags(), both);

    env.write("hello.txt", "hello 3\n");
    let third = env.ensure(&spec).await.unwrap();
    assert!(third.rebuilt);
    let mut kept = vec![second.tag.clone(), third.tag.clone()];
    kept.sort();
    assert_eq!(
        env.tags(),
        kept,
        "builds older than the previous one are removed"
    );
}

#[tokio::test]
async fn an_old_build_a_container_uses_is_not_removed() {
    let env = BuildEnv::new("inuse", COPY_HELLO).await;
    let spec = env.spec();
    let first = env.ensure(&spec).await.unwrap();
    let container = format!("{}_x", env.instance);
    assert!(docker_ok(&["create", "--name", &container, &first.tag]));
    for n in 2..=4 {
        env.write("hello.txt", &format!("hello {n}\n"));
        assert!(env.ensure(&spec).await.unwrap().rebuilt);
    }
    let tags = env.tags();
    docker(&["rm", "-f", &container]);
    assert!(tags.contains(&first.tag), "{tags:?}");
    assert_eq!(tags.len(), 3, "in use + newest + previous: {tags:?}");
}

#[tokio::test]
async fn a_failing_step_is_named_with_its_exit_code_and_the_log_is_kept() {
    let env = BuildEnv::new(
        "broken",
        "FROM beast-examples/busybox:1\nCOPY hello.txt /hello.txt\nRUN echo about to fail && false\n",
    )
    .await;
    let err = env.ensure(&env.spec()).await.unwrap_err();
    let BuildError::Failed { message, log, .. } = &err else {
        panic!("expected a failed build, got {err:?}");
    };
    assert!(message.contains("returned a non-zero code: 1"), "{message}");
    assert!(
        message.contains("RUN echo about to fail && false"),
        "{message}"
    );
    assert!(err.to_string().contains(&env.challenge), "{err}");
    let kept = env.builder.log(&env.challenge);
    assert_eq!(&kept, log);
    assert!(kept.iter().any(|l| l.contains("about to fail")), "{kept:?}");
    assert!(env.tags().is_empty(), "a failed build tags nothing");
}

#[tokio::test]
async fn build_args_reach_the_build() {
    let env = BuildEnv::new(
        "args",
        "FROM beast-examples/busybox:1\nARG GREETING\nRUN test \"$GREETING\" = hi\n",
    )
    .await;
    let mut spec = env.spec();
    spec.args.insert("GREETING".into(), "hi".into());
    let built = env.ensure(&spec).await.unwrap();
    assert!(built.rebuilt);

    spec.args.insert("GREETING".into(), "ho".into());
    let err = env.ensure(&spec).await.unwrap_err();
    assert!(matches!(err, BuildError::Failed { .. }), "{err:?}");
}

#[tokio::test]
async fn a_missing_base_image_fails_without_pulling() {
    let env = BuildEnv::new("nobase", "FROM beast-examples/does-not-exist:1\n").await;
    let err = env.ensure(&env.spec()).await.unwrap_err();
    assert!(matches!(err, BuildError::Failed { .. }), "{err:?}");
    assert!(!env.builder.log(&env.challenge).is_empty());
}

#[tokio::test]
async fn a_context_escaping_through_a_symlink_is_refused_before_the_engine() {
    let env = BuildEnv::new("escape", COPY_HELLO).await;
    std::os::unix::fs::symlink("/etc", env.dir.path().join("etc")).unwrap();
    let err = env.ensure(&env.spec()).await.unwrap_err();
    assert!(matches!(err, BuildError::Context { .. }), "{err:?}");
    assert!(err
        .to_string()
        .contains(&format!("{}", Path::new("etc").display())));
    assert!(env.tags().is_empty());
}

/// The whole cycle through `beast run`: build and serve, restart without rebuilding or
/// recreating, a source change rebuilds and replaces, a broken Dockerfile keeps the old version
/// serving with `Built=False`, and a `.dockerignore`d change does nothing.
#[test]
fn a_challenge_built_from_source_is_served_rebuilt_and_kept_on_failure() {
    use crate::common::*;
    use std::time::Duration;

    let mut env = Env::new("build-e2e");
    let dockerfile = "FROM beast-examples/busybox:1\nCOPY www /www\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n";
    env.write("web/Dockerfile", dockerfile);
    env.write("web/www/index.html", "version one\n");
    env.write("web/.dockerignore", "notes.txt\n");
    env.write("web/notes.txt", "author notes\n");
    env.write(
        "web/challenge.yaml",
        "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: web\nspec:\n  build: {context: .}\n  ports:\n    - port: 8080\n",
    );
    env.start();
    env.wait_running("web");
    let port = env.host_ports("web")[0];
    assert_eq!(http_get(port, "/").as_deref(), Some("version one\n"));
    assert!(env
        .condition("web", "Built")
        .is_some_and(|c| c["status"] == "True"));
    let tag = docker(&["inspect", "-f", "{{.Config.Image}}", &env.name("web", 1)]);
    assert!(tag.starts_with("beast-build/web:"), "{tag}");
    let filter = format!("label=beast.build-instance={}", env.instance);
    let images_of = move || docker(&["images", "-q", "--filter", &filter]);

    // A restart: no rebuild, no recreate.
    let before = env.containers();
    let log_len = env.log().len();
    assert!(env.stop().success());
    env.start();
    env.wait_running("web");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(env.containers(), before);
    assert!(
        !env.log()[log_len..].contains("applying"),
        "a restart applied operations"
    );

    // An ignored file changes nothing.
    env.write("web/notes.txt", "more notes\n");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.containers(), before);

    // A source change rebuilds and replaces.
    env.write("web/www/index.html", "version two\n");
    env.wait_for("version two", Duration::from_secs(60), |_| {
        http_get(port, "/").as_deref() == Some("version two\n")
    });
    let after_rebuild = env.container_id(&env.name("web", 1));

    // A broken Dockerfile: Built=False with the reason, the old version keeps serving.
    env.write(
        "web/Dockerfile",
        &dockerfile.replace("COPY www /www", "COPY www /www\nRUN echo breaking && false"),
    );
    env.wait_for("Built=False", Duration::from_secs(60), |env| {
        env.condition("web", "Built")
            .is_some_and(|c| c["status"] == "False")
    });
    let built = env.condition("web", "Built").unwrap();
    assert!(
        built["message"]
            .as_str()
            .unwrap()
            .contains("non-zero code: 1"),
        "{built}"
    );
    assert_eq!(http_get(port, "/").as_deref(), Some("version two\n"));
    assert_eq!(env.container_id(&env.name("web", 1)), after_rebuild);
    let (code, log) = {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-w",
                "\n%{http_code}",
                "-H",
                &format!("Authorization: Bearer {}", env.token),
            ])
            .arg(format!(
                "{}/api/v1/status/challenges/web/logs?build=true",
                env.api
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_string(), body.to_string())
    };
    assert_eq!(code, "200");
    assert!(log.contains("breaking"), "{log}");

    assert!(!images_of().is_empty());
}

/// A watched build context: with a periodic resync far away (1h), only the file watcher can
/// make beast notice a change inside a context that lies outside the manifest's folder
/// (`context: ../shared`). A `.dockerignore`d change does nothing; a sent file rebuilds and
/// replaces.
#[test]
fn a_change_in_a_watched_build_context_rebuilds_without_waiting_for_a_resync() {
    use crate::common::*;
    use std::time::Duration;

    let mut env = Env::new("build-watch");
    env.write(
        "shared/Dockerfile",
        "FROM beast-examples/busybox:1\nCOPY www /www\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
    );
    env.write("shared/www/index.html", "version one\n");
    env.write("shared/.dockerignore", "notes.txt\n");
    env.write("shared/notes.txt", "author notes\n");
    env.write(
        "web/challenge.yaml",
        "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: web\nspec:\n  build: {context: ../shared}\n  ports:\n    - port: 8080\n",
    );
    env.start_with(&["--resync", "1h"]);
    env.wait_running("web");
    let port = env.host_ports("web")[0];
    assert_eq!(http_get(port, "/").as_deref(), Some("version one\n"));
    let container = env.name("web", 1);
    let first = env.container_id(&container);
    let image = || docker(&["inspect", "-f", "{{.Config.Image}}", &container]);
    let first_tag = image();

    // An ignored file: no rebuild, the same container.
    let log_len = env.log().len();
    env.write("shared/notes.txt", "more notes\n");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.container_id(&container), first);
    assert_eq!(image(), first_tag);
    assert!(
        !env.log()[log_len..].contains("building"),
        "an ignored change started a build"
    );

    // A file the build sends: rebuilt (a new content-hash tag) and replaced, long before the
    // next resync.
    env.write("shared/www/index.html", "version two\n");
    env.wait_for("version two", Duration::from_secs(60), |_| {
        http_get(port, "/").as_deref() == Some("version two\n")
    });
    assert_ne!(env.container_id(&container), first);
    assert_ne!(image(), first_tag);
}
