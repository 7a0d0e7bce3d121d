//! The proof: a real cluster, imported from its tar into an in-memory key space,
//! comes back out as a basebackup that stock PostgreSQL 15 starts from with the same
//! contents, clean indexes and valid checksums.
// Helpers outside `#[test]` fns are test code too.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use basebackup::{import_datadir_tar, tar_datadir, write_basebackup, BasebackupInfo, ImportError};
use page_model::key::Key;
use page_model::value::Value;
use pg_harness::{PgBin, PgConfig, PgServer};
use postgres_wal::controlfile::{ControlFileError, DBState};
use postgres_wal::decoder::WalStreamDecoder;
use postgres_wal::Lsn;

use page_model::memory::MemorySource as Mem;

fn run(mut cmd: Command) -> (bool, String) {
    let out = cmd.output().expect("run tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn run_ok(cmd: Command) -> String {
    let (ok, text) = run(cmd);
    assert!(ok, "tool failed: {text}");
    text
}

/// `pg_dumpall` without its per-run random `\restrict` keys.
fn dumpall(server: &PgServer) -> Vec<String> {
    let mut cmd = server.bin().command("pg_dumpall");
    cmd.arg("-d").arg(server.connstr());
    run_ok(cmd)
        .lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .map(str::to_string)
        .collect()
}

fn assert_same_dump(got: &[String], expected: &[String]) {
    let first_diff = got.iter().zip(expected).position(|(a, b)| a != b);
    assert!(
        first_diff.is_none() && got.len() == expected.len(),
        "restored cluster differs: line {first_diff:?}: {:?} vs {:?} ({} vs {} lines)",
        first_diff.map(|i| &got[i]),
        first_diff.map(|i| &expected[i]),
        got.len(),
        expected.len()
    );
}

/// pg_waldump's and pg_controldata's spelling of an LSN.
fn waldump_lsn(lsn: Lsn) -> String {
    format!("{:X}/{:08X}", lsn.0 >> 32, lsn.0 & 0xffff_ffff)
}

fn chown_tree(bin: &PgBin, dir: &Path) {
    bin.chown_to_server_user(dir).unwrap();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            chown_tree(bin, &path);
        } else {
            bin.chown_to_server_user(&path).unwrap();
        }
    }
}

/// Unpacks a basebackup into a fresh directory the server user can read.
fn unpack(bin: &PgBin, tar: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("bb-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let data = dir.path().join("data");
    fs::create_dir(&data).unwrap();
    tar::Archive::new(tar).unpack(&data).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
    chown_tree(bin, &data);
    dir
}

fn controldata(bin: &PgBin, data: &Path) -> String {
    let mut cmd = bin.command("pg_controldata");
    cmd.arg("-D").arg(data);
    run_ok(cmd)
}

fn control_field(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("{name} not in {text}"))
        .trim_start_matches(':')
        .trim()
        .to_string()
}

const WORKLOAD: &str = "
CREATE TABLE t (id int PRIMARY KEY, v text, n numeric);
INSERT INTO t SELECT g, md5(g::text), g * 1.5 FROM generate_series(1, 20000) g;
CREATE INDEX t_v ON t (v);
DELETE FROM t WHERE id % 7 = 0;
VACUUM t;
CREATE UNLOGGED TABLE u (id int PRIMARY KEY, v text);
CREATE SEQUENCE s;
SELECT nextval('s');
CREATE DATABASE second;
";

const SUMMARY: &str = "SELECT count(*), sum(hashtext(v)), sum(n) FROM t";
const SECOND_SUMMARY: &str = "SELECT count(*), sum(hashtext(j::text)) FROM w";

