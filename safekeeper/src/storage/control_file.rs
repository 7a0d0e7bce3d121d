//! The timeline control file `safekeeper.control`: the acceptor's [`PersistentState`].
//!
//! # Format (version 1)
//!
//! All integers little-endian; ids as the 16 bytes of [`strata_ids`]' `to_bytes`
//! (big-endian, so a hex dump reads as the printed id).
//!
//! | Offset | Size | Field |
//! |---|---|---|
//! | 0 | 8 | magic `STRATASK` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | body length B |
//! | 16 | B | body |
//! | 16 + B | 4 | crc32c of bytes 0 .. 16 + B |
//!
//! The framing (magic, version, length, trailing CRC) stays the same in every version,
//! so a file of a newer version is recognised as such, with its CRC checked first.
//! Body of version 1 (84 + 16 × N bytes):
//!
//! | Size | Field |
//! |---|---|
//! | 16 | tenant id |
//! | 16 | timeline id |
//! | 8 | PostgreSQL system identifier |
//! | 4 | `PG_VERSION_NUM` |
//! | 4 | WAL segment size in bytes |
//! | 8 | timeline start LSN |
//! | 8 | term |
//! | 8 | commit LSN |
//! | 8 | peer horizon LSN |
//! | 4 | N, the number of term-history entries |
//! | 16 × N | entries: term (8), start LSN (8) |
//!
//! The file is replaced with [`durable::replace_file`], so a crash leaves the old or
//! the new state, never a mix; the CRC catches what the disk itself damages.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use consensus::storage::PersistentState;
use consensus::term_history::{Term, TermHistory, TermSwitch};
use postgres_wal::{Lsn, WalSegmentSize};
use strata_ids::{TenantId, TenantTimelineId, TimelineId};

use super::durable::{self, StepFailpoints};
use super::error::StorageError;
use super::failpoint;

pub const CONTROL_FILE_NAME: &str = "safekeeper.control";
pub const MAGIC: [u8; 8] = *b"STRATASK";
pub const FORMAT_VERSION: u32 = 1;

const HEADER_SIZE: usize = 16;
const CRC_SIZE: usize = 4;
const FIXED_BODY_SIZE: usize = 84;
const HISTORY_ENTRY_SIZE: usize = 16;
/// Refuse to read more than this: a term history this long would mean millions of
/// elections, so a larger file is damage, not data.
pub const MAX_CONTROL_FILE_SIZE: usize = 1 << 20;
/// The most term-history entries a control file can hold.
pub const MAX_TERM_HISTORY_LEN: usize =
    (MAX_CONTROL_FILE_SIZE - HEADER_SIZE - FIXED_BODY_SIZE - CRC_SIZE) / HISTORY_ENTRY_SIZE;
const _: () = assert!(
    consensus::limits::MAX_TERM_HISTORY_ENTRIES <= MAX_TERM_HISTORY_LEN,
    "every valid term history fits in a control file"
);

/// Why a control file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlFileError {
    #[error("truncated: {len} bytes, {needed} needed")]
    Truncated { len: usize, needed: usize },
    #[error("too large: {len} bytes, at most {MAX_CONTROL_FILE_SIZE} allowed")]
    TooLarge { len: u64 },
    #[error("bad magic {found:02x?}: not a Strata safekeeper control file")]
    BadMagic { found: [u8; 8] },
    #[error("CRC mismatch: stored {stored:08X}, computed {computed:08X}")]
    Crc { stored: u32, computed: u32 },
    #[error("unsupported format version {found}; this safekeeper reads version {FORMAT_VERSION}")]
    UnsupportedVersion { found: u32 },
    #[error("{len} bytes after the CRC")]
    TrailingBytes { len: usize },
    #[error("invalid content: {0}")]
    Invalid(String),
}

