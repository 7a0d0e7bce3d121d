//! Benchmark: upload throughput of `RemoteStorage` against a plain `aws-sdk-s3` client
//! doing the same uploads, in one run, to the same real S3-compatible server (strata-s3-server on
//! loopback, SigV4 checked). Run it with `scripts/bench-object-storage.sh` (release).
//!
//! Two workloads, each first through Strata's S3 backend (`connect`, as daemons open
//! it: retries, timeouts, the in-flight limit, multipart above 16 MiB) and then
//! through a bare SDK `put_object` loop (SDK defaults, one PUT per object):
//!
//! 1. **objects**: N objects of M MiB from memory, one at a time (`put` against
//!    `put_object`), like index and WAL segment uploads.
//! 2. **files**: F files of G MiB from disk, one at a time, like layer files:
//!    `put_file` (multipart in 16 MiB parts, 4 in flight) against a single
//!    `put_object` streaming the file, and against the same multipart upload by hand
//!    with the SDK (16 MiB parts, one after another). The first ratio is what
//!    multipart costs or gains on this server, the second Strata's overhead over it.
//!
//! Each round prints MiB/s of both sides and their ratio (Strata / SDK); the best
//! round of each is summarised. Objects are deleted between runs so that disk use stays at one
//! workload's size. Timings are never asserted; it fails only when an upload fails.
//!
//! Environment: `STRATA_BENCH_OBJECTS` [64], `STRATA_BENCH_OBJECT_MIB` [4],
//! `STRATA_BENCH_FILES` [2], `STRATA_BENCH_FILE_MIB` [64], `STRATA_BENCH_ROUNDS` [3].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use remote_storage::config::S3Config;
use remote_storage::limits::MULTIPART_PART_SIZE;
use remote_storage::{RemotePath, RemoteStorage, RemoteStorageConfig};
use s3_harness::S3Server;

const MIB: f64 = (1 << 20) as f64;
const BUCKET: &str = "strata-bench";

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v}")),
        Err(_) => Ok(default),
    }
}

struct Workload {
    objects: usize,
    object_bytes: usize,
    files: Vec<PathBuf>,
    file_bytes: usize,
}

impl Workload {
    fn object_total(&self) -> usize {
        self.objects * self.object_bytes
    }

    fn file_total(&self) -> usize {
        self.files.len() * self.file_bytes
    }
}

/// Bytes that do not compress or deduplicate, cheaply: a xorshift stream.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn plain_sdk_client(server: &S3Server, config: &S3Config) -> aws_sdk_s3::Client {
    let credentials = Credentials::new(
        server.access_key(),
        server.secret_key(),
        None,
        None,
        "bench",
    );
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(config.region.clone()))
        .credentials_provider(credentials)
        .endpoint_url(server.endpoint())
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

fn rate(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 / MIB / seconds
}

async fn strata_objects(
    store: &Arc<dyn RemoteStorage>,
    w: &Workload,
    data: &Bytes,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    for i in 0..w.objects {
        store
            .put(&RemotePath::new(&format!("objects/{i:05}"))?, data.clone())
            .await?;
    }
    Ok(start.elapsed().as_secs_f64())
}

async fn sdk_objects(
    client: &aws_sdk_s3::Client,
    prefix: &str,
    w: &Workload,
    data: &Bytes,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    for i in 0..w.objects {
        client
            .put_object()
            .bucket(BUCKET)
            .key(format!("{prefix}objects/{i:05}"))
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .context("put_object")?;
    }
    Ok(start.elapsed().as_secs_f64())
}

async fn strata_files(store: &Arc<dyn RemoteStorage>, w: &Workload) -> anyhow::Result<f64> {
    let start = Instant::now();
    for (i, file) in w.files.iter().enumerate() {
        store
            .put_file(&RemotePath::new(&format!("files/{i:05}"))?, file)
            .await?;
    }
    Ok(start.elapsed().as_secs_f64())
}

