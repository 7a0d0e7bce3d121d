//! Property tests over random damage to real WAL (the fixture of `tests/decoder.rs`):
//! whatever the damage, however the bytes are fed and wherever decoding starts, the
//! decoder never panics, returns only records PostgreSQL wrote (equal to the clean
//! decode's record at the same LSN, with a valid CRC), returns every record wholly
//! before the first damaged byte, and reports errors at LSNs inside what it was fed.
//! Also: image restoration and pglz decompression on damaged or random input.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::OnceLock;

use postgres_wal::image::restore_page;
use postgres_wal::pglz::decompress_exact;
use postgres_wal::record::{record_crc, DecodedRecord, ImageCompression};
use postgres_wal::{Lsn, BLCKSZ};
use proptest::prelude::*;
use proptest::sample::Index;
use support::{
    byte_end, decode_chunked, lsn_at, offset_of, reference, segment_size, wal_start, Rng, PAGE, WAL,
};

/// One kind of damage, at positions chosen relative to the bytes' current length.
#[derive(Debug, Clone)]
enum Damage {
    Flip { at: Index, mask: u8 },
    Overwrite { at: Index, bytes: Vec<u8> },
    Zero { at: Index, len: usize },
    Truncate { at: Index },
    CopyPage { from: Index, to: Index },
    SwapPages { a: Index, b: Index },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        3 => (any::<Index>(), 1..=255u8).prop_map(|(at, mask)| Damage::Flip { at, mask }),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Damage::Overwrite { at, bytes }),
        2 => (any::<Index>(), 1..3 * PAGE).prop_map(|(at, len)| Damage::Zero { at, len }),
        1 => any::<Index>().prop_map(|at| Damage::Truncate { at }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(from, to)| Damage::CopyPage { from, to }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Damage::SwapPages { a, b }),
    ]
}

fn apply(bytes: &mut Vec<u8>, damage: &Damage) {
    let len = bytes.len();
    if len == 0 {
        return;
    }
    let pages = len / PAGE;
    match damage {
        Damage::Flip { at, mask } => bytes[at.index(len)] ^= mask,
        Damage::Overwrite { at, bytes: new } => {
            let at = at.index(len);
            let n = new.len().min(len - at);
            bytes[at..at + n].copy_from_slice(&new[..n]);
        }
        Damage::Zero { at, len: n } => {
            let at = at.index(len);
            let end = (at + n).min(len);
            bytes[at..end].fill(0);
        }
        Damage::Truncate { at } => bytes.truncate(at.index(len)),
        Damage::CopyPage { from, to } if pages > 0 => {
            let (from, to) = (from.index(pages) * PAGE, to.index(pages) * PAGE);
            bytes.copy_within(from..from + PAGE, to);
        }
        Damage::SwapPages { a, b } if pages > 0 => {
            let (a, b) = (a.index(pages) * PAGE, b.index(pages) * PAGE);
            for i in 0..PAGE {
                bytes.swap(a + i, b + i);
            }
        }
        Damage::CopyPage { .. } | Damage::SwapPages { .. } => {}
    }
}

/// Where decoding starts: where PostgreSQL tools would start.
#[derive(Debug, Clone)]
enum Start {
    Segment,
    Record(Index),
    Page(Index),
}

fn start() -> impl Strategy<Value = Start> {
    prop_oneof![
        Just(Start::Segment),
        any::<Index>().prop_map(Start::Record),
        any::<Index>().prop_map(Start::Page),
    ]
}

/// The offset in the fixture to start at, and the clean decode from there.
fn resolve(start: &Start) -> (usize, Vec<DecodedRecord>) {
    let records = reference();
    match start {
        Start::Segment => (0, records.to_vec()),
        Start::Record(i) => {
            let i = i.index(records.len());
            (offset_of(records[i].lsn), records[i..].to_vec())
        }
        Start::Page(p) => {
            let offset = (1 + p.index(WAL.len() / PAGE - 1)) * PAGE;
            let page = lsn_at(offset);
            let after = records.iter().filter(|r| r.lsn > page).cloned().collect();
            (offset, after)
        }
    }
}

/// The clean decode's records by LSN.
fn by_lsn() -> &'static HashMap<Lsn, DecodedRecord> {
    static BY_LSN: OnceLock<HashMap<Lsn, DecodedRecord>> = OnceLock::new();
    BY_LSN.get_or_init(|| reference().iter().map(|r| (r.lsn, r.clone())).collect())
}

