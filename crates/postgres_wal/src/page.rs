//! The standard header at the start of every relation data page (`PageHeaderData`).
//!
//! Heap, index, FSM and visibility-map pages all begin with this 24-byte header, so the
//! page LSN and checksum can be read and written without knowing the page's kind. The
//! LSN is stored as two native-endian 32-bit halves (high half first) rather than one
//! 64-bit value, because the struct predates 64-bit alignment guarantees; on a
//! little-endian machine that is *not* the same bytes as a little-endian `u64`.

use crate::lsn::Lsn;
use crate::BLCKSZ;

/// `SizeOfPageHeaderData`: where the line-pointer array begins.
pub const SIZE_OF_PAGE_HEADER_DATA: usize = 24;

/// Some line pointers are unused, so an insert may reuse one.
pub const PD_HAS_FREE_LINES: u16 = 0x0001;
/// A recent insert found no room; a hint for pruning, not a guarantee.
pub const PD_PAGE_FULL: u16 = 0x0002;
/// Every tuple is visible to every transaction (mirrors the visibility map bit).
pub const PD_ALL_VISIBLE: u16 = 0x0004;
/// All flag bits PostgreSQL 15 defines; any other bit set means a damaged header.
pub const PD_VALID_FLAG_BITS: u16 = 0x0007;

/// The page layout version PostgreSQL has written since 8.3.
pub const PG_PAGE_LAYOUT_VERSION: u8 = 4;

/// `MAXIMUM_ALIGNOF` on x86_64 and aarch64.
const MAXIMUM_ALIGNOF: u16 = 8;

const LSN_OFFSET: usize = 0;
const CHECKSUM_OFFSET: usize = 8;
const UPPER_OFFSET: usize = 14;

/// Why a page header fails PostgreSQL's sanity checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("page is {len} bytes; a page header needs {SIZE_OF_PAGE_HEADER_DATA}")]
    TooShort { len: usize },
    #[error("page has pd_upper = 0 (never initialised) but is not all zeros")]
    UninitialisedNotZero,
    #[error("page has invalid flag bits set: pd_flags = 0x{flags:04x}")]
    InvalidFlags { flags: u16 },
    #[error(
        "page offsets out of order: pd_lower {lower}, pd_upper {upper}, pd_special {special} \
         (need pd_lower <= pd_upper <= pd_special <= {BLCKSZ})"
    )]
    InvalidOffsets {
        lower: u16,
        upper: u16,
        special: u16,
    },
    #[error("page pd_special {special} is not a multiple of {MAXIMUM_ALIGNOF}")]
    UnalignedSpecial { special: u16 },
    #[error(
        "page size/version 0x{pagesize_version:04x} is not size {BLCKSZ}, layout version \
         {PG_PAGE_LAYOUT_VERSION}"
    )]
    InvalidSizeVersion { pagesize_version: u16 },
}

/// A decoded `PageHeaderData` (without the line-pointer array that follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PageHeader {
    /// LSN of the last WAL record that changed this page; WAL must be flushed up to
    /// here before the page may be written out.
    pub pd_lsn: Lsn,
    pub pd_checksum: u16,
    pub pd_flags: u16,
    /// Start of free space (end of the line-pointer array).
    pub pd_lower: u16,
    /// End of free space (start of tuple data).
    pub pd_upper: u16,
    /// Start of the access-method-specific area at the end of the page.
    pub pd_special: u16,
    /// Page size in the high byte, layout version in the low byte.
    pub pd_pagesize_version: u16,
    /// Oldest XID that might be prunable, or 0 when none.
    pub pd_prune_xid: u32,
}

