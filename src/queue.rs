//! The keyed work queue: decides *when* each challenge is reconciled, and by whom.
//!
//! Modelled on kube-runtime's `scheduler.rs`. A key (a challenge name) is a request to "look at this
//! challenge again"; the queue owns every scheduling decision about it:
//!
//! - **Merging.** A key is queued at most once. Adding a key that is already queued keeps the
//!   earliest due time, so a burst of events becomes one reconcile.
//! - **One in flight per key.** [`WorkQueue::next`] hands a key to one worker and marks it in flight.
//!   A key added while in flight is held *dirty* and is queued again only when that worker calls
//!   [`WorkQueue::done`]; no two workers ever reconcile the same challenge at once.
//! - **Per-key backoff.** A failed reconcile is retried after an exponential, jittered delay
//!   ([`Backoff`]); a success (including [`Outcome::RequeueAfter`]) resets the failure count.
//!   While a key is backing off, ordinary [`add`](WorkQueue::add)s and
//!   [`add_after`](WorkQueue::add_after)s are deferred to the backoff deadline: an event storm about
//!   a broken challenge must not turn into a tight retry loop. An operator who really wants an
//!   immediate retry calls [`WorkQueue::add_now_ignoring_backoff`]. A request that arrives while the
//!   key is in flight is absorbed by the retry if that run fails.
//! - **Shutdown.** [`WorkQueue::close`] makes every pending and future `next()` return `None`;
//!   in-flight work finishes normally.
//!
//! It must not know what a key means: no Docker, no desired/observed state, no planning. Workers
//! receive a bare key and re-read the world themselves (level-triggered). All timing uses tokio's
//! clock, so tests drive it with `tokio::time::pause()`/`advance()`.
//!
//! Cost: every operation is O(log n) in the number of queued keys (a `BTreeMap` ordered by due time
//! plus hash maps from key to due time).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

pub use crate::backoff::Backoff;

/// What became of one reconcile of a key; reported through [`WorkQueue::done`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Converged. Resets the failure count; the key runs again only when something adds it.
    Done,
    /// Converged, but look again after this long (e.g. waiting for a container to become healthy).
    /// Resets the failure count.
    RequeueAfter(Duration),
    /// Failed, with a reason for the log. Retried after the key's next backoff delay.
    Failed(String),
}

/// Lets a handler return `Result<(), E>`: `Ok` is [`Outcome::Done`], `Err` is [`Outcome::Failed`].
impl<E: Display> From<Result<(), E>> for Outcome {
    fn from(result: Result<(), E>) -> Self {
        match result {
            Ok(()) => Outcome::Done,
            Err(err) => Outcome::Failed(err.to_string()),
        }
    }
}

/// A keyed, delay-aware, deduplicating work queue. Cheap to clone: clones share one queue, so the
/// producer side (watchers, API) and the workers each hold their own handle.
pub struct WorkQueue<K> {
    shared: Arc<Shared<K>>,
}

struct Shared<K> {
    state: Mutex<State<K>>,
    /// Woken when a key may have become available sooner than workers are sleeping for, or on close.
    wake: Notify,
    backoff: Backoff,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K: Debug> Debug for WorkQueue<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared.state);
        f.debug_struct("WorkQueue")
            .field("backoff", &self.shared.backoff)
            .field("state", &*state)
            .finish()
    }
}

impl<K> Default for WorkQueue<K>
where
    K: Clone + Eq + Hash + Debug + Send + 'static,
{
    fn default() -> Self {
        Self::new(Backoff::default())
    }
}

