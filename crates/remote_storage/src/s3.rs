//! The S3 backend (AWS S3, MinIO, any S3-compatible server), over `aws-sdk-s3`.
//!
//! Retries are ours, not the SDK's (its retry layer is disabled), so that every bound
//! is in [`RetryPolicy`] and [`crate::limits`]: a transient failure (timeout,
//! connection error, HTTP 5xx, throttling) is retried with exponential backoff and
//! full jitter up to `max_attempts`; a refusal (wrong credentials, missing bucket,
//! access denied, any other 4xx) is returned at once, naming the bucket and endpoint.
//! At most [`crate::limits::MAX_CONCURRENT_REQUESTS`] requests are in flight per store.
//!
//! Only what MinIO and S3-compatible servers implement is used: path-style addressing
//! when asked, SigV4, single and multipart PUT, ranged GET, ListObjectsV2, DELETE, and
//! `If-None-Match: *` on PUT for conditional creation.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::config::S3Config;
use crate::error::RemoteError;
use crate::layout::RemotePath;
use crate::limits::{
    ATTEMPT_TIMEOUT, CONNECT_TIMEOUT, INITIAL_BACKOFF, MAX_ATTEMPTS, MAX_BACKOFF,
    MAX_CONCURRENT_REQUESTS, MAX_GET_BYTES, MULTIPART_CONCURRENT_PARTS, MULTIPART_PART_SIZE,
    MULTIPART_THRESHOLD,
};
use crate::{ObjectMeta, RemoteStorage};

/// How failed requests are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts of one request, the first included.
    pub max_attempts: u32,
    /// Backoff before the second attempt, doubled after each, with full jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: MAX_ATTEMPTS,
            initial_backoff: INITIAL_BACKOFF,
            max_backoff: MAX_BACKOFF,
        }
    }
}

/// Sizes that decide single or multipart uploads (tests lower them).
#[derive(Debug, Clone, Copy)]
pub struct UploadSizes {
    pub multipart_threshold: u64,
    pub part_size: u64,
}

impl Default for UploadSizes {
    fn default() -> UploadSizes {
        UploadSizes {
            multipart_threshold: MULTIPART_THRESHOLD,
            part_size: MULTIPART_PART_SIZE,
        }
    }
}

#[derive(Debug, Clone)]
pub struct S3Bucket {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    describe: String,
    in_flight: Arc<Semaphore>,
    retry: RetryPolicy,
    sizes: UploadSizes,
}

/// How a failed request is handled.
enum Failure {
    Transient(String),
    NotFound,
    PreconditionFailed,
    NotImplemented,
    Refused(String),
}

fn classify<E>(error: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Failure::Transient(causes(error))
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or("");
            // The server's own words (`HTTP 403 SignatureDoesNotMatch: ...`); a HEAD
            // answer has no body, so only its status.
            let text = match (code, service.err().message().unwrap_or("")) {
                ("", _) => format!("HTTP {status}"),
                (code, "") => format!("HTTP {status} {code}"),
                (code, message) => format!("HTTP {status} {code}: {message}"),
            };
            match (status, code) {
                (404, _) if code != "NoSuchBucket" => Failure::NotFound,
                (412, _) => Failure::PreconditionFailed,
                (501, _) => Failure::NotImplemented,
                // A concurrent conditional write, a request body the server waited too
                // long for, throttling, server trouble.
                (409, "ConditionalRequestConflict")
                | (400, "RequestTimeout")
                | (429, _)
                | (500..=599, _) => Failure::Transient(text),
                _ => Failure::Refused(text),
            }
        }
        _ => Failure::Refused(causes(error)),
    }
}

/// An error and its causes on one line (`dispatch failure: io error: ...: Connection
/// refused`), without the SDK's debug dump.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A duration in `[0, max]`, from the clock's nanoseconds: full jitter needs spread,
/// not cryptographic randomness.
fn jitter(max: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mixed = nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    let max_nanos = max.as_nanos().min(u128::from(u64::MAX)) as u64;
    Duration::from_nanos(if max_nanos == 0 { 0 } else { mixed % max_nanos })
}

