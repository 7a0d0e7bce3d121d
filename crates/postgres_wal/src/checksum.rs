//! Data page checksums (`pg_checksum_page`), as enabled by `initdb --data-checksums`.
//!
//! The algorithm is FNV-1a-like but runs 32 independent hashes ("lanes") side by side:
//! the page is viewed as 64 rows of 32 little-endian 32-bit words, and word `j` of each
//! row feeds lane `j`. That shape exists so compilers can keep the lanes in SIMD
//! registers; the loops below keep exactly that shape for the same reason. PostgreSQL
//! reads the words in native byte order, so on-disk checksums are only portable between
//! machines of the same endianness; this implementation assumes little-endian pages.

use crate::page;
use crate::reltag::BlockNumber;
use crate::BLCKSZ;

/// `data_checksum_version` in `pg_control` when checksums are enabled.
pub const PG_DATA_CHECKSUM_VERSION: u32 = 1;

const N_SUMS: usize = 32;
const WORD: usize = std::mem::size_of::<u32>();
const ROW_BYTES: usize = N_SUMS * WORD;
const ROWS: usize = BLCKSZ / ROW_BYTES;
const FNV_PRIME: u32 = 16_777_619;

/// Distinct starting states for the lanes, so identical columns of data do not cancel
/// out when the lanes are XOR-folded together at the end.
const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];

/// One FNV-1a step, with an extra shift-XOR because plain FNV-1a mixes high bits
/// poorly into the low bits that survive the final reduction.
#[inline(always)]
fn mix(sum: u32, value: u32) -> u32 {
    let t = sum ^ value;
    t.wrapping_mul(FNV_PRIME) ^ (t >> 17)
}

#[inline(always)]
fn mix_row(sums: &mut [u32; N_SUMS], row: &[u8; ROW_BYTES]) {
    for (j, sum) in sums.iter_mut().enumerate() {
        let at = j * WORD;
        let word = u32::from_le_bytes([row[at], row[at + 1], row[at + 2], row[at + 3]]);
        *sum = mix(*sum, word);
    }
}

/// Computes the checksum PostgreSQL would store in `pd_checksum` for this page at block
/// `blkno` of its relation fork (counting from the start of the fork, not the segment
/// file). The stored `pd_checksum` itself is ignored, so the result can be compared
/// against it directly.
///
/// PostgreSQL never checksums a new (`pd_upper == 0`) page; the value computed for one
/// is meaningless but harmless.
pub fn pg_checksum_page(page: &[u8; BLCKSZ], blkno: BlockNumber) -> u16 {
    let mut sums = BASE_OFFSETS;

    // The first row holds pd_checksum, which must count as zero; hash a copy of that
    // row so the hot loop over the remaining rows stays branch-free.
    let mut first = [0u8; ROW_BYTES];
    first.copy_from_slice(&page[..ROW_BYTES]);
    first[8..10].fill(0);
    mix_row(&mut sums, &first);

    for r in 1..ROWS {
        let mut row = [0u8; ROW_BYTES];
        row.copy_from_slice(&page[r * ROW_BYTES..(r + 1) * ROW_BYTES]);
        mix_row(&mut sums, &row);
    }

    // Two rounds of zeros so the last row's words are mixed as well as the others.
    for _ in 0..2 {
        mix_row(&mut sums, &[0u8; ROW_BYTES]);
    }

    let folded = sums.iter().fold(0u32, |acc, s| acc ^ s);
    // Mixing in the block number catches a correct page written to the wrong place.
    let checksum = folded ^ blkno;
    // Offset by one so that 0 never appears as a valid checksum.
    (checksum % 65_535 + 1) as u16
}

/// Whether the page's stored checksum is right for block `blkno`, accepting all-zero
/// pages as PostgreSQL does (they are left behind by relation extension that crashed
/// before the page was first written, and carry no checksum).
///
/// Header sanity is a separate question: see [`page::verify_header`].
pub fn verify_page_checksum(page: &[u8; BLCKSZ], blkno: BlockNumber) -> bool {
    page::is_all_zeros(page) || page::stored_checksum(page) == pg_checksum_page(page, blkno)
}