#[test]
fn import_then_basebackup_starts_stock_postgres() {
    let mut original = PgServer::start(PgConfig::new().data_checksums(true)).unwrap();
    original.sql(WORKLOAD).unwrap();
    original
        .sql_db(
            "second",
            "CREATE TABLE w (k text PRIMARY KEY, j jsonb);
             INSERT INTO w SELECT 'k' || g, jsonb_build_object('g', g) FROM generate_series(1, 500) g;",
        )
        .unwrap();
    let expected = dumpall(&original);
    let summary = original.sql(SUMMARY).unwrap();
    let second_summary = original.sql_db("second", SECOND_SUMMARY).unwrap();
    original.stop().unwrap();
    let bin = original.bin().clone();

    let mut datadir_tar = Vec::new();
    tar_datadir(original.data_dir(), &[], &mut datadir_tar).unwrap();
    let import = import_datadir_tar(&datadir_tar[..]).unwrap();
    assert_eq!(import.pg_version, 15);
    assert!(import.data_checksums);

    // The start LSN is where PostgreSQL's own WAL says the checkpoint record ends.
    let seg = import.segment_size;
    let segno = import.checkpoint_lsn.segment_number(seg);
    let wal = fs::read(original.wal_dir().join(seg.file_name(1, segno))).unwrap();
    let mut dec = WalStreamDecoder::new(import.checkpoint_lsn, seg);
    dec.feed(&wal[import.checkpoint_lsn.segment_offset(seg) as usize..]);
    let rec = dec.poll().unwrap().unwrap();
    assert_eq!(rec.end_lsn, import.start_lsn);

    let mut mem = Mem::default();
    for (key, value) in import.entries {
        mem.0.insert((key, import.start_lsn), value);
    }

    // Asking past the last record resolves to its end.
    let mut primary_tar = Vec::new();
    let info: BasebackupInfo = write_basebackup(
        &mem,
        Lsn(import.start_lsn.0 + 0x1000),
        false,
        &mut primary_tar,
    )
    .unwrap();
    assert_eq!(info.lsn, import.start_lsn);
    assert_eq!(info.prev_record_lsn, import.checkpoint_lsn);
    assert_eq!(info.bytes, primary_tar.len() as u64);
    let record_lsn = info.checkpoint_lsn;
    let compute_start = info.compute_start_lsn.unwrap();

    // The stock tools read the shipped WAL and pg_control as PostgreSQL wrote them.
    let unpacked = unpack(&bin, &primary_tar);
    let data = unpacked.path().join("data");
    let mut cmd = bin.command("pg_waldump");
    cmd.arg("-p")
        .arg(data.join("pg_wal"))
        .arg("-s")
        .arg(waldump_lsn(record_lsn))
        .args(["-n", "1"]);
    let dump = run_ok(cmd);
    assert!(dump.contains("desc: CHECKPOINT_SHUTDOWN"), "{dump}");
    assert!(
        dump.contains(&format!("prev {}", waldump_lsn(import.checkpoint_lsn))),
        "{dump}"
    );
    assert!(dump.contains("rmgr: XLOG"), "{dump}");
    let cd = controldata(&bin, &data);
    assert_eq!(control_field(&cd, "Database cluster state"), "shut down");
    assert_eq!(
        control_field(&cd, "Latest checkpoint location"),
        record_lsn.to_string()
    );
    assert_eq!(
        control_field(&cd, "Latest checkpoint's REDO location"),
        record_lsn.to_string()
    );
    assert_eq!(control_field(&cd, "Data page checksum version"), "1");
    assert!(data.join("base/1/1247").exists() && !data.join("base/1/1247_fsm").exists());

    // The same basebackup again is byte for byte the same.
    let mut again = Vec::new();
    write_basebackup(&mem, import.start_lsn, false, &mut again).unwrap();
    assert!(again == primary_tar, "basebackup is not deterministic");

    let mut restored = PgServer::start_from(PgConfig::new(), |dir| {
        tar::Archive::new(&primary_tar[..]).unpack(dir)?;
        Ok(())
    })
    .unwrap();
    assert_same_dump(&dumpall(&restored), &expected);
    assert!(expected.iter().any(|l| l.starts_with("k500\t")));
    let mut cmd = bin.command("pg_amcheck");
    cmd.args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(restored.port().to_string())
        .args(["--all", "--heapallindexed", "--install-missing"]);
    let out = run_ok(cmd);
    assert!(out.trim().is_empty(), "pg_amcheck: {out}");
    // The compute writes on: its first record follows the shipped checkpoint.
    restored
        .sql("INSERT INTO t VALUES (0, 'zero', 0); INSERT INTO u VALUES (1, 'one');")
        .unwrap();
    assert_eq!(restored.sql("SELECT count(*) FROM u").unwrap(), "1");
    let walsegs = restored.wal_segments().unwrap();
    assert!(!walsegs.is_empty());
    let mut cmd = bin.command("pg_waldump");
    cmd.arg("-p")
        .arg(restored.wal_dir())
        .arg("-s")
        .arg(waldump_lsn(compute_start))
        .args(["-n", "1"]);
    let next = run_ok(cmd);
    assert!(
        next.contains(&format!("prev {}", waldump_lsn(record_lsn))),
        "{next}"
    );
    restored.stop().unwrap();
    let mut cmd = bin.command("pg_checksums");
    cmd.arg("--check").arg("-D").arg(restored.data_dir());
    let out = run_ok(cmd);
    assert!(out.contains("Bad checksums:  0"), "{out}");

    // X at a page boundary, a segment boundary, and X where the record crosses a page
    // or a segment: the timeline's last record is made to end there.
    let seg_bytes = seg.bytes();
    let segno = import.start_lsn.segment_number(seg);
    let page = import.start_lsn.page_start().0;
    let cases = [
        (Lsn(page + 2 * 8192), Lsn(page + 2 * 8192 + 24)),
        (
            Lsn((segno + 1) * seg_bytes),
            Lsn((segno + 1) * seg_bytes + 40),
        ),
        (Lsn(page + 4 * 8192 - 40), Lsn(page + 4 * 8192 - 40)),
        (
            Lsn((segno + 3) * seg_bytes - 16),
            Lsn((segno + 3) * seg_bytes - 16),
        ),
    ];
    for (x, _) in cases {
        mem.0.insert(
            (Key::LastRecord, x),
            Value::Image(page_model::read::encode_last_record(import.checkpoint_lsn)),
        );
    }
    for (x, record_lsn) in cases {
        let mut tar_bytes = Vec::new();
        let info = write_basebackup(&mem, x, false, &mut tar_bytes).unwrap();
        assert_eq!((info.lsn, info.checkpoint_lsn), (x, record_lsn));
        let unpacked = unpack(&bin, &tar_bytes);
        let mut cmd = bin.command("pg_waldump");
        cmd.arg("-p")
            .arg(unpacked.path().join("data/pg_wal"))
            .arg("-s")
            .arg(waldump_lsn(record_lsn))
            .args(["-n", "1"]);
        let dump = run_ok(cmd);
        assert!(dump.contains("desc: CHECKPOINT_SHUTDOWN"), "{x}: {dump}");
        let mut server = PgServer::start_from(PgConfig::new(), |dir| {
            tar::Archive::new(&tar_bytes[..]).unpack(dir)?;
            Ok(())
        })
        .unwrap();
        server.sql("INSERT INTO t VALUES (-1, 'x', 0)").unwrap();
        assert_eq!(server.sql("SELECT count(*) FROM t").unwrap(), "17144");
        let lsn = pg_harness::parse_lsn(&server.current_wal_lsn().unwrap()).unwrap();
        assert!(lsn > info.compute_start_lsn.unwrap().0, "{x}");
        server.stop().unwrap();
    }

    // Standby mode: archive recovery from the real checkpoint, consistent at X.
    let mut standby_tar = Vec::new();
    let info = write_basebackup(&mem, import.start_lsn, true, &mut standby_tar).unwrap();
    assert_eq!(info.checkpoint_lsn, import.checkpoint_lsn);
    assert_eq!(info.compute_start_lsn, None);
    let unpacked = unpack(&bin, &standby_tar);
    let data = unpacked.path().join("data");
    assert!(data.join("standby.signal").exists());
    assert_eq!(fs::read_dir(data.join("pg_wal")).unwrap().count(), 1); // archive_status
    let cd = controldata(&bin, &data);
    assert_eq!(
        control_field(&cd, "Database cluster state"),
        "in archive recovery"
    );
    assert_eq!(
        control_field(&cd, "Minimum recovery ending location"),
        import.start_lsn.to_string()
    );
    assert_eq!(
        control_field(&cd, "Min recovery ending loc's timeline"),
        "1"
    );
    assert_eq!(
        control_field(&cd, "Latest checkpoint location"),
        import.checkpoint_lsn.to_string()
    );
    // Given the WAL holding that checkpoint (what a safekeeper would stream), the
    // standby replays it, is consistent at X and serves the same data read-only.
    let wal_name = seg.file_name(1, import.checkpoint_lsn.segment_number(seg));
    let standby = PgServer::start_from(PgConfig::new(), |dir| {
        tar::Archive::new(&standby_tar[..]).unpack(dir)?;
        fs::copy(
            original.wal_dir().join(&wal_name),
            dir.join("pg_wal").join(&wal_name),
        )?;
        Ok(())
    })
    .unwrap();
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()").unwrap(), "t");
    // (pg_dump skips unlogged tables' data in recovery: compare queries instead.)
    assert_eq!(standby.sql(SUMMARY).unwrap(), summary);
    assert_eq!(
        standby.sql_db("second", SECOND_SUMMARY).unwrap(),
        second_summary
    );
}

