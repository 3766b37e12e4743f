//! Engine events as triggers: the event stream of this instance's containers puts the
//! challenge's key on the queue at once (level-triggered: an event only says "look again").
//!
//! The stream reconnects with backoff when it breaks, and every (re)connect asks for a full
//! resync, so events missed while disconnected are not lost. Crashes — exits that neither beast
//! nor anyone else asked for — are recorded in the challenge's status (restart count, last
//! termination with the log tail, history). Damage done from outside (`docker rm -f`, `kill`,
//! `stop`: the engine announces a `kill` before the exit) is healed but is no crash: it never
//! makes a challenge look crash-looping. This module decides nothing about containers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures::StreamExt;
use tokio::sync::{watch, Notify};

use crate::notify::{Kind, Notifier};
use crate::queue::WorkQueue;
use crate::reconcile::{Expected, Reconciler};
use crate::runtime::{EngineEvent, Runtime};
use crate::status::{now_rfc3339, LastTermination};

/// Actions that can mean damage (or its repair) and so warrant a look.
const TRIGGERS: &[&str] = &[
    "die", "oom", "destroy", "stop", "kill", "pause", "rename", "update",
];

/// How long after a `kill` from outside the container's exit counts as that kill's doing.
const KILL_WINDOW: Duration = Duration::from_secs(30);

/// The log tail of a crashing container is read at most this often (a crash loop at full speed
/// must not add an inspect and a log read per exit to a busy engine).
const TAIL_EVERY: Duration = Duration::from_secs(30);

/// What the event handler remembers between events: kills from outside awaiting their exit,
/// and when each container's log tail was last read.
#[derive(Default)]
pub struct Tracker {
    killed: HashMap<String, Instant>,
    tail_read: HashMap<String, Instant>,
}

impl Tracker {
    fn killed_from_outside(&mut self, id: &str) -> bool {
        self.killed
            .remove(id)
            .is_some_and(|at| at.elapsed() < KILL_WINDOW)
    }

    /// Whether the log tail of `id` may be read now (and notes that it is).
    fn may_read_tail(&mut self, id: &str) -> bool {
        if self.tail_read.len() > 1_000 {
            self.tail_read.retain(|_, at| at.elapsed() < TAIL_EVERY);
            self.killed.retain(|_, at| at.elapsed() < KILL_WINDOW);
        }
        match self.tail_read.get(id) {
            Some(at) if at.elapsed() < TAIL_EVERY => false,
            _ => {
                self.tail_read.insert(id.to_string(), Instant::now());
                true
            }
        }
    }

    fn forget(&mut self, id: &str) {
        self.killed.remove(id);
        self.tail_read.remove(id);
    }
}

/// Follows the engine's events until `stop` flips.
pub async fn follow<R: Runtime>(
    reconciler: Arc<Reconciler<R>>,
    queue: WorkQueue<String>,
    notifier: Notifier,
    resync_now: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(250);
    let mut first = true;
    let mut tracker = Tracker::default();
    loop {
        let mut stream = reconciler.runtime.events(reconciler.instance());
        // Whatever happened while we were not listening is found by a full pass (the first
        // connect coincides with the operator's own first pass).
        if !std::mem::take(&mut first) {
            resync_now.notify_one();
        }
        let mut got_any = false;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                item = stream.next() => match item {
                    Some(Ok(event)) => {
                        got_any = true;
                        backoff = Duration::from_millis(250);
                        handle(&reconciler, &queue, &notifier, &mut tracker, event);
                    }
                    Some(Err(err)) => {
                        tracing::debug!(error = %err, "engine event stream broke; reconnecting");
                        break;
                    }
                    None => break,
                }
            }
        }
        if !got_any {
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}

