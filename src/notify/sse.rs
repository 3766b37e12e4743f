//! The server-sent-events feed of a [`Notifier`]: replay after `Last-Event-ID`, then live
//! notifications, filtered by kind and challenge.
//!
//! Each notification becomes `id: <n>`, `event: <kind>`, `data: <json>`. When the client cannot
//! be given a gapless feed (its id is older than the buffer or unknown, or it fell behind the
//! live channel) it gets `event: reset` (no `id`, so its `Last-Event-ID` stays) and the feed goes
//! on: the client should re-read full state. The feed ends when the notifier shuts down. This
//! module parses nothing from HTTP; the API hands it a [`Start`] and a [`Filter`].

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::Event;
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use super::{Kind, Notification, Notifier, NotifyError};

/// Where a feed starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Live notifications only.
    Live,
    /// Buffered notifications with a higher id first.
    After(u64),
    /// An id that is not one of ours: reset, then everything buffered.
    Unknown,
}

impl Start {
    /// From a `Last-Event-ID` value (header or query); `None` means live only.
    pub fn parse(last_event_id: Option<&str>) -> Start {
        match last_event_id.map(str::trim) {
            None | Some("") => Start::Live,
            Some(s) => s.parse().map_or(Start::Unknown, Start::After),
        }
    }
}

/// Which notifications a feed (or a webhook) wants. Empty sets mean "all".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub kinds: BTreeSet<Kind>,
    pub challenges: BTreeSet<String>,
}

impl Filter {
    /// From comma-separated query values (`kind=heal,task`, `challenge=echo,web`).
    pub fn parse(kinds: Option<&str>, challenges: Option<&str>) -> Result<Filter, NotifyError> {
        let split = |s: Option<&str>| -> Vec<String> {
            s.unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect()
        };
        Ok(Filter {
            kinds: split(kinds)
                .iter()
                .map(|k| k.parse())
                .collect::<Result<_, _>>()?,
            challenges: split(challenges).into_iter().collect(),
        })
    }

    pub fn matches(&self, note: &Notification) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&note.kind))
            && (self.challenges.is_empty() || self.challenges.contains(&note.challenge))
    }
}

/// One thing a feed yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Note(Arc<Notification>),
    Reset(Reset),
}

/// Why a client must re-read full state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// The requested id is older than the buffer.
    Gap,
    /// The requested id was never sent by this process (or is not a number).
    Unknown,
    /// The client read too slowly and missed this many live notifications.
    Lagged(u64),
}

impl Reset {
    fn json(self) -> serde_json::Value {
        let (reason, message) = match self {
            Reset::Gap => (
                "gap",
                "some notifications after Last-Event-ID are no longer buffered".to_string(),
            ),
            Reset::Unknown => (
                "unknown",
                "Last-Event-ID is not an id of this server (it may have restarted)".to_string(),
            ),
            Reset::Lagged(n) => (
                "lagged",
                format!("the stream fell behind and skipped {n} notifications"),
            ),
        };
        serde_json::json!({"reason": reason, "message": message})
    }
}

impl Item {
    /// The SSE event for this item.
    pub fn event(&self) -> Event {
        match self {
            Item::Note(note) => Event::default()
                .id(note.id.to_string())
                .event(note.kind.as_str())
                .data(serde_json::to_string(&**note).unwrap_or_default()),
            Item::Reset(reset) => Event::default()
                .event("reset")
                .data(reset.json().to_string()),
        }
    }
}

/// The feed of `notifier` from `start`, filtered. Ends when the notifier shuts down.
pub fn feed(notifier: &Notifier, start: Start, filter: Filter) -> impl Stream<Item = Item> {
    let after = match start {
        Start::Live => None,
        Start::After(id) => Some(id),
        Start::Unknown => Some(u64::MAX),
    };
    let (resume, last, rx) = notifier.subscribe(after);
    let mut pending: VecDeque<Item> = VecDeque::new();
    if resume.reset {
        // Beyond the last id (Start::Unknown included): not ours. Otherwise: older than the buffer.
        pending.push_back(Item::Reset(if after.is_some_and(|a| a > last) {
            Reset::Unknown
        } else {
            Reset::Gap
        }));
    }
    pending.extend(
        resume
            .items
            .into_iter()
            .filter(|n| filter.matches(n))
            .map(Item::Note),
    );
    let state = Feed {
        pending,
        rx,
        last,
        filter,
        closed: notifier.closed(),
    };
    futures::stream::unfold(state, |mut feed| async move {
        let item = feed.next().await?;
        Some((item, feed))
    })
}

/// [`feed`] as SSE events, for `axum::response::Sse`.
pub fn events(
    notifier: &Notifier,
    start: Start,
    filter: Filter,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::StreamExt::map(feed(notifier, start, filter), |item| Ok(item.event()))
}

