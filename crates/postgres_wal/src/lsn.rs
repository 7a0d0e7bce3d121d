//! Log sequence numbers and the arithmetic of WAL segments and pages.

use std::fmt;
use std::str::FromStr;

/// Size of a WAL page (`XLOG_BLCKSZ`); PostgreSQL's default build, which Debian ships.
pub const WAL_PAGE_SIZE: u64 = 8192;

/// The default `wal_segment_size`.
pub const DEFAULT_WAL_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// A position in the WAL stream: a byte offset since the start of the cluster's WAL.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const INVALID: Lsn = Lsn(0);

    pub fn is_valid(self) -> bool {
        self.0 != 0
    }

    /// Offset of this LSN inside its WAL page.
    pub fn page_offset(self) -> u64 {
        self.0 % WAL_PAGE_SIZE
    }

    /// Start of the WAL page holding this LSN.
    pub fn page_start(self) -> Lsn {
        Lsn(self.0 - self.page_offset())
    }

    /// Offset of this LSN inside its segment.
    pub fn segment_offset(self, segment_size: WalSegmentSize) -> u64 {
        self.0 % segment_size.bytes()
    }

    /// Number of the segment holding this LSN (`XLByteToSeg`).
    pub fn segment_number(self, segment_size: WalSegmentSize) -> u64 {
        self.0 / segment_size.bytes()
    }

    /// Round up to the next multiple of 8 (`MAXALIGN`), where records start.
    pub fn align(self) -> Lsn {
        Lsn(self.0.saturating_add(7) & !7)
    }

    pub fn checked_add(self, n: u64) -> Option<Lsn> {
        self.0.checked_add(n).map(Lsn)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {0:?}: expected two hexadecimal numbers such as 0/16B3740")]
pub struct ParseLsnError(String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.to_owned());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let valid = |part: &str| {
            !part.is_empty() && part.len() <= 8 && part.bytes().all(|b| b.is_ascii_hexdigit())
        };
        if !valid(hi) || !valid(lo) {
            return Err(err());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// A `wal_segment_size`: a power of two between 1 MiB and 1 GiB, as `initdb` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalSegmentSize(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid WAL segment size {0}: must be a power of two between 1 MiB and 1 GiB")]
pub struct InvalidSegmentSize(pub u64);

impl WalSegmentSize {
    pub const DEFAULT: WalSegmentSize = WalSegmentSize(DEFAULT_WAL_SEGMENT_SIZE);

    pub fn new(bytes: u64) -> Result<Self, InvalidSegmentSize> {
        if bytes.is_power_of_two() && (1 << 20..=1 << 30).contains(&bytes) {
            Ok(WalSegmentSize(bytes))
        } else {
            Err(InvalidSegmentSize(bytes))
        }
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Segments per "xlogid" (the high 32 bits of an LSN), as used in file names.
    fn segments_per_xlog_id(self) -> u64 {
        0x1_0000_0000 / self.0
    }

    /// The file name PostgreSQL gives a segment (`XLogFileName`).
    pub fn file_name(self, timeline: u32, segment_number: u64) -> String {
        let per_id = self.segments_per_xlog_id();
        format!(
            "{timeline:08X}{:08X}{:08X}",
            segment_number / per_id,
            segment_number % per_id
        )
    }

    /// Parse a segment file name (optionally ending in `.partial`) into timeline and
    /// segment number (`XLogFromFileName`).
    pub fn parse_file_name(self, name: &str) -> Option<(u32, u64)> {
        let name = name.strip_suffix(".partial").unwrap_or(name);
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let timeline = u32::from_str_radix(&name[0..8], 16).ok()?;
        let log = u64::from_str_radix(&name[8..16], 16).ok()?;
        let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
        let per_id = self.segments_per_xlog_id();
        if seg >= per_id {
            return None;
        }
        Some((timeline, log * per_id + seg))
    }

    /// First LSN of a segment.
    pub fn segment_start(self, segment_number: u64) -> Option<Lsn> {
        segment_number.checked_mul(self.0).map(Lsn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_parses_and_prints_as_postgres_does() {
        let lsn: Lsn = "0/16B3740".parse().unwrap();
        assert_eq!(lsn, Lsn(0x16B3740));
        assert_eq!(lsn.to_string(), "0/16B3740");
        assert_eq!(Lsn(0x1_0000_0000).to_string(), "1/0");
        assert_eq!("FFFFFFFF/FFFFFFFF".parse::<Lsn>().unwrap(), Lsn(u64::MAX));
        for bad in [
            "",
            "0",
            "/1",
            "1/",
            "0/g",
            "123456789/0",
            "0/1/2",
            " 0/1",
            "+0/1",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn page_and_segment_arithmetic() {
        let seg = WalSegmentSize::DEFAULT;
        let lsn = Lsn(0x0300_2028);
        assert_eq!(lsn.page_offset(), 0x28);
        assert_eq!(lsn.page_start(), Lsn(0x0300_2000));
        assert_eq!(lsn.segment_number(seg), 3);
        assert_eq!(lsn.segment_offset(seg), 0x2028);
        assert_eq!(Lsn(0x29).align(), Lsn(0x30));
        assert_eq!(Lsn(0x30).align(), Lsn(0x30));
    }

    #[test]
    fn segment_file_names_round_trip_for_every_size() {
        for shift in 20..=30 {
            let seg = WalSegmentSize::new(1 << shift).unwrap();
            for n in [0u64, 1, 255, 256, 4095, 1 << 12, 123_456] {
                let name = seg.file_name(1, n);
                assert_eq!(seg.parse_file_name(&name), Some((1, n)), "{name}");
                assert_eq!(
                    seg.parse_file_name(&format!("{name}.partial")),
                    Some((1, n))
                );
            }
        }
        let seg = WalSegmentSize::DEFAULT;
        assert_eq!(seg.file_name(1, 0x101), "000000010000000100000001");
        assert_eq!(seg.parse_file_name("000000010000000000000100"), None);
        assert_eq!(seg.parse_file_name("00000001000000000000001"), None);
        assert_eq!(seg.parse_file_name("history"), None);
    }

    #[test]
    fn segment_size_must_be_a_power_of_two_in_range() {
        assert!(WalSegmentSize::new(1 << 20).is_ok());
        assert!(WalSegmentSize::new(1 << 30).is_ok());
        for bad in [0, 1 << 19, 1 << 31, 3 << 20] {
            assert_eq!(WalSegmentSize::new(bad), Err(InvalidSegmentSize(bad)));
        }
    }
}
