//! Import of a freshly `initdb`'d, cleanly shut down data directory (a tar from
//! [`tar_datadir`](crate::tar_datadir)) into the key space, as of the end of its
//! shutdown checkpoint record.
//!
//! The tar crosses the network, so nothing in it is trusted: every path is checked
//! against the layout of a PostgreSQL 15 data directory, every size against its
//! bounds (whole 8 KiB pages, at most a segment's worth, [`MAX_IMPORT_BYTES`] in all),
//! `pg_control` against its CRC, two-phase files against theirs, and the archive must
//! end with its end-of-archive marker.
//!
//! Imported: `PG_VERSION` (must say 15), `global/pg_control` (state must be
//! `DB_SHUTDOWNED`), relation maps, every relation fork in `global/` and `base/<db>/`
//! (FSM included), the CLOG and multixact SLRUs, `pg_twophase/*`.
//!
//! Skipped deliberately: `pg_wal` (the timeline starts after the checkpoint);
//! configuration and logs (top-level `*.conf`, `*.log`, `strata_*`, `log/`,
//! `postmaster.opts`, `postmaster.pid`: the compute writes its own); `pg_stat`,
//! `pg_stat_tmp`, `pg_subtrans`, `pg_notify`, `pg_serial`, `pg_snapshots`,
//! `pg_dynshmem` (emptied or rebuilt at startup); `pg_logical` and `pg_commit_ts` (no
//! logical replication state or commit timestamps in a fresh cluster); relcache init
//! files, `base/pgsql_tmp` and temporary relations.
//!
//! Refused: tablespaces (`pg_tblspc/*`), replication slots, a base backup's
//! `backup_label`/`tablespace_map`/`backup_manifest`, symlinks and any other entry
//! type but files and directories, and any file not listed above.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::rc::Rc;

use bytes::Bytes;
use page_model::key::{Key, SlruKind};
use page_model::read::{
    self, RelSize, DEFAULT_TABLESPACE, GLOBAL_TABLESPACE, RELMAP_FILE_SIZE, SLRU_PAGES_PER_SEGMENT,
};
use page_model::value::Value;
use postgres_wal::controlfile::{ControlFileData, ControlFileError, DBState, PG_CONTROL_FILE_SIZE};
use postgres_wal::lsn::WAL_PAGE_SIZE;
use postgres_wal::reltag::{ForkNumber, Oid, RelFileNode, RelTag};
use postgres_wal::{Lsn, WalSegmentSize, BLCKSZ};

use crate::basebackup::{fork_suffix, RELSEG_SIZE};
use crate::wal::{self, WalError, CHECKPOINT_RECORD_LEN};

/// Bytes of file data an import accepts in total. A fresh data directory is about
/// 40 MB; everything imported is held in memory until it is stored.
pub const MAX_IMPORT_BYTES: u64 = 1 << 30;
/// Tar entries an import accepts (a fresh data directory has about a thousand).
pub const MAX_ENTRIES: usize = 100_000;
/// Longest path accepted in the tar.
pub const MAX_PATH_LEN: usize = 1024;
/// The major version this crate imports.
pub const PG_MAJOR_VERSION: u32 = 15;
/// Largest two-phase state file accepted (PostgreSQL's own limit is `MaxAllocSize`;
/// a prepared transaction's state is far smaller).
pub const MAX_TWOPHASE_FILE: u64 = 64 << 20;
/// Top-level files of Strata's own in a data directory (`compute_ctl`'s state and
/// settings) start with this; they are never imported.
const STRATA_FILE_PREFIX: &str = "strata_";
/// Tar's block size: the end-of-archive marker is (at least) one zero block.
const TAR_BLOCK: u64 = 512;
/// Largest configuration-like file read whole (`PG_VERSION`).
const MAX_SMALL_FILE: u64 = 64;

