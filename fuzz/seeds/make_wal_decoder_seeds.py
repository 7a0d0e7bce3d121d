#!/usr/bin/env python3
"""Writes the seed inputs of the wal_decoder fuzz target into seeds/wal_decoder/.

Each seed is the target's 9-byte header (flags, start offset, chunk seed; see
fuzz_targets/wal_decoder.rs) followed by a slice of the real PostgreSQL 15 WAL fixture
crates/postgres_wal/tests/fixtures/pg15_wal_1mb_segment_prefix (segment 0/900000 of a
cluster with 1 MiB segments). The LSNs below come from that fixture's .waldump.txt; if
the fixture is regenerated, update them from the new dump.

Run from the repository root:  python3 fuzz/seeds/make_wal_decoder_seeds.py
"""

import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(
    ROOT, "crates/postgres_wal/tests/fixtures/pg15_wal_1mb_segment_prefix")
OUT = os.path.join(ROOT, "fuzz/seeds/wal_decoder")
SEGMENT = 0x900000
PAGE = 8192

# Flag bits of the header's first byte.
SEG_16MB = 0x01
FIX_CRCS = 0x02
CHUNKS_ALL, CHUNKS_BYTE, CHUNKS_SMALL, CHUNKS_LARGE = 0x00, 0x04, 0x08, 0x0C
PAGE_ALIGNED_START = 0x10

wal = open(FIXTURE, "rb").read()


def pages(first, count):
    """`count` pages of the fixture from the page at LSN `first`."""
    off = first - SEGMENT
    assert off % PAGE == 0
    return bytearray(wal[off:off + count * PAGE])


def seed(name, flags, payload, start=0, chunk_seed=0):
    header = struct.pack("<BII", flags, start, chunk_seed)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(header + bytes(payload))


os.makedirs(OUT, exist_ok=True)

# Segment start: long page header, checkpoint, lz4 images, XACT_ASSIGNMENTs.
seed("segment_start", CHUNKS_ALL, pages(0x900000, 3))
# The same, fed in random small chunks.
seed("segment_start_small_chunks", CHUNKS_SMALL, pages(0x900000, 2), chunk_seed=7)
# A commit with 4000 subxacts spanning pages 0/904000..0/908000: started at its
# record, and started at a page boundary inside it (the continuation is skipped).
seed("multipage_commit_from_record", CHUNKS_LARGE, pages(0x904000, 4),
     start=0x904D68 - 0x904000, chunk_seed=3)
seed("multipage_commit_skip_continuation", PAGE_ALIGNED_START, pages(0x904000, 4),
     start=PAGE)
# pglz and zstd full-page images (0/92F138, 0/92F570), an uncompressed one, a
# checkpoint, XLOG SWITCH and the zeros after it.
seed("pglz_zstd_and_plain_images", CHUNKS_ALL, pages(0x92E000, 3), start=0x92F138 - 0x92E000)
# From the uncompressed image spanning two pages (0/92FCD8) on, in single-byte chunks.
seed("uncompressed_image_switch_zeros", CHUNKS_BYTE, pages(0x92E000, 3),
     start=0x92FCD8 - 0x92E000)
# CRC fixing: a damaged lz4 image (record 0/9000D8) whose CRC the target rewrites, so
# restore_page sees corrupt compressed bytes.
damaged = pages(0x900000, 1)
damaged[0x9000D8 - SEGMENT + 200] ^= 0x55
seed("damaged_image_crc_fixed", FIX_CRCS, damaged)
# A segment that claims 16 MiB, decoded as 16 MiB.
big = pages(0x900000, 1)
big[32:36] = struct.pack("<I", 16 << 20)
seed("segment_16mb", SEG_16MB, big)
