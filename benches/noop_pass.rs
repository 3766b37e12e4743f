//! Cost of a no-op reconcile pass (the resync) over 1,000 desired challenges that are already
//! converged, against the in-memory fake runtime: everything beast does per pass except the
//! engine's own answer time. Target: ≤ 20 ms.
//!
//!     cargo bench --bench noop_pass

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use beast::containers::Defaults;
use beast::desired::{Claim, DesiredStore, DirSnapshot};
use beast::model::{Challenge, PortSpec, Protocol};
use beast::ports::{PortAllocator, PortRange};
use beast::reconcile::{Reconciler, Settings};
use beast::runtime::fake::FakeRuntime;
use beast::status::StatusBoard;

const N: usize = 1000;

fn main() {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => return eprintln!("no runtime: {err}"),
    };
    rt.block_on(bench());
}

async fn bench() {
    let runtime = Arc::new(FakeRuntime::new());
    runtime.add_image("bench/img:1", "sha256:bench");
    let store = DesiredStore::new();
    let mut snapshot = DirSnapshot::default();
    for i in 0..N {
        let name = format!("c{i:04}");
        let mut c = Challenge::with_image(&name, "bench/img:1");
        if let Some(run) = c.run.as_mut() {
            run.ports.push(PortSpec {
                port: 1337,
                host_port: None,
                protocol: Protocol::Tcp,
            });
            run.env = BTreeMap::from([("FLAG".to_string(), format!("flag{{{i}}}"))]);
        }
        snapshot.claims.insert(
            name.clone(),
            vec![(
                format!("{name}.yaml"),
                Claim::Valid {
                    challenge: Box::new(c),
                    raw: None,
                },
            )],
        );
    }
    store.apply_dir(0, snapshot);
    let settings = Settings {
        instance: "bench".into(),
        defaults: Defaults::default(),
        stop_grace: Duration::ZERO,
        build_workers: 1,
        pool: Default::default(),
        default_egress: false,
    };
    let ports = PortAllocator::in_memory(PortRange {
        lo: 20000,
        hi: 40000,
    });
    let reconciler = Reconciler::new(
        runtime.clone(),
        store.clone(),
        StatusBoard::new(),
        settings,
        ports,
    );

    // Converge once (creates N containers in the fake engine).
    for name in store.names() {
        if let Err(err) = reconciler.reconcile(&name).await {
            return eprintln!("converge failed: {err}");
        }
    }
    let mutations = runtime.mutations();

    let mut times = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let work = match reconciler.resync().await {
            Ok(work) => work,
            Err(err) => return eprintln!("pass failed: {err}"),
        };
        times.push(t.elapsed());
        assert!(work.is_empty(), "a converged pass found work: {work:?}");
    }
    assert_eq!(
        runtime.mutations(),
        mutations,
        "a no-op pass mutated the engine"
    );
    times.sort();
    let median = times[times.len() / 2];
    let p90 = times[times.len() * 9 / 10];
    println!("no-op reconcile pass over {N} challenges (fake runtime)");
    println!(
        "  median {:.2} ms   p90 {:.2} ms   target <= 20 ms   ({:.2}x of target)",
        ms(median),
        ms(p90),
        ms(median) / 20.0
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
