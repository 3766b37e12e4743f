//! Notifications: what beast tells the outside world about status changes, heals and task results.
//!
//! The reconciler, the event follower and the task runner call [`Notifier::publish`]. A
//! notification gets the next id (monotonic for the life of the process), a time, a place in a
//! ring buffer of the last [`BUFFER`] notifications (so a server-sent-events client can resume
//! after `Last-Event-ID`, see [`sse`]) and is broadcast to live subscribers and offered to the
//! webhook subscriptions ([`webhook`]).
//!
//! `publish` never awaits and never does I/O: it takes one short lock, clips oversized input and
//! hands `Arc`s to bounded queues. A slow or absent consumer costs it nothing; that consumer
//! loses notifications instead (and is told so). Delivery, retries and HTTP live in [`webhook`].

pub mod sse;
pub mod webhook;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

pub use webhook::{Delivery, NewWebhook, Subscription, WebhookView, Webhooks};

use crate::status::now_rfc3339;

/// How many notifications are kept for `Last-Event-ID` resume.
pub const BUFFER: usize = 1000;
/// Messages longer than this (in characters) are clipped.
pub const MAX_MESSAGE: usize = 2000;
/// `data` whose JSON is longer than this (in bytes) is replaced by a `{"truncated": true}` marker.
pub const MAX_DATA: usize = 16 * 1024;

/// Errors of the notification namespace.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A request that cannot be honoured as sent (bad URL, bad filter, malformed body).
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a webhook table: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// What a notification is about. Serialized lowercase (`status`, `heal`, `task`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A challenge's phase or a condition changed.
    Status,
    /// beast repaired something it did not break (an exit, a removal, a squatter).
    Heal,
    /// A task (deploy, undeploy, redeploy, purge) finished.
    Task,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 3] = [Kind::Status, Kind::Heal, Kind::Task];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Status => "status",
            Kind::Heal => "heal",
            Kind::Task => "task",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = NotifyError;

    fn from_str(s: &str) -> Result<Kind, NotifyError> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s.trim())
            .ok_or_else(|| {
                NotifyError::Invalid(format!(
                    "unknown notification kind {s:?} (expected status, heal or task)"
                ))
            })
    }
}

/// One notification, as sent over SSE and inside webhook bodies (`beast`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub id: u64,
    /// RFC 3339 (UTC).
    pub time: String,
    pub kind: Kind,
    pub challenge: String,
    pub message: String,
    pub data: serde_json::Value,
}

/// Tunables of a [`Notifier`]. `Default` is what `beast run` uses.
#[derive(Debug, Clone, Copy)]
pub struct NotifierConfig {
    /// Notifications kept for resume.
    pub buffer: usize,
    /// Live notifications a subscriber may fall behind before it is told to reset.
    pub channel: usize,
    /// Interval of SSE keep-alive comments.
    pub keep_alive: Duration,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        NotifierConfig {
            buffer: BUFFER,
            channel: 256,
            keep_alive: Duration::from_secs(15),
        }
    }
}

/// What a client resuming after an id gets from the buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    /// Some notifications after the requested id are no longer buffered, or the id is unknown
    /// (newer than anything sent: beast restarted). The client should re-read full state.
    pub reset: bool,
    /// Buffered notifications with an id above the requested one (all of them after a reset).
    pub items: Vec<Arc<Notification>>,
}

/// The publishing end. Cheap to clone; every clone feeds the same subscribers.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<Notification>>,
    webhooks: Option<Webhooks>,
    closed: watch::Sender<bool>,
    keep_alive: Duration,
}

/// The id counter and the last notifications, kept together so ids and order agree.
struct Ring {
    last_id: u64,
    capacity: usize,
    items: VecDeque<Arc<Notification>>,
}

impl Ring {
    fn push(&mut self, note: Arc<Notification>) {
        self.items.push_back(note);
        while self.items.len() > self.capacity {
            self.items.pop_front();
        }
    }

    fn since(&self, after: u64) -> Resume {
        let oldest = self.items.front().map_or(self.last_id + 1, |n| n.id);
        let reset = after > self.last_id || after.saturating_add(1) < oldest;
        let items = self
            .items
            .iter()
            .filter(|n| reset || n.id > after)
            .cloned()
            .collect();
        Resume { reset, items }
    }
}

