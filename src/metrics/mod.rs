//! The operator's view of a running process: Prometheus metrics, liveness and readiness,
//! served over HTTP by `-metrics-bind-address` (see `docs/metrics.md` for every metric).
//!
//! The metrics live in one process-wide registry ([`get`]) so that instrumentation points in the
//! controllers are a single call each; recording costs a few atomic operations and happens
//! whether or not the listener is enabled.

mod cni;
mod nb;
pub mod ready;
mod server;

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

pub(crate) use cni::listen as listen_cni;
pub use cni::{CNI_METRICS_SOCKET_ENV, CniSample, DEFAULT_CNI_METRICS_SOCKET, report_cni_request};
pub use nb::MeteredNb;
pub(crate) use nb::count_nb_objects;
pub use server::serve;

type GaugeF64 = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabel {
    resource_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabel {
    command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    rustc: String,
    target: String,
}

/// Every metric this process exports.
pub struct Metrics {
    registry: Registry,
    started: Instant,
    pod_creation_latency: Histogram,
    leader: Gauge,
    ready_duration: GaugeF64,
    sync_duration: Family<ResourceLabel, GaugeF64>,
    watched_objects: Family<ResourceLabel, Gauge>,
    nb_objects: Family<TableLabel, Gauge>,
    nb_txn_duration: Family<ResultLabel, Histogram>,
    nb_disconnects: Counter,
    cni_duration: Family<CommandLabel, Histogram>,
}

/// Latency buckets from 1 ms to ~65 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 17)
}

fn histogram_family<S: Clone + std::hash::Hash + Eq>() -> Family<S, Histogram> {
    Family::new_with_constructor(|| Histogram::new(latency_buckets()))
}

