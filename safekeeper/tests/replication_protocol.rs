//! The replication protocol server against stock PostgreSQL 15 clients, with real WAL.
//!
//! A real PostgreSQL writes WAL and is stopped; its WAL is appended to a timeline in the
//! safekeeper's storage, which `safekeeper::replication::serve` serves; then `pg_receivewal`, `psql` in replication
//! mode and a stock standby (`primary_conninfo` pointing at the server) read it, and what
//! they got is compared with the source.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consensus::storage::{AcceptorStorage, PersistentState};
use pg_harness::{PgBin, PgConfig, PgServer};
use postgres_wal::decoder::WalStreamDecoder;
use postgres_wal::{Lsn, WalSegmentSize};
use safekeeper::replication::{
    serve, ReaderFeedback, ReplicationTimeline, ResolveError, TimelineSource,
};
use safekeeper::storage::{TimelineStorage, WalReader};
use strata_ids::{TenantId, TenantTimelineId, TimelineId};
use tokio::sync::watch;

const TENANT: &str = "11111111111111111111111111111111";
const TIMELINE: &str = "22222222222222222222222222222222";
/// Time limit for each client tool run against the server.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);
/// Time limit for the standby to replay everything.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(120);
/// Size of the appends that load the source WAL into safekeeper storage.
const STORE_CHUNK_BYTES: usize = 1 << 20;

/// A timeline served from the safekeeper's own storage: the source WAL is appended to a
/// [`TimelineStorage`] and read back through its [`WalReader`].
struct StorageTimeline {
    id: TenantTimelineId,
    segment_size: WalSegmentSize,
    system_id: u64,
    reader: Mutex<WalReader>,
    commit_rx: watch::Receiver<Lsn>,
    feedback: Mutex<Vec<ReaderFeedback>>,
}

impl ReplicationTimeline for StorageTimeline {
    fn id(&self) -> TenantTimelineId {
        self.id
    }
    fn system_id(&self) -> u64 {
        self.system_id
    }
    fn wal_segment_size(&self) -> u32 {
        u32::try_from(self.segment_size.bytes()).unwrap()
    }
    fn timeline_start_lsn(&self) -> Lsn {
        self.reader.lock().unwrap().timeline_start_lsn()
    }
    fn commit_lsn(&self) -> watch::Receiver<Lsn> {
        self.commit_rx.clone()
    }
    fn read_wal(&self, lsn: Lsn, buf: &mut [u8]) -> std::io::Result<usize> {
        assert!(
            lsn < *self.commit_rx.borrow(),
            "read at {lsn}, above the commit LSN"
        );
        self.reader.lock().unwrap().read(lsn, buf)
    }
    fn reader_feedback(&self, feedback: &ReaderFeedback) {
        self.feedback.lock().unwrap().push(feedback.clone());
    }
}

struct OneTimeline(Arc<StorageTimeline>);

impl TimelineSource for OneTimeline {
    fn resolve(
        &self,
        tenant: Option<TenantId>,
        timeline: Option<TimelineId>,
    ) -> Result<Arc<dyn ReplicationTimeline>, ResolveError> {
        let id = self.0.id;
        if tenant.is_some_and(|t| t != id.tenant_id)
            || timeline.is_some_and(|t| t != id.timeline_id)
        {
            return Err(ResolveError::NotFound { tenant, timeline });
        }
        Ok(self.0.clone())
    }
}

/// WAL written by a stopped PostgreSQL, and what is known about it.
struct SourceWal {
    server: PgServer,
    system_id: u64,
    segment_size: WalSegmentSize,
    /// First LSN of the first segment in pg_wal.
    start: Lsn,
    /// End of the last valid record.
    end: Lsn,
}

