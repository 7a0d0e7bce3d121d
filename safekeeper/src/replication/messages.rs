//! The wire format: decoding frontend messages and encoding backend messages.
//!
//! Decoders work on a buffer that may hold a partial message: they return `Ok(None)` until
//! the whole message is there and then consume it. The length word is checked against the
//! limits before the body is waited for, so an oversized message is refused at once.
//! Nothing here panics on input: every read is bounds-checked.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_wal::Lsn;

use super::errors::PgError;
use super::limits::{
    MAX_ERROR_MESSAGE_BYTES, MAX_FRONTEND_MESSAGE_BYTES, MAX_STARTUP_PACKET_BYTES,
    MAX_STARTUP_PARAMETERS,
};

/// Protocol 3.0 as sent in a StartupMessage.
pub const PROTOCOL_3_0: u32 = 3 << 16;
/// The request codes that take the place of a protocol version.
pub const CANCEL_REQUEST_CODE: u32 = (1234 << 16) | 5678;
pub const SSL_REQUEST_CODE: u32 = (1234 << 16) | 5679;
pub const GSSENC_REQUEST_CODE: u32 = (1234 << 16) | 5680;

/// Type OIDs of the columns the safekeeper returns.
pub const TEXT_OID: u32 = 25;
pub const INT4_OID: u32 = 23;
pub const INT8_OID: u32 = 20;

/// Seconds from the Unix epoch to PostgreSQL's epoch (2000-01-01 00:00:00 UTC).
const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;

/// A malformed frontend message. The connection is closed after reporting it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid message length {length} (allowed {min}..={max})")]
    BadLength { length: u64, min: usize, max: usize },
    #[error("message {what} is truncated")]
    Truncated { what: &'static str },
    #[error("string in {what} is not terminated")]
    Unterminated { what: &'static str },
    #[error("string in {what} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str },
    #[error("{what} has {extra} unexpected trailing bytes")]
    TrailingBytes { what: &'static str, extra: usize },
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedProtocol { major: u32, minor: u32 },
    #[error("more than {max} startup parameters")]
    TooManyParameters { max: usize },
    #[error("invalid startup packet layout: expected terminator as last byte")]
    BadStartupLayout,
    #[error("invalid frontend message type {tag:?}")]
    UnknownMessageType { tag: char },
    #[error("invalid standby message: {0}")]
    BadStandbyMessage(String),
}

impl From<ProtocolError> for PgError {
    fn from(err: ProtocolError) -> Self {
        PgError::fatal(super::errors::sqlstate::PROTOCOL_VIOLATION, err.to_string())
    }
}

/// The first packet of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    Startup {
        /// Minor protocol version asked for (the major is always 3).
        minor_version: u32,
        /// Name/value pairs in the order sent.
        parameters: Vec<(String, String)>,
    },
    SslRequest,
    GssEncRequest,
    CancelRequest {
        process_id: u32,
        secret_key: u32,
    },
}

/// A regular frontend message (after startup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage {
    /// `Q`: a simple query (here a replication command).
    Query(String),
    /// `X`: the client is closing the connection.
    Terminate,
    /// `d`: CopyData (standby replies while streaming).
    CopyData(Bytes),
    /// `c`: CopyDone.
    CopyDone,
    /// `f`: CopyFail with the client's reason.
    CopyFail(String),
    /// Any other valid type byte: the extended query protocol, function calls, and so on,
    /// which a replication connection does not support.
    Unsupported(char),
}

/// Decode a startup packet (the first message of a connection, which has no type byte).
pub fn decode_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, ProtocolError> {
    let Some(length) = peek_u32(buf, 0) else {
        return Ok(None);
    };
    let length = check_length(length, 8, MAX_STARTUP_PACKET_BYTES)?;
    if buf.len() < length {
        return Ok(None);
    }
    let packet = buf.split_to(length).freeze();
    parse_startup_body(&packet[4..]).map(Some)
}

