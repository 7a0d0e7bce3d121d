//! Both backends behind the one trait, the same checks for each: a local directory,
//! and S3 against a real S3-compatible server (strata-s3-server on loopback, SigV4
//! checked).
//! Round trips, overwrite, ranged reads, listing past one page of results, multipart
//! uploads, atomic downloads, conditional creation, and the errors an operator must
//! be able to read: a wrong key or a missing bucket names the bucket and the endpoint,
//! a stopped server is `Unavailable` after bounded retries and works again when back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use remote_storage::config::S3Config;
use remote_storage::layout::MAX_PATH_LEN;
use remote_storage::{
    LocalFs, RemoteError, RemotePath, RemoteStorage, RetryPolicy, S3Bucket, UploadSizes,
};
use s3_harness::S3Server;

fn p(s: &str) -> RemotePath {
    RemotePath::new(s).unwrap()
}

/// Small parts so that a multipart upload happens with a few MiB (S3's minimum part is
/// 5 MiB except the last).
const TEST_SIZES: UploadSizes = UploadSizes {
    multipart_threshold: 6 << 20,
    part_size: 5 << 20,
};

const FAST_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    initial_backoff: Duration::from_millis(20),
    max_backoff: Duration::from_millis(100),
};

async fn s3(config: S3Config) -> Result<S3Bucket, RemoteError> {
    S3Bucket::connect(&config, FAST_RETRY, TEST_SIZES).await
}

