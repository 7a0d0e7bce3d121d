//! One WAL record (`XLogRecord`): its header, block references and main data.
//!
//! [`DecodedRecord::decode`] takes the record's bytes, already reassembled from the
//! pages it spans, and checks everything PostgreSQL's `DecodeXLogRecord` checks:
//! lengths that agree, block ids in ascending order, image headers that describe a
//! page. Payloads are kept as ranges into the record's bytes, so decoding copies nothing.

use std::ops::Range;

use crate::lsn::Lsn;
use crate::reltag::{BlockNumber, ForkNumber, RelFileNode};
use crate::rmgr::RmgrId;
use crate::BLCKSZ;

/// `SizeOfXLogRecord`: the fixed header every record starts with.
pub const RECORD_HEADER_SIZE: usize = 24;
/// Offset of `xl_crc` in the header; the CRC covers the header bytes before it.
const CRC_OFFSET: usize = 20;
/// Largest record we accept (`XLogRecordMaxSize`); bounds the memory one record may take.
pub const MAX_RECORD_SIZE: u32 = 1020 * 1024 * 1024;

/// `XLR_MAX_BLOCK_ID`.
pub const MAX_BLOCK_ID: u8 = 32;
const BLOCK_ID_DATA_SHORT: u8 = 255;
const BLOCK_ID_DATA_LONG: u8 = 254;
const BLOCK_ID_ORIGIN: u8 = 253;
const BLOCK_ID_TOPLEVEL_XID: u8 = 252;

const BKPBLOCK_FORK_MASK: u8 = 0x0F;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_HAS_DATA: u8 = 0x20;
const BKPBLOCK_WILL_INIT: u8 = 0x40;
const BKPBLOCK_SAME_REL: u8 = 0x80;

pub const BKPIMAGE_HAS_HOLE: u8 = 0x01;
pub const BKPIMAGE_APPLY: u8 = 0x02;
pub const BKPIMAGE_COMPRESS_PGLZ: u8 = 0x04;
pub const BKPIMAGE_COMPRESS_LZ4: u8 = 0x08;
pub const BKPIMAGE_COMPRESS_ZSTD: u8 = 0x10;

/// `xl_info` bits owned by the WAL machinery rather than the rmgr.
pub const XLR_INFO_MASK: u8 = 0x0F;
/// The record carries images for `wal_consistency_checking`.
pub const XLR_CHECK_CONSISTENCY: u8 = 0x02;

/// The fixed header of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub total_len: u32,
    pub xid: u32,
    pub prev: Lsn,
    pub info: u8,
    pub rmid: RmgrId,
    pub crc: u32,
}

impl RecordHeader {
    /// Parse the header from the first [`RECORD_HEADER_SIZE`] bytes.
    pub fn parse(bytes: &[u8; RECORD_HEADER_SIZE]) -> RecordHeader {
        let u32_at =
            |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        RecordHeader {
            total_len: u32_at(0),
            xid: u32_at(4),
            prev: Lsn(u64::from(u32_at(8)) | (u64::from(u32_at(12)) << 32)),
            info: bytes[16],
            rmid: RmgrId(bytes[17]),
            crc: u32_at(20),
        }
    }
}

/// Compression of a block image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageCompression {
    None,
    Pglz,
    Lz4,
    Zstd,
}

impl ImageCompression {
    pub fn name(self) -> &'static str {
        match self {
            ImageCompression::None => "none",
            ImageCompression::Pglz => "pglz",
            ImageCompression::Lz4 => "lz4",
            ImageCompression::Zstd => "zstd",
        }
    }
}

/// The image of a block carried in a record (a full-page write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockImage {
    /// Bytes of the (possibly compressed) image in the record.
    pub bytes: Range<usize>,
    pub hole_offset: u16,
    pub hole_length: u16,
    /// The image is to be restored at redo; otherwise it is only for
    /// `wal_consistency_checking` and shows the page after the record.
    pub apply: bool,
    pub compression: ImageCompression,
}

/// A block reference of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRef {
    pub block_id: u8,
    pub rel: RelFileNode,
    pub fork: ForkNumber,
    pub blkno: BlockNumber,
    /// Redo initialises the page from scratch.
    pub will_init: bool,
    pub image: Option<BlockImage>,
    /// Rmgr-specific data for this block.
    pub data: Range<usize>,
}

