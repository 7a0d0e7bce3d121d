//! The layer file container, shared by delta and image layers (docs/layer-files.md has
//! the byte tables):
//!
//! ```text
//! [blob]* [index block]* [footer (FOOTER_LEN bytes)]
//! ```
//!
//! Every byte of a file belongs to exactly one blob, index block or the footer, and each
//! of those carries its own CRC32C, so any damage is detected by the read that meets it.
//! Everything read from a file is bounds-checked before use: a damaged file yields
//! [`StoreError::Corrupt`], never a panic and never a wrong value.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::durable::{self, io_err, TEMP_SUFFIX};
use crate::limits::{
    INDEX_ENTRIES_PER_BLOCK, KEY_LEN, MAX_INDEX_BYTES, MAX_VALUE_BYTES, TAIL_READ_BYTES,
};
use crate::name::{layer_file_name, NameParts};
use crate::{LayerKind, StoreError, Version};

pub(crate) const MAGIC: [u8; 8] = *b"STRLAYER";
pub(crate) const FORMAT_VERSION: u16 = 1;
pub(crate) const FOOTER_LEN: usize = 96;
const FOOTER_CRC_OFFSET: usize = 84;
const FOOTER_MAGIC_OFFSET: usize = 88;

const KIND_DELTA: u8 = 1;
const KIND_IMAGE: u8 = 2;

const CODEC_RAW: u8 = 0;
const CODEC_LZ4: u8 = 1;
/// Codec byte and uncompressed length (u32).
const BLOB_HEADER_LEN: usize = 5;
const CRC_LEN: usize = 4;
pub(crate) const BLOB_OVERHEAD: usize = BLOB_HEADER_LEN + CRC_LEN;

/// key, LSN u64, blob offset u64, blob length u32, flags u8.
pub(crate) const INDEX_ENTRY_LEN: usize = KEY_LEN + 8 + 8 + 4 + 1;
const INDEX_BLOCK_HEADER_LEN: usize = 4;
const FLAG_WILL_INIT: u8 = 1;

const _: () = assert!(FOOTER_MAGIC_OFFSET + MAGIC.len() == FOOTER_LEN);
const _: () = assert!(MAX_VALUE_BYTES + BLOB_OVERHEAD <= u32::MAX as usize);

/// One (key, LSN) of a layer and where its value blob lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub key: [u8; KEY_LEN],
    pub lsn: u64,
    pub offset: u64,
    pub len: u32,
    pub will_init: bool,
}

/// The decoded footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footer {
    pub parts: NameParts,
    pub entry_count: u64,
    pub index_offset: u64,
    pub index_len: u64,
    pub index_block_count: u32,
}

fn kind_byte(kind: LayerKind) -> u8 {
    match kind {
        LayerKind::Delta => KIND_DELTA,
        LayerKind::Image => KIND_IMAGE,
    }
}

fn encode_footer(f: &Footer) -> [u8; FOOTER_LEN] {
    let mut b = [0u8; FOOTER_LEN];
    b[0..2].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    b[2] = kind_byte(f.parts.kind);
    b[4..22].copy_from_slice(&f.parts.key_start);
    b[22..40].copy_from_slice(&f.parts.key_end);
    b[40..48].copy_from_slice(&f.parts.lsn_start.to_be_bytes());
    b[48..56].copy_from_slice(&f.parts.lsn_end.to_be_bytes());
    b[56..64].copy_from_slice(&f.entry_count.to_be_bytes());
    b[64..72].copy_from_slice(&f.index_offset.to_be_bytes());
    b[72..80].copy_from_slice(&f.index_len.to_be_bytes());
    b[80..84].copy_from_slice(&f.index_block_count.to_be_bytes());
    let crc = crc32c::crc32c(&b[..FOOTER_CRC_OFFSET]);
    b[FOOTER_CRC_OFFSET..FOOTER_MAGIC_OFFSET].copy_from_slice(&crc.to_be_bytes());
    b[FOOTER_MAGIC_OFFSET..].copy_from_slice(&MAGIC);
    b
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn key_at(b: &[u8], at: usize) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k.copy_from_slice(&b[at..at + KEY_LEN]);
    k
}

