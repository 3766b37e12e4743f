//! Egress control (SPEC §7): keeps the iptables rules that stop a challenge with egress off from
//! opening new connections out of its network, while players still connect in.
//!
//! Rules live in Docker's `DOCKER-USER` chain (forwarded traffic) and in `INPUT` (the host's own
//! addresses), inserted at the top, each commented `beast:{instance}:{challenge}`. This module
//! owns running `iptables` (always with `-w`, one call at a time within the process) and never
//! deletes a rule without exactly its own instance's comment prefix. It does not decide which
//! challenges are blocked, nor create networks: the reconciler tells it the subnets.

mod rules;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use ipnet::Ipv4Net;
use tokio::sync::Mutex;

use rules::{Changes, Scope, CHAINS, FORWARD_CHAIN};

/// Seconds `iptables -w` waits for the xtables lock held by someone else.
const LOCK_WAIT: &str = "10";

/// Errors of egress control.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("egress cannot be enforced: {0}")]
    Unavailable(String),
    #[error("invalid subnet {subnet:?}: {reason}")]
    BadSubnet { subnet: String, reason: String },
    #[error("name {0:?} cannot mark an iptables rule: only letters, digits, '.', '-' and '_' fit")]
    BadName(String),
    #[error("could not run {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`iptables {}` failed: {stderr}", args.join(" "))]
    Command { args: Vec<String>, stderr: String },
}

/// The egress rules of one beast instance. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Egress {
    instance: String,
    iptables: PathBuf,
    available: Result<(), String>,
    /// One iptables conversation at a time: a list and the changes it leads to.
    lock: Mutex<()>,
}

impl Egress {
    /// Checks the mechanism once: the iptables binary runs, we may change rules (root), and the
    /// DOCKER-USER chain exists (Docker's iptables integration on). Never fails: unavailability
    /// is recorded with a reason.
    pub async fn detect(instance: &str, iptables: &Path) -> Egress {
        let available = if rules::fits(instance, "x") {
            probe(iptables).await
        } else {
            Err(format!(
                "instance id {instance:?} cannot mark an iptables rule (letters, digits, '.', '-', '_')"
            ))
        };
        Egress {
            instance: instance.to_string(),
            iptables: iptables.to_path_buf(),
            available,
            lock: Mutex::new(()),
        }
    }

    /// Ok when rules can be enforced; Err(reason) naming what is missing.
    pub fn available(&self) -> Result<(), String> {
        self.available.clone()
    }

    /// Ensures the rules of one challenge for `subnet` (idempotent; replaces rules for an older
    /// subnet of the same challenge).
    pub async fn block(&self, challenge: &str, subnet: &str) -> Result<(), EgressError> {
        let wanted = BTreeMap::from([(self.name(challenge)?, parse(subnet)?)]);
        self.apply(Scope::One(challenge), &wanted).await.map(drop)
    }

    /// Removes every rule of one challenge (egress turned on, or the challenge removed). None
    /// there is Ok.
    pub async fn allow(&self, challenge: &str) -> Result<(), EgressError> {
        self.name(challenge)?;
        self.apply(Scope::One(challenge), &BTreeMap::new())
            .await
            .map(drop)
    }

    /// The resync pass: with one listing of each chain, adds what is missing for `wanted`
    /// (challenge → subnet) and removes this instance's rules of challenges not in `wanted` or
    /// with another subnet. Never touches rules of other instances or without beast's comment.
    pub async fn sync(&self, wanted: &BTreeMap<String, String>) -> Result<(), EgressError> {
        self.sync_changes(wanted).await.map(drop)
    }

    /// [`Egress::sync`], answering how many rules it inserted or deleted (0 when all was in place).
    pub async fn sync_changes(
        &self,
        wanted: &BTreeMap<String, String>,
    ) -> Result<usize, EgressError> {
        let wanted = wanted
            .iter()
            .map(|(challenge, subnet)| Ok((self.name(challenge)?, parse(subnet)?)))
            .collect::<Result<BTreeMap<_, _>, EgressError>>()?;
        self.apply(Scope::All, &wanted).await
    }

    /// Rules of this instance, by challenge, as `iptables -S` lists them (for tests and
    /// `describe`).
    pub async fn rules(&self) -> Result<BTreeMap<String, Vec<String>>, EgressError> {
        let _turn = self.lock.lock().await;
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (_, lines) in self.list().await? {
            for line in lines {
                if let Some(challenge) = rules::owner(&line, &self.instance) {
                    out.entry(challenge.to_string()).or_default().push(line);
                }
            }
        }
        Ok(out)
    }

    /// Lists every chain once, then inserts what is missing and deletes what is stale.
    async fn apply(
        &self,
        scope: Scope<'_>,
        wanted: &BTreeMap<String, Ipv4Net>,
    ) -> Result<usize, EgressError> {
        self.available.clone().map_err(EgressError::Unavailable)?;
        let _turn = self.lock.lock().await;
        let listings = self.list().await?;
        let changes = rules::diff(&self.instance, scope, wanted, &listings);
        if changes.is_empty() {
            return Ok(0);
        }
        let count = changes.len();
        let Changes { insert, delete } = changes;
        for (chain, spec) in insert {
            self.change("-I", &chain, spec).await?;
        }
        for (chain, spec) in delete {
            match self.change("-D", &chain, spec).await {
                // Already gone (removed by hand meanwhile): what we wanted.
                Err(EgressError::Command { stderr, .. }) if stderr.contains("does a matching") => {}
                other => other?,
            }
        }
        tracing::debug!(instance = %self.instance, changes = count, "egress rules updated");
        Ok(count)
    }

