//! `WalStreamDecoder` on real PostgreSQL 15 WAL: the fixture (first 256 KiB of a 1 MiB
//! segment, see `fixtures/README.md`) must decode to exactly what `pg_waldump` printed,
//! however it is fed and wherever decoding starts, and every kind of damage must stop
//! decoding with the right error at the right LSN.
#![allow(clippy::unwrap_used)]

mod support;

use postgres_wal::decoder::WalDecodeError;
use postgres_wal::image::restore_page;
use postgres_wal::page::{page_lsn, verify_header};
use postgres_wal::page_header::PageHeaderError;
use postgres_wal::record::{DecodedRecord, ImageCompression};
use postgres_wal::rmgr::{record_type_display, xlog, RmgrId};
use postgres_wal::{Lsn, BLCKSZ};
use support::{
    byte_end, decode, decode_chunked, lsn_at, offset_of, record_byte_lsn, reference, segment_size,
    wal_start, waldump, Decoded, DumpBlock, DumpRecord, Rng, PAGE, WAL,
};

/// Compare one decoded record with `pg_waldump`'s line for it.
fn check_record(rec: &DecodedRecord, dump: &DumpRecord) {
    let at = rec.lsn;
    assert_eq!(rec.lsn, dump.lsn);
    assert_eq!(rec.header.prev, dump.prev, "prev of {at}");
    assert_eq!(rec.rmid().display_name(), dump.rmgr, "rmgr of {at}");
    let record_type = record_type_display(rec.rmid(), rec.header.info);
    assert!(
        dump.desc == record_type || dump.desc.starts_with(&format!("{record_type} ")),
        "record type of {at}: we say {record_type:?}, pg_waldump {:?}",
        dump.desc
    );
    assert_eq!(rec.xid(), dump.xid, "xid of {at}");
    assert_eq!(rec.header.total_len, dump.tot_len, "total length of {at}");
    assert_eq!(
        rec.non_image_len(),
        dump.rec_len,
        "non-image length of {at}"
    );
    assert_eq!(rec.blocks.len(), dump.blocks.len(), "block count of {at}");
    for (block, dump_block) in rec.blocks.iter().zip(&dump.blocks) {
        check_block(rec, block, dump_block);
    }
}

fn check_block(rec: &DecodedRecord, block: &postgres_wal::record::BlockRef, dump: &DumpBlock) {
    let at = format!("block {} of {}", block.block_id, rec.lsn);
    assert_eq!(block.block_id, dump.block_id, "{at}");
    assert_eq!(block.rel.to_string(), dump.rel, "relation of {at}");
    assert_eq!(block.fork.name(), dump.fork, "fork of {at}");
    assert_eq!(block.blkno, dump.blkno, "block number of {at}");
    assert_eq!(block.image.is_some(), dump.image.is_some(), "image of {at}");
    let (Some(image), Some(dump)) = (&block.image, &dump.image) else {
        return;
    };
    assert_eq!(image.apply, dump.apply, "apply flag of {at}");
    assert_eq!(
        (image.hole_offset, image.hole_length),
        (dump.hole_offset, dump.hole_length),
        "hole of {at}"
    );
    let saved = BLCKSZ - usize::from(image.hole_length) - image.bytes.len();
    match &dump.compression {
        None => assert_eq!(image.compression, ImageCompression::None, "{at}"),
        Some((dump_saved, method)) => {
            assert_eq!(image.compression.name(), method, "compression of {at}");
            assert_eq!(saved, *dump_saved as usize, "compression saved in {at}");
        }
    }
}

/// The records of the clean decode that `pred` accepts.
fn reference_from(pred: impl Fn(&DecodedRecord) -> bool) -> Vec<DecodedRecord> {
    reference().iter().filter(|r| pred(r)).cloned().collect()
}

/// The records a decode returned are exactly `expected`, in order.
fn check_records(decoded: &Decoded, expected: &[DecodedRecord], what: &str) {
    let lsns = |records: &[DecodedRecord]| records.iter().map(|r| r.lsn).collect::<Vec<_>>();
    assert_eq!(
        lsns(&decoded.records),
        lsns(expected),
        "{what}: record LSNs differ"
    );
    assert!(
        decoded.records == expected,
        "{what}: record contents differ"
    );
}

fn end_of_wal_at(decoded: &Decoded, lsn: Lsn, what: &str) {
    match &decoded.error {
        Some(WalDecodeError::EndOfWal { lsn: at, .. }) => assert_eq!(*at, lsn, "{what}"),
        other => panic!("{what}: expected end of WAL at {lsn}, got {other:?}"),
    }
}