/// A record decoded from its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    /// Where the record starts.
    pub lsn: Lsn,
    /// Where the next record may start (`EndRecPtr`): the end of this record's bytes,
    /// aligned to 8, or the end of the segment for an `XLOG SWITCH`.
    pub end_lsn: Lsn,
    pub header: RecordHeader,
    pub origin: Option<u16>,
    pub toplevel_xid: Option<u32>,
    pub blocks: Vec<BlockRef>,
    pub main_data: Range<usize>,
    /// The whole record, header included.
    pub bytes: Vec<u8>,
}

/// Why a record's bytes do not form a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is {0} bytes, shorter than its header")]
    TooShort(usize),
    #[error("record length field says {declared} bytes but {actual} were given")]
    LengthMismatch { declared: u32, actual: usize },
    #[error(
        "incorrect resource manager data checksum: stored {stored:08X}, computed {computed:08X}"
    )]
    Crc { stored: u32, computed: u32 },
    #[error("out-of-order block_id {0}")]
    BlockIdOutOfOrder(u8),
    #[error("invalid block_id {0}")]
    InvalidBlockId(u8),
    #[error("invalid fork number {0} in block {1}")]
    InvalidFork(u8, u8),
    #[error("block {0}: BKPBLOCK_HAS_DATA set but no data, or data without the flag")]
    DataFlagMismatch(u8),
    #[error("block {block_id}: invalid image header (length {length}, hole offset {hole_offset}, hole length {hole_length}, info {info:#04x})")]
    InvalidImage {
        block_id: u8,
        length: u16,
        hole_offset: u16,
        hole_length: u16,
        info: u8,
    },
    #[error("block {0}: BKPBLOCK_SAME_REL set but no previous relation")]
    SameRelWithoutPrevious(u8),
    #[error("record headers run past the end of the record")]
    HeadersTruncated,
    #[error(
        "payload lengths ({payload} bytes) do not match the record's remaining {remaining} bytes"
    )]
    PayloadMismatch { payload: u64, remaining: usize },
}

/// Compute the CRC-32C of a record as PostgreSQL does: the payload first, then
/// the header up to the CRC field.
pub fn record_crc(bytes: &[u8]) -> u32 {
    let body = crc32c::crc32c(bytes.get(RECORD_HEADER_SIZE..).unwrap_or(&[]));
    crc32c::crc32c_append(body, &bytes[..CRC_OFFSET.min(bytes.len())])
}

/// A cursor over the record's header area; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let end = self
            .pos
            .checked_add(N)
            .ok_or(RecordError::HeadersTruncated)?;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(RecordError::HeadersTruncated)?;
        self.pos = end;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
}

/// What a block header declares; payload ranges are filled in once all headers are read.
struct BlockHeader {
    block: BlockRef,
    data_len: u16,
    image_len: u16,
}

impl DecodedRecord {
    /// Decode a whole record that starts at `lsn`, verifying its CRC. `end_lsn` is
    /// where the decoder found the next record may start.
    pub fn decode(lsn: Lsn, end_lsn: Lsn, bytes: Vec<u8>) -> Result<DecodedRecord, RecordError> {
        let header_bytes: &[u8; RECORD_HEADER_SIZE] = bytes
            .get(..RECORD_HEADER_SIZE)
            .and_then(|h| h.try_into().ok())
            .ok_or(RecordError::TooShort(bytes.len()))?;
        let header = RecordHeader::parse(header_bytes);
        if header.total_len as usize != bytes.len() {
            return Err(RecordError::LengthMismatch {
                declared: header.total_len,
                actual: bytes.len(),
            });
        }
        let computed = record_crc(&bytes);
        if computed != header.crc {
            return Err(RecordError::Crc {
                stored: header.crc,
                computed,
            });
        }
        let mut record = DecodedRecord {
            lsn,
            end_lsn,
            header,
            origin: None,
            toplevel_xid: None,
            blocks: Vec::new(),
            main_data: 0..0,
            bytes,
        };
        record.decode_body()?;
        Ok(record)
    }