impl PageHeader {
    /// Decodes the header from the start of `page`; only the first
    /// [`SIZE_OF_PAGE_HEADER_DATA`] bytes are needed.
    pub fn decode(page: &[u8]) -> Result<PageHeader, PageError> {
        let header = page
            .get(..SIZE_OF_PAGE_HEADER_DATA)
            .ok_or(PageError::TooShort { len: page.len() })?;
        let u16_at = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
        let u32_at = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        Ok(PageHeader {
            pd_lsn: lsn_from_halves(u32_at(0), u32_at(4)),
            pd_checksum: u16_at(8),
            pd_flags: u16_at(10),
            pd_lower: u16_at(12),
            pd_upper: u16_at(14),
            pd_special: u16_at(16),
            pd_pagesize_version: u16_at(18),
            pd_prune_xid: u32_at(20),
        })
    }

    pub fn encode(&self) -> [u8; SIZE_OF_PAGE_HEADER_DATA] {
        let mut out = [0u8; SIZE_OF_PAGE_HEADER_DATA];
        out[0..8].copy_from_slice(&lsn_to_halves(self.pd_lsn));
        out[8..10].copy_from_slice(&self.pd_checksum.to_le_bytes());
        out[10..12].copy_from_slice(&self.pd_flags.to_le_bytes());
        out[12..14].copy_from_slice(&self.pd_lower.to_le_bytes());
        out[14..16].copy_from_slice(&self.pd_upper.to_le_bytes());
        out[16..18].copy_from_slice(&self.pd_special.to_le_bytes());
        out[18..20].copy_from_slice(&self.pd_pagesize_version.to_le_bytes());
        out[20..24].copy_from_slice(&self.pd_prune_xid.to_le_bytes());
        out
    }

    /// Page size recorded in the header (`PageGetPageSize`).
    pub fn page_size(&self) -> usize {
        usize::from(self.pd_pagesize_version & 0xFF00)
    }

    /// Layout version recorded in the header (`PageGetPageLayoutVersion`).
    pub fn layout_version(&self) -> u8 {
        (self.pd_pagesize_version & 0x00FF) as u8
    }

    /// PostgreSQL's `PageIsNew`: `pd_upper` is zero only on a page that was never
    /// initialised, which is the sole case where a page carries no checksum.
    pub fn is_new(&self) -> bool {
        self.pd_upper == 0
    }

    /// The header checks of `PageIsVerifiedExtended`, plus the size/version check it
    /// leaves to later use of the page. Assumes the page is not new.
    fn check(&self) -> Result<(), PageError> {
        if self.pd_flags & !PD_VALID_FLAG_BITS != 0 {
            return Err(PageError::InvalidFlags {
                flags: self.pd_flags,
            });
        }
        if !(self.pd_lower <= self.pd_upper
            && self.pd_upper <= self.pd_special
            && usize::from(self.pd_special) <= BLCKSZ)
        {
            return Err(PageError::InvalidOffsets {
                lower: self.pd_lower,
                upper: self.pd_upper,
                special: self.pd_special,
            });
        }
        if self.pd_special % MAXIMUM_ALIGNOF != 0 {
            return Err(PageError::UnalignedSpecial {
                special: self.pd_special,
            });
        }
        if self.page_size() != BLCKSZ || self.layout_version() != PG_PAGE_LAYOUT_VERSION {
            return Err(PageError::InvalidSizeVersion {
                pagesize_version: self.pd_pagesize_version,
            });
        }
        Ok(())
    }
}

fn lsn_from_halves(xlogid: u32, xrecoff: u32) -> Lsn {
    Lsn((u64::from(xlogid) << 32) | u64::from(xrecoff))
}

fn lsn_to_halves(lsn: Lsn) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[0..4].copy_from_slice(&((lsn.0 >> 32) as u32).to_le_bytes());
    out[4..8].copy_from_slice(&(lsn.0 as u32).to_le_bytes());
    out
}

/// The page's `pd_lsn` (`PageGetLSN`).
pub fn page_lsn(page: &[u8; BLCKSZ]) -> Lsn {
    let word = |at: usize| u32::from_le_bytes([page[at], page[at + 1], page[at + 2], page[at + 3]]);
    lsn_from_halves(word(LSN_OFFSET), word(LSN_OFFSET + 4))
}

