//! Named points where a crash test can kill the process or fake a full disk.
//!
//! `STRATA_FAILPOINTS=name1,name2@3,name3=enospc` is read once per process. At a point
//! armed by its bare name the process aborts (`std::process::abort`: no destructors
//! run, no buffers are flushed, like a crash). At a point armed as `name=enospc` the
//! operation fails with an `io::Error` of kind `StorageFull`, as a full disk would.
//! `name@N` acts only at the point's N-th pass in the process (1 is the first). An unarmed
//! point costs a scan of an empty list, so the points stay compiled into release builds:
//! the crash tests exercise the binary that ships.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The environment variable listing the armed failpoints.
pub const ENV: &str = "STRATA_FAILPOINTS";

/// The finished `.partial` segment is fdatasynced; it is not renamed yet.
pub const SEGMENT_SWITCH_BEFORE_RENAME: &str = "segment-switch-before-rename";
/// The finished segment has its final name (directory synced); the next one does not
/// exist yet.
pub const SEGMENT_SWITCH_AFTER_RENAME: &str = "segment-switch-after-rename";
/// The next segment is zero-filled and synced under its temporary name.
pub const SEGMENT_PREALLOCATE_BEFORE_RENAME: &str = "segment-preallocate-before-rename";
/// The truncated tail of the segment holding the truncation point is zeroed and synced.
pub const TRUNCATE_AFTER_ZERO: &str = "truncate-after-zero";
/// That segment is named `.partial`; later segments still exist.
pub const TRUNCATE_BEFORE_REMOVE: &str = "truncate-before-remove";
/// The new control file is written and synced under its temporary name.
pub const CONTROL_FILE_AFTER_TEMP_WRITE: &str = "control-file-after-temp-write";
/// The new control file has replaced the old one; the directory is not synced yet.
pub const CONTROL_FILE_AFTER_RENAME: &str = "control-file-after-rename";
/// The new timeline directory is complete under its temporary name.
pub const CREATE_TIMELINE_BEFORE_RENAME: &str = "create-timeline-before-rename";
/// Before each write of WAL bytes into a segment file.
pub const WAL_WRITE: &str = "wal-write";
/// Before each fdatasync of a segment by `flush`.
pub const WAL_FLUSH: &str = "wal-flush";

/// Every failpoint, for validating `STRATA_FAILPOINTS`.
pub const ALL: &[&str] = &[
    SEGMENT_SWITCH_BEFORE_RENAME,
    SEGMENT_SWITCH_AFTER_RENAME,
    SEGMENT_PREALLOCATE_BEFORE_RENAME,
    TRUNCATE_AFTER_ZERO,
    TRUNCATE_BEFORE_REMOVE,
    CONTROL_FILE_AFTER_TEMP_WRITE,
    CONTROL_FILE_AFTER_RENAME,
    CREATE_TIMELINE_BEFORE_RENAME,
    WAL_WRITE,
    WAL_FLUSH,
];

/// What an armed failpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `std::process::abort()`.
    Abort,
    /// Fail with `io::ErrorKind::StorageFull`.
    Enospc,
}

/// One armed failpoint.
#[derive(Debug)]
pub struct Armed {
    pub name: &'static str,
    pub action: Action,
    /// Act at this pass (1-based).
    pub at_pass: u32,
    passes: AtomicU32,
}

impl Armed {
    /// Count a pass; whether this is the one to act at.
    fn pass(&self) -> bool {
        self.passes
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
            == self.at_pass
    }
}

/// Parse a `STRATA_FAILPOINTS` value. Unknown names, actions and counts are errors so
/// that a misspelled failpoint cannot make a crash test pass without crashing.
pub fn parse(spec: &str) -> Result<Vec<Armed>, String> {
    let mut armed = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (point, action) = match item.split_once('=') {
            None => (item, Action::Abort),
            Some((point, "enospc")) => (point, Action::Enospc),
            Some((_, action)) => return Err(format!("unknown failpoint action {action:?}")),
        };
        let (name, at_pass) = match point.split_once('@') {
            None => (point, 1),
            Some((name, n)) => match n.parse::<u32>() {
                Ok(n) if n > 0 => (name, n),
                _ => return Err(format!("invalid failpoint pass {n:?}")),
            },
        };
        let name = ALL
            .iter()
            .find(|known| **known == name)
            .ok_or_else(|| format!("unknown failpoint {name:?}"))?;
        armed.push(Armed {
            name,
            action,
            at_pass,
            passes: AtomicU32::new(0),
        });
    }
    Ok(armed)
}