#[test]
fn fixture_decodes_to_what_pg_waldump_printed() {
    let records = reference();
    let dump = waldump();
    assert_eq!(records.len(), dump.len(), "record count");
    for (rec, dump) in records.iter().zip(&dump) {
        check_record(rec, dump);
    }
    for pair in records.windows(2) {
        // The next record starts where this one ended, or after the page header there.
        let end = pair[0].end_lsn;
        let next = if end.page_offset() == 0 {
            record_byte_lsn(Lsn(end.0 - 1), 1)
        } else {
            end
        };
        assert_eq!(pair[1].lsn, next, "records are contiguous");
        assert_eq!(pair[1].header.prev, pair[0].lsn, "prev-links chain");
    }
    // The segment ends with an XLOG SWITCH, after which the next record is in the next
    // segment.
    let last = records.last().unwrap();
    assert_eq!(
        (last.rmid(), last.rmgr_info()),
        (RmgrId::XLOG, xlog::SWITCH)
    );
    assert_eq!(last.end_lsn, Lsn(wal_start().0 + segment_size().bytes()));
}

/// The fixture exercises what the other tests rely on; guards against regenerating it
/// into something weaker.
#[test]
fn fixture_covers_multi_page_records_images_and_forks() {
    let records = reference();
    let pages_spanned = |r: &DecodedRecord| (byte_end(r).0 - 1) / 8192 - r.lsn.0 / 8192 + 1;
    assert!(records.iter().any(|r| pages_spanned(r) >= 3));
    let images: Vec<_> = records
        .iter()
        .flat_map(|r| r.blocks.iter())
        .filter_map(|b| b.image.as_ref())
        .collect();
    for compression in [
        ImageCompression::None,
        ImageCompression::Pglz,
        ImageCompression::Lz4,
        ImageCompression::Zstd,
    ] {
        assert!(
            images.iter().any(|i| i.compression == compression),
            "no {compression:?} image"
        );
    }
    assert!(images.iter().any(|i| i.hole_length == 0));
    assert!(images.iter().any(|i| i.hole_length > 0));
    for fork in ["main", "fsm", "vm"] {
        assert!(records
            .iter()
            .flat_map(|r| r.blocks.iter())
            .any(|b| b.fork.name() == fork));
    }
    let checkpoints = records
        .iter()
        .filter(|r| r.rmid() == RmgrId::XLOG && r.rmgr_info() == xlog::CHECKPOINT_ONLINE)
        .count();
    assert!(checkpoints >= 2);
}

/// Feeding the bytes in chunks of any size yields the same records.
#[test]
fn chunk_sizes_do_not_matter() {
    let check = |what: &str, next_chunk: &mut dyn FnMut() -> usize| {
        let decoded = decode_chunked(WAL, wal_start(), segment_size(), next_chunk);
        assert_eq!(decoded.error, None, "{what}");
        check_records(&decoded, reference(), what);
        assert_eq!(decoded.fed_end, lsn_at(WAL.len()), "{what}");
    };
    for size in [1, 7, 24, 41, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE + 5] {
        check(&format!("chunks of {size}"), &mut || size);
    }
    for seed in 1..=4 {
        let mut rng = Rng::new(seed);
        check(
            &format!("random chunks, seed {seed}"),
            &mut || match rng.next_u64() % 4 {
                0 => rng.between_1_and(8),
                1 => rng.between_1_and(100),
                2 => rng.between_1_and(PAGE),
                _ => rng.between_1_and(4 * PAGE),
            },
        );
    }
}

/// Started at a page boundary, the decoder skips the rest of a record continued from
/// the previous page (using the page header's remaining length, across several pages
/// if need be) and returns exactly the records that start after the boundary.
#[test]
fn starting_at_any_page_boundary_skips_the_continued_record() {
    let last = reference().last().unwrap().lsn;
    let mut inside_multi_page = 0;
    for offset in (PAGE..WAL.len()).step_by(PAGE) {
        let page = lsn_at(offset);
        let what = format!("start at page {page}");
        let decoded = decode(&WAL[offset..], page);
        let expected = reference_from(|r| r.lsn > page);
        check_records(&decoded, &expected, &what);
        if page > last {
            // Past the XLOG SWITCH the segment is zeros: nothing was ever written there.
            end_of_wal_at(&decoded, page, &what);
        } else {
            assert_eq!(decoded.error, None, "{what}");
        }
        // Count boundaries inside a record that continues past the following page too.
        if reference()
            .iter()
            .any(|r| r.lsn < page && byte_end(r).0 > page.0 + PAGE as u64)
        {
            inside_multi_page += 1;
        }
    }
    assert!(
        inside_multi_page >= 1,
        "no page boundary inside a record spanning 3 pages"
    );
}

