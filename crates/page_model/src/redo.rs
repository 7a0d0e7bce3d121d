//! Native ops applied to an 8 KiB page exactly as PostgreSQL 15's redo changes it:
//! visibility-map bits (`visibilitymap.c`), CLOG status bits (`clog.c`) and
//! multixact offsets and members (`multixact.c`). None of them touches `pd_lsn`:
//! PostgreSQL's redo of these changes does not either.

use postgres_wal::page::SIZE_OF_PAGE_HEADER_DATA;
use postgres_wal::BLCKSZ;

use crate::value::NativeOp;

/// `MAXALIGN(SizeOfPageHeaderData)`: where the visibility map's bits start.
const VM_MAP_OFFSET: usize = (SIZE_OF_PAGE_HEADER_DATA + 7) & !7;
/// `MAPSIZE`: bytes of bits per visibility-map page.
const VM_MAP_SIZE: usize = BLCKSZ - VM_MAP_OFFSET;
const VM_BITS_PER_HEAPBLOCK: u32 = 2;
const VM_HEAPBLOCKS_PER_BYTE: u32 = 8 / VM_BITS_PER_HEAPBLOCK;
/// `HEAPBLOCKS_PER_PAGE`: heap blocks one visibility-map page covers.
pub const VM_HEAPBLOCKS_PER_PAGE: u32 = VM_MAP_SIZE as u32 * VM_HEAPBLOCKS_PER_BYTE;
/// `VISIBILITYMAP_ALL_VISIBLE`.
pub const VM_ALL_VISIBLE: u8 = 0x01;
/// `VISIBILITYMAP_ALL_FROZEN`.
pub const VM_ALL_FROZEN: u8 = 0x02;
/// `VISIBILITYMAP_VALID_BITS`.
pub const VM_VALID_BITS: u8 = VM_ALL_VISIBLE | VM_ALL_FROZEN;

/// `CLOG_XACTS_PER_PAGE`.
pub const CLOG_XACTS_PER_PAGE: u32 = BLCKSZ as u32 * 4;
const CLOG_BITS_PER_XACT: u32 = 2;
const CLOG_XACTS_PER_BYTE: u32 = 4;
/// `TRANSACTION_STATUS_*`.
pub const TRANSACTION_STATUS_IN_PROGRESS: u8 = 0x00;
pub const TRANSACTION_STATUS_COMMITTED: u8 = 0x01;
pub const TRANSACTION_STATUS_ABORTED: u8 = 0x02;
pub const TRANSACTION_STATUS_SUB_COMMITTED: u8 = 0x03;

/// `MULTIXACT_OFFSETS_PER_PAGE`.
pub const MULTIXACT_OFFSETS_PER_PAGE: u32 = BLCKSZ as u32 / 4;
const MULTIXACT_FLAGBYTES_PER_GROUP: u32 = 4;
const MULTIXACT_MEMBERS_PER_MEMBERGROUP: u32 = MULTIXACT_FLAGBYTES_PER_GROUP;
/// `MULTIXACT_MEMBERGROUP_SIZE`: four flag bytes, then four xids.
const MULTIXACT_MEMBERGROUP_SIZE: u32 =
    4 * MULTIXACT_MEMBERS_PER_MEMBERGROUP + MULTIXACT_FLAGBYTES_PER_GROUP;
/// `MULTIXACT_MEMBERGROUPS_PER_PAGE`.
const MULTIXACT_MEMBERGROUPS_PER_PAGE: u32 = BLCKSZ as u32 / MULTIXACT_MEMBERGROUP_SIZE;
/// `MULTIXACT_MEMBERS_PER_PAGE`.
pub const MULTIXACT_MEMBERS_PER_PAGE: u32 =
    MULTIXACT_MEMBERGROUPS_PER_PAGE * MULTIXACT_MEMBERS_PER_MEMBERGROUP;
/// `MultiXactStatusUpdate`, the largest member status.
const MULTIXACT_STATUS_MAX: u8 = 5;

/// An op that cannot be what PostgreSQL wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedoError {
    #[error("transaction status {0} is not one of PostgreSQL's four")]
    ClogStatus(u8),
    #[error("multixact member status {0} is above MultiXactStatusUpdate")]
    MemberStatus(u8),
    #[error("visibility-map flags {0:#04x} outside VISIBILITYMAP_VALID_BITS")]
    VmFlags(u8),
}

/// Which VM page holds heap block `heap_blk` (`HEAPBLK_TO_MAPBLOCK`).
pub fn vm_page_of(heap_blk: u32) -> u32 {
    heap_blk / VM_HEAPBLOCKS_PER_PAGE
}

/// Byte of the page and bit shift of a heap block's bits.
fn vm_position(heap_blk: u32) -> (usize, u32) {
    let byte = (heap_blk % VM_HEAPBLOCKS_PER_PAGE) / VM_HEAPBLOCKS_PER_BYTE;
    let shift = (heap_blk % VM_HEAPBLOCKS_PER_BYTE) * VM_BITS_PER_HEAPBLOCK;
    (VM_MAP_OFFSET + byte as usize, shift)
}

