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

#[cfg(test)]
mod tests {
    //! Layouts the real-WAL fixture of `tests/decoder.rs` does not contain, built by a
    //! small WAL writer: a record header split across pages, a record crossing into the
    //! next segment, `XLOG SWITCH` followed by the next segment, an overwritten
    //! continuation, and invalid record headers.
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::lsn::WAL_PAGE_SIZE;
    use crate::page_header::{
        LONG_PAGE_HEADER_SIZE, WAL_PAGE_MAGIC_PG15, XLP_FIRST_IS_CONTRECORD,
        XLP_FIRST_IS_OVERWRITE_CONTRECORD, XLP_LONG_HEADER,
    };
    use crate::record::record_crc;

    const SEGMENT: u64 = 1 << 20;
    const SYSTEM_ID: u64 = 7_000_000_000_000_000_001;
    /// Where the synthetic WAL starts: the second 1 MiB segment.
    const START: Lsn = Lsn(SEGMENT);

    fn segment_size() -> WalSegmentSize {
        WalSegmentSize::new(SEGMENT).unwrap()
    }

    /// A record of `total_len` bytes (at least 26) holding only main data, with a valid CRC.
    fn record(rmid: u8, info: u8, prev: Lsn, total_len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; RECORD_HEADER_SIZE];
        bytes[0..4].copy_from_slice(&(total_len as u32).to_le_bytes());
        bytes[4..8].copy_from_slice(&1000u32.to_le_bytes());
        bytes[8..16].copy_from_slice(&prev.0.to_le_bytes());
        bytes[16] = info;
        bytes[17] = rmid;
        let data_len = if total_len - RECORD_HEADER_SIZE - 2 <= 255 {
            let len = total_len - RECORD_HEADER_SIZE - 2;
            bytes.extend_from_slice(&[255, len as u8]);
            len
        } else {
            let len = total_len - RECORD_HEADER_SIZE - 5;
            bytes.push(254);
            bytes.extend_from_slice(&(len as u32).to_le_bytes());
            len
        };
        bytes.extend((0..data_len).map(|i| (i % 251) as u8));
        assert_eq!(bytes.len(), total_len);
        let crc = record_crc(&bytes);
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Lays records out as `XLogInsert` does: aligned, flowing around page headers.
    struct Writer {
        bytes: Vec<u8>,
        prev: Lsn,
        /// Extra `xlp_info` bits for the next page header.
        next_page_flags: u16,
    }

    impl Writer {
        fn new() -> Writer {
            Writer {
                bytes: Vec::new(),
                prev: Lsn(START.0 - 64),
                next_page_flags: 0,
            }
        }

        fn pos(&self) -> Lsn {
            Lsn(START.0 + self.bytes.len() as u64)
        }

        fn page_header(&mut self, rem_len: u32) {
            let pos = self.pos();
            let long = pos.segment_offset(segment_size()) == 0;
            let mut info = std::mem::take(&mut self.next_page_flags);
            if long {
                info |= XLP_LONG_HEADER;
            }
            if rem_len > 0 {
                info |= XLP_FIRST_IS_CONTRECORD;
            }
            self.bytes
                .extend_from_slice(&WAL_PAGE_MAGIC_PG15.to_le_bytes());
            self.bytes.extend_from_slice(&info.to_le_bytes());
            self.bytes.extend_from_slice(&1u32.to_le_bytes());
            self.bytes.extend_from_slice(&pos.0.to_le_bytes());
            self.bytes.extend_from_slice(&rem_len.to_le_bytes());
            self.bytes.extend_from_slice(&[0; 4]);
            if long {
                self.bytes.extend_from_slice(&SYSTEM_ID.to_le_bytes());
                self.bytes
                    .extend_from_slice(&(SEGMENT as u32).to_le_bytes());
                self.bytes
                    .extend_from_slice(&(WAL_PAGE_SIZE as u32).to_le_bytes());
            }
        }