/// Everything the pageserver and safekeepers rely on, against `store`.
async fn exercise(store: Arc<dyn RemoteStorage>) {
    let dir = tempfile::tempdir().unwrap();
    store
        .put(&p("a/b/one"), Bytes::from_static(b"hello"))
        .await
        .unwrap();
    store
        .put(&p("a/b/one"), Bytes::from_static(b"world!"))
        .await
        .unwrap();
    assert_eq!(store.get(&p("a/b/one")).await.unwrap(), "world!");
    assert_eq!(store.get_range(&p("a/b/one"), 1, 3).await.unwrap(), "orl");
    assert!(matches!(
        store.get_range(&p("a/b/one"), 4, 10).await,
        Err(RemoteError::BadObject { .. })
    ));
    let missing = store.get(&p("a/none")).await.unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    assert!(missing.to_string().contains(&store.describe()), "{missing}");

    // More objects than one S3 list page (1,000) returns.
    let names: Vec<String> = (0..1100).map(|i| format!("many/{i:05}")).collect();
    let mut writes = tokio::task::JoinSet::new();
    for chunk in names.chunks(100) {
        let store = store.clone();
        let chunk = chunk.to_vec();
        writes.spawn(async move {
            for name in chunk {
                store
                    .put(&p(&name), Bytes::from_static(b"x"))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = writes.join_next().await {
        done.unwrap();
    }
    let listed: Vec<String> = store
        .list("many/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.path.to_string())
        .collect();
    assert_eq!(listed, names);
    let prefixed = store.list("a/b/o").await.unwrap();
    assert_eq!(prefixed.len(), 1);
    assert_eq!(
        (prefixed[0].path.as_str(), prefixed[0].size),
        ("a/b/one", 6)
    );

    // A file above the multipart threshold, and one below, byte for byte.
    for (name, len) in [("big", (13 << 20) + 12345), ("small", 4096)] {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let src = dir.path().join(name);
        std::fs::write(&src, &data).unwrap();
        assert_eq!(store.put_file(&p(name), &src).await.unwrap(), len as u64);
        let dest = dir.path().join(format!("{name}.back"));
        assert_eq!(
            store.download_to_file(&p(name), &dest).await.unwrap(),
            len as u64
        );
        assert_eq!(std::fs::read(&dest).unwrap(), data, "{name}");
        let tail = store
            .get_range(&p(name), len as u64 - 100, 100)
            .await
            .unwrap();
        assert_eq!(&tail[..], &data[len - 100..]);
    }
    // A failed download leaves no file behind.
    let dest = dir.path().join("never");
    assert!(store
        .download_to_file(&p("nothing/here"), &dest)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(!dest.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    store.delete(&p("a/b/one")).await.unwrap();
    store.delete(&p("a/b/one")).await.unwrap();
    assert!(store.get(&p("a/b/one")).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn local_directory_backend() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalFs::open(&dir.path().join("store")).unwrap());
    exercise(store.clone()).await;
    assert!(store
        .put_if_absent(&p("claim"), Bytes::from_static(b"1"))
        .await
        .unwrap());
    assert!(!store
        .put_if_absent(&p("claim"), Bytes::from_static(b"2"))
        .await
        .unwrap());
    assert_eq!(store.get(&p("claim")).await.unwrap(), "1");
}

#[tokio::test]
async fn s3_backend_against_a_real_server() {
    let server = S3Server::start().unwrap();
    server.create_bucket("strata-test").unwrap();
    let store = Arc::new(s3(server.config("strata-test", "run1")).await.unwrap());
    exercise(store.clone()).await;
    // The prefix is part of every key: a second prefix in the same bucket sees nothing.
    let other = s3(server.config("strata-test", "run2")).await.unwrap();
    assert!(other.list("").await.unwrap().is_empty());

    // Conditional creation (If-None-Match: *, which AWS and MinIO honour): of eight
    // concurrent creates of one name exactly one wins, and its object stays.
    let attempts: Vec<_> = (0..8u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let won = store
                    .put_if_absent(&p("race"), Bytes::from(vec![b'0' + i]))
                    .await
                    .unwrap();
                won.then_some(i)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for attempt in attempts {
        winners.extend(attempt.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(
        store.get(&p("race")).await.unwrap(),
        Bytes::from(vec![b'0' + winners[0]])
    );

    // Keys as long as Strata's names may be (S3 takes 1,024 bytes, prefix included).
    let long = p(&format!("long/{}", "k".repeat(MAX_PATH_LEN - 5)));
    store.put(&long, Bytes::from_static(b"far")).await.unwrap();
    assert_eq!(store.get(&long).await.unwrap(), "far");
    assert!(store
        .list("long/")
        .await
        .unwrap()
        .iter()
        .any(|o| o.path == long));
}

#[tokio::test]
async fn s3_errors_name_the_bucket_and_endpoint() {
    let mut server = S3Server::start().unwrap();
    server.create_bucket("strata-test").unwrap();
    let endpoint = server.endpoint();

    let mut wrong_key = server.config("strata-test", "");
    wrong_key.secret_access_key = Some("not-the-secret".into());
    let error = s3(wrong_key).await.unwrap_err().to_string();
    assert!(
        error.contains("s3://strata-test/") && error.contains(&endpoint),
        "{error}"
    );
    assert!(error.contains("HTTP 403 SignatureDoesNotMatch"), "{error}");

    let mut unknown_key = server.config("strata-test", "");
    unknown_key.access_key_id = Some("nobody".into());
    let error = s3(unknown_key).await.unwrap_err();
    assert!(matches!(error, RemoteError::Refused { .. }), "{error}");
    let error = error.to_string();
    assert!(
        error.contains("s3://strata-test/") && error.contains(&endpoint),
        "{error}"
    );
    assert!(error.contains("HTTP 403"), "{error}");

    let error = s3(server.config("no-such-bucket", ""))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("s3://no-such-bucket/")
            && error.contains(&endpoint)
            && error.contains("NoSuchBucket"),
        "{error}"
    );

    // A stopped server: bounded retries, then Unavailable; back again, it works.
    let store = s3(server.config("strata-test", "")).await.unwrap();
    server.stop();
    let error = store
        .put(&p("x"), Bytes::from_static(b"1"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, RemoteError::Unavailable { attempts: 3, .. }),
        "{error}"
    );
    assert!(error.to_string().contains(&endpoint), "{error}");
    // Connecting to an endpoint nobody answers on is the same error, at startup.
    let error = s3(server.config("strata-test", "")).await.unwrap_err();
    assert!(
        matches!(error, RemoteError::Unavailable { attempts: 3, .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("s3://strata-test/") && error.to_string().contains(&endpoint),
        "{error}"
    );
    server.restart().unwrap();
    store.put(&p("x"), Bytes::from_static(b"1")).await.unwrap();
    assert_eq!(store.get(&p("x")).await.unwrap(), "1");
}

mod parsers {
    use proptest::prelude::*;
    use remote_storage::{RemotePath, RemoteStorageConfig};

    proptest! {
        /// Untrusted strings (config files, flags, listings) never panic the parsers.
        #[test]
        fn urls_and_names_never_panic(s in ".{0,200}") {
            let _ = RemoteStorageConfig::parse_url(&s);
            let _ = RemoteStorageConfig::parse_url(&format!("s3://{s}"));
            let _ = RemotePath::new(&s);
            let _ = remote_storage::layout::parse_layer_object(&s);
            let _ = remote_storage::layout::parse_index_name(&s);
        }
    }
}
