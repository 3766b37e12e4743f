//! The status of each challenge as SPEC §6 shapes it: phase, conditions with their transition
//! times, and the containers that serve it.
//!
//! The reconciler writes a [`RuntimeStatus`] per challenge; the API reads [`ChallengeStatus`]
//! views that merge it with the desired entry. This module only keeps and shapes data.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::desired::Entry;
use crate::runtime::PortBinding;

/// Lifecycle phase of a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default, schemars::JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    Building,
    Deploying,
    Running,
    Degraded,
    Stopped,
    Failed,
}

/// A condition (`Valid`, `Ready`, `Healthy`, `Built`).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
}

/// One container serving a challenge.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ContainerStatus {
    pub name: String,
    pub id: String,
    /// 1-based; 0 for a service container.
    pub replica: u32,
    /// The service this container runs (`spec.services[].name`); absent for main containers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub state: String,
    pub health: String,
    pub ports: Vec<PortBinding>,
    /// The node it runs on (Swarm); absent on one engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// How the last container of a challenge ended.
#[derive(Debug, Clone, PartialEq, Serialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastTermination {
    pub container: String,
    pub exit_code: i64,
    /// `OOMKilled`, `Error`, `Completed` or `Killed`.
    pub reason: String,
    pub oom_killed: bool,
    /// RFC 3339.
    pub time: String,
    /// The last lines the container wrote.
    pub log_tail: Vec<String>,
    /// The engine's words on why it ended, where it gives them (Swarm: the task's error).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Something beast saw or did, kept in the challenge's history (last [`HISTORY`] entries).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Event {
    pub time: String,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub kind: String,
    pub reason: String,
    pub message: String,
}

/// How many events a challenge keeps.
pub const HISTORY: usize = 30;

/// What the reconciler knows about a challenge.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuntimeStatus {
    pub phase: Phase,
    pub observed_generation: u64,
    /// Crashes (exits beast did not cause and nobody asked for) and restarts after failed
    /// probes, since beast started.
    pub restarts: u32,
    pub conditions: BTreeMap<String, Condition>,
    pub containers: Vec<ContainerStatus>,
    pub last_termination: Option<LastTermination>,
    pub events: std::collections::VecDeque<Event>,
    /// Times (seconds since the epoch) of recent crashes of the generation in
    /// [`RuntimeStatus::exits_generation`], for crash-loop detection.
    pub recent_exits: std::collections::VecDeque<i64>,
    /// The generation the crash-loop verdict belongs to: a new spec starts clean.
    pub exits_generation: u64,
    /// Probe verdict per container id: `healthy`, `unhealthy` or `starting`.
    pub health: BTreeMap<String, String>,
    /// The challenge's own network, once it exists.
    pub network: Option<NetworkStatus>,
}

/// The challenge's bridge network and its egress policy (SPEC §7).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    /// `{instance}_{challenge}`.
    pub name: String,
    /// IPv4 CIDR.
    pub subnet: String,
    /// Whether the challenge's containers may open new outbound connections.
    pub egress: bool,
    /// Whether beast enforces `egress: false` (the `EgressPolicy` condition says why not).
    pub enforced: bool,
}