/// Start PostgreSQL, run `workload`, stop it, and find where its WAL ends.
fn source_wal(server: PgServer, workload: impl FnOnce(&PgServer)) -> SourceWal {
    let mut server = server;
    let system_id: u64 = server
        .sql("SELECT system_identifier FROM pg_control_system()")
        .unwrap()
        .parse()
        .unwrap();
    workload(&server);
    server.stop().unwrap();
    let segment_size = WalSegmentSize::DEFAULT;
    let segments = server.wal_segments().unwrap();
    let first = segments[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let (_, first_segno) = segment_size.parse_file_name(&first).unwrap();
    let start = segment_size.segment_start(first_segno).unwrap();
    let mut decoder = WalStreamDecoder::new(start, segment_size).with_system_id(system_id);
    let mut records = 0;
    'segments: for segment in &segments {
        decoder.feed(&fs::read(segment).unwrap());
        loop {
            match decoder.poll() {
                Ok(Some(_)) => records += 1,
                Ok(None) => break,
                Err(err) => {
                    assert!(err.is_end_of_wal(), "{err}");
                    break 'segments;
                }
            }
        }
    }
    let end = decoder.valid_end();
    eprintln!(
        "source WAL: {records} records from {start} to {end} in {} segments",
        segments.len()
    );
    SourceWal {
        server,
        system_id,
        segment_size,
        start,
        end,
    }
}

fn ids() -> TenantTimelineId {
    TenantTimelineId {
        tenant_id: TENANT.parse().unwrap(),
        timeline_id: TIMELINE.parse().unwrap(),
    }
}

/// A running `serve` on 127.0.0.1 over the source's WAL, stored in safekeeper storage and
/// committed up to its end.
struct Served {
    runtime: tokio::runtime::Runtime,
    port: u16,
    timeline: Arc<StorageTimeline>,
    _storage_dir: tempfile::TempDir,
    _commit_tx: watch::Sender<Lsn>,
    shutdown_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), safekeeper::replication::ServeError>>,
}

/// Append the source WAL to a new timeline in safekeeper storage and flush it.
fn store_source(source: &SourceWal, dir: &Path) -> TimelineStorage {
    let state = PersistentState::new(
        ids(),
        source.system_id,
        150_000,
        u32::try_from(source.segment_size.bytes()).unwrap(),
        source.start,
    );
    let mut storage = TimelineStorage::create(&dir.join("timeline"), state).unwrap();
    let bytes = source_bytes(source, source.start, source.end);
    let mut lsn = source.start;
    for chunk in bytes.chunks(STORE_CHUNK_BYTES) {
        storage.write_wal(lsn, chunk).unwrap();
        lsn = Lsn(lsn.0 + chunk.len() as u64);
    }
    storage.flush_wal().unwrap();
    assert_eq!(storage.flush_lsn(), source.end);
    storage
}

fn serve_source(source: &SourceWal) -> Served {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let storage_dir = tempfile::tempdir().unwrap();
    let storage = store_source(source, storage_dir.path());
    let (commit_tx, commit_rx) = watch::channel(source.end);
    let timeline = Arc::new(StorageTimeline {
        id: ids(),
        segment_size: source.segment_size,
        system_id: source.system_id,
        reader: Mutex::new(storage.reader()),
        commit_rx,
        feedback: Mutex::new(Vec::new()),
    });
    drop(storage);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let source: Arc<dyn TimelineSource> = Arc::new(OneTimeline(timeline.clone()));
    let task = runtime.spawn(serve(listener, source, shutdown_rx));
    Served {
        runtime,
        port,
        timeline,
        _storage_dir: storage_dir,
        _commit_tx: commit_tx,
        shutdown_tx,
        task,
    }
}

impl Served {
    fn stop(self) {
        self.shutdown_tx.send(true).unwrap();
        self.runtime.block_on(self.task).unwrap().unwrap();
    }
}

/// Run a tool to completion within `TOOL_TIMEOUT`; returns (success, stdout, stderr).
fn run(mut cmd: Command) -> (bool, String, String) {
    let out_dir = tempfile::tempdir().unwrap();
    let stdout_path = out_dir.path().join("stdout");
    let stderr_path = out_dir.path().join("stderr");
    cmd.stdin(Stdio::null())
        .stdout(File::create(&stdout_path).unwrap())
        .stderr(File::create(&stderr_path).unwrap());
    let mut child: Child = cmd.spawn().unwrap();
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = fs::read_to_string(&stdout_path).unwrap();
    let stderr = fs::read_to_string(&stderr_path).unwrap();
    let status = status.unwrap_or_else(|| panic!("{cmd:?} timed out; stderr:\n{stderr}"));
    (status.success(), stdout, stderr)
}

