//! The one module that makes file-system changes survive a crash.
//!
//! Every durable write of the safekeeper goes through here: files are replaced by
//! writing a temporary file, fsyncing it, renaming it over the old one and fsyncing
//! the directory; directories are created and removed with their parent fsynced.
//! Each fsync says why it is needed, because each one costs a disk round trip and
//! each missing one is a lost write after a power failure.
//!
//! What this module does not do: ordinary WAL appends (`pwrite` into a pre-allocated
//! segment, made durable later by [`sync_data`]) live in the WAL store, which calls
//! [`sync_data`] here for their durability.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::failpoint;

/// Suffix of a file or directory still being written; never read, removed on open.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Zeros written by pre-allocation and truncation, a block at a time.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Failpoints a multi-step operation passes, by the step they follow.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepFailpoints {
    /// After the temporary file is written and synced, before the rename.
    pub before_rename: Option<&'static str>,
    /// After the rename, before the directory is synced.
    pub after_rename: Option<&'static str>,
}

fn pass(point: Option<&'static str>) -> io::Result<()> {
    point.map_or(Ok(()), failpoint::check)
}

/// The name of the temporary file or directory for `name`.
pub fn temp_name(name: &str) -> String {
    format!("{name}{TEMP_SUFFIX}")
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// fsync a directory: creations, renames and removals of its entries are durable only
/// once the directory itself is.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// fdatasync a file: its data (and the metadata needed to read it back) is durable when
/// this returns. Enough for writes inside pre-allocated space, which change no size.
pub fn sync_data(file: &File) -> io::Result<()> {
    file.sync_data()
}

/// Replace `dir/name` with `contents` atomically and durably: after a crash the file
/// holds either the old or the new contents, and the new ones once this returns.
pub fn replace_file(
    dir: &Path,
    name: &str,
    contents: &[u8],
    failpoints: StepFailpoints,
) -> io::Result<()> {
    let temp = dir.join(temp_name(name));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)?;
    file.write_all(contents)?;
    // fsync before the rename: otherwise the rename can reach the disk before the
    // data, and a crash leaves the new name on an empty or partial file.
    file.sync_all()?;
    drop(file);
    pass(failpoints.before_rename)?;
    fs::rename(&temp, dir.join(name))?;
    pass(failpoints.after_rename)?;
    // fsync the directory: the rename itself is durable only once its entry is.
    sync_dir(dir)
}

/// Create `dir/name` of `len` zero bytes, written out (not sparse) and durable, and
/// return it open for reading and writing. Because every block is allocated and
/// synced here, later writes inside it change no metadata and need only
/// [`sync_data`]. The file appears under its name only once complete.
pub fn create_zeroed_file(
    dir: &Path,
    name: &str,
    len: u64,
    failpoints: StepFailpoints,
) -> io::Result<File> {
    let temp = dir.join(temp_name(name));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)?;
    write_zeros(&file, 0, len)?;
    // fsync (not fdatasync): the size and block allocation are metadata, and the
    // point of pre-allocating is that they are durable before the file is used.
    file.sync_all()?;
    pass(failpoints.before_rename)?;
    fs::rename(&temp, dir.join(name))?;
    pass(failpoints.after_rename)?;
    // fsync the directory so the file exists under its final name after a crash.
    sync_dir(dir)?;
    Ok(file)
}

fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    let mut offset = from;
    while offset < to {
        let n = (to - offset).min(ZEROS.len() as u64);
        // `n` is at most ZEROS.len(), so the slice is in bounds.
        file.write_all_at(&ZEROS[..n as usize], offset)?;
        offset += n;
    }
    Ok(())
}

/// Overwrite bytes `from..to` of `file` with zeros and make the whole file's data
/// durable (this also syncs any earlier unsynced writes to it).
pub fn zero_range(file: &File, from: u64, to: u64) -> io::Result<()> {
    write_zeros(file, from, to)?;
    // fdatasync: the range lies inside the file, so no size changes; what matters is
    // that the zeros are on disk before anything that relies on them (removing later
    // segments, reporting the truncation done).
    file.sync_data()
}

/// Rename `dir/from` to `dir/to` durably.
pub fn rename(dir: &Path, from: &str, to: &str) -> io::Result<()> {
    fs::rename(dir.join(from), dir.join(to))?;
    // fsync the directory: until then a crash may bring back the old name.
    sync_dir(dir)
}

/// Remove `dir/name` for each name (missing ones are fine) durably.
pub fn remove_files(dir: &Path, names: &[String]) -> io::Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    for name in names {
        match fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    // fsync the directory once for all removals: until then a crash may bring the
    // files back.
    sync_dir(dir)
}

/// Create the directory `path` (its parent must exist) durably.
pub fn create_dir(path: &Path) -> io::Result<()> {
    fs::create_dir(path)?;
    // fsync the parent: the new directory's entry lives there.
    sync_dir(parent_of(path))
}

/// Create `path` and any missing ancestors, each one durably.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut cursor = Some(path);
    while let Some(dir) = cursor {
        if dir.as_os_str().is_empty() || dir.is_dir() {
            break;
        }
        missing.push(dir.to_path_buf());
        cursor = dir.parent();
    }
    for dir in missing.iter().rev() {
        match create_dir(dir) {
            // Created concurrently: sync the parent anyway, so that our caller can rely
            // on the entry being durable whoever created it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {
                sync_dir(parent_of(dir))?
            }
            result => result?,
        }
    }
    Ok(())
}

/// Rename the directory `from` to `to` (same parent) durably: after a crash the
/// directory exists under exactly one of the two names.
pub fn rename_dir(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    // fsync the parent: both names are entries in it.
    sync_dir(parent_of(to))
}

/// Remove the directory `path` and everything in it durably.
pub fn remove_dir_all(path: &Path) -> io::Result<()> {
    fs::remove_dir_all(path)?;
    // fsync the parent so the directory does not come back after a crash.
    sync_dir(parent_of(path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn replace_file_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        replace_file(dir.path(), "f", b"one", StepFailpoints::default()).unwrap();
        replace_file(dir.path(), "f", b"two", StepFailpoints::default()).unwrap();
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"two");
        assert!(!dir.path().join("f.tmp").exists());
    }

    #[test]
    fn zeroed_file_has_its_size_and_zero_range_zeroes() {
        let dir = tempfile::tempdir().unwrap();
        let file = create_zeroed_file(dir.path(), "z", 200_000, StepFailpoints::default()).unwrap();
        file.write_all_at(&[7u8; 1000], 100).unwrap();
        zero_range(&file, 600, 1100).unwrap();
        let bytes = fs::read(dir.path().join("z")).unwrap();
        assert_eq!(bytes.len(), 200_000);
        assert!(bytes[100..600].iter().all(|&b| b == 7));
        assert!(bytes[600..].iter().all(|&b| b == 0));
    }

    #[test]
    fn create_dir_all_creates_every_missing_level() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        let moved = dir.path().join("a/b/d");
        rename_dir(&deep, &moved).unwrap();
        assert!(moved.is_dir() && !deep.exists());
        remove_dir_all(&dir.path().join("a")).unwrap();
        assert!(!dir.path().join("a").exists());
    }
}
