//! Named points of the upload path where a crash test kills the process.
//!
//! `STRATA_FAILPOINTS=name1,name2@3` (the variable the safekeeper reads too) is read
//! once, at startup ([`init`]): an unknown name or count is a startup error, so a
//! misspelt failpoint cannot make a crash test pass without crashing. At an armed point
//! the process aborts (`std::process::abort`: no destructors, no flush, like a crash);
//! `name@N` acts only at the point's N-th pass (1 is the first). An unarmed point costs
//! a scan of an empty list, so the points stay in release builds: the crash tests
//! exercise the binary that ships.
//!
//! An S3 PUT is atomic: a crash while one is in flight leaves either no object or the
//! whole object, and the pageserver either way never learns the outcome. The two
//! index points are those two outcomes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The environment variable listing the armed failpoints.
pub const ENV: &str = "STRATA_FAILPOINTS";

/// A layer file has been uploaded (the store acknowledged it); the index that would
/// list it has not: the layer object is an orphan until a later index lists it.
pub const AFTER_LAYER_UPLOAD: &str = "after-layer-upload";
/// Every layer an index lists is uploaded; the index PUT is not sent (a crash during a
/// PUT the store did not complete looks the same).
pub const BEFORE_INDEX_UPLOAD: &str = "before-index-upload";
/// The index PUT has completed in the store, but the pageserver dies before acting on
/// the reply: `remote_consistent_lsn` has not moved and nothing local records it (a
/// crash during a PUT the store did complete).
pub const DURING_INDEX_UPLOAD: &str = "during-index-upload";

/// Every failpoint, for validating [`ENV`].
pub const ALL: &[&str] = &[AFTER_LAYER_UPLOAD, BEFORE_INDEX_UPLOAD, DURING_INDEX_UPLOAD];

#[derive(Debug)]
struct Armed {
    name: &'static str,
    /// Act at this pass (1-based).
    at_pass: u32,
    passes: AtomicU32,
}

#[derive(Debug, thiserror::Error)]
#[error("{ENV}={spec:?}: {reason}")]
pub struct FailpointError {
    spec: String,
    reason: String,
}

fn parse(spec: &str) -> Result<Vec<Armed>, String> {
    let mut armed = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, at_pass) = match item.split_once('@') {
            None => (item, 1),
            Some((name, n)) => match n.parse::<u32>() {
                Ok(n) if n > 0 => (name, n),
                _ => return Err(format!("invalid failpoint pass {n:?}")),
            },
        };
        let name = ALL
            .iter()
            .find(|known| **known == name)
            .ok_or_else(|| format!("unknown failpoint {name:?} (known: {})", ALL.join(", ")))?;
        armed.push(Armed {
            name,
            at_pass,
            passes: AtomicU32::new(0),
        });
    }
    Ok(armed)
}

static ARMED: OnceLock<Vec<Armed>> = OnceLock::new();

/// Reads [`ENV`] once; call at startup so that a bad value stops the daemon there.
pub fn init() -> Result<(), FailpointError> {
    let spec = std::env::var(ENV).unwrap_or_default();
    let armed = parse(&spec).map_err(|reason| FailpointError {
        spec: spec.clone(),
        reason,
    })?;
    if !armed.is_empty() {
        tracing::warn!(failpoints = %spec, "failpoints armed: the process will abort at them");
    }
    // A second init (tests running the daemon in one process) keeps the first list.
    let _ = ARMED.set(armed);
    Ok(())
}

/// Pass the failpoint `name`: abort here if it is armed for this pass.
pub fn check(name: &'static str) {
    let Some(armed) = ARMED.get() else {
        return;
    };
    for point in armed.iter().filter(|point| point.name == name) {
        let pass = point
            .passes
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if pass == point.at_pass {
            eprintln!("failpoint {name}: aborting");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_passes_and_refuses_unknown_ones() {
        let armed = parse(" after-layer-upload , during-index-upload@3,").unwrap();
        let summary: Vec<(&str, u32)> = armed.iter().map(|a| (a.name, a.at_pass)).collect();
        assert_eq!(
            summary,
            vec![(AFTER_LAYER_UPLOAD, 1), (DURING_INDEX_UPLOAD, 3)]
        );
        assert!(parse("").unwrap().is_empty());
        assert!(parse("after-layer-uplod").is_err());
        assert!(parse("after-layer-upload@0").is_err());
        assert!(parse("after-layer-upload@x").is_err());
    }
}
