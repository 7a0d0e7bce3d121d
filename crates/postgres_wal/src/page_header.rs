//! WAL page headers (`XLogPageHeaderData` and `XLogLongPageHeaderData`).

use crate::lsn::{Lsn, WalSegmentSize, WAL_PAGE_SIZE};

/// `XLOG_PAGE_MAGIC` of PostgreSQL 15; every major version has its own.
pub const WAL_PAGE_MAGIC_PG15: u16 = 0xD110;

/// The first record on the page continues one from the previous page.
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// The page has the long header (always so on a segment's first page).
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// Full-page images on this page may be removed by an archiver (historic).
pub const XLP_BKP_REMOVABLE: u16 = 0x0004;
/// A continuation that was never written was replaced by an `OVERWRITE_CONTRECORD` record.
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
pub const XLP_ALL_FLAGS: u16 = 0x000F;

/// `MAXALIGN(sizeof(XLogPageHeaderData))`.
pub const SHORT_PAGE_HEADER_SIZE: usize = 24;
/// `MAXALIGN(sizeof(XLogLongPageHeaderData))`.
pub const LONG_PAGE_HEADER_SIZE: usize = 40;

/// Why a page header is not the one expected at its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageHeaderError {
    #[error("page header is all zeros (WAL not yet written)")]
    Zeroed,
    #[error("invalid magic number {0:04X}")]
    BadMagic(u16),
    #[error("invalid info bits {0:04X}")]
    BadInfo(u16),
    #[error("first page of a segment has no long header")]
    MissingLongHeader,
    #[error("unexpected page address {found} (expected {expected}): a recycled segment")]
    UnexpectedPageAddress { expected: Lsn, found: Lsn },
    #[error("page header says segment size {found}, expected {expected}")]
    SegmentSizeMismatch { expected: u64, found: u32 },
    #[error("page header says WAL block size {0}, expected 8192")]
    BlockSizeMismatch(u32),
    #[error("system identifier {found} does not match {expected}")]
    SystemIdMismatch { expected: u64, found: u64 },
    #[error("page header truncated: {0} bytes")]
    Truncated(usize),
}

/// A decoded WAL page header; `long` holds the extra fields of a long header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalPageHeader {
    pub magic: u16,
    pub info: u16,
    pub timeline: u32,
    pub page_address: Lsn,
    /// Bytes of a record continued from the previous page that remain (`xlp_rem_len`).
    pub remaining_length: u32,
    pub long: Option<LongHeaderFields>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongHeaderFields {
    pub system_id: u64,
    pub segment_size: u32,
    pub wal_block_size: u32,
}

impl WalPageHeader {
    /// Size of this header on the page.
    pub fn size(&self) -> usize {
        if self.info & XLP_LONG_HEADER != 0 {
            LONG_PAGE_HEADER_SIZE
        } else {
            SHORT_PAGE_HEADER_SIZE
        }
    }

    /// Bytes needed to decode the header that begins `bytes`: the short header tells
    /// whether a long one follows.
    pub fn needed_len(bytes: &[u8]) -> usize {
        match bytes.get(2..4) {
            Some(info) if u16::from_le_bytes([info[0], info[1]]) & XLP_LONG_HEADER != 0 => {
                LONG_PAGE_HEADER_SIZE
            }
            _ => SHORT_PAGE_HEADER_SIZE,
        }
    }

    /// Parse the header at the start of `bytes`, without validating it.
    pub fn parse(bytes: &[u8]) -> Result<WalPageHeader, PageHeaderError> {
        let need = Self::needed_len(bytes);
        if bytes.len() < need {
            return Err(PageHeaderError::Truncated(bytes.len()));
        }
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
        let u32_at =
            |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
        let info = u16_at(2);
        let long = (info & XLP_LONG_HEADER != 0).then(|| LongHeaderFields {
            system_id: u64_at(24),
            segment_size: u32_at(32),
            wal_block_size: u32_at(36),
        });
        Ok(WalPageHeader {
            magic: u16_at(0),
            info,
            timeline: u32_at(4),
            page_address: Lsn(u64_at(8)),
            remaining_length: u32_at(16),
            long,
        })
    }

