//! The real `safekeeper` binary over real sockets: readiness, ports file, metrics,
//! configuration, clean shutdown on SIGTERM and restart with term and WAL intact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod daemon_support;

use consensus::term_history::{Term, TermHistory, TermSwitch};
use daemon_support::*;
use postgres_wal::Lsn;
use safekeeper::daemon::PORTS_FILE;

#[tokio::test(flavor = "multi_thread")]
async fn health_ports_file_metrics_and_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("sk"));
    assert_eq!(daemon.http_get("/health"), (200, "ready\n".to_owned()));
    assert_eq!(daemon.http_get("/nothing-here").0, 404);
    // Port 0 was asked for: the file names the ports actually bound, which the log
    // line says too.
    for addr in [daemon.ports.grpc, daemon.ports.pg, daemon.ports.http] {
        assert_ne!(addr.port(), 0);
        assert!(daemon.log().contains(&addr.to_string()), "{}", daemon.log());
    }

    let id = timeline_id(1);
    let mut client = daemon.client().await;
    create(&mut client, id).await;
    let (mut stream, _) = Stream::open(&mut client, greeting(id)).await.unwrap();
    stream.elect(1).await;
    let wal = fixture_wal();
    let end = fixture_boundary(100_000);
    let sent = &wal[..(end.0 - FIXTURE_START.0) as usize];
    stream
        .append(1, FIXTURE_START, sent, FIXTURE_START, end)
        .await;

    let samples = parse_exposition(&daemon.metrics());
    let series = |name: &str| format!("{name}{{{}}}", labels(id));
    let value = |name: &str| sample(&samples, &series(name)).unwrap_or_else(|| panic!("{name}"));
    assert_eq!(
        value("safekeeper_wal_bytes_received_total"),
        sent.len() as f64
    );
    assert!(value("safekeeper_appends_total") >= 1.0);
    assert_eq!(value("safekeeper_flush_lsn"), end.0 as f64);
    assert_eq!(value("safekeeper_commit_lsn"), FIXTURE_START.0 as f64);
    assert_eq!(value("safekeeper_term"), 1.0);
    assert_eq!(value("safekeeper_storage_errors_total"), 0.0);
    assert!(sample(&samples, "safekeeper_fsync_seconds_count").unwrap() >= 1.0);
    assert_eq!(sample(&samples, "safekeeper_timelines"), Some(1.0));
    assert_eq!(
        sample(&samples, "safekeeper_proposer_connections"),
        Some(1.0)
    );

    // JSON lines; those about a timeline carry its ids from the span.
    let log = daemon.log();
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    let running = log
        .lines()
        .find(|line| line.contains("timeline running"))
        .expect("a timeline running line");
    assert!(running.contains(&id.timeline_id.to_string()), "{running}");
    assert!(running.contains(&id.tenant_id.to_string()), "{running}");
    daemon.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_zero_and_restart_keeps_term_and_wal() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("sk");
    let id = timeline_id(2);
    let wal = fixture_wal();
    let first_end = fixture_boundary(60_000);
    let second_end = fixture_boundary(180_000);
    let bytes = |from: Lsn, to: Lsn| {
        &wal[(from.0 - FIXTURE_START.0) as usize..(to.0 - FIXTURE_START.0) as usize]
    };

    let mut daemon = Daemon::start(&data_dir);
    let mut client = daemon.client().await;
    create(&mut client, id).await;
    let (mut stream, greeted) = Stream::open(&mut client, greeting(id)).await.unwrap();
    assert_eq!(greeted.term, Term(0));
    stream.elect(3).await;
    let reply = stream
        .append(
            3,
            FIXTURE_START,
            bytes(FIXTURE_START, first_end),
            FIXTURE_START,
            first_end,
        )
        .await;
    assert_eq!((reply.term, reply.flush_lsn), (Term(3), first_end));
    // The proposer announces the commit LSN with a heartbeat.
    let reply = stream.append(3, first_end, &[], first_end, first_end).await;
    assert_eq!(reply.commit_lsn, first_end);
    let before = status(&mut client, id).await.unwrap();
    let history = TermHistory(vec![
        TermSwitch {
            term: Term(0),
            lsn: FIXTURE_START,
        },
        TermSwitch {
            term: Term(3),
            lsn: FIXTURE_START,
        },
    ]);
    assert_eq!(
        (
            before.term,
            &before.term_history,
            before.flush_lsn,
            before.commit_lsn
        ),
        (Term(3), &history, first_end, first_end)
    );

    // The stream is still open: shutdown must end it, flush, and exit 0.
    let exit = daemon.terminate();
    assert!(exit.success(), "{exit}\n{}", daemon.log());
    assert!(daemon.log().contains("every timeline flushed and stopped"));
    assert!(
        !data_dir.join(PORTS_FILE).exists(),
        "ports file left behind"
    );
    let ended = stream.error().await;
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    daemon.assert_no_unexpected_errors(&[]);

    let daemon = Daemon::start(&data_dir);
    let mut client = daemon.client().await;
    let after = status(&mut client, id).await.unwrap();
    // The commit LSN too: the clean stop persisted it.
    assert_eq!(
        (
            after.term,
            &after.term_history,
            after.flush_lsn,
            after.commit_lsn
        ),
        (Term(3), &history, first_end, first_end)
    );
    let segment = std::fs::read(
        data_dir
            .join(id.tenant_id.to_string())
            .join(id.timeline_id.to_string())
            .join("000000010000000000000009.partial"),
    )
    .unwrap();
    assert_eq!(
        &segment[..(first_end.0 - FIXTURE_START.0) as usize],
        bytes(FIXTURE_START, first_end)
    );

    // A new proposer sees the old term's WAL in its vote and continues after it.
    let (mut stream, greeted) = Stream::open(&mut client, greeting(id)).await.unwrap();
    assert_eq!(greeted.term, Term(3));
    let vote = stream.elect(4).await;
    assert_eq!(vote.flush_lsn, first_end);
    let reply = stream
        .append(
            4,
            first_end,
            bytes(first_end, second_end),
            first_end,
            second_end,
        )
        .await;
    assert_eq!((reply.term, reply.flush_lsn), (Term(4), second_end));
    daemon.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_stream_keeps_acknowledged_wal() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("sk");
    let id = timeline_id(3);
    let wal = fixture_wal();
    let mut daemon = Daemon::start(&data_dir);
    let mut client = daemon.client().await;
    create(&mut client, id).await;
    let (mut stream, _) = Stream::open(&mut client, greeting(id)).await.unwrap();
    stream.elect(1).await;

    // Acknowledged WAL first, then appends sent and never waited for, then the crash.
    let acked_end = fixture_boundary(90_000);
    let acked = stream
        .append(
            1,
            FIXTURE_START,
            &wal[..(acked_end.0 - FIXTURE_START.0) as usize],
            FIXTURE_START,
            acked_end,
        )
        .await;
    assert_eq!(acked.flush_lsn, acked_end);
    let mut lsn = acked_end;
    for chunk in wal[(acked_end.0 - FIXTURE_START.0) as usize..].chunks(4096) {
        stream
            .send(append_request(1, lsn, chunk, FIXTURE_START))
            .await;
        lsn = Lsn(lsn.0 + chunk.len() as u64);
    }
    daemon.kill();

    let daemon = Daemon::start(&data_dir);
    let mut client = daemon.client().await;
    let after = status(&mut client, id).await.unwrap();
    assert!(after.flush_lsn >= acked.flush_lsn, "{after:?}");
    assert_eq!(after.term, Term(1));
    let dir = data_dir
        .join(id.tenant_id.to_string())
        .join(id.timeline_id.to_string());
    let segment = std::fs::read(dir.join("000000010000000000000009.partial")).unwrap();
    let held = (after.flush_lsn.0 - FIXTURE_START.0) as usize;
    assert_eq!(
        &segment[..held],
        &wal[..held],
        "WAL below the flush LSN differs"
    );
    // The acceptor resumes where its durable WAL ends.
    let (mut stream, _) = Stream::open(&mut client, greeting(id)).await.unwrap();
    let vote = stream.elect(2).await;
    assert_eq!(vote.flush_lsn, after.flush_lsn);
    daemon.assert_no_unexpected_errors(&[]);
}