impl RuntimeStatus {
    /// Sets a condition, keeping its transition time unless its status flips.
    pub fn set_condition(&mut self, kind: &str, ok: Option<bool>, reason: &str, message: &str) {
        let status = match ok {
            Some(true) => "True",
            Some(false) => "False",
            None => "Unknown",
        };
        let now = now_rfc3339();
        let entry = self
            .conditions
            .entry(kind.to_string())
            .or_insert_with(|| Condition {
                kind: kind.to_string(),
                status: String::new(),
                reason: String::new(),
                message: String::new(),
                last_transition_time: now.clone(),
            });
        if entry.status != status {
            entry.last_transition_time = now;
        }
        entry.status = status.to_string();
        entry.reason = reason.to_string();
        entry.message = message.to_string();
    }

    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.get(kind)
    }

    /// Appends to the history, dropping the oldest beyond [`HISTORY`].
    pub fn event(&mut self, warning: bool, reason: &str, message: String) {
        self.events.push_back(Event {
            time: now_rfc3339(),
            kind: if warning { "Warning" } else { "Normal" }.to_string(),
            reason: reason.to_string(),
            message,
        });
        while self.events.len() > HISTORY {
            self.events.pop_front();
        }
    }

    /// Records a crash (or a restart after failed probes) at `now` (seconds), keeping the last
    /// 10 minutes for the crash-loop verdict.
    pub fn record_exit(&mut self, now: i64) {
        self.restarts += 1;
        self.recent_exits.push_back(now);
        while self.recent_exits.front().is_some_and(|t| now - t > 600) {
            self.recent_exits.pop_front();
        }
    }

    /// Makes the crash-loop verdict belong to `generation`: exits of an earlier spec are
    /// forgotten, so a fixed challenge is not held Degraded by its broken predecessor.
    pub fn start_generation(&mut self, generation: u64) {
        if self.exits_generation != generation {
            self.exits_generation = generation;
            self.recent_exits.clear();
        }
    }

    /// Forgets the crash history of the current generation (a redeploy starts clean too).
    pub fn clear_exits(&mut self) {
        self.recent_exits.clear();
    }

    /// Crashes per minute over the last 10 minutes (or since the first one, if later).
    pub fn restart_rate(&self, now: i64) -> f64 {
        let recent: Vec<i64> = self
            .recent_exits
            .iter()
            .copied()
            .filter(|t| now - t <= 600)
            .collect();
        let Some(first) = recent.first() else {
            return 0.0;
        };
        let minutes = ((now - first).max(60)) as f64 / 60.0;
        recent.len() as f64 / minutes
    }

    /// Crash-loop verdict from recent exits: `Some(true)` failed (≥ 10 exits in 10 minutes),
    /// `Some(false)` backing off (≥ 3 exits in 2 minutes), `None` no crash loop.
    pub fn crash_loop(&self, now: i64) -> Option<bool> {
        let in_window = |secs: i64| {
            self.recent_exits
                .iter()
                .filter(|t| now - **t <= secs)
                .count()
        };
        if in_window(600) >= CRASH_LOOP_FAILED {
            Some(true)
        } else if in_window(120) >= CRASH_LOOP_DEGRADED {
            Some(false)
        } else {
            None
        }
    }
}

/// Exits within 2 minutes that make a challenge `Degraded` (CrashLoopBackOff).
pub const CRASH_LOOP_DEGRADED: usize = 3;
/// Exits within 10 minutes that make it `Failed` (the engine keeps retrying, 1 minute apart).
pub const CRASH_LOOP_FAILED: usize = 10;

/// The current time as RFC 3339 (UTC).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Status of every challenge, shared between the reconciler and the API.
#[derive(Clone, Default)]
pub struct StatusBoard {
    inner: Arc<RwLock<BTreeMap<String, RuntimeStatus>>>,
    version: Arc<AtomicU64>,
}

impl StatusBoard {
    pub fn new() -> StatusBoard {
        StatusBoard::default()
    }

    pub fn get(&self, name: &str) -> Option<RuntimeStatus> {
        self.read().get(name).cloned()
    }

    /// The generation `name` last converged at, without copying its status.
    pub fn observed_generation(&self, name: &str) -> Option<u64> {
        self.read().get(name).map(|s| s.observed_generation)
    }

    /// The phase of `name`, without copying its status.
    pub fn phase(&self, name: &str) -> Option<Phase> {
        self.read().get(name).map(|s| s.phase)
    }

    /// The reported `Valid` condition of `name`, without copying its status.
    pub fn valid(&self, name: &str) -> Option<bool> {
        self.read()
            .get(name)
            .and_then(|s| s.condition("Valid"))
            .map(|c| c.status == "True")
    }