/// Chunk sizes: mostly large, sometimes down to single bytes.
fn chunker(seed: u64, mode: u8) -> impl FnMut() -> usize {
    let mut rng = Rng::new(seed);
    move || match mode % 4 {
        0 => rng.between_1_and(16),
        1 => rng.between_1_and(2 * PAGE),
        2 => rng.between_1_and(WAL.len()),
        _ => usize::MAX,
    }
}

/// Decode the damaged `bytes` from `start` and check everything the decoder promises.
fn check_damaged(bytes: &[u8], start: &Start, seed: u64, mode: u8) -> Result<(), TestCaseError> {
    let (start_offset, clean) = resolve(start);
    let start_lsn = lsn_at(start_offset);
    let fed = bytes.get(start_offset..).unwrap_or(&[]);
    let decoded = decode_chunked(fed, start_lsn, segment_size(), &mut chunker(seed, mode));
    // The first byte fed that differs from the fixture (a shorter input differs nowhere
    // it has bytes).
    let first_damage = (start_offset..bytes.len().min(WAL.len()))
        .find(|&i| bytes[i] != WAL[i])
        .map_or(decoded.fed_end, lsn_at);

    // Fed from inside a page, the decoder sees no page header to say where the bytes
    // came from: it takes the start to be a record boundary (its documented contract),
    // so a whole valid record moved there by the damage (a swapped or copied page) is
    // indistinguishable from the original. Every later record is vouched for by the
    // `xl_prev` chain and the page headers.
    let first_on_callers_word = start_lsn.page_offset() != 0
        && decoded.records.first().is_some_and(|r| r.lsn == start_lsn)
        && first_damage < Lsn(start_lsn.page_start().0 + PAGE as u64);
    let mut previous = None;
    for (i, rec) in decoded.records.iter().enumerate() {
        prop_assert_eq!(record_crc(&rec.bytes), rec.header.crc, "CRC of {}", rec.lsn);
        prop_assert_eq!(rec.bytes.len(), rec.header.total_len as usize);
        let clean = by_lsn().get(&rec.lsn);
        prop_assert!(
            clean == Some(rec) || (i == 0 && first_on_callers_word),
            "record at {} is not the one PostgreSQL wrote there",
            rec.lsn
        );
        prop_assert!(previous < Some(rec.lsn), "records out of order");
        previous = Some(rec.lsn);
    }
    let intact: Vec<&DecodedRecord> = clean
        .iter()
        .filter(|r| byte_end(r) <= first_damage.min(decoded.fed_end))
        .collect();
    prop_assert!(
        decoded.records.len() >= intact.len(),
        "{} records before the damage at {first_damage}, {} returned",
        intact.len(),
        decoded.records.len()
    );
    for (got, want) in decoded.records.iter().zip(&intact) {
        prop_assert_eq!(got.lsn, want.lsn);
    }
    match &decoded.error {
        Some(error) => {
            let lsn = error.lsn();
            prop_assert!(
                start_lsn <= lsn && lsn < decoded.fed_end,
                "error {error} outside the bytes fed, {start_lsn}..{}",
                decoded.fed_end
            );
            prop_assert!(decoded.valid_end <= lsn, "valid_end after error {error}");
        }
        None => prop_assert_eq!(decoded.fed_end, lsn_at(start_offset + fed.len())),
    }
    if let Some(last) = decoded.records.last() {
        prop_assert_eq!(decoded.valid_end, last.end_lsn);
    }
    prop_assert!(decoded.valid_end >= start_lsn);
    Ok(())
}