    fn decode_body(&mut self) -> Result<(), RecordError> {
        let mut reader = Reader {
            bytes: &self.bytes,
            pos: RECORD_HEADER_SIZE,
        };
        let mut headers: Vec<BlockHeader> = Vec::new();
        let mut main_data_len: u32 = 0;
        let mut payload_total: u64 = 0;
        let mut last_rel: Option<RelFileNode> = None;
        while self.bytes.len() - reader.pos > payload_total as usize {
            let block_id = reader.u8()?;
            match block_id {
                BLOCK_ID_DATA_SHORT => {
                    main_data_len = u32::from(reader.u8()?);
                    payload_total += u64::from(main_data_len);
                    break;
                }
                BLOCK_ID_DATA_LONG => {
                    main_data_len = reader.u32()?;
                    payload_total += u64::from(main_data_len);
                    break;
                }
                BLOCK_ID_ORIGIN => self.origin = Some(reader.u16()?),
                BLOCK_ID_TOPLEVEL_XID => self.toplevel_xid = Some(reader.u32()?),
                id if id <= MAX_BLOCK_ID => {
                    if headers.last().is_some_and(|h| h.block.block_id >= id) {
                        return Err(RecordError::BlockIdOutOfOrder(id));
                    }
                    let header = read_block_header(&mut reader, id, &mut last_rel)?;
                    payload_total += u64::from(header.data_len) + u64::from(header.image_len);
                    headers.push(header);
                }
                id => return Err(RecordError::InvalidBlockId(id)),
            }
        }
        let remaining = self.bytes.len() - reader.pos;
        if remaining as u64 != payload_total {
            return Err(RecordError::PayloadMismatch {
                payload: payload_total,
                remaining,
            });
        }
        // Payloads follow the headers in block order (image, then data), then main data.
        let mut pos = reader.pos;
        self.blocks.reserve_exact(headers.len());
        for BlockHeader {
            mut block,
            data_len,
            image_len,
        } in headers
        {
            if let Some(image) = block.image.as_mut() {
                image.bytes = pos..pos + usize::from(image_len);
                pos += usize::from(image_len);
            }
            block.data = pos..pos + usize::from(data_len);
            pos += usize::from(data_len);
            self.blocks.push(block);
        }
        self.main_data = pos..pos + main_data_len as usize;
        Ok(())
    }

    pub fn rmid(&self) -> RmgrId {
        self.header.rmid
    }

    pub fn xid(&self) -> u32 {
        self.header.xid
    }

    /// The rmgr-specific part of `xl_info`.
    pub fn rmgr_info(&self) -> u8 {
        self.header.info & !XLR_INFO_MASK
    }

    pub fn main_data(&self) -> &[u8] {
        &self.bytes[self.main_data.clone()]
    }

    pub fn block_data(&self, block: &BlockRef) -> &[u8] {
        &self.bytes[block.data.clone()]
    }

    pub fn image_bytes(&self, image: &BlockImage) -> &[u8] {
        &self.bytes[image.bytes.clone()]
    }

    /// Bytes of the record that are not block images (pg_waldump's `rec` length).
    pub fn non_image_len(&self) -> u32 {
        let images: usize = self
            .blocks
            .iter()
            .filter_map(|b| b.image.as_ref())
            .map(|i| i.bytes.len())
            .sum();
        self.header.total_len - images as u32
    }
}

fn read_block_header(
    reader: &mut Reader<'_>,
    block_id: u8,
    last_rel: &mut Option<RelFileNode>,
) -> Result<BlockHeader, RecordError> {
    let fork_flags = reader.u8()?;
    let fork = ForkNumber::from_u8(fork_flags & BKPBLOCK_FORK_MASK).ok_or(
        RecordError::InvalidFork(fork_flags & BKPBLOCK_FORK_MASK, block_id),
    )?;
    let data_len = reader.u16()?;
    if (fork_flags & BKPBLOCK_HAS_DATA != 0) != (data_len != 0) {
        return Err(RecordError::DataFlagMismatch(block_id));
    }
    let mut image_len = 0;
    let image = if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
        let (image, len) = read_image_header(reader, block_id)?;
        image_len = len;
        Some(image)
    } else {
        None
    };
    let rel = if fork_flags & BKPBLOCK_SAME_REL != 0 {
        last_rel.ok_or(RecordError::SameRelWithoutPrevious(block_id))?
    } else {
        RelFileNode {
            spc_node: reader.u32()?,
            db_node: reader.u32()?,
            rel_node: reader.u32()?,
        }
    };
    *last_rel = Some(rel);
    let blkno = reader.u32()?;
    Ok(BlockHeader {
        block: BlockRef {
            block_id,
            rel,
            fork,
            blkno,
            will_init: fork_flags & BKPBLOCK_WILL_INIT != 0,
            image,
            data: 0..0,
        },
        data_len,
        image_len,
    })
}

