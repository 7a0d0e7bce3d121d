//! The layer manifest: the set of layer files that make up the store, written durably
//! (temporary file, fsync, rename, directory fsync) before any open-layer entry is
//! deleted. Why a manifest rather than the directory listing: the rename of one small
//! file is the single commit point of a freeze, a layer file that is not listed is known
//! to be garbage from an interrupted freeze, and a listed file that is missing is
//! fetched from object storage instead of silently reading less. It is also what is
//! uploaded to object storage as the timeline's index.
//!
//! Text, one layer per line, with a CRC32C of everything before the last line:
//!
//! ```text
//! STRATA LAYER MANIFEST 1
//! <layer file name> <size in bytes>
//! crc32c <8 lowercase hex digits>
//! ```

use std::path::Path;

use crate::durable::{self, io_err};
use crate::format::corrupt;
use crate::limits::MAX_MANIFEST_BYTES;
use crate::name::parse_layer_file_name;
use crate::StoreError;

pub(crate) const MANIFEST_NAME: &str = "layer_manifest";
const HEADER: &str = "STRATA LAYER MANIFEST 1";
const CRC_PREFIX: &str = "crc32c ";

/// (layer file name, size in bytes), in no particular order.
pub(crate) type ManifestEntries = Vec<(String, u64)>;

pub(crate) fn encode(layers: &[(String, u64)]) -> Vec<u8> {
    let mut text = format!("{HEADER}\n");
    for (name, size) in layers {
        text.push_str(&format!("{name} {size}\n"));
    }
    let crc = crc32c::crc32c(text.as_bytes());
    text.push_str(&format!("{CRC_PREFIX}{crc:08x}\n"));
    text.into_bytes()
}

pub(crate) fn decode(bytes: &[u8]) -> Result<ManifestEntries, StoreError> {
    let bad = |reason: &str| corrupt(MANIFEST_NAME, reason);
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
    let body_len = text
        .trim_end_matches('\n')
        .rfind('\n')
        .map(|i| i + 1)
        .ok_or_else(|| bad("too short"))?;
    let (body, crc_line) = text.split_at(body_len);
    let crc = crc_line
        .strip_prefix(CRC_PREFIX)
        .and_then(|s| s.strip_suffix('\n'))
        .filter(|s| s.len() == 8)
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or_else(|| bad("malformed CRC line"))?;
    if crc32c::crc32c(body.as_bytes()) != crc {
        return Err(bad("CRC mismatch"));
    }
    let mut lines = body.lines();
    if lines.next() != Some(HEADER) {
        return Err(bad("unknown header"));
    }
    let mut layers = Vec::new();
    for line in lines {
        let (name, size) = line
            .split_once(' ')
            .and_then(|(n, s)| Some((n, s.parse::<u64>().ok()?)))
            .filter(|(n, _)| parse_layer_file_name(n).is_some())
            .ok_or_else(|| bad("malformed layer line"))?;
        layers.push((name.to_string(), size));
    }
    Ok(layers)
}

/// The manifest in `dir`; empty when none was ever written.
pub(crate) fn load(dir: &Path) -> Result<ManifestEntries, StoreError> {
    let path = dir.join(MANIFEST_NAME);
    let len = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("stat {}", path.display()))(e)),
    };
    if len > MAX_MANIFEST_BYTES {
        return Err(corrupt(MANIFEST_NAME, format!("{len} bytes is too large")));
    }
    let bytes = std::fs::read(&path).map_err(io_err(format!("read {}", path.display())))?;
    decode(&bytes)
}

pub(crate) fn store(dir: &Path, layers: &[(String, u64)]) -> Result<(), StoreError> {
    durable::write_file(dir, MANIFEST_NAME, &encode(layers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_detects_damage() {
        let name = format!("image__{}-{}__{:016X}", "00".repeat(18), "FF".repeat(18), 7);
        let layers = vec![(name, 1234)];
        let bytes = encode(&layers);
        assert_eq!(decode(&bytes).unwrap(), layers);
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x01;
            assert!(matches!(decode(&damaged), Err(StoreError::Corrupt { .. })));
        }
        for len in 0..bytes.len() {
            assert!(matches!(
                decode(&bytes[..len]),
                Err(StoreError::Corrupt { .. })
            ));
        }
    }
}
