//! Which safekeeper to stream from, as pure functions over the statuses the
//! safekeepers reported (`TimelineStatus`), so that the rules are tested on their own.
//!
//! A safekeeper can serve a stream from `start` when it holds WAL from at or below
//! `start` (`timeline_start_lsn`) and its commit LSN is at or above `start` (it serves
//! only WAL below its commit LSN, and refuses a start above it). Among those, the one
//! with the highest commit LSN is chosen: it has the most WAL for us.

use postgres_wal::Lsn;

/// What one safekeeper reported about the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub commit_lsn: Lsn,
    pub timeline_start_lsn: Lsn,
}

fn can_serve(status: &Status, start: Lsn) -> bool {
    status.timeline_start_lsn <= start && status.commit_lsn >= start
}

/// The safekeeper (index into `statuses`; `None` where it did not answer) to stream
/// from at `start`: the highest commit LSN among those that can serve `start`, the
/// lowest index on a tie. `previous` is the safekeeper the last stream came from (it
/// failed, ended or stalled): it is passed over for another one that has WAL beyond
/// `start`, so that a safekeeper that keeps failing cannot hold ingest back while
/// another could feed it.
pub fn choose(statuses: &[Option<Status>], start: Lsn, previous: Option<usize>) -> Option<usize> {
    let best = |skip: Option<usize>| {
        statuses
            .iter()
            .enumerate()
            .filter(|&(i, _)| Some(i) != skip)
            .filter_map(|(i, s)| s.filter(|s| can_serve(s, start)).map(|s| (i, s)))
            // max_by_key keeps the last maximum: compare reversed indexes so the
            // lowest index wins ties.
            .max_by_key(|&(i, s)| (s.commit_lsn, std::cmp::Reverse(i)))
    };
    let (chosen, _) = best(None)?;
    if Some(chosen) == previous {
        if let Some((other, status)) = best(previous) {
            if status.commit_lsn > start {
                return Some(other);
            }
        }
    }
    Some(chosen)
}

/// Whether to leave `current`, which delivered nothing for the stall timeout while we
/// have received up to `received`: yes when another safekeeper reports WAL beyond it.
/// When none does, the timeline is simply idle (or `current` alone is ahead) and the
/// stream stays.
pub fn should_switch(statuses: &[Option<Status>], current: usize, received: Lsn) -> bool {
    statuses
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != current)
        .any(|(_, s)| s.is_some_and(|s| can_serve(&s, received) && s.commit_lsn > received))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sk(commit: u64) -> Option<Status> {
        Some(Status {
            commit_lsn: Lsn(commit),
            timeline_start_lsn: Lsn(0x100_0000),
        })
    }

    const START: Lsn = Lsn(0x100_0100);

    #[test]
    fn highest_commit_lsn_wins_lowest_index_on_ties() {
        assert_eq!(
            choose(
                &[sk(0x100_0200), sk(0x100_0300), sk(0x100_0250)],
                START,
                None
            ),
            Some(1)
        );
        assert_eq!(
            choose(&[sk(0x100_0300), sk(0x100_0300)], START, None),
            Some(0)
        );
        assert_eq!(choose(&[None, sk(0x100_0100)], START, None), Some(1));
    }

    #[test]
    fn nobody_who_cannot_serve_the_start() {
        // Commit LSN below our start: START_REPLICATION would be refused.
        assert_eq!(choose(&[sk(0x100_00F8), None], START, None), None);
        assert_eq!(choose(&[], START, None), None);
        // WAL removed below our start.
        let trimmed = Some(Status {
            commit_lsn: Lsn(0x900_0000),
            timeline_start_lsn: Lsn(0x200_0000),
        });
        assert_eq!(choose(&[trimmed, sk(0x100_0200)], START, None), Some(1));
        // Exactly at the commit LSN is fine: the stream waits for more.
        assert_eq!(choose(&[sk(START.0)], START, None), Some(0));
    }

    #[test]
    fn previous_is_passed_over_only_for_one_with_new_wal() {
        let statuses = [sk(0x100_0300), sk(0x100_0200), sk(START.0)];
        assert_eq!(choose(&statuses, START, Some(0)), Some(1));
        assert_eq!(choose(&statuses, START, Some(1)), Some(0));
        // The others have nothing beyond our start: go back to the previous one.
        let statuses = [sk(0x100_0300), sk(START.0), None];
        assert_eq!(choose(&statuses, START, Some(0)), Some(0));
        // The previous one alone answers.
        assert_eq!(choose(&[sk(0x100_0300), None], START, Some(0)), Some(0));
    }

    #[test]
    fn switch_on_stall_only_for_more_wal_elsewhere() {
        let received = Lsn(0x100_0200);
        // Idle timeline: everyone is where we are.
        assert!(!should_switch(
            &[sk(0x100_0200), sk(0x100_0200)],
            0,
            received
        ));
        // Only the current one is ahead (its stream is slow, not stalled elsewhere).
        assert!(!should_switch(
            &[sk(0x100_0400), sk(0x100_0200), None],
            0,
            received
        ));
        // Another one has more.
        assert!(should_switch(
            &[sk(0x100_0200), None, sk(0x100_0208)],
            0,
            received
        ));
        // The current one does not answer, another has more.
        assert!(should_switch(&[None, sk(0x100_0300)], 0, received));
        // Another one has more but cannot serve from where we are.
        let trimmed = Some(Status {
            commit_lsn: Lsn(0x900_0000),
            timeline_start_lsn: Lsn(0x200_0000),
        });
        assert!(!should_switch(&[sk(0x100_0200), trimmed], 0, received));
    }
}