impl<K> WorkQueue<K>
where
    K: Clone + Eq + Hash + Debug + Send + 'static,
{
    /// An empty, open queue that retries failures according to `backoff`.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                backoff,
            }),
        }
    }

    /// Queues `key` to run as soon as possible (or at its backoff deadline if it is failing).
    pub fn add(&self, key: K) {
        self.add_at(key, Instant::now(), Gate::RespectBackoff);
    }

    /// Queues `key` to run `delay` from now (or at its backoff deadline if that is later). If the key
    /// is already queued for an earlier time, that earlier time stands.
    pub fn add_after(&self, key: K, delay: Duration) {
        let now = Instant::now();
        self.add_at(key, deadline(now, delay), Gate::RespectBackoff);
    }

    /// Queues `key` to run now even if it is backing off. The failure count is kept: if this run
    /// fails too, the next delay is longer still. For explicit operator requests, not for events.
    pub fn add_now_ignoring_backoff(&self, key: K) {
        self.add_at(key, Instant::now(), Gate::IgnoreBackoff);
    }

    /// Waits for the next due key, marks it in flight and returns it; the caller must report back
    /// with [`WorkQueue::done`]. Returns `None` once the queue is closed.
    ///
    /// Cancel-safe: a key is taken only at the moment the future completes.
    pub async fn next(&self) -> Option<K> {
        loop {
            let woken = self.shared.wake.notified();
            tokio::pin!(woken);
            // Register before looking at the state, so a wake-up between the look and the wait is
            // not lost.
            woken.as_mut().enable();
            let step = self.lock().take_due(Instant::now());
            match step {
                Step::Closed => return None,
                Step::Ready(key) => return Some(key),
                Step::Wait(Some(at)) => {
                    tokio::select! {
                        () = &mut woken => {}
                        () = sleep_until(at) => {}
                    }
                }
                Step::Wait(None) => woken.await,
            }
        }
    }

    /// Reports that the worker handling `key` has finished, and schedules what comes next:
    /// a held (dirty) request, a requeue, or a backoff retry. Calling it for a key that is not in
    /// flight still applies the outcome (failure count and scheduling).
    pub fn done(&self, key: K, outcome: Outcome) {
        let now = Instant::now();
        let failed_key = matches!(outcome, Outcome::Failed(_)).then(|| key.clone());
        let (wake, retry) = self.lock().finish(key, &outcome, now, &self.shared.backoff);
        self.wake_if(wake);
        if let (Outcome::Failed(reason), Some(key), Some((failures, at))) =
            (&outcome, failed_key, retry)
        {
            tracing::warn!(
                ?key,
                failures,
                retry_in = ?at.saturating_duration_since(now),
                %reason,
                "reconcile failed; backing off"
            );
        }
    }

    /// Shorthand for `done(key, Outcome::RequeueAfter(delay))`: success, but look again later.
    pub fn requeue_after(&self, key: K, delay: Duration) {
        self.done(key, Outcome::RequeueAfter(delay));
    }

    /// Stops the queue: waiting and future [`WorkQueue::next`] calls return `None`, later adds are
    /// ignored. In-flight work is not interrupted. Idempotent.
    pub fn close(&self) {
        self.lock().closed = true;
        self.shared.wake.notify_waiters();
    }

    /// Whether [`WorkQueue::close`] has been called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Consecutive failures of `key` since its last success (0 if none).
    pub fn failures(&self, key: &K) -> u32 {
        self.lock().failing.get(key).map_or(0, |f| f.count)
    }

    /// Queue depth for metrics: keys waiting to run, whether scheduled or held dirty behind an
    /// in-flight run. A key counts once.
    pub fn len(&self) -> usize {
        let state = self.lock();
        state.scheduled.len() + state.dirty.len()
    }

    /// Whether no key is waiting to run (in-flight keys are not counted).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of keys currently handed out to workers.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    /// When `key` is next due: its queued time, or the time it is held for behind its in-flight run.
    pub fn due_at(&self, key: &K) -> Option<Instant> {
        let state = self.lock();
        state
            .due
            .get(key)
            .map(|&(at, _)| at)
            .or_else(|| state.dirty.get(key).copied())
    }

    fn add_at(&self, key: K, at: Instant, gate: Gate) {
        let wake = self.lock().request(key, at, gate);
        self.wake_if(wake);
    }

    fn wake_if(&self, wake: bool) {
        if wake {
            self.shared.wake.notify_waiters();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<K>> {
        lock(&self.shared.state)
    }
}

/// Locks the state, recovering from poisoning: no `State` method can panic halfway through an update
/// (no indexing, unwrapping or overflowing arithmetic), so a poisoned lock still guards valid state.
fn lock<K>(state: &Mutex<State<K>>) -> MutexGuard<'_, State<K>> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `now + delay`, saturating far in the future instead of overflowing.
fn deadline(now: Instant, delay: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(60 * 60 * 24 * 365 * 30);
    now.checked_add(delay)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    RespectBackoff,
    IgnoreBackoff,
}

/// What [`State::take_due`] found.
enum Step<K> {
    Closed,
    Ready(K),
    /// Nothing due; the earliest queued time, if any.
    Wait(Option<Instant>),
}

#[derive(Debug, Clone, Copy)]
struct Failing {
    count: u32,
    retry_at: Instant,
}

/// Invariants: a key is in at most one of `scheduled` and `in_flight`; `due` mirrors `scheduled`
/// exactly; `dirty` only holds in-flight keys.
#[derive(Debug)]
struct State<K> {
    /// Queued keys by (due time, insertion sequence); the sequence keeps equal times FIFO.
    scheduled: BTreeMap<(Instant, u64), K>,
    /// Each queued key's entry in `scheduled`.
    due: HashMap<K, (Instant, u64)>,
    in_flight: HashSet<K>,
    /// In-flight keys requested again, with the earliest requested time.
    dirty: HashMap<K, Instant>,
    /// Keys whose last run failed.
    failing: HashMap<K, Failing>,
    seq: u64,
    closed: bool,
}

impl<K> Default for State<K> {
    fn default() -> Self {
        Self {
            scheduled: BTreeMap::new(),
            due: HashMap::new(),
            in_flight: HashSet::new(),
            dirty: HashMap::new(),
            failing: HashMap::new(),
            seq: 0,
            closed: false,
        }
    }
}

impl<K: Clone + Eq + Hash> State<K> {
    /// Handles an add; returns whether sleeping workers must re-check.
    fn request(&mut self, key: K, at: Instant, gate: Gate) -> bool {
        let at = match gate {
            Gate::RespectBackoff => self.not_before_backoff(&key, at),
            Gate::IgnoreBackoff => at,
        };
        self.schedule(key, at)
    }

    /// Defers `at` to the key's backoff deadline if it is failing.
    fn not_before_backoff(&self, key: &K, at: Instant) -> Instant {
        match self.failing.get(key) {
            Some(f) => at.max(f.retry_at),
            None => at,
        }
    }

    /// Queues `key` at `at`, merging with any existing entry (earliest wins), or holds it dirty if
    /// it is in flight. Returns whether it became the earliest entry, i.e. sleepers must re-check.
    fn schedule(&mut self, key: K, at: Instant) -> bool {
        if self.closed {
            return false;
        }
        if self.in_flight.contains(&key) {
            let held = self.dirty.entry(key).or_insert(at);
            *held = (*held).min(at);
            return false;
        }
        if let Some(&(current, seq)) = self.due.get(&key) {
            if current <= at {
                return false;
            }
            self.scheduled.remove(&(current, seq));
        }
        let earliest = self
            .scheduled
            .keys()
            .next()
            .is_none_or(|&(head, _)| at < head);
        self.seq = self.seq.wrapping_add(1);
        self.scheduled.insert((at, self.seq), key.clone());
        self.due.insert(key, (at, self.seq));
        earliest
    }

    /// Pops the earliest key if it is due at `now`, marking it in flight.
    fn take_due(&mut self, now: Instant) -> Step<K> {
        if self.closed {
            return Step::Closed;
        }
        let head = self.scheduled.first_entry();
        match head {
            Some(entry) if entry.key().0 <= now => {
                let key = entry.remove();
                self.due.remove(&key);
                self.in_flight.insert(key.clone());
                Step::Ready(key)
            }
            Some(entry) => Step::Wait(Some(entry.key().0)),
            None => Step::Wait(None),
        }
    }

    /// Ends `key`'s run and schedules its next one. Returns whether sleepers must re-check, and
    /// for a failure the new failure count and retry time.
    fn finish(
        &mut self,
        key: K,
        outcome: &Outcome,
        now: Instant,
        backoff: &Backoff,
    ) -> (bool, Option<(u32, Instant)>) {
        self.in_flight.remove(&key);
        let held = self.dirty.remove(&key);
        let (next, retry) = match outcome {
            Outcome::Done => {
                self.failing.remove(&key);
                (held, None)
            }
            Outcome::RequeueAfter(delay) => {
                self.failing.remove(&key);
                let requeue = deadline(now, *delay);
                (Some(held.map_or(requeue, |h| h.min(requeue))), None)
            }
            Outcome::Failed(_) => {
                let retry = self.record_failure(&key, now, backoff);
                (Some(retry.1), Some(retry))
            }
        };
        let wake = next.is_some_and(|at| self.schedule(key, at));
        (wake, retry)
    }

    /// Bumps the failure count and sets the backoff deadline; returns both.
    fn record_failure(&mut self, key: &K, now: Instant, backoff: &Backoff) -> (u32, Instant) {
        let count = self
            .failing
            .get(key)
            .map_or(1, |f| f.count.saturating_add(1));
        let retry_at = deadline(now, backoff.delay(count));
        self.failing
            .insert(key.clone(), Failing { count, retry_at });
        (count, retry_at)
    }
}

/// A pool of tokio tasks serving one [`WorkQueue`]; see [`spawn_workers`].
#[derive(Debug)]
pub struct WorkerPool<K> {
    queue: WorkQueue<K>,
    tasks: JoinSet<()>,
}

impl<K> WorkerPool<K>
where
    K: Clone + Eq + Hash + Debug + Send + 'static,
{
    /// Waits until every worker has stopped (they stop when the queue is closed).
    pub async fn join(mut self) {
        while let Some(result) = self.tasks.join_next().await {
            if let Err(err) = result {
                tracing::error!(%err, "queue worker stopped abnormally");
            }
        }
    }

    /// Closes the queue and waits for in-flight work to finish.
    pub async fn shutdown(self) {
        self.queue.close();
        self.join().await;
    }

    /// Number of worker tasks still running or not yet joined.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether all workers have been joined.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

/// Spawns `workers` tokio tasks that loop `next` → `handler(key)` → `done` until the queue closes.
/// A handler that panics counts as [`Outcome::Failed`] so its key is retried, not stuck in flight.
/// Must be called inside a tokio runtime.
pub fn spawn_workers<K, H, Fut>(queue: &WorkQueue<K>, workers: usize, handler: H) -> WorkerPool<K>
where
    K: Clone + Eq + Hash + Debug + Send + 'static,
    H: Fn(K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let handler = Arc::new(handler);
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        tasks.spawn(work(queue.clone(), Arc::clone(&handler)));
    }
    WorkerPool {
        queue: queue.clone(),
        tasks,
    }
}

async fn work<K, H, Fut>(queue: WorkQueue<K>, handler: Arc<H>)
where
    K: Clone + Eq + Hash + Debug + Send + 'static,
    H: Fn(K) -> Fut,
    Fut: Future<Output = Outcome>,
{
    while let Some(key) = queue.next().await {
        let job = key.clone();
        // Calling the handler inside the block catches a panic while building the future too.
        let run = AssertUnwindSafe(async { handler(job).await });
        let outcome = run
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Outcome::Failed("reconcile panicked".to_owned()));
        queue.done(key, outcome);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    //! The clock is paused in every test: `sleep`/`timeout` advance virtual time instantly, timer by
    //! timer, once all tasks are idle. Nothing waits in real time.

    use super::*;
    use futures::future::BoxFuture;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::time::{advance, sleep, timeout};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn k(name: &str) -> String {
        name.to_owned()
    }

    /// Backoff without jitter, so retry times are exact.
    fn exact_backoff() -> Backoff {
        Backoff {
            jitter: 0.0,
            ..Backoff::default()
        }
    }

    /// Lets workers run while `d` of virtual time passes.
    async fn elapse(d: Duration) {
        sleep(d).await;
    }

    /// Records every run a handler makes, and how many ran at once.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Records>);

    #[derive(Default)]
    struct Records {
        starts: Mutex<Vec<(String, Instant)>>,
        ends: Mutex<Vec<(String, Instant)>>,
        running: AtomicUsize,
        max_running: AtomicUsize,
    }

    type Handler = Box<dyn Fn(String) -> BoxFuture<'static, Outcome> + Send + Sync>;

    impl Recorder {
        /// A handler that works for `work`, then answers `outcome(key, attempt)` (attempts from 1).
        fn handler(&self, work: Duration, outcome: fn(&str, usize) -> Outcome) -> Handler {
            let rec = self.clone();
            Box::new(move |key| {
                let rec = rec.clone();
                Box::pin(async move {
                    let attempt = rec.start(&key);
                    sleep(work).await;
                    rec.end(&key);
                    outcome(&key, attempt)
                })
            })
        }

        fn start(&self, key: &str) -> usize {
            let now = self.0.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.0.max_running.fetch_max(now, Ordering::SeqCst);
            let mut starts = self.0.starts.lock().unwrap();
            starts.push((k(key), Instant::now()));
            starts.iter().filter(|(s, _)| s == key).count()
        }

        fn end(&self, key: &str) {
            self.0.running.fetch_sub(1, Ordering::SeqCst);
            self.0.ends.lock().unwrap().push((k(key), Instant::now()));
        }

        fn starts_of(&self, key: &str) -> Vec<Instant> {
            let starts = self.0.starts.lock().unwrap();
            starts
                .iter()
                .filter(|(s, _)| s == key)
                .map(|(_, at)| *at)
                .collect()
        }

        fn keys(&self) -> Vec<String> {
            let starts = self.0.starts.lock().unwrap();
            starts.iter().map(|(s, _)| s.clone()).collect()
        }

        fn ends(&self) -> usize {
            self.0.ends.lock().unwrap().len()
        }

        fn max_running(&self) -> usize {
            self.0.max_running.load(Ordering::SeqCst)
        }
    }

    fn always_done(_: &str, _: usize) -> Outcome {
        Outcome::Done
    }

    fn always_failed(_: &str, _: usize) -> Outcome {
        Outcome::Failed("boom".into())
    }

    fn fails_first_attempt(_: &str, attempt: usize) -> Outcome {
        if attempt == 1 {
            Outcome::Failed("boom".into())
        } else {
            Outcome::Done
        }
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_adds_are_handled_once() {
        let q = WorkQueue::default();
        for _ in 0..3 {
            q.add(k("a"));
        }
        assert_eq!(q.len(), 1);
        let rec = Recorder::default();
        let pool = spawn_workers(&q, 2, rec.handler(ms(10), always_done));
        elapse(secs(5)).await;
        assert_eq!(rec.keys(), ["a"]);
        assert!(q.is_empty());
        pool.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn earliest_due_time_wins() {
        let q = WorkQueue::default();
        let t0 = Instant::now();
        q.add_after(k("a"), secs(10));
        q.add_after(k("a"), secs(2));
        q.add_after(k("a"), secs(5));
        assert_eq!(q.len(), 1);
        assert_eq!(q.due_at(&k("a")), Some(t0 + secs(2)));

        assert!(timeout(ms(1_999), q.next()).await.is_err(), "ran early");
        assert_eq!(q.next().await, Some(k("a")));
        assert_eq!(Instant::now(), t0 + secs(2));
        assert!(q.is_empty(), "the later requests were merged, not kept");
    }

    #[tokio::test(start_paused = true)]
    async fn keys_due_together_run_in_insertion_order() {
        let q = WorkQueue::default();
        for name in ["b", "a", "c"] {
            q.add(k(name));
        }
        let mut got = Vec::new();
        for _ in 0..3 {
            got.extend(q.next().await);
        }
        assert_eq!(got, ["b", "a", "c"]);
    }

    #[tokio::test(start_paused = true)]
    async fn thousands_of_keys_drain_in_due_order() {
        let q = WorkQueue::default();
        let n: u64 = 5_000;
        // Due times in a scrambled order; every key also re-added later, which must not move it.
        for i in 0..n {
            let delay = ms((i * 7_919) % n);
            q.add_after(format!("c{i}"), delay);
            q.add_after(format!("c{i}"), delay + secs(1));
        }
        assert_eq!(q.len(), n as usize);
        let t0 = Instant::now();
        for _ in 0..n {
            let key = q.next().await.unwrap_or_default();
            let i: u64 = key.trim_start_matches('c').parse().unwrap();
            assert_eq!(
                Instant::now(),
                t0 + ms((i * 7_919) % n),
                "{key} out of order"
            );
        }
        assert!(q.is_empty());
        assert_eq!(q.in_flight(), n as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_is_never_run_by_two_workers_at_once() {
        let q = WorkQueue::default();
        let rec = Recorder::default();
        let pool = spawn_workers(&q, 4, rec.handler(secs(1), always_done));
        q.add(k("a"));
        elapse(ms(100)).await;
        assert_eq!(q.in_flight(), 1);

        let again = Instant::now();
        q.add(k("a"));
        q.add(k("a"));
        assert_eq!(q.len(), 1, "held once, as dirty");
        assert_eq!(q.due_at(&k("a")), Some(again));

        elapse(secs(5)).await;
        let starts = rec.starts_of("a");
        assert_eq!(starts.len(), 2, "run again once, for both adds");
        assert!(
            starts[1] >= starts[0] + secs(1),
            "second run overlapped the first"
        );
        assert_eq!(rec.max_running(), 1);
        pool.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn different_keys_run_concurrently_up_to_the_worker_count() {
        let q = WorkQueue::default();
        let rec = Recorder::default();
        let t0 = Instant::now();
        for i in 0..10 {
            q.add(format!("c{i}"));
        }
        let pool = spawn_workers(&q, 4, rec.handler(secs(1), always_done));
        elapse(secs(10)).await;

        assert_eq!(rec.max_running(), 4);
        let mut rounds: Vec<Duration> = (0..10)
            .flat_map(|i| rec.starts_of(&format!("c{i}")))
            .map(|at| at - t0)
            .collect();
        rounds.sort();
        let want = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2].map(secs);
        assert_eq!(rounds, want);
        pool.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_with_jitter_up_to_the_cap() {
        let backoff = Backoff {
            base: ms(500),
            cap: secs(4),
            jitter: 0.2,
        };
        let q = WorkQueue::new(backoff);
        let rec = Recorder::default();
        let pool = spawn_workers(&q, 2, rec.handler(Duration::ZERO, always_failed));
        q.add(k("a"));
        elapse(secs(30)).await;

        let starts = rec.starts_of("a");
        assert!(starts.len() >= 8, "only {} attempts", starts.len());
        assert_eq!(q.failures(&k("a")) as usize, starts.len());
        for (i, pair) in starts.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            let nominal = backoff.nominal(i as u32 + 1);
            let low = nominal.mul_f64(0.8);
            // The timer wheel rounds deadlines up to the next millisecond.
            let high = nominal.mul_f64(1.2).min(backoff.cap) + ms(1);
            assert!(
                gap >= low && gap <= high,
                "gap {i}: {gap:?} not in {low:?}..={high:?}"
            );
        }
        pool.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_the_failure_count() {
        fn three_failures_then_done(_: &str, attempt: usize) -> Outcome {
            match attempt {
                1..=3 | 5 => Outcome::Failed("boom".into()),
                _ => Outcome::Done,
            }
        }
        let q = WorkQueue::new(exact_backoff());
        let rec = Recorder::default();
        let pool = spawn_workers(&q, 1, rec.handler(Duration::ZERO, three_failures_then_done));
        q.add(k("a"));
        elapse(ms(10)).await;
        assert_eq!(q.failures(&k("a")), 1);
        elapse(secs(10)).await;
        assert_eq!(q.failures(&k("a")), 0);
        assert_eq!(q.due_at(&k("a")), None, "a success schedules nothing");

        q.add(k("a")); // attempt 5 fails again: back to the base delay
        elapse(secs(10)).await;
        let starts = rec.starts_of("a");
        assert_eq!(starts.len(), 6);
        let gaps: Vec<_> = starts.windows(2).map(|p| p[1] - p[0]).collect();
        assert_eq!(gaps[..3], [ms(500), ms(1_000), ms(2_000)]);
        assert_eq!(gaps[4], ms(500));
        assert_eq!(q.failures(&k("a")), 0);
        pool.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_add_while_backing_off_waits_for_the_deadline() {
        let q = WorkQueue::new(exact_backoff());
        let rec = Recorder::default();
        let pool = spawn_workers(&q, 2, rec.handler(Duration::ZERO, fails_first_attempt));
        let t0 = Instant::now();
        q.add(k("a"));
        elapse(ms(10)).await;
        assert_eq!(q.failures(&k("a")), 1);

        q.add(k("a"));
        q.add_after(k("a"), ms(100));
        assert_eq!(q.due_at(&k("a")), Some(t0 + ms(500)));
        elapse(ms(480)).await;
        assert_eq!(
            rec.starts_of("a").len(),
            1,
            "ran before the backoff deadline"
        );
        elapse(ms(100)).await;
        assert_eq!(rec.starts_of("a"), [t0, t0 + ms(500)]);
        pool.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn add_now_ignoring_backoff_runs_at_once_and_keeps_the_count() {
        let q = WorkQueue::new(exact_backoff());
        let rec = Recorder::default();
        let pool = spawn_workers(&q, 2, rec.handler(Duration::ZERO, always_failed));
        q.add(k("a"));
        elapse(ms(10)).await;
        let forced = Instant::now();
        q.add_now_ignoring_backoff(k("a"));
        elapse(ms(1)).await;
        assert_eq!(rec.starts_of("a")[1], forced);
        assert_eq!(
            q.failures(&k("a")),
            2,
            "forcing a run does not forgive failures"
        );
        assert_eq!(q.due_at(&k("a")), Some(forced + secs(1)));
        pool.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn requeue_after_runs_again_later_and_resets_failures() {
        fn fail_then_requeue(_: &str, attempt: usize) -> Outcome {
            match attempt {
                1 => Outcome::Failed("boom".into()),
                2 => Outcome::RequeueAfter(secs(10)),
                _ => Outcome::Done,
            }
        }
        let q = WorkQueue::new(exact_backoff());
        let rec = Recorder::default();
        let pool = spawn_workers(&q, 1, rec.handler(Duration::ZERO, fail_then_requeue));
        let t0 = Instant::now();
        q.add(k("a"));
        elapse(secs(1)).await;
        assert_eq!(q.failures(&k("a")), 0);
        elapse(secs(20)).await;
        assert_eq!(rec.starts_of("a"), [t0, t0 + ms(500), t0 + ms(10_500)]);
        pool.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn requeue_after_keeps_a_sooner_request_made_during_the_run() {
        let q = WorkQueue::default();
        q.add(k("a"));
        let key = q.next().await;
        assert_eq!(key.as_deref(), Some("a"));
        q.add(k("a"));
        let asked = Instant::now();
        advance(ms(50)).await;
        q.requeue_after(k("a"), secs(10));
        assert_eq!(q.due_at(&k("a")), Some(asked));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_made_during_a_failing_run_waits_for_the_retry() {
        let q = WorkQueue::new(exact_backoff());
        q.add(k("a"));
        let key = q.next().await;
        assert_eq!(key.as_deref(), Some("a"));
        q.add(k("a"));
        let failed = Instant::now();
        q.done(k("a"), Outcome::Failed("boom".into()));
        assert_eq!(q.due_at(&k("a")), Some(failed + ms(500)));
        assert_eq!(q.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dirty_key_keeps_its_earliest_request() {
        let q = WorkQueue::default();
        q.add(k("a"));
        let key = q.next().await;
        assert_eq!(key.as_deref(), Some("a"));
        let t = Instant::now();
        q.add_after(k("a"), secs(5));
        q.add_after(k("a"), secs(1));
        q.add_after(k("a"), secs(3));
        assert_eq!(q.due_at(&k("a")), Some(t + secs(1)));
        q.done(k("a"), Outcome::Done);
        assert_eq!(q.due_at(&k("a")), Some(t + secs(1)));
        assert_eq!(q.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn len_counts_scheduled_and_dirty_keys_once() {
        let q = WorkQueue::default();
        q.add(k("a"));
        q.add(k("b"));
        assert_eq!((q.len(), q.in_flight()), (2, 0));
        assert_eq!(q.next().await.as_deref(), Some("a"));
        assert_eq!((q.len(), q.in_flight()), (1, 1));
        q.add(k("a"));
        q.add(k("a"));
        assert_eq!((q.len(), q.in_flight()), (2, 1));
        q.done(k("a"), Outcome::Done);
        assert_eq!((q.len(), q.in_flight()), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_worker_wakes_for_a_sooner_key() {
        let q = WorkQueue::default();
        q.add_after(k("later"), secs(10));
        let worker = tokio::spawn({
            let q = q.clone();
            async move { q.next().await }
        });
        tokio::task::yield_now().await;
        q.add(k("now"));
        let got = timeout(ms(1), worker).await;
        assert_eq!(
            got.ok().and_then(Result::ok).flatten().as_deref(),
            Some("now")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn close_stops_waiting_workers() {
        let q: WorkQueue<String> = WorkQueue::default();
        let rec = Recorder::default();
        let pool = spawn_workers(&q, 3, rec.handler(Duration::ZERO, always_done));
        q.add_after(k("a"), secs(60));
        elapse(ms(10)).await;
        assert_eq!(pool.len(), 3);

        q.close();
        assert!(
            timeout(secs(1), pool.join()).await.is_ok(),
            "workers kept running"
        );
        assert!(q.is_closed());
        assert_eq!(q.next().await, None);
        q.add(k("b"));
        assert_eq!(q.due_at(&k("b")), None, "adds after close are ignored");
        assert!(rec.keys().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn close_lets_in_flight_work_finish() {
        let q = WorkQueue::default();
        let rec = Recorder::default();
        let pool = spawn_workers(&q, 2, rec.handler(secs(5), always_done));
        q.add(k("a"));
        elapse(ms(10)).await;
        assert_eq!(q.in_flight(), 1);

        let closed = Instant::now();
        pool.shutdown().await;
        assert_eq!(rec.ends(), 1, "the in-flight run was cut short");
        assert!(Instant::now() >= closed + ms(4_990));
        assert_eq!(q.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_handler_counts_as_a_failure() {
        let q = WorkQueue::new(exact_backoff());
        let attempts = Arc::new(AtomicUsize::new(0));
        let pool = spawn_workers(&q, 1, {
            let attempts = Arc::clone(&attempts);
            move |_key: String| {
                let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    assert!(attempt > 1, "first attempt panics on purpose");
                    Outcome::Done
                }
            }
        });
        q.add(k("a"));
        elapse(ms(10)).await;
        assert_eq!(q.failures(&k("a")), 1);
        assert_eq!(q.in_flight(), 0, "the key is not stuck in flight");
        elapse(secs(1)).await;
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        assert_eq!(q.failures(&k("a")), 0);
        assert_eq!(pool.len(), 1, "the worker survived");
        pool.shutdown().await;
    }

    #[test]
    fn results_convert_to_outcomes() {
        assert_eq!(Outcome::from(Ok::<(), String>(())), Outcome::Done);
        assert_eq!(
            Outcome::from(Err::<(), _>("no such image")),
            Outcome::Failed("no such image".into())
        );
    }
}