/// Rewrites a tar, letting `edit` change or drop each file's bytes, then appends
/// `extra` raw entries (header fields set by hand, so bad paths get through).
fn rewrite(
    tar_bytes: &[u8],
    mut edit: impl FnMut(&str, Vec<u8>) -> Option<Vec<u8>>,
    extra: &[(&[u8], tar::EntryType, &[u8])],
) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    let mut archive = tar::Archive::new(tar_bytes);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = String::from_utf8(entry.path_bytes().to_vec()).unwrap();
        let mut header = entry.header().clone();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        let Some(data) = edit(&path, data) else {
            continue;
        };
        header.set_size(data.len() as u64);
        header.set_cksum();
        out.append(&header, &data[..]).unwrap();
    }
    for (name, kind, data) in extra {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(*kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        out.append(&header, *data).unwrap();
    }
    out.into_inner().unwrap()
}

#[test]
fn import_refuses_bad_input() {
    let mut crashed = PgServer::start(PgConfig::new()).unwrap();
    crashed.sql("CREATE TABLE x (a int)").unwrap();
    crashed.stop_immediate().unwrap();
    let mut good = Vec::new();
    tar_datadir(crashed.data_dir(), &[], &mut good).unwrap();
    assert!(matches!(
        import_datadir_tar(&good[..]),
        Err(ImportError::NotShutDown(DBState::InProduction))
    ));

    // From here on the cluster is cleanly shut down, so only the edits are wrong.
    crashed.restart().unwrap();
    crashed.stop().unwrap();
    good.clear();
    tar_datadir(crashed.data_dir(), &[], &mut good).unwrap();
    import_datadir_tar(&good[..]).unwrap();

    let keep = |_: &str, d: Vec<u8>| Some(d);
    let corrupt = rewrite(
        &good,
        |p, mut d| {
            if p == "global/pg_control" {
                d[100] ^= 1;
            }
            Some(d)
        },
        &[],
    );
    assert!(matches!(
        import_datadir_tar(&corrupt[..]),
        Err(ImportError::Control(ControlFileError::Crc { .. }))
    ));

    for path in [&b"../outside"[..], b"/etc/passwd", b"base/1/../../../x"] {
        let bad = rewrite(&good, keep, &[(path, tar::EntryType::Regular, b"x")]);
        assert!(
            matches!(
                import_datadir_tar(&bad[..]),
                Err(ImportError::BadPath { .. })
            ),
            "{path:?}"
        );
    }
    let bad = rewrite(
        &good,
        keep,
        &[(b"base/1/99999", tar::EntryType::Regular, b"short")],
    );
    assert!(matches!(
        import_datadir_tar(&bad[..]),
        Err(ImportError::BadFile { .. })
    ));
    let bad = rewrite(
        &good,
        keep,
        &[(b"PG_VERSION", tar::EntryType::Regular, b"15\n")],
    );
    assert!(matches!(
        import_datadir_tar(&bad[..]),
        Err(ImportError::BadPath { .. })
    ));
    let bad = rewrite(
        &good,
        keep,
        &[(b"notes.txt", tar::EntryType::Regular, b"hi")],
    );
    assert!(matches!(
        import_datadir_tar(&bad[..]),
        Err(ImportError::UnknownFile(_))
    ));
    let bad = rewrite(
        &good,
        keep,
        &[(b"base/1/99999", tar::EntryType::Symlink, b"")],
    );
    assert!(matches!(
        import_datadir_tar(&bad[..]),
        Err(ImportError::BadPath { .. })
    ));
    let bad = rewrite(
        &good,
        keep,
        &[(b"pg_tblspc/16500", tar::EntryType::Directory, b"")],
    );
    assert!(matches!(
        import_datadir_tar(&bad[..]),
        Err(ImportError::Unsupported(_))
    ));
    let bad = rewrite(&good, |p, d| (p != "global/pg_control").then_some(d), &[]);
    assert!(matches!(
        import_datadir_tar(&bad[..]),
        Err(ImportError::Missing(_))
    ));
    let truncated = &good[..good.len() / 2];
    assert!(import_datadir_tar(truncated).is_err());
    // Cut exactly after an entry: only the missing end-of-archive marker tells.
    let mut archive = tar::Archive::new(&good[..]);
    let last_end = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            e.raw_file_position() + e.size().next_multiple_of(512)
        })
        .max()
        .unwrap();
    assert!(matches!(
        import_datadir_tar(&good[..last_end as usize]),
        Err(ImportError::Truncated)
    ));
}