/// Check what every persisted state must satisfy; the same check runs before writing
/// and after reading.
pub fn validate(state: &PersistentState) -> Result<(), String> {
    WalSegmentSize::new(u64::from(state.wal_segment_size)).map_err(|e| e.to_string())?;
    // The acceptor's own definition of a well-formed history (bounded, terms
    // increasing, LSNs not decreasing), so storage and consensus never disagree.
    state.term_history.validate().map_err(|e| e.to_string())?;
    let history = &state.term_history.0;
    if let Some(last) = history.last() {
        if last.term > state.term {
            return Err(format!(
                "term history names term {} above the current term {}",
                last.term.0, state.term.0
            ));
        }
    }
    Ok(())
}

/// Encode `state` into a whole control file.
pub fn encode(state: &PersistentState) -> Vec<u8> {
    let history = &state.term_history.0;
    let body_len = FIXED_BODY_SIZE + HISTORY_ENTRY_SIZE * history.len();
    let mut out = Vec::with_capacity(HEADER_SIZE + body_len + CRC_SIZE);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    // `validate` bounds the history (MAX_TERM_HISTORY_ENTRIES), so this fits a u32.
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&state.id.tenant_id.to_bytes());
    out.extend_from_slice(&state.id.timeline_id.to_bytes());
    out.extend_from_slice(&state.system_id.to_le_bytes());
    out.extend_from_slice(&state.pg_version.to_le_bytes());
    out.extend_from_slice(&state.wal_segment_size.to_le_bytes());
    out.extend_from_slice(&state.timeline_start_lsn.0.to_le_bytes());
    out.extend_from_slice(&state.term.0.to_le_bytes());
    out.extend_from_slice(&state.commit_lsn.0.to_le_bytes());
    out.extend_from_slice(&state.peer_horizon_lsn.0.to_le_bytes());
    out.extend_from_slice(&(history.len() as u32).to_le_bytes());
    for switch in history {
        out.extend_from_slice(&switch.term.0.to_le_bytes());
        out.extend_from_slice(&switch.lsn.0.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A bounds-checked cursor: every read of untrusted bytes goes through it.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], ControlFileError> {
        let (head, rest) = self
            .bytes
            .split_first_chunk::<N>()
            .ok_or_else(|| ControlFileError::Invalid("body shorter than its fields".into()))?;
        self.bytes = rest;
        Ok(*head)
    }
    fn u32(&mut self) -> Result<u32, ControlFileError> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, ControlFileError> {
        self.take().map(u64::from_le_bytes)
    }
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(slice) = bytes.get(offset..offset + 4) {
        word.copy_from_slice(slice);
    }
    u32::from_le_bytes(word)
}

/// Decode a whole control file, checking magic, length, CRC, version and content.
pub fn decode(bytes: &[u8]) -> Result<PersistentState, ControlFileError> {
    let truncated = |needed| ControlFileError::Truncated {
        len: bytes.len(),
        needed,
    };
    let magic: [u8; 8] =
        bytes
            .get(..8)
            .and_then(|m| m.try_into().ok())
            .ok_or(ControlFileError::Truncated {
                len: bytes.len(),
                needed: HEADER_SIZE,
            })?;
    if magic != MAGIC {
        return Err(ControlFileError::BadMagic { found: magic });
    }
    if bytes.len() < HEADER_SIZE {
        return Err(truncated(HEADER_SIZE));
    }
    let body_len = u32_at(bytes, 12) as usize;
    let crc_offset = HEADER_SIZE + body_len;
    let needed = crc_offset + CRC_SIZE;
    if bytes.len() < needed {
        return Err(truncated(needed));
    }
    if bytes.len() > needed {
        return Err(ControlFileError::TrailingBytes {
            len: bytes.len() - needed,
        });
    }
    let stored = u32_at(bytes, crc_offset);
    let computed = crc32c::crc32c(&bytes[..crc_offset]);
    if stored != computed {
        return Err(ControlFileError::Crc { stored, computed });
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(ControlFileError::UnsupportedVersion { found: version });
    }
    let state = decode_body(&bytes[HEADER_SIZE..crc_offset])?;
    validate(&state).map_err(ControlFileError::Invalid)?;
    Ok(state)
}

