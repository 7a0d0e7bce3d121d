//! Restoring a full 8 KB page from a block image in a record.

use crate::record::{BlockImage, DecodedRecord, ImageCompression};
use crate::BLCKSZ;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("{method} image of {length} bytes does not decompress to the {expected} bytes around its hole: {reason}")]
    Decompress {
        method: &'static str,
        length: usize,
        expected: usize,
        reason: String,
    },
    #[error("image of {length} bytes with a hole of {hole_length} does not fill a page")]
    BadSize { length: usize, hole_length: usize },
}

/// Rebuild the full page an image describes: decompress, then put the zeroed hole
/// back at its offset (`RestoreBlockImage`).
pub fn restore_page(
    record: &DecodedRecord,
    image: &BlockImage,
) -> Result<Box<[u8; BLCKSZ]>, ImageError> {
    let src = record.image_bytes(image);
    let hole_offset = usize::from(image.hole_offset);
    let hole_length = usize::from(image.hole_length);
    let stored_len = BLCKSZ
        .checked_sub(hole_length)
        .filter(|&n| hole_offset <= n)
        .ok_or(ImageError::BadSize {
            length: src.len(),
            hole_length,
        })?;
    let mut stored = [0u8; BLCKSZ];
    let stored = &mut stored[..stored_len];
    decompress(image.compression, src, stored)?;
    let mut page = Box::new([0u8; BLCKSZ]);
    page[..hole_offset].copy_from_slice(&stored[..hole_offset]);
    page[hole_offset + hole_length..].copy_from_slice(&stored[hole_offset..]);
    Ok(page)
}

fn decompress(
    compression: ImageCompression,
    src: &[u8],
    dest: &mut [u8],
) -> Result<(), ImageError> {
    let expected = dest.len();
    let err = |reason: String| ImageError::Decompress {
        method: compression.name(),
        length: src.len(),
        expected,
        reason,
    };
    match compression {
        ImageCompression::None => {
            if src.len() != dest.len() {
                return Err(ImageError::BadSize {
                    length: src.len(),
                    hole_length: BLCKSZ - dest.len(),
                });
            }
            dest.copy_from_slice(src);
        }
        ImageCompression::Pglz => {
            crate::pglz::decompress_exact(src, dest).map_err(|e| err(e.to_string()))?
        }
        ImageCompression::Lz4 => {
            let n = lz4_flex::block::decompress_into(src, dest).map_err(|e| err(e.to_string()))?;
            if n != dest.len() {
                return Err(err(format!("produced {n} bytes")));
            }
        }
        ImageCompression::Zstd => {
            let n = zstd_decompress(src, dest).map_err(err)?;
            if n != dest.len() {
                return Err(err(format!("produced {n} bytes")));
            }
        }
    }
    Ok(())
}

/// Largest zstd window we let a frame declare. PostgreSQL compresses one page at a
/// time, so its frames never need more; a larger one is corrupt input that would
/// otherwise make the decoder reserve up to 100 MB.
const MAX_ZSTD_WINDOW_BYTES: u64 = 64 * 1024;
const ZSTD_MAGIC: u32 = 0xFD2F_B528;

/// The window a zstd frame header declares (RFC 8878 §3.1.1.1).
fn zstd_window_size(src: &[u8]) -> Result<u64, String> {
    let magic = src
        .get(0..4)
        .map(|m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
    if magic != Some(ZSTD_MAGIC) {
        return Err("not a zstd frame".into());
    }
    let descriptor = *src.get(4).ok_or("truncated zstd frame header")?;
    let single_segment = descriptor & 0x20 != 0;
    if !single_segment {
        let window = *src.get(5).ok_or("truncated zstd frame header")?;
        let log = 10 + u64::from(window >> 3);
        let base = 1u64 << log;
        return Ok(base + (base / 8) * u64::from(window & 7));
    }
    // A single-segment frame's window is its content size.
    let dict_id_len = [0usize, 1, 2, 4][usize::from(descriptor & 3)];
    let size_len = [1usize, 2, 4, 8][usize::from(descriptor >> 6)];
    let start = 5 + dict_id_len;
    let field = src
        .get(start..start + size_len)
        .ok_or("truncated zstd frame header")?;
    let mut bytes = [0u8; 8];
    bytes[..size_len].copy_from_slice(field);
    let size = u64::from_le_bytes(bytes);
    Ok(if size_len == 2 { size + 256 } else { size })
}

fn zstd_decompress(src: &[u8], dest: &mut [u8]) -> Result<usize, String> {
    let window = zstd_window_size(src)?;
    if window > MAX_ZSTD_WINDOW_BYTES {
        return Err(format!("frame declares a {window}-byte window"));
    }
    let mut decoder = ruzstd::decoding::FrameDecoder::new();
    decoder.decode_all(src, dest).map_err(|e| e.to_string())
}
