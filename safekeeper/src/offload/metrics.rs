//! Metrics of WAL offload, registered in the daemon's registry beside
//! [`crate::metrics`] (`safekeeper_wal_offload_*`). Per-timeline series carry
//! `tenant_id` and `timeline_id` and disappear when the timeline is deleted.

use postgres_wal::Lsn;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use strata_ids::TenantTimelineId;

const TIMELINE_LABELS: [&str; 2] = ["tenant_id", "timeline_id"];

/// Upload latency buckets, in seconds: a 16 MiB segment takes milliseconds to a local
/// directory, about a second to S3, and a minute when the store is struggling.
const UPLOAD_SECONDS_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

#[derive(Clone, Debug)]
pub struct OffloadMetrics {
    uploaded_segments: IntCounterVec,
    uploaded_bytes: IntCounterVec,
    errors: IntCounterVec,
    removed_segments: IntCounterVec,
    uploaded_lsn: IntGaugeVec,
    remote_consistent_lsn: IntGaugeVec,
    removal_horizon_lsn: IntGaugeVec,
    uploader: IntGaugeVec,
    pub upload_seconds: Histogram,
}

impl OffloadMetrics {
    pub fn new(registry: &Registry) -> Result<OffloadMetrics, prometheus::Error> {
        let counter_vec = |name: &str, help: &str| -> Result<IntCounterVec, prometheus::Error> {
            let metric = IntCounterVec::new(Opts::new(name, help), &TIMELINE_LABELS)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let gauge_vec = |name: &str, help: &str| -> Result<IntGaugeVec, prometheus::Error> {
            let metric = IntGaugeVec::new(Opts::new(name, help), &TIMELINE_LABELS)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let upload_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "safekeeper_wal_offload_upload_seconds",
                "Time to upload one WAL segment to object storage (the backend's retries included)",
            )
            .buckets(UPLOAD_SECONDS_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(upload_seconds.clone()))?;
        Ok(OffloadMetrics {
            uploaded_segments: counter_vec(
                "safekeeper_wal_offload_uploaded_segments_total",
                "WAL segments this safekeeper uploaded to object storage",
            )?,
            uploaded_bytes: counter_vec(
                "safekeeper_wal_offload_uploaded_bytes_total",
                "Bytes of WAL segments this safekeeper uploaded to object storage",
            )?,
            errors: counter_vec(
                "safekeeper_wal_offload_errors_total",
                "Offload checks that failed (an upload, a listing or a removal) and are retried with backoff",
            )?,
            removed_segments: counter_vec(
                "safekeeper_wal_offload_removed_segments_total",
                "Local WAL segments removed below the offload removal horizon",
            )?,
            uploaded_lsn: gauge_vec(
                "safekeeper_wal_offload_uploaded_lsn",
                "End of the contiguous run of WAL segments in object storage from the timeline's first one",
            )?,
            remote_consistent_lsn: gauge_vec(
                "safekeeper_wal_offload_remote_consistent_lsn",
                "Highest remote-consistent LSN the pageserver reported (here or to a peer)",
            )?,
            removal_horizon_lsn: gauge_vec(
                "safekeeper_wal_offload_removal_horizon_lsn",
                "Local WAL segments wholly below this LSN are removed",
            )?,
            uploader: gauge_vec(
                "safekeeper_wal_offload_uploader",
                "1 while this safekeeper is the one uploading the timeline's WAL, else 0",
            )?,
            upload_seconds,
        })
    }

    pub fn timeline(&self, id: TenantTimelineId) -> TimelineOffloadMetrics {
        let tenant = id.tenant_id.to_string();
        let timeline = id.timeline_id.to_string();
        let labels = [tenant.as_str(), timeline.as_str()];
        TimelineOffloadMetrics {
            uploaded_segments: self.uploaded_segments.with_label_values(&labels),
            uploaded_bytes: self.uploaded_bytes.with_label_values(&labels),
            errors: self.errors.with_label_values(&labels),
            removed_segments: self.removed_segments.with_label_values(&labels),
            uploaded_lsn: self.uploaded_lsn.with_label_values(&labels),
            remote_consistent_lsn: self.remote_consistent_lsn.with_label_values(&labels),
            removal_horizon_lsn: self.removal_horizon_lsn.with_label_values(&labels),
            uploader: self.uploader.with_label_values(&labels),
            upload_seconds: self.upload_seconds.clone(),
        }
    }

    /// Drop the series of a deleted timeline.
    pub fn remove_timeline(&self, id: TenantTimelineId) {
        let tenant = id.tenant_id.to_string();
        let timeline = id.timeline_id.to_string();
        let labels = [tenant.as_str(), timeline.as_str()];
        // An error only means the series was never created.
        let _ = self.uploaded_segments.remove_label_values(&labels);
        let _ = self.uploaded_bytes.remove_label_values(&labels);
        let _ = self.errors.remove_label_values(&labels);
        let _ = self.removed_segments.remove_label_values(&labels);
        let _ = self.uploaded_lsn.remove_label_values(&labels);
        let _ = self.remote_consistent_lsn.remove_label_values(&labels);
        let _ = self.removal_horizon_lsn.remove_label_values(&labels);
        let _ = self.uploader.remove_label_values(&labels);
    }
}

/// The series of one timeline.
#[derive(Clone, Debug)]
pub struct TimelineOffloadMetrics {
    pub uploaded_segments: IntCounter,
    pub uploaded_bytes: IntCounter,
    pub errors: IntCounter,
    pub removed_segments: IntCounter,
    pub upload_seconds: Histogram,
    uploaded_lsn: IntGauge,
    remote_consistent_lsn: IntGauge,
    removal_horizon_lsn: IntGauge,
    uploader: IntGauge,
}

impl TimelineOffloadMetrics {
    pub fn set_positions(&self, uploaded: Lsn, remote_consistent: Lsn, horizon: Lsn) {
        self.uploaded_lsn.set(saturating_i64(uploaded.0));
        self.remote_consistent_lsn
            .set(saturating_i64(remote_consistent.0));
        self.removal_horizon_lsn.set(saturating_i64(horizon.0));
    }

    pub fn set_uploader(&self, uploader: bool) {
        self.uploader.set(i64::from(uploader));
    }
}

/// Prometheus integer gauges are signed; LSNs above 2^63 do not occur.
fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use strata_ids::{TenantId, TimelineId};

    #[test]
    fn series_appear_and_disappear() {
        let registry = Registry::new();
        let metrics = OffloadMetrics::new(&registry).unwrap();
        let id = TenantTimelineId {
            tenant_id: TenantId(1),
            timeline_id: TimelineId(2),
        };
        let timeline = metrics.timeline(id);
        timeline.uploaded_segments.inc();
        timeline.uploaded_bytes.inc_by(16 << 20);
        timeline.set_positions(Lsn(0x300_0000), Lsn(0x280_0000), Lsn(0x280_0000));
        timeline.set_uploader(true);
        timeline.upload_seconds.observe(0.2);
        let text = strata_http::encode(&registry).unwrap();
        for line in [
            "safekeeper_wal_offload_uploaded_segments_total{",
            "safekeeper_wal_offload_uploaded_bytes_total{",
            "safekeeper_wal_offload_uploaded_lsn{",
            "safekeeper_wal_offload_uploader{",
            "safekeeper_wal_offload_upload_seconds_count 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(text.contains("} 50331648"), "{text}");
        metrics.remove_timeline(id);
        assert!(!strata_http::encode(&registry)
            .unwrap()
            .contains("tenant_id"));
    }
}
