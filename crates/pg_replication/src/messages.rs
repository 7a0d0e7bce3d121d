//! The messages of the PostgreSQL frontend/backend protocol (3.0) that a physical
//! replication client exchanges, as pure encoding and decoding functions.
//!
//! Backend messages are a type byte, a 4-byte big-endian length that counts itself,
//! and a body. Inside `CopyBoth` mode each `CopyData` body carries a replication
//! message of its own: `w` (XLogData) and `k` (primary keepalive) from the server, `r`
//! (standby status update) from us. Every length read from the wire is checked before
//! it is used; nothing here panics on any input.

use postgres_wal::Lsn;

use crate::limits::MAX_PG_MESSAGE_BYTES;
use crate::ReplicationError;

/// Protocol 3.0, as `StartupMessage` announces it.
const PROTOCOL_VERSION: i32 = 3 << 16;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01), for the
/// timestamps of replication messages.
const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800 * 1_000_000;

/// Bytes of a backend message's header: type and length.
pub const HEADER_BYTES: usize = 5;

/// One whole backend message: its type byte and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendMessage {
    pub tag: u8,
    pub body: Vec<u8>,
}

/// If `buf` starts with a whole message, take it out of `buf`.
pub fn take_message(buf: &mut Vec<u8>) -> Result<Option<BackendMessage>, ReplicationError> {
    let Some(header) = buf.get(..HEADER_BYTES) else {
        return Ok(None);
    };
    let tag = header[0];
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    // The length counts its own 4 bytes.
    let body_len = usize::try_from(len)
        .ok()
        .and_then(|len| len.checked_sub(4))
        .filter(|&n| n <= MAX_PG_MESSAGE_BYTES)
        .ok_or(ReplicationError::Protocol(format!(
            "message '{}' has an invalid length {len} (limit {MAX_PG_MESSAGE_BYTES})",
            tag as char
        )))?;
    if buf.len() < HEADER_BYTES + body_len {
        return Ok(None);
    }
    let body = buf[HEADER_BYTES..HEADER_BYTES + body_len].to_vec();
    buf.drain(..HEADER_BYTES + body_len);
    Ok(Some(BackendMessage { tag, body }))
}

/// `StartupMessage` with the given parameters (name, value).
pub fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = PROTOCOL_VERSION.to_be_bytes().to_vec();
    for (name, value) in params {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn frontend(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// `Query` (simple query protocol): how replication commands are sent.
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    frontend(b'Q', &body)
}

/// `Terminate`.
pub fn terminate() -> Vec<u8> {
    frontend(b'X', &[])
}

/// `CopyDone`: we end our side of the copy.
pub fn copy_done() -> Vec<u8> {
    frontend(b'c', &[])
}

/// A standby status update (`r` in `CopyData`): the positions we report, and whether
/// we want an immediate keepalive back.
pub fn standby_status(write: Lsn, flush: Lsn, apply: Lsn, now_unix_micros: i64) -> Vec<u8> {
    let mut body = Vec::with_capacity(34);
    body.push(b'r');
    body.extend_from_slice(&write.0.to_be_bytes());
    body.extend_from_slice(&flush.0.to_be_bytes());
    body.extend_from_slice(&apply.0.to_be_bytes());
    body.extend_from_slice(&(now_unix_micros - POSTGRES_EPOCH_UNIX_MICROS).to_be_bytes());
    body.push(0);
    frontend(b'd', &body)
}

/// What a `CopyData` of a physical replication stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyMessage {
    /// WAL starting at `start`.
    XLogData { start: Lsn, wal: Vec<u8> },
    /// The server's WAL end, and whether it wants a status update at once.
    Keepalive { wal_end: Lsn, reply_requested: bool },
}

fn be_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let slice = bytes.get(at..at + 8)?;
    let mut array = [0; 8];
    array.copy_from_slice(slice);
    Some(u64::from_be_bytes(array))
}

/// Decode the body of a `CopyData` message of the replication stream.
pub fn parse_copy_data(body: &[u8]) -> Result<CopyMessage, ReplicationError> {
    let short =
        || ReplicationError::Protocol(format!("CopyData of {} bytes is too short", body.len()));
    match body.first() {
        // 'w', dataStart, walEnd, sendTime, then the WAL.
        Some(b'w') => {
            let start = be_u64(body, 1).ok_or_else(short)?;
            let wal = body.get(25..).ok_or_else(short)?.to_vec();
            Ok(CopyMessage::XLogData {
                start: Lsn(start),
                wal,
            })
        }
        // 'k', walEnd, sendTime, replyRequested.
        Some(b'k') => {
            let wal_end = be_u64(body, 1).ok_or_else(short)?;
            let reply = *body.get(17).ok_or_else(short)?;
            Ok(CopyMessage::Keepalive {
                wal_end: Lsn(wal_end),
                reply_requested: reply != 0,
            })
        }
        Some(other) => Err(ReplicationError::Protocol(format!(
            "unexpected replication message '{}'",
            *other as char
        ))),
        None => Err(short()),
    }
}