/// Sets the page's `pd_lsn` (`PageSetLSN`). Redo stamps every page it changes so that
/// replaying the same record again can be recognised and skipped.
pub fn set_page_lsn(page: &mut [u8; BLCKSZ], lsn: Lsn) {
    page[LSN_OFFSET..LSN_OFFSET + 8].copy_from_slice(&lsn_to_halves(lsn));
}

/// The checksum stored in the page header, as opposed to the one the contents imply
/// ([`pg_checksum_page`](crate::checksum::pg_checksum_page)).
pub fn stored_checksum(page: &[u8; BLCKSZ]) -> u16 {
    u16::from_le_bytes([page[CHECKSUM_OFFSET], page[CHECKSUM_OFFSET + 1]])
}

/// Overwrites `pd_checksum`; see [`set_page_checksum`](crate::checksum::set_page_checksum)
/// to compute and store the right value.
pub fn set_stored_checksum(page: &mut [u8; BLCKSZ], checksum: u16) {
    page[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 2].copy_from_slice(&checksum.to_le_bytes());
}

/// PostgreSQL's `PageIsNew` (`pd_upper == 0`): a page that was never initialised and so
/// has no checksum. A valid new page is also entirely zero; see [`verify_header`].
pub fn is_new(page: &[u8; BLCKSZ]) -> bool {
    page[UPPER_OFFSET] == 0 && page[UPPER_OFFSET + 1] == 0
}

/// Whether every byte is zero: what a relation extended but never written contains,
/// and a state PostgreSQL accepts without a checksum.
pub fn is_all_zeros(page: &[u8; BLCKSZ]) -> bool {
    page.iter().all(|&b| b == 0)
}

