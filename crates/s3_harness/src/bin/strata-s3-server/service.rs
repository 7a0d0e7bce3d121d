//! The S3 operations Strata's object storage client uses, over [`Store`]. The
//! protocol (HTTP, XML, SigV4 signature checks, `aws-chunked` bodies) is the `s3s`
//! crate's; this maps its requests onto the store.

use futures::StreamExt;
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3Request, S3Response, S3Result, S3};

use crate::store::{Incoming, Store, StoreError};

/// S3's limit on one PUT.
const MAX_PUT_BYTES: u64 = 5 << 30;
/// ListObjectsV2's default and largest page.
const MAX_LIST_KEYS: usize = 1000;

#[derive(Debug)]
pub struct Service {
    store: Store,
}

impl Service {
    pub fn new(store: Store) -> Service {
        Service { store }
    }
}

fn to_s3(error: StoreError) -> S3Error {
    match error {
        StoreError::NoSuchBucket => s3_error!(NoSuchBucket),
        StoreError::NoSuchKey => s3_error!(NoSuchKey),
        StoreError::NoSuchUpload => s3_error!(NoSuchUpload),
        StoreError::Exists => s3_error!(PreconditionFailed, "the object exists"),
        StoreError::Invalid(reason) => s3_error!(InvalidRequest, "{reason}"),
        StoreError::Io(e) => s3_error!(e, InternalError),
    }
}

/// Writes a request body into a new temporary file of `bucket`.
async fn receive(store: &Store, bucket: &str, body: Option<StreamingBlob>) -> S3Result<Incoming> {
    let mut body = body.ok_or_else(|| s3_error!(IncompleteBody))?;
    let mut incoming = store.incoming(bucket).map_err(to_s3)?;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| s3_error!(IncompleteBody, "reading the body: {e}"))?;
        if incoming.len() + chunk.len() as u64 > MAX_PUT_BYTES {
            return Err(s3_error!(EntityTooLarge));
        }
        incoming.write(&chunk).map_err(to_s3)?;
    }
    Ok(incoming)
}

/// `If-None-Match: *` asks for a create; any other condition is not supported here.
fn if_absent(condition: Option<&IfNoneMatch>) -> S3Result<bool> {
    match condition {
        None => Ok(false),
        Some(c) if c.is_any() => Ok(true),
        Some(_) => Err(s3_error!(
            NotImplemented,
            "only If-None-Match: * is supported"
        )),
    }
}

#[async_trait::async_trait]
impl S3 for Service {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.store
            .create_bucket(&req.input.bucket)
            .map_err(|_| s3_error!(InvalidBucketName))?;
        Ok(S3Response::new(CreateBucketOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let create = if_absent(input.if_none_match.as_ref())?;
        let data = receive(&self.store, &input.bucket, input.body).await?;
        let etag = self
            .store
            .put(&input.bucket, &input.key, data, create)
            .map_err(to_s3)?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let requested = input.range;
        let (info, range, data) = self
            .store
            .get(&input.bucket, &input.key, |size| match requested {
                None => Ok(0..size),
                Some(r) => r.check(size).map_err(|_| {
                    StoreError::Invalid(format!("range not satisfiable for {size} bytes"))
                }),
            })
            .map_err(|e| match e {
                StoreError::Invalid(reason) if reason.starts_with("range") => {
                    s3_error!(InvalidRange, "{reason}")
                }
                other => to_s3(other),
            })?;
        let content_range = requested.map(|_| {
            format!(
                "bytes {}-{}/{}",
                range.start,
                range.end.saturating_sub(1),
                info.size
            )
        });
        let length = i64::try_from(data.len()).map_err(|e| s3_error!(e, InternalError))?;
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::from(s3s::Body::from(data))),
            content_length: Some(length),
            content_range,
            e_tag: Some(ETag::Strong(info.etag)),
            last_modified: Some(Timestamp::from(info.modified)),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.store
            .delete(&req.input.bucket, &req.input.key)
            .map_err(to_s3)?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        if input.delimiter.is_some() {
            return Err(s3_error!(NotImplemented, "listing with a delimiter"));
        }
        let max = input.max_keys.map_or(MAX_LIST_KEYS, |m| {
            usize::try_from(m).unwrap_or(0).min(MAX_LIST_KEYS)
        });
        let prefix = input.prefix.clone().unwrap_or_default();
        // The continuation token is the last key of the previous page.
        let after = input
            .continuation_token
            .as_deref()
            .or(input.start_after.as_deref());
        let (objects, truncated) = self
            .store
            .list(&input.bucket, &prefix, after, max)
            .map_err(to_s3)?;
        let next = truncated
            .then(|| objects.last().map(|o| o.key.clone()))
            .flatten();
        let count = i32::try_from(objects.len()).unwrap_or(i32::MAX);
        let contents = objects
            .into_iter()
            .map(|o| Object {
                key: Some(o.key),
                size: Some(i64::try_from(o.size).unwrap_or(i64::MAX)),
                e_tag: Some(ETag::Strong(o.etag)),
                last_modified: Some(Timestamp::from(o.modified)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix,
            max_keys: input.max_keys,
            key_count: Some(count),
            continuation_token: input.continuation_token,
            start_after: input.start_after,
            is_truncated: Some(next.is_some()),
            next_continuation_token: next,
            contents: Some(contents),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let id = self
            .store
            .create_upload(&input.bucket, &input.key)
            .map_err(to_s3)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        let data = receive(&self.store, &input.bucket, input.body).await?;
        let etag = self
            .store
            .put_part(
                &input.bucket,
                &input.key,
                &input.upload_id,
                input.part_number,
                data,
            )
            .map_err(to_s3)?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let create = if_absent(input.if_none_match.as_ref())?;
        let parts = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| match (p.part_number, p.e_tag) {
                (Some(n), Some(etag)) => Ok((n, etag.value().to_string())),
                _ => Err(s3_error!(InvalidPart, "a part without number or ETag")),
            })
            .collect::<S3Result<Vec<_>>>()?;
        let etag = self
            .store
            .complete_upload(&input.bucket, &input.key, &input.upload_id, &parts, create)
            .map_err(to_s3)?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.store
            .abort_upload(&input.bucket, &input.key, &input.upload_id)
            .map_err(to_s3)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }
}
