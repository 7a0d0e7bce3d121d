//! Streaming tar output: each entry's header, then its bytes as they are produced, so
//! no file (let alone the archive) is ever held whole in memory.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

/// Tar's block size: headers and the padding after file data.
const BLOCK: usize = 512;
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// Writes tar entries to `out` and counts the bytes written.
#[derive(Debug)]
pub struct TarWriter<W: Write> {
    out: W,
    written: u64,
    mtime: u64,
}

impl<W: Write> TarWriter<W> {
    /// `mtime` (seconds since the epoch) is stamped on every entry, so the same input
    /// gives the same archive.
    pub fn new(out: W, mtime: u64) -> TarWriter<W> {
        TarWriter {
            out,
            written: 0,
            mtime,
        }
    }

    fn header(&mut self, path: &str, kind: tar::EntryType, size: u64) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_path(path)?;
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(if kind == tar::EntryType::Directory {
            DIR_MODE
        } else {
            FILE_MODE
        });
        header.set_mtime(self.mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        self.raw(header.as_bytes())
    }

    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    pub fn dir(&mut self, path: &str) -> io::Result<()> {
        self.header(&format!("{path}/"), tar::EntryType::Directory, 0)
    }

    pub fn file(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        self.file_with(path, data.len() as u64, |w| w.write_data(data))?
    }

    /// An entry of exactly `size` bytes, which `body` writes through
    /// [`TarWriter::write_data`]. A wrong count is an error: the archive would be
    /// corrupt from there on.
    pub fn file_with<T, E>(
        &mut self,
        path: &str,
        size: u64,
        body: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> io::Result<Result<T, E>> {
        self.header(path, tar::EntryType::Regular, size)?;
        let start = self.written;
        let result = body(self);
        if result.is_err() {
            return Ok(result);
        }
        let wrote = self.written - start;
        if wrote != size {
            return Err(io::Error::other(format!(
                "tar entry {path}: announced {size} bytes, wrote {wrote}"
            )));
        }
        self.pad(size)?;
        Ok(result)
    }

    pub fn write_data(&mut self, data: &[u8]) -> io::Result<()> {
        self.raw(data)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.raw(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// The two zero blocks that end an archive; flushes and returns the archive's size.
    pub fn finish(mut self) -> io::Result<u64> {
        self.raw(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.written)
    }
}

impl<W: Write> Write for TarWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A server's lock and options files, which describe one run, not the cluster: never
/// archived.
const NOT_ARCHIVED: &[&str] = &["postmaster.pid", "postmaster.opts"];
/// Its contents are never archived: the pageserver starts after the shutdown
/// checkpoint and never needs this WAL.
const WAL_DIR: &str = "pg_wal";
/// Archived empty: a replication slot belongs to one PostgreSQL, not to the timeline,
/// and the import refuses slots.
const SLOT_DIR: &str = "pg_replslot";

/// Archives a stopped data directory for [`import_datadir_tar`](crate::import_datadir_tar):
/// directories and regular files, sorted, without `pg_wal/*`, `pg_replslot/*`, the
/// server's lock and options files, and the paths (relative to `dir`) in `skip` (files
/// the caller keeps in the directory, such as a log). `pg_wal` itself is kept (as a
/// directory even if it is a symlink to elsewhere); any other symlink (a tablespace) or
/// special file is an error.
pub fn tar_datadir(dir: &Path, skip: &[&Path], out: impl Write) -> io::Result<()> {
    let mut tar = TarWriter::new(io::BufWriter::new(out), 0);
    add_dir(&mut tar, dir, "", skip)?;
    tar.finish()?;
    Ok(())
}

fn add_dir<W: Write>(
    tar: &mut TarWriter<W>,
    dir: &Path,
    prefix: &str,
    skip: &[&Path],
) -> io::Result<()> {
    let mut entries = fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_str().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("non-UTF-8 file name {:?} in {}", name, dir.display()),
            )
        })?;
        let rel = format!("{prefix}{name}");
        if NOT_ARCHIVED.contains(&rel.as_str()) || skip.contains(&Path::new(&rel)) {
            continue;
        }
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() || (kind.is_symlink() && rel == WAL_DIR) {
            tar.dir(&rel)?;
            if rel != WAL_DIR && rel != SLOT_DIR {
                add_dir(tar, &path, &format!("{rel}/"), skip)?;
            }
        } else if kind.is_file() {
            let mut file = fs::File::open(&path)?;
            let size = file.metadata()?.len();
            // A file that changes size meanwhile fails the entry's byte count.
            tar.file_with(&rel, size, |w| io::copy(&mut (&mut file).take(size), w))??;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: only directories and regular files can be archived (tablespaces are not supported)",
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}
