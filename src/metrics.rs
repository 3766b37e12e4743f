//! Prometheus metrics (text format, prometheus-client): reconcile count and duration, queue
//! depth, heals, damage, probe failures, and API requests by route and status.
//!
//! Counters that other modules keep as plain atomics are read at scrape time through a
//! [`Gauges`] callback, so nothing on the reconcile path knows about Prometheus.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// One value read at scrape time.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: &'static str,
    pub help: &'static str,
    /// A counter (monotonic) or a gauge.
    pub counter: bool,
    pub value: u64,
    /// A gauge by one label instead of `value`: (label name, [(label value, value)]).
    pub by: Option<(&'static str, Vec<(String, u64)>)>,
}

/// Reads the current values of counters kept elsewhere.
pub type Gauges = Box<dyn Fn() -> Vec<Sample> + Send + Sync>;

/// Labels of an API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

/// The registry and the metrics recorded directly.
pub struct Metrics {
    registry: Registry,
    reconcile_seconds: Histogram,
    http_requests: Family<HttpLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

struct Live(Mutex<Option<Gauges>>);

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samples = match self.0.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(read) => read(),
            None => Vec::new(),
        };
        for s in samples {
            if let Some((label, values)) = &s.by {
                let mut family = encoder.encode_descriptor(
                    s.name,
                    s.help,
                    None,
                    prometheus_client::metrics::MetricType::Gauge,
                )?;
                for (v, value) in values {
                    let labels = vec![(*label, v.as_str())];
                    let m = family.encode_family(&labels)?;
                    ConstGauge::new(i64::try_from(*value).unwrap_or(i64::MAX)).encode(m)?;
                }
                continue;
            }
            if s.counter {
                let metric = ConstCounter::new(s.value);
                let m = encoder.encode_descriptor(s.name, s.help, None, metric.metric_type())?;
                metric.encode(m)?;
            } else {
                let metric = ConstGauge::new(i64::try_from(s.value).unwrap_or(i64::MAX));
                let m = encoder.encode_descriptor(s.name, s.help, None, metric.metric_type())?;
                metric.encode(m)?;
            }
        }
        Ok(())
    }
}

/// Shared handle.
#[derive(Clone, Debug)]
pub struct MetricsHandle {
    metrics: Arc<Metrics>,
    live: Arc<Live>,
}

impl Default for MetricsHandle {
    fn default() -> MetricsHandle {
        MetricsHandle::new()
    }
}

impl MetricsHandle {
    pub fn new() -> MetricsHandle {
        let mut registry = Registry::with_prefix("beast");
        let reconcile_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile of one challenge took",
            reconcile_seconds.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "api_requests",
            "API requests by method, route and status",
            http_requests.clone(),
        );
        let live = Arc::new(Live(Mutex::new(None)));
        registry.register_collector(Box::new(live.clone()));
        MetricsHandle {
            metrics: Arc::new(Metrics {
                registry,
                reconcile_seconds,
                http_requests,
            }),
            live,
        }
    }

    /// Sets the callback that reads counters kept elsewhere.
    pub fn set_gauges(&self, read: Gauges) {
        *self.live.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(read);
    }

    pub fn observe_reconcile(&self, took: Duration) {
        self.metrics.reconcile_seconds.observe(took.as_secs_f64());
    }

    pub fn count_request(&self, method: &str, route: &str, status: u16) {
        self.metrics
            .http_requests
            .get_or_create(&HttpLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(err) =
            prometheus_client::encoding::text::encode(&mut out, &self.metrics.registry)
        {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_shows_up_in_the_text_format() {
        let m = MetricsHandle::new();
        m.observe_reconcile(Duration::from_millis(5));
        m.count_request("GET", "/api/v1/status/challenges", 200);
        m.set_gauges(Box::new(|| {
            vec![
                Sample {
                    name: "heals",
                    help: "Heals",
                    counter: true,
                    value: 3,
                    by: None,
                },
                Sample {
                    name: "queue_depth",
                    help: "Queue depth",
                    counter: false,
                    value: 7,
                    by: None,
                },
                Sample {
                    name: "instances_live_by_challenge",
                    help: "Live instances",
                    counter: false,
                    value: 0,
                    by: Some(("challenge", vec![("pwn".to_string(), 2)])),
                },
            ]
        }));
        let text = m.render();
        assert!(
            text.contains("beast_reconcile_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("beast_api_requests_total{method=\"GET\",route=\"/api/v1/status/challenges\",status=\"200\"} 1"), "{text}");
        assert!(text.contains("beast_heals_total 3"), "{text}");
        assert!(text.contains("beast_queue_depth 7"), "{text}");
        assert!(
            text.contains("beast_instances_live_by_challenge{challenge=\"pwn\"} 2"),
            "{text}"
        );
    }
}
