//! Health probes run by beast itself (so they work for any image, even `FROM scratch` without a
//! shell): one task per running container with a healthcheck, so probes of many challenges never
//! slow each other down or the queue.
//!
//! After `retries` consecutive failures the container is restarted and marked unhealthy; it is
//! healthy again when a probe passes. Verdicts land in the status board; the reconciler turns
//! them into the `Healthy` condition.
//!
//! A probe restart counts like a crash (`restarts`, `lastTermination` with reason `Unhealthy`
//! and the log tail, an event, a heal notification, a metric). Probe restarts never stack on the
//! engine's own restart policy: a container that is not running, or that was started again
//! since its failures began (the engine restarting a crash), is left to the engine. And they
//! back off per container: each restart waits twice as long as the one before (10 s up to
//! 5 minutes), reset once the container has passed its probe for a minute.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::model::{Healthcheck, Probe};
use crate::runtime::{ContainerState, Observed, Runtime, RuntimeError, Termination};
use crate::status::{now_rfc3339, LastTermination, StatusBoard};

/// The least time between two probe restarts of one container; doubles with each restart.
const RESTART_BACKOFF: Duration = Duration::from_secs(10);
/// The most time between two probe restarts of one container.
const RESTART_BACKOFF_CAP: Duration = Duration::from_secs(300);
/// Passing the probe this long resets the restart backoff.
const BACKOFF_RESET: Duration = Duration::from_secs(60);

/// Counters of probe activity, for metrics.
#[derive(Default)]
pub struct ProbeCounters {
    pub failures: AtomicU64,
    pub restarts: AtomicU64,
}

/// What a probe task needs from the rest of beast.
pub trait ProbeHost: Send + Sync + 'static {
    type R: Runtime;
    fn runtime(&self) -> &Arc<Self::R>;
    /// The operator's instance id (to re-read a container's address).
    fn instance(&self) -> &str;
    fn status(&self) -> &StatusBoard;
    /// Marks a container as being restarted by beast after failed probes (its exit is counted
    /// by the probe, not as a crash).
    fn expect(&self, id: &str);
    /// Asks for the challenge to be reconciled.
    fn poke(&self, challenge: &str);
    /// Announces a restart after failed probes (notifications).
    fn announce_restart(&self, challenge: &str, container: &str, message: &str);
}

/// The running probe tasks, by container id.
#[derive(Default)]
pub struct Prober {
    tasks: Mutex<HashMap<String, (JoinHandle<()>, Healthcheck)>>,
    pub counters: Arc<ProbeCounters>,
}

impl Prober {
    /// Makes the probe tasks of `challenge` match its running containers, each with its own
    /// healthcheck (replicas share the challenge's, services have theirs): starts missing ones,
    /// stops those whose container is gone or whose healthcheck changed.
    pub fn sync<H: ProbeHost>(
        &self,
        host: &Arc<H>,
        challenge: &str,
        containers: &[(Observed, Healthcheck)],
    ) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let wanted: HashMap<&str, (&Observed, &Healthcheck)> = containers
            .iter()
            .filter(|(o, _)| {
                matches!(
                    o.state,
                    ContainerState::Running | ContainerState::Restarting
                )
            })
            .map(|(o, hc)| (o.id.as_str(), (o, hc)))
            .collect();
        let prefix = format!("{challenge}/");
        let mine: Vec<String> = tasks
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        for key in mine {
            let id = &key[prefix.len()..];
            let keep = match (wanted.get(id), tasks.get(&key)) {
                (Some((_, hc)), Some((_, running))) => *hc == running,
                _ => false,
            };
            if !keep {
                if let Some((task, _)) = tasks.remove(&key) {
                    task.abort();
                }
                host.status().update(challenge, |s| {
                    s.health.remove(id);
                });
            }
        }
        for (id, (o, hc)) in wanted {
            let key = format!("{prefix}{id}");
            if tasks.contains_key(&key) {
                continue;
            }
            host.status().update(challenge, |s| {
                s.health
                    .entry(id.to_string())
                    .or_insert_with(|| "starting".into());
            });
            let task = tokio::spawn(probe_loop(
                host.clone(),
                self.counters.clone(),
                challenge.to_string(),
                o.clone(),
                hc.clone(),
            ));
            tasks.insert(key, (task, hc.clone()));
        }
    }

    /// Stops every probe of `challenge` (it was removed).
    pub fn forget(&self, challenge: &str) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let prefix = format!("{challenge}/");
        tasks.retain(|k, (task, _)| {
            let keep = !k.starts_with(&prefix);
            if !keep {
                task.abort();
            }
            keep
        });
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(|p| p.into_inner());
        for (task, _) in tasks.values() {
            task.abort();
        }
    }
}

