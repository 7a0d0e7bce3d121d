//! Metrics of tiering to object storage, registered in the daemon's registry.
//!
//! Requests to the store itself (by operation: count, failures, latency, bytes) are
//! counted by `remote_storage::MeteredStorage` as `pageserver_object_storage_*`, the
//! names every daemon shares. The series here are the pageserver's own, per timeline
//! (`tenant_id`, `timeline_id` labels), all `pageserver_remote_*`.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use strata_ids::TenantTimelineId;

use crate::metrics::MetricsError;

const TIMELINE_LABELS: [&str; 2] = ["tenant_id", "timeline_id"];

/// Upload latency buckets, seconds: a small layer to a local directory up to a large
/// one to a distant S3.
const UPLOAD_SECONDS_BUCKETS: [f64; 10] =
    [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0];

/// The series of one timeline.
#[derive(Clone, Debug)]
pub struct RemoteMetrics {
    pub layers_uploaded: IntCounter,
    pub upload_errors: IntCounter,
    pub upload_seconds: Histogram,
    /// Layer files on local disk not yet in object storage.
    pub upload_queue_layers: IntGauge,
    remote_layer_files: IntGauge,
    remote_layer_bytes: IntGauge,
    pub resident_layer_bytes: IntGauge,
    pub layers_evicted: IntCounter,
    pub layers_downloaded: IntCounter,
    pub generation: IntGauge,
}

impl RemoteMetrics {
    /// The layers the latest acknowledged index lists: (count, bytes).
    pub(crate) fn set_remote_layers(&self, files: u64, bytes: u64) {
        self.remote_layer_files
            .set(i64::try_from(files).unwrap_or(i64::MAX));
        self.remote_layer_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

/// The vectors behind [`RemoteMetrics`], registered once per daemon.
#[derive(Clone, Debug)]
pub struct RemoteMetricVecs {
    layers_uploaded: IntCounterVec,
    upload_errors: IntCounterVec,
    upload_seconds: HistogramVec,
    upload_queue_layers: IntGaugeVec,
    remote_layer_files: IntGaugeVec,
    remote_layer_bytes: IntGaugeVec,
    resident_layer_bytes: IntGaugeVec,
    layers_evicted: IntCounterVec,
    layers_downloaded: IntCounterVec,
    generation: IntGaugeVec,
}

impl RemoteMetricVecs {
    pub fn new(registry: &Registry) -> Result<RemoteMetricVecs, MetricsError> {
        let counter = |name: &str, help: &str| -> Result<IntCounterVec, MetricsError> {
            let m = IntCounterVec::new(Opts::new(name, help), &TIMELINE_LABELS)?;
            registry.register(Box::new(m.clone()))?;
            Ok(m)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGaugeVec, MetricsError> {
            let m = IntGaugeVec::new(Opts::new(name, help), &TIMELINE_LABELS)?;
            registry.register(Box::new(m.clone()))?;
            Ok(m)
        };
        let upload_seconds = HistogramVec::new(
            HistogramOpts::new(
                "pageserver_remote_layer_upload_seconds",
                "Time to upload one layer file to object storage, the store's retries included",
            )
            .buckets(UPLOAD_SECONDS_BUCKETS.to_vec()),
            &TIMELINE_LABELS,
        )?;
        registry.register(Box::new(upload_seconds.clone()))?;
        Ok(RemoteMetricVecs {
            layers_uploaded: counter(
                "pageserver_remote_layers_uploaded_total",
                "Layer files uploaded to object storage",
            )?,
            upload_errors: counter(
                "pageserver_remote_upload_errors_total",
                "Upload rounds (layers and index) that failed and will be retried",
            )?,
            upload_seconds,
            upload_queue_layers: gauge(
                "pageserver_remote_upload_queue_layers",
                "Layer files on local disk not yet in object storage",
            )?,
            remote_layer_files: gauge(
                "pageserver_remote_layer_files",
                "Layer files the timeline's latest acknowledged index lists",
            )?,
            remote_layer_bytes: gauge(
                "pageserver_remote_layer_bytes",
                "Bytes of the layer files the latest acknowledged index lists",
            )?,
            resident_layer_bytes: gauge(
                "pageserver_remote_resident_layer_bytes",
                "Bytes of the timeline's layer files on local disk",
            )?,
            layers_evicted: counter(
                "pageserver_remote_layers_evicted_total",
                "Layer files removed from local disk to stay under the disk budget",
            )?,
            layers_downloaded: counter(
                "pageserver_remote_layers_downloaded_total",
                "Layer files downloaded because a read needed them (evicted or restored)",
            )?,
            generation: gauge(
                "pageserver_remote_generation",
                "Generation of this pageserver's attachment to the timeline's tenant",
            )?,
        })
    }

    pub fn timeline(&self, id: TenantTimelineId) -> RemoteMetrics {
        let tenant = id.tenant_id.to_string();
        let timeline = id.timeline_id.to_string();
        let labels = [tenant.as_str(), timeline.as_str()];
        RemoteMetrics {
            layers_uploaded: self.layers_uploaded.with_label_values(&labels),
            upload_errors: self.upload_errors.with_label_values(&labels),
            upload_seconds: self.upload_seconds.with_label_values(&labels),
            upload_queue_layers: self.upload_queue_layers.with_label_values(&labels),
            remote_layer_files: self.remote_layer_files.with_label_values(&labels),
            remote_layer_bytes: self.remote_layer_bytes.with_label_values(&labels),
            resident_layer_bytes: self.resident_layer_bytes.with_label_values(&labels),
            layers_evicted: self.layers_evicted.with_label_values(&labels),
            layers_downloaded: self.layers_downloaded.with_label_values(&labels),
            generation: self.generation.with_label_values(&labels),
        }
    }
}
