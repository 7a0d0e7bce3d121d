//! Basebackup tars from the pageserver, unpacked. (The other way, a fresh data
//! directory archived for `ImportTimeline`, is `basebackup::tar_datadir`, which writes
//! exactly what the pageserver's import accepts.)
//!
//! - [`unpack`]: a basebackup tar streamed from the pageserver, unpacked into a new
//!   directory. The archive comes from the network, so it is checked entry by entry:
//!   only plain files and directories, only relative paths that stay inside the
//!   directory (no `..`, no absolute path, no link), each file at most
//!   [`MAX_TAR_ENTRY_BYTES`]. Directories get mode 0700 and files 0600 (what
//!   PostgreSQL expects), owned by the server user when one is given (we run as root),
//!   and every file and directory is fsynced before [`unpack`] returns: the caller
//!   then renames the directory into place, so a crash never leaves half a data
//!   directory where PostgreSQL would start from it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use crate::limits::MAX_TAR_ENTRY_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("the archive holds {path:?}, which would land outside the directory")]
    Escapes { path: String },
    #[error("the archive holds {path:?} of type {kind}; only files and directories are accepted")]
    EntryType { path: String, kind: String },
    #[error(
        "the archive's {path:?} is {size} bytes, more than the limit of {MAX_TAR_ENTRY_BYTES}"
    )]
    TooLarge { path: String, size: u64 },
    #[error("the archive holds {path:?} twice")]
    Duplicate { path: String },
    #[error("the archive is empty")]
    Empty,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ArchiveError {
    let context = context.into();
    move |source| ArchiveError::Io { context, source }
}

/// The path of a tar entry as a relative path that stays inside the directory, or why
/// not.
fn safe_relative(path: &Path) -> Result<PathBuf, ArchiveError> {
    let escapes = || ArchiveError::Escapes {
        path: path.display().to_string(),
    };
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(escapes())
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(escapes());
    }
    Ok(out)
}

/// Unpacks the tar read from `reader` into `dir`, which must exist and be empty (see the
/// module documentation); `owner` (uid, gid) gets every file and directory. Returns the
/// number of files written.
pub fn unpack(
    reader: impl Read,
    dir: &Path,
    owner: Option<(u32, u32)>,
) -> Result<usize, ArchiveError> {
    let chown = |path: &Path| -> Result<(), ArchiveError> {
        match owner {
            Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(io_err(format!("giving {} to uid {uid}", path.display()))),
            None => Ok(()),
        }
    };
    let mut archive = tar::Archive::new(reader);
    let mut dirs: Vec<PathBuf> = vec![dir.to_owned()];
    let mut files = 0usize;
    let mut seen = std::collections::HashSet::new();
    let entries = archive.entries().map_err(io_err("reading the archive"))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err("reading the archive"))?;
        let raw = entry
            .path()
            .map_err(io_err("reading an archive entry's path"))?
            .into_owned();
        let relative = safe_relative(&raw)?;
        let shown = relative.display().to_string();
        if !seen.insert(relative.clone()) {
            return Err(ArchiveError::Duplicate { path: shown });
        }
        let target = dir.join(&relative);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            create_dirs(dir, &relative, &mut dirs, &chown)?;
            continue;
        }
        if !kind.is_file() {
            return Err(ArchiveError::EntryType {
                path: shown,
                kind: format!("{kind:?}"),
            });
        }
        let size = entry.size();
        if size > MAX_TAR_ENTRY_BYTES {
            return Err(ArchiveError::TooLarge { path: shown, size });
        }
        if let Some(parent) = relative.parent() {
            create_dirs(dir, parent, &mut dirs, &chown)?;
        }
        let context = || format!("writing {}", target.display());
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&target)
            .map_err(io_err(context()))?;
        let copied = io::copy(&mut (&mut entry).take(MAX_TAR_ENTRY_BYTES), &mut file)
            .map_err(io_err(context()))?;
        if copied != size {
            return Err(ArchiveError::Io {
                context: context(),
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "the archive ended early"),
            });
        }
        file.flush().map_err(io_err(context()))?;
        // Durable before the directory is renamed into place (module documentation).
        file.sync_all().map_err(io_err(context()))?;
        chown(&target)?;
        files += 1;
    }
    if files == 0 {
        return Err(ArchiveError::Empty);
    }
    // The directories' entries (the new names) durable too, deepest first.
    for d in dirs.iter().rev() {
        File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(io_err(format!("syncing {}", d.display())))?;
    }
    Ok(files)
}