fn decode_body(body: &[u8]) -> Result<PersistentState, ControlFileError> {
    let mut c = Cursor { bytes: body };
    let id = TenantTimelineId {
        tenant_id: TenantId::from_bytes(c.take()?),
        timeline_id: TimelineId::from_bytes(c.take()?),
    };
    let system_id = c.u64()?;
    let pg_version = c.u32()?;
    let wal_segment_size = c.u32()?;
    let timeline_start_lsn = Lsn(c.u64()?);
    let term = Term(c.u64()?);
    let commit_lsn = Lsn(c.u64()?);
    let peer_horizon_lsn = Lsn(c.u64()?);
    let count = c.u32()? as usize;
    if c.bytes.len() != count.saturating_mul(HISTORY_ENTRY_SIZE) {
        return Err(ControlFileError::Invalid(format!(
            "{} bytes left for {count} term-history entries",
            c.bytes.len()
        )));
    }
    let mut history = Vec::with_capacity(count);
    for _ in 0..count {
        let term = Term(c.u64()?);
        let lsn = Lsn(c.u64()?);
        history.push(TermSwitch { term, lsn });
    }
    Ok(PersistentState {
        id,
        system_id,
        pg_version,
        wal_segment_size,
        timeline_start_lsn,
        term,
        term_history: TermHistory(history),
        commit_lsn,
        peer_horizon_lsn,
    })
}