/// A directory the server OS user (PostgreSQL tools) can write.
fn tool_dir(bin: &PgBin, parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    fs::create_dir(&dir).unwrap();
    bin.chown_to_server_user(&dir).unwrap();
    dir
}

fn tempdir_for(bin: &PgBin) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    bin.chown_to_server_user(dir.path()).unwrap();
    dir
}

fn workload(server: &PgServer) {
    server
        .sql(
            "CREATE TABLE t (id int PRIMARY KEY, payload text); \
              INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g;",
        )
        .unwrap();
    server.switch_wal().unwrap();
    server
        .sql(
            "UPDATE t SET payload = repeat('y', 100) WHERE id % 3 = 0; \
              INSERT INTO t SELECT g, 'z' FROM generate_series(20001, 30000) g;",
        )
        .unwrap();
    server.switch_wal().unwrap();
    server
        .sql("DELETE FROM t WHERE id % 7 = 0; CHECKPOINT;")
        .unwrap();
}

/// The bytes of the source WAL in [from, to).
fn source_bytes(source: &SourceWal, from: Lsn, to: Lsn) -> Vec<u8> {
    let mut bytes = Vec::new();
    let seg = source.segment_size;
    for segno in from.segment_number(seg)..=Lsn(to.0 - 1).segment_number(seg) {
        let data = fs::read(source.server.wal_dir().join(seg.file_name(1, segno))).unwrap();
        let seg_start = seg.segment_start(segno).unwrap().0;
        let lo = from.0.max(seg_start) - seg_start;
        let hi = to.0.min(seg_start + seg.bytes()) - seg_start;
        bytes.extend_from_slice(&data[lo as usize..hi as usize]);
    }
    bytes
}

/// The bytes pg_receivewal wrote in [from, to), from its segment files (`.partial` or not).
fn received_bytes(dir: &Path, seg: WalSegmentSize, from: Lsn, to: Lsn) -> Vec<u8> {
    let mut bytes = Vec::new();
    for segno in from.segment_number(seg)..=Lsn(to.0 - 1).segment_number(seg) {
        let name = seg.file_name(1, segno);
        let path = dir.join(&name);
        let path = if path.exists() {
            path
        } else {
            dir.join(format!("{name}.partial"))
        };
        let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            data.len() as u64,
            seg.bytes(),
            "{} is not a whole segment",
            path.display()
        );
        let seg_start = seg.segment_start(segno).unwrap().0;
        let lo = from.0.max(seg_start) - seg_start;
        let hi = to.0.min(seg_start + seg.bytes()) - seg_start;
        bytes.extend_from_slice(&data[lo as usize..hi as usize]);
    }
    bytes
}

