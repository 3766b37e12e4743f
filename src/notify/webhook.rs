//! Webhook subscriptions: the registry (persisted as `<state-dir>/webhooks.json`) and delivery.
//!
//! Every subscription has its own tokio task fed by a bounded queue. [`Webhooks::offer`] (called
//! by `Notifier::publish`) only `try_send`s: when a receiver is slow and its queue is full, the
//! notification is counted as dropped for that subscription, never waited for. The task POSTs a
//! body that Slack (`text`) and Discord (`content`) both accept, with the notification itself
//! under `beast`, and retries network errors, 5xx and 429 with exponential backoff (honouring
//! `Retry-After` seconds), then gives up with a warning. Other 4xx answers are not retried.
//!
//! Webhook URLs are secrets (Slack's and Discord's carry the token in the path): they are shown
//! to admins through the API but never logged; errors are recorded without the URL, and the
//! table is written with owner-only permissions (as `tempfile` creates it).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::{Kind, Notification, NotifyError};

/// The table's file name inside the state directory.
pub const FILE: &str = "webhooks.json";

/// Delivery tunables. `Default`: 5 s timeout, 1 s × 2ⁿ up to 60 s, 6 attempts, queue of 256.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delivery {
    /// Timeout of one HTTP request.
    pub timeout: Duration,
    /// Wait before the second attempt; doubles after each failure.
    pub base: Duration,
    /// No wait (`Retry-After` included) exceeds this.
    pub cap: Duration,
    /// Attempts per notification, the first included.
    pub attempts: u32,
    /// Notifications waiting per subscription before new ones are dropped.
    pub queue: usize,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            timeout: Duration::from_secs(5),
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            attempts: 6,
            queue: 256,
        }
    }
}

/// A subscription as persisted and as `POST` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Subscription {
    pub id: String,
    pub url: String,
    pub kinds: Vec<Kind>,
    /// Only these challenges; empty means all.
    #[serde(default)]
    pub challenges: Vec<String>,
}

impl Subscription {
    fn wants(&self, note: &Notification) -> bool {
        self.kinds.contains(&note.kind)
            && (self.challenges.is_empty() || self.challenges.contains(&note.challenge))
    }
}

/// The body of `POST /api/v1/notification/webhooks`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    pub url: String,
    /// Absent or empty: every kind.
    #[serde(default)]
    pub kinds: Option<Vec<Kind>>,
    /// Absent or empty: every challenge.
    #[serde(default)]
    pub challenges: Option<Vec<String>>,
}

/// A subscription with its delivery counters, as the listing shows it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct WebhookView {
    #[serde(flatten)]
    pub subscription: Subscription,
    pub stats: StatsView,
}

/// Delivery counters of one subscription since beast started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsView {
    pub delivered: u64,
    /// Notifications given up on (after retries, or a 4xx answer).
    pub failed: u64,
    /// Notifications never attempted because the subscription's queue was full.
    pub dropped: u64,
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Stats {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    fn view(&self) -> StatsView {
        StatsView {
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    fn error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }
}

/// The registry of subscriptions. Cheap to clone. Must be created inside a tokio runtime (it
/// starts one delivery task per subscription).
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    file: Option<PathBuf>,
    delivery: Delivery,
    client: reqwest::Client,
    /// In creation order.
    live: RwLock<Vec<Live>>,
    /// Serialises changes so the file and memory agree.
    writer: tokio::sync::Mutex<()>,
}

/// A running subscription. Dropping it stops its delivery task.
struct Live {
    subscription: Subscription,
    stats: Arc<Stats>,
    tx: mpsc::Sender<Arc<Notification>>,
    task: AbortHandle,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Serialize, Deserialize)]
struct Table {
    webhooks: Vec<Subscription>,
}