/// Decodes and checks a footer that is the last `FOOTER_LEN` bytes of a file of
/// `file_len` bytes. The `b[..]` slicing below is in bounds because `b` has exactly
/// `FOOTER_LEN` bytes.
pub(crate) fn decode_footer(
    file: &str,
    b: &[u8; FOOTER_LEN],
    file_len: u64,
) -> Result<Footer, StoreError> {
    let bad = |reason: String| corrupt(file, reason);
    if b[FOOTER_MAGIC_OFFSET..] != MAGIC {
        return Err(bad("bad magic in footer".into()));
    }
    let stored_crc = be_u32(b, FOOTER_CRC_OFFSET);
    if crc32c::crc32c(&b[..FOOTER_CRC_OFFSET]) != stored_crc {
        return Err(bad("footer CRC mismatch".into()));
    }
    let version = u16::from_be_bytes([b[0], b[1]]);
    if version != FORMAT_VERSION {
        return Err(bad(format!("unsupported format version {version}")));
    }
    let kind = match b[2] {
        KIND_DELTA => LayerKind::Delta,
        KIND_IMAGE => LayerKind::Image,
        other => return Err(bad(format!("unknown layer kind {other}"))),
    };
    if b[3] != 0 {
        return Err(bad("reserved footer byte is not zero".into()));
    }
    let f = Footer {
        parts: NameParts {
            kind,
            key_start: key_at(b, 4),
            key_end: key_at(b, 22),
            lsn_start: be_u64(b, 40),
            lsn_end: be_u64(b, 48),
        },
        entry_count: be_u64(b, 56),
        index_offset: be_u64(b, 64),
        index_len: be_u64(b, 72),
        index_block_count: be_u32(b, 80),
    };
    let p = &f.parts;
    if p.key_start > p.key_end || p.lsn_start > p.lsn_end {
        return Err(bad("footer ranges are inverted".into()));
    }
    if kind == LayerKind::Image && p.lsn_start != p.lsn_end {
        return Err(bad("image layer spans more than one LSN".into()));
    }
    // The index lies right before the footer: anything else means a truncated or
    // extended file, or a footer pointing outside it.
    let index_end = f.index_offset.checked_add(f.index_len);
    if index_end != file_len.checked_sub(FOOTER_LEN as u64) {
        return Err(bad(format!(
            "index at {}+{} does not end at the footer of a {file_len}-byte file",
            f.index_offset, f.index_len
        )));
    }
    if f.index_len > MAX_INDEX_BYTES {
        return Err(bad(format!("index of {} bytes is too large", f.index_len)));
    }
    let index_len = (u64::from(f.index_block_count) * (INDEX_BLOCK_HEADER_LEN + CRC_LEN) as u64)
        .saturating_add(f.entry_count.saturating_mul(INDEX_ENTRY_LEN as u64));
    if f.entry_count == 0 || index_len != f.index_len {
        return Err(bad(
            "entry and block counts do not match the index length".into()
        ));
    }
    Ok(f)
}

pub(crate) fn corrupt(file: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        file: file.to_string(),
        reason: reason.into(),
    }
}