async fn sdk_files(client: &aws_sdk_s3::Client, prefix: &str, w: &Workload) -> anyhow::Result<f64> {
    let start = Instant::now();
    for (i, file) in w.files.iter().enumerate() {
        client
            .put_object()
            .bucket(BUCKET)
            .key(format!("{prefix}files/{i:05}"))
            .body(ByteStream::from_path(file).await.context("open file")?)
            .send()
            .await
            .context("put_object")?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// What `put_file` does, by hand with the SDK: the same part size, parts one after
/// another, each read into memory first.
async fn sdk_multipart_files(
    client: &aws_sdk_s3::Client,
    prefix: &str,
    w: &Workload,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    for (i, file) in w.files.iter().enumerate() {
        let key = format!("{prefix}files/{i:05}");
        let created = client
            .create_multipart_upload()
            .bucket(BUCKET)
            .key(&key)
            .send()
            .await
            .context("create_multipart_upload")?;
        let upload_id = created.upload_id().context("no upload id")?;
        let data = tokio::fs::read(file).await?;
        let mut parts = Vec::new();
        for (n, chunk) in data.chunks(MULTIPART_PART_SIZE as usize).enumerate() {
            let number = n as i32 + 1;
            let part = client
                .upload_part()
                .bucket(BUCKET)
                .key(&key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(chunk.to_vec()))
                .send()
                .await
                .context("upload_part")?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            );
        }
        client
            .complete_multipart_upload()
            .bucket(BUCKET)
            .key(&key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .context("complete_multipart_upload")?;
    }
    Ok(start.elapsed().as_secs_f64())
}

async fn clear(store: &Arc<dyn RemoteStorage>) -> anyhow::Result<()> {
    for object in store.list("").await? {
        store.delete(&object.path).await?;
    }
    Ok(())
}

#[derive(Default)]
struct Best {
    strata: f64,
    sdk: f64,
}

impl Best {
    fn record(&mut self, label: &str, bytes: usize, strata_s: f64, sdk_s: f64) {
        let (strata, sdk) = (rate(bytes, strata_s), rate(bytes, sdk_s));
        println!(
            "  {label:<24} RemoteStorage {strata:8.1} MiB/s   aws-sdk-s3 {sdk:8.1} MiB/s   ratio {:.2}",
            strata / sdk
        );
        self.strata = self.strata.max(strata);
        self.sdk = self.sdk.max(sdk);
    }

    fn summary(&self, label: &str) {
        println!(
            "  {label:<24} RemoteStorage {:8.1} MiB/s   aws-sdk-s3 {:8.1} MiB/s   ratio {:.2}",
            self.strata,
            self.sdk,
            self.strata / self.sdk
        );
    }
}

async fn run() -> anyhow::Result<()> {
    let rounds = env_usize("STRATA_BENCH_ROUNDS", 3)?.max(1);
    let scratch = tempfile::tempdir()?;
    let file_mib = env_usize("STRATA_BENCH_FILE_MIB", 64)?;
    let mut w = Workload {
        objects: env_usize("STRATA_BENCH_OBJECTS", 64)?,
        object_bytes: env_usize("STRATA_BENCH_OBJECT_MIB", 4)? << 20,
        files: Vec::new(),
        file_bytes: file_mib << 20,
    };
    for i in 0..env_usize("STRATA_BENCH_FILES", 2)? {
        let path = scratch.path().join(format!("file-{i}"));
        std::fs::write(&path, pseudo_random(w.file_bytes, 0x5eed + i as u64))?;
        w.files.push(path);
    }
    let data = Bytes::from(pseudo_random(w.object_bytes, 0xdada));

    let server = S3Server::start().map_err(anyhow::Error::msg)?;
    server.create_bucket(BUCKET).map_err(anyhow::Error::msg)?;
    let strata_config = server.config(BUCKET, "strata");
    let store = remote_storage::connect(&RemoteStorageConfig::S3(strata_config.clone())).await?;
    // The SDK run writes under its own prefix through a store view used only to clear it.
    let sdk_view =
        remote_storage::connect(&RemoteStorageConfig::S3(server.config(BUCKET, "sdk"))).await?;
    let client = plain_sdk_client(&server, &strata_config);

    println!(
        "object storage upload: strata-s3-server on loopback ({}), {} objects x {} MiB from memory, \
         {} files x {} MiB from disk, {rounds} rounds, one upload at a time",
        server.endpoint(),
        w.objects,
        w.object_bytes >> 20,
        w.files.len(),
        file_mib,
    );
    let (mut objects, mut files, mut parts) = (Best::default(), Best::default(), Best::default());
    for round in 1..=rounds {
        println!("round {round}");
        if w.objects > 0 {
            let strata_s = strata_objects(&store, &w, &data).await?;
            clear(&store).await?;
            let sdk_s = sdk_objects(&client, "sdk/", &w, &data).await?;
            clear(&sdk_view).await?;
            objects.record("objects", w.object_total(), strata_s, sdk_s);
        }
        if !w.files.is_empty() {
            let strata_s = strata_files(&store, &w).await?;
            clear(&store).await?;
            let sdk_s = sdk_files(&client, "sdk/", &w).await?;
            clear(&sdk_view).await?;
            files.record("files (SDK: one PUT)", w.file_total(), strata_s, sdk_s);
            let sdk_parts_s = sdk_multipart_files(&client, "sdk/", &w).await?;
            clear(&sdk_view).await?;
            parts.record(
                "files (SDK: multipart)",
                w.file_total(),
                strata_s,
                sdk_parts_s,
            );
        }
    }
    println!("best of {rounds}");
    if w.objects > 0 {
        objects.summary("objects");
    }
    if !w.files.is_empty() {
        files.summary("files (SDK: one PUT)");
        parts.summary("files (SDK: multipart)");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
