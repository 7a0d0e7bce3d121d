//! The values ingest produced and not yet committed, readable before they are.

use std::collections::HashMap;

use postgres_wal::Lsn;

use crate::key::{Key, KEY_LEN};
use crate::read::{ReadError, VersionSource};
use crate::value::Value;

/// Pending `(key, LSN, value)`s in the order ingest produced them. At most one value
/// per key and LSN: a record that changes a key twice replaces its own value.
#[derive(Debug, Default)]
pub struct Batch {
    entries: Vec<(Key, Lsn, Value)>,
    /// Positions in `entries` of each key's values, in LSN order.
    index: HashMap<Key, Vec<usize>>,
    bytes: usize,
}

fn value_len(value: &Value) -> usize {
    match value {
        Value::Image(b) => b.len(),
        // Ops are small; a fixed estimate keeps the accounting cheap.
        Value::Op(_) => 64,
    }
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Approximate encoded size of the pending values and keys.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn into_entries(self) -> Vec<(Key, Lsn, Value)> {
        self.entries
    }

    /// The value this batch holds for `key` at exactly `lsn`.
    pub(crate) fn get(&self, key: &Key, lsn: Lsn) -> Option<&Value> {
        let last = *self.index.get(key)?.last()?;
        let (_, at, value) = &self.entries[last];
        (*at == lsn).then_some(value)
    }

    /// Forgets every value stored since the batch had `len` entries: a record that
    /// fails leaves nothing behind. Values of one record are never replaced by a later
    /// record (each record has its own LSN), so dropping the tail restores the batch.
    pub(crate) fn truncate(&mut self, len: usize) {
        while self.entries.len() > len {
            let Some((key, _, value)) = self.entries.pop() else {
                break;
            };
            self.bytes -= KEY_LEN + 8 + value_len(&value);
            if let Some(positions) = self.index.get_mut(&key) {
                positions.pop();
                if positions.is_empty() {
                    self.index.remove(&key);
                }
            }
        }
    }

    /// Stores `value` for `key` at `lsn`, replacing a value already stored at `lsn`.
    /// LSNs of one key only grow: ingest moves forward.
    pub(crate) fn put(&mut self, key: Key, lsn: Lsn, value: Value) {
        let positions = self.index.entry(key).or_default();
        if let Some(&last) = positions.last() {
            let entry = &mut self.entries[last];
            if entry.1 == lsn {
                self.bytes = self.bytes - value_len(&entry.2) + value_len(&value);
                entry.2 = value;
                return;
            }
        }
        positions.push(self.entries.len());
        self.bytes += KEY_LEN + 8 + value_len(&value);
        self.entries.push((key, lsn, value));
    }
}

/// The batch read over the storage below it.
pub(crate) struct Overlay<'a> {
    pub src: &'a dyn VersionSource,
    pub batch: &'a Batch,
}

impl VersionSource for Overlay<'_> {
    fn versions(&self, key: &Key, since: Lsn, at: Lsn) -> Result<Vec<(Lsn, Value)>, ReadError> {
        let mut out = Vec::new();
        let mut oldest_pending = None;
        if let Some(positions) = self.batch.index.get(key) {
            for &i in positions.iter().rev() {
                let (_, lsn, value) = &self.batch.entries[i];
                oldest_pending = Some(*lsn);
                if *lsn > at || *lsn < since {
                    continue;
                }
                out.push((*lsn, value.clone()));
                if value.will_init() {
                    return Ok(out);
                }
            }
        }
        let below = self.src.versions(key, since, at)?;
        out.extend(
            below
                .into_iter()
                .filter(|(lsn, _)| oldest_pending.is_none_or(|p| *lsn < p)),
        );
        Ok(out)
    }
}
