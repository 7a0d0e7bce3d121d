//! Whole sessions driven in memory: a scripted client on one end of a duplex pipe, the
//! session on the other, a timeline whose WAL is a byte vector.

use std::sync::Mutex;

use bytes::{BufMut, BytesMut};
use strata_ids::{TenantId, TenantTimelineId, TimelineId};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;

use super::*;
use crate::replication::messages::{PROTOCOL_3_0, SSL_REQUEST_CODE};
use crate::replication::ReaderFeedback;

const SYSTEM_ID: u64 = 7_301_234_567_890_123_456;
const WAL_START: u64 = 0x100_0000;
const SEGMENT: u32 = 16 << 20;

struct MemoryTimeline {
    id: TenantTimelineId,
    wal: Vec<u8>,
    commit_rx: watch::Receiver<Lsn>,
    feedback: Mutex<Vec<ReaderFeedback>>,
}

impl ReplicationTimeline for MemoryTimeline {
    fn id(&self) -> TenantTimelineId {
        self.id
    }
    fn system_id(&self) -> u64 {
        SYSTEM_ID
    }
    fn wal_segment_size(&self) -> u32 {
        SEGMENT
    }
    fn timeline_start_lsn(&self) -> Lsn {
        Lsn(WAL_START)
    }
    fn commit_lsn(&self) -> watch::Receiver<Lsn> {
        self.commit_rx.clone()
    }
    fn read_wal(&self, lsn: Lsn, buf: &mut [u8]) -> std::io::Result<usize> {
        let commit = *self.commit_rx.borrow();
        assert!(
            lsn.0 >= WAL_START && lsn < commit,
            "read at {lsn} outside the served range"
        );
        let from = usize::try_from(lsn.0 - WAL_START).unwrap();
        // Short reads on purpose, to exercise the caller's loop.
        let n = buf.len().min(self.wal.len() - from).min(50_000);
        buf[..n].copy_from_slice(&self.wal[from..from + n]);
        Ok(n)
    }
    fn reader_feedback(&self, feedback: &ReaderFeedback) {
        self.feedback.lock().unwrap().push(feedback.clone());
    }
}

struct Source {
    timeline: Arc<MemoryTimeline>,
    commit_tx: Mutex<Option<watch::Sender<Lsn>>>,
    asked: Mutex<Vec<(Option<TenantId>, Option<TimelineId>)>>,
}

impl TimelineSource for Source {
    fn resolve(
        &self,
        tenant: Option<TenantId>,
        timeline: Option<TimelineId>,
    ) -> Result<Arc<dyn ReplicationTimeline>, ResolveError> {
        self.asked.lock().unwrap().push((tenant, timeline));
        match (tenant, timeline) {
            (Some(t), _) if t != self.timeline.id.tenant_id => {
                Err(ResolveError::NotFound { tenant, timeline })
            }
            _ => Ok(self.timeline.clone()),
        }
    }
}

fn source(wal_len: usize, commit_len: u64) -> Arc<Source> {
    let wal: Vec<u8> = (0..wal_len).map(|i| (i * 7 % 251) as u8).collect();
    let (commit_tx, commit_rx) = watch::channel(Lsn(WAL_START + commit_len));
    Arc::new(Source {
        timeline: Arc::new(MemoryTimeline {
            id: TenantTimelineId {
                tenant_id: TenantId(1),
                timeline_id: TimelineId(2),
            },
            wal,
            commit_rx,
            feedback: Mutex::new(Vec::new()),
        }),
        commit_tx: Mutex::new(Some(commit_tx)),
        asked: Mutex::new(Vec::new()),
    })
}

impl Source {
    fn set_commit_lsn(&self, lsn: u64) {
        self.commit_tx
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .send(Lsn(lsn))
            .unwrap();
    }

    /// Drop the commit LSN's sender, as deleting the timeline does.
    fn close(&self) {
        self.commit_tx.lock().unwrap().take();
    }
}

struct Client {
    io: DuplexStream,
    session: JoinHandle<Result<(), SessionError>>,
    shutdown_tx: watch::Sender<bool>,
}

fn spawn(source: Arc<Source>) -> Client {
    let (client, server) = tokio::io::duplex(1 << 20);
    let (reader, writer) = tokio::io::split(server);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let session = tokio::spawn(run_session(
        Connection::new(reader, writer),
        source,
        shutdown_rx,
        (1, 2),
    ));
    Client {
        io: client,
        session,
        shutdown_tx,
    }
}