fn parse_startup_body(body: &[u8]) -> Result<StartupPacket, ProtocolError> {
    let mut reader = Reader::new(body, "startup packet");
    let code = reader.u32()?;
    match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
            reader.finish()?;
            Ok(if code == SSL_REQUEST_CODE {
                StartupPacket::SslRequest
            } else {
                StartupPacket::GssEncRequest
            })
        }
        CANCEL_REQUEST_CODE => {
            let process_id = reader.u32()?;
            let secret_key = reader.u32()?;
            reader.finish()?;
            Ok(StartupPacket::CancelRequest {
                process_id,
                secret_key,
            })
        }
        _ => {
            let (major, minor) = (code >> 16, code & 0xffff);
            if major != 3 {
                return Err(ProtocolError::UnsupportedProtocol { major, minor });
            }
            let parameters = parse_startup_parameters(&mut reader)?;
            Ok(StartupPacket::Startup {
                minor_version: minor,
                parameters,
            })
        }
    }
}

/// Name/value pairs, each a C string, ended by an empty name (a lone NUL).
fn parse_startup_parameters(
    reader: &mut Reader<'_>,
) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut parameters = Vec::new();
    loop {
        if reader.remaining() == 0 {
            return Err(ProtocolError::BadStartupLayout);
        }
        let name = reader.cstr()?;
        if name.is_empty() {
            reader
                .finish()
                .map_err(|_| ProtocolError::BadStartupLayout)?;
            return Ok(parameters);
        }
        let value = reader.cstr()?;
        if parameters.len() == MAX_STARTUP_PARAMETERS {
            return Err(ProtocolError::TooManyParameters {
                max: MAX_STARTUP_PARAMETERS,
            });
        }
        parameters.push((name, value));
    }
}

/// Decode one regular frontend message: a type byte, then a length word counting itself.
pub fn decode_message(buf: &mut BytesMut) -> Result<Option<FrontendMessage>, ProtocolError> {
    let Some(&tag) = buf.first() else {
        return Ok(None);
    };
    let Some(length) = peek_u32(buf, 1) else {
        return Ok(None);
    };
    let length = check_length(length, 4, MAX_FRONTEND_MESSAGE_BYTES)?;
    if buf.len() < 1 + length {
        return Ok(None);
    }
    let mut frame = buf.split_to(1 + length).freeze();
    frame.advance(5);
    parse_message(tag, frame).map(Some)
}

fn parse_message(tag: u8, body: Bytes) -> Result<FrontendMessage, ProtocolError> {
    match tag {
        b'Q' => {
            let mut reader = Reader::new(&body, "Query");
            let text = reader.cstr()?;
            reader.finish()?;
            Ok(FrontendMessage::Query(text))
        }
        b'X' => empty(&body, "Terminate", FrontendMessage::Terminate),
        b'c' => empty(&body, "CopyDone", FrontendMessage::CopyDone),
        b'd' => Ok(FrontendMessage::CopyData(body)),
        b'f' => {
            let mut reader = Reader::new(&body, "CopyFail");
            let reason = reader.cstr()?;
            reader.finish()?;
            Ok(FrontendMessage::CopyFail(reason))
        }
        // Extended query protocol, function call, and the authentication responses.
        b'P' | b'B' | b'E' | b'D' | b'C' | b'S' | b'H' | b'F' | b'p' => {
            Ok(FrontendMessage::Unsupported(char::from(tag)))
        }
        _ => Err(ProtocolError::UnknownMessageType {
            tag: char::from(tag),
        }),
    }
}

fn empty(
    body: &[u8],
    what: &'static str,
    message: FrontendMessage,
) -> Result<FrontendMessage, ProtocolError> {
    Reader::new(body, what).finish()?;
    Ok(message)
}

/// A message a streaming client sends inside CopyData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StandbyMessage {
    /// `r`: standby status update.
    Reply {
        write_lsn: Lsn,
        flush_lsn: Lsn,
        apply_lsn: Lsn,
        /// Client clock, microseconds since 2000-01-01.
        send_time: i64,
        reply_requested: bool,
    },
    /// `h`: hot standby feedback. Parsed and ignored: the safekeeper runs no queries.
    HotStandbyFeedback {
        send_time: i64,
        xmin: u32,
        xmin_epoch: u32,
        catalog_xmin: u32,
        catalog_xmin_epoch: u32,
    },
}

