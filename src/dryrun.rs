//! `beast plan`: the reconciler's plan for every challenge, printed for a terminal, without
//! executing anything. Replacements are explained field by field (one inspect per replaced
//! container: fine for a dry run, never done on the hot path). With `--git`, the branch is
//! checked out by the same [`GitSource`] `beast run` uses, into a temporary directory.
//! Beside the ops, each planned challenge shows its network, its egress policy and the
//! security settings it asks for beyond the hardened defaults.

use std::fmt::Write;
use std::path::PathBuf;

use crate::containers::{diff, network_name};
use crate::desired::Entry;
use crate::model::Security;
use crate::plan::{Op, Why};
use crate::reconcile::{describe, Reconciler};
use crate::runtime::{ObservedNetwork, Runtime, RuntimeError};
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

/// The operator's egress settings as the plan reports them.
#[derive(Debug, Clone)]
pub struct EgressCheck {
    /// `--default-egress`: the policy of manifests that leave `spec.network.egress` out.
    pub default: bool,
    /// Whether egress off can be enforced on this host (`Egress::available`), or why not.
    pub enforceable: Result<(), String>,
}

/// Renders the plan as text.
pub async fn render<R: Runtime>(
    reconciler: &Reconciler<R>,
    egress: &EgressCheck,
) -> Result<(String, Summary), RuntimeError> {
    let plan = reconciler.dry_run().await?;
    let networks = reconciler.runtime.networks(reconciler.instance()).await?;
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
                if let Some(entry) = reconciler.store.get(name) {
                    let net = network_name(reconciler.instance(), name);
                    for line in settings(&entry, &net, &networks, egress) {
                        let _ = writeln!(out, "    {line}");
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

/// The network, egress and security lines of one planned challenge (none when it runs nothing
/// and has no network).
fn settings(
    entry: &Entry,
    net: &str,
    networks: &[ObservedNetwork],
    egress: &EgressCheck,
) -> Vec<String> {
    let existing = networks.iter().find(|n| n.name == net);
    let runs = entry.deployed
        && entry
            .spec
            .as_deref()
            .is_some_and(|c| c.run.is_some() && c.replicas > 0);
    let Some(challenge) = entry.spec.as_deref().filter(|_| runs) else {
        return existing
            .map(|_| {
                vec![format!(
                    "network {net}: exists, removed with the last container"
                )]
            })
            .unwrap_or_default();
    };
    let mut lines = vec![match existing {
        Some(n) => match &n.subnet {
            Some(subnet) => format!("network {net} (exists, {subnet})"),
            None => format!("network {net} (exists)"),
        },
        None => format!("network {net} (to create)"),
    }];
    let (on, from) = match challenge.network.egress {
        Some(on) => (on, "spec.network.egress"),
        None => (egress.default, "--default-egress"),
    };
    lines.push(match (on, &egress.enforceable) {
        (true, _) => format!("egress on ({from})"),
        (false, Ok(())) => format!("egress off ({from}), enforced by iptables rules"),
        (false, Err(why)) => format!(
            "egress off ({from}) but NOT enforceable here: {why}; its containers could open outbound connections"
        ),
    });
    if let Some(run) = &challenge.run {
        if let Some(text) = security_text(&run.security) {
            lines.push(format!("security: {text}"));
        }
    }
    for service in &challenge.services {
        if let Some(text) = security_text(&service.run.security) {
            lines.push(format!("security of service {}: {text}", service.name));
        }
    }
    lines
}

/// The settings of a security block, `None` when it asks for nothing beyond the defaults.
pub fn security_text(s: &Security) -> Option<String> {
    let mut parts = Vec::new();
    if s.read_only_root_filesystem {
        parts.push("read-only root".to_string());
    }
    if !s.tmpfs.is_empty() {
        parts.push(format!("tmpfs {}", s.tmpfs.join(",")));
    }
    if let Some(user) = &s.user {
        parts.push(format!("user {user}"));
    }
    if !s.cap_add.is_empty() {
        parts.push(format!("capAdd {}", s.cap_add.join(",")));
    }
    if s.privileged {
        parts.push("PRIVILEGED".to_string());
    }
    if let Some(runtime) = &s.runtime {
        parts.push(format!("runtime {runtime}"));
    }
    let limits: Vec<String> = [("nofile", s.ulimits.nofile), ("nproc", s.ulimits.nproc)]
        .into_iter()
        .filter_map(|(name, v)| v.map(|v| format!("{name}={v}")))
        .collect();
    if !limits.is_empty() {
        parts.push(format!("ulimits {}", limits.join(",")));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::containers::Defaults;
    use crate::desired::DesiredStore;
    use crate::policy::Policy;
    use crate::ports::{PortAllocator, PortRange};
    use crate::reconcile::Settings;
    use crate::runtime::fake::FakeRuntime;
    use crate::runtime::LABEL_INSTANCE;
    use crate::status::StatusBoard;

    const WEB: &str = r#"apiVersion: beast/v1
kind: Challenge
metadata: {name: web}
spec:
  image: example/web:1
  ports: [{port: 80}]
  security:
    readOnlyRootFilesystem: true
    tmpfs: ["/tmp"]
    user: "1000:1000"
    capAdd: [NET_RAW]
    ulimits: {nofile: 1024, nproc: 64}
  services:
    - name: db
      image: example/db:1
      security: {runtime: runsc}
    - name: cache
      image: example/db:1
"#;

    const OPEN: &str = r#"apiVersion: beast/v1
kind: Challenge
metadata: {name: open}
spec:
  image: example/web:1
  network: {egress: true}
"#;

    /// A reconciler on a fake engine with `web` and `open` from a temporary manifest folder.
    fn reconciler(dir: &std::path::Path) -> Arc<Reconciler<FakeRuntime>> {
        for (name, text) in [("web", WEB), ("open", OPEN)] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            std::fs::write(dir.join(name).join("challenge.yaml"), text).unwrap();
        }
        let store = DesiredStore::with_policy(Policy::new(["NET_RAW"], false));
        store.apply_dir(0, crate::source::dir::scan(dir).unwrap());
        let runtime = FakeRuntime::new();
        runtime.add_image("example/web:1", "sha256:web");
        runtime.add_image("example/db:1", "sha256:db");
        Reconciler::new(
            Arc::new(runtime),
            store,
            StatusBoard::new(),
            Settings {
                instance: "plan-test".into(),
                defaults: Defaults::default(),
                stop_grace: Duration::from_secs(1),
                build_workers: 1,
                pool: Default::default(),
                default_egress: false,
            },
            PortAllocator::in_memory(PortRange {
                lo: 40000,
                hi: 40100,
            }),
        )
    }

    #[tokio::test]
    async fn plan_shows_network_egress_services_and_security() {
        let dir = tempfile::tempdir().unwrap();
        let reconciler = reconciler(dir.path());
        reconciler.runtime.insert_network(ObservedNetwork {
            id: "n1".into(),
            name: "plan-test_open".into(),
            labels: BTreeMap::from([(LABEL_INSTANCE.to_string(), "plan-test".to_string())]),
            subnet: Some("10.99.0.0/26".into()),
            containers: Vec::new(),
        });
        let check = EgressCheck {
            default: false,
            enforceable: Ok(()),
        };
        let (text, sum) = render(reconciler.as_ref(), &check).await.unwrap();
        for needle in [
            "web:\n",
            "  + create service cache (missing)\n",
            "  + create service db (missing)\n",
            "  + create replica 1 (missing)\n",
            "    network plan-test_web (to create)\n",
            "    egress off (--default-egress), enforced by iptables rules\n",
            "    security: read-only root, tmpfs /tmp, user 1000:1000, capAdd NET_RAW, ulimits nofile=1024,nproc=64\n",
            "    security of service db: runtime runsc\n",
            "open:\n",
            "    network plan-test_open (exists, 10.99.0.0/26)\n",
            "    egress on (spec.network.egress)\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("service cache:"), "{text}");
        assert_eq!(sum.create, 4, "{text}");
    }

    #[tokio::test]
    async fn plan_says_when_egress_off_cannot_be_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let reconciler = reconciler(dir.path());
        let check = EgressCheck {
            default: false,
            enforceable: Err("iptables not found (iptables is not on PATH)".into()),
        };
        let (text, _) = render(reconciler.as_ref(), &check).await.unwrap();
        assert!(
            text.contains("    egress off (--default-egress) but NOT enforceable here: iptables not found (iptables is not on PATH); its containers could open outbound connections\n"),
            "{text}"
        );
    }

    #[test]
    fn default_security_says_nothing() {
        assert_eq!(security_text(&Security::default()), None);
        let privileged = Security {
            privileged: true,
            ..Security::default()
        };
        assert_eq!(security_text(&privileged).as_deref(), Some("PRIVILEGED"));
    }
}