/// The header sanity checks PostgreSQL makes when it reads a page from disk
/// (`PageIsVerifiedExtended`, minus the checksum, which is
/// [`verify_page_checksum`](crate::checksum::verify_page_checksum)).
///
/// An all-zero page passes, as PostgreSQL allows them after a crash during relation
/// extension. A page with `pd_upper == 0` that is not all zeros fails. Otherwise the
/// flags, the ordering of `pd_lower`/`pd_upper`/`pd_special` and the alignment of
/// `pd_special` are checked as PostgreSQL does, and in addition the recorded page size
/// and layout version must be 8192 and 4 (PostgreSQL never writes anything else, so a
/// mismatch is damage that PostgreSQL would only notice later).
pub fn verify_header(page: &[u8; BLCKSZ]) -> Result<(), PageError> {
    let header = PageHeader::decode(page)?;
    if header.is_new() {
        return if is_all_zeros(page) {
            Ok(())
        } else {
            Err(PageError::UninitialisedNotZero)
        };
    }
    header.check()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEAP: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pg15_heap_4_blocks"
    ));

    fn fixture_page(blkno: usize) -> [u8; BLCKSZ] {
        let mut page = [0u8; BLCKSZ];
        page.copy_from_slice(&HEAP[blkno * BLCKSZ..(blkno + 1) * BLCKSZ]);
        page
    }

    /// Header values read from the fixture with `xxd`.
    #[test]
    fn decodes_a_real_heap_page_header() {
        let page = fixture_page(0);
        let h = PageHeader::decode(&page).unwrap();
        assert_eq!(h.pd_lsn, "0/17710A0".parse().unwrap());
        assert_eq!(h.pd_checksum, 0x9F46);
        assert_eq!(h.pd_flags, PD_ALL_VISIBLE);
        assert_eq!(
            (h.pd_lower, h.pd_upper, h.pd_special),
            (0x01F8, 0x0200, 0x2000)
        );
        assert_eq!(h.pd_pagesize_version, 0x2004);
        assert_eq!((h.page_size(), h.layout_version()), (8192, 4));
        assert_eq!(h.pd_prune_xid, 0);
        assert!(!h.is_new());
        assert_eq!(h.encode()[..], page[..SIZE_OF_PAGE_HEADER_DATA]);
        assert_eq!(page_lsn(&page), h.pd_lsn);
        assert_eq!(stored_checksum(&page), h.pd_checksum);
        for blkno in 0..HEAP.len() / BLCKSZ {
            assert_eq!(verify_header(&fixture_page(blkno)), Ok(()), "block {blkno}");
        }
    }

    #[test]
    fn lsn_is_stored_as_high_then_low_half() {
        let mut page = fixture_page(1);
        set_page_lsn(&mut page, Lsn(0x0000_0001_0000_0002));
        assert_eq!(page[0..8], [1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(page_lsn(&page), Lsn(0x0000_0001_0000_0002));
        assert_eq!(
            PageHeader::decode(&page).unwrap().pd_lsn,
            Lsn(0x0000_0001_0000_0002)
        );
        set_stored_checksum(&mut page, 0xBEEF);
        assert_eq!(page[8..10], [0xEF, 0xBE]);
        assert_eq!(stored_checksum(&page), 0xBEEF);
        // Nothing else moved.
        assert_eq!(page[10..], HEAP[BLCKSZ + 10..2 * BLCKSZ]);
    }

    #[test]
    fn zero_and_uninitialised_pages() {
        let zero = [0u8; BLCKSZ];
        assert!(is_new(&zero) && is_all_zeros(&zero));
        assert_eq!(verify_header(&zero), Ok(()));
        let mut dirty = zero;
        dirty[BLCKSZ - 1] = 1;
        assert!(is_new(&dirty) && !is_all_zeros(&dirty));
        assert_eq!(verify_header(&dirty), Err(PageError::UninitialisedNotZero));
        assert!(!is_new(&fixture_page(0)));
    }

    #[test]
    fn header_sanity_checks() {
        let base = PageHeader::decode(&fixture_page(2)).unwrap();
        let check = |h: PageHeader| {
            let mut page = fixture_page(2);
            page[..SIZE_OF_PAGE_HEADER_DATA].copy_from_slice(&h.encode());
            verify_header(&page)
        };
        assert_eq!(check(base), Ok(()));
        assert_eq!(
            check(PageHeader {
                pd_flags: 0x0008,
                ..base
            }),
            Err(PageError::InvalidFlags { flags: 0x0008 })
        );
        assert!(matches!(
            check(PageHeader {
                pd_lower: base.pd_upper + 1,
                ..base
            }),
            Err(PageError::InvalidOffsets { .. })
        ));
        assert!(matches!(
            check(PageHeader {
                pd_upper: 8000,
                pd_special: 7992,
                ..base
            }),
            Err(PageError::InvalidOffsets { .. })
        ));
        assert!(matches!(
            check(PageHeader {
                pd_special: 8200,
                ..base
            }),
            Err(PageError::InvalidOffsets { .. })
        ));
        assert_eq!(
            check(PageHeader {
                pd_special: 8188,
                ..base
            }),
            Err(PageError::UnalignedSpecial { special: 8188 })
        );
        assert_eq!(
            check(PageHeader {
                pd_special: 8176,
                ..base
            }),
            Ok(())
        );
        for bad in [0x2005, 0x4004, 0x2000] {
            assert_eq!(
                check(PageHeader {
                    pd_pagesize_version: bad,
                    ..base
                }),
                Err(PageError::InvalidSizeVersion {
                    pagesize_version: bad
                })
            );
        }
        assert_eq!(
            PageHeader::decode(&[0u8; 23]),
            Err(PageError::TooShort { len: 23 })
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(h) = PageHeader::decode(&bytes) {
                prop_assert_eq!(&h.encode()[..], &bytes[..SIZE_OF_PAGE_HEADER_DATA]);
            } else {
                prop_assert!(bytes.len() < SIZE_OF_PAGE_HEADER_DATA);
            }
        }

        #[test]
        fn verify_header_never_panics(header in any::<[u8; SIZE_OF_PAGE_HEADER_DATA]>()) {
            let mut page = [0u8; BLCKSZ];
            page[..SIZE_OF_PAGE_HEADER_DATA].copy_from_slice(&header);
            let _ = verify_header(&page);
        }
    }
}
