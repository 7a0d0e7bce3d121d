//! Tests against real PostgreSQL 15 servers. They fail (with a message saying what to install)
//! when PostgreSQL 15 is not available: there is no silent skip.

use std::collections::HashSet;
use std::time::Instant;

use pg_harness::{parse_lsn, HarnessError, PgBin, PgConfig, PgServer};

fn start(config: PgConfig) -> PgServer {
    let t = Instant::now();
    let server = PgServer::start(config).expect("starting PostgreSQL 15");
    eprintln!(
        "server on port {} started in {:?}",
        server.port(),
        t.elapsed()
    );
    server
}

#[test]
fn installation_is_postgres_15() {
    let bin = PgBin::locate().expect("locating PostgreSQL 15");
    assert!(
        bin.version().contains("(PostgreSQL) 15."),
        "{}",
        bin.version()
    );
    assert!(bin.path("pg_waldump").is_file());
    // Tools started through PgBin::command run as the right user, root or not.
    let out = bin
        .command("pg_controldata")
        .arg("--version")
        .output()
        .expect("running pg_controldata");
    assert!(out.status.success());
}

#[test]
fn sql_basics_and_errors() {
    let server = start(PgConfig::new());
    assert_eq!(server.sql("select 1").expect("select 1"), "1");
    assert_eq!(
        server
            .sql(
                "CREATE TABLE t (id int primary key, v text);\n\
                  INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 3) g;\n\
                  SELECT id, v FROM t ORDER BY id;"
            )
            .expect("multi-statement script"),
        "1|v1\n2|v2\n3|v3"
    );
    assert_eq!(server.sql("select count(*) from t").expect("count"), "3");
    // Leading spaces of a value are preserved; only the trailing newline goes.
    assert_eq!(server.sql("select '  x'").expect("spaces"), "  x");

    server
        .sql("CREATE DATABASE other")
        .expect("create database");
    server
        .sql_db("other", "CREATE TABLE o (x int)")
        .expect("sql_db");
    assert_eq!(
        server
            .sql_db("other", "select count(*) from o")
            .expect("sql_db select"),
        "0"
    );

    let err = server
        .sql("select 1/0")
        .expect_err("division by zero must fail");
    assert!(matches!(err, HarnessError::Sql { .. }), "{err:?}");
    assert!(err.to_string().contains("division by zero"), "{err}");

    // ON_ERROR_STOP: nothing after the failing statement runs.
    let err = server
        .sql("INSERT INTO t VALUES (10, 'a'); SELECT * FROM missing_table; INSERT INTO t VALUES (11, 'b');")
        .expect_err("missing table must fail");
    assert!(err.to_string().contains("missing_table"), "{err}");
    assert_eq!(server.sql("select count(*) from t").expect("count"), "4");

    let conn = server.connstr();
    assert_eq!(
        conn,
        format!("postgresql://postgres@127.0.0.1:{}/postgres", server.port())
    );
}

