//! The basebackup tar: a data directory stock PostgreSQL 15 starts from, as of X.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Write};

use bytes::Bytes;
use page_model::key::{Key, SlruKind};
use page_model::read::{self, VersionSource, DEFAULT_TABLESPACE, GLOBAL_TABLESPACE};
use postgres_wal::checksum::set_page_checksum;
use postgres_wal::controlfile::ControlFileData;
use postgres_wal::reltag::{ForkNumber, Oid, RelFileNode, RelTag};
use postgres_wal::{Lsn, BLCKSZ};

use crate::control;
use crate::tar::TarWriter;
use crate::wal::{self, WalIdentity};
use crate::BasebackupError;

/// Blocks per relation segment file (`RELSEG_SIZE`, 1 GiB of 8 KiB blocks).
pub const RELSEG_SIZE: u32 = 131_072;

/// The writer is buffered in pieces of this size, so a caller that forwards every
/// write as a network message sends chunks of this size.
pub const STREAM_CHUNK: usize = 256 * 1024;

/// Every directory `initdb` creates (PostgreSQL 15's list), in creation order.
pub const DATADIR_DIRS: &[&str] = &[
    "global",
    "pg_wal",
    "pg_wal/archive_status",
    "pg_commit_ts",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
    "pg_twophase",
    "pg_multixact",
    "pg_multixact/members",
    "pg_multixact/offsets",
    "base",
    "pg_replslot",
    "pg_tblspc",
    "pg_stat",
    "pg_stat_tmp",
    "pg_xact",
    "pg_logical",
    "pg_logical/snapshots",
    "pg_logical/mappings",
];

/// `PG_VERSION` of the cluster and of each database directory.
pub const PG_VERSION_FILE: &[u8] = b"15\n";

const POSTGRESQL_CONF: &str =
    "# Written by Strata's basebackup. compute_ctl appends the settings the compute runs with.\n";
const POSTGRESQL_AUTO_CONF: &str =
    "# Settings made with ALTER SYSTEM; PostgreSQL rewrites this file.\n";
/// Trust for local socket and loopback connections, replication included: what
/// `initdb -A trust` allows.
const PG_HBA_CONF: &str = "\
# Written by Strata's basebackup: trust on the local socket and loopback.
# TYPE  DATABASE     USER  ADDRESS        METHOD
local   all          all                  trust
host    all          all   127.0.0.1/32   trust
host    all          all   ::1/128        trust
local   replication  all                  trust
host    replication  all   127.0.0.1/32   trust
host    replication  all   ::1/128        trust
";
const PG_IDENT_CONF: &str = "# No user name maps (written by Strata's basebackup).\n";
/// Makes a standby-mode basebackup start as a streaming standby.
const STANDBY_SIGNAL: &str = "standby.signal";

/// What [`write_basebackup`](crate::write_basebackup) produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasebackupInfo {
    /// The LSN asked for.
    pub requested_lsn: Lsn,
    /// X: the end of the last record at or before `requested_lsn`; the state shipped
    /// is the state after every record ending at or before it.
    pub lsn: Lsn,
    pub standby: bool,
    /// The start of that last record (`xl_prev` of the primary's checkpoint record).
    pub prev_record_lsn: Lsn,
    /// What `pg_control`'s `checkPoint` points at: the shutdown checkpoint record at X
    /// (primary), or the last real checkpoint record at or before X (standby).
    pub checkpoint_lsn: Lsn,
    /// Primary: the end of the shutdown checkpoint record, where the compute writes
    /// its first record. Standby: none.
    pub compute_start_lsn: Option<Lsn>,
    pub system_id: u64,
    /// Bytes of tar written.
    pub bytes: u64,
}

