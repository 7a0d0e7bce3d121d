//! What is stored under a key at an LSN. A reconstruction starts from the newest
//! [`Value::Image`] at or below the requested LSN (or from an all-zero page when there
//! is none) and applies the newer [`Value::Op`]s in LSN order. At most one value exists
//! per key and LSN: a record that changes a key twice stores one combined value.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The value of a key at one LSN.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Value {
    /// The whole value: a page (`pd_lsn` already set to the LSN it is stored at) or a
    /// serialized directory, size, file.
    Image(Bytes),
    /// A change the pageserver applies natively to the previous value of the key.
    Op(NativeOp),
}

/// Changes that no page image in the WAL covers, applied in Rust (tier 0).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum NativeOp {
    /// Clear visibility-map bits of heap blocks that live on this VM page; `flags` per
    /// heap block (`VISIBILITYMAP_ALL_VISIBLE` 0x01, `VISIBILITYMAP_ALL_FROZEN` 0x02).
    ClearVmBits { heap_blocks: Vec<(u32, u8)> },
    /// Keep only the bits of heap blocks below `heap_blocks` on this (last) VM page.
    TruncateVmPage { heap_blocks: u32 },
    /// Set the two CLOG status bits of each xid (all on this CLOG page) to `status`.
    ClogSetStatus { xids: Vec<u32>, status: u8 },
    /// Write multixact offset entries on this offsets page: `(multi, offset)`.
    MultiXactOffsets { entries: Vec<(u32, u32)> },
    /// Write multixact members on this members page: `(member offset, xid, status)`.
    MultiXactMembers { members: Vec<(u32, u32, u8)> },
}

/// Bytes that are not a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("value is empty")]
    Empty,
    #[error("unknown value tag {0:#04x}")]
    Tag(u8),
    #[error("native op truncated ({0})")]
    Truncated(&'static str),
    #[error("native op has {0} trailing bytes")]
    Trailing(usize),
    #[error("native op claims {count} entries, more than its {len} bytes can hold")]
    Count { count: u32, len: usize },
}

const TAG_IMAGE: u8 = 0;
const TAG_OP: u8 = 1;

const OP_CLEAR_VM: u8 = 0;
const OP_TRUNCATE_VM: u8 = 1;
const OP_CLOG: u8 = 2;
const OP_MXACT_OFFSETS: u8 = 3;
const OP_MXACT_MEMBERS: u8 = 4;

impl Value {
    /// Whether a reconstruction can start from this value without any older one.
    pub fn will_init(&self) -> bool {
        matches!(self, Value::Image(_))
    }

    pub fn encode(&self) -> Bytes {
        match self {
            Value::Image(bytes) => {
                let mut out = BytesMut::with_capacity(1 + bytes.len());
                out.put_u8(TAG_IMAGE);
                out.put_slice(bytes);
                out.freeze()
            }
            Value::Op(op) => {
                let mut out = BytesMut::new();
                out.put_u8(TAG_OP);
                op.encode_into(&mut out);
                out.freeze()
            }
        }
    }

    pub fn decode(bytes: &Bytes) -> Result<Value, ValueError> {
        match bytes.first() {
            None => Err(ValueError::Empty),
            Some(&TAG_IMAGE) => Ok(Value::Image(bytes.slice(1..))),
            Some(&TAG_OP) => NativeOp::decode(&bytes[1..]).map(Value::Op),
            Some(&tag) => Err(ValueError::Tag(tag)),
        }
    }
}

/// Reads a length-prefixed list, checking the count against the bytes left before
/// allocating, so a corrupt count cannot ask for gigabytes.
fn read_count(buf: &mut &[u8], entry_len: usize) -> Result<usize, ValueError> {
    if buf.remaining() < 4 {
        return Err(ValueError::Truncated("count"));
    }
    let count = buf.get_u32();
    if (count as usize).saturating_mul(entry_len) > buf.remaining() {
        return Err(ValueError::Count {
            count,
            len: buf.remaining(),
        });
    }
    Ok(count as usize)
}

