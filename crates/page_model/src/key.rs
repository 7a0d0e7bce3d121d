//! The key space. Every piece of state a PostgreSQL data directory holds and the WAL
//! changes is one key; a key has one version per LSN that changed it. Keys encode to
//! [`KEY_LEN`] big-endian bytes so that byte order is key order: a relation's blocks
//! are contiguous and sorted by block number, and its size key sorts right after them.

use postgres_wal::reltag::{BlockNumber, ForkNumber, Oid, RelFileNode, RelTag};

/// Encoded length of every key.
pub const KEY_LEN: usize = 18;

/// The block number of a relation's or an SLRU segment's size key: no real block
/// number reaches it (PostgreSQL's `InvalidBlockNumber`).
const SIZE_BLKNO: u32 = u32::MAX;

/// The SLRUs whose pages the pageserver keeps.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum SlruKind {
    /// `pg_xact`: two status bits per transaction.
    Clog = 0,
    /// `pg_multixact/members`.
    MultiXactMembers = 1,
    /// `pg_multixact/offsets`.
    MultiXactOffsets = 2,
}

impl SlruKind {
    pub fn from_u8(n: u8) -> Option<SlruKind> {
        match n {
            0 => Some(SlruKind::Clog),
            1 => Some(SlruKind::MultiXactMembers),
            2 => Some(SlruKind::MultiXactOffsets),
            _ => None,
        }
    }

    /// The directory of the data directory that holds this SLRU's segment files.
    pub fn dir(self) -> &'static str {
        match self {
            SlruKind::Clog => "pg_xact",
            SlruKind::MultiXactMembers => "pg_multixact/members",
            SlruKind::MultiXactOffsets => "pg_multixact/offsets",
        }
    }
}

/// One key. The value each holds is documented on its variant; see `docs/pageserver.md`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Key {
    /// The set of databases, `(spcnode, dbnode)` pairs.
    DbDir,
    /// A database's `pg_filenode.map` (512 bytes); for the shared catalogs
    /// (`spcnode` = GLOBALTABLESPACE, `dbnode` 0) `global/pg_filenode.map`.
    RelMap { spc: Oid, db: Oid },
    /// The set of relation forks of one database, `(relnode, fork)` pairs.
    RelDir { spc: Oid, db: Oid },
    /// One 8 KiB block of a relation fork.
    RelBlock { rel: RelTag, blkno: BlockNumber },
    /// The size of a relation fork in blocks, and the LSN it was created at.
    RelSize(RelTag),
    /// The set of segment numbers of one SLRU.
    SlruDir(SlruKind),
    /// One 8 KiB page of an SLRU segment (`blkno` within the segment).
    SlruPage {
        kind: SlruKind,
        segno: u32,
        blkno: BlockNumber,
    },
    /// The size of an SLRU segment in pages.
    SlruSegSize { kind: SlruKind, segno: u32 },
    /// The set of prepared transactions' xids.
    TwoPhaseDir,
    /// A prepared transaction's state file (`pg_twophase/<xid>`, without its CRC).
    TwoPhase { xid: u32 },
    /// The `CheckPoint` fields as replayed up to this LSN.
    Checkpoint,
    /// The `pg_control` the timeline was created from.
    ControlFile,
    /// The start LSN of the record that ends at this version's LSN: a basebackup's
    /// shutdown-checkpoint record needs it as `xl_prev`.
    LastRecord,
    /// The last checkpoint record ending at or before this version's LSN: its LSN and
    /// its `CheckPoint`.
    LastCheckpointRecord,
}

const TAG_DB_DIR: u8 = 0x00;
const TAG_REL_MAP: u8 = 0x01;
const TAG_REL_DIR: u8 = 0x02;
const TAG_REL: u8 = 0x03;
const TAG_SLRU_DIR: u8 = 0x04;
const TAG_SLRU: u8 = 0x05;
const TAG_TWO_PHASE_DIR: u8 = 0x06;
const TAG_TWO_PHASE: u8 = 0x07;
const TAG_CHECKPOINT: u8 = 0x08;
const TAG_CONTROL_FILE: u8 = 0x09;
const TAG_LAST_RECORD: u8 = 0x0A;
const TAG_LAST_CHECKPOINT_RECORD: u8 = 0x0B;