/// Decodes the index section (all blocks), checking each block's CRC and that entries
/// are strictly increasing, inside the footer's ranges and point inside the blob area.
pub(crate) fn decode_index(
    file: &str,
    footer: &Footer,
    bytes: &[u8],
) -> Result<Vec<IndexEntry>, StoreError> {
    let bad = |reason: String| corrupt(file, reason);
    let capacity = usize::try_from(footer.entry_count).map_err(|_| bad("entry count".into()))?;
    let mut entries: Vec<IndexEntry> = Vec::with_capacity(capacity);
    let mut rest = bytes;
    for block in 0..footer.index_block_count {
        let count = rest
            .get(..INDEX_BLOCK_HEADER_LEN)
            .map(|h| be_u32(h, 0) as usize)
            .ok_or_else(|| bad(format!("index block {block} truncated")))?;
        if count == 0 || count > INDEX_ENTRIES_PER_BLOCK {
            return Err(bad(format!("index block {block} holds {count} entries")));
        }
        let body_len = INDEX_BLOCK_HEADER_LEN + count * INDEX_ENTRY_LEN;
        let (body, tail) = (rest.get(..body_len), rest.get(body_len..body_len + CRC_LEN));
        let (Some(body), Some(crc)) = (body, tail) else {
            return Err(bad(format!("index block {block} truncated")));
        };
        if crc32c::crc32c(body) != be_u32(crc, 0) {
            return Err(bad(format!("index block {block} CRC mismatch")));
        }
        for raw in body[INDEX_BLOCK_HEADER_LEN..].chunks_exact(INDEX_ENTRY_LEN) {
            let e = decode_entry(file, raw)?;
            check_entry(file, footer, entries.last(), &e)?;
            entries.push(e);
        }
        rest = &rest[body_len + CRC_LEN..];
    }
    if !rest.is_empty() || entries.len() != capacity {
        return Err(bad("index length does not match its blocks".into()));
    }
    let (first, last) = (entries.first(), entries.last());
    if first.map(|e| e.key) != Some(footer.parts.key_start)
        || last.map(|e| e.key) != Some(footer.parts.key_end)
    {
        return Err(bad("footer key range differs from the index".into()));
    }
    Ok(entries)
}

fn decode_entry(file: &str, raw: &[u8]) -> Result<IndexEntry, StoreError> {
    let flags = raw[INDEX_ENTRY_LEN - 1];
    if flags & !FLAG_WILL_INIT != 0 {
        return Err(corrupt(
            file,
            format!("unknown index entry flags {flags:#x}"),
        ));
    }
    Ok(IndexEntry {
        key: key_at(raw, 0),
        lsn: be_u64(raw, KEY_LEN),
        offset: be_u64(raw, KEY_LEN + 8),
        len: be_u32(raw, KEY_LEN + 16),
        will_init: flags & FLAG_WILL_INIT != 0,
    })
}

fn check_entry(
    file: &str,
    footer: &Footer,
    prev: Option<&IndexEntry>,
    e: &IndexEntry,
) -> Result<(), StoreError> {
    let p = &footer.parts;
    let reason = if prev.is_some_and(|prev| (prev.key, prev.lsn) >= (e.key, e.lsn)) {
        "index entries are not strictly increasing"
    } else if e.key < p.key_start || e.key > p.key_end || e.lsn < p.lsn_start || e.lsn > p.lsn_end {
        "index entry outside the footer's ranges"
    } else if (e.len as usize) < BLOB_OVERHEAD || e.len as usize > MAX_VALUE_BYTES + BLOB_OVERHEAD {
        "index entry has an impossible blob length"
    } else if e.offset.saturating_add(u64::from(e.len)) > footer.index_offset {
        "index entry points outside the blob area"
    } else if p.kind == LayerKind::Image && !e.will_init {
        "image layer entry is not an image"
    } else {
        return Ok(());
    };
    Err(corrupt(file, reason))
}

/// Encodes one value blob: lz4 when that makes it smaller.
fn encode_blob(value: &[u8]) -> Vec<u8> {
    let compressed = lz4_flex::block::compress(value);
    let (codec, payload) = if compressed.len() < value.len() {
        (CODEC_LZ4, compressed.as_slice())
    } else {
        (CODEC_RAW, value)
    };
    let mut blob = Vec::with_capacity(BLOB_OVERHEAD + payload.len());
    blob.push(codec);
    // The caller bounds values to MAX_VALUE_BYTES, which fits a u32 (const-asserted).
    blob.extend_from_slice(&(value.len() as u32).to_be_bytes());
    blob.extend_from_slice(payload);
    let crc = crc32c::crc32c(&blob);
    blob.extend_from_slice(&crc.to_be_bytes());
    blob
}