    async fn list(&self) -> Result<Vec<(String, Vec<String>)>, EgressError> {
        let mut listings = Vec::new();
        for chain in CHAINS {
            let args = vec!["-S".to_string(), chain.to_string()];
            let stdout = self.run(args).await?;
            listings.push((chain.to_string(), rules::parse_listing(&stdout)));
        }
        Ok(listings)
    }

    async fn change(&self, verb: &str, chain: &str, spec: Vec<String>) -> Result<(), EgressError> {
        let mut args = vec![verb.to_string(), chain.to_string()];
        args.extend(spec);
        self.run(args).await.map(drop)
    }

    async fn run(&self, args: Vec<String>) -> Result<String, EgressError> {
        let out = iptables(&self.iptables, &args)
            .await
            .map_err(|source| EgressError::Spawn {
                program: self.iptables.clone(),
                source,
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(EgressError::Command {
                args,
                stderr: stderr(&out),
            })
        }
    }

    fn name(&self, challenge: &str) -> Result<String, EgressError> {
        if rules::fits(&self.instance, challenge) {
            Ok(challenge.to_string())
        } else {
            Err(EgressError::BadName(challenge.to_string()))
        }
    }
}

fn parse(subnet: &str) -> Result<Ipv4Net, EgressError> {
    rules::parse_subnet(subnet).map_err(|reason| EgressError::BadSubnet {
        subnet: subnet.to_string(),
        reason,
    })
}

/// Runs `iptables -w LOCK_WAIT args...`.
async fn iptables(program: &Path, args: &[String]) -> std::io::Result<Output> {
    tokio::process::Command::new(program)
        .args(["-w", LOCK_WAIT])
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
}

/// Stderr without the nft/legacy coexistence warnings iptables prints on every call.
fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("# Warning"))
        .collect::<Vec<_>>()
        .join("; ")
        .trim()
        .to_string()
}

/// Whether rules can be listed (which, for iptables, already needs CAP_NET_ADMIN) in both chains.
async fn probe(program: &Path) -> Result<(), String> {
    for chain in [FORWARD_CHAIN, rules::INPUT_CHAIN] {
        let args = ["-S".to_string(), chain.to_string()];
        let out = iptables(program, &args).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => not_found(program),
            _ => format!("cannot run {}: {e}", program.display()),
        })?;
        if out.status.success() {
            continue;
        }
        let err = stderr(&out);
        let lower = err.to_lowercase();
        return Err(
            if lower.contains("permission denied") || lower.contains("must be root") {
                format!("not permitted (beast runs without root/CAP_NET_ADMIN): {err}")
            } else if chain == FORWARD_CHAIN {
                format!(
                    "DOCKER-USER chain missing: is Docker running with iptables enabled? \
                 (if Docker uses iptables-legacy, pass --iptables iptables-legacy) ({err})"
                )
            } else {
                format!("`iptables -S {chain}` failed: {err}")
            },
        );
    }
    Ok(())
}

fn not_found(program: &Path) -> String {
    if program.components().count() > 1 {
        format!("iptables not found at {}", program.display())
    } else {
        format!("iptables not found ({} is not on PATH)", program.display())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_binary_is_reported_not_fatal() {
        let egress = Egress::detect("t", Path::new("/nonexistent/iptables")).await;
        let reason = egress.available().unwrap_err();
        assert_eq!(reason, "iptables not found at /nonexistent/iptables");
        let err = egress.block("web", "10.214.0.0/28").await.unwrap_err();
        assert!(matches!(err, EgressError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains("not found"), "{err}");
    }

    #[tokio::test]
    async fn a_binary_off_path_is_named() {
        let egress = Egress::detect("t", Path::new("no-such-iptables-here")).await;
        assert_eq!(
            egress.available().unwrap_err(),
            "iptables not found (no-such-iptables-here is not on PATH)"
        );
    }

    #[tokio::test]
    async fn a_failing_binary_gives_its_reason() {
        // `false` exits 1 with no output: the DOCKER-USER listing "fails".
        let egress = Egress::detect("t", Path::new("false")).await;
        assert!(egress
            .available()
            .unwrap_err()
            .contains("DOCKER-USER chain missing"));
    }

    #[tokio::test]
    async fn bad_names_and_subnets_are_refused_before_iptables() {
        let egress = Egress::detect("bad id", Path::new("/nonexistent/iptables")).await;
        assert!(egress.available().unwrap_err().contains("instance id"));
        let egress = Egress {
            available: Ok(()),
            ..Egress::detect("t", Path::new("/nonexistent/iptables")).await
        };
        let err = egress.block("we b", "10.0.0.0/28").await.unwrap_err();
        assert!(matches!(err, EgressError::BadName(_)), "{err}");
        let err = egress.block("web", "fd00::/64").await.unwrap_err();
        assert!(matches!(err, EgressError::BadSubnet { .. }), "{err}");
    }
}
