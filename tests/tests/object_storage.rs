//! A pageserver rebuilt from object storage alone, on a real `strata up` cluster, once
//! with the default local-directory store and once with a real S3-compatible server
//! (`strata-s3-server`, SigV4 checked): after the first phase of the pageserver
//! workload, once `remote_consistent_lsn` has passed its LSN X, the cluster is
//! stopped, the pageserver's data directory deleted, and the cluster started again: a
//! stock PostgreSQL from `strata basebackup --lsn X` dumps like the compute did at X,
//! and a page at an older LSN is served exactly as before. With S3, the server is down
//! while the workload commits (the safekeepers keep the WAL, the pageserver's uploads
//! retry) and the restore still finds everything once it is back. Against S3,
//! `strata up` with wrong credentials fails naming the bucket and the endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cluster_support::{
    check_sequences, first_difference, pg_dumpall, split_sequences, sql, strata_bin, TestCluster,
    POLL,
};
use pg_harness::{PgBin, PgConfig, PgServer};
use postgres_wal::Lsn;
use s3_harness::S3Server;

/// Small layers, frozen soon after writes stop, so that object storage catches up with
/// a small workload quickly.
const PAGESERVER_ENV: &[(&str, &str)] = &[
    ("STRATA_PAGESERVER_CHECKPOINT_DISTANCE", "4194304"),
    ("STRATA_PAGESERVER_CHECKPOINT_TIMEOUT_MS", "500"),
    ("STRATA_PAGESERVER_IMAGE_LAYER_AFTER_DELTAS", "10"),
];

/// Longest wait for object storage to hold the workload (a debug build, two cores).
const UPLOAD_WAIT: Duration = Duration::from_secs(600);

/// Settings of a PostgreSQL started from a basebackup (the workload leaves a prepared
/// transaction).
const COPY_SETTINGS: &[(&str, &str)] = &[
    ("max_prepared_transactions", "10"),
    ("max_wal_senders", "10"),
    ("max_connections", "100"),
    ("autovacuum", "off"),
];

fn strata(cluster: &TestCluster, args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(strata_bin())
        .args(args)
        .arg("--dir")
        .arg(&cluster.dir)
        .envs(PAGESERVER_ENV.iter().copied())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .output()
        .expect("run strata")
}

fn up(cluster: &TestCluster, args: &[&str], env: &[(String, String)]) -> String {
    let mut all = vec!["up"];
    all.extend_from_slice(args);
    let out = strata(cluster, &all, env);
    assert!(
        out.status.success(),
        "strata up failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.logs_tail()
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned()
}

fn remote_consistent_lsn(cluster: &TestCluster) -> Option<Lsn> {
    cluster.status()["pageserver"]["remote_consistent_lsn"]
        .as_str()
        .map(|s| s.parse().unwrap())
}

fn wait_remote_consistent(cluster: &TestCluster, lsn: Lsn) {
    let deadline = Instant::now() + UPLOAD_WAIT;
    loop {
        let remote = remote_consistent_lsn(cluster);
        if remote.is_some_and(|r| r >= lsn) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "remote_consistent_lsn {remote:?} did not reach {lsn}\n{}",
            cluster.logs_tail()
        );
        std::thread::sleep(POLL);
    }
}

fn first_phase() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/pageserver_workload.sql");
    let text = std::fs::read_to_string(path).unwrap();
    text.split("-- @phase\n").next().unwrap().to_owned()
}