/// Read and verify the control file of the timeline directory `dir`.
pub fn read(dir: &Path) -> Result<PersistentState, StorageError> {
    let path = dir.join(CONTROL_FILE_NAME);
    let action = || format!("read {}", path.display());
    let file = File::open(&path).map_err(|e| StorageError::io(action(), e))?;
    let len = file
        .metadata()
        .map_err(|e| StorageError::io(action(), e))?
        .len();
    let invalid = |source| StorageError::ControlFile {
        path: path.clone(),
        source,
    };
    if len > MAX_CONTROL_FILE_SIZE as u64 {
        return Err(invalid(ControlFileError::TooLarge { len }));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // `take` bounds the read even if the file grew after the size check.
    file.take(MAX_CONTROL_FILE_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| StorageError::io(action(), e))?;
    decode(&bytes).map_err(invalid)
}

/// Replace the control file of `dir` with `state`, durably.
pub fn write(dir: &Path, state: &PersistentState) -> Result<(), StorageError> {
    let failpoints = StepFailpoints {
        before_rename: Some(failpoint::CONTROL_FILE_AFTER_TEMP_WRITE),
        after_rename: Some(failpoint::CONTROL_FILE_AFTER_RENAME),
    };
    write_with(dir, state, failpoints)
}

/// Write the first control file of a timeline being created, durably. Its failpoints
/// are not armed: creation has its own, and an interrupted creation is discarded.
pub fn write_initial(dir: &Path, state: &PersistentState) -> Result<(), StorageError> {
    write_with(dir, state, StepFailpoints::default())
}

fn write_with(
    dir: &Path,
    state: &PersistentState,
    failpoints: StepFailpoints,
) -> Result<(), StorageError> {
    validate(state).map_err(StorageError::InvalidState)?;
    durable::replace_file(dir, CONTROL_FILE_NAME, &encode(state), failpoints).map_err(
        |e: io::Error| {
            StorageError::io(
                format!("write {}", dir.join(CONTROL_FILE_NAME).display()),
                e,
            )
        },
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample_state() -> PersistentState {
        PersistentState {
            id: TenantTimelineId {
                tenant_id: "0123456789abcdef0123456789abcdef".parse().unwrap(),
                timeline_id: "fedcba9876543210fedcba9876543210".parse().unwrap(),
            },
            system_id: 7_301_234_567_890_123_456,
            pg_version: 150_018,
            wal_segment_size: 16 << 20,
            timeline_start_lsn: Lsn(0x0100_0028),
            term: Term(7),
            term_history: TermHistory(vec![
                TermSwitch {
                    term: Term(1),
                    lsn: Lsn(0x0100_0028),
                },
                TermSwitch {
                    term: Term(4),
                    lsn: Lsn(0x0230_0000),
                },
                TermSwitch {
                    term: Term(7),
                    lsn: Lsn(0x0230_0000),
                },
            ]),
            commit_lsn: Lsn(0x0231_0040),
            peer_horizon_lsn: Lsn(0x0200_0000),
        }
    }

    #[test]
    fn round_trips_byte_for_byte() {
        let state = sample_state();
        let bytes = encode(&state);
        assert_eq!(
            bytes.len(),
            HEADER_SIZE + FIXED_BODY_SIZE + 3 * 16 + CRC_SIZE
        );
        assert_eq!(&bytes[..8], b"STRATASK");
        assert_eq!(decode(&bytes).unwrap(), state);
        let new_timeline = PersistentState {
            term: Term(0),
            term_history: TermHistory::new(state.timeline_start_lsn),
            ..state
        };
        assert_eq!(decode(&encode(&new_timeline)).unwrap(), new_timeline);
    }

    #[test]
    fn every_corruption_is_refused_with_its_reason() {
        let good = encode(&sample_state());
        let check = |bytes: &[u8], expected: &dyn Fn(&ControlFileError) -> bool| {
            let error = decode(bytes).unwrap_err();
            assert!(expected(&error), "{error}");
        };
        // Every truncation, including an empty file.
        for len in 0..good.len() {
            check(&good[..len], &|e| {
                matches!(e, ControlFileError::Truncated { .. })
            });
        }
        // Every single-bit flip anywhere in the file.
        for byte in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    decode(&bad).is_err(),
                    "flip of bit {bit} of byte {byte} accepted"
                );
            }
        }
        let mut bad = good.clone();
        bad[0] = b'X';
        check(&bad, &|e| matches!(e, ControlFileError::BadMagic { .. }));
        let mut bad = good.clone();
        bad[30] ^= 0xff;
        check(&bad, &|e| matches!(e, ControlFileError::Crc { .. }));
        let mut bad = good.clone();
        bad.push(0);
        check(&bad, &|e| {
            matches!(e, ControlFileError::TrailingBytes { len: 1 })
        });
        // A future version with a valid CRC is recognised as such.
        let mut future = good.clone();
        future[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc_at = future.len() - 4;
        let crc = crc32c::crc32c(&future[..crc_at]);
        future[crc_at..].copy_from_slice(&crc.to_le_bytes());
        check(&future, &|e| {
            matches!(e, ControlFileError::UnsupportedVersion { found: 2 })
        });
    }

    #[test]
    fn content_is_validated_after_the_crc() {
        let with_crc = |state: &PersistentState| encode(state);
        let mut state = sample_state();
        state.wal_segment_size = 3 << 20;
        assert!(matches!(
            decode(&with_crc(&state)),
            Err(ControlFileError::Invalid(_))
        ));
        let mut state = sample_state();
        state.term_history.0.swap(0, 1);
        assert!(matches!(
            decode(&with_crc(&state)),
            Err(ControlFileError::Invalid(_))
        ));
        let mut state = sample_state();
        state.term = Term(6);
        assert!(validate(&state).is_err());
        state.term_history = TermHistory::default();
        assert!(validate(&state).is_err());
        // A body length that disagrees with the term-history count.
        let mut bytes = encode(&sample_state());
        let count_at = HEADER_SIZE + FIXED_BODY_SIZE - 4;
        bytes[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc_at = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..crc_at]);
        bytes[crc_at..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode(&bytes), Err(ControlFileError::Invalid(_))));
    }

    #[test]
    fn write_then_read_and_refuse_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = sample_state();
        write(dir.path(), &state).unwrap();
        assert_eq!(read(dir.path()).unwrap(), state);
        let path = dir.path().join(CONTROL_FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(StorageError::ControlFile {
                source: ControlFileError::Crc { .. },
                ..
            })
        ));
        std::fs::write(&path, vec![0u8; MAX_CONTROL_FILE_SIZE + 1]).unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(StorageError::ControlFile {
                source: ControlFileError::TooLarge { .. },
                ..
            })
        ));
    }
}