/// CLOG page (of the whole SLRU) holding `xid`'s status.
pub fn clog_page_of(xid: u32) -> u32 {
    xid / CLOG_XACTS_PER_PAGE
}

/// Multixact offsets page (of the whole SLRU) holding `multi`'s offset.
pub fn mxact_offsets_page_of(multi: u32) -> u32 {
    multi / MULTIXACT_OFFSETS_PER_PAGE
}

/// Multixact members page (of the whole SLRU) holding member `offset`.
pub fn mxact_members_page_of(offset: u32) -> u32 {
    offset / MULTIXACT_MEMBERS_PER_PAGE
}

/// Applies `op` to `page`.
pub fn apply(op: &NativeOp, page: &mut [u8; BLCKSZ]) -> Result<(), RedoError> {
    match op {
        NativeOp::ClearVmBits { heap_blocks } => {
            for &(blk, flags) in heap_blocks {
                if flags & !VM_VALID_BITS != 0 {
                    return Err(RedoError::VmFlags(flags));
                }
                let (byte, shift) = vm_position(blk);
                page[byte] &= !(flags << shift);
            }
        }
        NativeOp::TruncateVmPage { heap_blocks } => {
            let (byte, shift) = vm_position(*heap_blocks);
            page[byte + 1..].fill(0);
            page[byte] &= ((1u32 << shift) - 1) as u8;
        }
        NativeOp::ClogSetStatus { xids, status } => {
            if *status > TRANSACTION_STATUS_SUB_COMMITTED {
                return Err(RedoError::ClogStatus(*status));
            }
            for &xid in xids {
                let index = xid % CLOG_XACTS_PER_PAGE;
                let byte = (index / CLOG_XACTS_PER_BYTE) as usize;
                let shift = (xid % CLOG_XACTS_PER_BYTE) * CLOG_BITS_PER_XACT;
                let current = (page[byte] >> shift) & 0x03;
                // As TransactionIdSetStatusBit in recovery: a committed subtransaction
                // stays committed when a replayed sub-commit comes after.
                if *status == TRANSACTION_STATUS_SUB_COMMITTED
                    && current == TRANSACTION_STATUS_COMMITTED
                {
                    continue;
                }
                page[byte] = (page[byte] & !(0x03 << shift)) | (status << shift);
            }
        }
        NativeOp::MultiXactOffsets { entries } => {
            for &(multi, offset) in entries {
                let at = ((multi % MULTIXACT_OFFSETS_PER_PAGE) * 4) as usize;
                page[at..at + 4].copy_from_slice(&offset.to_le_bytes());
            }
        }
        NativeOp::MultiXactMembers { members } => {
            for &(offset, xid, status) in members {
                if status > MULTIXACT_STATUS_MAX {
                    return Err(RedoError::MemberStatus(status));
                }
                let group =
                    (offset / MULTIXACT_MEMBERS_PER_MEMBERGROUP) % MULTIXACT_MEMBERGROUPS_PER_PAGE;
                let in_group = offset % MULTIXACT_MEMBERS_PER_MEMBERGROUP;
                let flags_at = (group * MULTIXACT_MEMBERGROUP_SIZE) as usize;
                // The four flag bytes are one little-endian uint32; member i's flags
                // sit at bit 8*i, i.e. in byte i.
                page[flags_at + in_group as usize] = status;
                let xid_at = flags_at + (MULTIXACT_FLAGBYTES_PER_GROUP + in_group * 4) as usize;
                page[xid_at..xid_at + 4].copy_from_slice(&xid.to_le_bytes());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Box<[u8; BLCKSZ]> {
        Box::new([0u8; BLCKSZ])
    }

    #[test]
    fn constants_match_postgres_macros() {
        // MAPSIZE = 8192 - MAXALIGN(24) = 8168; HEAPBLOCKS_PER_PAGE = 8168 * 4.
        assert_eq!(VM_MAP_OFFSET, 24);
        assert_eq!(VM_HEAPBLOCKS_PER_PAGE, 32672);
        assert_eq!(CLOG_XACTS_PER_PAGE, 32768);
        assert_eq!(MULTIXACT_OFFSETS_PER_PAGE, 2048);
        assert_eq!(MULTIXACT_MEMBERGROUP_SIZE, 20);
        assert_eq!(MULTIXACT_MEMBERGROUPS_PER_PAGE, 409);
        assert_eq!(MULTIXACT_MEMBERS_PER_PAGE, 1636);
    }

    #[test]
    fn vm_clear_hits_postgres_positions() {
        let mut p = page();
        p[24..].fill(0xFF);
        // Heap block 32672 + 5 is on the second VM page: byte 5/4 = 1, shift (5%4)*2 = 2.
        let blk = VM_HEAPBLOCKS_PER_PAGE + 5;
        assert_eq!(vm_page_of(blk), 1);
        apply(
            &NativeOp::ClearVmBits {
                heap_blocks: vec![(blk, VM_ALL_FROZEN), (0, VM_VALID_BITS)],
            },
            &mut p,
        )
        .unwrap();
        assert_eq!(p[24 + 1], 0xF7);
        assert_eq!(p[24], 0xFC);
        assert_eq!(p[23], 0);
        assert!(p[26..].iter().all(|&b| b == 0xFF));
        // The last heap block of a page is the top bits of the last byte.
        apply(
            &NativeOp::ClearVmBits {
                heap_blocks: vec![(VM_HEAPBLOCKS_PER_PAGE - 1, VM_ALL_VISIBLE)],
            },
            &mut p,
        )
        .unwrap();
        assert_eq!(p[BLCKSZ - 1], 0xBF);
        assert!(apply(
            &NativeOp::ClearVmBits {
                heap_blocks: vec![(0, 4)]
            },
            &mut p
        )
        .is_err());
    }

    #[test]
    fn vm_truncate_keeps_bits_below_the_new_size() {
        let mut p = page();
        p[24..].fill(0xFF);
        // 6 heap blocks: truncByte 1, truncOffset 4 -> map[1] &= 0x0F, rest zeroed.
        apply(
            &NativeOp::TruncateVmPage {
                heap_blocks: VM_HEAPBLOCKS_PER_PAGE + 6,
            },
            &mut p,
        )
        .unwrap();
        assert_eq!(p[24], 0xFF);
        assert_eq!(p[25], 0x0F);
        assert!(p[26..].iter().all(|&b| b == 0));
        let mut p = page();
        p[24..].fill(0xFF);
        apply(&NativeOp::TruncateVmPage { heap_blocks: 4 }, &mut p).unwrap();
        assert_eq!((p[24], p[25]), (0xFF, 0));
    }

    #[test]
    fn clog_status_bits() {
        let mut p = page();
        // xid 32768*2 + 9: byte 2, shift 2; xid 7: byte 1, shift 6.
        let xids = vec![2 * CLOG_XACTS_PER_PAGE + 9, 7];
        assert_eq!(clog_page_of(xids[0]), 2);
        apply(
            &NativeOp::ClogSetStatus {
                xids,
                status: TRANSACTION_STATUS_ABORTED,
            },
            &mut p,
        )
        .unwrap();
        assert_eq!(p[2], 0x02 << 2);
        assert_eq!(p[1], 0x02 << 6);
        apply(
            &NativeOp::ClogSetStatus {
                xids: vec![7],
                status: TRANSACTION_STATUS_COMMITTED,
            },
            &mut p,
        )
        .unwrap();
        assert_eq!(p[1], 0x01 << 6);
        apply(
            &NativeOp::ClogSetStatus {
                xids: vec![7],
                status: TRANSACTION_STATUS_SUB_COMMITTED,
            },
            &mut p,
        )
        .unwrap();
        assert_eq!(p[1], 0x01 << 6, "sub-commit never undoes a commit");
        assert!(apply(
            &NativeOp::ClogSetStatus {
                xids: vec![1],
                status: 4
            },
            &mut p
        )
        .is_err());
    }

    #[test]
    fn multixact_offsets_and_members() {
        let mut p = page();
        apply(
            &NativeOp::MultiXactOffsets {
                entries: vec![(2048 + 3, 0x0102_0304)],
            },
            &mut p,
        )
        .unwrap();
        assert_eq!(&p[12..16], &[4, 3, 2, 1]);
        let mut p = page();
        // Offset 1636 + 6 is on members page 1: group 1 (bytes 20..40), member 2:
        // flag byte 22, xid at 20 + 4 + 8 = 32.
        let off = MULTIXACT_MEMBERS_PER_PAGE + 6;
        assert_eq!(mxact_members_page_of(off), 1);
        apply(
            &NativeOp::MultiXactMembers {
                members: vec![(off, 0xAABB_CCDD, 3)],
            },
            &mut p,
        )
        .unwrap();
        assert_eq!(p[22], 3);
        assert_eq!(&p[32..36], &[0xDD, 0xCC, 0xBB, 0xAA]);
        // The last group of a page ends at 409 * 20 = 8180; the 12 bytes after stay unused.
        apply(
            &NativeOp::MultiXactMembers {
                members: vec![(MULTIXACT_MEMBERS_PER_PAGE - 1, 1, 1)],
            },
            &mut p,
        )
        .unwrap();
        assert_eq!(p[8160 + 3], 1);
        assert_eq!(&p[8176..8180], &[1, 0, 0, 0]);
        assert!(p[8180..].iter().all(|&b| b == 0));
        assert!(apply(
            &NativeOp::MultiXactMembers {
                members: vec![(0, 1, 6)]
            },
            &mut p
        )
        .is_err());
    }
}