    /// The ids of `name`'s containers whose probe passes, without copying its status.
    pub fn healthy_ids(&self, name: &str) -> std::collections::BTreeSet<String> {
        self.read()
            .get(name)
            .map(|s| {
                s.health
                    .iter()
                    .filter(|(_, v)| *v == "healthy")
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Edits the status of `name` (created on first use).
    pub fn update<T>(&self, name: &str, f: impl FnOnce(&mut RuntimeStatus) -> T) -> T {
        let mut all = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let out = f(all.entry(name.to_string()).or_default());
        // Under the lock, after the change: a reader that saw this version sees the change.
        self.version.fetch_add(1, Ordering::Release);
        out
    }

    /// Changes whenever any status may have changed.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn remove(&self, name: &str) {
        let mut all = self.inner.write().unwrap_or_else(|p| p.into_inner());
        all.remove(name);
        self.version.fetch_add(1, Ordering::Release);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, RuntimeStatus>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// The status response of one challenge (SPEC §6).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ChallengeStatus {
    pub name: String,
    pub source: String,
    /// The git commit the running spec was deployed from (`--git` sources).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub generation: u64,
    pub status: StatusBody,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusBody {
    pub phase: Phase,
    pub observed_generation: u64,
    pub restarts: u32,
    pub conditions: Vec<Condition>,
    pub containers: Vec<ContainerStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_termination: Option<LastTermination>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStatus>,
    pub events: Vec<Event>,
}

/// Merges a desired entry with what the reconciler reported. `Valid` comes from the entry.
pub fn view(entry: &Entry, runtime: Option<RuntimeStatus>) -> ChallengeStatus {
    let mut rs = runtime.unwrap_or_default();
    if rs.condition("Valid").is_none()
        || rs.condition("Valid").map(|c| c.status == "True") != Some(entry.is_valid())
    {
        // The reconciler has not caught up with the entry yet: show the entry's truth.
        rs.set_condition(
            "Valid",
            Some(entry.is_valid()),
            valid_reason(entry),
            &entry.errors.join("\n"),
        );
    }
    for kind in ["Ready", "Healthy"] {
        if rs.condition(kind).is_none() {
            rs.set_condition(kind, None, "", "");
        }
    }
    let order = |k: &str| match k {
        "Valid" => 0,
        "Built" => 1,
        "Ready" => 2,
        "Healthy" => 3,
        _ => 4,
    };
    let mut conditions: Vec<Condition> = rs.conditions.into_values().collect();
    conditions.sort_by_key(|c| order(&c.kind));
    ChallengeStatus {
        name: entry.name.clone(),
        source: entry.source.to_string(),
        commit: entry.commit.clone(),
        generation: entry.generation,
        status: StatusBody {
            phase: rs.phase,
            observed_generation: rs.observed_generation,
            restarts: rs.restarts,
            conditions,
            containers: rs.containers,
            last_termination: rs.last_termination,
            network: rs.network,
            events: rs.events.into_iter().collect(),
        },
    }
}

/// The reason of the Valid condition for an entry.
pub fn valid_reason(entry: &Entry) -> &'static str {
    match (entry.is_valid(), entry.spec.is_some()) {
        (true, _) => "Valid",
        (false, true) => "InvalidKeepingLastValid",
        (false, false) => "Invalid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crash_loop_verdict_belongs_to_a_generation() {
        let mut s = RuntimeStatus::default();
        s.start_generation(1);
        for t in 0..CRASH_LOOP_FAILED as i64 {
            s.record_exit(1_000 + t);
        }
        assert_eq!(s.crash_loop(1_010), Some(true));
        s.start_generation(1);
        assert_eq!(
            s.crash_loop(1_010),
            Some(true),
            "same generation keeps its verdict"
        );
        s.start_generation(2);
        assert_eq!(s.crash_loop(1_010), None, "a new spec starts clean");
        assert_eq!(
            s.restarts, CRASH_LOOP_FAILED as u32,
            "the count is history, kept"
        );
    }

    #[test]
    fn restart_rate_is_per_minute_over_at_least_a_minute() {
        let mut s = RuntimeStatus::default();
        assert_eq!(s.restart_rate(100), 0.0);
        for t in [0, 10, 20] {
            s.record_exit(t);
        }
        assert!((s.restart_rate(30) - 3.0).abs() < 1e-9);
        assert!((s.restart_rate(120) - 1.5).abs() < 1e-9);
    }

    #[test]
    fn transition_time_changes_only_on_a_flip() {
        let mut s = RuntimeStatus::default();
        s.set_condition("Ready", Some(true), "Running", "");
        let t0 = s.condition("Ready").map(|c| c.last_transition_time.clone());
        if let Some(c) = s.conditions.get_mut("Ready") {
            c.last_transition_time = "earlier".into();
        }
        s.set_condition("Ready", Some(true), "Running", "again");
        assert_eq!(
            s.condition("Ready")
                .map(|c| c.last_transition_time.as_str()),
            Some("earlier")
        );
        s.set_condition("Ready", Some(false), "Down", "");
        assert_ne!(
            s.condition("Ready").map(|c| c.last_transition_time.clone()),
            Some("earlier".to_string())
        );
        assert!(t0.is_some());
    }
}