/// Writes the basebackup; see the crate documentation.
pub fn write_basebackup(
    src: &dyn VersionSource,
    lsn: Lsn,
    standby: bool,
    out: impl Write,
) -> Result<BasebackupInfo, BasebackupError> {
    let span = tracing::info_span!("basebackup", requested_lsn = %lsn, standby);
    let _guard = span.enter();

    let (prev, x) = read::last_record(src, lsn)?.ok_or(BasebackupError::NoRecord(lsn))?;
    let missing = |what: &str| BasebackupError::Missing {
        what: what.to_string(),
        lsn: x,
    };
    let control_bytes = read::control_file(src, x)?.ok_or_else(|| missing("pg_control"))?;
    let base = ControlFileData::decode(&control_bytes)?;
    let tracked = read::checkpoint(src, x)?.ok_or_else(|| missing("checkpoint state"))?;
    let segment_size = base
        .wal_segment_size()
        .map_err(|e| BasebackupError::Unsupported(format!("pg_control: {e}")))?;
    let checksums = base.data_checksum_version != 0;

    let (control_file, checkpoint_wal, checkpoint_lsn) = if standby {
        let (cp_lsn, cp) =
            read::last_checkpoint_record(src, x)?.ok_or_else(|| missing("checkpoint record"))?;
        (
            control::standby_control_file(&base, cp_lsn, &cp, x),
            None,
            cp_lsn,
        )
    } else {
        let id = WalIdentity {
            system_id: base.system_identifier,
            timeline: tracked.this_timeline_id,
            segment_size,
        };
        let mut cp = tracked;
        let wal = wal::shutdown_checkpoint_wal(id, x, prev, |at| {
            cp = control::shutdown_checkpoint(&tracked, at);
            cp
        })?;
        let file = control::primary_control_file(&base, wal.record_lsn, &cp);
        let record_lsn = wal.record_lsn;
        (file, Some(wal), record_lsn)
    };
    tracing::info!(%x, %prev, %checkpoint_lsn, "writing basebackup");

    let mtime = u64::try_from(tracked.time).unwrap_or(0);
    let mut tar = TarWriter::new(BufWriter::with_capacity(STREAM_CHUNK, out), mtime);

    let mut dbs: BTreeSet<(Oid, Oid)> = read::db_dir(src, x)?;
    dbs.insert((GLOBAL_TABLESPACE, 0));
    for &(spc, db) in &dbs {
        if spc != DEFAULT_TABLESPACE && !(spc == GLOBAL_TABLESPACE && db == 0) {
            return Err(BasebackupError::Unsupported(format!(
                "database {db} in tablespace {spc}: only the default and global tablespaces are supported"
            )));
        }
    }

    for dir in DATADIR_DIRS {
        tar.dir(dir)?;
    }
    for &(spc, db) in &dbs {
        if spc == DEFAULT_TABLESPACE {
            tar.dir(&format!("base/{db}"))?;
        }
    }
    tar.file("PG_VERSION", PG_VERSION_FILE)?;
    tar.file("postgresql.conf", POSTGRESQL_CONF.as_bytes())?;
    tar.file("postgresql.auto.conf", POSTGRESQL_AUTO_CONF.as_bytes())?;
    tar.file("pg_hba.conf", PG_HBA_CONF.as_bytes())?;
    tar.file("pg_ident.conf", PG_IDENT_CONF.as_bytes())?;
    tar.file("global/pg_control", &control_file)?;
    if standby {
        tar.file(STANDBY_SIGNAL, b"")?;
    }

    let mut page = Box::new([0u8; BLCKSZ]);
    for &(spc, db) in &dbs {
        let dir = db_path(spc, db);
        if spc == DEFAULT_TABLESPACE {
            tar.file(&format!("{dir}/PG_VERSION"), PG_VERSION_FILE)?;
        }
        if let Some(map) = read::relmap(src, spc, db, x)? {
            tar.file(&format!("{dir}/pg_filenode.map"), &map)?;
        }
        let mut forks: BTreeMap<Oid, BTreeSet<ForkNumber>> = BTreeMap::new();
        for (rel_node, fork) in read::rel_dir(src, spc, db, x)? {
            forks.entry(rel_node).or_default().insert(fork);
        }
        for (rel_node, mut forks) in forks {
            let node = RelFileNode {
                spc_node: spc,
                db_node: db,
                rel_node,
            };
            let unlogged = forks.contains(&ForkNumber::Init);
            if unlogged {
                forks.insert(ForkNumber::Main);
            }
            for fork in forks {
                // The FSM is never WAL-logged: whatever we hold is stale, and
                // PostgreSQL rebuilds a missing one. An unlogged relation's other forks
                // are what PostgreSQL resets it to: main from init, nothing else.
                let from = match fork {
                    ForkNumber::Fsm => continue,
                    ForkNumber::VisibilityMap if unlogged => continue,
                    ForkNumber::Main if unlogged => ForkNumber::Init,
                    f => f,
                };
                let source = RelTag { node, fork: from };
                let size = read::rel_size(src, source, x)?.ok_or_else(|| {
                    missing(&format!("size of relation {node} fork {}", from.name()))
                })?;
                let path = format!("{dir}/{rel_node}{}", fork_suffix(fork));
                write_relation(&mut tar, src, source, size, &path, x, checksums, &mut page)?;
            }
        }
    }

    for kind in [
        SlruKind::Clog,
        SlruKind::MultiXactMembers,
        SlruKind::MultiXactOffsets,
    ] {
        for segno in read::slru_dir(src, kind, x)? {
            let nblocks = read::slru_seg_size(src, kind, segno, x)?
                .ok_or_else(|| missing(&format!("size of {} segment {segno:04X}", kind.dir())))?;
            let path = format!("{}/{segno:04X}", kind.dir());
            tar.file_with(&path, u64::from(nblocks) * BLCKSZ as u64, |w| {
                for blkno in 0..nblocks {
                    w.write_data(&read::slru_page(src, kind, segno, blkno, x)?)?;
                }
                Ok::<_, BasebackupError>(())
            })??;
        }
    }

    for xid in read::twophase_dir(src, x)? {
        let state = read::twophase_file(src, xid, x)?
            .ok_or_else(|| missing(&format!("two-phase state of xid {xid}")))?;
        let crc = crc32c::crc32c(&state);
        let path = format!("pg_twophase/{xid:08X}");
        tar.file_with(&path, state.len() as u64 + 4, |w| {
            w.write_data(&state)?;
            w.write_data(&crc.to_le_bytes())
        })??;
    }

    if let Some(wal) = &checkpoint_wal {
        for seg in &wal.segments {
            let path = format!("pg_wal/{}", seg.file_name);
            tar.file_with(&path, seg.len(), |w| seg.write_to(w))??;
        }
    }

    let bytes = tar.finish()?;
    let info = BasebackupInfo {
        requested_lsn: lsn,
        lsn: x,
        standby,
        prev_record_lsn: prev,
        checkpoint_lsn,
        compute_start_lsn: checkpoint_wal.map(|w| w.end_lsn),
        system_id: base.system_identifier,
        bytes,
    };
    tracing::info!(bytes, "basebackup written");
    Ok(info)
}