fn armed_by_env() -> &'static [Armed] {
    static ARMED: OnceLock<Vec<Armed>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let Ok(spec) = std::env::var(ENV) else {
            return Vec::new();
        };
        match parse(&spec) {
            Ok(armed) => armed,
            Err(error) => {
                // A test asked for a crash it would not get: fail loudly rather than let
                // it pass vacuously.
                eprintln!("{ENV}={spec:?}: {error}");
                std::process::abort();
            }
        }
    })
}

/// What the armed points named `name` do at this pass, counting the pass.
fn pass(armed: &[Armed], name: &str) -> Option<Action> {
    let mut act = None;
    for point in armed.iter().filter(|point| point.name == name) {
        if point.pass() {
            act = act.or(Some(point.action));
        }
    }
    act
}

#[cfg(test)]
thread_local! {
    /// Unit tests arm failpoints per thread (each test runs in its own thread), so
    /// tests running in parallel in one process do not see each other's.
    static ARMED_IN_THREAD: std::cell::RefCell<Vec<Armed>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Arm failpoints for the calling thread only (unit tests).
#[cfg(test)]
pub(crate) fn arm_in_this_thread(spec: &str) -> Result<(), String> {
    let armed = parse(spec)?;
    ARMED_IN_THREAD.with(|cell| *cell.borrow_mut() = armed);
    Ok(())
}

fn action(name: &str) -> Option<Action> {
    #[cfg(test)]
    {
        let local = ARMED_IN_THREAD.with(|cell| pass(&cell.borrow(), name));
        if local.is_some() {
            return local;
        }
    }
    pass(armed_by_env(), name)
}

/// Pass the failpoint `name`: abort or fail here if it is armed.
pub fn check(name: &'static str) -> io::Result<()> {
    match action(name) {
        None => Ok(()),
        Some(Action::Abort) => {
            eprintln!("failpoint {name}: aborting");
            std::process::abort();
        }
        Some(Action::Enospc) => Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!("failpoint {name}: simulated full disk"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(spec: &str) -> Result<Vec<(&'static str, Action, u32)>, String> {
        parse(spec).map(|armed| {
            armed
                .iter()
                .map(|a| (a.name, a.action, a.at_pass))
                .collect()
        })
    }

    #[test]
    fn parses_names_passes_and_actions_and_refuses_unknown_ones() {
        assert_eq!(
            summary(" truncate-after-zero , wal-write@3=enospc,"),
            Ok(vec![
                (TRUNCATE_AFTER_ZERO, Action::Abort, 1),
                (WAL_WRITE, Action::Enospc, 3)
            ])
        );
        assert_eq!(summary(""), Ok(vec![]));
        assert!(parse("truncate-after-zer0").is_err());
        assert!(parse("wal-write=eio").is_err());
        assert!(parse("wal-write@0").is_err());
        assert!(parse("wal-write@x").is_err());
    }

    #[test]
    fn a_point_armed_at_a_pass_acts_only_then() {
        assert_eq!(arm_in_this_thread("wal-write@2=enospc"), Ok(()));
        let results: Vec<bool> = (0..3).map(|_| check(WAL_WRITE).is_ok()).collect();
        assert_eq!(results, [true, false, true]);
    }

    #[test]
    fn enospc_failpoint_returns_storage_full_in_this_thread_only() {
        assert!(check(WAL_FLUSH).is_ok());
        assert_eq!(arm_in_this_thread("wal-flush=enospc"), Ok(()));
        let error = check(WAL_FLUSH).err().map(|e| e.kind());
        assert_eq!(error, Some(io::ErrorKind::StorageFull));
        let other_thread = std::thread::spawn(|| check(WAL_FLUSH).is_ok()).join();
        assert!(matches!(other_thread, Ok(true)));
    }
}
