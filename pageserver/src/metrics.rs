//! Prometheus metrics of the daemon, served on HTTP `/metrics`.
//!
//! Names follow Prometheus conventions: `pageserver_` prefix, base units in the name
//! (`_bytes`, `_seconds`), `_total` for counters and only them, histograms for latencies,
//! `_info` for the build-info gauge (`scripts/check-metrics.sh` lints a live scrape with
//! `promtool check metrics`). Per-timeline series carry `tenant_id`
//! and `timeline_id` labels. The registry belongs to the daemon (not the process-global
//! default) so that several daemons in one test process do not mix their series.
//!
//! The walreceiver counts ingested WAL through [`TimelineMetrics`]
//! (`Timeline::metrics()`): `wal_ingest_bytes.inc_by(n)` and `record_ingested(rmgr)`.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use strata_ids::TenantTimelineId;

use layer_store::LayerInfo;
use postgres_wal::Lsn;

const TIMELINE_LABELS: [&str; 2] = ["tenant_id", "timeline_id"];
const RMGR_LABELS: [&str; 3] = ["tenant_id", "timeline_id", "rmgr"];

/// Buckets of the GetPage latency histogram, in seconds: from a cached image (20 µs)
/// to a long reconstruction or a wait for WAL (10 s).
const GETPAGE_SECONDS_BUCKETS: [f64; 14] = [
    0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0,
    10.0,
];

#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// Every metric of the daemon.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    wal_ingest_bytes: IntCounterVec,
    records_ingested: IntCounterVec,
    last_record_lsn: IntGaugeVec,
    disk_consistent_lsn: IntGaugeVec,
    remote_consistent_lsn: IntGaugeVec,
    ingest_lag: IntGaugeVec,
    layer_files: IntGaugeVec,
    layer_bytes: IntGaugeVec,
    ingest_errors: IntCounterVec,
    pub getpage_requests: IntCounter,
    pub getpage_seconds: Histogram,
    pub basebackups: IntCounter,
    pub basebackup_bytes: IntCounter,
    pub timelines: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(metric.clone()))?;
            Ok::<_, MetricsError>(metric)
        };
        let gauge_vec = |name: &str, help: &str| {
            let metric = IntGaugeVec::new(Opts::new(name, help), &TIMELINE_LABELS)?;
            registry.register(Box::new(metric.clone()))?;
            Ok::<_, MetricsError>(metric)
        };
        let metrics = Metrics {
            wal_ingest_bytes: counter_vec(
                "pageserver_wal_ingest_bytes_total",
                "WAL bytes received from safekeepers and decoded",
                &TIMELINE_LABELS,
            )?,
            records_ingested: counter_vec(
                "pageserver_wal_records_ingested_total",
                "WAL records ingested, by resource manager",
                &RMGR_LABELS,
            )?,
            last_record_lsn: gauge_vec(
                "pageserver_last_record_lsn",
                "End of the last WAL record ingested and readable",
            )?,
            disk_consistent_lsn: gauge_vec(
                "pageserver_disk_consistent_lsn",
                "Everything ingested up to this LSN is durable on local disk",
            )?,
            remote_consistent_lsn: gauge_vec(
                "pageserver_remote_consistent_lsn",
                "Everything up to this LSN is in object storage under an uploaded index",
            )?,
            ingest_lag: gauge_vec(
                "pageserver_wal_ingest_lag_bytes",
                "WAL received from the safekeeper but not yet ingested (committed to the layer store)",
            )?,
            layer_files: gauge_vec(
                "pageserver_layer_files",
                "Delta and image layer files of the timeline",
            )?,
            layer_bytes: gauge_vec(
                "pageserver_layer_bytes",
                "Bytes of the timeline's delta and image layer files",
            )?,
            ingest_errors: counter_vec(
                "pageserver_ingest_errors_total",
                "Errors that stopped ingest of the timeline",
                &TIMELINE_LABELS,
            )?,
            getpage_requests: IntCounter::new(
                "pageserver_getpage_requests_total",
                "GetPages requests answered (each may ask for several blocks)",
            )?,
            getpage_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "pageserver_getpage_seconds",
                    "Time to answer one GetPages request, waiting for its LSN included",
                )
                .buckets(GETPAGE_SECONDS_BUCKETS.to_vec()),
            )?,
            basebackups: IntCounter::new(
                "pageserver_basebackups_total",
                "Basebackups sent completely",
            )?,
            basebackup_bytes: IntCounter::new(
                "pageserver_basebackup_bytes_total",
                "Tar bytes of basebackups sent",
            )?,
            timelines: IntGauge::new("pageserver_timelines", "Timelines open")?,
            registry,
        };
        for metric in [
            Box::new(metrics.getpage_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.getpage_seconds.clone()),
            Box::new(metrics.basebackups.clone()),
            Box::new(metrics.basebackup_bytes.clone()),
            Box::new(metrics.timelines.clone()),
        ] {
            metrics.registry.register(metric)?;
        }
        strata_http::register_build_info(
            &metrics.registry,
            "pageserver",
            env!("CARGO_PKG_VERSION"),
        )?;
        Ok(metrics)
    }

    /// The series of one timeline.
    pub fn timeline(&self, id: TenantTimelineId) -> TimelineMetrics {
        let tenant = id.tenant_id.to_string();
        let timeline = id.timeline_id.to_string();
        let labels = [tenant.as_str(), timeline.as_str()];
        TimelineMetrics {
            tenant: tenant.clone(),
            timeline: timeline.clone(),
            wal_ingest_bytes: self.wal_ingest_bytes.with_label_values(&labels),
            records_ingested: self.records_ingested.clone(),
            ingest_errors: self.ingest_errors.with_label_values(&labels),
            last_record_lsn: self.last_record_lsn.with_label_values(&labels),
            disk_consistent_lsn: self.disk_consistent_lsn.with_label_values(&labels),
            ingest_lag: self.ingest_lag.with_label_values(&labels),
            remote_consistent_lsn: self.remote_consistent_lsn.with_label_values(&labels),
            layer_files: self.layer_files.with_label_values(&labels),
            layer_bytes: self.layer_bytes.with_label_values(&labels),
        }
    }

    /// The text exposition format (version 0.0.4) of every metric.
    pub fn encode(&self) -> Result<String, MetricsError> {
        Ok(strata_http::encode(&self.registry)?)
    }

    /// What the HTTP endpoint serves.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The series of one timeline, resolved once so the hot path does not look labels up