/// The fields of an `ErrorResponse` or `NoticeResponse` worth showing: severity,
/// SQLSTATE and message, as `ERROR 42704: replication slot "x" does not exist`.
pub fn parse_error_fields(body: &[u8]) -> String {
    let mut severity = String::new();
    let mut code = String::new();
    let mut message = String::new();
    for field in body.split(|&b| b == 0) {
        let Some((&kind, value)) = field.split_first() else {
            continue;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        match kind {
            b'V' => severity = value,
            b'S' if severity.is_empty() => severity = value,
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
    }
    format!("{severity} {code}: {message}")
}

/// The text columns of a `DataRow` (`None` for NULL).
pub fn parse_data_row(body: &[u8]) -> Result<Vec<Option<String>>, ReplicationError> {
    let bad = || ReplicationError::Protocol("malformed DataRow".to_owned());
    let count = u16::from_be_bytes([
        *body.first().ok_or_else(bad)?,
        *body.get(1).ok_or_else(bad)?,
    ]);
    let mut at = 2;
    let mut columns = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len_bytes = body.get(at..at + 4).ok_or_else(bad)?;
        let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        at += 4;
        if len < 0 {
            columns.push(None);
            continue;
        }
        let value = body.get(at..at + len as usize).ok_or_else(bad)?;
        columns.push(Some(String::from_utf8_lossy(value).into_owned()));
        at += len as usize;
    }
    Ok(columns)
}

/// The authentication request code of an `R` message (0 = OK).
pub fn auth_code(body: &[u8]) -> Result<i32, ReplicationError> {
    let bytes = body
        .get(..4)
        .ok_or_else(|| ReplicationError::Protocol("short authentication message".to_owned()))?;
    Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Microseconds since the Unix epoch, for status updates (a clock before 1970 reports
/// 0: the field is informational only).
pub fn now_unix_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(tag: u8, body: &[u8]) -> Vec<u8> {
        frontend(tag, body)
    }

    #[test]
    fn messages_are_taken_whole_and_only_whole() {
        let mut wire = backend(b'Z', b"I");
        wire.extend(backend(b'C', b"IDENTIFY_SYSTEM\0"));
        let mut buf = Vec::new();
        for (i, byte) in wire.iter().enumerate() {
            buf.push(*byte);
            let taken = take_message(&mut buf).unwrap();
            if i == 5 {
                assert_eq!(
                    taken.unwrap(),
                    BackendMessage {
                        tag: b'Z',
                        body: b"I".to_vec()
                    }
                );
            } else if i == wire.len() - 1 {
                assert_eq!(taken.unwrap().tag, b'C');
            } else {
                assert_eq!(taken, None, "at byte {i}");
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn invalid_lengths_are_errors_not_allocations() {
        for len in [-1i32, 0, 3, (MAX_PG_MESSAGE_BYTES + 5) as i32, i32::MAX] {
            let mut buf = vec![b'd'];
            buf.extend(len.to_be_bytes());
            assert!(take_message(&mut buf).is_err(), "length {len}");
        }
    }

    #[test]
    fn replication_messages_decode() {
        let mut xlog = vec![b'w'];
        xlog.extend(0x100_0028u64.to_be_bytes());
        xlog.extend(0x100_0030u64.to_be_bytes());
        xlog.extend(7u64.to_be_bytes());
        xlog.extend([1, 2, 3]);
        assert_eq!(
            parse_copy_data(&xlog).unwrap(),
            CopyMessage::XLogData {
                start: Lsn(0x100_0028),
                wal: vec![1, 2, 3]
            }
        );
        let mut keepalive = vec![b'k'];
        keepalive.extend(0x200u64.to_be_bytes());
        keepalive.extend(9u64.to_be_bytes());
        keepalive.push(1);
        assert_eq!(
            parse_copy_data(&keepalive).unwrap(),
            CopyMessage::Keepalive {
                wal_end: Lsn(0x200),
                reply_requested: true
            }
        );
        assert!(parse_copy_data(&keepalive[..10]).is_err());
        assert!(parse_copy_data(&xlog[..20]).is_err());
        assert!(parse_copy_data(b"").is_err());
        assert!(parse_copy_data(b"q").is_err());
    }

    #[test]
    fn standby_status_layout() {
        let unix = POSTGRES_EPOCH_UNIX_MICROS + 5;
        let msg = standby_status(Lsn(1), Lsn(2), Lsn(3), unix);
        assert_eq!(msg[0], b'd');
        assert_eq!(i32::from_be_bytes([msg[1], msg[2], msg[3], msg[4]]), 4 + 34);
        assert_eq!(msg[5], b'r');
        assert_eq!(be_u64(&msg, 6), Some(1));
        assert_eq!(be_u64(&msg, 14), Some(2));
        assert_eq!(be_u64(&msg, 22), Some(3));
        assert_eq!(be_u64(&msg, 30), Some(5));
        assert_eq!(msg[38], 0);
    }

    #[test]
    fn data_rows_and_errors() {
        let mut row = 2u16.to_be_bytes().to_vec();
        row.extend(2i32.to_be_bytes());
        row.extend(b"42");
        row.extend((-1i32).to_be_bytes());
        assert_eq!(
            parse_data_row(&row).unwrap(),
            vec![Some("42".to_owned()), None]
        );
        assert!(parse_data_row(&row[..5]).is_err());
        let error = b"SERROR\0VERROR\0C42704\0Mslot does not exist\0\0";
        assert_eq!(
            parse_error_fields(error),
            "ERROR 42704: slot does not exist"
        );
    }

    #[test]
    fn startup_layout() {
        let msg = startup(&[("user", "u"), ("replication", "true")]);
        assert_eq!(
            i32::from_be_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize,
            msg.len()
        );
        assert_eq!(&msg[4..8], &PROTOCOL_VERSION.to_be_bytes());
        assert_eq!(&msg[8..], b"user\0u\0replication\0true\0\0");
    }
}