impl Notifier {
    /// A notifier that also feeds `webhooks`, if given.
    pub fn new(config: NotifierConfig, webhooks: Option<Webhooks>) -> Notifier {
        let (live, _) = broadcast::channel(config.channel.max(1));
        let (closed, _) = watch::channel(false);
        Notifier {
            inner: Arc::new(Inner {
                ring: Mutex::new(Ring {
                    last_id: 0,
                    capacity: config.buffer.max(1),
                    items: VecDeque::new(),
                }),
                live,
                webhooks,
                closed,
                keep_alive: config.keep_alive,
            }),
        }
    }

    /// Records and fans out a notification; returns its id. Never blocks on a consumer, never
    /// awaits, does no I/O: safe on the reconcile path.
    pub fn publish(
        &self,
        kind: Kind,
        challenge: &str,
        message: String,
        data: serde_json::Value,
    ) -> u64 {
        let (message, data, time) = (clip(message), bound(data), now_rfc3339());
        let mut ring = self.ring();
        ring.last_id += 1;
        let note = Arc::new(Notification {
            id: ring.last_id,
            time,
            kind,
            challenge: challenge.to_string(),
            message,
            data,
        });
        ring.push(note.clone());
        // Under the lock, so every consumer sees ids in order. An error only means nobody listens.
        let _ = self.inner.live.send(note.clone());
        if let Some(webhooks) = &self.inner.webhooks {
            webhooks.offer(&note);
        }
        note.id
    }

    /// The buffered notifications after `after`, and whether some were lost.
    pub fn since(&self, after: u64) -> Resume {
        self.ring().since(after)
    }

    /// The id of the last notification (0 before the first).
    pub fn last_id(&self) -> u64 {
        self.ring().last_id
    }

    /// The webhook registry this notifier feeds, if any.
    pub fn webhooks(&self) -> Option<&Webhooks> {
        self.inner.webhooks.as_ref()
    }

    /// Ends every open event stream (so a graceful shutdown is not held up by SSE clients).
    pub fn shutdown(&self) {
        self.inner.closed.send_replace(true);
    }

    /// Interval of SSE keep-alive comments.
    pub fn keep_alive(&self) -> Duration {
        self.inner.keep_alive
    }

    /// A live receiver plus what to replay first, taken atomically: nothing is lost or doubled
    /// between the replay and the live feed. `after: None` means live only.
    fn subscribe(
        &self,
        after: Option<u64>,
    ) -> (Resume, u64, broadcast::Receiver<Arc<Notification>>) {
        let ring = self.ring();
        let rx = self.inner.live.subscribe();
        let resume = match after {
            Some(after) => ring.since(after),
            None => Resume {
                reset: false,
                items: Vec::new(),
            },
        };
        (resume, ring.last_id, rx)
    }