#[test]
fn pg_receivewal_and_psql_read_real_wal() {
    let server = PgServer::start(PgConfig::new().setting("wal_keep_size", "1GB")).unwrap();
    let bin = server.bin().clone();
    let source = source_wal(server, workload);
    assert!(
        source.end.segment_number(source.segment_size)
            > source.start.segment_number(source.segment_size) + 1
    );
    let served = serve_source(&source);
    let port = served.port.to_string();
    let options = format!("options='-c tenant_id={TENANT} -c timeline_id={TIMELINE}'");

    // psql in replication mode: IDENTIFY_SYSTEM gives the system id and the commit LSN.
    let mut psql = bin.command("psql");
    psql.args(["-X", "-A", "-t", "-c", "IDENTIFY_SYSTEM"])
        .arg(format!(
            "dbname=replication replication=true host=127.0.0.1 port={port} user=x"
        ));
    let (ok, stdout, stderr) = run(psql);
    assert!(ok, "psql failed: {stderr}");
    assert_eq!(
        stdout.trim(),
        format!("{}|1|{}|", source.system_id, source.end)
    );

    let mut psql = bin.command("psql");
    psql.args([
        "-X",
        "-A",
        "-t",
        "-c",
        "SHOW wal_segment_size",
        "-c",
        "SHOW timeline_id",
    ])
    .arg(format!(
        "replication=true host=127.0.0.1 port={port} user=x {options}"
    ));
    let (ok, stdout, stderr) = run(psql);
    assert!(ok, "psql failed: {stderr}");
    assert_eq!(stdout.trim(), format!("16MB\n{TIMELINE}"));

    // pg_receivewal from the first segment: an empty .partial file makes it start there
    // rather than at the segment of the server's position. It stops once it has received
    // WAL beyond --endpos (a strict comparison), so ask for one byte less than the end.
    let work = tempdir_for(&bin);
    let out = tool_dir(&bin, work.path(), "received");
    let first_partial = out.join(format!(
        "{}.partial",
        source
            .segment_size
            .file_name(1, source.start.segment_number(source.segment_size))
    ));
    File::create(&first_partial).unwrap();
    bin.chown_to_server_user(&first_partial).unwrap();
    let started = Instant::now();
    let mut receivewal = bin.command("pg_receivewal");
    receivewal
        .arg("-D")
        .arg(&out)
        .args(["--no-loop", "-v", "--status-interval=1", "--no-sync"])
        .arg(format!("--endpos={}", Lsn(source.end.0 - 1)))
        .arg("-d")
        .arg(format!(
            "host=127.0.0.1 port={port} user=x application_name=receiver {options}"
        ));
    let (ok, _, stderr) = run(receivewal);
    let elapsed = started.elapsed();
    assert!(ok, "pg_receivewal failed:\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "starting log streaming at {} (timeline 1)",
            source.start
        )),
        "{stderr}"
    );
    let received = received_bytes(&out, source.segment_size, source.start, source.end);
    let expected = source_bytes(&source, source.start, source.end);
    assert_eq!(received.len(), expected.len());
    assert!(received == expected, "received WAL differs from the source");
    eprintln!(
        "pg_receivewal received {} bytes ({} .. {}) in {elapsed:?}",
        received.len(),
        source.start,
        source.end
    );
    let feedback = served.timeline.feedback.lock().unwrap().clone();
    assert!(
        feedback
            .iter()
            .all(|f| f.application_name.as_deref() == Some("receiver")),
        "{feedback:?}"
    );

    // Without a .partial file, from the server's position, with the default timeline
    // (no ids given), pg_receivewal starts at the start of the commit LSN's segment.
    let out2 = tool_dir(&bin, work.path(), "received2");
    let mut receivewal = bin.command("pg_receivewal");
    receivewal
        .arg("-D")
        .arg(&out2)
        .args(["--no-loop", "-v", "--no-sync", "--slot=any_slot"])
        .arg(format!("--endpos={}", Lsn(source.end.0 - 1)))
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "x"]);
    let (ok, _, stderr) = run(receivewal);
    assert!(ok, "pg_receivewal failed:\n{stderr}");
    let last_segment_start = Lsn(source.end.0 - source.end.segment_offset(source.segment_size));
    assert_eq!(
        received_bytes(&out2, source.segment_size, last_segment_start, source.end),
        source_bytes(&source, last_segment_start, source.end)
    );

    // Asking for a timeline the safekeeper does not hold fails with a clear message.
    let out3 = tool_dir(&bin, work.path(), "received3");
    let mut receivewal = bin.command("pg_receivewal");
    receivewal
        .arg("-D")
        .arg(&out3)
        .args(["--no-loop", "-d"])
        .arg(format!(
            "host=127.0.0.1 port={port} user=x options='-c tenant_id={TIMELINE}'"
        ));
    let (ok, _, stderr) = run(receivewal);
    assert!(!ok);
    assert!(stderr.contains("not found on this safekeeper"), "{stderr}");

    served.stop();
}

fn free_port() -> u16 {
    pg_harness::unused_port().expect("an unused TCP port")
}

/// A standby cluster started with pg_ctl; stopped (immediately) on drop.
struct Standby {
    bin: PgBin,
    data: PathBuf,
    socket_dir: PathBuf,
    port: u16,
}

impl Standby {
    fn pg_ctl(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = self.bin.command("pg_ctl");
        cmd.arg("-D").arg(&self.data).args(args);
        run(cmd)
    }

