//! Every daemon's `/metrics` moves by what a workload implies: after WAL of known size
//! is committed, a majority of safekeepers counted at least that many bytes flushed and
//! some appends, and the pageserver counted at least those bytes ingested and some
//! records; a `strata getpage` adds a GetPage request, a `strata basebackup` a
//! basebackup and its bytes (and, its stderr not being a terminal, prints no progress
//! display; on a terminal it does). Scraped over plain HTTP from a real `strata up`
//! cluster, whose daemons log JSON (`STRATA_<PROGRAM>_LOG_FORMAT=json`): every line
//! parses, and every line that mentions the timeline is inside a span naming its tenant
//! and timeline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cluster_support::{sql, strata_bin, wait_ingested, TestCluster};
use pg_harness::PgBin;
use postgres_wal::Lsn;

/// One scrape: the sum of every series of each metric name (labels summed away).
type Totals = HashMap<String, f64>;

fn scrape(port: u64) -> Totals {
    let mut stream = TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    let mut totals = Totals::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let name = series.split('{').next().unwrap();
        *totals.entry(name.to_owned()).or_default() += value.parse::<f64>().unwrap();
    }
    totals
}

fn delta(before: &Totals, after: &Totals, name: &str) -> f64 {
    let get = |t: &Totals| t.get(name).copied().unwrap_or(0.0);
    assert!(
        after.contains_key(name),
        "{name} is not exported: {after:?}"
    );
    get(after) - get(before)
}