/// The directory holding a database's files (only the two built-in tablespaces).
fn db_path(spc: Oid, db: Oid) -> String {
    if spc == GLOBAL_TABLESPACE {
        "global".to_string()
    } else {
        format!("base/{db}")
    }
}

/// The suffix of a fork's file name (`forkNames`).
pub fn fork_suffix(fork: ForkNumber) -> &'static str {
    match fork {
        ForkNumber::Main => "",
        ForkNumber::Fsm => "_fsm",
        ForkNumber::VisibilityMap => "_vm",
        ForkNumber::Init => "_init",
    }
}

/// One relation fork as its segment files (an empty first segment for an empty fork,
/// which PostgreSQL expects to exist), pages read one at a time.
#[allow(clippy::too_many_arguments)]
fn write_relation<W: Write>(
    tar: &mut TarWriter<W>,
    src: &dyn VersionSource,
    rel: RelTag,
    size: read::RelSize,
    path: &str,
    x: Lsn,
    checksums: bool,
    page: &mut [u8; BLCKSZ],
) -> Result<(), BasebackupError> {
    let segments = size.nblocks.div_ceil(RELSEG_SIZE).max(1);
    for segno in 0..segments {
        let first = segno * RELSEG_SIZE;
        let count = (size.nblocks - first).min(RELSEG_SIZE);
        let name = if segno == 0 {
            path.to_string()
        } else {
            format!("{path}.{segno}")
        };
        tar.file_with(&name, u64::from(count) * BLCKSZ as u64, |w| {
            for blkno in first..first + count {
                let key = Key::rel_block(rel, blkno);
                // Versions older than the fork's creation belong to an earlier
                // incarnation of the relfilenode; a never-written block is zeros.
                match read::value_at(src, &key, size.created_lsn, x)? {
                    Some(bytes) => copy_page(page, &bytes, &key, x)?,
                    None => page.fill(0),
                }
                if checksums {
                    set_page_checksum(page, blkno);
                }
                w.write_data(&page[..])?;
            }
            Ok::<_, BasebackupError>(())
        })??;
    }
    Ok(())
}

fn copy_page(
    page: &mut [u8; BLCKSZ],
    bytes: &Bytes,
    key: &Key,
    x: Lsn,
) -> Result<(), BasebackupError> {
    if bytes.len() != BLCKSZ {
        return Err(read::ReadError::Corrupt(format!(
            "{key:?} at {x} is {} bytes, not a page",
            bytes.len()
        ))
        .into());
    }
    page.copy_from_slice(bytes);
    Ok(())
}