#[test]
fn prepared_transactions_survive_import_and_basebackup() {
    let config = PgConfig::new().setting("max_prepared_transactions", "5");
    let mut original = PgServer::start(config.clone()).unwrap();
    original
        .sql(
            "CREATE TABLE p (x int);
             BEGIN; INSERT INTO p VALUES (1); PREPARE TRANSACTION 'tx1';",
        )
        .unwrap();
    original.stop().unwrap();
    let mut datadir_tar = Vec::new();
    tar_datadir(original.data_dir(), &[], &mut datadir_tar).unwrap();
    let import = import_datadir_tar(&datadir_tar[..]).unwrap();
    assert!(!import.data_checksums);
    assert!(import
        .entries
        .iter()
        .any(|(k, _)| matches!(k, Key::TwoPhase { .. })));
    let mut mem = Mem::default();
    for (key, value) in import.entries {
        mem.0.insert((key, import.start_lsn), value);
    }
    let mut out = Vec::new();
    write_basebackup(&mem, import.start_lsn, false, &mut out).unwrap();
    let restored = PgServer::start_from(config, |dir| {
        tar::Archive::new(&out[..]).unpack(dir)?;
        Ok(())
    })
    .unwrap();
    assert_eq!(
        restored.sql("SELECT gid FROM pg_prepared_xacts").unwrap(),
        "tx1"
    );
    restored.sql("COMMIT PREPARED 'tx1'").unwrap();
    assert_eq!(restored.sql("SELECT x FROM p").unwrap(), "1");
}

