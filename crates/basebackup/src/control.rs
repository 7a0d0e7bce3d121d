//! `global/pg_control` for a basebackup, built from the timeline's imported
//! `pg_control` (cluster identity, settings, nonce) and the checkpoint state at X.

use postgres_wal::controlfile::{CheckPoint, ControlFileData, DBState};
use postgres_wal::Lsn;

/// The `CheckPoint` of a shutdown checkpoint written at `record_lsn`: the tracked
/// counters at X, `redo` at the record itself (nothing to replay), and no running
/// transactions.
pub fn shutdown_checkpoint(tracked: &CheckPoint, record_lsn: Lsn) -> CheckPoint {
    CheckPoint {
        redo: record_lsn,
        oldest_active_xid: 0,
        ..*tracked
    }
}

/// Primary mode: a cleanly shut down cluster whose latest checkpoint is the shutdown
/// checkpoint record at `record_lsn` carrying `cp`.
pub fn primary_control_file(base: &ControlFileData, record_lsn: Lsn, cp: &CheckPoint) -> Vec<u8> {
    ControlFileData {
        state: DBState::Shutdowned,
        time: cp.time,
        checkpoint: record_lsn,
        checkpoint_copy: *cp,
        min_recovery_point: Lsn::INVALID,
        min_recovery_point_tli: 0,
        backup_start_point: Lsn::INVALID,
        backup_end_point: Lsn::INVALID,
        backup_end_required: false,
        ..base.clone()
    }
    .encode()
}

/// Standby mode: archive recovery starting from the real checkpoint record at
/// `checkpoint_lsn`, consistent only once WAL up to `min_recovery_point` (X) is replayed,
/// because the pages shipped are already as of X.
pub fn standby_control_file(
    base: &ControlFileData,
    checkpoint_lsn: Lsn,
    cp: &CheckPoint,
    min_recovery_point: Lsn,
) -> Vec<u8> {
    ControlFileData {
        state: DBState::InArchiveRecovery,
        time: cp.time,
        checkpoint: checkpoint_lsn,
        checkpoint_copy: *cp,
        min_recovery_point,
        min_recovery_point_tli: cp.this_timeline_id,
        backup_start_point: Lsn::INVALID,
        backup_end_point: Lsn::INVALID,
        backup_end_required: false,
        ..base.clone()
    }
    .encode()
}