/// Checks a blob's length and CRC; returns where its CRC starts.
fn check_blob(file: &str, blob: &[u8]) -> Result<usize, StoreError> {
    let crc_at = blob
        .len()
        .checked_sub(CRC_LEN)
        .filter(|&at| at >= BLOB_HEADER_LEN)
        .ok_or_else(|| corrupt(file, "value blob too short"))?;
    if crc32c::crc32c(&blob[..crc_at]) != be_u32(blob, crc_at) {
        return Err(corrupt(file, "value blob CRC mismatch"));
    }
    Ok(crc_at)
}

/// Checks a blob read back from a file and returns its value.
pub(crate) fn decode_blob(file: &str, blob: &[u8]) -> Result<Bytes, StoreError> {
    let bad = |reason: &str| corrupt(file, reason);
    let crc_at = check_blob(file, blob)?;
    let raw_len = be_u32(blob, 1) as usize;
    if raw_len > MAX_VALUE_BYTES {
        return Err(bad("value blob claims an oversized value"));
    }
    let payload = &blob[BLOB_HEADER_LEN..crc_at];
    let value = match blob[0] {
        CODEC_RAW => payload.to_vec(),
        CODEC_LZ4 => lz4_flex::block::decompress(payload, raw_len)
            .map_err(|e| bad(&format!("lz4 decompression failed: {e}")))?,
        _ => return Err(bad("unknown value blob codec")),
    };
    if value.len() != raw_len {
        return Err(bad("value blob length mismatch"));
    }
    Ok(Bytes::from(value))
}

/// Streams a new layer file into a temporary file. Entries must come in strictly
/// increasing (key, LSN) order.
pub(crate) struct LayerWriter {
    kind: LayerKind,
    tmp_path: PathBuf,
    out: BufWriter<File>,
    offset: u64,
    index: Vec<IndexEntry>,
    lsn_range: Option<(u64, u64)>,
}

impl std::fmt::Debug for LayerWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerWriter")
            .field("tmp_path", &self.tmp_path)
            .field("entries", &self.index.len())
            .finish()
    }
}

/// A layer file fully written and fsync'd under its temporary name.
#[derive(Debug)]
pub(crate) struct WrittenLayer {
    pub tmp_path: PathBuf,
    pub name: String,
    pub parts: NameParts,
    pub size_bytes: u64,
}

impl LayerWriter {
    /// Only one writer exists at a time per directory (the store serializes writers),
    /// so one temporary name per kind suffices.
    pub(crate) fn create(dir: &Path, kind: LayerKind) -> Result<LayerWriter, StoreError> {
        let tmp_path = dir.join(format!("{kind:?}-layer{TEMP_SUFFIX}").to_lowercase());
        let file =
            File::create(&tmp_path).map_err(io_err(format!("create {}", tmp_path.display())))?;
        Ok(LayerWriter {
            kind,
            tmp_path,
            out: BufWriter::new(file),
            offset: 0,
            index: Vec::new(),
            lsn_range: None,
        })
    }

