//! `strata up`, `status`, `down`, `basebackup` and `getpage` against real daemons: a
//! cluster (safekeepers, pageserver, compute) is created and serves commits, `status
//! --json` has every field of the contract, a killed safekeeper is the only process the
//! next `up` starts, `down` leaves no process, and a second `up` finds the data where
//! it was. With the pageserver: a stock PostgreSQL started from `strata basebackup`
//! dumps like the compute, and a compute whose data directory is lost comes back from
//! the pageserver with every acknowledged commit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_support::{
    kill9, pg_dumpall, process_gone, psql, sql, wait_gone, wait_ingested, TestCluster, POLL, WAIT,
};
use pg_harness::{PgBin, PgConfig, PgServer};
use postgres_wal::Lsn;
use serde_json::Value;

/// Errors the daemons may log in this test: a safekeeper killed with SIGKILL breaks
/// the compute's stream to it.
const EXPECTED_ERRORS: &[&str] = &[];

#[test]
fn up_status_kill_up_down_up() {
    let started = Instant::now();
    let bin = PgBin::locate().unwrap();
    let cluster = TestCluster::new();

    // Create: the last line is the connection URI.
    let out = cluster.up();
    let connstr = out.lines().last().unwrap().to_owned();
    assert!(
        connstr.starts_with("postgresql://postgres@127.0.0.1:") && connstr.ends_with("/postgres"),
        "{out}"
    );
    assert!(out.starts_with("created cluster"), "{out}");
    assert!(out.contains("pageserver: started"), "{out}");
    eprintln!("created and started in {:?}", started.elapsed());

    sql(
        &bin,
        &connstr,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
    );
    for i in 0..10 {
        sql(
            &bin,
            &connstr,
            &format!("INSERT INTO t VALUES ({i}, 'row {i}')"),
        );
    }
    let end = sql(&bin, &connstr, "SELECT pg_current_wal_flush_lsn()");
    let end: Lsn = end.parse().unwrap();

    // Status: every field, the right types, three safekeepers agreeing.
    let status = cluster.status();
    check_status_shape(&status);
    let safekeepers = status["safekeepers"].as_array().unwrap();
    assert_eq!(safekeepers.len(), 3);
    assert!(safekeepers.iter().all(|sk| sk["running"] == true));
    assert_eq!(status["compute"]["running"], true);
    assert_eq!(status["compute"]["connstr"], connstr.as_str());
    let commit = cluster.wait_commit_lsns_equal(end);
    eprintln!("commit LSN {commit} on every safekeeper (compute flushed {end})");

    // kill -9 one safekeeper: only it is started again.
    let before = pids(&cluster.status());
    let victim = before.safekeepers[1];
    kill9(victim);
    wait_gone(victim);
    let status = cluster.status();
    assert_eq!(status["safekeepers"][1]["running"], false);
    assert!(status["safekeepers"][1]["pid"].is_null());
    assert!(status["safekeepers"][1]["commit_lsn"].is_null());
    // Commits go on with two of three.
    sql(
        &bin,
        &connstr,
        "INSERT INTO t VALUES (100, 'with one safekeeper down')",
    );

    let out = cluster.up();
    assert!(out.contains("safekeeper 2: started"), "{out}");
    assert!(out.contains("safekeeper 1: already running"), "{out}");
    assert!(out.contains("safekeeper 3: already running"), "{out}");
    assert!(out.contains("compute: already running"), "{out}");
    assert!(out.contains("pageserver: already running"), "{out}");
    assert_eq!(out.lines().last().unwrap(), connstr);
    let after = pids(&cluster.status());
    assert_eq!(after.safekeepers[0], before.safekeepers[0]);
    assert_eq!(after.safekeepers[2], before.safekeepers[2]);
    assert_ne!(after.safekeepers[1], victim);
    assert_eq!(after.compute, before.compute);
    assert_eq!(after.compute_ctl, before.compute_ctl);
    let status = cluster.status();
    assert!(status["safekeepers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|sk| sk["running"] == true));
    let end: Lsn = sql(
        &bin,
        &connstr,
        "INSERT INTO t VALUES (101, 'all back'); SELECT pg_current_wal_flush_lsn()",
    )
    .parse()
    .unwrap();
    cluster.wait_commit_lsns_equal(end);

    // down: nothing left running.
    let every_pid = [
        after.safekeepers.clone(),
        vec![after.compute, after.compute_ctl, after.pageserver],
    ]
    .concat();
    cluster.down();
    for pid in &every_pid {
        assert!(process_gone(*pid), "process {pid} survived strata down");
    }
    let status = cluster.status();
    assert_eq!(status["compute"]["running"], false);
    assert!(status["compute"]["pid"].is_null());
    assert!(status["safekeepers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|sk| sk["running"] == false && sk["pid"].is_null()));
    assert_eq!(status["pageserver"]["running"], false);
    assert!(status["pageserver"]["pid"].is_null());
    assert!(status["pageserver"]["last_record_lsn"].is_null());

    // up again: the same cluster, the same port, the data intact.
    let out = cluster.up();
    assert!(out.starts_with("starting cluster"), "{out}");
    assert_eq!(out.lines().last().unwrap(), connstr);
    assert_eq!(sql(&bin, &connstr, "SELECT count(*) FROM t"), "12");
    assert_eq!(
        sql(&bin, &connstr, "SELECT v FROM t WHERE id = 101"),
        "all back"
    );
    cluster.down();
    cluster.assert_no_unexpected_errors(EXPECTED_ERRORS);
    eprintln!("whole test took {:?}", started.elapsed());
}

#[test]
fn errors_are_one_line_and_non_zero() {
    let cluster = TestCluster::new();
    for args in [&["status"][..], &["down"][..]] {
        let out = cluster.strata(args);
        assert!(!out.status.success(), "{args:?} on no cluster succeeded");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("no cluster.json"), "{stderr}");
    }
    let out = cluster.strata(&["up", "--safekeepers", "0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--safekeepers"), "{stderr}");
}

struct Pids {
    safekeepers: Vec<u64>,
    compute: u64,
    compute_ctl: u64,
    pageserver: u64,
}

fn pids(status: &Value) -> Pids {
    Pids {
        safekeepers: status["safekeepers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|sk| sk["pid"].as_u64().unwrap())
            .collect(),
        compute: status["compute"]["pid"].as_u64().unwrap(),
        compute_ctl: status["compute"]["compute_ctl_pid"].as_u64().unwrap(),
        pageserver: status["pageserver"]["pid"].as_u64().unwrap(),
    }
}

/// Every field of the contract (design brief §8) with its type.
fn check_status_shape(status: &Value) {
    let hex32 = |v: &Value| {
        v.as_str()
            .is_some_and(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    assert!(hex32(&status["tenant_id"]), "{status}");
    assert!(hex32(&status["timeline_id"]), "{status}");
    assert!(status["object_store"]
        .as_str()
        .unwrap()
        .starts_with("file:///"));
    assert!(status["object_store"]
        .as_str()
        .unwrap()
        .ends_with("/object-store"));
    let compute = &status["compute"];
    assert!(compute["pid"].is_u64(), "{compute}");
    assert!(compute["port"].is_u64(), "{compute}");
    assert!(compute["connstr"].is_string(), "{compute}");
    assert!(compute["running"].is_boolean(), "{compute}");
    for sk in status["safekeepers"].as_array().unwrap() {
        assert!(sk["id"].is_u64(), "{sk}");
        assert!(sk["pid"].is_u64(), "{sk}");
        assert!(sk["running"].is_boolean(), "{sk}");
        for port in ["pg_port", "grpc_port", "http_port"] {
            assert!(
                sk[port].as_u64().is_some_and(|p| p > 0 && p < 65536),
                "{sk}"
            );
        }
        assert!(sk["term"].is_u64(), "{sk}");
        for lsn in ["flush_lsn", "commit_lsn"] {
            let text = sk[lsn].as_str().unwrap();
            let parsed: Lsn = text.parse().unwrap();
            assert_eq!(
                parsed.to_string(),
                text,
                "LSNs print as Postgres prints them"
            );
        }
    }
    let ps = &status["pageserver"];
    assert!(ps["pid"].is_u64(), "{ps}");
    assert_eq!(ps["running"], true, "{ps}");
    for port in ["grpc_port", "http_port"] {
        assert!(
            ps[port].as_u64().is_some_and(|p| p > 0 && p < 65536),
            "{ps}"
        );
    }
    for lsn in [
        "last_record_lsn",
        "disk_consistent_lsn",
        "remote_consistent_lsn",
    ] {
        let text = ps[lsn].as_str().unwrap_or_else(|| panic!("{lsn}: {ps}"));
        let parsed: Lsn = text.parse().unwrap();
        assert_eq!(
            parsed.to_string(),
            text,
            "LSNs print as Postgres prints them"
        );
    }
}

/// Rows inserted one transaction each by a client until told to stop; the ids whose
/// commit was acknowledged.
fn insert_until(
    bin: PgBin,
    connstr: String,
    first: i64,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<i64>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut id = first;
        while !stop.load(Ordering::SeqCst) {
            let out = psql(
                &bin,
                &connstr,
                &format!("INSERT INTO t VALUES ({id}, 'row {id}')"),
            );
            if out.success {
                acked.lock().unwrap().push(id);
            } else {
                // The compute is gone: nothing more can be acknowledged.
                std::thread::sleep(Duration::from_millis(20));
            }
            id += 1;
        }
    })
}

#[test]
fn basebackup_getpage_and_failover_from_the_pageserver() {
    let started = Instant::now();
    let bin = PgBin::locate().unwrap();
    let cluster = TestCluster::new();
    let out = cluster.up();
    assert!(out.contains("pageserver: started"), "{out}");
    let connstr = out.lines().last().unwrap().to_owned();

    sql(
        &bin,
        &connstr,
        "CREATE TABLE t (id bigint PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 1000) g;",
    );
    // The compute runs with every page-masked resource manager checked: the
    // pageserver redoes none natively yet.
    assert_eq!(
        sql(&bin, &connstr, "SHOW wal_consistency_checking"),
        "heap,heap2,btree,hash,gin,gist,sequence,spgist,brin,generic"
    );
    let end: Lsn = sql(&bin, &connstr, "SELECT pg_current_wal_flush_lsn()")
        .parse()
        .unwrap();
    cluster.wait_commit_lsns_equal(end);
    wait_ingested(&cluster, end, WAIT);
    let status = cluster.status();
    check_status_shape(&status);

    // strata basebackup at that LSN: a stock PostgreSQL starts on it and dumps like the
    // compute (which wrote nothing since).
    let compute_dump = pg_dumpall(&bin, &connstr);
    let copy = PgServer::start_from(PgConfig::new(), |dir| {
        std::fs::remove_dir(dir)?;
        let dir_arg = dir.display().to_string();
        let lsn = end.to_string();
        let out = cluster.strata(&["basebackup", "--lsn", &lsn, "--out", &dir_arg]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
        }
        Ok(())
    })
    .expect("stock PostgreSQL starts from the basebackup");
    assert_eq!(
        pg_dumpall(&bin, &copy.connstr()),
        compute_dump,
        "the basebackup at {end} dumps differently from the compute"
    );
    drop(copy);

    // A non-empty --out is refused, one line, non-zero.
    let full = tempfile::tempdir().unwrap();
    std::fs::write(full.path().join("x"), "x").unwrap();
    let out = cluster.strata(&["basebackup", "--out", full.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not empty"), "{stderr}");

    // strata getpage: block 0 of t as of `end` is a heap page holding rows.
    let (db, rel) = {
        let row = sql(
            &bin,
            &connstr,
            "SELECT d.oid, pg_relation_filenode('t') FROM pg_database d \
             WHERE d.datname = current_database()",
        );
        let (db, rel) = row.split_once('|').unwrap();
        (db.to_owned(), rel.to_owned())
    };
    let rel_arg = format!("1663/{db}/{rel}");
    let lsn = end.to_string();
    let out = cluster.strata(&["getpage", "--lsn", &lsn, "--rel", &rel_arg, "--blk", "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = out.stdout;
    assert_eq!(page.len(), 8192);
    let pd_lower = u16::from_le_bytes([page[12], page[13]]);
    let pd_upper = u16::from_le_bytes([page[14], page[15]]);
    assert!(
        pd_lower > 24 && pd_lower <= pd_upper && pd_upper < 8192,
        "{pd_lower} {pd_upper}"
    );
    let out = cluster.strata(&["getpage", "--lsn", &lsn, "--rel", "1663/1/x", "--blk", "0"]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8(out.stderr).unwrap().lines().count(), 1);

    // Failover: inserts acknowledged one by one while the compute (agent and
    // postmaster) is killed; its data directory is lost; `strata up` makes a new
    // compute from the pageserver.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let client = insert_until(
        bin.clone(),
        connstr.clone(),
        10_000,
        stop.clone(),
        acked.clone(),
    );
    let deadline = Instant::now() + WAIT;
    while acked.lock().unwrap().len() < 50 {
        assert!(Instant::now() < deadline, "no commits acknowledged");
        std::thread::sleep(POLL);
    }
    let before = pids(&cluster.status());
    kill9(before.compute_ctl);
    kill9(before.compute);
    wait_gone(before.compute_ctl);
    wait_gone(before.compute);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    let acked: Vec<i64> = acked.lock().unwrap().clone();
    let pgdata = cluster.cluster().pgdata();
    std::fs::remove_dir_all(&pgdata).unwrap();
    eprintln!(
        "killed the compute after {} acknowledged inserts; its data directory is gone",
        acked.len()
    );

    let out = cluster.up();
    assert!(out.contains("compute: started"), "{out}");
    assert!(out.contains("pageserver: already running"), "{out}");
    assert_eq!(out.lines().last().unwrap(), connstr);
    let state = std::fs::read_to_string(pgdata.join("strata_compute.json")).unwrap();
    assert!(state.contains("base_lsn"), "{state}");
    let present: Vec<i64> = sql(
        &bin,
        &connstr,
        "SELECT id FROM t WHERE id >= 10000 ORDER BY id",
    )
    .lines()
    .map(|l| l.parse().unwrap())
    .collect();
    let missing: Vec<&i64> = acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(missing.is_empty(), "acknowledged commits lost: {missing:?}");
    assert_eq!(
        sql(&bin, &connstr, "SELECT count(*) FROM t WHERE id <= 1000"),
        "1000"
    );

    // The new compute commits, and survives a crash and a clean restart on its data
    // directory (its lineage check knows it came from a basebackup).
    sql(
        &bin,
        &connstr,
        "INSERT INTO t VALUES (-1, 'after failover')",
    );
    let crashed = pids(&cluster.status());
    kill9(crashed.compute_ctl);
    kill9(crashed.compute);
    wait_gone(crashed.compute_ctl);
    wait_gone(crashed.compute);
    let out = cluster.up();
    assert!(out.contains("compute: started"), "{out}");
    assert_eq!(
        sql(&bin, &connstr, "SELECT v FROM t WHERE id = -1"),
        "after failover"
    );
    sql(
        &bin,
        &connstr,
        "INSERT INTO t VALUES (-2, 'after the crash')",
    );
    cluster.down();
    let out = cluster.up();
    assert!(out.contains("compute: started"), "{out}");
    assert_eq!(
        sql(&bin, &connstr, "SELECT count(*) FROM t WHERE id < 0"),
        "2"
    );
    let end: Lsn = sql(&bin, &connstr, "SELECT pg_current_wal_flush_lsn()")
        .parse()
        .unwrap();
    cluster.wait_commit_lsns_equal(end);
    wait_ingested(&cluster, end, WAIT);
    cluster.down();
    cluster.assert_no_unexpected_errors(EXPECTED_ERRORS);
    eprintln!("whole test took {:?}", started.elapsed());
}
