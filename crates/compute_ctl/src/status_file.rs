//! `--status-file`: how a supervisor (`strata up`) learns that the compute is ready
//! and how to reach it. Written durably (temp file + rename) so a reader never sees
//! half a file.

use std::path::Path;

use serde::Serialize;

use crate::durable::{write_atomic, DurableWriteError};

/// The compute's state as the file reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeStatus {
    /// PostgreSQL accepts connections and `compute_ctl` is its elected proposer.
    Running,
    /// Stopped on request (SIGTERM), or PostgreSQL exited.
    Stopped,
    /// A newer term was elected; PostgreSQL was stopped at once.
    Fenced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The postmaster's pid (absent once it stopped).
    pub pid: Option<u32>,
    pub compute_ctl_pid: u32,
    pub pg_port: u16,
    pub connstr: String,
    pub term: u64,
    pub state: ComputeStatus,
}

pub fn write(path: &Path, status: &Status) -> Result<(), DurableWriteError> {
    let mut text = serde_json::to_string(status).unwrap_or_default();
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        let status = Status {
            pid: Some(42),
            compute_ctl_pid: 41,
            pg_port: 55432,
            connstr: "postgresql://postgres@127.0.0.1:55432/postgres".to_owned(),
            term: 3,
            state: ComputeStatus::Running,
        };
        write(&path, &status).unwrap();
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(value["pid"], 42);
        assert_eq!(value["compute_ctl_pid"], 41);
        assert_eq!(value["pg_port"], 55432);
        assert_eq!(
            value["connstr"],
            "postgresql://postgres@127.0.0.1:55432/postgres"
        );
        assert_eq!(value["term"], 3);
        assert_eq!(value["state"], "running");
    }
}