async fn probe_loop<H: ProbeHost>(
    host: Arc<H>,
    counters: Arc<ProbeCounters>,
    challenge: String,
    mut container: Observed,
    hc: Healthcheck,
) {
    tokio::time::sleep(hc.start_period).await;
    if container.ip.is_none() {
        refresh_address(&host, &challenge, &mut container).await;
    }
    let mut failures = 0u32;
    let mut healthy: Option<bool> = None;
    let mut backoff = RestartBackoff::default();
    let mut watch = EngineWatch::default();
    if let Run::Gone = watch.look(&host, &container).await {
        return;
    }
    loop {
        let verdict = match tokio::time::timeout(
            hc.timeout,
            probe_once(&host, &container, &hc.probe),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(format!(
                "timed out after {}",
                humantime::format_duration(hc.timeout)
            )),
        };
        match verdict {
            Ok(()) => {
                failures = 0;
                watch.streak_run = None;
                backoff.passed();
                if healthy != Some(true) {
                    healthy = Some(true);
                    set_health(&host, &challenge, &container, "healthy", None);
                }
            }
            Err(why) => {
                failures += 1;
                backoff.failed();
                counters.failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%challenge, container = %container.name, failures, %why, "probe failed");
                // The run a streak began in (one inspect a streak; with `retries: 1` the
                // decision's own look below is the only one). A streak that began while the
                // container was not running shows as a changed restart count instead.
                if failures == 1 && failures < hc.retries.max(1) {
                    match watch.look(&host, &container).await {
                        Run::Gone => return,
                        Run::Running(started) => watch.streak_run = Some(started),
                        Run::NotRunning | Run::Unknown => {}
                    }
                }
                if failures >= hc.retries.max(1) {
                    if healthy != Some(false) {
                        healthy = Some(false);
                        set_health(
                            &host,
                            &challenge,
                            &container,
                            "unhealthy",
                            Some(format!(
                                "{}: {} consecutive probe failures ({why})",
                                container.name, failures
                            )),
                        );
                    }
                    if let Some(wait) = backoff.wait() {
                        tracing::debug!(%challenge, container = %container.name, wait = ?wait, "probe restart deferred (backoff)");
                        tokio::time::sleep(hc.interval).await;
                        continue;
                    }
                    let now = watch.look(&host, &container).await;
                    let engine_handles_it = match (&now, &watch.streak_run) {
                        (Run::Gone, _) => return,
                        (Run::NotRunning, _) => true,
                        (Run::Running(started), Some(first)) if started != first => true,
                        _ => watch.crash_looping(),
                    };
                    if engine_handles_it {
                        // Crashing and being restarted by the engine's policy: restarting it
                        // too would stack on the engine's backoff. Its crashes are counted.
                        failures = 0;
                        watch.streak_run = None;
                    } else {
                        restart(&host, &counters, &challenge, &container, failures, &why).await;
                        backoff.restarted();
                        failures = 0;
                        watch.streak_run = None;
                        tokio::time::sleep(hc.start_period).await;
                        // A restarted container may get another address.
                        refresh_address(&host, &challenge, &mut container).await;
                        continue;
                    }
                }
            }
        }
        tokio::time::sleep(hc.interval).await;
    }
}

/// What the engine says of a container's current run.
enum Run {
    /// Running, started at this time.
    Running(String),
    /// Exited, restarting (the engine's restart delay), paused or dead.
    NotRunning,
    Gone,
    /// The engine did not answer.
    Unknown,
}

/// What a probe task learns from the engine about its container (one inspect a look, only when
/// probes fail): whether the engine's restart policy is at work on it.
#[derive(Default)]
struct EngineWatch {
    /// When the run that a failure streak began in started: a streak that spans a restart by
    /// the engine (a crash) is not the probe's to act on.
    streak_run: Option<String>,
    /// The engine's restart count at the last look.
    restart_count: Option<i64>,
    /// When a look last saw that count change.
    engine_restarted_at: Option<tokio::time::Instant>,
}