#[test]
fn printed_default_config_runs_and_unknown_keys_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let output = Daemon::command()
        .arg("--print-default-config")
        .output()
        .unwrap();
    assert!(output.status.success());
    let default = String::from_utf8(output.stdout).unwrap();
    let config_path = tmp.path().join("safekeeper.toml");
    std::fs::write(&config_path, &default).unwrap();

    // The printed file is a working configuration; flags override its keys.
    let data_dir = tmp.path().join("sk");
    let mut command = Daemon::command();
    command
        .arg("--config")
        .arg(&config_path)
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--id", "9"])
        .args(["--listen-grpc", "127.0.0.1:0", "--listen-pg", "127.0.0.1:0"])
        .args(["--listen-http", "127.0.0.1:0"]);
    let mut daemon = Daemon::launch(command, &data_dir);
    assert!(daemon.log().contains("id=9"), "{}", daemon.log());
    assert!(daemon.terminate().success());

    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, default.replace("listen_grpc", "listen_grcp")).unwrap();
    let output = Daemon::command()
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("listen_grcp"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    // A value of the wrong type, a missing file and a misspelt environment override:
    // each one line naming the problem, and a failure.
    let wrong_type = tmp.path().join("wrong_type.toml");
    std::fs::write(&wrong_type, "id = 1\nlisten_http = 7677\n").unwrap();
    let missing = tmp.path().join("missing.toml");
    type Case<'a> = (&'a std::path::Path, Option<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 3] = [
        (&wrong_type, None, "line 2: listen_http: invalid type"),
        (&missing, None, "missing.toml"),
        (
            &config_path,
            Some(("STRATA_SAFEKEEPER_LISTEN_HTPP", "127.0.0.1:0")),
            "unknown environment variable STRATA_SAFEKEEPER_LISTEN_HTPP",
        ),
    ];
    for (path, var, names) in cases {
        let mut command = Daemon::command();
        command.arg("--config").arg(path);
        if let Some((key, value)) = var {
            command.env(key, value);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success(), "{path:?} {var:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.starts_with("safekeeper: "), "{stderr}");
        assert!(stderr.contains(names), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
}
