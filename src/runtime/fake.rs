//! An in-memory [`Runtime`] that behaves like a tiny engine: for benchmarks of the reconcile
//! path without Docker, and for tests of code above the runtime. Never used by `beast run`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;

use crate::netpool::subnets_overlap;

use super::{
    BuildOutput, ByteStream, ContainerSpec, ContainerState, EventStream, ImageIndex, ImageInfo,
    NetworkSpec, Observed, ObservedNetwork, Result, Runtime, RuntimeError, Termination,
    LABEL_INSTANCE,
};

/// A fake engine holding containers in a map; counts the mutating calls it served.
#[derive(Default)]
pub struct FakeRuntime {
    containers: Mutex<BTreeMap<String, Observed>>,
    images: Mutex<ImageIndex>,
    next_id: AtomicU64,
    mutations: AtomicU64,
    /// Images made by `build`, oldest first.
    built: Mutex<Vec<ImageInfo>>,
    builds: AtomicU64,
    fail_builds: AtomicBool,
    used_images: Mutex<Vec<String>>,
    /// How long each build takes (zero: at once).
    build_time: Mutex<std::time::Duration>,
    /// Builds running now, and the most that ever ran at once.
    building: AtomicU64,
    peak_building: AtomicU64,
    /// Networks by id, any instance.
    networks: Mutex<BTreeMap<String, ObservedNetwork>>,
    /// The network each container was created on, by container id.
    attached: Mutex<BTreeMap<String, String>>,
    /// Files put into containers, by (container id, path).
    files: Mutex<BTreeMap<(String, String), Vec<u8>>>,
}

impl FakeRuntime {
    pub fn new() -> FakeRuntime {
        FakeRuntime::default()
    }

    /// Makes `reference` resolvable to `id`.
    pub fn add_image(&self, reference: &str, id: &str) {
        lock(&self.images).insert(reference, id);
    }

