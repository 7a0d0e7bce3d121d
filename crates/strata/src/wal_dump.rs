//! `strata wal dump`: decode WAL segment files and print one line per record.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use postgres_wal::decoder::{WalDecodeError, WalStreamDecoder};
use postgres_wal::page_header::WalPageHeader;
use postgres_wal::record::DecodedRecord;
use postgres_wal::rmgr::record_type_display;
use postgres_wal::{Lsn, WalSegmentSize};

use crate::WalDumpArgs;

/// A segment file and the segment number it holds.
#[derive(Debug)]
struct SegmentFile {
    path: PathBuf,
    segment: u64,
}

pub fn run(args: &WalDumpArgs) -> anyhow::Result<()> {
    let paths = expand_paths(&args.paths)?;
    let segment_size = segment_size_of(&paths[0])?;
    let files = order_segments(paths, segment_size)?;
    let first_lsn = segment_start(files[0].segment, segment_size)?;
    let last = &files[files.len() - 1];
    let files_end = segment_start(last.segment + 1, segment_size)?;
    let start = match args.start {
        Some(lsn) if lsn < first_lsn || lsn >= files_end => {
            bail!("LSN {lsn} is not in the given files: they hold {first_lsn} to {files_end}")
        }
        Some(lsn) => lsn,
        None => first_lsn,
    };
    let out = io::stdout().lock();
    let mut printer = Printer {
        out: BufWriter::with_capacity(1 << 16, out),
        json: args.json,
    };
    let mut decoder = WalStreamDecoder::new(start.page_start(), segment_size);
    let file_of = |lsn: Lsn| {
        let n = lsn.segment_number(segment_size);
        files
            .iter()
            .find(|f| f.segment == n)
            .unwrap_or(last)
            .path
            .display()
            .to_string()
    };
    let first_file = files
        .iter()
        .position(|f| f.segment == start.segment_number(segment_size))
        .unwrap_or(0);
    for file in &files[first_file..] {
        let bytes =
            fs::read(&file.path).with_context(|| format!("read {}", file.path.display()))?;
        check_file_size(&file.path, bytes.len(), segment_size)?;
        let from = if file.segment == start.segment_number(segment_size) {
            start.page_start().segment_offset(segment_size) as usize
        } else {
            0
        };
        decoder.feed(&bytes[from..]);
        loop {
            match decoder.poll() {
                Ok(Some(record)) if args.end.is_some_and(|end| record.lsn >= end) => {
                    return printer.finish()
                }
                Ok(Some(record)) if record.lsn < start => {}
                Ok(Some(record)) => printer.record(&record)?,
                Ok(None) => break,
                Err(WalDecodeError::EndOfWal { lsn, reason }) => {
                    printer.finish()?;
                    eprintln!(
                        "strata: end of valid WAL at {lsn} in {}: {reason}",
                        file_of(lsn)
                    );
                    return Ok(());
                }
                Err(error) => {
                    printer.finish()?;
                    bail!("{}: {error}", file_of(error.lsn()));
                }
            }
        }
    }
    printer.finish()?;
    if !decoder.at_record_boundary() {
        bail!(
            "{}: WAL ends inside the record after {} (the next segment file is missing)",
            last.path.display(),
            decoder.valid_end()
        );
    }
    Ok(())
}