/// Started mid-page at a record's LSN, the decoder returns that record and all after it.
#[test]
fn starting_mid_page_at_any_record() {
    for (i, rec) in reference().iter().enumerate() {
        assert_ne!(rec.lsn.page_offset(), 0);
        let decoded = decode(&WAL[offset_of(rec.lsn)..], rec.lsn);
        assert_eq!(decoded.error, None, "start at {}", rec.lsn);
        check_records(
            &decoded,
            &reference()[i..],
            &format!("start at {}", rec.lsn),
        );
    }
}

/// When the bytes run out, inside a record or between two, `poll` says `Ok(None)`,
/// having returned every record whose bytes were all fed.
#[test]
fn running_out_of_bytes_is_not_an_error() {
    let check = |cut: usize| {
        let what = format!("bytes end at {}", lsn_at(cut));
        let decoded = decode(&WAL[..cut], wal_start());
        assert_eq!(decoded.error, None, "{what}");
        let expected = reference_from(|r| byte_end(r) <= lsn_at(cut));
        check_records(&decoded, &expected, &what);
        if let Some(last) = expected.last() {
            assert_eq!(decoded.valid_end, last.end_lsn, "{what}");
        }
    };
    // The fixture itself ends in the zeros after the XLOG SWITCH, which are skipped.
    check(WAL.len());
    for offset in (PAGE..WAL.len()).step_by(PAGE) {
        for delta in [-1, 0, 1, 23, 24, 25] {
            check(offset.saturating_add_signed(delta));
        }
    }
    for rec in reference() {
        let start = offset_of(rec.lsn);
        let end = offset_of(byte_end(rec));
        for cut in [start + 1, start + 4, start + 23, start + 24, end - 1, end] {
            check(cut.min(end));
        }
    }
}

/// A zeroed page where the next page header should be: end of WAL at that page, after
/// every record that ended before it.
#[test]
fn zeroed_page_after_the_last_record_is_end_of_wal() {
    let last = reference().last().unwrap();
    for offset in (0..WAL.len()).step_by(PAGE) {
        let page = lsn_at(offset);
        let mut bytes = WAL[..offset].to_vec();
        bytes.extend_from_slice(&[0; PAGE]);
        let decoded = decode(&bytes, wal_start());
        let expected = reference_from(|r| byte_end(r) <= page);
        let what = format!("zero page at {page}");
        check_records(&decoded, &expected, &what);
        if page > last.lsn {
            // Inside the rest of the switched segment, which the decoder skips.
            assert_eq!(decoded.error, None, "{what}");
        } else {
            end_of_wal_at(&decoded, page, &what);
            if let Some(last) = expected.last() {
                assert_eq!(decoded.valid_end, last.end_lsn, "{what}");
            }
        }
    }
}

/// Zeros from where a record should start: its length is zero, end of WAL at its LSN,
/// and `valid_end` is where the previous record ended.
#[test]
fn zeroed_record_is_end_of_wal() {
    for (i, rec) in reference().iter().enumerate() {
        let offset = offset_of(rec.lsn);
        let mut bytes = WAL[..offset].to_vec();
        bytes.resize((offset / PAGE + 2) * PAGE, 0);
        let decoded = decode(&bytes, wal_start());
        let what = format!("zeros from {}", rec.lsn);
        check_records(&decoded, &reference()[..i], &what);
        end_of_wal_at(&decoded, rec.lsn, &what);
        let previous_end = i.checked_sub(1).map_or(rec.lsn, |p| reference()[p].end_lsn);
        assert_eq!(decoded.valid_end, previous_end, "{what}");
    }
}