    /// How many builds ran (failed ones included).
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }

    /// Makes every following build take `time` (to see builds overlap).
    pub fn set_build_time(&self, time: std::time::Duration) {
        *lock(&self.build_time) = time;
    }

    /// The most builds that ever ran at once.
    pub fn peak_builds(&self) -> u64 {
        self.peak_building.load(Ordering::Relaxed)
    }

    /// Makes every following build fail (as `RUN false` would) until set back.
    pub fn fail_builds(&self, fail: bool) {
        self.fail_builds.store(fail, Ordering::Relaxed);
    }

    /// The images `build` made that still exist, oldest first.
    pub fn built_images(&self) -> Vec<ImageInfo> {
        lock(&self.built).clone()
    }

    /// Marks an image as used by a container: removing it is then a conflict, as on Docker.
    pub fn use_image(&self, id: &str) {
        lock(&self.used_images).push(id.to_string());
    }

    /// Puts a network in place as if someone else had created it.
    pub fn insert_network(&self, network: ObservedNetwork) {
        lock(&self.networks).insert(network.id.clone(), network);
    }

    /// All networks, any instance.
    pub fn all_networks(&self) -> Vec<ObservedNetwork> {
        lock(&self.networks).values().cloned().collect()
    }

    /// The network container `id` was created on.
    pub fn network_of(&self, id: &str) -> Option<String> {
        lock(&self.attached).get(id).cloned()
    }

    /// How many create/start/stop/remove/rename/unpause calls were made (networks' included).
    pub fn mutations(&self) -> u64 {
        self.mutations.load(Ordering::Relaxed)
    }

    /// All containers, any instance.
    pub fn all(&self) -> Vec<Observed> {
        lock(&self.containers).values().cloned().collect()
    }

    /// Puts a container in place as if someone else had created it.
    pub fn insert(&self, observed: Observed) {
        lock(&self.containers).insert(observed.id.clone(), observed);
    }

    fn mutate<T>(&self, id: &str, f: impl FnOnce(&mut Observed) -> T) -> Result<T> {
        self.mutations.fetch_add(1, Ordering::Relaxed);
        let mut containers = lock(&self.containers);
        let container = containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        Ok(f(container))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Runtime for FakeRuntime {
    async fn build(
        &self,
        tar: Vec<u8>,
        tag: &str,
        _dockerfile: &str,
        _args: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> Result<BuildOutput> {
        let n = self.builds.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.building.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_building.fetch_max(now, Ordering::SeqCst);
        let time = *lock(&self.build_time);
        if !time.is_zero() {
            tokio::time::sleep(time).await;
        }
        self.building.fetch_sub(1, Ordering::SeqCst);
        let log = vec![format!("Step 1/1 : fake build of {} bytes", tar.len())];
        if self.fail_builds.load(Ordering::Relaxed) {
            return Err(RuntimeError::Build {
                message: "The command '/bin/sh -c false' returned a non-zero code: 1".to_string(),
                log,
            });
        }
        let id = format!("sha256:fakeimage{n:048}");
        lock(&self.images).insert(tag, &id);
        lock(&self.built).push(ImageInfo {
            id: id.clone(),
            tags: vec![tag.to_string()],
            created: i64::try_from(n).unwrap_or(i64::MAX),
            labels: labels.clone(),
        });
        Ok(BuildOutput { image_id: id, log })
    }

    async fn remove_image(&self, reference: &str) -> Result<()> {
        let mut built = lock(&self.built);
        let Some(pos) = built
            .iter()
            .position(|i| i.id == reference || i.tags.iter().any(|t| t == reference))
        else {
            return Ok(());
        };
        if built[pos].tags.len() > 1 {
            built[pos].tags.retain(|t| t != reference);
            lock(&self.images).remove(reference);
            return Ok(());
        }
        if lock(&self.used_images).contains(&built[pos].id) {
            return Err(RuntimeError::Conflict(format!(
                "image {reference} is being used by a container"
            )));
        }
        let image = built.remove(pos);
        let mut images = lock(&self.images);
        image.tags.iter().for_each(|t| images.remove(t));
        images.remove(&image.id);
        Ok(())
    }

    async fn list_images_with_label(&self, key: &str, value: &str) -> Result<Vec<ImageInfo>> {
        Ok(lock(&self.built)
            .iter()
            .filter(|i| i.labels.get(key).map(String::as_str) == Some(value))
            .cloned()
            .collect())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn list(&self, instance: &str, challenge: Option<&str>) -> Result<Vec<Observed>> {
        Ok(lock(&self.containers)
            .values()
            .filter(|o| o.labels.get(LABEL_INSTANCE).map(String::as_str) == Some(instance))
            .filter(|o| challenge.is_none() || o.key().as_deref() == challenge)
            .cloned()
            .collect())
    }

    async fn images(&self) -> Result<ImageIndex> {
        Ok(lock(&self.images).clone())
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>> {
        Ok(lock(&self.images).resolve(reference).map(str::to_string))
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        self.mutations.fetch_add(1, Ordering::Relaxed);
        if let Some(network) = &spec.network {
            if !lock(&self.networks).values().any(|n| &n.name == network) {
                return Err(RuntimeError::NotFound(format!(
                    "network {network} not found"
                )));
            }
        }
        if let Some(runtime) = spec.runtime.as_deref().filter(|r| *r != "runc") {
            return Err(RuntimeError::Engine {
                status: 400,
                message: format!("Unknown runtime specified {runtime}"),
            });
        }
        let mut containers = lock(&self.containers);
        if containers.values().any(|o| o.name == spec.name) {
            return Err(RuntimeError::Conflict(format!(
                "name {} is in use",
                spec.name
            )));
        }
        let id = format!("fake{:060}", self.next_id.fetch_add(1, Ordering::Relaxed));
        containers.insert(
            id.clone(),
            Observed {
                id: id.clone(),
                name: spec.name.clone(),
                labels: spec.labels.clone(),
                state: ContainerState::Created,
                status: "Created".to_string(),
                ports: spec.ports.clone(),
                created: 0,
                ip: None,
                node: None,
            },
        );
        if let Some(network) = &spec.network {
            lock(&self.attached).insert(id.clone(), network.clone());
        }
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.mutate(id, |o| o.state = ContainerState::Running)
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<()> {
        self.mutate(id, |o| o.state = ContainerState::Exited)
    }

    async fn unpause(&self, id: &str) -> Result<()> {
        self.mutate(id, |o| o.state = ContainerState::Running)
    }

    async fn rename(&self, id: &str, name: &str) -> Result<()> {
        self.mutate(id, |o| o.name = name.to_string())
    }

    async fn restart(&self, id: &str, _grace: Duration) -> Result<()> {
        self.mutate(id, |o| o.state = ContainerState::Running)
    }

    fn events(&self, _instance: &str) -> EventStream {
        futures::stream::pending().boxed()
    }

    fn log_stream(&self, _id: &str, _tail: usize, _follow: bool) -> ByteStream {
        futures::stream::empty().boxed()
    }

    async fn logs(&self, _id: &str, _tail: usize) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    async fn exec(&self, _id: &str, _command: &[String]) -> Result<i64> {
        Ok(0)
    }

    async fn termination(&self, id: &str) -> Result<Termination> {
        self.mutate(id, |c| Termination {
            running: c.state == ContainerState::Running,
            started_at: c.created.to_string(),
            ..Termination::default()
        })
    }

    async fn inspect(&self, id: &str) -> Result<ContainerSpec> {
        Err(RuntimeError::NotFound(format!(
            "the fake runtime keeps no specs ({id})"
        )))
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.mutations.fetch_add(1, Ordering::Relaxed);
        lock(&self.containers).remove(id);
        lock(&self.attached).remove(id);
        Ok(())
    }

    async fn networks(&self, instance: &str) -> Result<Vec<ObservedNetwork>> {
        let attached = lock(&self.attached);
        Ok(lock(&self.networks)
            .values()
            .filter(|n| n.instance() == Some(instance))
            .map(|n| ObservedNetwork {
                containers: attached
                    .iter()
                    .filter(|(_, net)| **net == n.name)
                    .map(|(id, _)| id.clone())
                    .collect(),
                ..n.clone()
            })
            .collect())
    }

    async fn subnets_in_use(&self) -> Result<Vec<String>> {
        Ok(lock(&self.networks)
            .values()
            .filter_map(|n| n.subnet.clone())
            .collect())
    }

    async fn create_network(&self, spec: &NetworkSpec) -> Result<String> {
        self.mutations.fetch_add(1, Ordering::Relaxed);
        let mut networks = lock(&self.networks);
        if networks.values().any(|n| n.name == spec.name) {
            return Err(RuntimeError::Conflict(format!(
                "network with name {} already exists",
                spec.name
            )));
        }
        let overlaps = |n: &ObservedNetwork| {
            n.subnet
                .as_deref()
                .is_some_and(|s| subnets_overlap(s, &spec.subnet))
        };
        if networks.values().any(overlaps) {
            return Err(RuntimeError::Conflict(
                "Pool overlaps with other one on this address space".to_string(),
            ));
        }
        let id = format!(
            "fakenet{:057}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        networks.insert(
            id.clone(),
            ObservedNetwork {
                id: id.clone(),
                name: spec.name.clone(),
                labels: spec.labels.clone(),
                subnet: Some(spec.subnet.clone()),
                containers: Vec::new(),
            },
        );
        Ok(id)
    }

    async fn put_file(&self, id: &str, path: &str, content: &[u8]) -> Result<()> {
        if !lock(&self.containers).contains_key(id) {
            return Err(RuntimeError::NotFound(format!("no such container: {id}")));
        }
        lock(&self.files).insert((id.to_string(), path.to_string()), content.to_vec());
        Ok(())
    }

    async fn remove_network(&self, id: &str) -> Result<()> {
        self.mutations.fetch_add(1, Ordering::Relaxed);
        let mut networks = lock(&self.networks);
        let Some(network) = networks.get(id) else {
            return Ok(());
        };
        if lock(&self.attached).values().any(|n| *n == network.name) {
            return Err(RuntimeError::Conflict(format!(
                "error while removing network: network {} id {id} has active endpoints",
                network.name
            )));
        }
        networks.remove(id);
        Ok(())
    }

    async fn runtimes(&self) -> Result<Vec<String>> {
        Ok(vec!["runc".to_string()])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn net(name: &str, subnet: &str) -> NetworkSpec {
        NetworkSpec {
            name: name.to_string(),
            labels: BTreeMap::from([(LABEL_INSTANCE.to_string(), "i".to_string())]),
            subnet: subnet.to_string(),
            gateway: String::new(),
        }
    }

    #[tokio::test]
    async fn networks_refuse_taken_names_and_overlapping_subnets() {
        let fake = FakeRuntime::new();
        fake.create_network(&net("i_a", "10.1.0.0/28"))
            .await
            .unwrap();
        let taken = fake.create_network(&net("i_a", "10.2.0.0/28")).await;
        assert!(matches!(taken, Err(RuntimeError::Conflict(_))), "{taken:?}");
        let overlap = fake.create_network(&net("i_b", "10.1.0.8/29")).await;
        assert!(
            matches!(&overlap, Err(RuntimeError::Conflict(m)) if m.contains("overlap")),
            "{overlap:?}"
        );
        fake.create_network(&net("i_b", "10.1.0.16/28"))
            .await
            .unwrap();
        assert_eq!(fake.networks("i").await.unwrap().len(), 2);
        assert!(fake.networks("other").await.unwrap().is_empty());
        assert_eq!(fake.subnets_in_use().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_network_in_use_is_not_removed() {
        let fake = FakeRuntime::new();
        let id = fake
            .create_network(&net("i_a", "10.1.0.0/28"))
            .await
            .unwrap();
        let spec = ContainerSpec {
            name: "i_a_1".into(),
            network: Some("i_a".into()),
            ..ContainerSpec::default()
        };
        let container = fake.create(&spec).await.unwrap();
        assert_eq!(
            fake.networks("i").await.unwrap()[0].containers,
            std::slice::from_ref(&container)
        );
        let busy = fake.remove_network(&id).await;
        assert!(matches!(busy, Err(RuntimeError::Conflict(_))), "{busy:?}");
        fake.remove(&container).await.unwrap();
        fake.remove_network(&id).await.unwrap();
        fake.remove_network(&id).await.unwrap();
        assert!(fake.all_networks().is_empty());
    }

    #[tokio::test]
    async fn unknown_networks_and_runtimes_fail_the_create() {
        let fake = FakeRuntime::new();
        let missing = ContainerSpec {
            name: "x".into(),
            network: Some("nope".into()),
            ..ContainerSpec::default()
        };
        assert!(matches!(
            fake.create(&missing).await,
            Err(RuntimeError::NotFound(_))
        ));
        let runsc = ContainerSpec {
            name: "y".into(),
            runtime: Some("runsc".into()),
            ..ContainerSpec::default()
        };
        let err = fake.create(&runsc).await.unwrap_err().to_string();
        assert!(err.contains("Unknown runtime specified runsc"), "{err}");
        assert!(fake.all().is_empty());
    }
}