fn read_image_header(
    reader: &mut Reader<'_>,
    block_id: u8,
) -> Result<(BlockImage, u16), RecordError> {
    let length = reader.u16()?;
    let hole_offset = reader.u16()?;
    let info = reader.u8()?;
    let compression =
        match info & (BKPIMAGE_COMPRESS_PGLZ | BKPIMAGE_COMPRESS_LZ4 | BKPIMAGE_COMPRESS_ZSTD) {
            0 => ImageCompression::None,
            BKPIMAGE_COMPRESS_PGLZ => ImageCompression::Pglz,
            BKPIMAGE_COMPRESS_LZ4 => ImageCompression::Lz4,
            BKPIMAGE_COMPRESS_ZSTD => ImageCompression::Zstd,
            _ => return Err(invalid_image(block_id, length, hole_offset, 0, info)),
        };
    let has_hole = info & BKPIMAGE_HAS_HOLE != 0;
    let blcksz = BLCKSZ as u16;
    let hole_length = match (compression, has_hole) {
        (ImageCompression::None, _) => blcksz
            .checked_sub(length)
            .ok_or_else(|| invalid_image(block_id, length, hole_offset, 0, info))?,
        (_, true) => reader.u16()?,
        (_, false) => 0,
    };
    let compressed = compression != ImageCompression::None;
    // The same consistency rules as PostgreSQL's decoder: a hole must be real, a
    // missing hole must be absent, and an image must account for the whole page.
    let valid = if has_hole {
        hole_offset != 0 && hole_length != 0 && length != blcksz
    } else {
        hole_offset == 0 && hole_length == 0 && (compressed || length == blcksz)
    } && !(compressed && length == blcksz)
        && u32::from(hole_offset) + u32::from(hole_length) <= u32::from(blcksz)
        && length != 0;
    if !valid {
        return Err(invalid_image(
            block_id,
            length,
            hole_offset,
            hole_length,
            info,
        ));
    }
    let image = BlockImage {
        bytes: 0..0,
        hole_offset,
        hole_length,
        apply: info & BKPIMAGE_APPLY != 0,
        compression,
    };
    Ok((image, length))
}

