//! The committed-WAL oracle: every byte any node ever called committed, and the checks
//! that no two nodes disagree about them.

use postgres_wal::Lsn;

use super::log::Log;

/// The committed prefix of the timeline's WAL, as first claimed by any node.
#[derive(Debug)]
pub struct Oracle {
    committed: Log,
}

impl Oracle {
    pub fn new(base: Lsn) -> Oracle {
        Oracle {
            committed: Log::new(base),
        }
    }

    /// The highest commit LSN any node has claimed so far.
    pub fn end(&self) -> Lsn {
        self.committed.end()
    }

    pub fn hash_at(&self, lsn: Lsn) -> Option<u64> {
        self.committed.hash_at(lsn)
    }

    pub fn log(&self) -> &Log {
        &self.committed
    }

    /// A node whose log is `log` says everything below `commit` is committed: it must
    /// agree with what others said, and what it says beyond them becomes the truth.
    pub fn observe(&mut self, who: &str, commit: Lsn, log: &Log) -> Result<(), String> {
        let known = self.end();
        let checked = commit.min(known);
        let ours = self.committed.hash_at(checked).ok_or_else(|| {
            format!("{who} commits {commit}, not a record boundary of the committed WAL")
        })?;
        let theirs = log.hash_at(checked).ok_or_else(|| {
            format!("{who} commits {commit} but holds no record boundary at {checked}")
        })?;
        if ours != theirs {
            return Err(format!(
                "{who}'s WAL up to {checked} differs from the committed WAL (it commits {commit})"
            ));
        }
        if commit > known {
            if log.hash_at(commit).is_none() {
                return Err(format!(
                    "{who} commits {commit}, not a record boundary of its WAL"
                ));
            }
            self.committed.append(log.slice(known, commit));
        }
        Ok(())
    }
}