#[test]
fn wal_lsn_switch_and_segments() {
    let server = start(PgConfig::new().wal_segment_size_mb(1));
    assert_eq!(server.sql("SHOW wal_segment_size").expect("show"), "1MB");
    let before = parse_lsn(&server.current_wal_lsn().expect("lsn")).expect("parse lsn");
    server
        .sql("CREATE TABLE w AS SELECT g FROM generate_series(1, 1000) g")
        .expect("write some WAL");
    let after = parse_lsn(&server.current_wal_lsn().expect("lsn")).expect("parse lsn");
    assert!(after > before, "{after:X} > {before:X}");

    let first = server.wal_segments().expect("segments");
    assert!(!first.is_empty());
    let switched = parse_lsn(&server.switch_wal().expect("switch")).expect("parse");
    assert!(switched >= after);
    // After a switch, new WAL starts at the next segment boundary.
    let next = server.current_wal_lsn().expect("lsn");
    assert_eq!(
        parse_lsn(&next).expect("parse") % (1024 * 1024),
        0,
        "{next}"
    );
    server.sql("INSERT INTO w VALUES (1)").expect("insert");
    server.checkpoint().expect("checkpoint");
    let segments = server.wal_segments().expect("segments");
    let names: Vec<String> = segments
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert!(names.len() >= 2, "{names:?}");
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    for (name, path) in names.iter().zip(&segments) {
        assert_eq!(name.len(), 24);
        assert!(path.starts_with(server.wal_dir()));
        assert_eq!(path.metadata().expect("stat").len(), 1024 * 1024);
    }

    // pg_waldump (run as the right user) can read the segment holding the insert.
    let lsn = server.current_wal_lsn().expect("lsn");
    let out = server
        .bin()
        .command("pg_waldump")
        .arg("--path")
        .arg(server.wal_dir())
        .arg("--start")
        .arg(&next)
        .arg("--end")
        .arg(&lsn)
        .output()
        .expect("pg_waldump");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHECKPOINT_ONLINE"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn restart_keeps_data_and_crash_recovers() {
    let mut server = start(PgConfig::new());
    server
        .sql("CREATE TABLE r (x int); INSERT INTO r VALUES (1), (2);")
        .expect("create");
    server.restart().expect("restart");
    assert!(server.is_running());
    assert_eq!(server.sql("select sum(x) from r").expect("sum"), "3");

    server.sql("INSERT INTO r VALUES (3)").expect("insert");
    server.stop_immediate().expect("crash");
    assert!(!server.is_running());
    let err = server.sql("select 1").expect_err("stopped server");
    assert!(matches!(err, HarnessError::NotRunning(_)), "{err:?}");
    server.restart().expect("restart after crash");
    assert_eq!(server.sql("select sum(x) from r").expect("sum"), "6");
    assert!(server
        .log_contents()
        .expect("log")
        .contains("database system was interrupted"));

    // A postmaster that dies behind the harness's back is restarted with recovery.
    let pid = std::fs::read_to_string(server.data_dir().join("postmaster.pid")).expect("pid");
    let pid = pid.lines().next().expect("pid line").trim().to_string();
    let killed = server
        .bin()
        .command("pg_ctl")
        .args(["kill", "KILL", &pid])
        .status()
        .expect("pg_ctl kill");
    assert!(killed.success());
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while server.is_running() {
        assert!(Instant::now() < deadline, "killed postmaster still running");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    server.restart().expect("restart after kill");
    assert_eq!(server.sql("select sum(x) from r").expect("sum"), "6");

    server.stop().expect("fast stop");
    assert!(!server.is_running());
    server.restart().expect("start after stop");
    assert_eq!(server.sql("select count(*) from r").expect("count"), "3");
}

#[test]
fn two_servers_at_once() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PgServer>();

    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| start(PgConfig::new()));
        let b = s.spawn(|| start(PgConfig::new()));
        (a.join().expect("thread a"), b.join().expect("thread b"))
    });
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    a.sql("CREATE TABLE only_a (x int)").expect("a");
    b.sql("CREATE TABLE only_b (x int)").expect("b");
    let tables = |s: &PgServer| -> HashSet<String> {
        s.sql("select relname from pg_class where relname like 'only_%'")
            .expect("tables")
            .lines()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(tables(&a), HashSet::from(["only_a".to_string()]));
    assert_eq!(tables(&b), HashSet::from(["only_b".to_string()]));
    // Concurrent SQL on one server from several threads (sql takes &self).
    std::thread::scope(|s| {
        for i in 0..4 {
            let a = &a;
            s.spawn(move || {
                a.sql(&format!("INSERT INTO only_a VALUES ({i})"))
                    .expect("insert")
            });
        }
    });
    assert_eq!(a.sql("select count(*) from only_a").expect("count"), "4");
}