/// Records the name and size of every tar entry written through it, keeping none of
/// the data.
#[derive(Default)]
struct TarIndex {
    header: Vec<u8>,
    skip: u64,
    entries: Vec<(String, u64)>,
}

impl std::io::Write for TarIndex {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.skip > 0 {
                let n = (self.skip.min(rest.len() as u64)) as usize;
                self.skip -= n as u64;
                rest = &rest[n..];
                continue;
            }
            let n = (512 - self.header.len()).min(rest.len());
            self.header.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.header.len() == 512 {
                if self.header.iter().any(|&b| b != 0) {
                    let h = tar::Header::from_byte_slice(&self.header);
                    let size = h.size().unwrap();
                    let name = String::from_utf8(h.path_bytes().to_vec()).unwrap();
                    self.entries.push((name, size));
                    self.skip = size.next_multiple_of(512);
                }
                self.header.clear();
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn relations_past_one_gigabyte_are_split_into_segment_files() {
    let mut original = PgServer::start(PgConfig::new()).unwrap();
    original.stop().unwrap();
    let mut datadir_tar = Vec::new();
    tar_datadir(original.data_dir(), &[], &mut datadir_tar).unwrap();
    let import = import_datadir_tar(&datadir_tar[..]).unwrap();
    let mut mem = Mem::default();
    for (key, value) in import.entries {
        mem.0.insert((key, import.start_lsn), value);
    }
    // A relation of RELSEG_SIZE + 1 never-written blocks, created by a later record.
    let later = Lsn(import.start_lsn.0 + 0x100);
    let rel = postgres_wal::RelTag {
        node: postgres_wal::RelFileNode {
            spc_node: 1663,
            db_node: 5,
            rel_node: 99_999,
        },
        fork: postgres_wal::ForkNumber::Main,
    };
    let mut rels = page_model::read::rel_dir(&mem, 1663, 5, import.start_lsn).unwrap();
    rels.insert((99_999, postgres_wal::ForkNumber::Main));
    let size = page_model::read::RelSize {
        nblocks: basebackup::RELSEG_SIZE + 1,
        created_lsn: later,
    };
    for (key, bytes) in [
        (
            Key::RelDir { spc: 1663, db: 5 },
            page_model::read::encode_rel_dir(&rels),
        ),
        (Key::RelSize(rel), size.encode()),
        (
            Key::LastRecord,
            page_model::read::encode_last_record(import.start_lsn),
        ),
    ] {
        mem.0.insert((key, later), Value::Image(bytes));
    }
    let mut index = TarIndex::default();
    let info = write_basebackup(&mem, later, false, &mut index).unwrap();
    assert_eq!(info.lsn, later);
    let size_of = |name: &str| {
        index
            .entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| *s)
    };
    assert_eq!(size_of("base/5/99999"), Some(1 << 30));
    assert_eq!(size_of("base/5/99999.1"), Some(8192));
    assert_eq!(size_of("base/5/99999.2"), None);
    assert_eq!(size_of("global/pg_control"), Some(8192));
}