impl NativeOp {
    fn encode_into(&self, out: &mut BytesMut) {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        match self {
            NativeOp::ClearVmBits { heap_blocks } => {
                out.put_u8(OP_CLEAR_VM);
                out.put_u32(count(heap_blocks.len()));
                for &(blk, flags) in heap_blocks {
                    out.put_u32(blk);
                    out.put_u8(flags);
                }
            }
            NativeOp::TruncateVmPage { heap_blocks } => {
                out.put_u8(OP_TRUNCATE_VM);
                out.put_u32(*heap_blocks);
            }
            NativeOp::ClogSetStatus { xids, status } => {
                out.put_u8(OP_CLOG);
                out.put_u8(*status);
                out.put_u32(count(xids.len()));
                for &xid in xids {
                    out.put_u32(xid);
                }
            }
            NativeOp::MultiXactOffsets { entries } => {
                out.put_u8(OP_MXACT_OFFSETS);
                out.put_u32(count(entries.len()));
                for &(multi, offset) in entries {
                    out.put_u32(multi);
                    out.put_u32(offset);
                }
            }
            NativeOp::MultiXactMembers { members } => {
                out.put_u8(OP_MXACT_MEMBERS);
                out.put_u32(count(members.len()));
                for &(offset, xid, status) in members {
                    out.put_u32(offset);
                    out.put_u32(xid);
                    out.put_u8(status);
                }
            }
        }
    }

    fn decode(mut buf: &[u8]) -> Result<NativeOp, ValueError> {
        let buf = &mut buf;
        if buf.remaining() < 1 {
            return Err(ValueError::Truncated("op tag"));
        }
        let op = match buf.get_u8() {
            OP_CLEAR_VM => {
                let n = read_count(buf, 5)?;
                let heap_blocks = (0..n).map(|_| (buf.get_u32(), buf.get_u8())).collect();
                NativeOp::ClearVmBits { heap_blocks }
            }
            OP_TRUNCATE_VM => {
                if buf.remaining() < 4 {
                    return Err(ValueError::Truncated("truncate vm"));
                }
                NativeOp::TruncateVmPage {
                    heap_blocks: buf.get_u32(),
                }
            }
            OP_CLOG => {
                if buf.remaining() < 1 {
                    return Err(ValueError::Truncated("clog status"));
                }
                let status = buf.get_u8();
                let n = read_count(buf, 4)?;
                let xids = (0..n).map(|_| buf.get_u32()).collect();
                NativeOp::ClogSetStatus { xids, status }
            }
            OP_MXACT_OFFSETS => {
                let n = read_count(buf, 8)?;
                let entries = (0..n).map(|_| (buf.get_u32(), buf.get_u32())).collect();
                NativeOp::MultiXactOffsets { entries }
            }
            OP_MXACT_MEMBERS => {
                let n = read_count(buf, 9)?;
                let members = (0..n)
                    .map(|_| (buf.get_u32(), buf.get_u32(), buf.get_u8()))
                    .collect();
                NativeOp::MultiXactMembers { members }
            }
            tag => return Err(ValueError::Tag(tag)),
        };
        if buf.has_remaining() {
            return Err(ValueError::Trailing(buf.remaining()));
        }
        Ok(op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let values = [
            Value::Image(Bytes::from_static(&[1, 2, 3])),
            Value::Op(NativeOp::ClearVmBits {
                heap_blocks: vec![(7, 3), (9, 2)],
            }),
            Value::Op(NativeOp::TruncateVmPage { heap_blocks: 100 }),
            Value::Op(NativeOp::ClogSetStatus {
                xids: vec![740, 741],
                status: 1,
            }),
            Value::Op(NativeOp::MultiXactOffsets {
                entries: vec![(5, 12)],
            }),
            Value::Op(NativeOp::MultiXactMembers {
                members: vec![(12, 740, 1), (13, 741, 5)],
            }),
        ];
        for value in values {
            assert_eq!(Value::decode(&value.encode()), Ok(value.clone()));
        }
    }

    #[test]
    fn corrupt_values_are_errors() {
        assert_eq!(Value::decode(&Bytes::new()), Err(ValueError::Empty));
        assert_eq!(
            Value::decode(&Bytes::from_static(&[9])),
            Err(ValueError::Tag(9))
        );
        let huge = Bytes::from_static(&[TAG_OP, OP_CLOG, 1, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(matches!(
            Value::decode(&huge),
            Err(ValueError::Count { .. })
        ));
        let mut trailing = Value::Op(NativeOp::TruncateVmPage { heap_blocks: 1 })
            .encode()
            .to_vec();
        trailing.push(0);
        assert_eq!(
            Value::decode(&Bytes::from(trailing)),
            Err(ValueError::Trailing(1))
        );
    }
}
