//! `strata up`, `status`, `down` against real daemons: a cluster is created and serves
//! commits, `status --json` has every field of the contract, a killed safekeeper is the
//! only process the next `up` starts, `down` leaves no process, and a second `up`
//! finds the data where it was.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;

use std::time::Instant;

use cluster_support::{kill9, process_gone, sql, wait_gone, TestCluster};
use pg_harness::PgBin;
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
        vec![after.compute, after.compute_ctl],
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
    assert!(
        status.get("pageserver").is_some_and(Value::is_null),
        "{status}"
    );
}