/// Files named on the command line, with directories replaced by the segment files in them.
fn expand_paths(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        let meta = fs::metadata(path).with_context(|| format!("{}", path.display()))?;
        if !meta.is_dir() {
            out.push(path.clone());
            continue;
        }
        let mut found = Vec::new();
        for entry in fs::read_dir(path).with_context(|| format!("list {}", path.display()))? {
            let entry = entry.with_context(|| format!("list {}", path.display()))?;
            let name = entry.file_name();
            if WalSegmentSize::DEFAULT
                .parse_file_name(&name.to_string_lossy())
                .is_some()
                && entry.file_type().is_ok_and(|t| t.is_file())
            {
                found.push(entry.path());
            }
        }
        if found.is_empty() {
            bail!("{}: no WAL segment files in this directory", path.display());
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// The header of a file's first page, which names its segment and segment size.
fn first_page_header(path: &Path) -> anyhow::Result<WalPageHeader> {
    let mut header = [0u8; 40];
    let mut file = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    std::io::Read::read_exact(&mut file, &mut header)
        .with_context(|| format!("{}: too short for a WAL page header", path.display()))?;
    WalPageHeader::parse(&header).with_context(|| path.display().to_string())
}

/// The segment size the first file's long page header declares.
fn segment_size_of(path: &Path) -> anyhow::Result<WalSegmentSize> {
    let header = first_page_header(path)?;
    let long = header.long.with_context(|| {
        format!(
            "{}: first page has no long header: not a WAL segment",
            path.display()
        )
    })?;
    WalSegmentSize::new(u64::from(long.segment_size))
        .with_context(|| format!("{}: page {}", path.display(), header.page_address))
}

fn check_file_size(path: &Path, len: usize, segment_size: WalSegmentSize) -> anyhow::Result<()> {
    if len as u64 != segment_size.bytes() {
        bail!(
            "{}: file is {len} bytes but its header declares {}-byte segments (truncated file or wrong segment size)",
            path.display(),
            segment_size.bytes()
        );
    }
    Ok(())
}

/// Sort files by segment and require them to be consecutive.
fn order_segments(
    paths: Vec<PathBuf>,
    segment_size: WalSegmentSize,
) -> anyhow::Result<Vec<SegmentFile>> {
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let segment = match segment_size.parse_file_name(&name) {
            Some((_, segment)) => segment,
            None => first_page_header(&path)?
                .page_address
                .segment_number(segment_size),
        };
        files.push(SegmentFile { path, segment });
    }
    files.sort_by_key(|f| f.segment);
    for pair in files.windows(2) {
        if pair[1].segment != pair[0].segment + 1 {
            bail!(
                "{}: does not follow {} (segments must be consecutive)",
                pair[1].path.display(),
                pair[0].path.display()
            );
        }
    }
    Ok(files)
}

fn segment_start(segment: u64, segment_size: WalSegmentSize) -> anyhow::Result<Lsn> {
    segment_size
        .segment_start(segment)
        .context("segment number out of range")
}

struct Printer<W: Write> {
    out: W,
    json: bool,
}

impl<W: Write> Printer<W> {
    fn record(&mut self, record: &DecodedRecord) -> anyhow::Result<()> {
        if self.json {
            self.json_line(record)
        } else {
            self.text_line(record)
        }
        .context("write to stdout")
    }

    /// The JSON of the `strata wal dump --json` contract. Every string printed comes
    /// from fixed tables of ASCII names without quotes or backslashes, so no escaping
    /// is needed; a test parses the output to hold this true.
    fn json_line(&mut self, record: &DecodedRecord) -> io::Result<()> {
        let header = &record.header;
        write!(
            self.out,
            r#"{{"lsn":"{}","end_lsn":"{}","prev_lsn":"{}","rmgr":"{}","info":"{}","xid":{},"total_len":{},"blocks":["#,
            record.lsn,
            record.end_lsn,
            header.prev,
            header.rmid.display_name(),
            record_type_display(header.rmid, header.info),
            header.xid,
            header.total_len,
        )?;
        for (i, block) in record.blocks.iter().enumerate() {
            write!(
                self.out,
                r#"{}{{"block_id":{},"spc":{},"db":{},"rel":{},"fork":"{}","blk":{},"has_image":{},"apply_image":{},"will_init":{}}}"#,
                if i == 0 { "" } else { "," },
                block.block_id,
                block.rel.spc_node,
                block.rel.db_node,
                block.rel.rel_node,
                block.fork.name(),
                block.blkno,
                block.image.is_some(),
                block.image.as_ref().is_some_and(|i| i.apply),
                block.will_init,
            )?;
        }
        self.out.write_all(b"]}\n")
    }

    fn text_line(&mut self, record: &DecodedRecord) -> io::Result<()> {
        let header = &record.header;
        write!(
            self.out,
            "rmgr: {:<11} len (rec/tot): {:>6}/{:>6}, tx: {:>10}, lsn: {}, prev {}, desc: {}",
            header.rmid.display_name(),
            record.non_image_len(),
            header.total_len,
            header.xid,
            record.lsn,
            header.prev,
            record_type_display(header.rmid, header.info),
        )?;
        for block in &record.blocks {
            write!(
                self.out,
                ", blkref #{}: rel {} fork {} blk {}",
                block.block_id,
                block.rel,
                block.fork.name(),
                block.blkno
            )?;
            if let Some(image) = &block.image {
                write!(
                    self.out,
                    " (FPW{}; hole: offset: {}, length: {}, method: {})",
                    if image.apply {
                        ""
                    } else {
                        " for WAL verification"
                    },
                    image.hole_offset,
                    image.hole_length,
                    image.compression.name()
                )?;
            }
            if block.will_init {
                self.out.write_all(b" (will init)")?;
            }
        }
        self.out.write_all(b"\n")
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.out.flush().context("write to stdout")
    }
}