#[test]
fn settings_and_checksums_applied() {
    let server = start(
        PgConfig::new()
            .data_checksums(true)
            .setting("wal_compression", "lz4")
            .setting("application_name", "it's quoted")
            .setting("max_wal_senders", "7"),
    );
    assert_eq!(server.sql("SHOW wal_compression").expect("show"), "lz4");
    assert_eq!(server.sql("SHOW data_checksums").expect("show"), "on");
    assert_eq!(server.sql("SHOW max_wal_senders").expect("show"), "7");
    assert_eq!(server.sql("SHOW fsync").expect("show"), "on");
    assert_eq!(
        server.sql("SHOW listen_addresses").expect("show"),
        "127.0.0.1"
    );
    assert_eq!(
        server.sql("SHOW application_name").expect("show"),
        "psql",
        "psql sets its own application_name per session"
    );
}

#[test]
fn defaults_have_checksums_off_and_reserved_settings_rejected() {
    let server = start(PgConfig::new());
    assert_eq!(server.sql("SHOW data_checksums").expect("show"), "off");
    let err = PgServer::start(PgConfig::new().setting("port", "5432")).expect_err("reserved");
    assert!(matches!(err, HarnessError::InvalidConfig(_)), "{err:?}");
}

#[test]
fn bad_setting_fails_start_with_log_tail() {
    let err = PgServer::start(PgConfig::new().setting("shared_buffers", "not a size"))
        .expect_err("invalid shared_buffers must fail");
    let msg = err.to_string();
    assert!(matches!(err, HarnessError::StartFailed { .. }), "{msg}");
    assert!(msg.contains("shared_buffers"), "{msg}");
    assert!(msg.contains("server log tail"), "{msg}");
}

#[test]
fn drop_stops_server_and_removes_directory() {
    let server = start(PgConfig::new());
    let base = server.base_dir().to_path_buf();
    let pid_file = server.data_dir().join("postmaster.pid");
    let pid = std::fs::read_to_string(&pid_file).expect("pid file");
    let pid = pid.lines().next().expect("pid line").trim().to_string();
    drop(server);
    assert!(!base.exists(), "{} still exists", base.display());
    // The postmaster is gone, or a zombie waiting for a reaper that is not ours (pg_ctl
    // daemonizes it). Its last moments may overlap with drop returning, so poll briefly.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(") ").next().and_then(|r| r.chars().next()));
        if matches!(state, None | Some('Z' | 'X')) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "postmaster {pid} still running: {state:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn restart_moves_to_a_new_port_when_the_old_one_is_taken() {
    let mut server = start(PgConfig::new());
    server.sql("CREATE TABLE p (x int)").expect("create");
    let old_port = server.port();
    server.stop().expect("stop");
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", old_port)).expect("take old port");
    server.restart().expect("restart on another port");
    assert_ne!(server.port(), old_port);
    assert!(server.connstr().contains(&format!(":{}/", server.port())));
    assert_eq!(server.sql("select count(*) from p").expect("count"), "0");
    assert!(server
        .log_contents()
        .expect("log")
        .contains("Address already in use"));
}

/// A server started on a data directory copied from a stopped one (as a basebackup is
/// unpacked) sees the original's data; a populate step that fails is reported.
#[test]
fn start_from_a_populated_directory() {
    let mut original = start(PgConfig::new());
    original
        .sql("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42);")
        .unwrap();
    original.stop().unwrap();
    let source = original.data_dir().to_path_buf();
    let copy = PgServer::start_from(PgConfig::new(), |dir| {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", source.display()))
            .arg(dir)
            .status()?;
        if !status.success() {
            return Err(format!("cp failed: {status}").into());
        }
        Ok(())
    })
    .expect("starting on the copy");
    assert_eq!(copy.sql("SELECT x FROM kept").unwrap(), "42");

    let failed = PgServer::start_from(PgConfig::new(), |_| Err("no basebackup".into()));
    let message = failed.unwrap_err().to_string();
    assert!(message.contains("no basebackup"), "{message}");
}