    pub(crate) fn add(
        &mut self,
        key: [u8; KEY_LEN],
        lsn: u64,
        will_init: bool,
        value: &[u8],
    ) -> Result<(), StoreError> {
        if self
            .index
            .last()
            .is_some_and(|l| (l.key, l.lsn) >= (key, lsn))
        {
            return Err(StoreError::Invalid(
                "layer entries must be in strictly increasing (key, LSN) order".into(),
            ));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::Invalid(format!(
                "value of {} bytes exceeds {MAX_VALUE_BYTES}",
                value.len()
            )));
        }
        let blob = encode_blob(value);
        self.write(&blob)?;
        self.index.push(IndexEntry {
            key,
            lsn,
            offset: self.offset,
            len: blob.len() as u32,
            will_init,
        });
        self.offset += blob.len() as u64;
        self.lsn_range = Some(match self.lsn_range {
            None => (lsn, lsn),
            Some((lo, hi)) => (lo.min(lsn), hi.max(lsn)),
        });
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.out
            .write_all(bytes)
            .map_err(io_err(format!("write {}", self.tmp_path.display())))
    }

    /// Writes index and footer and fsyncs the temporary file. `None` (and no file) when
    /// no entry was added.
    pub(crate) fn finish(mut self) -> Result<Option<WrittenLayer>, StoreError> {
        let (Some(first), Some(last), Some((lsn_start, lsn_end))) =
            (self.index.first(), self.index.last(), self.lsn_range)
        else {
            drop(self.out);
            std::fs::remove_file(&self.tmp_path)
                .map_err(io_err(format!("remove {}", self.tmp_path.display())))?;
            return Ok(None);
        };
        let parts = NameParts {
            kind: self.kind,
            key_start: first.key,
            key_end: last.key,
            lsn_start,
            lsn_end,
        };
        let index_offset = self.offset;
        let index = std::mem::take(&mut self.index);
        let mut index_len = 0u64;
        for chunk in index.chunks(INDEX_ENTRIES_PER_BLOCK) {
            let block = encode_index_block(chunk);
            self.write(&block)?;
            index_len += block.len() as u64;
        }
        let footer = Footer {
            parts,
            entry_count: index.len() as u64,
            index_offset,
            index_len,
            index_block_count: index.chunks(INDEX_ENTRIES_PER_BLOCK).len() as u32,
        };
        self.write(&encode_footer(&footer))?;
        let context = format!("fsync {}", self.tmp_path.display());
        let file = self.out.into_inner().map_err(|e| StoreError::Io {
            context: context.clone(),
            source: e.into_error(),
        })?;
        // The layer's bytes must be on disk before the rename gives it its real name and
        // before the manifest lists it: the open layer entries it holds are deleted once
        // it is listed.
        file.sync_all().map_err(io_err(context))?;
        Ok(Some(WrittenLayer {
            tmp_path: self.tmp_path,
            name: layer_file_name(&parts),
            parts,
            size_bytes: index_offset + index_len + FOOTER_LEN as u64,
        }))
    }
}

impl WrittenLayer {
    /// Gives the layer its final name, durably (the directory is fsync'd).
    pub(crate) fn rename_into(&self, dir: &Path) -> Result<PathBuf, StoreError> {
        let path = dir.join(&self.name);
        durable::rename(dir, &self.tmp_path, &path)?;
        Ok(path)
    }
}

fn encode_index_block(entries: &[IndexEntry]) -> Vec<u8> {
    let mut b = Vec::with_capacity(INDEX_BLOCK_HEADER_LEN + entries.len() * INDEX_ENTRY_LEN + 4);
    // At most INDEX_ENTRIES_PER_BLOCK entries: the caller chunks by it.
    b.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for e in entries {
        b.extend_from_slice(&e.key);
        b.extend_from_slice(&e.lsn.to_be_bytes());
        b.extend_from_slice(&e.offset.to_be_bytes());
        b.extend_from_slice(&e.len.to_be_bytes());
        b.push(if e.will_init { FLAG_WILL_INIT } else { 0 });
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_be_bytes());
    b
}

/// An open layer file with its index in memory.
pub(crate) struct LayerReader {
    name: String,
    file: File,
    footer: Footer,
    entries: Vec<IndexEntry>,
}

impl std::fmt::Debug for LayerReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerReader")
            .field("name", &self.name)
            .field("footer", &self.footer)
            .finish()
    }
}