/// Parse the payload of a CopyData message received while streaming.
pub fn parse_standby_message(data: &[u8]) -> Result<StandbyMessage, ProtocolError> {
    let bad = |what: String| ProtocolError::BadStandbyMessage(what);
    let Some((&kind, rest)) = data.split_first() else {
        return Err(bad("empty CopyData".into()));
    };
    match kind {
        b'r' => {
            let mut reader = Reader::new(rest, "standby status update");
            let write_lsn = Lsn(reader.u64()?);
            let flush_lsn = Lsn(reader.u64()?);
            let apply_lsn = Lsn(reader.u64()?);
            let send_time = reader.i64()?;
            let reply_requested = reader.u8()? != 0;
            reader.finish()?;
            Ok(StandbyMessage::Reply {
                write_lsn,
                flush_lsn,
                apply_lsn,
                send_time,
                reply_requested,
            })
        }
        b'h' => {
            let mut reader = Reader::new(rest, "hot standby feedback");
            let send_time = reader.i64()?;
            let xmin = reader.u32()?;
            let xmin_epoch = reader.u32()?;
            let catalog_xmin = reader.u32()?;
            let catalog_xmin_epoch = reader.u32()?;
            reader.finish()?;
            Ok(StandbyMessage::HotStandbyFeedback {
                send_time,
                xmin,
                xmin_epoch,
                catalog_xmin,
                catalog_xmin_epoch,
            })
        }
        other => Err(bad(format!(
            "unexpected message type {:?}",
            char::from(other)
        ))),
    }
}

fn peek_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn check_length(length: u32, min: usize, max: usize) -> Result<usize, ProtocolError> {
    match usize::try_from(length) {
        Ok(len) if (min..=max).contains(&len) => Ok(len),
        _ => Err(ProtocolError::BadLength {
            length: u64::from(length),
            min,
            max,
        }),
    }
}

