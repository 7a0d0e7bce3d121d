//! Tiering to object storage against real processes: a compute (`compute_ctl` and stock
//! PostgreSQL 15) committing through a safekeeper, and the `pageserver` binary uploading
//! its layer files and indexes to a real S3-compatible server (`strata-s3-server`,
//! SigV4 checked) or a local directory. Needs the daemons' binaries beside the test
//! (`cargo build --bins`).
//!
//! - Restore, from S3 and from a local directory: a pageserver whose data directory is
//!   deleted comes back from object storage alone, under a new generation, with the
//!   same basebackups at an older and a newer LSN, and goes on ingesting.
//! - Crashes: killed by failpoints after a layer upload and once an index PUT completed
//!   unacknowledged; restarted on the same and on an empty data directory, nothing is
//!   lost, no index references a missing object, and the crashed generation's orphans
//!   are left where they are.
//! - Split brain: two pageservers with different generations attached and ingesting at
//!   once never change each other's objects and serve the same pages; the one left
//!   behind restarts on its data directory and replaces its timeline from the other's
//!   newer index; later attaches pick the newest index at or below their generation.
//! - Eviction: under a disk budget smaller than the layers, reads at several LSNs return
//!   what they returned before, by downloading what was evicted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod remote_support;
mod support;

use std::os::unix::process::ExitStatusExt;

use postgres_wal::Lsn;
use remote_support::{
    assert_same_basebackup, query_basebackup, Cluster, Pageserver, Store, ROWS_QUERY,
};

async fn restore_from_the_store_alone(store: Store) {
    let cluster = Cluster::up();
    let id = cluster.id;
    let data_dir = cluster.data_dir();
    let mut ps = Pageserver::start(&cluster, &data_dir, &store, &[]).await;
    let older = cluster.insert(1, 200);
    cluster.sql("UPDATE t SET v = upper(v) WHERE id % 3 = 0");
    let newer = cluster.insert(201, 400);
    let expected = cluster.sql(ROWS_QUERY);
    let before = ps.wait_remote(newer).await;
    assert!(before.generation >= 1, "{before:?}");
    let at_older = ps.basebackup(older).await;
    let at_newer = ps.basebackup(newer).await;
    ps.assert_no_errors();
    ps.stop();

    std::fs::remove_dir_all(&data_dir).unwrap();
    let mut restored = Pageserver::start(&cluster, &data_dir, &store, &[]).await;
    let info = restored.status().await;
    assert_eq!(
        info.generation,
        before.generation + 1,
        "a new attachment claims the next generation"
    );
    assert!(
        info.last_record_lsn >= newer.0,
        "restored at {}, below {newer}",
        Lsn(info.last_record_lsn)
    );
    assert_same_basebackup(&at_older, &restored.basebackup(older).await, "older LSN");
    let after = restored.basebackup(newer).await;
    assert_same_basebackup(&at_newer, &after, "newer LSN");
    assert!(restored.metric("pageserver_remote_layers_downloaded_total") > 0.0);
    assert_eq!(query_basebackup(&after, ROWS_QUERY), expected);

    // Ingest resumes where the index ends, and is tiered under the new generation.
    let later = cluster.insert(401, 450);
    restored.wait_remote(later).await;
    let objects = store.objects(id).await;
    objects.assert_indexes_complete();
    let (newest, index) = objects.newest_index();
    assert_eq!(newest, info.generation);
    // Layers of the old generation keep their objects; new ones carry the new one.
    assert!(index.layers.iter().any(|(_, g, _)| *g == before.generation));
    assert!(index.layers.iter().any(|(_, g, _)| *g == info.generation));
    restored.assert_no_errors();
}

