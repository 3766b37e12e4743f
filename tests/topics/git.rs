//! GitOps: `GitSource::sync` against a local bare repository (`file://`), needing only git; and
//! one end-to-end run of `beast run --git` on the engine, with the signed webhook.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use beast::source::git::GitSource;

/// Runs git with a fixed identity and default branch; panics with its stderr on failure.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare "remote" and a working clone that pushes to it.
struct Remote {
    _dir: tempfile::TempDir,
    bare: PathBuf,
    work: PathBuf,
    state: PathBuf,
}

impl Remote {
    fn new() -> Remote {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("remote.git");
        let work = dir.path().join("work");
        let state = dir.path().join("state");
        git(dir.path(), &["init", "--quiet", "--bare", "remote.git"]);
        git(dir.path(), &["init", "--quiet", "work"]);
        Remote {
            _dir: dir,
            bare,
            work,
            state,
        }
    }

    fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    fn source(&self) -> GitSource {
        GitSource::new(self.url(), "main", self.state.join("git"))
    }

    /// Writes `files`, commits them and pushes (forced) to `main`; returns the commit.
    fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        for (rel, text) in files {
            let path = self.work.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        git(&self.work, &["add", "--all"]);
        git(
            &self.work,
            &["commit", "--quiet", "--allow-empty", "-m", message],
        );
        git(
            &self.work,
            &[
                "push",
                "--quiet",
                "--force",
                self.bare.to_str().unwrap(),
                "HEAD:main",
            ],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

fn manifest(name: &str, description: &str) -> String {
    format!(
        "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: {name}\nspec:\n  image: {}\n  description: {description}\n  flag: flag{{x}}\n  command: [\"sleep\", \"3600\"]\n",
        crate::common::BUSYBOX
    )
}

fn read(source: &GitSource, rel: &str) -> String {
    std::fs::read_to_string(source.tree().join(rel)).unwrap()
}

/// The trees kept under `<state>/git/trees`.
fn trees(source: &GitSource) -> Vec<String> {
    let dir = source.tree().parent().unwrap().join("trees");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_first_sync_clones_and_checks_out_the_branch() {
    let remote = Remote::new();
    let commit = remote.commit(&[("echo/challenge.yaml", &manifest("echo", "one"))], "one");
    let source = remote.source();
    assert_eq!(source.current_commit(), None);

    let outcome = source.sync().await.unwrap();
    assert_eq!(outcome.commit, commit);
    assert!(outcome.changed);
    assert_eq!(source.current_commit().as_deref(), Some(commit.as_str()));
    assert!(std::fs::symlink_metadata(source.tree())
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(read(&source, "echo/challenge.yaml").contains("description: one"));
    assert!(
        !source.tree().join(".git").exists(),
        "a tree is a plain checkout"
    );
    let status = source.status();
    assert_eq!(status.commit.as_deref(), Some(commit.as_str()));
    assert!(status.last_sync.is_some());
    assert_eq!(status.last_error, None);

    // The watched directory scans like any other.
    let snapshot = beast::source::dir::scan(&source.tree()).unwrap();
    assert!(snapshot.claims.contains_key("echo"), "{snapshot:?}");

    // Nothing new: no switch.
    let again = source.sync().await.unwrap();
    assert_eq!(again.commit, commit);
    assert!(!again.changed);
}

#[tokio::test]
async fn a_new_commit_is_switched_to_and_old_trees_are_pruned() {
    let remote = Remote::new();
    let first = remote.commit(&[("echo/challenge.yaml", &manifest("echo", "one"))], "one");
    let source = remote.source();
    source.sync().await.unwrap();

    let second = remote.commit(&[("echo/challenge.yaml", &manifest("echo", "two"))], "two");
    let outcome = source.sync().await.unwrap();
    assert_eq!(outcome.commit, second);
    assert!(outcome.changed);
    assert!(read(&source, "echo/challenge.yaml").contains("description: two"));
    assert_eq!(trees(&source), sorted(vec![first.clone(), second.clone()]));

    let third = remote.commit(&[("web/challenge.yaml", &manifest("web", "w"))], "three");
    let outcome = source.sync().await.unwrap();
    assert_eq!(outcome.commit, third);
    assert!(read(&source, "web/challenge.yaml").contains("name: web"));
    // The current tree and the previous one are kept; the first is gone.
    assert_eq!(trees(&source), sorted(vec![second, third]));
}

#[tokio::test]
async fn a_force_push_of_an_unrelated_history_is_synced_to() {
    let remote = Remote::new();
    remote.commit(&[("echo/challenge.yaml", &manifest("echo", "one"))], "one");
    let source = remote.source();
    source.sync().await.unwrap();

    // A brand-new history, force-pushed over main.
    git(
        &remote.work,
        &["checkout", "--quiet", "--orphan", "rewrite"],
    );
    git(&remote.work, &["rm", "-r", "--quiet", "--cached", "."]);
    std::fs::remove_dir_all(remote.work.join("echo")).unwrap();
    let rewritten = remote.commit(&[("pwn/challenge.yaml", &manifest("pwn", "p"))], "rewrite");

    let outcome = source.sync().await.unwrap();
    assert_eq!(outcome.commit, rewritten);
    assert!(outcome.changed);
    assert!(source.tree().join("pwn/challenge.yaml").is_file());
    assert!(!source.tree().join("echo").exists());
}

#[tokio::test]
async fn a_remote_that_disappears_is_an_error_and_keeps_the_tree() {
    let remote = Remote::new();
    let commit = remote.commit(&[("echo/challenge.yaml", &manifest("echo", "one"))], "one");
    let source = remote.source();
    source.sync().await.unwrap();

    let moved = remote.bare.with_extension("moved");
    std::fs::rename(&remote.bare, &moved).unwrap();
    let err = source.sync().await.unwrap_err().to_string();
    assert!(err.contains("fetch"), "{err}");
    assert!(
        err.contains("does not appear to be a git repository"),
        "{err}"
    );
    assert_eq!(source.current_commit().as_deref(), Some(commit.as_str()));
    assert!(read(&source, "echo/challenge.yaml").contains("description: one"));
    let status = source.status();
    assert_eq!(status.commit.as_deref(), Some(commit.as_str()));
    assert_eq!(status.last_error.as_deref(), Some(err.as_str()));

    // The remote comes back: syncing resumes and the error clears.
    std::fs::rename(&moved, &remote.bare).unwrap();
    let outcome = source.sync().await.unwrap();
    assert!(!outcome.changed);
    assert_eq!(source.status().last_error, None);
}

#[tokio::test]
async fn a_missing_branch_is_an_error_and_nothing_is_checked_out() {
    let remote = Remote::new();
    remote.commit(&[("echo/challenge.yaml", &manifest("echo", "one"))], "one");
    let source = GitSource::new(remote.url(), "release", remote.state.join("git"));
    let err = source.sync().await.unwrap_err().to_string();
    assert!(err.contains("release"), "{err}");
    assert_eq!(source.current_commit(), None);
    assert!(beast::source::dir::scan(&source.tree()).is_err());
}

#[tokio::test]
async fn a_restart_finds_the_previous_checkout_before_syncing() {
    let remote = Remote::new();
    let commit = remote.commit(&[("echo/challenge.yaml", &manifest("echo", "one"))], "one");
    remote.source().sync().await.unwrap();
    // A new source over the same state (a restarted operator), remote now gone.
    std::fs::remove_dir_all(&remote.bare).unwrap();
    let source = remote.source();
    assert_eq!(source.current_commit().as_deref(), Some(commit.as_str()));
    assert_eq!(source.status().commit.as_deref(), Some(commit.as_str()));
    assert!(source.sync().await.is_err());
    assert!(read(&source, "echo/challenge.yaml").contains("description: one"));
}

#[tokio::test]
async fn credentials_in_the_url_never_reach_the_error() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 9 of localhost: the fetch fails fast.
    let source = GitSource::new(
        "http://bot:hunter2-token@127.0.0.1:9/ctf.git",
        "main",
        dir.path().join("git"),
    );
    let err = source.sync().await.unwrap_err().to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(!err.contains("bot:"), "{err}");
    assert_eq!(source.status().url, "http://127.0.0.1:9/ctf.git");
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

// --- End to end, on the engine ---

/// `sha256=<hex>` of HMAC-SHA256(secret, body), as GitHub signs a delivery.
fn github_signature(secret: &str, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs the git hook with `signature`; returns the status code.
fn post_hook(api: &str, body: &str, signature: &str) -> u16 {
    let out = Command::new("curl")
        .args(["-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-X", "POST", "-H", "Content-Type: application/json"])
        .args(["-H", &format!("X-Hub-Signature-256: {signature}")])
        .args(["--data-binary", body])
        .arg(format!("{api}/api/v1/manage/hooks/git"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn beast_run_git_deploys_and_a_signed_webhook_picks_up_a_push() {
    const SECRET: &str = "hook-secret-for-tests";
    let remote = Remote::new();
    remote.commit(&[("echo/challenge.yaml", &manifest("echo", "one"))], "one");
    let mut env = crate::common::Env::new("git");
    // A long interval: only the webhook can make beast see the second commit in time.
    let url = remote.url();
    env.start_with(&[
        "--git",
        &url,
        "--git-interval",
        "1h",
        "--git-webhook-secret",
        SECRET,
    ]);
    env.wait_running("echo");
    let source = env.status("echo").unwrap()["source"].to_string();
    assert!(
        source.contains("git/current/echo/challenge.yaml"),
        "{source}"
    );

    let second = remote.commit(&[("web/challenge.yaml", &manifest("web", "w"))], "two");
    let body = r#"{"ref":"refs/heads/main"}"#;
    assert_eq!(
        post_hook(&env.api, body, &github_signature("wrong", body)),
        401
    );
    assert_eq!(post_hook(&env.api, body, "sha256=zz"), 401);
    std::thread::sleep(Duration::from_secs(2));
    assert!(env.status("web").is_none(), "a refused hook must not fetch");

    assert_eq!(
        post_hook(&env.api, body, &github_signature(SECRET, body)),
        202
    );
    env.wait_running("web");
    assert!(env.running("echo", 1), "echo keeps running");
    // The status names the commit each challenge was deployed from.
    let head = |env: &crate::common::Env, name: &str| {
        env.status(name).unwrap()["commit"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(head(&env, "web").len(), 40, "{}", head(&env, "web"));
    assert_eq!(head(&env, "web"), second);
    let git = env.get_status("/api/v1/status/git").unwrap().1;
    assert_eq!(git["commit"], second.as_str(), "{git}");
    assert!(git["lastError"].is_null(), "{git}");
}

/// A push that changes only a file of a build context (the manifest is untouched) rebuilds and
/// replaces that challenge; a challenge whose context did not change keeps its container.
#[test]
fn a_push_changing_only_a_build_context_rebuilds_that_challenge() {
    use crate::common::{docker, http_get};
    const SECRET: &str = "hook-secret-for-tests";
    let dockerfile = "FROM beast-examples/busybox:1\nCOPY www /www\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n";
    let built = |name: &str| {
        format!("apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: {name}\nspec:\n  build: {{context: .}}\n  ports:\n    - port: 8080\n")
    };
    let remote = Remote::new();
    remote.commit(
        &[
            ("web/challenge.yaml", &built("web")),
            ("web/Dockerfile", dockerfile),
            ("web/www/index.html", "version one\n"),
            ("other/challenge.yaml", &built("other")),
            ("other/Dockerfile", dockerfile),
            ("other/www/index.html", "other\n"),
        ],
        "one",
    );
    let mut env = crate::common::Env::new("git-build");
    let url = remote.url();
    // Long interval and resync: only the webhook's sync can make beast see the push in time.
    env.start_with(&[
        "--git",
        &url,
        "--git-interval",
        "1h",
        "--git-webhook-secret",
        SECRET,
        "--resync",
        "1h",
    ]);
    env.wait_running("web");
    env.wait_running("other");
    let port = env.host_ports("web")[0];
    assert_eq!(http_get(port, "/").as_deref(), Some("version one\n"));
    let other = env.container_id(&env.name("other", 1));
    let web = env.container_id(&env.name("web", 1));
    let image = |name: &str| docker(&["inspect", "-f", "{{.Config.Image}}", name]);
    let web_tag = image(&env.name("web", 1));

    remote.commit(&[("web/www/index.html", "version two\n")], "two");
    let body = r#"{"ref":"refs/heads/main"}"#;
    assert_eq!(
        post_hook(&env.api, body, &github_signature(SECRET, body)),
        202
    );
    env.wait_for("version two", Duration::from_secs(60), |_| {
        http_get(port, "/").as_deref() == Some("version two\n")
    });
    assert_ne!(env.container_id(&env.name("web", 1)), web);
    assert_ne!(image(&env.name("web", 1)), web_tag);
    assert_eq!(
        env.container_id(&env.name("other", 1)),
        other,
        "an unchanged context keeps its container"
    );
}

/// `beast plan --git`: the branch as `beast run --git` would see it, together with a manifests
/// directory, fetched into a temporary directory (never the state directory), naming the commit.
#[test]
fn plan_from_git_names_the_commit_and_plans_the_tree_with_the_manifests() {
    let remote = Remote::new();
    let commit = remote.commit(&[("echo/challenge.yaml", &manifest("echo", "one"))], "one");
    let env = crate::common::Env::new("plan-git");
    env.write("local.yaml", &manifest("local", "here"));
    let url = remote.url();
    let plan = |branch: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_beast"))
            .args(["plan", "--git", &url, "--git-branch", branch, "--manifests"])
            .arg(&env.manifests)
            .arg("--state-dir")
            .arg(&env.state)
            .args([
                "--instance",
                &env.instance,
                "--port-range",
                &env.port_range(),
            ])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = plan("main");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("at commit {commit}")), "{out}");
    assert!(out.contains("branch main"), "{out}");
    assert!(out.contains("echo:") && out.contains("local:"), "{out}");
    assert!(out.contains("2 to create"), "{out}");
    assert!(
        !env.state.join("git").exists(),
        "plan must not write the run's git state"
    );
    assert!(env.containers().is_empty(), "a dry run creates nothing");

    // A branch that does not exist: an error naming it, no plan.
    let (code, out, err) = plan("nope");
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("branch nope"), "{err}");
}