fn handle<R: Runtime>(
    reconciler: &Arc<Reconciler<R>>,
    queue: &WorkQueue<String>,
    notifier: &Notifier,
    tracker: &mut Tracker,
    event: EngineEvent,
) {
    let Some(challenge) = event.challenge.clone() else {
        return;
    };
    let action = event.action.split(':').next().unwrap_or("").trim();
    let id = event.container_id.as_str();
    let expected = reconciler.expectation(id);
    if matches!(action, "start" | "restart") && expected == Some(Expected::Probe) {
        // The restart beast asked for after failed probes is done: later exits are crashes.
        reconciler.forget_expected(id);
        return;
    }
    if !TRIGGERS.contains(&action) {
        return;
    }
    tracing::debug!(%challenge, action, container = %event.name, ?expected, "engine event");
    if expected == Some(Expected::Probe) {
        if action == "die" {
            // The probe counted this restart; the exit code is known only now.
            let code = event.exit_code.unwrap_or(-1);
            reconciler.status.update(&challenge, |s| {
                if let Some(t) = s
                    .last_termination
                    .as_mut()
                    .filter(|t| t.container == event.name && t.reason == "Unhealthy")
                {
                    t.exit_code = code;
                }
            });
        }
        return;
    }
    let expected = expected.is_some();
    if !expected && action == "kill" {
        tracker.killed.insert(id.to_string(), Instant::now());
    }
    let outside_kill = !expected && action == "die" && tracker.killed_from_outside(id);
    if !expected && reconciler.store.get(&challenge).is_some() {
        match action {
            "die" if outside_kill => {
                let code = event.exit_code.unwrap_or(-1);
                reconciler.count_heal_needed();
                reconciler.status.update(&challenge, |s| {
                    s.event(
                        true,
                        "Killed",
                        format!("{} was killed outside beast (exit code {code})", event.name),
                    )
                });
                notifier.publish(
                    Kind::Heal,
                    &challenge,
                    format!("{} was killed outside beast; starting it again", event.name),
                    serde_json::json!({"container": event.name, "action": "kill", "exitCode": code}),
                );
            }
            "die" => on_exit(reconciler, notifier, tracker, &challenge, &event),
            "oom" => reconciler.status.update(&challenge, |s| {
                s.event(
                    true,
                    "OOMKilled",
                    format!("{} ran out of memory", event.name),
                );
                if let Some(t) = s
                    .last_termination
                    .as_mut()
                    .filter(|t| t.container == event.name)
                {
                    t.oom_killed = true;
                    t.reason = "OOMKilled".into();
                }
            }),
            "destroy" => reconciler.status.update(&challenge, |s| {
                s.event(
                    true,
                    "Removed",
                    format!("{} was removed outside beast", event.name),
                )
            }),
            "stop" | "pause" => reconciler.status.update(&challenge, |s| {
                s.event(
                    true,
                    "Interrupted",
                    format!("{} was {action}ped outside beast", event.name.trim()),
                )
            }),
            _ => {}
        }
    }
    if !expected && matches!(action, "oom" | "destroy" | "stop" | "pause") {
        let what = match action {
            "oom" => "ran out of memory",
            "destroy" => "was removed outside beast; recreating",
            "stop" => "was stopped outside beast; starting it again",
            _ => "was paused outside beast; unpausing it",
        };
        notifier.publish(
            Kind::Heal,
            &challenge,
            format!("{} {what}", event.name),
            serde_json::json!({"container": event.name, "action": action}),
        );
    }
    if action == "destroy" {
        reconciler.forget_expected(id);
        tracker.forget(id);
    }
    if expected {
        return;
    }
    if action == "die" && !outside_kill {
        // A crash: the engine's restart policy brings it back (after its growing delay). One
        // look once a burst of exits has settled is enough; a mass crash loop must not turn
        // every exit into several list calls against a busy engine.
        queue.add_after(challenge, CRASH_LOOK);
        return;
    }
    queue.add(challenge.clone());
    if action != "destroy" {
        // The engine announces an exit or a pause before the state its list calls read has
        // caught up, so the first look may still see the container running. Look again a little
        // later (level-triggered: an extra look at a converged challenge is cheap).
        second_look(queue, challenge);
    }
}