fn getpage(cluster: &TestCluster, lsn: Lsn, rel: &str) -> Vec<u8> {
    let out = cluster.strata(&[
        "getpage",
        "--lsn",
        &lsn.to_string(),
        "--rel",
        rel,
        "--blk",
        "0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 8192);
    out.stdout
}

/// With `outage`, that server is stopped for the workload and started again after it.
fn restore_from_object_storage_alone(
    up_args: &[&str],
    env: &[(String, String)],
    mut outage: Option<&mut S3Server>,
) {
    let bin = PgBin::locate().unwrap();
    let cluster = TestCluster::new();
    let connstr = up(&cluster, up_args, env);

    // A page at an old LSN, read before the pageserver's disk is lost.
    sql(
        &bin,
        &connstr,
        "CREATE TABLE early (id int PRIMARY KEY, v text)",
    );
    sql(
        &bin,
        &connstr,
        "INSERT INTO early SELECT g, 'early ' || g FROM generate_series(1, 100) g",
    );
    let rel = sql(
        &bin,
        &connstr,
        "SELECT 1663 || '/' || (SELECT oid FROM pg_database WHERE datname = current_database()) \
         || '/' || pg_relation_filenode('early')",
    );
    let old_lsn: Lsn = sql(&bin, &connstr, "SELECT pg_current_wal_flush_lsn()")
        .parse()
        .unwrap();

    if let Some(server) = outage.as_deref_mut() {
        server.stop();
    }
    sql(&bin, &connstr, &first_phase());
    if let Some(server) = outage {
        server.restart().unwrap();
    }
    let x: Lsn = sql(&bin, &connstr, "SELECT pg_current_wal_flush_lsn()")
        .parse()
        .unwrap();
    let dump = pg_dumpall(&bin, &connstr);
    let started = Instant::now();
    wait_remote_consistent(&cluster, x);
    eprintln!(
        "remote_consistent_lsn passed {x} after {:?}",
        started.elapsed()
    );
    let old_page = getpage(&cluster, old_lsn, &rel);

    cluster.down();
    std::fs::remove_dir_all(cluster.dir.join("pageserver")).unwrap();
    up(&cluster, &[], env);

    let copy = PgServer::start_from(
        COPY_SETTINGS
            .iter()
            .fold(PgConfig::new(), |c, (k, v)| c.setting(*k, *v)),
        |dir| {
            std::fs::remove_dir(dir)?;
            let out = cluster.strata(&[
                "basebackup",
                "--lsn",
                &x.to_string(),
                "--out",
                dir.to_str().unwrap(),
            ]);
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
            }
            Ok(())
        },
    )
    .expect("stock PostgreSQL starts from the restored pageserver's basebackup");
    let (expected, expected_seqs) = split_sequences(&dump);
    let (actual, actual_seqs) = split_sequences(&pg_dumpall(&bin, &copy.connstr()));
    assert!(
        expected == actual,
        "the restored basebackup at {x} dumps differently: {}",
        first_difference(&expected, &actual)
    );
    check_sequences(&expected_seqs, &actual_seqs);
    assert_eq!(
        getpage(&cluster, old_lsn, &rel),
        old_page,
        "page at {old_lsn}"
    );
    let log = std::fs::read_to_string(cluster.dir.join("pageserver/pageserver.log")).unwrap();
    assert!(
        log.contains("timeline restored from object storage"),
        "{log}"
    );
}

#[test]
fn restore_from_the_default_local_directory() {
    restore_from_object_storage_alone(&[], &[], None);
}

#[test]
fn restore_from_an_s3_server_that_was_down_during_the_workload() {
    let mut server = S3Server::start().unwrap();
    server.create_bucket("strata").unwrap();
    let url = server.url("strata", "cluster");
    let env: Vec<(String, String)> = server
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    restore_from_object_storage_alone(&["--object-store", &url], &env, Some(&mut server));
}

#[test]
fn wrong_credentials_are_one_error_naming_bucket_and_endpoint() {
    let server = S3Server::start().unwrap();
    server.create_bucket("strata").unwrap();
    let cluster = TestCluster::new();
    let url = server.url("strata", "cluster");
    let env = vec![
        (
            "AWS_ACCESS_KEY_ID".to_owned(),
            server.access_key().to_owned(),
        ),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), "wrong".to_owned()),
        ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
    ];
    let out = strata(&cluster, &["up", "--object-store", &url], &env);
    assert!(!out.status.success());
    let log =
        std::fs::read_to_string(cluster.dir.join("pageserver/pageserver.log")).unwrap_or_default();
    let said = format!("{}{log}", String::from_utf8_lossy(&out.stderr));
    assert!(
        said.contains("s3://strata/cluster/") && said.contains(&server.endpoint()),
        "{said}"
    );
}