    /// Check the header as PostgreSQL does before trusting a page at `page_lsn`.
    pub fn validate(
        &self,
        page_lsn: Lsn,
        segment_size: WalSegmentSize,
        system_id: Option<u64>,
    ) -> Result<(), PageHeaderError> {
        debug_assert_eq!(page_lsn.0 % WAL_PAGE_SIZE, 0);
        if self.magic == 0 && self.info == 0 && self.page_address == Lsn(0) {
            return Err(PageHeaderError::Zeroed);
        }
        if self.magic != WAL_PAGE_MAGIC_PG15 {
            return Err(PageHeaderError::BadMagic(self.magic));
        }
        if self.info & !XLP_ALL_FLAGS != 0 {
            return Err(PageHeaderError::BadInfo(self.info));
        }
        match self.long {
            Some(long) => {
                if let Some(expected) = system_id.filter(|&id| id != long.system_id) {
                    return Err(PageHeaderError::SystemIdMismatch {
                        expected,
                        found: long.system_id,
                    });
                }
                if u64::from(long.segment_size) != segment_size.bytes() {
                    return Err(PageHeaderError::SegmentSizeMismatch {
                        expected: segment_size.bytes(),
                        found: long.segment_size,
                    });
                }
                if u64::from(long.wal_block_size) != WAL_PAGE_SIZE {
                    return Err(PageHeaderError::BlockSizeMismatch(long.wal_block_size));
                }
            }
            None if page_lsn.segment_offset(segment_size) == 0 => {
                return Err(PageHeaderError::MissingLongHeader)
            }
            None => {}
        }
        if self.page_address != page_lsn {
            return Err(PageHeaderError::UnexpectedPageAddress {
                expected: page_lsn,
                found: self.page_address,
            });
        }
        Ok(())
    }

    pub fn is_continuation(&self) -> bool {
        self.info & XLP_FIRST_IS_CONTRECORD != 0
    }

    pub fn is_overwrite_continuation(&self) -> bool {
        self.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn long_header(page: Lsn, seg: u32) -> Vec<u8> {
        let mut b = vec![0u8; LONG_PAGE_HEADER_SIZE];
        b[0..2].copy_from_slice(&WAL_PAGE_MAGIC_PG15.to_le_bytes());
        b[2..4].copy_from_slice(&(XLP_LONG_HEADER | XLP_BKP_REMOVABLE).to_le_bytes());
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[8..16].copy_from_slice(&page.0.to_le_bytes());
        b[24..32].copy_from_slice(&7u64.to_le_bytes());
        b[32..36].copy_from_slice(&seg.to_le_bytes());
        b[36..40].copy_from_slice(&8192u32.to_le_bytes());
        b
    }

    #[test]
    fn long_header_round_trip_and_validation() {
        let page = Lsn(0x0300_0000);
        let bytes = long_header(page, 16 << 20);
        let hdr = WalPageHeader::parse(&bytes).unwrap();
        assert_eq!(hdr.size(), LONG_PAGE_HEADER_SIZE);
        assert_eq!(hdr.page_address, page);
        assert_eq!(hdr.long.unwrap().system_id, 7);
        hdr.validate(page, WalSegmentSize::DEFAULT, Some(7))
            .unwrap();
        assert_eq!(
            hdr.validate(page, WalSegmentSize::DEFAULT, Some(8)),
            Err(PageHeaderError::SystemIdMismatch {
                expected: 8,
                found: 7
            })
        );
        assert!(matches!(
            hdr.validate(page, WalSegmentSize::new(1 << 20).unwrap(), None),
            Err(PageHeaderError::SegmentSizeMismatch { .. })
        ));
        assert!(matches!(
            hdr.validate(Lsn(0x0400_0000), WalSegmentSize::DEFAULT, None),
            Err(PageHeaderError::UnexpectedPageAddress { .. })
        ));
    }

    #[test]
    fn refusals() {
        assert_eq!(
            WalPageHeader::parse(&[0u8; 24]).unwrap().validate(
                Lsn(8192),
                WalSegmentSize::DEFAULT,
                None
            ),
            Err(PageHeaderError::Zeroed)
        );
        assert_eq!(
            WalPageHeader::parse(&[0u8; 10]),
            Err(PageHeaderError::Truncated(10))
        );
        let mut short = vec![0u8; 24];
        short[0..2].copy_from_slice(&WAL_PAGE_MAGIC_PG15.to_le_bytes());
        short[8..16].copy_from_slice(&0u64.to_le_bytes());
        let hdr = WalPageHeader::parse(&short).unwrap();
        assert_eq!(
            hdr.validate(Lsn(0), WalSegmentSize::DEFAULT, None),
            Err(PageHeaderError::MissingLongHeader)
        );
        short[2] = 0x30;
        let hdr = WalPageHeader::parse(&short).unwrap();
        assert_eq!(
            hdr.validate(Lsn(0), WalSegmentSize::DEFAULT, None),
            Err(PageHeaderError::BadInfo(0x30))
        );
        short[0] = 0x11;
        let hdr = WalPageHeader::parse(&short).unwrap();
        assert!(matches!(
            hdr.validate(Lsn(0), WalSegmentSize::DEFAULT, None),
            Err(PageHeaderError::BadMagic(_))
        ));
    }
}