/// When a challenge is looked at after one of its containers crashed.
const CRASH_LOOK: Duration = Duration::from_secs(1);

/// When the second looks after an event happen.
const SECOND_LOOKS: [Duration; 2] = [Duration::from_millis(300), Duration::from_secs(2)];

fn second_look(queue: &WorkQueue<String>, challenge: String) {
    let queue = queue.clone();
    tokio::spawn(async move {
        for wait in SECOND_LOOKS {
            tokio::time::sleep(wait).await;
            queue.add(challenge.clone());
        }
    });
}

/// An exit beast did not cause: count it, and read back why it ended and what it last said.
fn on_exit<R: Runtime>(
    reconciler: &Arc<Reconciler<R>>,
    notifier: &Notifier,
    tracker: &mut Tracker,
    challenge: &str,
    event: &EngineEvent,
) {
    let code = event.exit_code.unwrap_or(-1);
    reconciler.count_heal_needed();
    notifier.publish(
        Kind::Heal,
        challenge,
        format!("{} exited with code {code}; recreating", event.name),
        serde_json::json!({
            "container": event.name,
            "exitCode": code,
            "reason": reason(code, false),
        }),
    );
    let read_tail = tracker.may_read_tail(&event.container_id);
    reconciler.status.update(challenge, |s| {
        s.record_exit(event.time);
        s.event(
            true,
            "Exited",
            format!("{} exited with code {code}", event.name),
        );
        // Between two reads of the tail, the last one read stands for this exit too.
        let previous_tail = s
            .last_termination
            .take()
            .filter(|t| !read_tail && t.container == event.name)
            .map(|t| t.log_tail)
            .unwrap_or_default();
        s.last_termination = Some(LastTermination {
            container: event.name.clone(),
            exit_code: code,
            reason: reason(code, false).into(),
            oom_killed: false,
            time: now_rfc3339(),
            log_tail: previous_tail,
            message: String::new(),
        });
    });
    if !read_tail {
        return;
    }
    let reconciler = reconciler.clone();
    let (challenge, id, name) = (
        challenge.to_string(),
        event.container_id.clone(),
        event.name.clone(),
    );
    tokio::spawn(async move {
        let termination = reconciler.runtime.termination(&id).await.ok();
        let tail = reconciler.runtime.logs(&id, 20).await.unwrap_or_default();
        reconciler.status.update(&challenge, |s| {
            if let Some(t) = s.last_termination.as_mut().filter(|t| t.container == name) {
                t.log_tail = tail;
                if let Some(term) = termination {
                    t.oom_killed |= term.oom_killed;
                    t.reason = reason(t.exit_code, t.oom_killed).into();
                    t.message = term.message;
                    if !term.finished_at.is_empty() && !term.finished_at.starts_with("0001") {
                        t.time = term.finished_at;
                    }
                }
            }
        });
    });
}

