//! A bound on concurrent engine operations, around any [`Runtime`].
//!
//! During a storm (hundreds of containers crash-looping at once) every reconcile, probe and
//! event handler wants the engine at the same moment; unbounded, they pile onto an engine that
//! is already busy restarting containers, and everything times out together. This wrapper lets at
//! most `limit` requests be in flight and queues the rest (fairly, in arrival order). It also
//! counts what beast asks of the engine, so `/metrics` can tell beast's starts from the restart
//! policy's.
//!
//! Not bounded: `ping` (the watchdog must see an engine that answers), the event and log
//! streams (long-lived), builds (bounded by `--build-workers`; a build holds the engine for
//! seconds to minutes and must not starve the heal path) and stops (they wait out a grace
//! period, doing nothing the engine feels).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use super::{
    BuildOutput, ByteStream, ContainerSpec, EventStream, ImageIndex, ImageInfo, NetworkSpec,
    Observed, ObservedNetwork, ObservedWorkload, Result, Runtime, RuntimeError, Termination,
    WorkloadSpec,
};

/// Default of `--engine-concurrency`.
pub const DEFAULT_LIMIT: usize = 8;

/// What beast asked of the engine, for metrics.
#[derive(Debug, Default)]
pub struct EngineOps {
    /// Every bounded request.
    pub total: AtomicU64,
    /// Requests that start a process: create+start, start, restart, unpause.
    pub starts: AtomicU64,
    /// Containers created (each is started too, so also among `starts`).
    pub creates: AtomicU64,
    /// Requests that stop or remove one: stop, remove.
    pub stops: AtomicU64,
    /// Requests waiting for a permit now.
    pub waiting: AtomicU64,
}

/// A [`Runtime`] that lets at most `limit` engine requests run at once.
pub struct Bounded<R> {
    inner: R,
    permits: Semaphore,
    limit: usize,
    ops: Arc<EngineOps>,
}

impl<R: Runtime> Bounded<R> {
    pub fn new(inner: R, limit: usize) -> Bounded<R> {
        let limit = limit.max(1);
        Bounded {
            inner,
            permits: Semaphore::new(limit),
            limit,
            ops: Arc::new(EngineOps::default()),
        }
    }

    /// The counters of requests made through this wrapper.
    pub fn ops(&self) -> Arc<EngineOps> {
        self.ops.clone()
    }

    /// Requests running now.
    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    async fn permit(&self) -> Result<SemaphorePermit<'_>> {
        self.ops.total.fetch_add(1, Ordering::Relaxed);
        self.ops.waiting.fetch_add(1, Ordering::Relaxed);
        let permit = self.permits.acquire().await;
        self.ops.waiting.fetch_sub(1, Ordering::Relaxed);
        permit.map_err(|_| RuntimeError::Unavailable("engine request bound closed".to_string()))
    }
}

impl<R: Runtime> Runtime for Bounded<R> {
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    async fn list(&self, instance: &str, challenge: Option<&str>) -> Result<Vec<Observed>> {
        let _permit = self.permit().await?;
        self.inner.list(instance, challenge).await
    }