impl S3Bucket {
    /// A client for `config`, checked against the bucket (a listing of at most one
    /// object under the prefix, which the daemons need anyway; unlike HeadBucket its
    /// error has a body naming the cause), so that a wrong endpoint, bucket or key is
    /// an error now.
    pub async fn connect(
        config: &S3Config,
        retry: RetryPolicy,
        sizes: UploadSizes,
    ) -> Result<S3Bucket, RemoteError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            );
        if let (Some(key), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                key.clone(),
                secret.clone(),
                None,
                None,
                "strata-config",
            ));
        }
        let shared = loader.load().await;
        let mut builder =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(config.path_style);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint.clone());
        }
        let bucket = S3Bucket {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            prefix: config.prefix.clone(),
            describe: config.to_string(),
            in_flight: Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS)),
            retry,
            sizes,
        };
        bucket
            .request("check bucket", &config.bucket, || {
                bucket
                    .client
                    .list_objects_v2()
                    .bucket(&bucket.bucket)
                    .prefix(&bucket.prefix)
                    .max_keys(1)
                    .send()
            })
            .await
            .map_err(|error| match error {
                // A server that answers a missing bucket with a bare 404.
                RemoteError::NotFound { store, .. } => RemoteError::Refused {
                    store,
                    operation: "check bucket",
                    path: bucket.bucket.clone(),
                    reason: format!("bucket {:?} does not exist (NoSuchBucket)", bucket.bucket),
                },
                other => other,
            })?;
        Ok(bucket)
    }

    fn key(&self, path: &RemotePath) -> String {
        format!("{}{}", self.prefix, path.as_str())
    }

    /// Runs `send` until it succeeds, fails for good, or runs out of attempts.
    async fn request<T, E, F, Fut>(
        &self,
        operation: &'static str,
        path: &str,
        send: F,
    ) -> Result<T, RemoteError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut backoff = self.retry.initial_backoff;
        let mut attempt = 1;
        loop {
            let result = {
                let _permit = self.in_flight.acquire().await.map_err(|_| {
                    self.unavailable(operation, path, attempt, "store closed".into())
                })?;
                send().await
            };
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            match classify(&error) {
                Failure::Transient(reason) if attempt < self.retry.max_attempts => {
                    tracing::warn!(store = %self.describe, operation, path, attempt, %reason, "object storage request failed; retrying");
                }
                Failure::Transient(reason) => {
                    return Err(self.unavailable(operation, path, attempt, reason))
                }
                Failure::NotFound => {
                    return Err(RemoteError::NotFound {
                        store: self.describe.clone(),
                        path: path.to_string(),
                    })
                }
                Failure::PreconditionFailed => {
                    return Err(RemoteError::Refused {
                        store: self.describe.clone(),
                        operation,
                        path: path.to_string(),
                        reason: "precondition failed".into(),
                    })
                }
                Failure::NotImplemented => {
                    return Err(RemoteError::Unsupported {
                        store: self.describe.clone(),
                        operation,
                    })
                }
                Failure::Refused(reason) => {
                    return Err(RemoteError::Refused {
                        store: self.describe.clone(),
                        operation,
                        path: path.to_string(),
                        reason,
                    })
                }
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(self.retry.max_backoff);
            attempt += 1;
        }
    }

    fn unavailable(
        &self,
        operation: &'static str,
        path: &str,
        attempts: u32,
        reason: String,
    ) -> RemoteError {
        RemoteError::Unavailable {
            store: self.describe.clone(),
            operation,
            path: path.to_string(),
            attempts,
            reason,
        }
    }

    fn bad_object(&self, path: &RemotePath, reason: String) -> RemoteError {
        RemoteError::BadObject {
            store: self.describe.clone(),
            path: path.to_string(),
            reason,
        }
    }

    async fn read_body(
        &self,
        path: &RemotePath,
        body: ByteStream,
        limit: u64,
    ) -> Result<Bytes, RemoteError> {
        let data = body
            .collect()
            .await
            .map_err(|e| self.unavailable("read body", path.as_str(), 1, e.to_string()))?
            .into_bytes();
        if data.len() as u64 > limit {
            return Err(self.bad_object(path, format!("{} bytes, more than {limit}", data.len())));
        }
        Ok(data)
    }

    async fn multipart(
        &self,
        path: &RemotePath,
        src: &Path,
        size: u64,
    ) -> Result<u64, RemoteError> {
        let key = self.key(path);
        let created = self
            .request("create multipart upload", path.as_str(), || {
                self.client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
            })
            .await?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result = self.upload_parts(path, &key, &upload_id, src, size).await;
        if result.is_err() {
            // Parts of an abandoned upload cost storage until aborted; failing to abort
            // leaves them to the bucket's lifecycle rules, so the error is only logged.
            let aborted = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .send()
                .await;
            if let Err(error) = aborted {
                tracing::warn!(store = %self.describe, %path, error = %causes(&error), "aborting a failed multipart upload failed");
            }
        }
        result
    }

    async fn upload_parts(
        &self,
        path: &RemotePath,
        key: &str,
        upload_id: &str,
        src: &Path,
        size: u64,
    ) -> Result<u64, RemoteError> {
        let mut in_flight = tokio::task::JoinSet::new();
        let sent = self
            .send_parts(&mut in_flight, path, key, upload_id, src, size)
            .await;
        // Parts still in flight after an error are cancelled and waited for, so that
        // none is still being sent when the caller aborts the upload.
        in_flight.shutdown().await;
        let mut parts = sent?;
        // CompleteMultipartUpload wants the parts in ascending order.
        parts.sort_by_key(|part| part.part_number());
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        self.request("complete multipart upload", path.as_str(), || {
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .multipart_upload(completed.clone())
                .send()
        })
        .await?;
        Ok(size)
    }

    /// Reads `src` part by part and uploads the parts, [`MULTIPART_CONCURRENT_PARTS`]
    /// at a time (one connection to S3 is far slower than the link); each part is read
    /// whole first, so an upload holds at most that many parts in memory.
    async fn send_parts(
        &self,
        in_flight: &mut tokio::task::JoinSet<Result<CompletedPart, RemoteError>>,
        path: &RemotePath,
        key: &str,
        upload_id: &str,
        src: &Path,
        size: u64,
    ) -> Result<Vec<CompletedPart>, RemoteError> {
        let io = |context| {
            let path = src.to_path_buf();
            move |source| RemoteError::Io {
                context,
                path,
                source,
            }
        };
        let mut file = tokio::fs::File::open(src).await.map_err(io("open"))?;
        let mut parts = Vec::new();
        let mut sent = 0u64;
        let mut number = 1i32;
        while sent < size || !in_flight.is_empty() {
            if sent < size && in_flight.len() < MULTIPART_CONCURRENT_PARTS {
                let len = self.sizes.part_size.min(size - sent) as usize;
                let mut buf = vec![0u8; len];
                file.read_exact(&mut buf).await.map_err(io("read"))?;
                in_flight.spawn(self.clone().upload_part(
                    path.clone(),
                    key.to_string(),
                    upload_id.to_string(),
                    number,
                    Bytes::from(buf),
                ));
                sent += len as u64;
                number += 1;
            } else if let Some(done) = in_flight.join_next().await {
                let part = done.map_err(|failed| {
                    self.unavailable("upload part", path.as_str(), 1, failed.to_string())
                })??;
                parts.push(part);
            }
        }
        Ok(parts)
    }

    async fn upload_part(
        self,
        path: RemotePath,
        key: String,
        upload_id: String,
        number: i32,
        body: Bytes,
    ) -> Result<CompletedPart, RemoteError> {
        let part = self
            .request("upload part", path.as_str(), || {
                self.client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(&key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(ByteStream::from(body.clone()))
                    .send()
            })
            .await?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(part.e_tag().map(str::to_string))
            .build())
    }
}

