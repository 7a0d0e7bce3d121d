//! WAL segment files: their names and what a timeline directory holds.
//!
//! Segments are named as PostgreSQL names them (`XLogFileName`) with timeline id 1,
//! because Strata keeps every Postgres on timeline 1 and tools such as
//! `pg_receivewal` and `pg_waldump` read these names. The segment being written is
//! `<name>.partial`, as `pg_receivewal` names its own.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::Path;

use postgres_wal::{Lsn, WalSegmentSize};

use super::durable::{self, StepFailpoints, TEMP_SUFFIX};
use super::error::StorageError;
use super::failpoint;

/// The PostgreSQL timeline id in every segment name.
pub const WAL_TIMELINE_ID: u32 = 1;
/// Suffix of the segment holding the write position.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// The file name of segment `segment_number`, with `.partial` if `partial`.
pub fn segment_file_name(size: WalSegmentSize, segment_number: u64, partial: bool) -> String {
    let name = size.file_name(WAL_TIMELINE_ID, segment_number);
    if partial {
        format!("{name}{PARTIAL_SUFFIX}")
    } else {
        name
    }
}

/// First LSN of `segment_number`; segment numbers come from LSNs, so this cannot
/// overflow for any segment that can hold WAL.
pub fn segment_start(size: WalSegmentSize, segment_number: u64) -> Lsn {
    Lsn(segment_number.saturating_mul(size.bytes()))
}

/// The segment files and leftovers found in a timeline directory.
#[derive(Debug, Default)]
pub struct Listing {
    /// Segment number → whether the file is named `.partial`.
    pub segments: BTreeMap<u64, bool>,
    /// Files ending in `.tmp`: interrupted durable writes, to be removed.
    pub temp_files: Vec<String>,
}

impl Listing {
    /// The current file name of a listed segment.
    pub fn name(&self, size: WalSegmentSize, segment_number: u64) -> Option<String> {
        self.segments
            .get(&segment_number)
            .map(|&partial| segment_file_name(size, segment_number, partial))
    }
}

/// List the segment files in `dir`. Other files (the control file) are ignored; a
/// segment present under both its names, or of another PostgreSQL timeline, is an
/// error, since no sequence of our own operations creates either.
pub fn list(dir: &Path, size: WalSegmentSize) -> Result<Listing, StorageError> {
    let action = || format!("list {}", dir.display());
    let mut listing = Listing::default();
    let entries = fs::read_dir(dir).map_err(|e| StorageError::io(action(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(action(), e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.ends_with(TEMP_SUFFIX) {
            listing.temp_files.push(name);
            continue;
        }
        let Some((timeline, number)) = size.parse_file_name(&name) else {
            continue;
        };
        let layout = |reason: String| StorageError::SegmentLayout {
            dir: dir.to_path_buf(),
            reason,
        };
        if timeline != WAL_TIMELINE_ID {
            return Err(layout(format!(
                "{name} is not of timeline {WAL_TIMELINE_ID}"
            )));
        }
        let partial = name.ends_with(PARTIAL_SUFFIX);
        if listing.segments.insert(number, partial).is_some() {
            return Err(layout(format!(
                "segment {name} exists under both of its names"
            )));
        }
    }
    Ok(listing)
}

/// Create segment `segment_number` as a zero-filled `.partial` file, durably, and
/// return it open for writing.
pub fn preallocate(
    dir: &Path,
    size: WalSegmentSize,
    segment_number: u64,
) -> Result<File, StorageError> {
    let failpoints = StepFailpoints {
        before_rename: Some(failpoint::SEGMENT_PREALLOCATE_BEFORE_RENAME),
        after_rename: None,
    };
    preallocate_with(dir, size, segment_number, failpoints)
}

/// [`preallocate`] the first segment of a timeline being created: its failpoint is
/// not armed, because creation has its own and an interrupted creation is discarded.
pub fn preallocate_initial(
    dir: &Path,
    size: WalSegmentSize,
    segment_number: u64,
) -> Result<File, StorageError> {
    preallocate_with(dir, size, segment_number, StepFailpoints::default())
}

fn preallocate_with(
    dir: &Path,
    size: WalSegmentSize,
    segment_number: u64,
    failpoints: StepFailpoints,
) -> Result<File, StorageError> {
    let name = segment_file_name(size, segment_number, true);
    durable::create_zeroed_file(dir, &name, size.bytes(), failpoints)
        .map_err(|e| StorageError::io(format!("pre-allocate {}", dir.join(&name).display()), e))
}

/// Open an existing segment file for reading and writing.
pub fn open(dir: &Path, name: &str) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(name))
        .map_err(|e| StorageError::io(format!("open {}", dir.join(name).display()), e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_and_listing() {
        let size = WalSegmentSize::new(1 << 20).unwrap();
        assert_eq!(
            segment_file_name(size, 0x1001, false),
            "000000010000000100000001"
        );
        assert_eq!(
            segment_file_name(size, 3, true),
            "000000010000000000000003.partial"
        );
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "000000010000000000000002",
            "000000010000000000000003.partial",
            "000000010000000000000004.partial.tmp",
            "safekeeper.control",
        ] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        let listing = list(dir.path(), size).unwrap();
        assert_eq!(
            listing.segments.into_iter().collect::<Vec<_>>(),
            [(2, false), (3, true)]
        );
        assert_eq!(listing.temp_files, ["000000010000000000000004.partial.tmp"]);
        fs::write(dir.path().join("000000010000000000000002.partial"), b"").unwrap();
        assert!(matches!(
            list(dir.path(), size),
            Err(StorageError::SegmentLayout { .. })
        ));
    }

    #[test]
    fn preallocated_segment_is_full_size_and_partial() {
        let size = WalSegmentSize::new(1 << 20).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = preallocate(dir.path(), size, 9).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 1 << 20);
        let listing = list(dir.path(), size).unwrap();
        assert_eq!(
            listing.name(size, 9).unwrap(),
            "000000010000000000000009.partial"
        );
        assert!(listing.temp_files.is_empty());
    }
}
