//! The encoding of the open layer in RocksDB. Entry keys are the key followed by the
//! LSN big-endian (OPEN_KEY_LEN bytes), so RocksDB's bytewise order is (key, LSN); the
//! value is a flag byte followed by the value bytes. The `meta` blob lives under
//! [`META_KEY`], whose length differs from every entry key, so scans skip it by length.

use crate::format::corrupt;
use crate::limits::{KEY_LEN, OPEN_KEY_LEN};
use crate::{StoreError, Version};

pub(crate) const META_KEY: &[u8] = b"strata:meta";
pub(crate) const OPEN_LAYER_FILE: &str = "open layer (RocksDB)";

const FLAG_DELTA: u8 = 0;
const FLAG_WILL_INIT: u8 = 1;

const _: () = assert!(META_KEY.len() != OPEN_KEY_LEN);

pub(crate) fn encode_key(key: &[u8; KEY_LEN], lsn: u64) -> [u8; OPEN_KEY_LEN] {
    let mut k = [0u8; OPEN_KEY_LEN];
    k[..KEY_LEN].copy_from_slice(key);
    k[KEY_LEN..].copy_from_slice(&lsn.to_be_bytes());
    k
}

/// `None` for keys that are not entries (the meta key).
pub(crate) fn decode_key(raw: &[u8]) -> Option<([u8; KEY_LEN], u64)> {
    if raw.len() != OPEN_KEY_LEN {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&raw[..KEY_LEN]);
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&raw[KEY_LEN..]);
    Some((key, u64::from_be_bytes(lsn)))
}

pub(crate) fn encode_value(will_init: bool, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + value.len());
    v.push(if will_init {
        FLAG_WILL_INIT
    } else {
        FLAG_DELTA
    });
    v.extend_from_slice(value);
    v
}

pub(crate) fn decode_value(lsn: u64, raw: &[u8]) -> Result<Version, StoreError> {
    let will_init = match raw.first() {
        Some(&FLAG_DELTA) => false,
        Some(&FLAG_WILL_INIT) => true,
        _ => {
            return Err(corrupt(
                OPEN_LAYER_FILE,
                format!("bad flag byte at LSN {lsn}"),
            ))
        }
    };
    Ok(Version {
        lsn,
        will_init,
        value: bytes::Bytes::copy_from_slice(&raw[1..]),
    })
}

/// Approximate bytes an entry occupies, for the freeze threshold and metrics.
pub(crate) fn entry_bytes(value_len: usize) -> u64 {
    (OPEN_KEY_LEN + 1 + value_len) as u64
}