/// Computes and stores the checksum (`PageSetChecksumInplace`), as must happen before
/// a page is written to a cluster with checksums enabled. New pages are left alone,
/// as PostgreSQL leaves them.
pub fn set_page_checksum(page: &mut [u8; BLCKSZ], blkno: BlockNumber) {
    if !page::is_new(page) {
        let checksum = pg_checksum_page(page, blkno);
        page::set_stored_checksum(page, checksum);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::controlfile::test_cluster::TestCluster;
    use crate::controlfile::ControlFileData;
    use std::path::Path;

    const HEAP: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pg15_heap_4_blocks"
    ));

    /// Blocks per 1 GiB segment file, for block numbers of pages in `.1`, `.2`, ... files.
    const RELSEG_SIZE: u32 = 131_072;

    fn fixture_page(blkno: usize) -> [u8; BLCKSZ] {
        let mut page = [0u8; BLCKSZ];
        page.copy_from_slice(&HEAP[blkno * BLCKSZ..(blkno + 1) * BLCKSZ]);
        page
    }

    /// The straightforward transcription of the algorithm: one lane at a time over the
    /// page as a flat array of words. Guards the optimised version's row handling.
    fn reference_checksum(page: &[u8; BLCKSZ], blkno: BlockNumber) -> u16 {
        let mut words: Vec<u32> = page
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        words[2] &= 0xFFFF_0000;
        let mut result = 0u32;
        for (lane, &base) in BASE_OFFSETS.iter().enumerate() {
            let mut sum = base;
            for &w in words.iter().skip(lane).step_by(N_SUMS) {
                sum = mix(sum, w);
            }
            sum = mix(mix(sum, 0), 0);
            result ^= sum;
        }
        ((result ^ blkno) % 65_535 + 1) as u16
    }

    /// Checksums that PostgreSQL stored in the fixture, read with `xxd`.
    #[test]
    fn matches_checksums_postgres_wrote() {
        let stored = [0x9F46, 0x96B5, 0x5837, 0xFA77];
        assert_eq!(HEAP.len(), stored.len() * BLCKSZ);
        for (blkno, &expected) in stored.iter().enumerate() {
            let page = fixture_page(blkno);
            assert_eq!(page::stored_checksum(&page), expected);
            assert_eq!(
                pg_checksum_page(&page, blkno as u32),
                expected,
                "block {blkno}"
            );
            assert_eq!(
                reference_checksum(&page, blkno as u32),
                expected,
                "block {blkno}"
            );
            assert!(verify_page_checksum(&page, blkno as u32));
        }
    }

    #[test]
    fn stored_checksum_does_not_feed_the_computation() {
        let mut page = fixture_page(0);
        let expected = pg_checksum_page(&page, 0);
        for value in [0, 1, 0xFFFF, 0x1234] {
            page::set_stored_checksum(&mut page, value);
            assert_eq!(pg_checksum_page(&page, 0), expected);
        }
        set_page_checksum(&mut page, 0);
        assert_eq!(page, fixture_page(0));
    }

    #[test]
    fn any_single_byte_change_is_detected() {
        let original = fixture_page(3);
        for at in (0..BLCKSZ).filter(|&i| !(8..10).contains(&i)).step_by(97) {
            let mut page = original;
            page[at] ^= 0x20;
            assert!(
                !verify_page_checksum(&page, 3),
                "flip at byte {at} went unnoticed"
            );
        }
        // The same page at another block number is also wrong: transposed pages show.
        assert!(!verify_page_checksum(&original, 4));
        assert!(!verify_page_checksum(&original, 3 + 65_535 * 2));
    }

    #[test]
    fn new_pages() {
        let zero = [0u8; BLCKSZ];
        assert!(verify_page_checksum(&zero, 0));
        assert!(verify_page_checksum(&zero, 12345));
        let mut page = zero;
        set_page_checksum(&mut page, 7);
        assert_eq!(page, zero, "a new page must not get a checksum");
        page[100] = 1;
        assert!(
            !verify_page_checksum(&page, 0),
            "a non-zero page needs a checksum"
        );
    }

    #[test]
    fn checksums_are_in_range_and_match_the_reference() {
        // A deterministic pseudo-random fill exercises every lane and row.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for blkno in [0u32, 1, 77, 65_534, 65_535, u32::MAX] {
            let mut page = [0u8; BLCKSZ];
            for b in page.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            let c = pg_checksum_page(&page, blkno);
            assert_ne!(c, 0);
            assert_eq!(c, reference_checksum(&page, blkno));
        }
    }

    /// Relation files are named `<relfilenode>[_fork][.<segment>]`; returns the segment.
    fn relation_segment(name: &str) -> Option<u32> {
        let (stem, segment) = match name.split_once('.') {
            Some((stem, seg)) => (stem, seg.parse().ok()?),
            None => (name, 0),
        };
        let node = ["_fsm", "_vm", "_init"]
            .iter()
            .fold(stem, |s, f| s.strip_suffix(f).unwrap_or(s));
        (!node.is_empty() && node.bytes().all(|b| b.is_ascii_digit())).then_some(segment)
    }

    /// Verifies every page of every relation file under `dir`, counting
    /// (pages checksummed, all-zero pages).
    fn verify_dir(dir: &Path, counts: &mut (usize, usize)) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                verify_dir(&path, counts);
                continue;
            }
            let name = entry.file_name().into_string().unwrap();
            let Some(segment) = relation_segment(&name) else {
                continue;
            };
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(
                bytes.len() % BLCKSZ,
                0,
                "{} is not whole pages",
                path.display()
            );
            for (i, chunk) in bytes.chunks_exact(BLCKSZ).enumerate() {
                let page: &[u8; BLCKSZ] = chunk.try_into().unwrap();
                let blkno = segment * RELSEG_SIZE + i as u32;
                assert_eq!(
                    page::verify_header(page),
                    Ok(()),
                    "{} block {blkno}",
                    path.display()
                );
                if page::is_all_zeros(page) {
                    counts.1 += 1;
                    continue;
                }
                assert_eq!(
                    pg_checksum_page(page, blkno),
                    page::stored_checksum(page),
                    "{} block {blkno}",
                    path.display()
                );
                counts.0 += 1;
            }
        }
    }

    #[test]
    fn every_page_of_a_real_cluster_verifies() {
        let cluster = TestCluster::initdb(&["--data-checksums"]);
        // A multi-block heap, a B-tree, a TOAST table, and (from VACUUM) FSM and VM forks;
        // the backend exits with a shutdown checkpoint, so every page is on disk.
        cluster.single_user_sql(
            "CREATE TABLE t (id int PRIMARY KEY, payload text)\n\
             INSERT INTO t SELECT g, repeat(md5(g::text), 5) FROM generate_series(1, 5000) g\n\
             INSERT INTO t VALUES (0, (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 2000) g))\n\
             DELETE FROM t WHERE id % 7 = 0\n\
             VACUUM t\n",
        );
        let control = ControlFileData::decode(
            &std::fs::read(cluster.data.join("global/pg_control")).unwrap(),
        )
        .unwrap();
        assert_eq!(control.data_checksum_version, PG_DATA_CHECKSUM_VERSION);

        let mut counts = (0, 0);
        verify_dir(&cluster.data.join("global"), &mut counts);
        verify_dir(&cluster.data.join("base"), &mut counts);
        assert!(counts.0 > 1000, "only {} pages were checked", counts.0);

        // The big table and multi-block catalogs were among the files checked.
        let table = std::fs::read_dir(cluster.data.join("base/5"))
            .unwrap()
            .map(|e| e.unwrap())
            .max_by_key(|e| e.metadata().unwrap().len())
            .unwrap();
        assert!(table.metadata().unwrap().len() >= 50 * BLCKSZ as u64);
        for file in ["global/1262", "base/1/1259"] {
            assert!(cluster.data.join(file).metadata().unwrap().len() >= BLCKSZ as u64);
        }

        // PostgreSQL's own verifier agrees that the cluster is clean.
        let out = cluster.run(
            "pg_checksums",
            &["--check", "-D", cluster.data.to_str().unwrap()],
            None,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("Bad checksums:  0"), "{stdout}");
    }
}
