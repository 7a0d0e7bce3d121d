//! The lineage check: may this data directory continue the timeline where the
//! election says the new term begins?
//!
//! PostgreSQL, once started, replays and then extends its own WAL. That is only
//! right if its WAL is a prefix of what the quorum holds, ending exactly where the new
//! term starts (`start_lsn`). One exception: WAL past `start_lsn` that this same data
//! directory wrote in a term it won (the donor's last term) and that never reached the
//! quorum is still the same stream; it is streamed again in the new term. Anything
//! else — a data directory behind the timeline (an old copy, or fenced while another
//! compute wrote), or ahead of it with WAL of a term another compute continued — is
//! refused, and PostgreSQL is not started.
//!
//! Equal LSNs do not prove equal bytes (two copies of a data directory could diverge
//! and stop at the same LSN), so the last bytes before `start_lsn` are also compared
//! with the donor's.
//!
//! A data directory made from a pageserver basebackup at `base_lsn` holds the
//! timeline's state at that LSN by construction, and only its own WAL after it (the
//! backup's shutdown checkpoint first). While the quorum still ends exactly at
//! `base_lsn` it may continue whatever it wrote since, whoever won the last term: that
//! WAL is its own and nobody else's went in.

use consensus::term_history::Term;
use postgres_wal::Lsn;

/// Decide from positions and terms; `Err` says why the data directory cannot go on.
pub fn check_positions(
    start_lsn: Lsn,
    end_of_wal: Lsn,
    donor_last_term: Term,
    base_lsn: Option<Lsn>,
    won: impl Fn(Term) -> bool,
) -> Result<(), String> {
    if start_lsn == end_of_wal {
        return Ok(());
    }
    if base_lsn == Some(start_lsn) && start_lsn < end_of_wal {
        return Ok(());
    }
    let ours = won(donor_last_term);
    if ours && start_lsn < end_of_wal {
        return Ok(());
    }
    if start_lsn > end_of_wal {
        return Err(format!(
            "the safekeepers hold the timeline's WAL up to {start_lsn}, but this data \
             directory's WAL ends at {end_of_wal}: it is behind the timeline (another \
             compute wrote since, or it is an old copy)"
        ));
    }
    Err(format!(
        "this data directory's WAL runs to {end_of_wal}, past the timeline's {start_lsn}, \
         and the timeline was last continued in term {donor_last_term}, which this data \
         directory did not win: its WAL past {start_lsn} was never committed and the \
         timeline went on without it"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(start: u64, end: u64, donor_term: u64, won: &[u64]) -> bool {
        check_positions(Lsn(start), Lsn(end), Term(donor_term), None, |t| {
            won.contains(&t.0)
        })
        .is_ok()
    }

    #[test]
    fn a_data_directory_continues_only_its_own_lineage() {
        // Exactly at the quorum's end: whoever wrote the last term.
        assert!(check(100, 100, 7, &[]));
        // Behind the quorum: never, even after a term of its own.
        assert!(!check(200, 100, 7, &[7]));
        // Ahead with its own uncommitted tail: allowed in its own term only.
        assert!(check(100, 150, 7, &[0, 7]));
        assert!(!check(100, 150, 8, &[0, 7]));
        // A new timeline: term 0 is the bootstrap's WAL, started at its segment start.
        assert!(check(0x200_0000, 0x200_00a0, 0, &[0]));
        assert!(!check(0x200_0000, 0x200_00a0, 0, &[]));
    }

    #[test]
    fn a_basebackup_continues_while_the_quorum_ends_at_its_lsn() {
        let base = Some(Lsn(100));
        // Its own checkpoint record (and more) past the backup LSN, last term not its own.
        assert!(check_positions(Lsn(100), Lsn(180), Term(3), base, |_| false).is_ok());
        // The quorum moved on in a term it did not win: refused.
        assert!(check_positions(Lsn(150), Lsn(180), Term(3), base, |_| false).is_err());
        // ... or in its own term: the usual rule.
        assert!(check_positions(Lsn(150), Lsn(180), Term(4), base, |t| t.0 == 4).is_ok());
        // Behind the backup: never.
        assert!(check_positions(Lsn(90), Lsn(80), Term(3), base, |_| true).is_err());
    }

    #[test]
    fn refusals_say_which_way_it_diverged() {
        let behind = check_positions(Lsn(200), Lsn(100), Term(3), None, |_| false).unwrap_err();
        assert!(behind.contains("behind"), "{behind}");
        let ahead = check_positions(Lsn(100), Lsn(200), Term(3), None, |_| false).unwrap_err();
        assert!(ahead.contains("never committed"), "{ahead}");
    }
}