fn ports(cluster: &TestCluster) -> (Vec<u64>, u64) {
    let status = cluster.status();
    let safekeepers = status["safekeepers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sk| sk["http_port"].as_u64().unwrap())
        .collect();
    (
        safekeepers,
        status["pageserver"]["http_port"].as_u64().unwrap(),
    )
}

/// Each program reads its log format from this variable (flags and files aside).
const JSON_LOGS: [(&str, &str); 3] = [
    ("STRATA_SAFEKEEPER_LOG_FORMAT", "json"),
    ("STRATA_PAGESERVER_LOG_FORMAT", "json"),
    ("STRATA_COMPUTE_CTL_LOG_FORMAT", "json"),
];

/// Every line of `log` is a JSON object; a line whose fields name the tenant or the
/// timeline is inside a span carrying both. Returns how many lines were inside such a
/// span, and how many of those had an `lsn` in a span too.
fn check_json_log(log: &Path, tenant: &str, timeline: &str) -> (usize, usize) {
    let text = std::fs::read_to_string(log).unwrap();
    let (mut in_timeline, mut with_lsn) = (0, 0);
    for line in text.lines().filter(|l| !l.is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", log.display()));
        let spans = value["spans"].as_array().cloned().unwrap_or_default();
        let span_has = |key: &str, want: &str| {
            spans
                .iter()
                .any(|s| s[key].as_str().is_some_and(|v| v == want))
        };
        let named = span_has("tenant_id", tenant) && span_has("timeline_id", timeline);
        let mentions = value["fields"].to_string().contains(tenant)
            || value["fields"].to_string().contains(timeline);
        assert!(
            named || !mentions,
            "{}: a line about the timeline outside its span: {line}",
            log.display()
        );
        if named {
            in_timeline += 1;
            if spans.iter().any(|s| s.get("lsn").is_some()) {
                with_lsn += 1;
            }
        }
    }
    (in_timeline, with_lsn)
}

#[test]
fn counters_move_by_what_the_workload_implies() {
    let bin = PgBin::locate().unwrap();
    let cluster = TestCluster::new();
    let up = Command::new(strata_bin())
        .args(["up", "--dir"])
        .arg(&cluster.dir)
        .envs(JSON_LOGS)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&up.stderr),
        cluster.logs_tail()
    );
    let connstr = String::from_utf8(up.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned();
    let (safekeeper_ports, pageserver_port) = ports(&cluster);

    sql(
        &bin,
        &connstr,
        "CREATE TABLE m (id int PRIMARY KEY, v text)",
    );
    let start: Lsn = sql(&bin, &connstr, "SELECT pg_current_wal_flush_lsn()")
        .parse()
        .unwrap();
    // The pageserver has ingested everything before the workload, so its counters start
    // from a quiet point.
    wait_ingested(&cluster, start, Duration::from_secs(60));
    let sk_before: Vec<Totals> = safekeeper_ports.iter().map(|p| scrape(*p)).collect();
    let ps_before = scrape(pageserver_port);

    sql(
        &bin,
        &connstr,
        "INSERT INTO m SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g",
    );
    let end: Lsn = sql(&bin, &connstr, "SELECT pg_current_wal_flush_lsn()")
        .parse()
        .unwrap();
    let generated = (end.0 - start.0) as f64;
    assert!(
        generated > 1e6,
        "the workload wrote only {generated} bytes of WAL"
    );
    cluster.wait_commit_lsns_equal(end);
    wait_ingested(&cluster, end, Duration::from_secs(120));

    // Synchronous commit waited for a majority: at least two of three flushed all of it.
    let flushed: Vec<f64> = safekeeper_ports
        .iter()
        .zip(&sk_before)
        .map(|(port, before)| {
            let after = scrape(*port);
            assert!(delta(before, &after, "safekeeper_appends_total") > 0.0);
            delta(before, &after, "safekeeper_wal_bytes_flushed_total")
        })
        .collect();
    let majority = flushed.iter().filter(|f| **f >= generated).count();
    assert!(
        majority >= 2,
        "WAL generated {generated} bytes; safekeepers flushed {flushed:?}"
    );

    let ps_after = scrape(pageserver_port);
    let ingested = delta(&ps_before, &ps_after, "pageserver_wal_ingest_bytes_total");
    assert!(
        ingested >= generated,
        "ingested {ingested} of {generated} bytes"
    );
    let records = delta(
        &ps_before,
        &ps_after,
        "pageserver_wal_records_ingested_total",
    );
    assert!(
        records >= 20000.0,
        "{records} records ingested for 20,000 inserted rows"
    );

    // The read paths count what they serve.
    let rel = sql(
        &bin,
        &connstr,
        "SELECT 1663 || '/' || (SELECT oid FROM pg_database WHERE datname = current_database()) \
         || '/' || pg_relation_filenode('m')",
    );
    let page = cluster.strata(&[
        "getpage",
        "--lsn",
        &end.to_string(),
        "--rel",
        &rel,
        "--blk",
        "0",
    ]);
    assert!(
        page.status.success(),
        "{}",
        String::from_utf8_lossy(&page.stderr)
    );
    assert_eq!(page.stdout.len(), 8192);
    let after_getpage = scrape(pageserver_port);
    assert!(
        delta(
            &ps_after,
            &after_getpage,
            "pageserver_getpage_requests_total"
        ) >= 1.0
    );
    assert!(
        delta(
            &ps_after,
            &after_getpage,
            "pageserver_getpage_seconds_count"
        ) >= 1.0
    );

    let out = cluster.dir.parent().unwrap().join("basebackup");
    let backup = cluster.strata(&[
        "basebackup",
        "--lsn",
        &end.to_string(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    // Not a terminal: no progress display, nothing at all on stderr.
    assert!(
        backup.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    let after_backup = scrape(pageserver_port);
    assert_eq!(
        delta(
            &after_getpage,
            &after_backup,
            "pageserver_basebackups_total"
        ),
        1.0
    );
    let bytes = delta(
        &after_getpage,
        &after_backup,
        "pageserver_basebackup_bytes_total",
    );
    // At least the table's own pages went out.
    assert!(bytes >= 20000.0 * 100.0, "basebackup of {bytes} bytes");
    // On a terminal (script(1) gives it one) the same command draws its progress.
    let on_tty = cluster.dir.parent().unwrap().join("basebackup-tty");
    let command = format!(
        "{} basebackup --dir {} --lsn {end} --out {}",
        strata_bin().display(),
        cluster.dir.display(),
        on_tty.display()
    );
    let script = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let terminal = String::from_utf8_lossy(&script.stdout);
    assert!(script.status.success(), "{terminal}");
    assert!(terminal.contains("receiving basebackup"), "{terminal}");

    let local = cluster.cluster();
    let config = local.config();
    let (tenant, timeline) = (config.tenant_id.to_string(), config.timeline_id.to_string());
    let mut logs: Vec<_> = config
        .safekeepers
        .iter()
        .map(|sk| local.safekeeper_log(sk.id))
        .collect();
    logs.push(local.pageserver_log());
    logs.push(local.compute_log());
    for log in &logs {
        let (in_timeline, _) = check_json_log(log, &tenant, &timeline);
        assert!(
            in_timeline > 0,
            "{}: no line names the timeline",
            log.display()
        );
    }
    // The pageserver's reads log inside spans carrying the LSN they read at.
    let (_, with_lsn) = check_json_log(&local.pageserver_log(), &tenant, &timeline);
    assert!(with_lsn > 0, "no pageserver line carries an LSN");
}