/// 512 cases unless `PROPTEST_CASES` asks for more (for a longer local run).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn damaged_wal_yields_only_records_postgres_wrote(
        damages in prop::collection::vec(damage(), 0..4),
        start in start(),
        seed in any::<u64>(),
        mode in any::<u8>(),
    ) {
        let mut bytes = WAL.to_vec();
        for d in &damages {
            apply(&mut bytes, d);
        }
        check_damaged(&bytes, &start, seed, mode)?;
    }

    /// A page header, a record header, or a page boundary: damage where it hurts most.
    #[test]
    fn damage_at_headers(
        target in any::<Index>(),
        which in 0..3u8,
        delta in 0..40usize,
        mask in 1..=255u8,
        start in start(),
        seed in any::<u64>(),
        mode in any::<u8>(),
    ) {
        let records = reference();
        let at = match which {
            0 => target.index(WAL.len() / PAGE) * PAGE + delta,
            1 => offset_of(records[target.index(records.len())].lsn) + delta % 24,
            _ => offset_of(byte_end(&records[target.index(records.len())])) - 1 - delta % 8,
        };
        let mut bytes = WAL.to_vec();
        bytes[at] ^= mask;
        check_damaged(&bytes, &start, seed, mode)?;
    }

    /// Damaged images (bytes, hole, compression method) fail to restore or restore to
    /// some page; they never panic.
    #[test]
    fn restore_page_survives_damaged_images(
        which in any::<Index>(),
        flips in prop::collection::vec((any::<Index>(), 1..=255u8), 0..8),
        hole in prop::option::of((any::<u16>(), any::<u16>())),
        compression in prop::option::of(0..4u8),
        trim in prop::option::of((any::<Index>(), any::<Index>())),
    ) {
        let images: Vec<(&DecodedRecord, usize)> = reference()
            .iter()
            .flat_map(|r| {
                r.blocks
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.image.is_some())
                    .map(move |(i, _)| (r, i))
            })
            .collect();
        let (rec, block) = images[which.index(images.len())];
        let mut rec = rec.clone();
        let mut image = rec.blocks[block].image.clone().unwrap();
        prop_assert!(restore_page(&rec, &image).is_ok());
        for (at, mask) in flips {
            if !image.bytes.is_empty() {
                let at = image.bytes.start + at.index(image.bytes.len());
                rec.bytes[at] ^= mask;
            }
        }
        if let Some((offset, length)) = hole {
            image.hole_offset = offset % (BLCKSZ as u16 + 2);
            image.hole_length = length % (BLCKSZ as u16 + 2);
        }
        if let Some(c) = compression {
            image.compression = [
                ImageCompression::None,
                ImageCompression::Pglz,
                ImageCompression::Lz4,
                ImageCompression::Zstd,
            ][usize::from(c)];
        }
        if let Some((a, b)) = trim {
            let len = image.bytes.len();
            let (a, b) = (a.index(len + 1), b.index(len + 1));
            image.bytes = image.bytes.start + a.min(b)..image.bytes.start + a.max(b);
        }
        let _ = restore_page(&rec, &image);
    }

    #[test]
    fn pglz_survives_random_input(
        src in prop::collection::vec(any::<u8>(), 0..600),
        dest_len in 0..(BLCKSZ + 10),
    ) {
        let mut dest = vec![0u8; dest_len];
        let _ = decompress_exact(&src, &mut dest);
    }

    /// Streams built from literals and back-references decompress to what a naive
    /// model of the format produces.
    #[test]
    fn pglz_decodes_valid_streams(
        items in prop::collection::vec(
            prop_oneof![
                any::<u8>().prop_map(|b| (false, usize::from(b), 0)),
                (3..=273usize, 1..=4095usize).prop_map(|(len, off)| (true, len, off)),
            ],
            1..300,
        ),
    ) {
        let (src, expected) = pglz_stream(&items);
        let mut dest = vec![0u8; expected.len()];
        prop_assert_eq!(decompress_exact(&src, &mut dest), Ok(()));
        prop_assert_eq!(dest, expected);
    }
}

/// Encode `(is_reference, literal byte or length, offset)` items as a pglz stream,
/// clamping each offset to what was produced so far (a reference at the very start
/// becomes a literal), and return it with the bytes it stands for.
fn pglz_stream(items: &[(bool, usize, usize)]) -> (Vec<u8>, Vec<u8>) {
    let mut src = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let mut control_at = 0;
    for (n, &(is_ref, value, offset)) in items.iter().enumerate() {
        if n % 8 == 0 {
            control_at = src.len();
            src.push(0);
        }
        let offset = offset.min(out.len());
        if is_ref && offset > 0 {
            src[control_at] |= 1 << (n % 8);
            let len = value;
            if len >= 18 {
                src.push(((offset >> 4) & 0xf0) as u8 | 0x0f);
                src.push((offset & 0xff) as u8);
                src.push((len - 18) as u8);
            } else {
                src.push(((offset >> 4) & 0xf0) as u8 | (len - 3) as u8);
                src.push((offset & 0xff) as u8);
            }
            for _ in 0..len {
                out.push(out[out.len() - offset]);
            }
        } else {
            src.push(value as u8);
            out.push(value as u8);
        }
    }
    (src, out)
}

/// Every record's CRC in the fixture is what `record_crc` computes; a sanity check of
/// the oracle the properties rely on.
#[test]
fn record_crc_agrees_with_the_fixture() {
    assert!(!reference().is_empty());
    for rec in reference() {
        assert_eq!(record_crc(&rec.bytes), rec.header.crc, "{}", rec.lsn);
    }
    assert_eq!(wal_start().segment_offset(segment_size()), 0);
}
