//! Object storage metrics, the same for every daemon: a [`RemoteStorage`] wrapper that
//! counts requests and failures and times them per operation, registered under the
//! daemon's prefix (`pageserver_object_storage_requests_total{operation="put"}`, …).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::error::RemoteError;
use crate::layout::RemotePath;
use crate::{ObjectMeta, RemoteStorage};

/// Latency buckets in seconds: a local directory answers in microseconds, S3 in tens of
/// milliseconds, a multipart upload of a large layer in seconds.
const SECONDS_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// The `operation` label's values: one per trait method.
const OPERATIONS: [&str; 8] = [
    "put",
    "put_file",
    "put_if_absent",
    "get",
    "get_range",
    "download",
    "list",
    "delete",
];

#[derive(Debug)]
pub struct MeteredStorage {
    inner: Arc<dyn RemoteStorage>,
    requests: IntCounterVec,
    errors: IntCounterVec,
    seconds: HistogramVec,
    bytes_uploaded: prometheus::IntCounter,
    bytes_downloaded: prometheus::IntCounter,
}

impl MeteredStorage {
    /// Wraps `inner`, registering `<prefix>_object_storage_*` in `registry`.
    pub fn new(
        inner: Arc<dyn RemoteStorage>,
        registry: &Registry,
        prefix: &str,
    ) -> Result<MeteredStorage, prometheus::Error> {
        let name = |what: &str| format!("{prefix}_object_storage_{what}");
        let requests = IntCounterVec::new(
            Opts::new(name("requests_total"), "Object storage operations started"),
            &["operation"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                name("errors_total"),
                "Object storage operations that failed (after the backend's retries)",
            ),
            &["operation"],
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                name("request_seconds"),
                "Time of an object storage operation, retries included",
            )
            .buckets(SECONDS_BUCKETS.to_vec()),
            &["operation"],
        )?;
        let bytes_uploaded = prometheus::IntCounter::new(
            name("uploaded_bytes_total"),
            "Bytes written to object storage",
        )?;
        let bytes_downloaded = prometheus::IntCounter::new(
            name("downloaded_bytes_total"),
            "Bytes read from object storage",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        registry.register(Box::new(bytes_uploaded.clone()))?;
        registry.register(Box::new(bytes_downloaded.clone()))?;
        // Every series exists from the start (at 0), so that rates and alerts on them
        // work before the first failure.
        for operation in OPERATIONS {
            requests.with_label_values(&[operation]);
            errors.with_label_values(&[operation]);
            seconds.with_label_values(&[operation]);
        }
        Ok(MeteredStorage {
            inner,
            requests,
            errors,
            seconds,
            bytes_uploaded,
            bytes_downloaded,
        })
    }

    async fn observe<T>(
        &self,
        operation: &str,
        call: impl std::future::Future<Output = Result<T, RemoteError>>,
    ) -> Result<T, RemoteError> {
        self.requests.with_label_values(&[operation]).inc();
        let started = Instant::now();
        let result = call.await;
        self.seconds
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
        // A missing object is an answer, not a failure of the store.
        if result.as_ref().is_err_and(|e| !e.is_not_found()) {
            self.errors.with_label_values(&[operation]).inc();
        }
        result
    }
}

#[async_trait::async_trait]
impl RemoteStorage for MeteredStorage {
    async fn put(&self, path: &RemotePath, data: Bytes) -> Result<(), RemoteError> {
        let len = data.len() as u64;
        self.observe("put", self.inner.put(path, data)).await?;
        self.bytes_uploaded.inc_by(len);
        Ok(())
    }

    async fn put_file(&self, path: &RemotePath, src: &Path) -> Result<u64, RemoteError> {
        let n = self
            .observe("put_file", self.inner.put_file(path, src))
            .await?;
        self.bytes_uploaded.inc_by(n);
        Ok(n)
    }

    async fn put_if_absent(&self, path: &RemotePath, data: Bytes) -> Result<bool, RemoteError> {
        let len = data.len() as u64;
        let created = self
            .observe("put_if_absent", self.inner.put_if_absent(path, data))
            .await?;
        if created {
            self.bytes_uploaded.inc_by(len);
        }
        Ok(created)
    }

    async fn get(&self, path: &RemotePath) -> Result<Bytes, RemoteError> {
        let data = self.observe("get", self.inner.get(path)).await?;
        self.bytes_downloaded.inc_by(data.len() as u64);
        Ok(data)
    }

    async fn get_range(
        &self,
        path: &RemotePath,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, RemoteError> {
        let data = self
            .observe("get_range", self.inner.get_range(path, offset, len))
            .await?;
        self.bytes_downloaded.inc_by(data.len() as u64);
        Ok(data)
    }

    async fn download_to_file(&self, path: &RemotePath, dest: &Path) -> Result<u64, RemoteError> {
        let n = self
            .observe("download", self.inner.download_to_file(path, dest))
            .await?;
        self.bytes_downloaded.inc_by(n);
        Ok(n)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, RemoteError> {
        self.observe("list", self.inner.list(prefix)).await
    }

    async fn delete(&self, path: &RemotePath) -> Result<(), RemoteError> {
        self.observe("delete", self.inner.delete(path)).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalFs;

    #[tokio::test]
    async fn operations_are_counted_timed_and_failures_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new();
        let store = MeteredStorage::new(
            Arc::new(LocalFs::open(dir.path()).unwrap()),
            &registry,
            "test",
        )
        .unwrap();
        let path = RemotePath::new("a/b").unwrap();
        store
            .put(&path, Bytes::from_static(b"hello"))
            .await
            .unwrap();
        store.get(&path).await.unwrap();
        let missing = RemotePath::new("a/none").unwrap();
        assert!(store.get(&missing).await.is_err());
        assert!(store.get_range(&path, 3, 10).await.is_err());
        let text = {
            let mut out = Vec::new();
            prometheus::Encoder::encode(
                &prometheus::TextEncoder::new(),
                &registry.gather(),
                &mut out,
            )
            .unwrap();
            String::from_utf8(out).unwrap()
        };
        for line in [
            "test_object_storage_requests_total{operation=\"get\"} 2",
            "test_object_storage_requests_total{operation=\"put\"} 1",
            "test_object_storage_errors_total{operation=\"get_range\"} 1",
            "test_object_storage_request_seconds_count{operation=\"get\"} 2",
            "test_object_storage_uploaded_bytes_total 5",
            "test_object_storage_downloaded_bytes_total 5",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // The not-found get is not an error of the store.
        assert!(text.contains("test_object_storage_errors_total{operation=\"get\"} 0"));
        assert!(text.contains("test_object_storage_requests_total{operation=\"delete\"} 0"));
    }
}