    async fn images(&self) -> Result<ImageIndex> {
        let _permit = self.permit().await?;
        self.inner.images().await
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>> {
        let _permit = self.permit().await?;
        self.inner.image_id(reference).await
    }

    async fn build(
        &self,
        tar: Vec<u8>,
        tag: &str,
        dockerfile: &str,
        args: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> Result<BuildOutput> {
        self.inner.build(tar, tag, dockerfile, args, labels).await
    }

    async fn remove_image(&self, reference: &str) -> Result<()> {
        let _permit = self.permit().await?;
        self.inner.remove_image(reference).await
    }

    async fn list_images_with_label(&self, key: &str, value: &str) -> Result<Vec<ImageInfo>> {
        let _permit = self.permit().await?;
        self.inner.list_images_with_label(key, value).await
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        let _permit = self.permit().await?;
        self.ops.creates.fetch_add(1, Ordering::Relaxed);
        self.inner.create(spec).await
    }

    async fn start(&self, id: &str) -> Result<()> {
        let _permit = self.permit().await?;
        self.ops.starts.fetch_add(1, Ordering::Relaxed);
        self.inner.start(id).await
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        // Not bounded: a stop mostly waits out the container's grace period (a challenge that
        // ignores SIGTERM holds it for all of it) and would hold a slot the heal path needs.
        self.ops.total.fetch_add(1, Ordering::Relaxed);
        self.ops.stops.fetch_add(1, Ordering::Relaxed);
        self.inner.stop(id, grace).await
    }

    async fn unpause(&self, id: &str) -> Result<()> {
        let _permit = self.permit().await?;
        self.ops.starts.fetch_add(1, Ordering::Relaxed);
        self.inner.unpause(id).await
    }

    async fn rename(&self, id: &str, name: &str) -> Result<()> {
        let _permit = self.permit().await?;
        self.inner.rename(id, name).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let _permit = self.permit().await?;
        self.ops.stops.fetch_add(1, Ordering::Relaxed);
        self.inner.remove(id).await
    }

    async fn restart(&self, id: &str, grace: Duration) -> Result<()> {
        let _permit = self.permit().await?;
        self.ops.starts.fetch_add(1, Ordering::Relaxed);
        self.inner.restart(id, grace).await
    }

    fn events(&self, instance: &str) -> EventStream {
        self.inner.events(instance)
    }

    fn log_stream(&self, id: &str, tail: usize, follow: bool) -> ByteStream {
        self.inner.log_stream(id, tail, follow)
    }

    async fn logs(&self, id: &str, tail: usize) -> Result<Vec<String>> {
        let _permit = self.permit().await?;
        self.inner.logs(id, tail).await
    }

    async fn exec(&self, id: &str, command: &[String]) -> Result<i64> {
        let _permit = self.permit().await?;
        self.inner.exec(id, command).await
    }

    async fn termination(&self, id: &str) -> Result<Termination> {
        let _permit = self.permit().await?;
        self.inner.termination(id).await
    }

    async fn inspect(&self, id: &str) -> Result<ContainerSpec> {
        let _permit = self.permit().await?;
        self.inner.inspect(id).await
    }

    async fn networks(&self, instance: &str) -> Result<Vec<ObservedNetwork>> {
        let _permit = self.permit().await?;
        self.inner.networks(instance).await
    }

    async fn subnets_in_use(&self) -> Result<Vec<String>> {
        let _permit = self.permit().await?;
        self.inner.subnets_in_use().await
    }

    async fn create_network(&self, spec: &NetworkSpec) -> Result<String> {
        let _permit = self.permit().await?;
        self.inner.create_network(spec).await
    }

    async fn remove_network(&self, id: &str) -> Result<()> {
        let _permit = self.permit().await?;
        self.inner.remove_network(id).await
    }

    async fn put_file(&self, id: &str, path: &str, content: &[u8]) -> Result<()> {
        let _permit = self.permit().await?;
        self.inner.put_file(id, path, content).await
    }

    async fn runtimes(&self) -> Result<Vec<String>> {
        let _permit = self.permit().await?;
        self.inner.runtimes().await
    }

    fn engine_ops(&self) -> Option<Arc<EngineOps>> {
        Some(self.ops.clone())
    }

    fn schedules_replicas(&self) -> bool {
        self.inner.schedules_replicas()
    }

    async fn workloads(
        &self,
        instance: &str,
        key: Option<&str>,
    ) -> Result<(Vec<ObservedWorkload>, Vec<Observed>)> {
        let _permit = self.permit().await?;
        self.inner.workloads(instance, key).await
    }

    async fn put_workload(
        &self,
        spec: &WorkloadSpec,
        existing: Option<&ObservedWorkload>,
    ) -> Result<String> {
        let _permit = self.permit().await?;
        self.ops.starts.fetch_add(1, Ordering::Relaxed);
        self.inner.put_workload(spec, existing).await
    }

    async fn remove_workload(&self, id: &str) -> Result<()> {
        let _permit = self.permit().await?;
        self.ops.stops.fetch_add(1, Ordering::Relaxed);
        self.inner.remove_workload(id).await
    }

    /// Not bounded: a push moves an image's layers for as long as that takes, like a build.
    async fn distribute(&self, tag: &str) -> Result<String> {
        self.inner.distribute(tag).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;

    #[tokio::test]
    async fn requests_beyond_the_limit_wait_for_a_permit() {
        let bounded = Arc::new(Bounded::new(FakeRuntime::new(), 2));
        let held: Vec<_> = vec![
            bounded.permits.try_acquire().unwrap(),
            bounded.permits.try_acquire().unwrap(),
        ];
        let waiter = {
            let bounded = bounded.clone();
            tokio::spawn(async move { bounded.list("i", None).await.map(|l| l.len()) })
        };
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "a third request ran past a limit of 2"
        );
        assert_eq!(bounded.ops.waiting.load(Ordering::Relaxed), 1);
        drop(held);
        assert_eq!(waiter.await.unwrap().unwrap(), 0);
        assert_eq!(bounded.ops.waiting.load(Ordering::Relaxed), 0);
        assert_eq!(bounded.in_flight(), 0);
    }

    #[tokio::test]
    async fn starts_are_counted_apart() {
        let bounded = Bounded::new(FakeRuntime::new(), 4);
        let _ = bounded.start("nope").await;
        let _ = bounded.restart("nope", Duration::ZERO).await;
        let _ = bounded.list("i", None).await;
        assert_eq!(bounded.ops.starts.load(Ordering::Relaxed), 2);
        assert_eq!(bounded.ops.total.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn network_requests_pass_through_and_are_counted() {
        let bounded = Bounded::new(FakeRuntime::new(), 4);
        let spec = NetworkSpec {
            name: "i_c".into(),
            labels: BTreeMap::from([(crate::runtime::LABEL_INSTANCE.into(), "i".into())]),
            subnet: "10.213.0.0/28".into(),
            gateway: "10.213.0.1".into(),
        };
        let id = bounded.create_network(&spec).await.unwrap();
        assert_eq!(bounded.networks("i").await.unwrap().len(), 1);
        assert_eq!(
            bounded.subnets_in_use().await.unwrap(),
            vec!["10.213.0.0/28"]
        );
        bounded.remove_network(&id).await.unwrap();
        assert_eq!(bounded.runtimes().await.unwrap(), vec!["runc"]);
        assert_eq!(bounded.ops.total.load(Ordering::Relaxed), 5);
        assert_eq!(bounded.ops.creates.load(Ordering::Relaxed), 0);
    }
}
