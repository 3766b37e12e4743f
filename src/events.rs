//! Engine events as triggers: the event stream of this instance's containers puts the
//! challenge's key on the queue at once (level-triggered: an event only says "look again").
//!
//! The stream reconnects with backoff when it breaks, and every (re)connect asks for a full
//! resync, so events missed while disconnected are not lost. Exits beast did not cause are
//! recorded in the challenge's status (restart count, last termination with the log tail,
//! history). This module decides nothing about containers.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{watch, Notify};

use crate::notify::{Kind, Notifier};
use crate::queue::WorkQueue;
use crate::reconcile::Reconciler;
use crate::runtime::{EngineEvent, Runtime};
use crate::status::{now_rfc3339, LastTermination};

/// Actions that can mean damage (or its repair) and so warrant a look.
const TRIGGERS: &[&str] = &[
    "die", "oom", "destroy", "stop", "kill", "pause", "rename", "update",
];

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
                        handle(&reconciler, &queue, &notifier, event);
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
    event: EngineEvent,
) {
    let Some(challenge) = event.challenge.clone() else {
        return;
    };
    let action = event.action.split(':').next().unwrap_or("").trim();
    if !TRIGGERS.contains(&action) {
        return;
    }
    let expected = reconciler.is_expected(&event.container_id);
    tracing::debug!(%challenge, action, container = %event.name, expected, "engine event");
    if !expected && reconciler.store.get(&challenge).is_some() {
        match action {
            "die" => on_exit(reconciler, notifier, &challenge, &event),
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
        reconciler.forget_expected(&event.container_id);
    }
    if !expected {
        queue.add(challenge);
    }
}

/// An exit beast did not cause: count it, and read back why it ended and what it last said.
fn on_exit<R: Runtime>(
    reconciler: &Arc<Reconciler<R>>,
    notifier: &Notifier,
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
    reconciler.status.update(challenge, |s| {
        s.record_exit(event.time);
        s.event(
            true,
            "Exited",
            format!("{} exited with code {code}", event.name),
        );
        s.last_termination = Some(LastTermination {
            container: event.name.clone(),
            exit_code: code,
            reason: reason(code, false).into(),
            oom_killed: false,
            time: now_rfc3339(),
            log_tail: Vec::new(),
        });
    });
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

    #[tokio::test]
    async fn an_unexpected_exit_is_published_as_a_heal_notification() {
        let store = DesiredStore::new();
        let snapshot = crate::source::dir::scan(Path::new("examples")).unwrap();
        store.apply_dir(0, snapshot);
        let reconciler = Reconciler::new(
            Arc::new(FakeRuntime::new()),
            store,
            StatusBoard::new(),
            Settings {
                instance: "notify-test".into(),
                defaults: Defaults::default(),
                stop_grace: Duration::from_secs(1),
                build_workers: 1,
            },
            PortAllocator::in_memory(PortRange {
                lo: 40000,
                hi: 40100,
            }),
        );
        let notifier = Notifier::new(NotifierConfig::default(), None);
        let event = EngineEvent {
            action: "die".into(),
            container_id: "c1".into(),
            name: "beast_echo-tcp_1".into(),
            challenge: Some("echo-tcp".into()),
            replica: Some(1),
            exit_code: Some(137),
            time: 0,
        };
        handle(
            &reconciler,
            &WorkQueue::new(Backoff::default()),
            &notifier,
            event,
        );
        let got = notifier.since(0).items;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, Kind::Heal);
        assert_eq!(got[0].challenge, "echo-tcp");
        assert_eq!(got[0].data["exitCode"], 137);
        assert!(got[0].message.contains("exited with code 137"));
    }
}