impl Webhooks {
    /// Loads `<state_dir>/webhooks.json` and starts delivering. A missing file means no
    /// subscriptions; an unreadable or corrupt one is logged, set aside as
    /// `webhooks.json.corrupt` (if corrupt) and beast starts with none.
    pub fn open(state_dir: &Path, delivery: Delivery) -> Result<Webhooks, NotifyError> {
        let file = state_dir.join(FILE);
        let loaded = load(&file).unwrap_or_else(|err| {
            tracing::error!(error = %err, "webhook subscriptions not loaded; starting with none");
            if matches!(err, NotifyError::Corrupt { .. }) {
                set_aside(&file);
            }
            Vec::new()
        });
        let hooks = Webhooks::build(Some(file), delivery)?;
        for subscription in loaded {
            match validate_url(&subscription.url) {
                Ok(_) => hooks.start(subscription),
                Err(err) => {
                    tracing::warn!(id = %subscription.id, error = %err, "skipping a stored webhook")
                }
            }
        }
        Ok(hooks)
    }

    /// A registry that persists nothing (tests, dry runs).
    pub fn in_memory(delivery: Delivery) -> Result<Webhooks, NotifyError> {
        Webhooks::build(None, delivery)
    }

    fn build(file: Option<PathBuf>, delivery: Delivery) -> Result<Webhooks, NotifyError> {
        let client = reqwest::Client::builder()
            .timeout(delivery.timeout)
            .user_agent(concat!("beast/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(NotifyError::Client)?;
        Ok(Webhooks {
            inner: Arc::new(Inner {
                file,
                delivery,
                client,
                live: RwLock::new(Vec::new()),
                writer: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Every subscription with its counters, in creation order.
    pub fn list(&self) -> Vec<WebhookView> {
        self.read()
            .iter()
            .map(|l| WebhookView {
                subscription: l.subscription.clone(),
                stats: l.stats.view(),
            })
            .collect()
    }

    /// Validates, persists and starts a subscription.
    pub async fn create(&self, request: NewWebhook) -> Result<WebhookView, NotifyError> {
        let subscription = validate(request)?;
        let _writing = self.inner.writer.lock().await;
        let mut all = self.subscriptions();
        all.push(subscription.clone());
        self.persist(all).await?;
        self.start(subscription.clone());
        Ok(WebhookView {
            subscription,
            stats: StatsView::default(),
        })
    }

    /// Removes a subscription (its queued deliveries are abandoned); `false` if there is none.
    pub async fn delete(&self, id: &str) -> Result<bool, NotifyError> {
        let _writing = self.inner.writer.lock().await;
        let mut all = self.subscriptions();
        let before = all.len();
        all.retain(|s| s.id != id);
        if all.len() == before {
            return Ok(false);
        }
        self.persist(all).await?;
        self.write().retain(|l| l.subscription.id != id);
        Ok(true)
    }

    /// Queues `note` for every subscription that wants it; a full queue counts a drop. Never
    /// blocks.
    pub fn offer(&self, note: &Arc<Notification>) {
        for live in self.read().iter().filter(|l| l.subscription.wants(note)) {
            if let Err(mpsc::error::TrySendError::Full(_)) = live.tx.try_send(note.clone()) {
                live.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        self.read().iter().map(|l| l.subscription.clone()).collect()
    }

    fn start(&self, subscription: Subscription) {
        let Ok(url) = validate_url(&subscription.url) else {
            return;
        };
        let (tx, rx) = mpsc::channel(self.inner.delivery.queue.max(1));
        let stats = Arc::new(Stats::default());
        let target = Target {
            id: subscription.id.clone(),
            url,
            client: self.inner.client.clone(),
            delivery: self.inner.delivery,
            stats: stats.clone(),
        };
        let task = tokio::spawn(target.run(rx)).abort_handle();
        self.write().push(Live {
            subscription,
            stats,
            tx,
            task,
        });
    }

    async fn persist(&self, all: Vec<Subscription>) -> Result<(), NotifyError> {
        let Some(file) = self.inner.file.clone() else {
            return Ok(());
        };
        let write_err = |source| NotifyError::Write {
            path: file.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&Table { webhooks: all })
            .map_err(|e| write_err(std::io::Error::other(e)))?;
        let path = file.clone();
        tokio::task::spawn_blocking(move || write_table(&path, &bytes))
            .await
            .map_err(|e| write_err(std::io::Error::other(e)))?
    }

    fn read(&self) -> RwLockReadGuard<'_, Vec<Live>> {
        self.inner.live.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Vec<Live>> {
        self.inner.live.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Checks a request and turns it into a subscription with a fresh id.
pub fn validate(request: NewWebhook) -> Result<Subscription, NotifyError> {
    validate_url(&request.url)?;
    let mut kinds = request.kinds.unwrap_or_default();
    kinds.sort();
    kinds.dedup();
    if kinds.is_empty() {
        kinds = Kind::ALL.to_vec();
    }
    let mut challenges: Vec<String> = request
        .challenges
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.trim().to_string())
        .collect();
    if challenges.iter().any(String::is_empty) {
        return Err(NotifyError::Invalid(
            "challenges: names must not be empty".into(),
        ));
    }
    challenges.sort();
    challenges.dedup();
    Ok(Subscription {
        id: format!("wh-{:016x}", rand::random::<u64>()),
        url: request.url.trim().to_string(),
        kinds,
        challenges,
    })
}

/// An `http` or `https` URL with a host.
fn validate_url(url: &str) -> Result<Url, NotifyError> {
    let parsed = Url::parse(url.trim())
        .map_err(|e| NotifyError::Invalid(format!("url: not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(NotifyError::Invalid(format!(
            "url: scheme must be http or https, not {:?}",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(NotifyError::Invalid("url: a host is required".into()));
    }
    Ok(parsed)
}

/// The stored subscriptions; a missing file is an empty table.
fn load(file: &Path) -> Result<Vec<Subscription>, NotifyError> {
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(NotifyError::Read {
                path: file.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice::<Table>(&bytes)
        .map(|t| t.webhooks)
        .map_err(|source| NotifyError::Corrupt {
            path: file.to_path_buf(),
            source,
        })
}

/// Keeps a corrupt table for a human instead of overwriting it at the next change.
fn set_aside(file: &Path) {
    let aside = file.with_extension("json.corrupt");
    if let Err(err) = std::fs::rename(file, &aside) {
        tracing::warn!(error = %err, "cannot move the corrupt webhook table aside");
    }
}

/// Writes the table durably (see [`crate::durable`]).
fn write_table(file: &Path, bytes: &[u8]) -> Result<(), NotifyError> {
    crate::durable::write_atomically(file, bytes).map_err(|source| NotifyError::Write {
        path: file.to_path_buf(),
        source,
    })
}

/// The JSON a webhook receives: Slack reads `text`, Discord `content`, others `beast`.
pub fn payload(note: &Notification) -> serde_json::Value {
    let summary = summary(note);
    serde_json::json!({"text": summary, "content": summary, "beast": note})
}

/// One line: `[beast] heal echo: beast_echo_1 exited with code 137; recreated`, at most 1,900
/// characters (Discord refuses more than 2,000).
pub fn summary(note: &Notification) -> String {
    let line = format!(
        "[beast] {} {}: {}",
        note.kind,
        note.challenge,
        note.message.replace(['\r', '\n'], " ")
    );
    match line.char_indices().nth(1900) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

/// What to do after one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Delivered,
    /// Try again, after `after` if the receiver said so.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// The receiver refused for good (a 4xx other than 429).
    GiveUp(String),
}

/// Judges an HTTP answer: 2xx delivered; 429 and 5xx retried; the rest given up.
pub fn judge(status: u16, retry_after: Option<&str>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        429 => Verdict::Retry {
            error: "HTTP 429 (rate limited)".into(),
            after: retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        },
        500..=599 => Verdict::Retry {
            error: format!("HTTP {status}"),
            after: None,
        },
        _ => Verdict::GiveUp(format!("HTTP {status}")),
    }
}

/// A network error in a few words, without the URL (it carries the receiver's secret).
fn describe(err: reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".into()
    } else if err.is_connect() {
        "cannot connect".into()
    } else {
        err.without_url().to_string()
    }
}

/// One subscription's delivery loop.
struct Target {
    id: String,
    url: Url,
    client: reqwest::Client,
    delivery: Delivery,
    stats: Arc<Stats>,
}

impl Target {
    async fn run(self, mut rx: mpsc::Receiver<Arc<Notification>>) {
        while let Some(note) = rx.recv().await {
            self.deliver(&note).await;
        }
    }

    async fn deliver(&self, note: &Notification) {
        let body = payload(note);
        let mut wait = self.delivery.base;
        for attempt in 1..=self.delivery.attempts.max(1) {
            match self.attempt(&body).await {
                Verdict::Delivered => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Verdict::GiveUp(error) => return self.give_up(note, error, attempt),
                Verdict::Retry { error, .. } if attempt >= self.delivery.attempts => {
                    return self.give_up(note, error, attempt)
                }
                Verdict::Retry { error, after } => {
                    tracing::debug!(webhook = %self.id, id = note.id, attempt, %error, "webhook delivery failed; retrying");
                    self.stats.error(error);
                    tokio::time::sleep(after.unwrap_or(wait).min(self.delivery.cap)).await;
                    wait = (wait * 2).min(self.delivery.cap);
                }
            }
        }
    }

    async fn attempt(&self, body: &serde_json::Value) -> Verdict {
        match self.client.post(self.url.clone()).json(body).send().await {
            Ok(response) => judge(
                response.status().as_u16(),
                response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()),
            ),
            Err(err) => Verdict::Retry {
                error: describe(err),
                after: None,
            },
        }
    }

    fn give_up(&self, note: &Notification, error: String, attempts: u32) {
        tracing::warn!(webhook = %self.id, id = note.id, attempts, %error, "giving up on a webhook delivery");
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        self.stats.error(error);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::time::Instant;

    use axum::extract::State;
    use axum::http::{HeaderMap, HeaderValue, StatusCode};
    use axum::routing::post;
    use axum::Json;
    use serde_json::{json, Value};

    use super::*;
    use crate::notify::{Notifier, NotifierConfig};

    fn fast() -> Delivery {
        Delivery {
            timeout: Duration::from_millis(300),
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
            attempts: 6,
            queue: 4,
        }
    }

    fn request(url: &str) -> NewWebhook {
        NewWebhook {
            url: url.into(),
            ..NewWebhook::default()
        }
    }

    /// What an in-process receiver saw.
    #[derive(Clone, Default)]
    struct Seen {
        hits: Arc<AtomicU32>,
        times: Arc<Mutex<Vec<Instant>>>,
        bodies: Arc<Mutex<Vec<Value>>>,
    }

    #[derive(Clone)]
    struct Script {
        seen: Seen,
        /// Answers for the first hits; `200` after them.
        answers: Vec<(u16, Option<&'static str>)>,
    }

    async fn hook(
        State(script): State<Script>,
        Json(body): Json<Value>,
    ) -> (StatusCode, HeaderMap) {
        let n = script.seen.hits.fetch_add(1, Ordering::SeqCst) as usize;
        script.seen.times.lock().unwrap().push(Instant::now());
        let (code, retry_after) = script.answers.get(n).copied().unwrap_or((200, None));
        if code == 200 {
            script.seen.bodies.lock().unwrap().push(body);
        }
        let mut headers = HeaderMap::new();
        if let Some(v) = retry_after {
            headers.insert("retry-after", HeaderValue::from_static(v));
        }
        (StatusCode::from_u16(code).unwrap(), headers)
    }

    /// An axum receiver on 127.0.0.1:0 that answers `answers` in turn, then 200.
    async fn receiver(answers: Vec<(u16, Option<&'static str>)>) -> (String, Seen) {
        let seen = Seen::default();
        let app = axum::Router::new()
            .route("/hook", post(hook))
            .with_state(Script {
                seen: seen.clone(),
                answers,
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/hook"), seen)
    }

    /// Accepts connections and never answers.
    async fn silent_receiver() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        format!("http://{addr}/hook")
    }

    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn notifier_with(hooks: &Webhooks) -> Notifier {
        Notifier::new(NotifierConfig::default(), Some(hooks.clone()))
    }

    #[test]
    fn validation_accepts_http_urls_with_a_host_and_defaults_kinds() {
        let sub = validate(request("https://hooks.slack.com/services/T/B/x")).unwrap();
        assert!(sub.id.starts_with("wh-"));
        assert_eq!(sub.kinds, Kind::ALL.to_vec());
        assert!(sub.challenges.is_empty());
        let sub = validate(NewWebhook {
            url: "http://127.0.0.1:9/x".into(),
            kinds: Some(vec![Kind::Task, Kind::Heal, Kind::Task]),
            challenges: Some(vec!["web".into(), "echo".into(), "web".into()]),
        })
        .unwrap();
        assert_eq!(sub.kinds, vec![Kind::Heal, Kind::Task]);
        assert_eq!(sub.challenges, vec!["echo", "web"]);
    }

    #[test]
    fn validation_rejects_other_schemes_and_missing_hosts() {
        for url in [
            "ftp://example.com/x",
            "not a url",
            "http://",
            "unix:/run/x.sock",
            "file:///etc/passwd",
            "",
        ] {
            assert!(
                matches!(validate(request(url)), Err(NotifyError::Invalid(_))),
                "{url:?} was accepted"
            );
        }
        let empty_challenge = NewWebhook {
            challenges: Some(vec![" ".into()]),
            ..request("https://example.com/")
        };
        assert!(validate(empty_challenge).is_err());
    }

    #[test]
    fn judge_retries_5xx_and_429_and_gives_up_on_other_4xx() {
        assert_eq!(judge(204, None), Verdict::Delivered);
        assert!(matches!(
            judge(503, None),
            Verdict::Retry { after: None, .. }
        ));
        assert_eq!(
            judge(429, Some("7")),
            Verdict::Retry {
                error: "HTTP 429 (rate limited)".into(),
                after: Some(Duration::from_secs(7))
            }
        );
        assert!(matches!(
            judge(429, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Verdict::Retry { after: None, .. }
        ));
        assert_eq!(judge(404, None), Verdict::GiveUp("HTTP 404".into()));
    }

    #[test]
    fn payload_is_slack_and_discord_compatible() {
        let note = Notification {
            id: 12,
            time: "2025-01-01T00:00:00Z".into(),
            kind: Kind::Heal,
            challenge: "echo".into(),
            message: "beast_echo_1 exited with code 137;\nrecreated".into(),
            data: json!({"exitCode": 137}),
        };
        let body = payload(&note);
        let line = "[beast] heal echo: beast_echo_1 exited with code 137; recreated";
        assert_eq!(body["text"], line);
        assert_eq!(body["content"], line);
        assert_eq!(body["beast"]["id"], 12);
        assert_eq!(body["beast"]["data"]["exitCode"], 137);
        let long = Notification {
            message: "x".repeat(5000),
            ..note
        };
        assert!(summary(&long).chars().count() <= 1901);
    }

    #[tokio::test]
    async fn subscriptions_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = Webhooks::open(dir.path(), fast()).unwrap();
        let a = hooks
            .create(NewWebhook {
                url: "https://hooks.slack.com/services/a".into(),
                kinds: Some(vec![Kind::Heal]),
                challenges: Some(vec!["echo".into()]),
            })
            .await
            .unwrap();
        let b = hooks
            .create(request("https://discord.com/api/webhooks/b"))
            .await
            .unwrap();
        assert!(hooks.delete(&b.subscription.id).await.unwrap());
        assert!(!hooks.delete(&b.subscription.id).await.unwrap());
        drop(hooks);

        let again = Webhooks::open(dir.path(), fast()).unwrap();
        let list = again.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].subscription, a.subscription);
        assert_eq!(list[0].stats, StatsView::default());
    }

    #[tokio::test]
    async fn a_corrupt_table_is_reported_set_aside_and_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let hooks = Webhooks::open(dir.path(), fast()).unwrap();
        assert!(hooks.list().is_empty());
        assert!(dir.path().join("webhooks.json.corrupt").exists());
        hooks
            .create(request("https://example.com/h"))
            .await
            .unwrap();
        assert_eq!(Webhooks::open(dir.path(), fast()).unwrap().list().len(), 1);
    }

    #[tokio::test]
    async fn a_flaky_receiver_is_retried_until_it_accepts() {
        let (url, seen) = receiver(vec![(500, None), (500, None)]).await;
        let hooks = Webhooks::in_memory(fast()).unwrap();
        hooks.create(request(&url)).await.unwrap();
        let notifier = notifier_with(&hooks);
        notifier.publish(
            Kind::Heal,
            "echo",
            "beast_echo_1 exited with code 137; recreated".into(),
            json!({"exitCode": 137}),
        );
        eventually("delivery", || hooks.list()[0].stats.delivered == 1).await;
        assert_eq!(seen.hits.load(Ordering::SeqCst), 3);
        let body = seen.bodies.lock().unwrap()[0].clone();
        let line = "[beast] heal echo: beast_echo_1 exited with code 137; recreated";
        assert_eq!(body["text"], line);
        assert_eq!(body["content"], line);
        assert_eq!(body["beast"]["kind"], "heal");
        let stats = &hooks.list()[0].stats;
        assert_eq!((stats.failed, stats.dropped), (0, 0));
        assert_eq!(stats.last_error.as_deref(), Some("HTTP 500"));
    }

    #[tokio::test]
    async fn retry_after_is_honoured_on_429() {
        let (url, seen) = receiver(vec![(429, Some("1"))]).await;
        let hooks = Webhooks::in_memory(Delivery {
            cap: Duration::from_secs(5),
            ..fast()
        })
        .unwrap();
        hooks.create(request(&url)).await.unwrap();
        notifier_with(&hooks).publish(Kind::Task, "echo", "done".into(), json!({}));
        eventually("delivery", || hooks.list()[0].stats.delivered == 1).await;
        let times = seen.times.lock().unwrap().clone();
        assert!(
            times[1] - times[0] >= Duration::from_millis(900),
            "{:?}",
            times[1] - times[0]
        );
    }

    #[tokio::test]
    async fn a_refusal_is_not_retried_and_a_dead_receiver_is_given_up_on() {
        let (refusing, seen) = receiver(vec![(404, None)]).await;
        let (failing, failing_seen) = receiver(vec![(500, None); 10]).await;
        let hooks = Webhooks::in_memory(Delivery {
            attempts: 3,
            ..fast()
        })
        .unwrap();
        hooks.create(request(&refusing)).await.unwrap();
        hooks.create(request(&failing)).await.unwrap();
        notifier_with(&hooks).publish(Kind::Status, "echo", "Running".into(), json!({}));
        eventually("both give up", || {
            hooks.list().iter().all(|w| w.stats.failed == 1)
        })
        .await;
        assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
        assert_eq!(failing_seen.hits.load(Ordering::SeqCst), 3);
        assert_eq!(
            hooks.list()[0].stats.last_error.as_deref(),
            Some("HTTP 404")
        );
    }

    #[tokio::test]
    async fn subscriptions_get_only_the_kinds_and_challenges_they_asked_for() {
        let (url, seen) = receiver(vec![]).await;
        let hooks = Webhooks::in_memory(fast()).unwrap();
        hooks
            .create(NewWebhook {
                url,
                kinds: Some(vec![Kind::Task]),
                challenges: Some(vec!["echo".into()]),
            })
            .await
            .unwrap();
        let notifier = notifier_with(&hooks);
        notifier.publish(Kind::Heal, "echo", "no".into(), json!({}));
        notifier.publish(Kind::Task, "web", "no".into(), json!({}));
        notifier.publish(Kind::Task, "echo", "yes".into(), json!({}));
        eventually("delivery", || hooks.list()[0].stats.delivered == 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
        assert_eq!(seen.bodies.lock().unwrap()[0]["beast"]["message"], "yes");
    }

    #[tokio::test]
    async fn a_receiver_that_never_answers_does_not_block_publish() {
        let url = silent_receiver().await;
        let hooks = Webhooks::in_memory(Delivery {
            timeout: Duration::from_secs(30),
            ..fast()
        })
        .unwrap();
        hooks.create(request(&url)).await.unwrap();
        let notifier = notifier_with(&hooks);
        let published = tokio::time::timeout(Duration::from_secs(2), async {
            for i in 0..2_000 {
                notifier.publish(Kind::Status, "echo", format!("{i}"), json!({}));
            }
        })
        .await;
        assert!(published.is_ok(), "publish blocked on a silent receiver");
        // Queue of 4 plus the one in flight: the rest is counted, not kept.
        assert!(hooks.list()[0].stats.dropped >= 2_000 - 5);
    }

    #[tokio::test]
    async fn deleting_a_subscription_stops_its_delivery() {
        let (url, seen) = receiver(vec![]).await;
        let hooks = Webhooks::in_memory(fast()).unwrap();
        let view = hooks.create(request(&url)).await.unwrap();
        let notifier = notifier_with(&hooks);
        assert!(hooks.delete(&view.subscription.id).await.unwrap());
        notifier.publish(Kind::Heal, "echo", "after delete".into(), json!({}));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(seen.hits.load(Ordering::SeqCst), 0);
    }
}