/// A data directory turned into keys and values, all at `start_lsn`.
#[derive(Debug, Clone)]
pub struct Import {
    pub system_id: u64,
    /// From `PG_VERSION` (always 15 today).
    pub pg_version: u32,
    pub segment_size: WalSegmentSize,
    /// Whether the cluster has data checksums.
    pub data_checksums: bool,
    /// The shutdown checkpoint record `pg_control` points at.
    pub checkpoint_lsn: Lsn,
    /// The end of that record: where the timeline starts and WAL ingest resumes.
    pub start_lsn: Lsn,
    /// Every key's value at `start_lsn`, sorted by encoded key.
    pub entries: Vec<(Key, Value)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading the tar: {0}")]
    Io(#[from] std::io::Error),
    #[error("tar entry {path:?}: {reason}")]
    BadPath { path: String, reason: String },
    #[error("{0}: not part of a PostgreSQL 15 data directory that can be imported")]
    UnknownFile(String),
    #[error("{path}: {reason}")]
    BadFile { path: String, reason: String },
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("global/pg_control: {0}")]
    Control(#[from] ControlFileError),
    #[error("the cluster was not shut down cleanly (pg_control state: {0}); stop it with pg_ctl stop (fast or smart) first")]
    NotShutDown(DBState),
    #[error("the tar ends without its end-of-archive marker: it was cut short")]
    Truncated,
    #[error("{0} is missing from the tar")]
    Missing(String),
    #[error("the tar is larger than {limit}")]
    TooLarge { limit: String },
    #[error("checkpoint record: {0}")]
    Wal(#[from] WalError),
}

/// What a path in the data directory is.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    /// Deliberately not imported.
    Skip,
    /// `PG_VERSION`; `Some(db)` inside a database directory.
    PgVersion(Option<Oid>),
    Control,
    RelMap {
        spc: Oid,
        db: Oid,
    },
    Relation {
        rel: RelTag,
        segno: u32,
    },
    Slru {
        kind: SlruKind,
        segno: u32,
    },
    TwoPhase {
        xid: u32,
    },
    /// A directory that belongs in a data directory; `Some` for a database's.
    Dir(Option<Oid>),
}

fn bad_path(path: &str, reason: &str) -> ImportError {
    ImportError::BadPath {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

fn bad_file(path: &str, reason: impl Into<String>) -> ImportError {
    ImportError::BadFile {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// A path relative to the data directory, in canonical form: no leading `/`, no `.`
/// or `..` or empty components (a leading `./` is accepted and dropped).
fn normalize(raw: &[u8]) -> Result<String, ImportError> {
    let lossy = String::from_utf8_lossy(raw).into_owned();
    if raw.len() > MAX_PATH_LEN {
        return Err(bad_path(&lossy, "path too long"));
    }
    let text = std::str::from_utf8(raw).map_err(|_| bad_path(&lossy, "not UTF-8"))?;
    let text = text.strip_prefix("./").unwrap_or(text);
    let text = text.strip_suffix('/').unwrap_or(text);
    if text.starts_with('/') {
        return Err(bad_path(text, "absolute path"));
    }
    for part in text.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
            return Err(bad_path(
                text,
                "not a plain relative path inside the data directory",
            ));
        }
    }
    Ok(text.to_string())
}

/// A decimal OID in canonical form (no sign, no leading zeros), not zero.
fn parse_oid(s: &str) -> Option<Oid> {
    let n: Oid = s.parse().ok()?;
    (n != 0 && n.to_string() == s).then_some(n)
}

/// `<relnode>[_fork][.segno]`, as PostgreSQL names relation files.
fn parse_relation_file(name: &str) -> Option<(Oid, ForkNumber, u32)> {
    let (stem, segno) = match name.split_once('.') {
        Some((stem, seg)) => {
            let n: u32 = seg.parse().ok()?;
            (n != 0 && n.to_string() == seg).then_some((stem, n))?
        }
        None => (name, 0),
    };
    let (rel, fork) = match stem.split_once('_') {
        Some((rel, fork)) => (
            rel,
            ForkNumber::from_name(fork).filter(|f| *f != ForkNumber::Main)?,
        ),
        None => (stem, ForkNumber::Main),
    };
    Some((parse_oid(rel)?, fork, segno))
}

/// An SLRU segment name: 4 to 6 upper-case hex digits (`SlruFileName`).
fn parse_slru_segment(name: &str) -> Option<u32> {
    let n = u32::from_str_radix(name, 16).ok()?;
    ((4..=6).contains(&name.len()) && format!("{n:04X}") == name).then_some(n)
}

/// What `path` is; see the module documentation for what is skipped and refused.
fn classify(path: &str, is_dir: bool) -> Result<Item, ImportError> {
    let parts: Vec<&str> = path.split('/').collect();
    let unknown = || ImportError::UnknownFile(path.to_string());
    let item = match parts.as_slice() {
        [top, ..]
            if [
                "pg_wal",
                "pg_stat",
                "pg_stat_tmp",
                "pg_subtrans",
                "pg_notify",
                "pg_serial",
                "pg_snapshots",
                "pg_dynshmem",
                "pg_logical",
                "pg_commit_ts",
                "log",
                "pg_log",
            ]
            .contains(top) =>
        {
            Item::Skip
        }
        [name]
            if !is_dir
                && (name.ends_with(".conf")
                    || name.ends_with(".log")
                    || name.starts_with(STRATA_FILE_PREFIX)
                    || ["postmaster.opts", "postmaster.pid", "current_logfiles"]
                        .contains(name)) =>
        {
            Item::Skip
        }
        [name] if ["backup_label", "tablespace_map", "backup_manifest"].contains(name) => {
            return Err(ImportError::Unsupported(format!(
                "{path}: this is a base backup, not a cleanly shut down data directory"
            )))
        }
        ["pg_tblspc", _, ..] => {
            return Err(ImportError::Unsupported(format!(
                "{path}: tablespaces other than the default and global ones"
            )))
        }
        ["pg_replslot", _, ..] => {
            return Err(ImportError::Unsupported(format!(
                "{path}: replication slots are not imported"
            )))
        }
        [dir] if is_dir && crate::basebackup::DATADIR_DIRS.contains(dir) => Item::Dir(None),
        ["pg_multixact", sub] if is_dir && ["members", "offsets"].contains(sub) => Item::Dir(None),
        ["base", "pgsql_tmp", ..] => Item::Skip,
        ["base", db] if is_dir => Item::Dir(Some(parse_oid(db).ok_or_else(unknown)?)),
        _ if is_dir => return Err(unknown()),
        ["PG_VERSION"] => Item::PgVersion(None),
        ["global", "pg_control"] => Item::Control,
        ["global", "pg_filenode.map"] => Item::RelMap {
            spc: GLOBAL_TABLESPACE,
            db: 0,
        },
        ["global" | "base", .., "pg_internal.init"] => Item::Skip,
        ["global", name] => {
            let (rel_node, fork, segno) = parse_relation_file(name).ok_or_else(unknown)?;
            Item::Relation {
                rel: rel_tag(GLOBAL_TABLESPACE, 0, rel_node, fork),
                segno,
            }
        }
        ["base", db, name] => {
            let db = parse_oid(db).ok_or_else(unknown)?;
            match *name {
                "PG_VERSION" => Item::PgVersion(Some(db)),
                "pg_filenode.map" => Item::RelMap {
                    spc: DEFAULT_TABLESPACE,
                    db,
                },
                // Temporary relations (`t<backend>_<relnode>`) are removed at startup.
                n if n.starts_with('t') => Item::Skip,
                n => {
                    let (rel_node, fork, segno) = parse_relation_file(n).ok_or_else(unknown)?;
                    Item::Relation {
                        rel: rel_tag(DEFAULT_TABLESPACE, db, rel_node, fork),
                        segno,
                    }
                }
            }
        }
        ["pg_xact", seg] => Item::Slru {
            kind: SlruKind::Clog,
            segno: parse_slru_segment(seg).ok_or_else(unknown)?,
        },
        ["pg_multixact", "members", seg] => Item::Slru {
            kind: SlruKind::MultiXactMembers,
            segno: parse_slru_segment(seg).ok_or_else(unknown)?,
        },
        ["pg_multixact", "offsets", seg] => Item::Slru {
            kind: SlruKind::MultiXactOffsets,
            segno: parse_slru_segment(seg).ok_or_else(unknown)?,
        },
        ["pg_twophase", name] => {
            let xid = u32::from_str_radix(name, 16).map_err(|_| unknown())?;
            if name.len() != 8 || format!("{xid:08X}") != *name {
                return Err(unknown());
            }
            Item::TwoPhase { xid }
        }
        _ => return Err(unknown()),
    };
    Ok(item)
}

fn rel_tag(spc: Oid, db: Oid, rel_node: Oid, fork: ForkNumber) -> RelTag {
    RelTag {
        node: RelFileNode {
            spc_node: spc,
            db_node: db,
            rel_node,
        },
        fork,
    }
}

fn read_all(
    entry: &mut impl Read,
    path: &str,
    size: u64,
    limit: u64,
) -> Result<Vec<u8>, ImportError> {
    if size > limit {
        return Err(bad_file(
            path,
            format!("{size} bytes, more than the {limit} allowed"),
        ));
    }
    let mut buf = vec![0u8; size as usize];
    entry.read_exact(&mut buf)?;
    Ok(buf)
}

fn parse_pg_version(path: &str, bytes: &[u8]) -> Result<u32, ImportError> {
    let text = std::str::from_utf8(bytes).map_err(|_| bad_file(path, "not text"))?;
    let version: u32 = text
        .trim_end_matches('\n')
        .parse()
        .map_err(|_| bad_file(path, format!("{text:?} is not a major version")))?;
    if version != PG_MAJOR_VERSION {
        return Err(ImportError::Unsupported(format!(
            "{path} says PostgreSQL {version}; only {PG_MAJOR_VERSION} is supported"
        )));
    }
    Ok(version)
}

/// Reads the tar of a cleanly shut down PostgreSQL 15 data directory; see the module
/// documentation.
pub fn import_datadir_tar(tar: impl Read) -> Result<Import, ImportError> {
    let consumed = Rc::new(Cell::new(0u64));
    let mut archive = tar::Archive::new(Counting {
        inner: tar,
        count: consumed.clone(),
    });
    // Where the last entry's data ends: the end-of-archive block must follow it, or
    // the tar was cut short at an entry boundary (the tar reader takes that for a
    // normal end).
    let mut archive_end: u64 = 0;
    let mut values: BTreeMap<[u8; page_model::key::KEY_LEN], (Key, Bytes)> = BTreeMap::new();
    let mut put = |key: Key, bytes: Bytes| {
        values.insert(key.encode(), (key, bytes));
    };
    let mut total: u64 = 0;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut control: Option<(ControlFileData, Bytes)> = None;
    let mut pg_version: Option<u32> = None;
    let mut dbs: BTreeSet<Oid> = BTreeSet::new();
    let mut db_versions: BTreeSet<Oid> = BTreeSet::new();
    let mut relmaps: BTreeSet<(Oid, Oid)> = BTreeSet::new();
    // Blocks per segment file of every relation fork.
    let mut rel_segments: BTreeMap<RelTag, BTreeMap<u32, u32>> = BTreeMap::new();
    let mut slru_segments: BTreeMap<SlruKind, BTreeMap<u32, u32>> = BTreeMap::new();
    let mut twophase: BTreeSet<u32> = BTreeSet::new();

    for entry in archive.entries()? {
        let mut entry = entry?;
        if seen.len() >= MAX_ENTRIES {
            return Err(ImportError::TooLarge {
                limit: format!("{MAX_ENTRIES} entries"),
            });
        }
        let path = normalize(&entry.path_bytes())?;
        let kind = entry.header().entry_type();
        let is_dir = match kind {
            tar::EntryType::Directory => true,
            tar::EntryType::Regular | tar::EntryType::Continuous => false,
            other => {
                return Err(bad_path(
                    &path,
                    &format!("{other:?} entries are not accepted (only files and directories)"),
                ))
            }
        };
        if !seen.insert(path.clone()) {
            return Err(bad_path(&path, "appears twice"));
        }
        let size = entry.size();
        archive_end = entry.raw_file_position() + size.next_multiple_of(TAR_BLOCK);
        let item = classify(&path, is_dir)?;
        if !matches!(item, Item::Skip | Item::Dir(_)) {
            // Only what is kept counts: skipped files are read past, never held.
            total = total.saturating_add(size);
            if total > MAX_IMPORT_BYTES {
                return Err(ImportError::TooLarge {
                    limit: format!("{MAX_IMPORT_BYTES} bytes of files"),
                });
            }
        }
        match item {
            Item::Skip => tracing::debug!(path, "not imported"),
            Item::Dir(db) => dbs.extend(db),
            Item::PgVersion(db) => {
                let version =
                    parse_pg_version(&path, &read_all(&mut entry, &path, size, MAX_SMALL_FILE)?)?;
                match db {
                    None => pg_version = Some(version),
                    Some(db) => {
                        dbs.insert(db);
                        db_versions.insert(db);
                    }
                }
            }
            Item::Control => {
                let bytes = read_all(&mut entry, &path, size, PG_CONTROL_FILE_SIZE as u64)?;
                if bytes.len() != PG_CONTROL_FILE_SIZE {
                    return Err(bad_file(
                        &path,
                        format!("{} bytes, not {PG_CONTROL_FILE_SIZE}", bytes.len()),
                    ));
                }
                control = Some((ControlFileData::decode(&bytes)?, Bytes::from(bytes)));
            }
            Item::RelMap { spc, db } => {
                let bytes = read_all(&mut entry, &path, size, RELMAP_FILE_SIZE as u64)?;
                if bytes.len() != RELMAP_FILE_SIZE {
                    return Err(bad_file(
                        &path,
                        format!("{} bytes, not {RELMAP_FILE_SIZE}", bytes.len()),
                    ));
                }
                if spc == DEFAULT_TABLESPACE {
                    dbs.insert(db);
                }
                relmaps.insert((spc, db));
                put(Key::RelMap { spc, db }, Bytes::from(bytes));
            }
            Item::Relation { rel, segno } => {
                if rel.node.spc_node == DEFAULT_TABLESPACE {
                    dbs.insert(rel.node.db_node);
                }
                let nblocks = pages_in(&path, size, u64::from(RELSEG_SIZE))?;
                let first = segno
                    .checked_mul(RELSEG_SIZE)
                    .ok_or_else(|| bad_file(&path, "segment number out of range"))?;
                for i in 0..nblocks {
                    let page = read_all(&mut entry, &path, BLCKSZ as u64, BLCKSZ as u64)?;
                    put(Key::rel_block(rel, first + i), Bytes::from(page));
                }
                rel_segments.entry(rel).or_default().insert(segno, nblocks);
            }
            Item::Slru { kind, segno } => {
                let nblocks = pages_in(&path, size, u64::from(SLRU_PAGES_PER_SEGMENT))?;
                for blkno in 0..nblocks {
                    let page = read_all(&mut entry, &path, BLCKSZ as u64, BLCKSZ as u64)?;
                    put(Key::SlruPage { kind, segno, blkno }, Bytes::from(page));
                }
                slru_segments
                    .entry(kind)
                    .or_default()
                    .insert(segno, nblocks);
            }
            Item::TwoPhase { xid } => {
                let bytes = read_all(&mut entry, &path, size, MAX_TWOPHASE_FILE)?;
                let split = bytes
                    .len()
                    .checked_sub(4)
                    .ok_or_else(|| bad_file(&path, "shorter than its CRC"))?;
                let (state, crc) = bytes.split_at(split);
                let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
                if crc32c::crc32c(state) != stored {
                    return Err(bad_file(&path, "CRC mismatch"));
                }
                twophase.insert(xid);
                put(Key::TwoPhase { xid }, Bytes::copy_from_slice(state));
            }
        }
    }

    if consumed.get() < archive_end + TAR_BLOCK {
        return Err(ImportError::Truncated);
    }

    let (cf, control_bytes) =
        control.ok_or_else(|| ImportError::Missing("global/pg_control".into()))?;
    let pg_version = pg_version.ok_or_else(|| ImportError::Missing("PG_VERSION".into()))?;
    if cf.state != DBState::Shutdowned {
        return Err(ImportError::NotShutDown(cf.state));
    }
    if cf.blcksz as usize != BLCKSZ
        || u64::from(cf.xlog_blcksz) != WAL_PAGE_SIZE
        || cf.relseg_size != RELSEG_SIZE
    {
        return Err(ImportError::Unsupported(format!(
            "block size {}, WAL block size {}, segment size {} blocks: only the default build's 8192, 8192, {RELSEG_SIZE} are supported",
            cf.blcksz, cf.xlog_blcksz, cf.relseg_size
        )));
    }
    let segment_size = cf
        .wal_segment_size()
        .map_err(|e| ImportError::Unsupported(format!("pg_control: {e}")))?;
    let checkpoint_lsn = cf.checkpoint;
    let cp = cf.checkpoint_copy;
    if cp.redo != checkpoint_lsn {
        return Err(ImportError::Unsupported(format!(
            "pg_control's checkpoint at {checkpoint_lsn} has redo {}: not a shutdown checkpoint",
            cp.redo
        )));
    }
    let start_lsn = wal::record_end(checkpoint_lsn, CHECKPOINT_RECORD_LEN, segment_size)?;

    for db in &dbs {
        if !db_versions.contains(db) {
            return Err(ImportError::Missing(format!("base/{db}/PG_VERSION")));
        }
        if !relmaps.contains(&(DEFAULT_TABLESPACE, *db)) {
            return Err(ImportError::Missing(format!("base/{db}/pg_filenode.map")));
        }
    }
    if !relmaps.contains(&(GLOBAL_TABLESPACE, 0)) {
        return Err(ImportError::Missing("global/pg_filenode.map".into()));
    }

    let mut rel_dirs: BTreeMap<(Oid, Oid), BTreeSet<(Oid, ForkNumber)>> = BTreeMap::new();
    rel_dirs.insert((GLOBAL_TABLESPACE, 0), BTreeSet::new());
    for db in &dbs {
        rel_dirs.insert((DEFAULT_TABLESPACE, *db), BTreeSet::new());
    }
    for (rel, segments) in &rel_segments {
        let nblocks = relation_size(rel, segments)?;
        put(
            Key::RelSize(*rel),
            RelSize {
                nblocks,
                created_lsn: start_lsn,
            }
            .encode(),
        );
        rel_dirs
            .entry((rel.node.spc_node, rel.node.db_node))
            .or_default()
            .insert((rel.node.rel_node, rel.fork));
    }
    for ((spc, db), rels) in &rel_dirs {
        put(
            Key::RelDir { spc: *spc, db: *db },
            read::encode_rel_dir(rels),
        );
    }
    let db_dir: BTreeSet<(Oid, Oid)> = dbs.iter().map(|db| (DEFAULT_TABLESPACE, *db)).collect();
    put(Key::DbDir, read::encode_db_dir(&db_dir));

    for kind in [
        SlruKind::Clog,
        SlruKind::MultiXactMembers,
        SlruKind::MultiXactOffsets,
    ] {
        let segments = slru_segments.remove(&kind).unwrap_or_default();
        for (&segno, &nblocks) in &segments {
            put(
                Key::SlruSegSize { kind, segno },
                read::encode_slru_seg_size(nblocks),
            );
        }
        let segnos: BTreeSet<u32> = segments.keys().copied().collect();
        put(Key::SlruDir(kind), read::encode_u32_set(&segnos));
    }
    put(Key::TwoPhaseDir, read::encode_u32_set(&twophase));
    put(Key::Checkpoint, Bytes::copy_from_slice(&cp.encode()));
    put(Key::ControlFile, control_bytes);
    put(Key::LastRecord, read::encode_last_record(checkpoint_lsn));
    put(
        Key::LastCheckpointRecord,
        read::encode_last_checkpoint_record(checkpoint_lsn, &cp),
    );

    tracing::info!(
        system_id = cf.system_identifier,
        %checkpoint_lsn,
        %start_lsn,
        keys = values.len(),
        "imported data directory"
    );
    Ok(Import {
        system_id: cf.system_identifier,
        pg_version,
        segment_size,
        data_checksums: cf.data_checksum_version != 0,
        checkpoint_lsn,
        start_lsn,
        entries: values
            .into_values()
            .map(|(key, bytes)| (key, Value::Image(bytes)))
            .collect(),
    })
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Pages in a file of `size` bytes holding at most `max` pages.
fn pages_in(path: &str, size: u64, max: u64) -> Result<u32, ImportError> {
    if size % BLCKSZ as u64 != 0 {
        return Err(bad_file(
            path,
            format!("{size} bytes is not a whole number of 8192-byte pages"),
        ));
    }
    let pages = size / BLCKSZ as u64;
    if pages > max {
        return Err(bad_file(
            path,
            format!("{pages} pages, more than the {max} a segment holds"),
        ));
    }
    Ok(pages as u32)
}

/// A fork's size from its segment files: numbered from 0 without gaps, every one but
/// the last full (as `mdnblocks` requires).
fn relation_size(rel: &RelTag, segments: &BTreeMap<u32, u32>) -> Result<u32, ImportError> {
    let name = || {
        let dir = if rel.node.spc_node == GLOBAL_TABLESPACE {
            "global".to_string()
        } else {
            format!("base/{}", rel.node.db_node)
        };
        format!("{dir}/{}{}", rel.node.rel_node, fork_suffix(rel.fork))
    };
    let last = segments.len() as u32 - 1;
    let mut total: u32 = 0;
    for (i, (&segno, &nblocks)) in segments.iter().enumerate() {
        let i = i as u32;
        if segno != i {
            return Err(bad_file(&name(), format!("segment {i} is missing")));
        }
        if i < last && nblocks != RELSEG_SIZE {
            return Err(bad_file(
                &name(),
                format!("segment {i} is not full but later ones exist"),
            ));
        }
        total = total
            .checked_add(nblocks)
            .filter(|&n| n < u32::MAX)
            .ok_or_else(|| bad_file(&name(), "more blocks than a relation can have"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_classified() {
        let rel = |spc, db, r, fork| Item::Relation {
            rel: rel_tag(spc, db, r, fork),
            segno: 0,
        };
        assert_eq!(
            classify("global/1262", false).unwrap(),
            rel(1664, 0, 1262, ForkNumber::Main)
        );
        assert_eq!(
            classify("base/5/16384_vm", false).unwrap(),
            rel(1663, 5, 16384, ForkNumber::VisibilityMap)
        );
        assert_eq!(
            classify("base/5/16384_init.2", false).unwrap(),
            Item::Relation {
                rel: rel_tag(1663, 5, 16384, ForkNumber::Init),
                segno: 2
            }
        );
        assert_eq!(classify("base/5", true).unwrap(), Item::Dir(Some(5)));
        assert_eq!(
            classify("pg_wal/000000010000000000000001", false).unwrap(),
            Item::Skip
        );
        assert_eq!(classify("base/5/t3_16390", false).unwrap(), Item::Skip);
        assert_eq!(classify("strata_compute.json", false).unwrap(), Item::Skip);
        assert_eq!(
            classify("pg_multixact/offsets/0000", false).unwrap(),
            Item::Slru {
                kind: SlruKind::MultiXactOffsets,
                segno: 0
            }
        );
        assert_eq!(
            classify("pg_twophase/000002E4", false).unwrap(),
            Item::TwoPhase { xid: 740 }
        );
        for bad in [
            "base/5/16384_main",
            "base/5/016384",
            "base/5/16384.0",
            "base/5/x",
            "base/05/1",
            "global/1262_fsm.x",
            "pg_xact/000g",
            "pg_xact/0",
            "pg_twophase/2E4",
            "somefile",
            "global/sub/1",
        ] {
            assert!(
                matches!(classify(bad, false), Err(ImportError::UnknownFile(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            classify("pg_tblspc/16400", false),
            Err(ImportError::Unsupported(_))
        ));
        assert!(matches!(
            classify("backup_label", false),
            Err(ImportError::Unsupported(_))
        ));
        assert!(matches!(
            classify("base/5/sub", true),
            Err(ImportError::UnknownFile(_))
        ));
    }

    #[test]
    fn paths_are_normalized_or_refused() {
        assert_eq!(normalize(b"./base/1/").unwrap(), "base/1");
        for bad in [
            &b"/etc/passwd"[..],
            b"../x",
            b"base/../../x",
            b"base//1",
            b"a/./b",
            b"\xff",
        ] {
            assert!(
                matches!(normalize(bad), Err(ImportError::BadPath { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn relation_sizes_need_contiguous_full_segments() {
        let rel = rel_tag(1663, 5, 16384, ForkNumber::Main);
        let segs = |s: &[(u32, u32)]| s.iter().copied().collect::<BTreeMap<_, _>>();
        assert_eq!(relation_size(&rel, &segs(&[(0, 3)])).unwrap(), 3);
        assert_eq!(
            relation_size(&rel, &segs(&[(0, RELSEG_SIZE), (1, 2)])).unwrap(),
            RELSEG_SIZE + 2
        );
        assert!(relation_size(&rel, &segs(&[(0, 3), (1, 2)])).is_err());
        assert!(relation_size(&rel, &segs(&[(1, 2)])).is_err());
    }
}