        /// Write `data` (a record's bytes, or the first `data.len()` of them if the
        /// record is `total` bytes long), inserting page headers.
        fn put(&mut self, data: &[u8], total: usize) {
            let mut written = 0;
            while written < data.len() {
                if self.pos().page_offset() == 0 {
                    let rem = if written > 0 { total - written } else { 0 };
                    self.page_header(rem as u32);
                }
                let room = (WAL_PAGE_SIZE - self.pos().page_offset()) as usize;
                let n = room.min(data.len() - written);
                self.bytes.extend_from_slice(&data[written..written + n]);
                written += n;
            }
        }

        fn align(&mut self) {
            let aligned = self.pos().align();
            self.bytes.resize((aligned.0 - START.0) as usize, 0);
        }

        /// Append a record of `total_len` bytes; returns its LSN.
        fn append(&mut self, rmid: u8, info: u8, total_len: usize) -> Lsn {
            self.align();
            if self.pos().page_offset() == 0 {
                self.page_header(0);
            }
            let lsn = self.pos();
            let bytes = record(rmid, info, self.prev, total_len);
            self.put(&bytes, bytes.len());
            self.prev = lsn;
            lsn
        }

        /// Pad with `fill` bytes up to `lsn`.
        fn fill_to(&mut self, lsn: Lsn, fill: u8) {
            self.bytes.resize((lsn.0 - START.0) as usize, fill);
        }
    }

    /// Decode `bytes` from `start` fed in `chunk`-byte pieces: the LSNs returned, and how
    /// decoding ended.
    fn decode(
        bytes: &[u8],
        start: Lsn,
        chunk: usize,
    ) -> (Vec<DecodedRecord>, Option<WalDecodeError>, Lsn) {
        let mut decoder = WalStreamDecoder::new(start, segment_size()).with_system_id(SYSTEM_ID);
        let mut records = Vec::new();
        for piece in bytes.chunks(chunk) {
            decoder.feed(piece);
            loop {
                match decoder.poll() {
                    Ok(Some(record)) => records.push(record),
                    Ok(None) => break,
                    Err(e) => return (records, Some(e), decoder.valid_end()),
                }
            }
        }
        (records, None, decoder.valid_end())
    }

    fn lsns(records: &[DecodedRecord]) -> Vec<Lsn> {
        records.iter().map(|r| r.lsn).collect()
    }

    /// Decoding `bytes` from the start in any chunking returns exactly `expected`.
    fn check_decodes_to(bytes: &[u8], expected: &[Lsn]) {
        for chunk in [1, 13, 8192, usize::MAX] {
            let (records, error, _) = decode(bytes, START, chunk.min(bytes.len()));
            assert_eq!(error, None, "chunks of {chunk}");
            assert_eq!(lsns(&records), expected, "chunks of {chunk}");
        }
    }

    #[test]
    fn record_header_split_across_pages() {
        let mut w = Writer::new();
        let a = w.append(0, 0x20, 8184 - LONG_PAGE_HEADER_SIZE);
        // Only 8 bytes of this record's header fit on the first page.
        let b = w.append(0, 0x20, 100);
        assert_eq!(b.page_offset(), 8184);
        let c = w.append(0, 0x20, 40);
        check_decodes_to(&w.bytes, &[a, b, c]);
        // Started at the second page, the decoder skips the rest of `b`.
        let (records, error, _) = decode(&w.bytes[8192..], Lsn(START.0 + 8192), usize::MAX);
        assert_eq!((lsns(&records), error), (vec![c], None));
    }

    #[test]
    fn record_crossing_into_the_next_segment() {
        let mut w = Writer::new();
        let mut expected = Vec::new();
        while w.pos().0 < START.0 + SEGMENT - 50_000 {
            expected.push(w.append(0, 0x20, 70_001));
        }
        let crossing = *expected.last().unwrap();
        assert!(crossing.0 + 70_001 > START.0 + SEGMENT);
        expected.push(w.append(0, 0x20, 30));
        check_decodes_to(&w.bytes, &expected);
        // From the next segment's first page: its long header says how much to skip.
        let next = SEGMENT as usize;
        let (records, error, _) = decode(&w.bytes[next..], Lsn(START.0 + SEGMENT), 4096);
        assert_eq!(error, None);
        assert_eq!(lsns(&records), expected[expected.len() - 1..]);
    }

