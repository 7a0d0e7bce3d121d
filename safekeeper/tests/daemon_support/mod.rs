//! What the daemon tests share: starting the real `safekeeper` binary on free ports,
//! talking to it over gRPC and HTTP, real PostgreSQL 15 WAL to append, and the check
//! that the daemon logged no error a test did not expect.
//!
//! Every wait is bounded ([`WAIT`]), so a daemon that misbehaves fails the test with a
//! message instead of hanging it.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use consensus::messages::{
    AcceptorGreeting, AcceptorMessage, AppendRequest, AppendResponse, ProposerElected,
    ProposerGreeting, ProposerId, ProposerMessage, VoteRequest, VoteResponse,
};
use consensus::term_history::{Term, TermSwitch};
use postgres_wal::Lsn;
use safekeeper::daemon::{BoundPorts, PORTS_FILE};
use safekeeper::grpc::convert::{FromProto, ToProto};
use safekeeper::timeline::{NewTimeline, TimelineStatus};
use strata_ids::{TenantId, TenantTimelineId, TimelineId};
use strata_proto::safekeeper as pb;
use strata_proto::safekeeper::safekeeper_client::SafekeeperClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Status;

/// Longest wait for anything: startup, a reply, an exit.
pub const WAIT: Duration = Duration::from_secs(30);

/// The fixture: the first 256 KiB of a real PostgreSQL 15 segment with 1 MiB segments
/// (see `crates/postgres_wal/tests/fixtures/README.md`).
pub const FIXTURE_START: Lsn = Lsn(0x90_0000);
pub const FIXTURE_SYSTEM_ID: u64 = 7_710_843_402_050_422_558;
pub const FIXTURE_SEGMENT_SIZE: u32 = 1 << 20;
pub const PG_VERSION: u32 = 150_018;

const FIXTURE_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../crates/postgres_wal/tests/fixtures/"
);

pub fn fixture_wal() -> Vec<u8> {
    std::fs::read(format!("{FIXTURE_DIR}pg15_wal_1mb_segment_prefix")).expect("fixture")
}

/// The start LSNs of the fixture's records, from its `pg_waldump` output.
pub fn fixture_record_starts() -> Vec<Lsn> {
    let dump = std::fs::read_to_string(format!(
        "{FIXTURE_DIR}pg15_wal_1mb_segment_prefix.waldump.txt"
    ))
    .expect("fixture dump");
    dump.lines()
        .filter_map(|line| line.split(", lsn: ").nth(1))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .collect()
}

/// A record start at least `at_least` bytes into the fixture that does not directly
/// follow a page header, so that the record before it ends exactly there: appending
/// WAL up to it must make it the flush LSN.
pub fn fixture_boundary(at_least: u64) -> Lsn {
    fixture_record_starts()
        .into_iter()
        .find(|lsn| lsn.0 >= FIXTURE_START.0 + at_least && lsn.page_offset() > 40)
        .expect("a record boundary in the fixture")
}

pub fn timeline_id(n: u128) -> TenantTimelineId {
    TenantTimelineId {
        tenant_id: TenantId(0xfeed_0000_0000_0000_0000_0000_0000_0001),
        timeline_id: TimelineId(n),
    }
}

pub fn new_timeline(id: TenantTimelineId) -> NewTimeline {
    NewTimeline {
        id,
        system_id: FIXTURE_SYSTEM_ID,
        pg_version: PG_VERSION,
        wal_segment_size: FIXTURE_SEGMENT_SIZE,
        start_lsn: FIXTURE_START,
    }
}

pub fn greeting(id: TenantTimelineId) -> ProposerGreeting {
    ProposerGreeting {
        id,
        proposer_id: ProposerId(0xabc),
        system_id: FIXTURE_SYSTEM_ID,
        pg_version: PG_VERSION,
        wal_segment_size: FIXTURE_SEGMENT_SIZE,
    }
}

/// A running `safekeeper` process.
pub struct Daemon {
    pub data_dir: PathBuf,
    pub ports: BoundPorts,
    child: Option<Child>,
    log_path: PathBuf,
}