fn reason(code: i64, oom: bool) -> &'static str {
    match (code, oom) {
        (_, true) => "OOMKilled",
        (0, _) => "Completed",
        (137, _) => "Killed",
        _ => "Error",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::containers::Defaults;
    use crate::desired::DesiredStore;
    use crate::notify::NotifierConfig;
    use crate::ports::{PortAllocator, PortRange};
    use crate::queue::Backoff;
    use crate::reconcile::Settings;
    use crate::runtime::fake::FakeRuntime;
    use crate::status::StatusBoard;

    fn reconciler() -> Arc<Reconciler<FakeRuntime>> {
        let store = DesiredStore::new();
        let snapshot = crate::source::dir::scan(Path::new("examples")).unwrap();
        store.apply_dir(0, snapshot);
        Reconciler::new(
            Arc::new(FakeRuntime::new()),
            store,
            StatusBoard::new(),
            Settings {
                instance: "events-test".into(),
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

    fn event(action: &str, exit_code: Option<i64>) -> EngineEvent {
        EngineEvent {
            action: action.into(),
            container_id: "c1".into(),
            name: "beast_echo-tcp_1".into(),
            challenge: Some("echo-tcp".into()),
            replica: Some(1),
            exit_code,
            time: 0,
        }
    }

    /// Feeds events in order through one tracker; returns the status and what was queued.
    fn feed(
        reconciler: &Arc<Reconciler<FakeRuntime>>,
        events: &[(&str, Option<i64>)],
    ) -> (crate::status::RuntimeStatus, usize) {
        let notifier = Notifier::new(NotifierConfig::default(), None);
        let queue = WorkQueue::new(Backoff::default());
        let mut tracker = Tracker::default();
        for (action, code) in events {
            handle(
                reconciler,
                &queue,
                &notifier,
                &mut tracker,
                event(action, *code),
            );
        }
        let status = reconciler.status.get("echo-tcp").unwrap_or_default();
        (status, queue.len())
    }

    #[tokio::test]
    async fn damage_from_outside_is_healed_but_is_no_crash() {
        // docker rm -f, docker kill, docker stop: the engine announces a kill before the exit.
        for events in [
            vec![("kill", None), ("die", Some(137)), ("destroy", None)],
            vec![("kill", None), ("die", Some(137))],
            vec![
                ("kill", None),
                ("kill", None),
                ("die", Some(137)),
                ("stop", None),
            ],
        ] {
            let r = reconciler();
            let (s, queued) = feed(&r, &events);
            assert_eq!(s.restarts, 0, "{events:?}");
            assert!(s.recent_exits.is_empty(), "{events:?}");
            assert!(s.last_termination.is_none(), "{events:?}");
            assert_eq!(queued, 1, "the challenge is looked at again: {events:?}");
        }
    }

    #[tokio::test]
    async fn an_exit_nobody_asked_for_is_a_crash() {
        let r = reconciler();
        let (s, _) = feed(&r, &[("die", Some(3)), ("die", Some(3))]);
        assert_eq!(s.restarts, 2);
        assert_eq!(s.recent_exits.len(), 2);
        assert_eq!(s.last_termination.map(|t| t.exit_code), Some(3));
    }

    #[tokio::test]
    async fn a_probe_restart_is_counted_once_and_then_crashes_count_again() {
        let r = reconciler();
        r.expect("c1", Expected::Probe);
        r.status.update("echo-tcp", |s| {
            s.record_exit(0); // what the probe records before restarting
            s.last_termination = Some(LastTermination {
                container: "beast_echo-tcp_1".into(),
                exit_code: -1,
                reason: "Unhealthy".into(),
                ..LastTermination::default()
            });
        });
        let (s, queued) = feed(
            &r,
            &[
                ("kill", None),
                ("die", Some(143)),
                ("stop", None),
                ("start", None),
            ],
        );
        assert_eq!(s.restarts, 1, "counted by the probe, not again by its exit");
        assert_eq!(s.last_termination.as_ref().map(|t| t.exit_code), Some(143));
        assert_eq!(queued, 0);
        assert!(!r.is_expected("c1"), "the start ends the expectation");
        let (s, _) = feed(&r, &[("die", Some(1))]);
        assert_eq!(s.restarts, 2, "a later crash counts");
    }

    #[tokio::test]
    async fn an_unexpected_exit_is_published_as_a_heal_notification() {
        let reconciler = reconciler();
        let notifier = Notifier::new(NotifierConfig::default(), None);
        handle(
            &reconciler,
            &WorkQueue::new(Backoff::default()),
            &notifier,
            &mut Tracker::default(),
            event("die", Some(137)),
        );
        let got = notifier.since(0).items;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, Kind::Heal);
        assert_eq!(got[0].challenge, "echo-tcp");
        assert_eq!(got[0].data["exitCode"], 137);
        assert!(got[0].message.contains("exited with code 137"));
    }
}
