//! `strata_compute.json`: what a data directory remembers about its timeline and its
//! elections, written durably (see [`crate::durable`]).
//!
//! The terms this data directory won are what the lineage check needs: a compute may
//! start from an elected LSN below its own end of WAL only when the donor's last term
//! is one it won itself (its local WAL past that point is then its own stream, written
//! in that term). Term 0 is recorded at bootstrap: it stands for the WAL the compute
//! wrote before the timeline existed, which the timeline's first segment holds.

use std::path::{Path, PathBuf};

use consensus::term_history::Term;
use postgres_wal::Lsn;
use serde::{Deserialize, Serialize};
use strata_ids::TenantTimelineId;

use crate::durable::{write_atomic, DurableWriteError};
use crate::limits::{MAX_STATE_FILE_BYTES, MAX_WON_TERMS};

/// The state file's name inside the data directory.
pub const STATE_FILE: &str = "strata_compute.json";

/// Version of the file's format; a file of another version is refused, not guessed at.
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid compute_ctl state file: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(transparent)]
    Write(#[from] DurableWriteError),
    #[error(
        "data directory {pgdata} belongs to timeline {theirs}, not {ours}: each data \
         directory serves the one timeline it was created for"
    )]
    OtherTimeline {
        pgdata: PathBuf,
        theirs: TenantTimelineId,
        ours: TenantTimelineId,
    },
    #[error("data directory has won {MAX_WON_TERMS} terms, the limit; create a new compute")]
    TooManyTerms,
}

/// The content of the state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeState {
    pub id: TenantTimelineId,
    pub system_id: u64,
    /// Where the timeline's WAL begins: the start of the segment that held the end of
    /// WAL after bootstrap.
    pub timeline_start_lsn: Lsn,
    /// The timeline exists on the safekeepers listed at bootstrap (false while the
    /// bootstrap is still creating it there).
    pub timeline_created: bool,
    /// Terms this data directory won, ascending; 0 for its bootstrap WAL.
    pub won_terms: Vec<Term>,
    /// The term that fenced this data directory's last run, if any (diagnostics).
    pub fenced_by: Option<Term>,
    /// Safekeepers (addresses) named at bootstrap that did not answer then: the
    /// timeline is created there when they answer. No other safekeeper ever gets the
    /// timeline from `compute_ctl`: an empty acceptor joining a timeline that has
    /// committed WAL could form a quorum that lacks it.
    pub pending_safekeepers: Vec<String>,
    /// Set when this data directory was made from a pageserver basebackup: the LSN of
    /// that backup. Its WAL below this LSN is not the timeline's (the backup's WAL
    /// segment holds only the shutdown checkpoint it placed there), so the lineage
    /// check compares bytes only from here, and a quorum still ending exactly here
    /// lets it continue whatever it wrote after.
    pub base_lsn: Option<Lsn>,
}

/// The file as serialised: LSNs in PostgreSQL's `X/Y` form so that an operator can read
/// them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: u32,
    tenant_id: String,
    timeline_id: String,
    system_id: u64,
    timeline_start_lsn: String,
    timeline_created: bool,
    won_terms: Vec<u64>,
    fenced_by: Option<u64>,
    #[serde(default)]
    pending_safekeepers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base_lsn: Option<String>,
}

impl ComputeState {
    pub fn path(pgdata: &Path) -> PathBuf {
        pgdata.join(STATE_FILE)
    }

