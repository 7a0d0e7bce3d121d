//! The pageserver's data model, free of I/O: the key space ([`key`]), the values stored
//! under a key at an LSN ([`value`]). Storage (`layer_store`) sees keys and values only
//! as bytes; ingest and reconstruction live here so they can be tested without a disk.

pub mod key;
pub mod value;

pub use key::{Key, KeyError, SlruKind, KEY_LEN};
pub use value::{Value, ValueError};