impl Daemon {
    /// The binary, with no arguments.
    pub fn command() -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_safekeeper"));
        command.env("RUST_LOG", "info");
        command
    }

    /// Start the daemon on `data_dir` with free ports, JSON logs, and extra
    /// environment variables; wait until `/health` says ready.
    pub fn start_with_env(data_dir: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut command = Daemon::command();
        command
            .args(["--id", "7", "--log-format", "json"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen-grpc", "127.0.0.1:0"])
            .args(["--listen-pg", "127.0.0.1:0"])
            .args(["--listen-http", "127.0.0.1:0"]);
        for (key, value) in env {
            command.env(key, value);
        }
        Daemon::launch(command, data_dir)
    }

    /// Spawn `command` (whose data directory is `data_dir`), logging to a file beside
    /// it, and wait until it is ready.
    pub fn launch(mut command: Command, data_dir: &Path) -> Daemon {
        let log_path = data_dir.with_extension(format!("{}.log", unique()));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the safekeeper binary");
        let pid = child.id();
        let mut daemon = Daemon {
            data_dir: data_dir.to_owned(),
            ports: BoundPorts {
                pid,
                grpc: SocketAddr::from(([0, 0, 0, 0], 0)),
                pg: SocketAddr::from(([0, 0, 0, 0], 0)),
                http: SocketAddr::from(([0, 0, 0, 0], 0)),
            },
            child: Some(child),
            log_path,
        };
        daemon.ports = daemon.wait_for(|d| d.read_ports().filter(|p| p.pid == pid), "ports file");
        daemon.wait_for(|d| (d.http_get("/health").0 == 200).then_some(()), "ready");
        daemon
    }

    pub fn start(data_dir: &Path) -> Daemon {
        Daemon::start_with_env(data_dir, &[])
    }

    fn read_ports(&self) -> Option<BoundPorts> {
        let text = std::fs::read_to_string(self.data_dir.join(PORTS_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn wait_for<T>(&mut self, mut probe: impl FnMut(&Daemon) -> Option<T>, what: &str) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = probe(self) {
                return value;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "safekeeper exited ({status}) waiting for {what}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.ports.pid
    }

    /// SIGTERM, and the exit status (bounded wait).
    pub fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        self.wait_exit()
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "safekeeper did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Log lines at ERROR level that contain none of `expected`.
    pub fn unexpected_errors(&self, expected: &[&str]) -> Vec<String> {
        self.log()
            .lines()
            .filter(|line| line.contains("\"level\":\"ERROR\""))
            .filter(|line| !expected.iter().any(|e| line.contains(e)))
            .map(str::to_owned)
            .collect()
    }

    pub fn assert_no_unexpected_errors(&self, expected: &[&str]) {
        let errors = self.unexpected_errors(expected);
        assert!(
            errors.is_empty(),
            "unexpected errors logged:\n{}",
            errors.join("\n")
        );
    }

    /// A plain HTTP/1.1 GET: (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.ports.http, WAIT) else {
            return (0, String::new());
        };
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return (0, String::new());
        }
        let mut response = String::new();
        if stream.read_to_string(&mut response).is_err() {
            return (0, String::new());
        }
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    pub async fn client(&self) -> SafekeeperClient<Channel> {
        SafekeeperClient::connect(format!("http://{}", self.ports.grpc))
            .await
            .expect("connect to the gRPC port")
    }

    pub fn metrics(&self) -> String {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200, "{body}");
        body
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A test that failed midway must not leave a daemon running.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub async fn create(
    client: &mut SafekeeperClient<Channel>,
    id: TenantTimelineId,
) -> TimelineStatus {
    let info = client
        .create_timeline(new_timeline(id).to_proto())
        .await
        .expect("create timeline")
        .into_inner();
    TimelineStatus::from_proto(info).unwrap()
}

pub async fn status(
    client: &mut SafekeeperClient<Channel>,
    id: TenantTimelineId,
) -> Result<TimelineStatus, Status> {
    let info = client.timeline_status(id.to_proto()).await?.into_inner();
    Ok(TimelineStatus::from_proto(info).unwrap())
}

/// One proposer stream, driven by hand.
pub struct Stream {
    tx: mpsc::Sender<pb::ProposerMessage>,
    rx: tonic::Streaming<pb::AcceptorMessage>,
}

impl Stream {
    /// Open a stream whose first message is `first` (normally a greeting).
    pub async fn open_raw(
        client: &mut SafekeeperClient<Channel>,
        first: pb::ProposerMessage,
    ) -> Result<Stream, Status> {
        let (tx, rx) = mpsc::channel(64);
        tx.send(first).await.unwrap();
        let rx = tokio::time::timeout(WAIT, client.propose(ReceiverStream::new(rx)))
            .await
            .expect("propose call timed out")?
            .into_inner();
        Ok(Stream { tx, rx })
    }

    /// Greet; the acceptor's greeting.
    pub async fn open(
        client: &mut SafekeeperClient<Channel>,
        greeting: ProposerGreeting,
    ) -> Result<(Stream, AcceptorGreeting), Status> {
        let first = ProposerMessage::Greeting(greeting).to_proto();
        let mut stream = Stream::open_raw(client, first).await?;
        match stream.recv().await? {
            AcceptorMessage::Greeting(g) => Ok((stream, g)),
            other => panic!("expected a greeting, got {other:?}"),
        }
    }

    pub async fn send(&self, message: ProposerMessage) {
        self.send_raw(message.to_proto()).await;
    }

    pub async fn send_raw(&self, message: pb::ProposerMessage) {
        // The server may have ended the stream; the next recv says why.
        let _ = self.tx.send(message).await;
    }

    /// The next reply, or the status that ended the stream.
    pub async fn recv(&mut self) -> Result<AcceptorMessage, Status> {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Err(_) => panic!("no reply within {WAIT:?}"),
            Ok(Err(status)) => Err(status),
            Ok(Ok(Some(message))) => Ok(AcceptorMessage::from_proto(message).unwrap()),
            Ok(Ok(None)) => Err(Status::cancelled("stream ended without a status")),
        }
    }

    /// The status that ends the stream, skipping replies before it.
    pub async fn error(&mut self) -> Status {
        loop {
            if let Err(status) = self.recv().await {
                return status;
            }
        }
    }

    /// Win `term` on this (single) acceptor: vote, then elected at its flush LSN.
    pub async fn elect(&mut self, term: u64) -> VoteResponse {
        self.send(ProposerMessage::VoteRequest(VoteRequest {
            term: Term(term),
        }))
        .await;
        let vote = match self.recv().await.expect("vote response") {
            AcceptorMessage::VoteResponse(v) => v,
            other => panic!("expected a vote response, got {other:?}"),
        };
        assert!(vote.vote_given, "{vote:?}");
        let mut history = vote.term_history.clone();
        history.0.push(TermSwitch {
            term: Term(term),
            lsn: vote.flush_lsn,
        });
        self.send(ProposerMessage::Elected(ProposerElected {
            term: Term(term),
            start_streaming_at: vote.flush_lsn,
            term_history: history,
        }))
        .await;
        vote
    }

    /// Append `wal` from `begin` in chunks of at most 128 KiB (pipelined), then wait
    /// for the reply acknowledging `expect_flush`.
    pub async fn append(
        &mut self,
        term: u64,
        begin: Lsn,
        wal: &[u8],
        commit_lsn: Lsn,
        expect_flush: Lsn,
    ) -> AppendResponse {
        let mut lsn = begin;
        for chunk in wal.chunks(consensus::limits::MAX_WAL_BYTES_PER_APPEND) {
            self.send(append_request(term, lsn, chunk, commit_lsn))
                .await;
            lsn = Lsn(lsn.0 + chunk.len() as u64);
        }
        if wal.is_empty() {
            self.send(append_request(term, lsn, &[], commit_lsn)).await;
        }
        loop {
            match self.recv().await.expect("append response") {
                AcceptorMessage::AppendResponse(r) if r.flush_lsn >= expect_flush => return r,
                AcceptorMessage::AppendResponse(r) => assert_eq!(r.term, Term(term)),
                other => panic!("expected an append response, got {other:?}"),
            }
        }
    }
}

pub fn append_request(term: u64, begin: Lsn, wal: &[u8], commit_lsn: Lsn) -> ProposerMessage {
    ProposerMessage::Append(AppendRequest {
        term: Term(term),
        begin_lsn: begin,
        end_lsn: Lsn(begin.0 + wal.len() as u64),
        commit_lsn,
        truncate_lsn: FIXTURE_START,
        wal: wal.to_vec(),
    })
}

/// Each line of a Prometheus text exposition is a comment (`# HELP`/`# TYPE`) or a
/// sample `name{labels} value`; returns the samples as (name with labels, value).
pub fn parse_exposition(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.split(' ');
            let kind = words.next().unwrap();
            assert!(
                kind == "HELP" || kind == "TYPE",
                "bad comment line {line:?}"
            );
            let name = words.next().unwrap_or_default();
            assert!(valid_metric_name(name), "bad metric name in {line:?}");
            if kind == "TYPE" {
                let ty = words.next().unwrap_or_default();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty),
                    "bad type in {line:?}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(valid_metric_name(name), "bad metric name in {line:?}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("bad labels in {line:?}"));
            for pair in inner.split(',') {
                let (key, value) = pair.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
                assert!(valid_metric_name(key), "bad label name in {line:?}");
                assert!(value.starts_with('"') && value.ends_with('"'), "{line:?}");
            }
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        samples.push((series.to_owned(), value));
    }
    samples
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The value of the sample named exactly `series` (with its labels, as printed).
pub fn sample(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
}

pub fn labels(id: TenantTimelineId) -> String {
    format!(
        "tenant_id=\"{}\",timeline_id=\"{}\"",
        id.tenant_id, id.timeline_id
    )
}

/// A gRPC codec that sends bytes as they are, to put malformed protobuf on the wire.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let len = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, len).to_vec()))
    }
}

/// Open a Propose stream whose first message is `bytes`, verbatim; the status the
/// call ends with.
pub async fn propose_raw(daemon: &Daemon, bytes: Vec<u8>) -> Status {
    let channel = Channel::from_shared(format!("http://{}", daemon.ports.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/strata.safekeeper.v1.Safekeeper/Propose",
    );
    let (tx, rx) = mpsc::channel(1);
    tx.send(bytes).await.unwrap();
    let call = grpc.streaming(tonic::Request::new(ReceiverStream::new(rx)), path, RawCodec);
    match tokio::time::timeout(WAIT, call)
        .await
        .expect("propose timed out")
    {
        Err(status) => status,
        Ok(response) => {
            let mut replies = response.into_inner();
            loop {
                match tokio::time::timeout(WAIT, replies.message())
                    .await
                    .expect("reply")
                {
                    Err(status) => return status,
                    Ok(None) => return Status::cancelled("ended without a status"),
                    Ok(Some(_)) => {}
                }
            }
        }
    }
}