#[tokio::test(flavor = "multi_thread")]
async fn restores_from_a_directory_store_alone() {
    restore_from_the_store_alone(Store::file()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restores_from_an_s3_store_alone() {
    restore_from_the_store_alone(Store::s3()).await;
}

/// A bucket that does not exist or a wrong key stops the daemon at startup with one
/// line naming the bucket and the endpoint.
#[test]
fn a_wrong_bucket_or_key_is_a_one_line_startup_error() {
    let store = Store::s3();
    let endpoint = store.url.split("endpoint=").nth(1).unwrap().to_owned();
    let good = store.flags();
    let wrong_bucket: Vec<String> = good
        .iter()
        .map(|f| f.replace("s3://strata/", "s3://missing-bucket/"))
        .collect();
    let mut wrong_key = good.clone();
    *wrong_key.last_mut().unwrap() = "not-the-secret".to_owned();
    for (flags, bucket) in [(wrong_bucket, "missing-bucket"), (wrong_key, "strata")] {
        let dir = tempfile::tempdir().unwrap();
        let output = support::Daemon::command()
            .arg("--data-dir")
            .arg(dir.path())
            .args([
                "--listen-grpc",
                "127.0.0.1:0",
                "--listen-http",
                "127.0.0.1:0",
            ])
            .args(&flags)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("pageserver: object storage: ")
                && last.contains(&format!("s3://{bucket}/"))
                && last.contains(&endpoint),
            "{stderr}"
        );
    }
}

/// Starts the pageserver with `failpoint` armed, inserts rows `first..=last` (so layers
/// are frozen and uploaded), and waits for the abort.
fn crash(cluster: &Cluster, store: &Store, failpoint: &str, first: u64, last: u64) {
    let env = [("STRATA_FAILPOINTS", failpoint)];
    let mut daemon = Pageserver::spawn(cluster, &cluster.data_dir(), store, &[], &env);
    cluster.insert(first, last);
    let status = daemon.wait_exit();
    assert_eq!(
        status.signal(),
        Some(6),
        "{failpoint}: expected an abort, got {status}\n{}",
        daemon.log()
    );
    assert!(daemon.log().contains("failpoint"), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn crashes_around_uploads_lose_nothing() {
    let cluster = Cluster::up();
    let id = cluster.id;
    let store = Store::s3();
    let data_dir = cluster.data_dir();
    let mut ps = Pageserver::start(&cluster, &data_dir, &store, &[]).await;
    let lsn = cluster.insert(1, 100);
    let first = ps.wait_remote(lsn).await.generation;
    ps.stop();

    // 1. Killed right after a layer upload, before the index that would list it.
    crash(&cluster, &store, "after-layer-upload", 101, 300);
    let crashed = first + 1;
    let objects = store.objects(id).await;
    objects.assert_indexes_complete();
    let orphans = objects.orphans();
    eprintln!(
        "after the first crash: indexes {:?}, {} layer objects, orphans {orphans:?}",
        objects.indexes.keys(),
        objects.layers.len()
    );
    assert!(!orphans.is_empty(), "{objects:?}");
    assert!(orphans.iter().all(|(_, g)| *g == crashed), "{orphans:?}");

    // Restarted on the same data directory: everything is uploaded again under the
    // next generation; the crashed generation's orphans are left alone.
    let mut ps = Pageserver::start(&cluster, &data_dir, &store, &[]).await;
    let lsn = cluster.flush_lsn();
    let info = ps.wait_remote(lsn).await;
    assert_eq!(info.generation, crashed + 1);
    let expected = cluster.sql(ROWS_QUERY);
    assert_eq!(
        query_basebackup(&ps.basebackup(lsn).await, ROWS_QUERY),
        expected
    );
    let objects = store.objects(id).await;
    objects.assert_indexes_complete();
    assert_eq!(objects.orphans(), orphans);
    ps.assert_no_errors();
    ps.stop();

    // 2. Killed once the store completed an index PUT the pageserver never acted on
    // (the second: the first index of an attachment is written at start).
    crash(&cluster, &store, "during-index-upload@2", 301, 500);
    let crashed = info.generation + 1;
    let objects = store.objects(id).await;
    eprintln!(
        "after the second crash: indexes {:?}, {} layer objects",
        objects.indexes.keys(),
        objects.layers.len()
    );
    objects.assert_indexes_complete();
    assert!(objects.indexes.contains_key(&crashed), "{objects:?}");

    // Restarted on the same data directory, then on an empty one.
    let mut ps = Pageserver::start(&cluster, &data_dir, &store, &[]).await;
    let lsn = cluster.flush_lsn();
    ps.wait_remote(lsn).await;
    let expected = cluster.sql(ROWS_QUERY);
    let tar = ps.basebackup(lsn).await;
    assert_eq!(query_basebackup(&tar, ROWS_QUERY), expected);
    ps.assert_no_errors();
    ps.stop();
    let mut restored = Pageserver::start(&cluster, &cluster.scratch("empty"), &store, &[]).await;
    assert_same_basebackup(&tar, &restored.basebackup(lsn).await, "restored");
    let objects = store.objects(id).await;
    objects.assert_indexes_complete();
    assert_eq!(objects.orphans(), orphans);
    restored.assert_no_errors();
}

#[tokio::test(flavor = "multi_thread")]
async fn split_brain_generations_never_overwrite_each_other() {
    let cluster = Cluster::up();
    let id = cluster.id;
    let store = Store::s3();
    let mut a = Pageserver::start(
        &cluster,
        &cluster.data_dir(),
        &store,
        &["--generation", "10"],
    )
    .await;
    let lsn_a = cluster.insert(1, 200);
    a.wait_remote(lsn_a).await;
    // B attaches the same timeline under a later generation from A's index, while A
    // goes on; both ingest and upload.
    let mut b = Pageserver::start(
        &cluster,
        &cluster.scratch("b"),
        &store,
        &["--generation", "30"],
    )
    .await;
    assert_eq!(b.status().await.generation, 30);
    let lsn_b = cluster.insert(201, 400);
    a.wait_remote(lsn_b).await;
    b.wait_remote(lsn_b).await;
    let snapshot = store.layer_bytes(id).await;
    let lsn_c = cluster.insert(401, 600);
    a.wait_remote(lsn_c).await;
    b.wait_remote(lsn_c).await;

    let now = store.layer_bytes(id).await;
    for (key, bytes) in &snapshot {
        assert!(now.get(key) == Some(bytes), "{key:?} changed or vanished");
    }
    assert!(
        now.keys().all(|(_, g)| *g == 10 || *g == 30),
        "{:?}",
        now.keys()
    );
    for generation in [10, 30] {
        assert!(
            now.keys()
                .any(|k| k.1 == generation && !snapshot.contains_key(k)),
            "generation {generation} uploaded nothing after the snapshot"
        );
    }
    let objects = store.objects(id).await;
    objects.assert_indexes_complete();
    assert_eq!(
        objects.indexes.keys().copied().collect::<Vec<_>>(),
        [10, 30]
    );
    assert!(objects.indexes[&10].layers.iter().all(|(_, g, _)| *g == 10));
    let b_layers = &objects.indexes[&30].layers;
    assert!(
        b_layers.iter().any(|(_, g, _)| *g == 10),
        "B inherits A's layers"
    );
    assert!(b_layers.iter().any(|(_, g, _)| *g == 30));

    let tar_a = a.basebackup(lsn_c).await;
    assert_same_basebackup(&tar_a, &b.basebackup(lsn_c).await, "A and B");
    let tar_a_old = a.basebackup(lsn_a).await;
    a.assert_no_errors();
    a.stop();
    let lsn_d = cluster.insert(601, 700);
    b.wait_remote(lsn_d).await;
    let tar_b = b.basebackup(lsn_d).await;
    b.assert_no_errors();
    b.stop();

    // A comes back on its data directory under a later generation: its timeline is
    // behind index 30, so it is replaced by a restore from that index.
    let flags = ["--generation", "50"];
    let mut a = Pageserver::start(&cluster, &cluster.data_dir(), &store, &flags).await;
    let log = a.daemon.log();
    assert!(
        log.contains("discarding the local copy") && log.contains("\"index_generation\":30"),
        "{log}"
    );
    assert_same_basebackup(&tar_b, &a.basebackup(lsn_d).await, "A after its restart");
    a.assert_no_errors();
    a.stop();

    // Later attaches read the newest index at or below their generation.
    for (generation, index_generation, lsn, expected) in
        [(20, 10, lsn_a, &tar_a_old), (40, 30, lsn_c, &tar_a)]
    {
        let dir = cluster.scratch(&format!("attach-{generation}"));
        let flags = ["--generation", &generation.to_string()];
        let mut ps = Pageserver::start(&cluster, &dir, &store, &flags).await;
        let log = ps.daemon.log();
        assert!(
            log.contains("timeline restored from object storage")
                && log.contains(&format!("\"index_generation\":{index_generation}")),
            "generation {generation} should restore from index {index_generation}:\n{log}"
        );
        let what = format!("attached with generation {generation}");
        assert_same_basebackup(expected, &ps.basebackup(lsn).await, &what);
        ps.assert_no_errors();
        ps.stop();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn evicted_layers_come_back_when_read() {
    let cluster = Cluster::up();
    let store = Store::s3();
    let data_dir = cluster.data_dir();
    let mut ps = Pageserver::start(&cluster, &data_dir, &store, &[]).await;
    let mut lsns = vec![cluster.insert(1, 150)];
    cluster.sql("UPDATE t SET v = upper(v) WHERE id % 2 = 0");
    lsns.push(cluster.insert(151, 300));
    cluster.sql("DELETE FROM t WHERE id % 5 = 0");
    lsns.push(cluster.insert(301, 450));
    let info = ps.wait_remote(lsns[2]).await;
    let mut before = Vec::new();
    for lsn in &lsns {
        before.push(ps.basebackup(*lsn).await);
    }
    ps.stop();

    let budget = info.remote_layer_bytes / 4;
    let flags = ["--disk-budget-bytes", &budget.to_string()];
    let mut ps = Pageserver::start(&cluster, &data_dir, &store, &flags).await;
    ps.wait("resident layers under the budget", |i| {
        i.resident_layer_bytes <= budget
    })
    .await;
    assert!(ps.metric("pageserver_remote_layers_evicted_total") > 0.0);
    for (lsn, expected) in lsns.iter().zip(&before) {
        let what = format!("at {lsn} after eviction");
        assert_same_basebackup(expected, &ps.basebackup(*lsn).await, &what);
    }
    assert!(ps.metric("pageserver_remote_layers_downloaded_total") > 0.0);
    let info = ps
        .wait("resident layers under the budget after the reads", |i| {
            i.resident_layer_bytes <= budget
        })
        .await;
    assert!(info.resident_layers < info.remote_layers, "{info:?}");
    ps.assert_no_errors();
}