/// Bytes that are not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is {0} bytes, expected {KEY_LEN}")]
    Length(usize),
    #[error("unknown key tag {0:#04x}")]
    Tag(u8),
    #[error("invalid fork number {0} in key")]
    Fork(u8),
    #[error("invalid SLRU kind {0} in key")]
    Slru(u8),
    #[error("key bytes {0:02x?} are not in canonical form")]
    NotCanonical([u8; KEY_LEN]),
}

/// Field writer for the fixed layout `tag u8 | a u32 | b u32 | c u32 | d u8 | e u32`.
fn layout(tag: u8, a: u32, b: u32, c: u32, d: u8, e: u32) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    out[0] = tag;
    out[1..5].copy_from_slice(&a.to_be_bytes());
    out[5..9].copy_from_slice(&b.to_be_bytes());
    out[9..13].copy_from_slice(&c.to_be_bytes());
    out[13] = d;
    out[14..18].copy_from_slice(&e.to_be_bytes());
    out
}

fn field(bytes: &[u8; KEY_LEN], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

impl Key {
    pub fn rel_block(rel: RelTag, blkno: BlockNumber) -> Key {
        Key::RelBlock { rel, blkno }
    }

    pub fn encode(&self) -> [u8; KEY_LEN] {
        match *self {
            Key::DbDir => layout(TAG_DB_DIR, 0, 0, 0, 0, 0),
            Key::RelMap { spc, db } => layout(TAG_REL_MAP, spc, db, 0, 0, 0),
            Key::RelDir { spc, db } => layout(TAG_REL_DIR, spc, db, 0, 0, 0),
            Key::RelBlock { rel, blkno } => layout(
                TAG_REL,
                rel.node.spc_node,
                rel.node.db_node,
                rel.node.rel_node,
                rel.fork as u8,
                blkno,
            ),
            Key::RelSize(rel) => layout(
                TAG_REL,
                rel.node.spc_node,
                rel.node.db_node,
                rel.node.rel_node,
                rel.fork as u8,
                SIZE_BLKNO,
            ),
            Key::SlruDir(kind) => layout(TAG_SLRU_DIR, kind as u32, 0, 0, 0, 0),
            Key::SlruPage { kind, segno, blkno } => {
                layout(TAG_SLRU, kind as u32, segno, 0, 0, blkno)
            }
            Key::SlruSegSize { kind, segno } => {
                layout(TAG_SLRU, kind as u32, segno, 0, 0, SIZE_BLKNO)
            }
            Key::TwoPhaseDir => layout(TAG_TWO_PHASE_DIR, 0, 0, 0, 0, 0),
            Key::TwoPhase { xid } => layout(TAG_TWO_PHASE, xid, 0, 0, 0, 0),
            Key::Checkpoint => layout(TAG_CHECKPOINT, 0, 0, 0, 0, 0),
            Key::ControlFile => layout(TAG_CONTROL_FILE, 0, 0, 0, 0, 0),
            Key::LastRecord => layout(TAG_LAST_RECORD, 0, 0, 0, 0, 0),
            Key::LastCheckpointRecord => layout(TAG_LAST_CHECKPOINT_RECORD, 0, 0, 0, 0, 0),
        }
    }

    /// Decode bytes from storage or the network; any bytes that [`Key::encode`] would
    /// not produce are refused.
    pub fn decode(bytes: &[u8]) -> Result<Key, KeyError> {
        let bytes: &[u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| KeyError::Length(bytes.len()))?;
        let (a, b, c, d, e) = (
            field(bytes, 1),
            field(bytes, 5),
            field(bytes, 9),
            bytes[13],
            field(bytes, 14),
        );
        let slru = |n: u32| {
            u8::try_from(n)
                .ok()
                .and_then(SlruKind::from_u8)
                .ok_or(KeyError::Slru(n.min(255) as u8))
        };
        let key = match bytes[0] {
            TAG_DB_DIR => Key::DbDir,
            TAG_REL_MAP => Key::RelMap { spc: a, db: b },
            TAG_REL_DIR => Key::RelDir { spc: a, db: b },
            TAG_REL => {
                let fork = ForkNumber::from_u8(d).ok_or(KeyError::Fork(d))?;
                let rel = RelTag {
                    node: RelFileNode {
                        spc_node: a,
                        db_node: b,
                        rel_node: c,
                    },
                    fork,
                };
                if e == SIZE_BLKNO {
                    Key::RelSize(rel)
                } else {
                    Key::RelBlock { rel, blkno: e }
                }
            }
            TAG_SLRU_DIR => Key::SlruDir(slru(a)?),
            TAG_SLRU => {
                let kind = slru(a)?;
                if e == SIZE_BLKNO {
                    Key::SlruSegSize { kind, segno: b }
                } else {
                    Key::SlruPage {
                        kind,
                        segno: b,
                        blkno: e,
                    }
                }
            }
            TAG_TWO_PHASE_DIR => Key::TwoPhaseDir,
            TAG_TWO_PHASE => Key::TwoPhase { xid: a },
            TAG_CHECKPOINT => Key::Checkpoint,
            TAG_CONTROL_FILE => Key::ControlFile,
            TAG_LAST_RECORD => Key::LastRecord,
            TAG_LAST_CHECKPOINT_RECORD => Key::LastCheckpointRecord,
            tag => return Err(KeyError::Tag(tag)),
        };
        if key.encode() != *bytes {
            return Err(KeyError::NotCanonical(*bytes));
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(fork: ForkNumber) -> RelTag {
        RelTag {
            node: RelFileNode {
                spc_node: 1663,
                db_node: 5,
                rel_node: 16384,
            },
            fork,
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let keys = [
            Key::DbDir,
            Key::RelMap { spc: 1664, db: 0 },
            Key::RelDir { spc: 1663, db: 5 },
            Key::rel_block(rel(ForkNumber::VisibilityMap), 7),
            Key::RelSize(rel(ForkNumber::Init)),
            Key::SlruDir(SlruKind::MultiXactMembers),
            Key::SlruPage {
                kind: SlruKind::Clog,
                segno: 3,
                blkno: 31,
            },
            Key::SlruSegSize {
                kind: SlruKind::MultiXactOffsets,
                segno: 0,
            },
            Key::TwoPhaseDir,
            Key::TwoPhase { xid: 1234 },
            Key::Checkpoint,
            Key::ControlFile,
            Key::LastRecord,
            Key::LastCheckpointRecord,
        ];
        for key in keys {
            assert_eq!(Key::decode(&key.encode()), Ok(key), "{key:?}");
        }
    }

    #[test]
    fn byte_order_is_block_order_then_size() {
        let main = rel(ForkNumber::Main);
        let a = Key::rel_block(main, 1).encode();
        let b = Key::rel_block(main, 256).encode();
        let size = Key::RelSize(main).encode();
        let fsm = Key::rel_block(rel(ForkNumber::Fsm), 0).encode();
        assert!(a < b && b < size && size < fsm);
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(Key::decode(&[0; 3]), Err(KeyError::Length(3)));
        let mut bytes = Key::Checkpoint.encode();
        bytes[0] = 0xEE;
        assert_eq!(Key::decode(&bytes), Err(KeyError::Tag(0xEE)));
        let mut bytes = Key::rel_block(rel(ForkNumber::Main), 0).encode();
        bytes[13] = 9;
        assert_eq!(Key::decode(&bytes), Err(KeyError::Fork(9)));
        let mut bytes = Key::DbDir.encode();
        bytes[17] = 1;
        assert!(matches!(
            Key::decode(&bytes),
            Err(KeyError::NotCanonical(_))
        ));
    }
}