impl Metrics {
    /// Every metric, registered with its name and help text. Long because it is one flat table,
    /// a registration per metric, in the order `/metrics` lists them.
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let pod_creation_latency = Histogram::new(latency_buckets());
        registry.register(
            "ovnkube_master_pod_creation_latency_seconds",
            "Time from a pod's creationTimestamp until ovnkube annotated its network",
            pod_creation_latency.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "ovnkube_master_leader",
            "1 while this process is the active master (a lone master always is)",
            leader.clone(),
        );
        let ready_duration = GaugeF64::default();
        registry.register(
            "ovnkube_master_ready_duration_seconds",
            "Time from process start until every role it runs finished its initial sync",
            ready_duration.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                rustc: env!("OVNKUBE_RUSTC_VERSION").to_string(),
                target: env!("OVNKUBE_BUILD_TARGET").to_string(),
            })
            .set(1);
        registry.register(
            "ovnkube_master_build_info",
            "Build information of the running binary (the value is always 1)",
            build,
        );
        let sync_duration = Family::<ResourceLabel, GaugeF64>::default();
        registry.register(
            "ovnkube_master_sync_duration_seconds",
            "Time from starting a watch until its first complete list was processed",
            sync_duration.clone(),
        );
        let watched_objects = Family::<ResourceLabel, Gauge>::default();
        registry.register(
            "ovnkube_master_watched_objects",
            "Kubernetes objects currently known to this process, by resource",
            watched_objects.clone(),
        );
        let nb_objects = Family::<TableLabel, Gauge>::default();
        registry.register(
            "ovnkube_master_nb_objects",
            "Rows of selected OVN northbound tables (ACL, Address_Set, Port_Group, ...), read periodically by the master",
            nb_objects.clone(),
        );
        let nb_txn_duration = histogram_family::<ResultLabel>();
        registry.register(
            "ovnkube_nb_transaction_duration_seconds",
            "Duration of OVN northbound transactions, by result (ok or error)",
            nb_txn_duration.clone(),
        );
        let nb_disconnects = Counter::default();
        registry.register(
            "ovnkube_nb_disconnects",
            "Times the persistent OVN northbound connection was lost",
            nb_disconnects.clone(),
        );
        let cni_duration = histogram_family::<CommandLabel>();
        registry.register(
            "ovnkube_node_cni_request_duration_seconds",
            "Duration of CNI plugin requests on this node, by command (ADD, DEL, ...)",
            cni_duration.clone(),
        );
        Metrics {
            registry,
            started: Instant::now(),
            pod_creation_latency,
            leader,
            ready_duration,
            sync_duration,
            watched_objects,
            nb_objects,
            nb_txn_duration,
            nb_disconnects,
            cni_duration,
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
        out
    }

    /// A pod got its network annotation; `created` is its `creationTimestamp`.
    pub fn pod_annotated(&self, created: Option<SystemTime>) {
        if let Some(d) = created.and_then(|c| SystemTime::now().duration_since(c).ok()) {
            self.pod_creation_latency.observe(d.as_secs_f64());
        }
    }

    /// This process is (1) or is not (0) the active master.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// A watch on `resource` finished its first complete list, `took` after it started.
    pub fn watch_synced(&self, resource: &str, took: Duration) {
        self.sync_duration
            .get_or_create(&resource_label(resource))
            .set(took.as_secs_f64());
    }

    /// A watch on `resource` now knows `n` objects.
    pub fn watched_objects(&self, resource: &str, n: usize) {
        self.watched_objects
            .get_or_create(&resource_label(resource))
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The NB table `table` has `n` rows.
    pub fn nb_objects(&self, table: &str, n: usize) {
        self.nb_objects
            .get_or_create(&TableLabel {
                table: table.to_string(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// One NB transaction ended.
    pub fn nb_transaction(&self, took: Duration, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.nb_txn_duration
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// The persistent NB connection was lost.
    pub fn nb_disconnected(&self) {
        self.nb_disconnects.inc();
    }

    /// One CNI request reported by the plugin.
    pub fn cni_request(&self, s: &CniSample) {
        self.cni_duration
            .get_or_create(&CommandLabel {
                command: s.command.clone(),
            })
            .observe(s.seconds);
    }

    fn all_ready(&self) {
        self.ready_duration
            .set(self.started.elapsed().as_secs_f64());
    }
}

fn resource_label(resource: &str) -> ResourceLabel {
    ResourceLabel {
        resource_name: resource.to_string(),
    }
}

/// The master role starts (it runs only once this process holds the leader-election Lease),
/// and the NB row counts begin.
pub fn master_started(
    nb: std::sync::Arc<dyn crate::ovn::Nb>,
    cancel: tokio_util::sync::CancellationToken,
) {
    get().set_leader(true);
    tokio::spawn(count_nb_objects(nb, cancel));
}

/// The node role starts: a node agent that stays running and serves metrics receives the
/// CNI plugin's request durations.
pub fn node_starting(cfg: &crate::config::Config, cancel: tokio_util::sync::CancellationToken) {
    let stays = cfg.nodeport || cfg.ha;
    if !stays || cfg.metrics_bind_address.is_none() {
        return;
    }
    match listen_cni(cancel) {
        Ok(f) => drop(tokio::spawn(f)),
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "CNI request metrics are off"),
    }
}

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// A `creationTimestamp` as a `SystemTime`.
pub fn creation_time(meta: &kube::api::ObjectMeta) -> Option<SystemTime> {
    meta.creation_timestamp
        .as_ref()
        .map(|t| SystemTime::from(t.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_lines<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(name)).collect()
    }

    #[test]
    fn every_documented_family_is_exported() {
        let m = Metrics::new();
        m.pod_annotated(Some(SystemTime::now() - Duration::from_millis(300)));
        m.watch_synced("pods", Duration::from_millis(20));
        m.nb_transaction(Duration::from_millis(3), true);
        m.nb_disconnected();
        m.cni_request(&CniSample {
            command: "ADD".into(),
            seconds: 0.2,
        });
        let text = m.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        let doc = include_str!("../../docs/metrics.md");
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap_or_default();
            assert!(
                doc.contains(&format!("`{name}")),
                "docs/metrics.md does not list {name}"
            );
        }
        assert_eq!(
            sample_lines(&text, "ovnkube_master_pod_creation_latency_seconds_count"),
            ["ovnkube_master_pod_creation_latency_seconds_count 1"]
        );
        assert!(text.contains("ovnkube_nb_disconnects_total 1\n"), "{text}");
        assert!(
            text.contains("ovnkube_node_cni_request_duration_seconds_count{command=\"ADD\"} 1\n")
        );
        assert!(text.contains("ovnkube_master_sync_duration_seconds{resource_name=\"pods\"} 0.02"));
        assert!(text.contains(&format!(
            "ovnkube_master_build_info{{version=\"{}\"",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn a_timestamp_in_the_future_records_nothing() {
        let m = Metrics::new();
        m.pod_annotated(Some(SystemTime::now() + Duration::from_secs(60)));
        m.pod_annotated(None);
        assert!(
            m.encode()
                .contains("ovnkube_master_pod_creation_latency_seconds_count 0\n")
        );
    }
}
