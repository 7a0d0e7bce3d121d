//! Prometheus metrics of the daemon, served on HTTP `/metrics`.
//!
//! Names follow Prometheus conventions: `safekeeper_` prefix, base units in the name
//! (`_bytes`, `_seconds`), `_total` for counters and only them, histograms for latencies,
//! `_info` for the build-info gauge (`scripts/check-metrics.sh` lints a live scrape with
//! `promtool check metrics`). Per-timeline series carry `tenant_id`
//! and `timeline_id` labels and disappear when the timeline is deleted. The registry
//! belongs to the daemon (not the process-global default) so that several daemons in one
//! test process do not mix their series.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use strata_ids::TenantTimelineId;

use postgres_wal::Lsn;

const TIMELINE_LABELS: [&str; 2] = ["tenant_id", "timeline_id"];

/// Buckets of the fsync histogram, in seconds: from a battery-backed cache (50 µs) to a
/// disk in trouble (5 s).
const FSYNC_SECONDS_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
];

#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// Every metric of the daemon.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    wal_bytes_received: IntCounterVec,
    wal_bytes_flushed: IntCounterVec,
    appends: IntCounterVec,
    flush_lsn: IntGaugeVec,
    commit_lsn: IntGaugeVec,
    commit_lag: IntGaugeVec,
    term: IntGaugeVec,
    storage_errors: IntCounterVec,
    pub fsync_seconds: Histogram,
    pub timelines: IntGauge,
    pub proposer_connections: IntGauge,
    pub proposer_errors: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str| -> Result<IntCounterVec, MetricsError> {
            let metric = IntCounterVec::new(Opts::new(name, help), &TIMELINE_LABELS)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let gauge_vec = |name: &str, help: &str| -> Result<IntGaugeVec, MetricsError> {
            let metric = IntGaugeVec::new(Opts::new(name, help), &TIMELINE_LABELS)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let metrics = Metrics {
            wal_bytes_received: counter_vec(
                "safekeeper_wal_bytes_received_total",
                "WAL bytes received from proposers in append requests",
            )?,
            wal_bytes_flushed: counter_vec(
                "safekeeper_wal_bytes_flushed_total",
                "WAL bytes made durable (fsynced) on this safekeeper",
            )?,
            appends: counter_vec(
                "safekeeper_appends_total",
                "Append requests (heartbeats included) processed",
            )?,
            flush_lsn: gauge_vec(
                "safekeeper_flush_lsn",
                "End of the last complete WAL record durable on this safekeeper",
            )?,
            commit_lsn: gauge_vec(
                "safekeeper_commit_lsn",
                "Highest LSN known to be held by a quorum",
            )?,
            commit_lag: gauge_vec(
                "safekeeper_commit_lag_bytes",
                "WAL durable on this safekeeper but not yet known to be committed (flush LSN minus commit LSN)",
            )?,
            term: gauge_vec("safekeeper_term", "Highest term this safekeeper accepted")?,
            storage_errors: counter_vec(
                "safekeeper_storage_errors_total",
                "Storage errors that stopped a timeline from accepting WAL",
            )?,
            fsync_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "safekeeper_fsync_seconds",
                    "Time to make written WAL durable (one flush of a timeline)",
                )
                .buckets(FSYNC_SECONDS_BUCKETS.to_vec()),
            )?,
            timelines: IntGauge::new("safekeeper_timelines", "Timelines open")?,
            proposer_connections: IntGauge::new(
                "safekeeper_proposer_connections",
                "Proposer streams open",
            )?,
            proposer_errors: IntCounter::new(
                "safekeeper_proposer_errors_total",
                "Proposer streams ended by an error",
            )?,
            registry,
        };
        for metric in [
            Box::new(metrics.fsync_seconds.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.timelines.clone()),
            Box::new(metrics.proposer_connections.clone()),
            Box::new(metrics.proposer_errors.clone()),
        ] {
            metrics.registry.register(metric)?;
        }
        strata_http::register_build_info(
            &metrics.registry,
            "safekeeper",
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
            wal_bytes_received: self.wal_bytes_received.with_label_values(&labels),
            wal_bytes_flushed: self.wal_bytes_flushed.with_label_values(&labels),
            appends: self.appends.with_label_values(&labels),
            flush_lsn: self.flush_lsn.with_label_values(&labels),
            commit_lsn: self.commit_lsn.with_label_values(&labels),
            commit_lag: self.commit_lag.with_label_values(&labels),
            term: self.term.with_label_values(&labels),
            storage_errors: self.storage_errors.with_label_values(&labels),
        }
    }

    /// Drop the series of a deleted timeline.
    pub fn remove_timeline(&self, id: TenantTimelineId) {
        let tenant = id.tenant_id.to_string();
        let timeline = id.timeline_id.to_string();
        let labels = [tenant.as_str(), timeline.as_str()];
        // An error only means the series was never created.
        let _ = self.wal_bytes_received.remove_label_values(&labels);
        let _ = self.wal_bytes_flushed.remove_label_values(&labels);
        let _ = self.commit_lag.remove_label_values(&labels);
        let _ = self.appends.remove_label_values(&labels);
        let _ = self.flush_lsn.remove_label_values(&labels);
        let _ = self.commit_lsn.remove_label_values(&labels);
        let _ = self.term.remove_label_values(&labels);
        let _ = self.storage_errors.remove_label_values(&labels);
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

/// The series of one timeline, resolved once so the hot path does not look labels up.
#[derive(Clone, Debug)]
pub struct TimelineMetrics {
    pub wal_bytes_received: IntCounter,
    pub wal_bytes_flushed: IntCounter,
    pub appends: IntCounter,
    pub storage_errors: IntCounter,
    flush_lsn: IntGauge,
    commit_lsn: IntGauge,
    commit_lag: IntGauge,
    term: IntGauge,
}

impl TimelineMetrics {
    pub fn set_positions(&self, term: u64, flush_lsn: Lsn, commit_lsn: Lsn) {
        self.term.set(saturating_i64(term));
        self.flush_lsn.set(saturating_i64(flush_lsn.0));
        self.commit_lsn.set(saturating_i64(commit_lsn.0));
        self.commit_lag
            .set(saturating_i64(flush_lsn.0.saturating_sub(commit_lsn.0)));
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
    fn timeline_series_appear_and_disappear() {
        let metrics = Metrics::new().unwrap();
        let id = TenantTimelineId {
            tenant_id: TenantId(1),
            timeline_id: TimelineId(2),
        };
        let timeline = metrics.timeline(id);
        timeline.wal_bytes_received.inc_by(100);
        timeline.set_positions(3, Lsn(0x1000028), Lsn(0x1000000));
        metrics.fsync_seconds.observe(0.001);
        let text = metrics.encode().unwrap();
        let labels = format!(
            "tenant_id=\"{}\",timeline_id=\"{}\"",
            id.tenant_id, id.timeline_id
        );
        assert!(text.contains(&format!(
            "safekeeper_wal_bytes_received_total{{{labels}}} 100"
        )));
        assert!(text.contains(&format!("safekeeper_flush_lsn{{{labels}}} 16777256")));
        assert!(text.contains("safekeeper_fsync_seconds_count 1"));
        assert!(text.contains(&format!(
            "safekeeper_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        metrics.remove_timeline(id);
        assert!(!metrics.encode().unwrap().contains("tenant_id"));
    }
}