    #[test]
    fn switch_skips_the_rest_of_the_segment() {
        for fill in [0x00, 0xA5] {
            let mut w = Writer::new();
            let a = w.append(0, 0x20, 64);
            let switch = w.append(0, xlog::SWITCH, 26);
            // What follows the switch in its segment is never read, whatever it holds.
            w.align();
            w.fill_to(Lsn(START.0 + SEGMENT), fill);
            let next = w.append(0, 0x20, 200);
            assert_eq!(next, Lsn(START.0 + SEGMENT + LONG_PAGE_HEADER_SIZE as u64));
            check_decodes_to(&w.bytes, &[a, switch, next]);
            let (records, _, _) = decode(&w.bytes, START, usize::MAX);
            assert_eq!(records[1].end_lsn, Lsn(START.0 + SEGMENT));
        }
    }

    #[test]
    fn overwritten_continuation_is_skipped() {
        let mut w = Writer::new();
        let a = w.append(0, 0x20, 8000);
        // A record whose continuation never reached the disk: the next page was written
        // after a crash, flagged as overwriting it.
        w.align();
        let aborted = record(0, 0x20, a, 1000);
        let room = (WAL_PAGE_SIZE - w.pos().page_offset()) as usize;
        w.put(&aborted[..room], aborted.len());
        w.next_page_flags = XLP_FIRST_IS_OVERWRITE_CONTRECORD;
        let overwrite = w.append(0, xlog::OVERWRITE_CONTRECORD, 40);
        let after = w.append(0, 0x20, 30);
        check_decodes_to(&w.bytes, &[a, overwrite, after]);
    }

    #[test]
    fn invalid_record_headers() {
        let check = |damage: &dyn Fn(&mut Vec<u8>, usize),
                     expect: &dyn Fn(&WalDecodeError) -> bool| {
            let mut w = Writer::new();
            let a = w.append(0, 0x20, 100);
            let b = w.append(0, 0x20, 100);
            let mut bytes = w.bytes.clone();
            damage(&mut bytes, (b.0 - START.0) as usize);
            let (records, error, valid_end) = decode(&bytes, START, usize::MAX);
            assert_eq!(lsns(&records), [a]);
            let error = error.unwrap();
            assert!(expect(&error), "{error}");
            assert_eq!(error.lsn(), b);
            assert_eq!(valid_end, records[0].end_lsn);
        };
        let invalid = |e: &WalDecodeError| matches!(e, WalDecodeError::InvalidRecord { .. });
        // A length shorter than the header.
        check(
            &|bytes, at| bytes[at..at + 4].copy_from_slice(&10u32.to_le_bytes()),
            &invalid,
        );
        // A resource manager PostgreSQL 15 does not have.
        check(&|bytes, at| bytes[at + 17] = 50, &invalid);
        // A prev-link that does not name the previous record.
        check(&|bytes, at| bytes[at + 8] ^= 0x08, &invalid);
        // A zero length: where the WAL ends.
        check(&|bytes, at| bytes[at..].fill(0), &|e| e.is_end_of_wal());
    }

    #[test]
    fn system_id_must_match_when_given() {
        let mut w = Writer::new();
        w.append(0, 0x20, 100);
        let mut decoder = WalStreamDecoder::new(START, segment_size()).with_system_id(1);
        decoder.feed(&w.bytes);
        assert!(matches!(
            decoder.poll(),
            Err(WalDecodeError::PageHeader {
                source: PageHeaderError::SystemIdMismatch { .. },
                ..
            })
        ));
    }
}
