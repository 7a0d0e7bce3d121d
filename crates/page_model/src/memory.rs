//! Every version of every key in memory: a [`VersionSource`] for tests and tools that
//! ingest or read WAL without a pageserver's storage (the ingest and basebackup tests,
//! which compare what it holds with what PostgreSQL wrote).

use std::collections::BTreeMap;

use postgres_wal::Lsn;

use crate::ingest::Batch;
use crate::key::Key;
use crate::read::{ReadError, VersionSource};
use crate::value::Value;

/// The versions, by key then LSN.
#[derive(Debug, Default, Clone)]
pub struct MemorySource(pub BTreeMap<(Key, Lsn), Value>);

/// A batch held a second value for a (key, LSN) the source already had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("two values for {key:?} at {lsn}")]
pub struct DuplicateVersion {
    pub key: Key,
    pub lsn: Lsn,
}

impl MemorySource {
    /// Adds a batch's versions; one value per (key, LSN), as the storage requires.
    pub fn commit(&mut self, batch: Batch) -> Result<(), DuplicateVersion> {
        for (key, lsn, value) in batch.into_entries() {
            if self.0.insert((key, lsn), value).is_some() {
                return Err(DuplicateVersion { key, lsn });
            }
        }
        Ok(())
    }
}

impl VersionSource for MemorySource {
    fn versions(&self, key: &Key, since: Lsn, at: Lsn) -> Result<Vec<(Lsn, Value)>, ReadError> {
        let mut out = Vec::new();
        if since > at {
            return Ok(out);
        }
        for ((_, lsn), value) in self.0.range((*key, since)..=(*key, at)).rev() {
            out.push((*lsn, value.clone()));
            if value.will_init() {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn versions_newest_first_down_to_an_image_and_empty_when_since_exceeds_at() {
        let mut mem = MemorySource::default();
        let image = Value::Image(Bytes::from_static(b"x"));
        let op = Value::Op(crate::value::NativeOp::TruncateVmPage { heap_blocks: 1 });
        mem.0.insert((Key::Checkpoint, Lsn(10)), image.clone());
        mem.0.insert((Key::Checkpoint, Lsn(20)), op.clone());
        mem.0.insert((Key::Checkpoint, Lsn(30)), image.clone());
        let got = mem.versions(&Key::Checkpoint, Lsn(0), Lsn(25)).unwrap();
        assert_eq!(got, vec![(Lsn(20), op), (Lsn(10), image)]);
        assert!(mem
            .versions(&Key::Checkpoint, Lsn(30), Lsn(10))
            .unwrap()
            .is_empty());
    }
}