    fn sql(&self, query: &str) -> String {
        let mut cmd = self.bin.command("psql");
        cmd.args(["-X", "-A", "-t", "-h"])
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                query,
            ]);
        let (ok, stdout, stderr) = run(cmd);
        assert!(ok, "{query}: {stderr}");
        stdout.trim().to_owned()
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }
}

#[test]
fn stock_standby_streams_and_replays_to_the_commit_lsn() {
    let server = PgServer::start(PgConfig::new().setting("wal_keep_size", "1GB")).unwrap();
    let bin = server.bin().clone();
    let work = tempdir_for(&bin);

    // A base backup taken before the workload, without WAL: the standby must stream all
    // WAL from the backup's start point from the safekeeper.
    let data = work.path().join("standby");
    let mut basebackup = bin.command("pg_basebackup");
    basebackup
        .arg("-D")
        .arg(&data)
        .args(["-X", "none", "-c", "fast", "--no-sync", "-d"])
        .arg(server.connstr());
    let (ok, _, stderr) = run(basebackup);
    assert!(ok, "pg_basebackup failed: {stderr}");

    let mut expected = String::new();
    let source = source_wal(server, |server| {
        workload(server);
        expected = server
            .sql("SELECT count(*), sum(id), sum(length(payload)) FROM t")
            .unwrap();
    });
    let served = serve_source(&source);

    let socket_dir = tool_dir(&bin, work.path(), "sock");
    let port = free_port();
    let conninfo = format!(
        "host=127.0.0.1 port={} user=x application_name=standby1 options=''-c tenant_id={TENANT} -c timeline_id={TIMELINE}''",
        served.port
    );
    let mut conf = fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.auto.conf"))
        .unwrap();
    std::io::Write::write_all(
        &mut conf,
        format!(
            "port = {port}\nunix_socket_directories = '{}'\nlisten_addresses = ''\n\
             primary_conninfo = '{conninfo}'\nhot_standby = on\nwal_retrieve_retry_interval = '1s'\n\
             wal_keep_size = 0\n",
            socket_dir.display()
        )
        .as_bytes(),
    )
    .unwrap();
    File::create(data.join("standby.signal")).unwrap();
    bin.chown_to_server_user(&data.join("standby.signal"))
        .unwrap();

    let standby = Standby {
        bin: bin.clone(),
        data: data.clone(),
        socket_dir,
        port,
    };
    let log = work.path().join("standby.log");
    File::create(&log).unwrap();
    bin.chown_to_server_user(&log).unwrap();
    let started = Instant::now();
    let (ok, _, stderr) =
        standby.pg_ctl(&["start", "-w", "-t", "120", "-l", log.to_str().unwrap()]);
    assert!(
        ok,
        "standby did not start: {stderr}\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );

    let deadline = Instant::now() + REPLAY_TIMEOUT;
    let replayed = loop {
        let lsn: Lsn = standby
            .sql("SELECT pg_last_wal_replay_lsn()")
            .parse()
            .unwrap_or_default();
        if lsn >= source.end || Instant::now() > deadline {
            break lsn;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log_text = fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        replayed, source.end,
        "standby replayed to {replayed}, not {}; log:\n{log_text}",
        source.end
    );
    eprintln!(
        "standby replayed {} .. {} in {:?}",
        source.start,
        source.end,
        started.elapsed()
    );
    assert!(
        log_text.contains("started streaming WAL from primary"),
        "{log_text}"
    );
    assert!(
        !log_text.contains("ERROR:") && !log_text.contains("FATAL:"),
        "the standby logged an error:\n{log_text}"
    );
    assert_eq!(
        standby.sql("SELECT count(*), sum(id), sum(length(payload)) FROM t"),
        expected
    );
    assert_eq!(
        standby.sql("SELECT status FROM pg_stat_wal_receiver"),
        "streaming"
    );

    // The standby reports its positions; the flush position reaches the commit LSN.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let feedback = served.timeline.feedback.lock().unwrap().clone();
        if feedback
            .iter()
            .any(|f| f.flush_lsn >= source.end && f.application_name.as_deref() == Some("standby1"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no standby status update at {}: {feedback:?}",
            source.end
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(standby);
    served.stop();
}