/// A container the engine restarted this recently is crash-looping: the engine's policy, not
/// the probe, restarts it.
const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(600);

impl EngineWatch {
    async fn look<H: ProbeHost>(&mut self, host: &Arc<H>, container: &Observed) -> Run {
        match host.runtime().termination(&container.id).await {
            Ok(t) => {
                let now = tokio::time::Instant::now();
                match self.restart_count {
                    Some(c) if c != t.restart_count => self.engine_restarted_at = Some(now),
                    // First look: a run the engine's policy started recently (the restart count
                    // says the policy has restarted it) is part of a crash loop.
                    None if t.restart_count > 0 => {
                        self.engine_restarted_at = age(&t.started_at)
                            .filter(|a| *a < CRASH_LOOP_WINDOW)
                            .and_then(|a| now.checked_sub(a));
                    }
                    _ => {}
                }
                self.restart_count = Some(t.restart_count);
                match t {
                    Termination {
                        running: true,
                        started_at,
                        ..
                    } => Run::Running(started_at),
                    _ => Run::NotRunning,
                }
            }
            Err(RuntimeError::NotFound(_)) => Run::Gone,
            Err(_) => Run::Unknown,
        }
    }

    /// Whether the engine's restart policy has been at work on the container lately.
    fn crash_looping(&self) -> bool {
        self.engine_restarted_at
            .is_some_and(|at| at.elapsed() < CRASH_LOOP_WINDOW)
    }
}

/// How long ago an RFC 3339 time was.
fn age(rfc3339: &str) -> Option<Duration> {
    let then = humantime::parse_rfc3339(rfc3339).ok()?;
    std::time::SystemTime::now().duration_since(then).ok()
}

/// Restarts a container after failed probes, and counts it like a crash.
async fn restart<H: ProbeHost>(
    host: &Arc<H>,
    counters: &ProbeCounters,
    challenge: &str,
    container: &Observed,
    failures: u32,
    why: &str,
) {
    let tail = host
        .runtime()
        .logs(&container.id, 20)
        .await
        .unwrap_or_default();
    let message = format!(
        "{}: {failures} consecutive probe failures ({why}); restarting it",
        container.name
    );
    host.status().update(challenge, |s| {
        s.record_exit(time::OffsetDateTime::now_utc().unix_timestamp());
        s.event(true, "ProbeRestart", message.clone());
        s.last_termination = Some(LastTermination {
            container: container.name.clone(),
            exit_code: -1, // the exit event fills it in
            reason: "Unhealthy".into(),
            oom_killed: false,
            time: now_rfc3339(),
            log_tail: tail,
            message: String::new(),
        });
    });
    host.announce_restart(challenge, &container.name, &message);
    host.expect(&container.id);
    counters.restarts.fetch_add(1, Ordering::Relaxed);
    if let Err(err) = host
        .runtime()
        .restart(&container.id, Duration::from_secs(1))
        .await
    {
        tracing::warn!(%challenge, container = %container.name, error = %err, "restart after failed probes failed");
        host.poke(challenge);
    }
}

/// The per-container backoff of probe restarts.
#[derive(Debug)]
struct RestartBackoff {
    /// Wait after the next restart.
    next: Duration,
    /// No restart before this.
    not_before: Option<tokio::time::Instant>,
    /// Passing since (resets the backoff after [`BACKOFF_RESET`]).
    passing_since: Option<tokio::time::Instant>,
}

impl Default for RestartBackoff {
    fn default() -> Self {
        RestartBackoff {
            next: RESTART_BACKOFF,
            not_before: None,
            passing_since: None,
        }
    }
}

impl RestartBackoff {
    fn passed(&mut self) {
        let since = *self
            .passing_since
            .get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= BACKOFF_RESET {
            self.next = RESTART_BACKOFF;
        }
    }

    fn failed(&mut self) {
        self.passing_since = None;
    }

    /// How long until a restart is allowed, if it is not now.
    fn wait(&self) -> Option<Duration> {
        let left = self
            .not_before?
            .saturating_duration_since(tokio::time::Instant::now());
        (!left.is_zero()).then_some(left)
    }