/// A flipped bit anywhere the CRC covers (the header's xid, info and CRC fields, and
/// the first, a middle and the last byte after the header) is a CRC error at the
/// record, after every record before it.
#[test]
fn flipped_byte_is_a_crc_error_at_its_record() {
    for (i, rec) in reference().iter().enumerate() {
        let len = rec.header.total_len;
        let mut positions = vec![4, 16, 20, 23];
        if len > 24 {
            positions.extend([24, 24 + (len - 24) / 2, len - 1]);
        }
        for k in positions {
            let mut bytes = WAL.to_vec();
            bytes[offset_of(record_byte_lsn(rec.lsn, k))] ^= 0x20;
            let decoded = decode(&bytes, wal_start());
            let what = format!("byte {k} of {} flipped", rec.lsn);
            check_records(&decoded, &reference()[..i], &what);
            match &decoded.error {
                Some(WalDecodeError::Crc {
                    lsn,
                    stored,
                    computed,
                }) => {
                    assert_eq!(*lsn, rec.lsn, "{what}");
                    assert_ne!(stored, computed, "{what}");
                }
                other => panic!("{what}: expected a CRC error, got {other:?}"),
            }
            let previous_end = i.checked_sub(1).map_or(rec.lsn, |p| reference()[p].end_lsn);
            assert_eq!(decoded.valid_end, previous_end, "{what}");
        }
    }
}

/// Damage to the page header at `offset`: decoding stops at that page with an error
/// about `error_lsn` that `error` accepts, after every record that ended before it.
fn check_page_header_damage(
    offset: usize,
    damage: impl Fn(&mut [u8]),
    error_lsn: Lsn,
    error: impl Fn(&WalDecodeError) -> bool,
) {
    let page = lsn_at(offset);
    let mut bytes = WAL.to_vec();
    damage(&mut bytes[offset..offset + PAGE]);
    let decoded = decode(&bytes, wal_start());
    let what = format!("page header at {page} damaged");
    let expected = reference_from(|r| byte_end(r) <= page);
    check_records(&decoded, &expected, &what);
    let found = decoded.error.as_ref().expect("an error");
    assert_eq!(found.lsn(), error_lsn, "{what}: {found}");
    assert!(error(found), "{what}: {found}");
    if let Some(last) = expected.last() {
        assert_eq!(decoded.valid_end, last.end_lsn, "{what}");
    }
}

/// Pages written by PostgreSQL up to the XLOG SWITCH (the rest are zeros).
fn written_pages() -> impl Iterator<Item = usize> {
    let end = offset_of(reference().last().unwrap().lsn);
    (0..=end).step_by(PAGE)
}

/// A page whose header names another address (a recycled segment's old page) is where
/// the WAL ends.
#[test]
fn wrong_page_address_is_end_of_wal() {
    for offset in written_pages() {
        check_page_header_damage(
            offset,
            |page| {
                let addr = u64::from_le_bytes(page[8..16].try_into().unwrap());
                let old = addr - segment_size().bytes();
                page[8..16].copy_from_slice(&old.to_le_bytes());
            },
            lsn_at(offset),
            |e| e.is_end_of_wal(),
        );
    }
}

#[test]
fn bad_magic_is_a_page_header_error() {
    for offset in written_pages() {
        check_page_header_damage(
            offset,
            |page| page[1] ^= 0x01,
            lsn_at(offset),
            |e| {
                matches!(
                    e,
                    WalDecodeError::PageHeader {
                        source: PageHeaderError::BadMagic(0xD010),
                        ..
                    }
                )
            },
        );
    }
}

/// A page claiming to continue a record when none is pending, or not to continue the
/// one that is, is an invalid record: the pending one, or the page.
#[test]
fn continuation_flag_must_match() {
    for offset in written_pages().skip(1) {
        let page = lsn_at(offset);
        let pending = reference()
            .iter()
            .find(|r| r.lsn < page && byte_end(r) > page);
        check_page_header_damage(
            offset,
            |bytes| bytes[2] ^= 0x01,
            pending.map_or(page, |r| r.lsn),
            |e| matches!(e, WalDecodeError::InvalidRecord { .. }),
        );
    }
}

/// Every image PostgreSQL marked for redo restores to a page with a sane header, whose
/// LSN precedes the record that carries it.
#[test]
fn every_image_restores_to_a_valid_page() {
    let mut restored = 0;
    for rec in reference() {
        for block in &rec.blocks {
            let Some(image) = &block.image else { continue };
            assert!(image.apply, "{}: image not for redo", rec.lsn);
            let page = restore_page(rec, image)
                .unwrap_or_else(|e| panic!("block {} of {}: {e}", block.block_id, rec.lsn));
            verify_header(&page)
                .unwrap_or_else(|e| panic!("block {} of {}: {e}", block.block_id, rec.lsn));
            assert!(page_lsn(&page) < rec.lsn, "{}", rec.lsn);
            restored += 1;
        }
    }
    assert_eq!(
        restored,
        waldump()
            .iter()
            .flat_map(|r| &r.blocks)
            .filter(|b| b.image.is_some())
            .count()
    );
}
