//! A streaming WAL decoder: bytes in from any LSN, whole records out.
//!
//! The decoder follows PostgreSQL's `xlogreader`: it validates every page header,
//! reassembles records that span pages and segments, verifies each record's CRC, and
//! checks the `xl_prev` chain. Fed from the start of a page, it skips the tail of a
//! record continued from the previous page, as `pg_waldump` does; fed from inside a
//! page, it takes that position to be a record boundary.
//!
//! Errors are sticky: once [`WalStreamDecoder::poll`] has returned an error, it
//! returns the same error forever, and [`WalStreamDecoder::valid_end`] says where the
//! valid WAL ended.

use crate::lsn::{Lsn, WalSegmentSize};
use crate::page_header::{PageHeaderError, WalPageHeader, SHORT_PAGE_HEADER_SIZE};
use crate::record::{
    DecodedRecord, RecordError, RecordHeader, MAX_RECORD_SIZE, RECORD_HEADER_SIZE,
};
use crate::rmgr::{xlog, RmgrId};

/// Why decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalDecodeError {
    /// No WAL was ever written here: a zeroed page or record, or a recycled segment's
    /// old page. This is how a healthy WAL stream ends.
    #[error("end of WAL at {lsn}: {reason}")]
    EndOfWal { lsn: Lsn, reason: String },
    #[error("invalid WAL page header at {lsn}: {source}")]
    PageHeader { lsn: Lsn, source: PageHeaderError },
    #[error("invalid record at {lsn}: {reason}")]
    InvalidRecord { lsn: Lsn, reason: String },
    #[error("CRC mismatch in record at {lsn}: stored {stored:08X}, computed {computed:08X}")]
    Crc {
        lsn: Lsn,
        stored: u32,
        computed: u32,
    },
    #[error("malformed record at {lsn}: {source}")]
    Malformed { lsn: Lsn, source: RecordError },
}

impl WalDecodeError {
    /// The LSN the error is about: the record or page where decoding stopped.
    pub fn lsn(&self) -> Lsn {
        match self {
            WalDecodeError::EndOfWal { lsn, .. }
            | WalDecodeError::PageHeader { lsn, .. }
            | WalDecodeError::InvalidRecord { lsn, .. }
            | WalDecodeError::Crc { lsn, .. }
            | WalDecodeError::Malformed { lsn, .. } => *lsn,
        }
    }

    pub fn is_end_of_wal(&self) -> bool {
        matches!(self, WalDecodeError::EndOfWal { .. })
    }
}

/// Where the decoder is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a page where decoding began: a record continued from an
    /// earlier page is skipped once the page header says how long it is.
    SkipContinuation { remaining: u32 },
    /// At a (not yet aligned) position after a record; the next one starts aligned.
    BetweenRecords,
    /// Assembling the record that starts at `start`.
    InRecord { start: Lsn },
}

/// Decodes a WAL stream fed in order; see the module documentation.
#[derive(Debug)]
pub struct WalStreamDecoder {
    segment_size: WalSegmentSize,
    system_id: Option<u64>,
    /// Bytes fed but not yet consumed start at `buf[buf_pos]`, which is LSN `pos`.
    buf: Vec<u8>,
    buf_pos: usize,
    pos: Lsn,
    /// Discard bytes up to here (padding after a record, the rest of a segment after
    /// `XLOG SWITCH`).
    skip_to: Lsn,
    state: State,
    /// The record the next one's `xl_prev` must name; `None` right after the start.
    prev_record: Option<Lsn>,
    /// The record being assembled, header included.
    record: Vec<u8>,
    valid_end: Lsn,
    error: Option<WalDecodeError>,
}

impl WalStreamDecoder {
    /// A decoder whose first byte fed will be at `start`.
    pub fn new(start: Lsn, segment_size: WalSegmentSize) -> WalStreamDecoder {
        let state = if start.page_offset() == 0 {
            State::SkipContinuation { remaining: 0 }
        } else {
            State::InRecord { start }
        };
        WalStreamDecoder {
            segment_size,
            system_id: None,
            buf: Vec::new(),
            buf_pos: 0,
            pos: start,
            skip_to: start,
            state,
            prev_record: None,
            record: Vec::new(),
            valid_end: start,
            error: None,
        }
    }

    /// Also require every long page header to carry this system identifier.
    pub fn with_system_id(mut self, system_id: u64) -> Self {
        self.system_id = Some(system_id);
        self
    }