impl LayerReader {
    /// Opens `path` and loads its index as a reader of the object in object storage
    /// would: one range read of the last `TAIL_READ_BYTES`, and a second one only when
    /// the index is larger than that.
    pub(crate) fn load(path: &Path, name: &str) -> Result<LayerReader, StoreError> {
        let file = File::open(path).map_err(io_err(format!("open {}", path.display())))?;
        let file_len = file
            .metadata()
            .map_err(io_err(format!("stat {}", path.display())))?
            .len();
        if file_len < FOOTER_LEN as u64 {
            return Err(corrupt(name, format!("{file_len}-byte file has no footer")));
        }
        // First range read: the tail, which holds footer and index of most layers.
        let tail_len = file_len.min(TAIL_READ_BYTES.max(FOOTER_LEN as u64));
        let tail_at = file_len - tail_len;
        // tail_len <= TAIL_READ_BYTES (a small constant) or FOOTER_LEN.
        let mut tail = vec![0u8; tail_len as usize];
        read_at(&file, name, &mut tail, tail_at)?;
        let mut footer_bytes = [0u8; FOOTER_LEN];
        footer_bytes.copy_from_slice(&tail[tail.len() - FOOTER_LEN..]);
        let footer = decode_footer(name, &footer_bytes, file_len)?;
        let index = if footer.index_offset >= tail_at {
            // decode_footer checked index_offset + index_len == file_len - FOOTER_LEN.
            let start = (footer.index_offset - tail_at) as usize;
            tail[start..tail.len() - FOOTER_LEN].to_vec()
        } else {
            // Second range read for a larger index. decode_footer bounded index_len by
            // MAX_INDEX_BYTES, so this allocation is bounded too.
            let mut index = vec![0u8; footer.index_len as usize];
            read_at(&file, name, &mut index, footer.index_offset)?;
            index
        };
        let entries = decode_index(name, &footer, &index)?;
        Ok(LayerReader {
            name: name.to_string(),
            file,
            footer,
            entries,
        })
    }

    pub(crate) fn footer(&self) -> &Footer {
        &self.footer
    }

    pub(crate) fn contains(&self, key: &[u8; KEY_LEN], lsn: u64) -> bool {
        self.entries
            .binary_search_by(|e| (e.key, e.lsn).cmp(&(*key, lsn)))
            .is_ok()
    }

    /// Index entries of `key` with `since <= lsn <= at`, oldest first.
    pub(crate) fn range(&self, key: &[u8; KEY_LEN], since: u64, at: u64) -> &[IndexEntry] {
        let lo = self
            .entries
            .partition_point(|e| (e.key, e.lsn) < (*key, since));
        let hi = self
            .entries
            .partition_point(|e| (e.key, e.lsn) <= (*key, at));
        self.entries.get(lo..hi.max(lo)).unwrap_or_default()
    }

    /// Checks the CRC of every blob, reading them in file order.
    pub(crate) fn verify_blobs(&self) -> Result<(), StoreError> {
        let mut blob = Vec::new();
        for e in &self.entries {
            blob.resize(e.len as usize, 0);
            read_at(&self.file, &self.name, &mut blob, e.offset)?;
            check_blob(&self.name, &blob)?;
        }
        Ok(())
    }

    /// One range read: the blob of `e`.
    pub(crate) fn read(&self, e: &IndexEntry) -> Result<Version, StoreError> {
        let mut blob = vec![0u8; e.len as usize];
        read_at(&self.file, &self.name, &mut blob, e.offset)?;
        Ok(Version {
            lsn: e.lsn,
            will_init: e.will_init,
            value: decode_blob(&self.name, &blob)?,
        })
    }
}

/// A short read means the file shrank under us: that is corruption, not an I/O error.
fn read_at(file: &File, name: &str, buf: &mut [u8], offset: u64) -> Result<(), StoreError> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            corrupt(name, format!("truncated: {} bytes at {offset}", buf.len()))
        } else {
            StoreError::Io {
                context: format!("read {name} at {offset}"),
                source: e,
            }
        }
    })
}