/// A bounds-checked cursor over a message body.
struct Reader<'a> {
    data: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], what: &'static str) -> Self {
        Reader { data, what }
    }

    fn remaining(&self) -> usize {
        self.data.len()
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let Some((head, rest)) = self.data.split_first_chunk::<N>() else {
            return Err(ProtocolError::Truncated { what: self.what });
        };
        self.data = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        self.take::<4>().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, ProtocolError> {
        self.take::<8>().map(u64::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, ProtocolError> {
        self.take::<8>().map(i64::from_be_bytes)
    }

    fn cstr(&mut self) -> Result<String, ProtocolError> {
        let Some(nul) = self.data.iter().position(|&b| b == 0) else {
            return Err(ProtocolError::Unterminated { what: self.what });
        };
        let text = std::str::from_utf8(&self.data[..nul])
            .map_err(|_| ProtocolError::InvalidUtf8 { what: self.what })?
            .to_owned();
        self.data = &self.data[nul + 1..];
        Ok(text)
    }

    fn finish(&self) -> Result<(), ProtocolError> {
        match self.data.len() {
            0 => Ok(()),
            extra => Err(ProtocolError::TrailingBytes {
                what: self.what,
                extra,
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Backend messages.

/// A column of a RowDescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub type_oid: u32,
}

impl Column {
    pub const fn text(name: &'static str) -> Self {
        Column {
            name,
            type_oid: TEXT_OID,
        }
    }

    fn type_len(self) -> i16 {
        match self.type_oid {
            INT4_OID => 4,
            INT8_OID => 8,
            _ => -1,
        }
    }
}

/// Writes backend messages into an output buffer.
#[derive(Debug, Default)]
pub struct BackendWriter {
    pub buf: BytesMut,
}

impl BackendWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Start a message of type `tag`; `finish` fills in its length.
    fn message(&mut self, tag: u8, body: impl FnOnce(&mut BytesMut)) {
        self.buf.put_u8(tag);
        let length_at = self.buf.len();
        self.buf.put_u32(0);
        body(&mut self.buf);
        let length = self.buf.len() - length_at;
        // Bodies are bounded by our own limits (a WAL chunk at most), far below 4 GiB.
        let length = u32::try_from(length).unwrap_or(u32::MAX);
        self.buf[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
    }

    /// The one-byte answer to SSLRequest and GSSENCRequest: not supported.
    pub fn encryption_refused(&mut self) {
        self.buf.put_u8(b'N');
    }

    pub fn authentication_ok(&mut self) {
        self.message(b'R', |b| b.put_u32(0));
    }

    /// NegotiateProtocolVersion: we speak 3.0 and do not know these `_pq_.` options.
    pub fn negotiate_protocol_version(&mut self, unrecognized: &[String]) {
        self.message(b'v', |b| {
            b.put_u32(PROTOCOL_3_0);
            b.put_u32(u32::try_from(unrecognized.len()).unwrap_or(0));
            for name in unrecognized {
                put_cstr(b, name);
            }
        });
    }

    pub fn parameter_status(&mut self, name: &str, value: &str) {
        self.message(b'S', |b| {
            put_cstr(b, name);
            put_cstr(b, value);
        });
    }

    pub fn backend_key_data(&mut self, process_id: u32, secret_key: u32) {
        self.message(b'K', |b| {
            b.put_u32(process_id);
            b.put_u32(secret_key);
        });
    }

    /// ReadyForQuery, idle (no transaction).
    pub fn ready_for_query(&mut self) {
        self.message(b'Z', |b| b.put_u8(b'I'));
    }

    pub fn error_response(&mut self, err: &PgError) {
        self.message(b'E', |b| {
            for (field, value) in [(b'S', err.severity.as_str()), (b'V', err.severity.as_str())] {
                b.put_u8(field);
                put_cstr(b, value);
            }
            b.put_u8(b'C');
            put_cstr(b, err.code);
            b.put_u8(b'M');
            put_cstr(b, truncate(&err.message));
            if let Some(detail) = &err.detail {
                b.put_u8(b'D');
                put_cstr(b, truncate(detail));
            }
            if let Some(hint) = &err.hint {
                b.put_u8(b'H');
                put_cstr(b, truncate(hint));
            }
            b.put_u8(0);
        });
    }

    pub fn row_description(&mut self, columns: &[Column]) {
        self.message(b'T', |b| {
            b.put_u16(u16::try_from(columns.len()).unwrap_or(0));
            for column in columns {
                put_cstr(b, column.name);
                b.put_u32(0); // table OID
                b.put_i16(0); // attribute number
                b.put_u32(column.type_oid);
                b.put_i16(column.type_len());
                b.put_i32(-1); // type modifier
                b.put_i16(0); // text format
            }
        });
    }

    /// A DataRow; `None` is SQL NULL.
    pub fn data_row(&mut self, values: &[Option<&str>]) {
        self.message(b'D', |b| {
            b.put_u16(u16::try_from(values.len()).unwrap_or(0));
            for value in values {
                match value {
                    Some(text) => {
                        b.put_i32(i32::try_from(text.len()).unwrap_or(0));
                        b.put_slice(text.as_bytes());
                    }
                    None => b.put_i32(-1),
                }
            }
        });
    }

    pub fn command_complete(&mut self, tag: &str) {
        self.message(b'C', |b| put_cstr(b, tag));
    }

    /// CopyBothResponse, text format, no columns, as the walsender sends.
    pub fn copy_both_response(&mut self) {
        self.message(b'W', |b| {
            b.put_u8(0);
            b.put_u16(0);
        });
    }

    pub fn copy_done(&mut self) {
        self.message(b'c', |_| {});
    }

    /// CopyData carrying XLogData (`w`): WAL starting at `start`.
    pub fn xlog_data(&mut self, start: Lsn, wal_end: Lsn, send_time: i64, wal: &[u8]) {
        self.message(b'd', |b| {
            b.put_u8(b'w');
            b.put_u64(start.0);
            b.put_u64(wal_end.0);
            b.put_i64(send_time);
            b.put_slice(wal);
        });
    }

    /// CopyData carrying a primary keepalive (`k`).
    pub fn keepalive(&mut self, wal_end: Lsn, send_time: i64, reply_requested: bool) {
        self.message(b'd', |b| {
            b.put_u8(b'k');
            b.put_u64(wal_end.0);
            b.put_i64(send_time);
            b.put_u8(u8::from(reply_requested));
        });
    }
}

fn put_cstr(buf: &mut BytesMut, text: &str) {
    // A NUL inside would end the string early on the client's side; drop it.
    buf.extend(text.bytes().filter(|&b| b != 0));
    buf.put_u8(0);
}

fn truncate(text: &str) -> &str {
    if text.len() <= MAX_ERROR_MESSAGE_BYTES {
        return text;
    }
    let mut end = MAX_ERROR_MESSAGE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Now as a PostgreSQL `TimestampTz`: microseconds since 2000-01-01 00:00:00 UTC.
pub fn pg_now() -> i64 {
    let since_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let micros = i64::try_from(since_unix.as_micros()).unwrap_or(i64::MAX);
    micros.saturating_sub(PG_EPOCH_UNIX_SECS * 1_000_000)
}

#[cfg(test)]
#[path = "messages_tests.rs"]
mod tests;