fn invalid_image(
    block_id: u8,
    length: u16,
    hole_offset: u16,
    hole_length: u16,
    info: u8,
) -> RecordError {
    RecordError::InvalidImage {
        block_id,
        length,
        hole_offset,
        hole_length,
        info,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Build a record the way XLogRecordAssemble lays it out, with a correct CRC.
    pub(crate) fn assemble(
        rmid: u8,
        info: u8,
        xid: u32,
        prev: Lsn,
        headers: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        let total = RECORD_HEADER_SIZE + headers.len() + payload.len();
        let mut bytes = Vec::with_capacity(total);
        bytes.extend_from_slice(&(total as u32).to_le_bytes());
        bytes.extend_from_slice(&xid.to_le_bytes());
        bytes.extend_from_slice(&prev.0.to_le_bytes());
        bytes.extend_from_slice(&[info, rmid, 0, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(headers);
        bytes.extend_from_slice(payload);
        let crc = record_crc(&bytes);
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    fn rel_bytes(spc: u32, db: u32, rel: u32) -> Vec<u8> {
        [spc, db, rel]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    #[test]
    fn decodes_blocks_images_origin_and_main_data() {
        let mut h = Vec::new();
        h.extend_from_slice(&[BLOCK_ID_ORIGIN, 7, 0]);
        h.extend_from_slice(&[BLOCK_ID_TOPLEVEL_XID, 0xE8, 3, 0, 0]);
        // Block 0: image with a hole, uncompressed, applied, plus 3 bytes of data.
        h.extend_from_slice(&[0, BKPBLOCK_HAS_IMAGE | BKPBLOCK_HAS_DATA, 3, 0]);
        h.extend_from_slice(&(8192u16 - 8000).to_le_bytes());
        h.extend_from_slice(&100u16.to_le_bytes());
        h.push(BKPIMAGE_HAS_HOLE | BKPIMAGE_APPLY);
        h.extend_from_slice(&rel_bytes(1663, 5, 16384));
        h.extend_from_slice(&9u32.to_le_bytes());
        // Block 2: same relation, fsm fork, will init, no data.
        h.extend_from_slice(&[2, BKPBLOCK_SAME_REL | BKPBLOCK_WILL_INIT | 1, 0, 0]);
        h.extend_from_slice(&4u32.to_le_bytes());
        h.extend_from_slice(&[BLOCK_ID_DATA_SHORT, 2]);
        let mut payload = vec![0xAA; 192];
        payload.extend_from_slice(&[1, 2, 3, 9, 8]);
        let bytes = assemble(10, 0x00, 1000, Lsn(0x100), &h, &payload);
        let rec = DecodedRecord::decode(Lsn(0x200), Lsn(0x400), bytes).unwrap();
        assert_eq!(rec.origin, Some(7));
        assert_eq!(rec.toplevel_xid, Some(1000));
        assert_eq!(rec.blocks.len(), 2);
        let b0 = &rec.blocks[0];
        assert_eq!(
            (b0.rel.to_string(), b0.fork, b0.blkno),
            ("1663/5/16384".into(), ForkNumber::Main, 9)
        );
        let img = b0.image.as_ref().unwrap();
        assert_eq!(
            (img.hole_offset, img.hole_length, img.apply),
            (100, 8000, true)
        );
        assert_eq!(rec.image_bytes(img).len(), 192);
        assert_eq!(rec.block_data(b0), &[1, 2, 3]);
        let b2 = &rec.blocks[1];
        assert_eq!(
            (b2.block_id, b2.rel, b2.fork, b2.will_init),
            (2, b0.rel, ForkNumber::Fsm, true)
        );
        assert_eq!(rec.main_data(), &[9, 8]);
        assert_eq!(rec.non_image_len(), rec.header.total_len - 192);
    }

    #[test]
    fn refuses_malformed_records() {
        let ok = assemble(1, 0, 1, Lsn(8), &[BLOCK_ID_DATA_SHORT, 1], &[5]);
        assert!(DecodedRecord::decode(Lsn(16), Lsn(64), ok.clone()).is_ok());

        let mut bad_crc = ok.clone();
        bad_crc[25] ^= 1;
        assert!(matches!(
            DecodedRecord::decode(Lsn(16), Lsn(64), bad_crc),
            Err(RecordError::Crc { .. })
        ));

        let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (vec![BLOCK_ID_DATA_SHORT, 2], vec![5]),
            (vec![40, 0, 0, 0], vec![]),
            (vec![0, BKPBLOCK_HAS_DATA, 0, 0], vec![]),
            (vec![0, BKPBLOCK_SAME_REL, 0, 0, 1, 0, 0, 0], vec![]),
            (vec![0, 7, 0, 0], vec![]),
            (vec![BLOCK_ID_DATA_LONG, 1], vec![]),
        ];
        for (headers, payload) in cases {
            let bytes = assemble(1, 0, 1, Lsn(8), &headers, &payload);
            assert!(
                DecodedRecord::decode(Lsn(16), Lsn(64), bytes).is_err(),
                "{headers:?}"
            );
        }
        let mut out_of_order = vec![1, 0, 0, 0];
        out_of_order.extend_from_slice(&rel_bytes(1, 2, 3));
        out_of_order.extend_from_slice(&0u32.to_le_bytes());
        out_of_order.extend_from_slice(&[0, BKPBLOCK_SAME_REL, 0, 0, 0, 0, 0, 0]);
        let bytes = assemble(1, 0, 1, Lsn(8), &out_of_order, &[]);
        assert_eq!(
            DecodedRecord::decode(Lsn(16), Lsn(64), bytes),
            Err(RecordError::BlockIdOutOfOrder(0))
        );
    }

    #[test]
    fn refuses_inconsistent_image_headers() {
        let image = |len: u16, hole: u16, info: u8, extra: &[u8]| {
            let mut h = vec![0, BKPBLOCK_HAS_IMAGE, 0, 0];
            h.extend_from_slice(&len.to_le_bytes());
            h.extend_from_slice(&hole.to_le_bytes());
            h.push(info);
            h.extend_from_slice(extra);
            h.extend_from_slice(&rel_bytes(1, 2, 3));
            h.extend_from_slice(&0u32.to_le_bytes());
            assemble(10, 0, 1, Lsn(8), &h, &vec![0; len as usize])
        };
        assert!(DecodedRecord::decode(Lsn(16), Lsn(0), image(8192, 0, 0, &[])).is_ok());
        assert!(
            DecodedRecord::decode(Lsn(16), Lsn(0), image(100, 0, BKPIMAGE_COMPRESS_LZ4, &[]))
                .is_ok()
        );
        for bad in [
            image(8000, 0, 0, &[]),
            image(8000, 0, BKPIMAGE_HAS_HOLE, &[]),
            image(8192, 10, BKPIMAGE_HAS_HOLE, &[]),
            image(
                100,
                8190,
                BKPIMAGE_HAS_HOLE | BKPIMAGE_COMPRESS_PGLZ,
                &100u16.to_le_bytes(),
            ),
            image(100, 0, BKPIMAGE_COMPRESS_LZ4 | BKPIMAGE_COMPRESS_PGLZ, &[]),
        ] {
            assert!(matches!(
                DecodedRecord::decode(Lsn(16), Lsn(0), bad),
                Err(RecordError::InvalidImage { .. })
            ));
        }
    }
}