    /// Append bytes that follow everything fed so far.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.buf_pos > 0 {
            self.buf.drain(..self.buf_pos);
            self.buf_pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The LSN just after the last byte fed.
    pub fn fed_end(&self) -> Lsn {
        Lsn(self.pos.0 + (self.buf.len() - self.buf_pos) as u64)
    }

    /// The end of the last record decoded (or the start, if none): where valid WAL ends
    /// once `poll` has failed.
    pub fn valid_end(&self) -> Lsn {
        self.valid_end
    }

    /// True when the decoder sits between records, with no partial record pending.
    pub fn at_record_boundary(&self) -> bool {
        matches!(self.state, State::BetweenRecords)
    }

    /// The next whole record, `Ok(None)` if more bytes are needed, or the error at which
    /// valid WAL ends.
    pub fn poll(&mut self) -> Result<Option<DecodedRecord>, WalDecodeError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        let result = self.step();
        if let Err(error) = &result {
            self.error = Some(error.clone());
        }
        result
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.buf_pos..]
    }

    fn consume(&mut self, n: usize) {
        self.buf_pos += n;
        self.pos = Lsn(self.pos.0 + n as u64);
    }

    fn page_remaining(&self) -> usize {
        (crate::lsn::WAL_PAGE_SIZE - self.pos.page_offset()) as usize
    }

    fn step(&mut self) -> Result<Option<DecodedRecord>, WalDecodeError> {
        loop {
            if self.pos < self.skip_to {
                let n = (self.skip_to.0 - self.pos.0).min(self.available().len() as u64) as usize;
                self.consume(n);
                if self.pos < self.skip_to {
                    return Ok(None);
                }
            }
            if self.pos.page_offset() == 0 {
                if !self.read_page_header()? {
                    return Ok(None);
                }
                continue;
            }
            match self.state {
                State::SkipContinuation { remaining } => {
                    let n = (remaining as usize)
                        .min(self.page_remaining())
                        .min(self.available().len());
                    self.consume(n);
                    let remaining = remaining - n as u32;
                    self.state = State::SkipContinuation { remaining };
                    if remaining == 0 {
                        self.state = State::BetweenRecords;
                        self.skip_to = self.pos.align();
                        self.valid_end = self.skip_to;
                    } else if self.available().is_empty() {
                        return Ok(None);
                    }
                }
                State::BetweenRecords => {
                    if self.pos.align() != self.pos {
                        self.skip_to = self.pos.align();
                        continue;
                    }
                    self.record.clear();
                    self.state = State::InRecord { start: self.pos };
                }
                State::InRecord { start } => {
                    if let Some(record) = self.assemble(start)? {
                        return Ok(Some(record));
                    }
                    if self.available().is_empty() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Consume the header of the page at `pos`. Returns false if more bytes are needed.
    fn read_page_header(&mut self) -> Result<bool, WalDecodeError> {
        let avail = self.available();
        if avail.len() < SHORT_PAGE_HEADER_SIZE || avail.len() < WalPageHeader::needed_len(avail) {
            return Ok(false);
        }
        let lsn = self.pos;
        let header = WalPageHeader::parse(avail)
            .map_err(|source| WalDecodeError::PageHeader { lsn, source })?;
        match header.validate(lsn, self.segment_size, self.system_id) {
            Ok(()) => {}
            Err(PageHeaderError::Zeroed) => {
                return Err(WalDecodeError::EndOfWal {
                    lsn,
                    reason: "page is zeroed".into(),
                })
            }
            Err(e @ PageHeaderError::UnexpectedPageAddress { .. }) => {
                return Err(WalDecodeError::EndOfWal {
                    lsn,
                    reason: e.to_string(),
                })
            }
            Err(source) => return Err(WalDecodeError::PageHeader { lsn, source }),
        }
        self.state = match self.state {
            State::SkipContinuation { .. } if header.is_continuation() => State::SkipContinuation {
                remaining: header.remaining_length,
            },
            State::SkipContinuation { .. } => State::SkipContinuation { remaining: 0 },
            State::BetweenRecords if header.is_continuation() => {
                return Err(WalDecodeError::InvalidRecord {
                    lsn,
                    reason: "page continues a record, but the previous one ended before it".into(),
                });
            }
            State::BetweenRecords => State::BetweenRecords,
            State::InRecord { .. } if header.is_overwrite_continuation() => {
                // The record that should continue here was never finished: PostgreSQL
                // wrote an OVERWRITE_CONTRECORD record in its place. Start afresh here.
                self.prev_record = None;
                State::BetweenRecords
            }
            State::InRecord { start } => {
                let missing = self.record_missing_bytes();
                if !header.is_continuation()
                    || missing.is_some_and(|m| m != header.remaining_length)
                {
                    return Err(WalDecodeError::InvalidRecord {
                        lsn: start,
                        reason: format!(
                            "page {lsn} should continue it with {} bytes but says {} (continuation flag {})",
                            missing.map_or("some".into(), |m| m.to_string()),
                            header.remaining_length,
                            header.is_continuation()
                        ),
                    });
                }
                State::InRecord { start }
            }
        };
        self.consume(header.size());
        Ok(true)
    }

    /// Bytes of the current record still to come, if its length is known yet.
    fn record_missing_bytes(&self) -> Option<u32> {
        let total = self.record.get(0..4)?;
        let total = u32::from_le_bytes([total[0], total[1], total[2], total[3]]);
        Some(total.saturating_sub(self.record.len() as u32))
    }

    /// Copy bytes of the record at `start` from this page; decode it once whole.
    fn assemble(&mut self, start: Lsn) -> Result<Option<DecodedRecord>, WalDecodeError> {
        let have = self.record.len();
        let want = match self.record_missing_bytes() {
            Some(missing) if have >= RECORD_HEADER_SIZE => missing as usize,
            _ => RECORD_HEADER_SIZE - have,
        };
        let n = want.min(self.page_remaining()).min(self.available().len());
        let bytes = &self.buf[self.buf_pos..self.buf_pos + n];
        self.record.extend_from_slice(bytes);
        self.consume(n);
        let have_before = have;
        let have = self.record.len();
        if have_before < 4 && have >= 4 {
            self.check_total_len(start)?;
        }
        if have_before < RECORD_HEADER_SIZE && have >= RECORD_HEADER_SIZE {
            self.check_header(start)?;
        }
        let complete = have >= RECORD_HEADER_SIZE && self.record_missing_bytes() == Some(0);
        if !complete {
            return Ok(None);
        }
        self.finish_record(start).map(Some)
    }

    fn check_total_len(&self, start: Lsn) -> Result<(), WalDecodeError> {
        let len = match self.record.get(0..4) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => return Ok(()),
        };
        if len == 0 {
            return Err(WalDecodeError::EndOfWal {
                lsn: start,
                reason: "record length is zero".into(),
            });
        }
        if (len as usize) < RECORD_HEADER_SIZE || len > MAX_RECORD_SIZE {
            return Err(WalDecodeError::InvalidRecord {
                lsn: start,
                reason: format!("invalid record length {len}"),
            });
        }
        Ok(())
    }

    fn check_header(&self, start: Lsn) -> Result<(), WalDecodeError> {
        let mut bytes = [0u8; RECORD_HEADER_SIZE];
        bytes.copy_from_slice(&self.record[..RECORD_HEADER_SIZE]);
        let header = RecordHeader::parse(&bytes);
        let invalid = |reason: String| Err(WalDecodeError::InvalidRecord { lsn: start, reason });
        if !header.rmid.is_valid() {
            return invalid(format!("invalid resource manager ID {}", header.rmid.0));
        }
        match self.prev_record {
            Some(prev) if header.prev != prev => invalid(format!(
                "incorrect prev-link {} (expected {prev})",
                header.prev
            )),
            None if header.prev >= start => invalid(format!("incorrect prev-link {}", header.prev)),
            _ => Ok(()),
        }
    }

    fn finish_record(&mut self, start: Lsn) -> Result<DecodedRecord, WalDecodeError> {
        let bytes = std::mem::take(&mut self.record);
        let mut end = self.pos.align();
        let is_switch = bytes[17] == RmgrId::XLOG.0
            && bytes[16] & !crate::record::XLR_INFO_MASK == xlog::SWITCH;
        if is_switch {
            // The rest of the segment is unused; the next record starts in the next one.
            let seg = self.segment_size.bytes();
            end = Lsn(end.0.div_ceil(seg) * seg);
        }
        let record = DecodedRecord::decode(start, end, bytes).map_err(|source| match source {
            RecordError::Crc { stored, computed } => WalDecodeError::Crc {
                lsn: start,
                stored,
                computed,
            },
            source => WalDecodeError::Malformed { lsn: start, source },
        })?;
        self.prev_record = Some(start);
        self.skip_to = end;
        self.valid_end = end;
        self.state = State::BetweenRecords;
        self.record = Vec::with_capacity(256);
        Ok(record)
    }
}