/// Creates `relative` and its missing ancestors under `root` (mode 0700, owned by the
/// server user), remembering each for the final fsync. Never follows a link: the
/// archive cannot create one, and `root` starts empty.
fn create_dirs(
    root: &Path,
    relative: &Path,
    created: &mut Vec<PathBuf>,
    chown: &dyn Fn(&Path) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    let mut path = root.to_owned();
    for part in relative.components() {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => {
                return Err(ArchiveError::Duplicate {
                    path: path.display().to_string(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io_err(format!("creating {}", path.display())))?;
        chown(&path)?;
        created.push(path.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgdata::state::STATE_FILE;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            // set_path refuses `..`; write the raw name as a hostile archive would.
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn a_data_directory_archived_for_import_unpacks_without_wal_slots_and_lock_files() {
        let src = tempfile::tempdir().unwrap();
        let p = src.path();
        fs::create_dir_all(p.join("base/1")).unwrap();
        fs::create_dir_all(p.join("pg_wal/archive_status")).unwrap();
        fs::create_dir_all(p.join("pg_replslot/strata_proposer")).unwrap();
        fs::write(p.join("pg_replslot/strata_proposer/state"), b"slot").unwrap();
        fs::write(p.join("PG_VERSION"), "15\n").unwrap();
        fs::write(p.join("base/1/1259"), vec![7u8; 8192]).unwrap();
        fs::write(p.join("pg_wal/000000010000000000000001"), b"wal").unwrap();
        fs::write(p.join("postmaster.pid"), b"1").unwrap();
        fs::write(p.join(STATE_FILE), b"{}").unwrap();
        fs::write(p.join("postgres.log"), b"log").unwrap();
        let archive = || {
            let mut tar = Vec::new();
            let skip = [Path::new("postgres.log"), Path::new(STATE_FILE)];
            basebackup::tar_datadir(p, &skip, &mut tar).unwrap();
            tar
        };
        let tar = archive();
        assert_eq!(tar, archive());

        let dst = tempfile::tempdir().unwrap();
        let files = unpack(&tar[..], dst.path(), None).unwrap();
        assert_eq!(files, 2);
        let d = dst.path();
        assert_eq!(fs::read(d.join("base/1/1259")).unwrap(), vec![7u8; 8192]);
        assert!(d.join("pg_wal").is_dir());
        assert!(!d.join("pg_wal/000000010000000000000001").exists());
        assert!(!d.join("pg_wal/archive_status").exists());
        assert!(d.join("pg_replslot").is_dir());
        assert!(!d.join("pg_replslot/strata_proposer").exists());
        for gone in ["postmaster.pid", STATE_FILE, "postgres.log"] {
            assert!(!d.join(gone).exists(), "{gone}");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d.join("base")), 0o700);
        assert_eq!(mode(&d.join("PG_VERSION")), 0o600);
    }

    #[test]
    fn hostile_archives_are_refused() {
        for name in ["../evil", "/etc/evil", "a/../../evil"] {
            let dst = tempfile::tempdir().unwrap();
            let tar = tar_of(&[(name, b"x")]);
            let error = unpack(&tar[..], dst.path(), None).unwrap_err();
            assert!(
                matches!(error, ArchiveError::Escapes { .. }),
                "{name}: {error}"
            );
        }
        let dst = tempfile::tempdir().unwrap();
        let tar = tar_of(&[("a", b"x"), ("a", b"y")]);
        assert!(matches!(
            unpack(&tar[..], dst.path(), None).unwrap_err(),
            ArchiveError::Duplicate { .. }
        ));

        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, "link", "/etc/passwd")
            .unwrap();
        let tar = builder.into_inner().unwrap();
        let dst = tempfile::tempdir().unwrap();
        assert!(matches!(
            unpack(&tar[..], dst.path(), None).unwrap_err(),
            ArchiveError::EntryType { .. }
        ));
        assert!(!dst.path().join("link").exists());

        let dst = tempfile::tempdir().unwrap();
        let truncated = tar_of(&[("f", &[1u8; 4096])]);
        assert!(unpack(&truncated[..1024], dst.path(), None).is_err());
        assert!(matches!(
            unpack(&[0u8; 1024][..], dst.path(), None).unwrap_err(),
            ArchiveError::Empty
        ));
    }
}