/// (but for the per-rmgr counter, whose label set is small and looked up per record).
#[derive(Clone, Debug)]
pub struct TimelineMetrics {
    tenant: String,
    timeline: String,
    /// WAL bytes received and decoded (the walreceiver adds them).
    pub wal_ingest_bytes: IntCounter,
    records_ingested: IntCounterVec,
    pub ingest_errors: IntCounter,
    last_record_lsn: IntGauge,
    disk_consistent_lsn: IntGauge,
    /// Received minus ingested, in bytes (the walreceiver sets it).
    pub ingest_lag: IntGauge,
    remote_consistent_lsn: IntGauge,
    layer_files: IntGauge,
    layer_bytes: IntGauge,
}

impl TimelineMetrics {
    /// Counts one ingested record of resource manager `rmgr` (its name as PostgreSQL
    /// spells it, e.g. "Heap").
    pub fn record_ingested(&self, rmgr: &str) {
        self.records_ingested
            .with_label_values(&[self.tenant.as_str(), self.timeline.as_str(), rmgr])
            .inc();
    }

    pub(crate) fn set_lsns(&self, lsn: Lsn) {
        self.last_record_lsn.set(saturating_i64(lsn.0));
        self.disk_consistent_lsn.set(saturating_i64(lsn.0));
    }

    pub(crate) fn set_remote_consistent_lsn(&self, lsn: Lsn) {
        self.remote_consistent_lsn.set(saturating_i64(lsn.0));
    }

    pub(crate) fn set_layers(&self, layers: &[LayerInfo]) {
        self.layer_files
            .set(i64::try_from(layers.len()).unwrap_or(i64::MAX));
        self.layer_bytes.set(saturating_i64(
            layers.iter().map(|l| l.size_bytes).sum::<u64>(),
        ));
    }
}

/// Prometheus integer gauges are signed; LSNs above 2^63 (8 EiB of WAL) do not occur.
fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_ids::{TenantId, TimelineId};

    #[test]
    fn timeline_series_are_labelled() {
        let metrics = Metrics::new().unwrap();
        let id = TenantTimelineId {
            tenant_id: TenantId(1),
            timeline_id: TimelineId(2),
        };
        let timeline = metrics.timeline(id);
        timeline.wal_ingest_bytes.inc_by(100);
        timeline.record_ingested("Heap");
        timeline.set_lsns(Lsn(0x1000028));
        metrics.getpage_seconds.observe(0.001);
        let text = metrics.encode().unwrap();
        let labels = format!(
            "tenant_id=\"{}\",timeline_id=\"{}\"",
            id.tenant_id, id.timeline_id
        );
        assert!(text.contains(&format!(
            "pageserver_wal_ingest_bytes_total{{{labels}}} 100"
        )));
        assert!(text.contains(&format!(
            "pageserver_wal_records_ingested_total{{rmgr=\"Heap\",{labels}}} 1"
        )));
        assert!(text.contains(&format!("pageserver_last_record_lsn{{{labels}}} 16777256")));
        assert!(text.contains("pageserver_getpage_seconds_count 1"));
        assert!(text.contains(&format!(
            "pageserver_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
    }
}