    fn restarted(&mut self) {
        self.not_before = Some(tokio::time::Instant::now() + self.next);
        self.next = (self.next * 2).min(RESTART_BACKOFF_CAP);
        self.passing_since = None;
    }
}

/// Re-reads the container's address (one list call filtered by instance and challenge).
async fn refresh_address<H: ProbeHost>(host: &Arc<H>, challenge: &str, container: &mut Observed) {
    if let Ok(list) = host.runtime().list(host.instance(), Some(challenge)).await {
        if let Some(now) = list.into_iter().find(|o| o.id == container.id) {
            container.ip = now.ip;
        }
    }
}

fn set_health<H: ProbeHost>(
    host: &Arc<H>,
    challenge: &str,
    c: &Observed,
    verdict: &str,
    warning: Option<String>,
) {
    host.status().update(challenge, |s| {
        s.health.insert(c.id.clone(), verdict.to_string());
        match warning {
            Some(msg) => s.event(true, "Unhealthy", msg),
            None => s.event(false, "Healthy", format!("{} passes its probe", c.name)),
        }
    });
    host.poke(challenge);
}

async fn probe_once<H: ProbeHost>(
    host: &Arc<H>,
    c: &Observed,
    probe: &Probe,
) -> Result<(), String> {
    let addr = |port: u16| -> Result<SocketAddr, String> {
        let ip =
            c.ip.as_deref()
                .ok_or("the container has no network address")?;
        format!("{ip}:{port}")
            .parse()
            .map_err(|e| format!("bad address {ip}: {e}"))
    };
    match probe {
        Probe::Tcp { port } => {
            TcpStream::connect(addr(*port)?)
                .await
                .map_err(|e| format!("tcp {port}: {e}"))?;
            Ok(())
        }
        Probe::Http { port, path } => http_get(addr(*port)?, path).await,
        Probe::Exec { command } => match host.runtime().exec(&c.id, command).await {
            Ok(0) => Ok(()),
            Ok(code) => Err(format!("exec exited with {code}")),
            Err(err) => Err(format!("exec: {err}")),
        },
    }
}

/// A minimal HTTP/1.0 GET: healthy on a 2xx or 3xx status line.
async fn http_get(addr: SocketAddr, path: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("http {addr}: {e}"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: beast-probe\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("http {addr}: {e}"))?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        let n = stream
            .read(&mut head[read..])
            .await
            .map_err(|e| format!("http {addr}: {e}"))?;
        if n == 0 {
            break;
        }
        read += n;
    }
    let line = String::from_utf8_lossy(&head[..read]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("not an HTTP response")?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("http {path} answered {code}"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn age_reads_the_engines_timestamps() {
        let a = age("2000-01-01T00:00:00.123456789Z").unwrap();
        assert!(a > Duration::from_secs(3600 * 24 * 365 * 20));
        assert!(age("not a time").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn probe_restarts_back_off_and_reset_after_passing_a_while() {
        let mut b = RestartBackoff::default();
        assert_eq!(b.wait(), None, "the first restart waits for nothing");
        b.restarted();
        assert_eq!(b.wait(), Some(RESTART_BACKOFF));
        tokio::time::advance(RESTART_BACKOFF).await;
        assert_eq!(b.wait(), None);
        b.restarted();
        assert_eq!(b.wait(), Some(RESTART_BACKOFF * 2));
        for _ in 0..10 {
            b.restarted();
        }
        assert_eq!(b.wait(), Some(RESTART_BACKOFF_CAP));
        // Passing for a minute resets it.
        tokio::time::advance(RESTART_BACKOFF_CAP).await;
        b.passed();
        tokio::time::advance(BACKOFF_RESET).await;
        b.passed();
        b.restarted();
        assert_eq!(b.wait(), Some(RESTART_BACKOFF));
        // A failure in between restarts the passing clock.
        b.passed();
        tokio::time::advance(BACKOFF_RESET / 2).await;
        b.failed();
        b.passed();
        tokio::time::advance(BACKOFF_RESET / 2).await;
        b.passed();
        b.restarted();
        assert_eq!(b.wait(), Some(RESTART_BACKOFF * 2));
    }
}