struct Feed {
    pending: VecDeque<Item>,
    rx: broadcast::Receiver<Arc<Notification>>,
    /// The highest id already seen (sent or filtered out); live duplicates are skipped.
    last: u64,
    filter: Filter,
    closed: watch::Receiver<bool>,
}

impl Feed {
    async fn next(&mut self) -> Option<Item> {
        if let Some(item) = self.pending.pop_front() {
            return Some(item);
        }
        loop {
            tokio::select! {
                biased;
                _ = self.closed.wait_for(|closed| *closed) => return None,
                got = self.rx.recv() => match got {
                    Ok(note) if note.id <= self.last => {}
                    Ok(note) => {
                        self.last = note.id;
                        if self.filter.matches(&note) {
                            return Some(Item::Note(note));
                        }
                    }
                    Err(RecvError::Lagged(missed)) => return Some(Item::Reset(Reset::Lagged(missed))),
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use serde_json::json;

    use super::*;
    use crate::notify::NotifierConfig;

    fn notifier(channel: usize) -> Notifier {
        Notifier::new(
            NotifierConfig {
                buffer: 100,
                channel,
                keep_alive: Duration::from_secs(15),
            },
            None,
        )
    }

    async fn take<S: Stream<Item = Item> + Unpin>(s: &mut S, n: usize) -> Vec<Item> {
        let mut out = Vec::new();
        for _ in 0..n {
            let item = tokio::time::timeout(Duration::from_secs(2), s.next())
                .await
                .expect("feed stalled")
                .expect("feed ended");
            out.push(item);
        }
        out
    }

    fn id(item: &Item) -> u64 {
        match item {
            Item::Note(n) => n.id,
            Item::Reset(r) => panic!("unexpected reset {r:?}"),
        }
    }

    #[test]
    fn start_parses_header_values() {
        assert_eq!(Start::parse(None), Start::Live);
        assert_eq!(Start::parse(Some(" ")), Start::Live);
        assert_eq!(Start::parse(Some("12")), Start::After(12));
        assert_eq!(Start::parse(Some("abc")), Start::Unknown);
    }

    #[test]
    fn filters_parse_and_match() {
        let f = Filter::parse(Some("heal, task"), Some("echo")).unwrap();
        let note = |kind, challenge: &str| Notification {
            id: 1,
            time: String::new(),
            kind,
            challenge: challenge.into(),
            message: String::new(),
            data: json!(null),
        };
        assert!(f.matches(&note(Kind::Heal, "echo")));
        assert!(!f.matches(&note(Kind::Status, "echo")));
        assert!(!f.matches(&note(Kind::Task, "web")));
        assert!(Filter::default().matches(&note(Kind::Status, "web")));
        assert!(Filter::parse(Some("heal,nope"), None).is_err());
    }

    #[tokio::test]
    async fn replay_then_live_in_order_without_doubles() {
        let n = notifier(16);
        for i in 0..5 {
            n.publish(Kind::Status, "echo", format!("{i}"), json!({}));
        }
        let mut feed = Box::pin(feed(&n, Start::After(3), Filter::default()));
        n.publish(Kind::Heal, "echo", "live".into(), json!({}));
        let got: Vec<u64> = take(&mut feed, 3).await.iter().map(id).collect();
        assert_eq!(got, vec![4, 5, 6]);
    }

    #[tokio::test]
    async fn unknown_id_resets_then_replays_everything() {
        let n = notifier(16);
        n.publish(Kind::Status, "echo", "a".into(), json!({}));
        let mut feed = Box::pin(feed(&n, Start::After(99), Filter::default()));
        let got = take(&mut feed, 2).await;
        assert_eq!(got[0], Item::Reset(Reset::Unknown));
        assert_eq!(id(&got[1]), 1);
    }

    #[tokio::test]
    async fn a_lagging_subscriber_gets_a_reset_and_continues() {
        let n = notifier(2);
        let mut feed = Box::pin(feed(&n, Start::Live, Filter::default()));
        for i in 0..10 {
            n.publish(Kind::Status, "echo", format!("{i}"), json!({}));
        }
        let got = take(&mut feed, 3).await;
        assert!(matches!(got[0], Item::Reset(Reset::Lagged(8))));
        assert_eq!(id(&got[1]), 9);
        assert_eq!(id(&got[2]), 10);
        n.publish(Kind::Status, "echo", "after".into(), json!({}));
        assert_eq!(id(&take(&mut feed, 1).await[0]), 11);
    }

    #[tokio::test]
    async fn shutdown_ends_the_feed() {
        let n = notifier(2);
        let mut feed = Box::pin(feed(&n, Start::Live, Filter::default()));
        n.shutdown();
        let end = tokio::time::timeout(Duration::from_secs(2), feed.next()).await;
        assert_eq!(end.unwrap(), None);
    }
}