    fn closed(&self) -> watch::Receiver<bool> {
        self.inner.closed.subscribe()
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.inner.ring.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Clips a message to [`MAX_MESSAGE`] characters.
fn clip(mut message: String) -> String {
    if let Some((at, _)) = message.char_indices().nth(MAX_MESSAGE) {
        message.truncate(at);
        message.push('…');
    }
    message
}

/// Replaces `data` too large to keep a thousand of by a marker.
fn bound(data: serde_json::Value) -> serde_json::Value {
    let size = serde_json::to_vec(&data).map_or(usize::MAX, |v| v.len());
    if size > MAX_DATA {
        serde_json::json!({"truncated": true, "bytes": size})
    } else {
        data
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn small(buffer: usize) -> Notifier {
        Notifier::new(
            NotifierConfig {
                buffer,
                channel: 4,
                keep_alive: Duration::from_secs(15),
            },
            None,
        )
    }

    fn publish_n(n: &Notifier, count: u64) {
        for i in 0..count {
            n.publish(Kind::Status, "echo", format!("m{i}"), json!({}));
        }
    }

    fn ids(r: &Resume) -> Vec<u64> {
        r.items.iter().map(|n| n.id).collect()
    }

    #[test]
    fn ids_are_monotonic_from_one_and_the_ring_keeps_the_last() {
        let n = small(5);
        assert_eq!(n.last_id(), 0);
        assert_eq!(n.publish(Kind::Heal, "echo", "a".into(), json!({})), 1);
        publish_n(&n, 9);
        assert_eq!(n.last_id(), 10);
        let r = n.since(5);
        assert!(!r.reset);
        assert_eq!(ids(&r), vec![6, 7, 8, 9, 10]);
    }

    #[test]
    fn resume_replays_only_newer_ids() {
        let n = small(1000);
        publish_n(&n, 20);
        assert_eq!(ids(&n.since(17)), vec![18, 19, 20]);
        assert!(n.since(20).items.is_empty());
        assert!(!n.since(20).reset);
        assert_eq!(n.since(0).items.len(), 20);
        assert!(!n.since(0).reset);
    }

    #[test]
    fn resume_from_before_the_buffer_asks_for_a_reset() {
        let n = small(5);
        publish_n(&n, 10);
        // 6..=10 buffered: after 5 nothing is lost, after 4 id 5 is.
        assert!(!n.since(5).reset);
        let r = n.since(4);
        assert!(r.reset);
        assert_eq!(ids(&r), vec![6, 7, 8, 9, 10]);
    }

    #[test]
    fn resume_from_an_unknown_future_id_asks_for_a_reset() {
        // A client that saw id 500 from a previous beast process.
        let n = small(1000);
        publish_n(&n, 3);
        let r = n.since(500);
        assert!(r.reset);
        assert_eq!(ids(&r), vec![1, 2, 3]);
    }

    #[test]
    fn notification_json_has_the_documented_shape() {
        let n = small(10);
        n.publish(
            Kind::Heal,
            "echo",
            "beast_echo_1 exited".into(),
            json!({"exitCode": 137}),
        );
        let v = serde_json::to_value(&*n.since(0).items[0]).unwrap();
        assert_eq!(v["id"], 1);
        assert_eq!(v["kind"], "heal");
        assert_eq!(v["challenge"], "echo");
        assert_eq!(v["message"], "beast_echo_1 exited");
        assert_eq!(v["data"]["exitCode"], 137);
        let t = v["time"].as_str().unwrap();
        assert!(
            t.len() >= 20 && t.as_bytes()[10] == b'T' && t.ends_with('Z'),
            "{t}"
        );
    }

    #[test]
    fn kinds_parse_and_print_lowercase() {
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>().unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), json!(k.as_str()));
        }
        assert!("Heal".parse::<Kind>().is_err());
    }

    #[test]
    fn oversized_input_is_clipped_to_bound_memory() {
        let n = small(10);
        n.publish(
            Kind::Task,
            "echo",
            "x".repeat(MAX_MESSAGE * 3),
            json!({"blob": "y".repeat(MAX_DATA * 2)}),
        );
        let note = n.since(0).items[0].clone();
        assert_eq!(note.message.chars().count(), MAX_MESSAGE + 1);
        assert_eq!(note.data["truncated"], true);
    }

    #[tokio::test]
    async fn publish_never_blocks_without_subscribers_or_with_a_slow_one() {
        let n = small(1000);
        let done = tokio::time::timeout(Duration::from_secs(5), async {
            publish_n(&n, 5_000);
            // A subscriber that never reads: the channel (4) overflows, publish goes on.
            let (_, _, _slow) = n.subscribe(None);
            publish_n(&n, 5_000);
        })
        .await;
        assert!(done.is_ok());
        assert_eq!(n.last_id(), 10_000);
        assert_eq!(n.since(0).items.len(), 1000);
    }

    #[test]
    fn subscribe_gives_replay_and_live_without_gap_or_double() {
        let n = small(100);
        publish_n(&n, 3);
        let (resume, last, mut rx) = n.subscribe(Some(1));
        assert_eq!(ids(&resume), vec![2, 3]);
        assert_eq!(last, 3);
        publish_n(&n, 1);
        assert_eq!(rx.try_recv().unwrap().id, 4);
    }
}
