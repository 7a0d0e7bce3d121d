//! Layer file names. A name encodes kind, key range and LSN range, so a directory
//! listing (or an object-storage listing) describes the layers without opening them.
//!
//! `delta__<first key>-<last key>__<lowest LSN>-<highest LSN>`
//! `image__<first key>-<last key>__<LSN>`
//!
//! Keys are 36 uppercase hex digits, LSNs 16; all ranges are inclusive.

use crate::limits::KEY_LEN;
use crate::LayerKind;

const DELTA_PREFIX: &str = "delta__";
const IMAGE_PREFIX: &str = "image__";
const LSN_HEX_LEN: usize = 16;
const KEY_HEX_LEN: usize = 2 * KEY_LEN;

/// What a layer file name says about its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NameParts {
    pub kind: LayerKind,
    pub key_start: [u8; KEY_LEN],
    pub key_end: [u8; KEY_LEN],
    pub lsn_start: u64,
    pub lsn_end: u64,
}

pub(crate) fn layer_file_name(p: &NameParts) -> String {
    let (ks, ke) = (hex(&p.key_start), hex(&p.key_end));
    match p.kind {
        LayerKind::Delta => format!(
            "{DELTA_PREFIX}{ks}-{ke}__{:016X}-{:016X}",
            p.lsn_start, p.lsn_end
        ),
        LayerKind::Image => format!("{IMAGE_PREFIX}{ks}-{ke}__{:016X}", p.lsn_start),
    }
}

/// `None` when `name` is not exactly a layer file name as [`layer_file_name`] writes it.
pub(crate) fn parse_layer_file_name(name: &str) -> Option<NameParts> {
    let (kind, rest) = if let Some(rest) = name.strip_prefix(DELTA_PREFIX) {
        (LayerKind::Delta, rest)
    } else {
        (LayerKind::Image, name.strip_prefix(IMAGE_PREFIX)?)
    };
    let (keys, lsns) = rest.split_once("__")?;
    let (ks, ke) = keys.split_once('-')?;
    let (lsn_start, lsn_end) = match kind {
        LayerKind::Delta => {
            let (ls, le) = lsns.split_once('-')?;
            (parse_lsn(ls)?, parse_lsn(le)?)
        }
        LayerKind::Image => {
            let l = parse_lsn(lsns)?;
            (l, l)
        }
    };
    let parts = NameParts {
        kind,
        key_start: parse_key(ks)?,
        key_end: parse_key(ke)?,
        lsn_start,
        lsn_end,
    };
    // Only the canonical spelling is a layer name, so that one layer has one name.
    let valid = parts.key_start <= parts.key_end && parts.lsn_start <= parts.lsn_end;
    (valid && layer_file_name(&parts) == name).then_some(parts)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn parse_lsn(s: &str) -> Option<u64> {
    if s.len() != LSN_HEX_LEN {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

fn parse_key(s: &str) -> Option<[u8; KEY_LEN]> {
    if s.len() != KEY_HEX_LEN || !s.is_ascii() {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_variants() {
        let mut key_end = [0xABu8; KEY_LEN];
        key_end[0] = 0xFF;
        for kind in [LayerKind::Delta, LayerKind::Image] {
            let lsn_end = if kind == LayerKind::Delta {
                0x2000
            } else {
                0x10
            };
            let p = NameParts {
                kind,
                key_start: [0; KEY_LEN],
                key_end,
                lsn_start: 0x10,
                lsn_end,
            };
            let name = layer_file_name(&p);
            assert_eq!(parse_layer_file_name(&name), Some(p));
            assert_eq!(parse_layer_file_name(&name.to_lowercase()), None);
            assert_eq!(parse_layer_file_name(&format!("{name}.tmp")), None);
        }
        assert_eq!(parse_layer_file_name("delta__"), None);
        assert_eq!(parse_layer_file_name("layer_manifest"), None);
    }
}