#[async_trait::async_trait]
impl RemoteStorage for S3Bucket {
    async fn put(&self, path: &RemotePath, data: Bytes) -> Result<(), RemoteError> {
        let key = self.key(path);
        self.request("put", path.as_str(), || {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .body(ByteStream::from(data.clone()))
                .send()
        })
        .await
        .map(drop)
    }

    async fn put_file(&self, path: &RemotePath, src: &Path) -> Result<u64, RemoteError> {
        let size = tokio::fs::metadata(src)
            .await
            .map_err(|source| RemoteError::Io {
                context: "stat",
                path: src.to_path_buf(),
                source,
            })?
            .len();
        if size > self.sizes.multipart_threshold {
            return self.multipart(path, src, size).await;
        }
        let data = tokio::fs::read(src)
            .await
            .map_err(|source| RemoteError::Io {
                context: "read",
                path: src.to_path_buf(),
                source,
            })?;
        self.put(path, Bytes::from(data)).await?;
        Ok(size)
    }

    async fn put_if_absent(&self, path: &RemotePath, data: Bytes) -> Result<bool, RemoteError> {
        let key = self.key(path);
        let result = self
            .request("put if absent", path.as_str(), || {
                self.client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .if_none_match("*")
                    .body(ByteStream::from(data.clone()))
                    .send()
            })
            .await;
        match result {
            Ok(_) => Ok(true),
            // After a retried attempt, 412 may answer our own earlier attempt whose reply
            // was lost. `false` is the safe reading: the caller treats the name as taken
            // (a generation claim moves to the next number), never as its own.
            Err(RemoteError::Refused { reason, .. }) if reason == "precondition failed" => {
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    async fn get(&self, path: &RemotePath) -> Result<Bytes, RemoteError> {
        let key = self.key(path);
        let object = self
            .request("get", path.as_str(), || {
                self.client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
            })
            .await?;
        let len = object.content_length().unwrap_or(0).max(0) as u64;
        if len > MAX_GET_BYTES {
            return Err(self.bad_object(
                path,
                format!("{len} bytes is more than a whole get returns"),
            ));
        }
        self.read_body(path, object.body, MAX_GET_BYTES).await
    }

    async fn get_range(
        &self,
        path: &RemotePath,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, RemoteError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        if len > MAX_GET_BYTES {
            return Err(self.bad_object(path, format!("range of {len} bytes is too large")));
        }
        let end = offset
            .checked_add(len - 1)
            .ok_or_else(|| self.bad_object(path, format!("range {offset}+{len} overflows")))?;
        let key = self.key(path);
        let object = self
            .request("get range", path.as_str(), || {
                self.client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .range(format!("bytes={offset}-{end}"))
                    .send()
            })
            .await
            .map_err(|error| match error {
                RemoteError::Refused { reason, .. } if reason.contains("416") => {
                    self.bad_object(path, format!("range {offset}+{len} is outside the object"))
                }
                other => other,
            })?;
        let data = self.read_body(path, object.body, len).await?;
        if data.len() as u64 != len {
            return Err(self.bad_object(
                path,
                format!(
                    "range {offset}+{len} is outside the object ({} bytes came)",
                    data.len()
                ),
            ));
        }
        Ok(data)
    }

    async fn download_to_file(&self, path: &RemotePath, dest: &Path) -> Result<u64, RemoteError> {
        let key = self.key(path);
        let dir = dest.parent().unwrap_or(Path::new(".")).to_path_buf();
        let tmp = dest.with_file_name(format!(
            ".{}.{}.download.tmp",
            dest.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            std::process::id()
        ));
        let io = |context: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| RemoteError::Io {
                context,
                path: p,
                source,
            }
        };
        let object = self
            .request("download", path.as_str(), || {
                self.client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
            })
            .await?;
        let result = async {
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(io("create", &tmp))?;
            let mut body = object.body.into_async_read();
            let n = tokio::io::copy(&mut body, &mut file)
                .await
                .map_err(io("download into", &tmp))?;
            file.flush().await.map_err(io("write", &tmp))?;
            // The bytes are durable before the name says the file is whole.
            file.sync_all().await.map_err(io("fsync", &tmp))?;
            tokio::fs::rename(&tmp, dest)
                .await
                .map_err(io("rename", dest))?;
            // And the name is durable before the caller relies on it.
            tokio::fs::File::open(&dir)
                .await
                .map_err(io("open directory", &dir))?
                .sync_all()
                .await
                .map_err(io("fsync directory", &dir))?;
            Ok(n)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, RemoteError> {
        let full = format!("{}{prefix}", self.prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .request("list", prefix, || {
                    self.client
                        .list_objects_v2()
                        .bucket(&self.bucket)
                        .prefix(&full)
                        .set_continuation_token(token.clone())
                        .send()
                })
                .await?;
            for object in page.contents() {
                let Some(name) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                // Keys that are not object names were not written by Strata.
                if let Ok(path) = RemotePath::new(name) {
                    let size = object.size().unwrap_or(0).max(0) as u64;
                    out.push(ObjectMeta { path, size });
                }
            }
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    async fn delete(&self, path: &RemotePath) -> Result<(), RemoteError> {
        let key = self.key(path);
        self.request("delete", path.as_str(), || {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
        })
        .await
        .map(drop)
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}
