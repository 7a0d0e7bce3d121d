//! The only place that makes files durable: write a temporary file, fsync it, rename it
//! over its final name, fsync the directory. Every durable file of the store goes
//! through here.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::StoreError;

/// Suffix of every temporary file: `open` removes any it finds, since a temporary file is
/// by construction not yet part of the store's state.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// Writes `bytes` as `dir/name`, durably and atomically: a reader (or a restart) sees
/// either the old file or the complete new one.
pub(crate) fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}{TEMP_SUFFIX}"));
    let mut file = File::create(&tmp).map_err(io_err(format!("create {}", tmp.display())))?;
    file.write_all(bytes)
        .map_err(io_err(format!("write {}", tmp.display())))?;
    // fsync the content before the rename: otherwise a crash could leave the final name
    // pointing at a file whose data never reached the disk.
    file.sync_all()
        .map_err(io_err(format!("fsync {}", tmp.display())))?;
    drop(file);
    rename(dir, &tmp, &dir.join(name))
}

/// Renames `from` to `to` (both in `dir`) and fsyncs `dir`, which is what makes the
/// rename itself survive a crash.
pub(crate) fn rename(dir: &Path, from: &Path, to: &Path) -> Result<(), StoreError> {
    fs::rename(from, to).map_err(io_err(format!(
        "rename {} to {}",
        from.display(),
        to.display()
    )))?;
    fsync_dir(dir)
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("fsync directory {}", dir.display())))
}