impl Client {
    async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    async fn startup(&mut self, params: &[(&str, &str)]) {
        let mut body = BytesMut::new();
        body.put_u32(PROTOCOL_3_0);
        for (name, value) in params {
            body.put_slice(name.as_bytes());
            body.put_u8(0);
            body.put_slice(value.as_bytes());
            body.put_u8(0);
        }
        body.put_u8(0);
        let mut packet = BytesMut::new();
        packet.put_u32(u32::try_from(body.len() + 4).unwrap());
        packet.put_slice(&body);
        self.send_raw(&packet).await;
    }

    async fn send(&mut self, tag: u8, body: &[u8]) {
        let mut msg = vec![tag];
        msg.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
        msg.extend_from_slice(body);
        self.send_raw(&msg).await;
    }

    async fn query(&mut self, text: &str) {
        let mut body = text.as_bytes().to_vec();
        body.push(0);
        self.send(b'Q', &body).await;
    }

    /// The next backend message, or `None` at end of stream.
    async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        let timeout = std::time::Duration::from_secs(10);
        let mut header = [0u8; 5];
        match tokio::time::timeout(timeout, self.io.read_exact(&mut header))
            .await
            .expect("no message within 10 s")
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) => panic!("{e}"),
        }
        let len = u32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        self.io.read_exact(&mut body).await.unwrap();
        Some((header[0], body))
    }

    async fn expect(&mut self, tag: u8) -> Vec<u8> {
        match self.recv().await {
            Some((t, body)) if t == tag => body,
            other => panic!("expected {:?}, got {other:?}", char::from(tag)),
        }
    }

    /// Startup with defaults and read everything up to ReadyForQuery; returns the
    /// ParameterStatus pairs.
    async fn connect(&mut self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut params = vec![
            ("user", "x"),
            ("database", "replication"),
            ("replication", "true"),
        ];
        params.extend_from_slice(extra);
        self.startup(&params).await;
        assert_eq!(self.expect(b'R').await, [0, 0, 0, 0]);
        let mut status = Vec::new();
        loop {
            match self.recv().await {
                Some((b'S', body)) => {
                    let fields = cstrings(&body);
                    status.push((fields[0].clone(), fields[1].clone()));
                }
                Some((b'K', body)) => assert_eq!(body.len(), 8),
                Some((b'Z', body)) => {
                    assert_eq!(body, b"I");
                    return status;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Run a query answered by one row; returns the row's values.
    async fn query_row(&mut self, text: &str) -> Vec<Option<String>> {
        self.query(text).await;
        self.expect(b'T').await;
        let row = data_row(&self.expect(b'D').await);
        self.expect(b'C').await;
        self.expect(b'Z').await;
        row
    }

    /// Run a query that must fail with `code`; returns the message.
    async fn query_error(&mut self, text: &str, code: &str) -> String {
        self.query(text).await;
        let fields = error_fields(&self.expect(b'E').await);
        assert_eq!(
            fields.get(&'C').map(String::as_str),
            Some(code),
            "{text}: {fields:?}"
        );
        assert_eq!(fields.get(&'S').map(String::as_str), Some("ERROR"));
        self.expect(b'Z').await;
        fields[&'M'].clone()
    }

    /// Expect a FATAL error with `code`, then the end of the connection.
    async fn expect_fatal(mut self, code: &str) -> String {
        let fields = error_fields(&self.expect(b'E').await);
        assert_eq!(
            fields.get(&'S').map(String::as_str),
            Some("FATAL"),
            "{fields:?}"
        );
        assert_eq!(
            fields.get(&'C').map(String::as_str),
            Some(code),
            "{fields:?}"
        );
        assert_eq!(self.recv().await, None);
        assert!(matches!(
            self.session.await.unwrap(),
            Err(SessionError::Reported(_))
        ));
        fields[&'M'].clone()
    }
}

fn cstrings(body: &[u8]) -> Vec<String> {
    body.split(|&b| b == 0)
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect()
}

fn error_fields(body: &[u8]) -> std::collections::HashMap<char, String> {
    let mut fields = std::collections::HashMap::new();
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let nul = tail.iter().position(|&b| b == 0).unwrap();
        fields.insert(
            char::from(kind),
            String::from_utf8(tail[..nul].to_vec()).unwrap(),
        );
        rest = &tail[nul + 1..];
    }
    fields
}

fn data_row(body: &[u8]) -> Vec<Option<String>> {
    let n = u16::from_be_bytes([body[0], body[1]]);
    let mut at = 2;
    let mut values = Vec::new();
    for _ in 0..n {
        let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
        at += 4;
        if len < 0 {
            values.push(None);
        } else {
            let len = len as usize;
            values.push(Some(
                String::from_utf8(body[at..at + len].to_vec()).unwrap(),
            ));
            at += len;
        }
    }
    values
}

fn reply(write: u64, reply_requested: bool) -> Vec<u8> {
    let mut body = vec![b'r'];
    for v in [write, write, 0u64] {
        body.extend_from_slice(&v.to_be_bytes());
    }
    body.extend_from_slice(&0i64.to_be_bytes());
    body.push(u8::from(reply_requested));
    body
}

/// Read XLogData messages until `until`, checking contiguity; returns the WAL.
async fn receive_wal(client: &mut Client, from: u64, until: u64) -> Vec<u8> {
    let mut wal = Vec::new();
    let mut next = from;
    while next < until {
        let body = client.expect(b'd').await;
        if body[0] == b'k' {
            continue;
        }
        assert_eq!(body[0], b'w');
        let start = u64::from_be_bytes(body[1..9].try_into().unwrap());
        assert_eq!(start, next, "XLogData out of order");
        let data = &body[25..];
        assert!(data.len() <= crate::replication::limits::MAX_WAL_CHUNK_BYTES);
        assert!(!data.is_empty());
        wal.extend_from_slice(data);
        next += data.len() as u64;
    }
    assert_eq!(next, until, "sent past the commit LSN");
    wal
}

#[tokio::test]
async fn handshake_reports_what_pg_receivewal_checks() {
    let mut client = spawn(source(1000, 1000));
    let mut ssl = Vec::new();
    ssl.extend_from_slice(&8u32.to_be_bytes());
    ssl.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    client.send_raw(&ssl).await;
    let mut answer = [0u8; 1];
    client.io.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    let status = client
        .connect(&[("application_name", "pg_receivewal")])
        .await;
    let get = |name: &str| {
        status
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("integer_datetimes").as_deref(), Some("on"));
    assert_eq!(get("server_version").as_deref(), Some(SERVER_VERSION));
    assert_eq!(get("application_name").as_deref(), Some("pg_receivewal"));
    client.send(b'X', b"").await;
    assert_eq!(client.recv().await, None);
    client.session.await.unwrap().unwrap();
}

#[tokio::test]
async fn commands_answer_like_a_walsender() {
    let mut client = spawn(source(1000, 800));
    client.connect(&[]).await;
    let row = client.query_row("IDENTIFY_SYSTEM").await;
    assert_eq!(
        row,
        vec![
            Some(SYSTEM_ID.to_string()),
            Some("1".into()),
            Some("0/1000320".into()),
            None
        ]
    );
    assert_eq!(
        client.query_row("SHOW wal_segment_size").await,
        vec![Some("16MB".into())]
    );
    assert_eq!(
        client.query_row("SHOW data_directory_mode").await,
        vec![Some("0700".into())]
    );
    assert_eq!(
        client.query_row("SHOW server_version_num;").await,
        vec![Some("150000".into())]
    );
    assert_eq!(
        client.query_row("SHOW tenant_id").await,
        vec![Some("00000000000000000000000000000001".into())]
    );
    assert_eq!(
        client.query_row("READ_REPLICATION_SLOT s").await,
        vec![Some("physical".into()), None, None]
    );
    let message = client.query_error("SHOW shared_buffers", "42704").await;
    assert_eq!(
        message,
        "unrecognized configuration parameter \"shared_buffers\""
    );
    client.query_error("TIMELINE_HISTORY 1", "58P01").await;
    client.query_error("", "0A000").await;
    client.query_error("SELECT 1", "0A000").await;
    client.query_error("BASE_BACKUP", "0A000").await;
    client.query_error("START_REPLICATION", "42601").await;
    let ahead = client
        .query_error("START_REPLICATION 0/1000321 TIMELINE 1", "XX000")
        .await;
    assert_eq!(
        ahead,
        "requested starting point 0/1000321 is ahead of the WAL flush position of this server 0/1000320"
    );
    let removed = client
        .query_error("START_REPLICATION 0/FFFFFF", "58P01")
        .await;
    assert_eq!(
        removed,
        "requested WAL segment 000000010000000000000000 has already been removed"
    );
    client
        .query_error("START_REPLICATION 0/1000000 TIMELINE 2", "XX000")
        .await;
    // Copy messages outside COPY are ignored; the connection still works.
    client.send(b'c', b"").await;
    client.send(b'd', b"junk").await;
    assert_eq!(
        client.query_row("IDENTIFY_SYSTEM").await[1].as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn streams_wal_up_to_the_commit_lsn_and_follows_it() {
    let src = source(600_000, 300_001);
    let mut client = spawn(src.clone());
    client.connect(&[("application_name", "walreceiver")]).await;
    client
        .query("START_REPLICATION SLOT \"s\" PHYSICAL 0/1000000 TIMELINE 1")
        .await;
    assert_eq!(client.expect(b'W').await, [0, 0, 0]);
    let first = receive_wal(&mut client, WAL_START, WAL_START + 300_001).await;
    assert_eq!(first, src.timeline.wal[..300_001]);

    // A reply asking for one is answered with a keepalive at the sent position.
    client.send(b'd', &reply(WAL_START + 300_001, true)).await;
    let keepalive = client.expect(b'd').await;
    assert_eq!(keepalive[0], b'k');
    assert_eq!(
        u64::from_be_bytes(keepalive[1..9].try_into().unwrap()),
        WAL_START + 300_001
    );
    let feedback = src.timeline.feedback.lock().unwrap().clone();
    assert_eq!(
        feedback.last().map(|f| f.flush_lsn),
        Some(Lsn(WAL_START + 300_001))
    );
    assert_eq!(feedback[0].application_name.as_deref(), Some("walreceiver"));

    // Hot standby feedback is accepted and ignored.
    let mut hs = vec![b'h'];
    hs.extend_from_slice(&[0u8; 24]);
    client.send(b'd', &hs).await;

    src.set_commit_lsn(WAL_START + 600_000);
    let second = receive_wal(&mut client, WAL_START + 300_001, WAL_START + 600_000).await;
    assert_eq!(second, src.timeline.wal[300_001..]);

    // CopyDone ends streaming: CopyDone, CommandComplete, ReadyForQuery; then commands work.
    client.send(b'c', b"").await;
    loop {
        let (tag, body) = client.recv().await.unwrap();
        if tag == b'c' {
            break;
        }
        assert_eq!(
            (tag, body[0]),
            (b'd', b'k'),
            "only keepalives may precede CopyDone"
        );
    }
    assert_eq!(client.expect(b'C').await, b"START_REPLICATION\0");
    client.expect(b'Z').await;
    assert_eq!(
        client.query_row("IDENTIFY_SYSTEM").await[2].as_deref(),
        Some("0/10927C0")
    );
    client.send(b'X', b"").await;
    client.session.await.unwrap().unwrap();
}

#[tokio::test]
async fn streaming_from_the_commit_lsn_sends_nothing_until_it_moves() {
    let src = source(5000, 4000);
    let mut client = spawn(src.clone());
    client.connect(&[]).await;
    client.query("START_REPLICATION 0/1000FA0").await;
    client.expect(b'W').await;
    src.set_commit_lsn(WAL_START + 5000);
    assert_eq!(
        receive_wal(&mut client, WAL_START + 4000, WAL_START + 5000).await,
        src.timeline.wal[4000..]
    );
    // Terminate while streaming closes quietly.
    client.send(b'X', b"").await;
    assert_eq!(client.recv().await, None);
    client.session.await.unwrap().unwrap();
}

#[tokio::test]
async fn timeline_ids_in_options_reach_the_source() {
    let src = source(10, 10);
    let mut client = spawn(src.clone());
    let options = "-c tenant_id=00000000000000000000000000000001 -c timeline_id=00000000000000000000000000000002";
    client.connect(&[("options", options)]).await;
    assert_eq!(
        src.asked.lock().unwrap().as_slice(),
        [(Some(TenantId(1)), Some(TimelineId(2)))]
    );

    let mut client = spawn(src.clone());
    client
        .startup(&[
            ("user", "x"),
            ("replication", "true"),
            ("tenant_id", "00000000000000000000000000000009"),
        ])
        .await;
    let message = client.expect_fatal("3D000").await;
    assert!(message.contains("not found"), "{message}");
}

#[tokio::test]
async fn bad_startups_are_fatal() {
    let mut client = spawn(source(10, 10));
    client
        .startup(&[("user", "x"), ("database", "postgres")])
        .await;
    client.expect_fatal("0A000").await;

    let mut client = spawn(source(10, 10));
    client.startup(&[("replication", "true")]).await;
    client.expect_fatal("28000").await;

    let mut client = spawn(source(10, 10));
    client.send_raw(&[0, 0, 0, 8, 0, 2, 0, 0]).await;
    client.expect_fatal("08P01").await;

    // An oversized startup packet is refused from its length word alone.
    let mut client = spawn(source(10, 10));
    client.send_raw(&[0x7f, 0xff, 0xff, 0xff]).await;
    client.expect_fatal("08P01").await;

    // A CancelRequest is ignored and the connection closed.
    let mut client = spawn(source(10, 10));
    client
        .send_raw(&[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 2])
        .await;
    assert_eq!(client.recv().await, None);
    client.session.await.unwrap().unwrap();
}

#[tokio::test]
async fn malformed_messages_close_the_connection() {
    // Oversized: refused before the body arrives.
    let mut client = spawn(source(10, 10));
    client.connect(&[]).await;
    client.send_raw(&[b'Q', 0x10, 0, 0, 0]).await;
    client.expect_fatal("08P01").await;

    // Unknown type byte.
    let mut client = spawn(source(10, 10));
    client.connect(&[]).await;
    client.send(b'?', b"").await;
    client.expect_fatal("08P01").await;

    // Extended query protocol.
    let mut client = spawn(source(10, 10));
    client.connect(&[]).await;
    client.send(b'P', b"\0SELECT 1\0\0\0").await;
    let message = client.expect_fatal("08P01").await;
    assert!(message.contains("extended query protocol"), "{message}");

    // A query without its terminator.
    let mut client = spawn(source(10, 10));
    client.connect(&[]).await;
    client.send(b'Q', b"IDENTIFY_SYSTEM").await;
    client.expect_fatal("08P01").await;

    // A garbled standby reply while streaming.
    let mut client = spawn(source(10, 10));
    client.connect(&[]).await;
    client.query("START_REPLICATION 0/1000000").await;
    client.expect(b'W').await;
    receive_wal(&mut client, WAL_START, WAL_START + 10).await;
    client.send(b'd', b"r\x01").await;
    client.expect_fatal("08P01").await;

    // A query while streaming.
    let mut client = spawn(source(10, 10));
    client.connect(&[]).await;
    client.query("START_REPLICATION 0/1000000").await;
    client.expect(b'W').await;
    client.query("IDENTIFY_SYSTEM").await;
    receive_wal(&mut client, WAL_START, WAL_START + 10).await;
    client.expect_fatal("08P01").await;

    // The client vanishing mid-message is not an error worth more than a log line.
    let mut client = spawn(source(10, 10));
    client.connect(&[]).await;
    client.send_raw(&[b'Q', 0, 0, 0, 20, b'I']).await;
    drop(client.io);
    assert!(matches!(
        client.session.await.unwrap(),
        Err(SessionError::Read(ReadError::UnexpectedEof))
    ));
}

#[tokio::test]
async fn shutdown_ends_streaming_with_admin_shutdown() {
    let mut client = spawn(source(10, 10));
    client.connect(&[]).await;
    client.query("START_REPLICATION 0/1000000").await;
    client.expect(b'W').await;
    receive_wal(&mut client, WAL_START, WAL_START + 10).await;
    client.shutdown_tx.send(true).unwrap();
    client.expect_fatal("57P01").await;
}

#[tokio::test]
async fn a_deleted_timeline_ends_streaming_after_the_committed_wal() {
    let src = source(10, 10);
    let mut client = spawn(src.clone());
    client.connect(&[]).await;
    client.query("START_REPLICATION 0/1000000").await;
    client.expect(b'W').await;
    receive_wal(&mut client, WAL_START, WAL_START + 10).await;
    src.close();
    client.expect_fatal("57P01").await;
}

#[test]
fn byte_settings_show_like_postgresql() {
    assert_eq!(format_bytes(16 << 20), "16MB");
    assert_eq!(format_bytes(1 << 30), "1GB");
    assert_eq!(format_bytes(1 << 20), "1MB");
    assert_eq!(format_bytes(3 << 10), "3kB");
    assert_eq!(format_bytes(1000), "1000B");
}