    /// Read the state of `pgdata`; `None` when there is no state file.
    pub fn load(pgdata: &Path) -> Result<Option<ComputeState>, StateError> {
        let path = ComputeState::path(pgdata);
        let invalid = |reason: String| StateError::Invalid {
            path: path.clone(),
            reason,
        };
        let text = match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path, source }),
            Ok(meta) if meta.len() > MAX_STATE_FILE_BYTES => {
                return Err(invalid(format!(
                    "{} bytes, more than the limit",
                    meta.len()
                )))
            }
            Ok(_) => std::fs::read_to_string(&path).map_err(|source| StateError::Read {
                path: path.clone(),
                source,
            })?,
        };
        let file: StateFile = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if file.format != FORMAT_VERSION {
            return Err(invalid(format!("format version {}", file.format)));
        }
        let id = TenantTimelineId {
            tenant_id: file
                .tenant_id
                .parse()
                .map_err(|e| invalid(format!("{e}")))?,
            timeline_id: file
                .timeline_id
                .parse()
                .map_err(|e| invalid(format!("{e}")))?,
        };
        let timeline_start_lsn = file
            .timeline_start_lsn
            .parse()
            .map_err(|e| invalid(format!("{e}")))?;
        let base_lsn = file
            .base_lsn
            .map(|text| text.parse().map_err(|e| invalid(format!("{e}"))))
            .transpose()?;
        if file.won_terms.len() > MAX_WON_TERMS || !file.won_terms.is_sorted() {
            return Err(invalid(
                "won_terms is not an ascending list within the limit".into(),
            ));
        }
        Ok(Some(ComputeState {
            id,
            system_id: file.system_id,
            timeline_start_lsn,
            timeline_created: file.timeline_created,
            won_terms: file.won_terms.into_iter().map(Term).collect(),
            fenced_by: file.fenced_by.map(Term),
            pending_safekeepers: file.pending_safekeepers,
            base_lsn,
        }))
    }

    /// Write the state durably.
    pub fn save(&self, pgdata: &Path) -> Result<(), StateError> {
        let file = StateFile {
            format: FORMAT_VERSION,
            tenant_id: self.id.tenant_id.to_string(),
            timeline_id: self.id.timeline_id.to_string(),
            system_id: self.system_id,
            timeline_start_lsn: self.timeline_start_lsn.to_string(),
            timeline_created: self.timeline_created,
            won_terms: self.won_terms.iter().map(|t| t.0).collect(),
            fenced_by: self.fenced_by.map(|t| t.0),
            pending_safekeepers: self.pending_safekeepers.clone(),
            base_lsn: self.base_lsn.map(|lsn| lsn.to_string()),
        };
        let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
        text.push('\n');
        write_atomic(&ComputeState::path(pgdata), text.as_bytes())?;
        Ok(())
    }

    /// Refuse a data directory of another timeline.
    pub fn check_timeline(&self, pgdata: &Path, id: TenantTimelineId) -> Result<(), StateError> {
        if self.id != id {
            return Err(StateError::OtherTimeline {
                pgdata: pgdata.to_owned(),
                theirs: self.id,
                ours: id,
            });
        }
        Ok(())
    }

    pub fn won(&self, term: Term) -> bool {
        self.won_terms.binary_search(&term).is_ok()
    }

    /// Record that this data directory won `term` (higher than any it won before).
    pub fn add_won_term(&mut self, term: Term) -> Result<(), StateError> {
        if self.won_terms.len() >= MAX_WON_TERMS {
            return Err(StateError::TooManyTerms);
        }
        if self.won_terms.last().is_none_or(|&last| last < term) {
            self.won_terms.push(term);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_ids::{TenantId, TimelineId};

    fn state() -> ComputeState {
        ComputeState {
            id: TenantTimelineId {
                tenant_id: TenantId(0xabc),
                timeline_id: TimelineId(0xdef),
            },
            system_id: 7_300_000_000_000_000_001,
            timeline_start_lsn: Lsn(0x200_0000),
            timeline_created: true,
            won_terms: vec![Term(0), Term(2)],
            fenced_by: Some(Term(3)),
            pending_safekeepers: vec!["127.0.0.1:7676".to_owned()],
            base_lsn: Some(Lsn(0x300_0028)),
        }
    }

    #[test]
    fn round_trips_and_absence_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ComputeState::load(dir.path()).unwrap(), None);
        let mut s = state();
        s.save(dir.path()).unwrap();
        assert_eq!(ComputeState::load(dir.path()).unwrap(), Some(s.clone()));
        s.add_won_term(Term(4)).unwrap();
        s.save(dir.path()).unwrap();
        let back = ComputeState::load(dir.path()).unwrap().unwrap();
        assert!(back.won(Term(4)) && back.won(Term(0)) && !back.won(Term(3)));
        let text = std::fs::read_to_string(ComputeState::path(dir.path())).unwrap();
        assert!(text.contains("\"0/2000000\""), "{text}");
    }

    #[test]
    fn malformed_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = ComputeState::path(dir.path());
        for text in ["", "{}", "not json", r#"{"format": 2}"#] {
            std::fs::write(&path, text).unwrap();
            assert!(matches!(
                ComputeState::load(dir.path()),
                Err(StateError::Invalid { .. })
            ));
        }
        state().save(dir.path()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("[\n    0,\n    2\n  ]", "[2, 0]")).unwrap();
        assert!(ComputeState::load(dir.path()).is_err());
    }

    #[test]
    fn another_timeline_is_refused() {
        let s = state();
        let mut other = s.id;
        other.timeline_id = TimelineId(1);
        assert!(s.check_timeline(Path::new("/x"), s.id).is_ok());
        assert!(matches!(
            s.check_timeline(Path::new("/x"), other),
            Err(StateError::OtherTimeline { .. })
        ));
    }
}
