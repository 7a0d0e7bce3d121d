//! The pageserver's data model, free of I/O: the key space ([`key`]), the values stored
//! under a key at an LSN ([`value`]), reading them back ([`read`]) with native page
//! changes ([`redo`]). Storage (`layer_store`) sees keys and values only as bytes;
//! ingest and reconstruction live here so they can be tested without a disk.

pub mod ingest;
pub mod key;
pub mod memory;
pub mod read;
pub mod redo;
pub mod value;

pub use key::{Key, KeyError, SlruKind, KEY_LEN};
pub use read::{ReadError, RelSize, VersionSource};
pub use value::{NativeOp, Value, ValueError};
