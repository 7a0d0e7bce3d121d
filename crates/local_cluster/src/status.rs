//! `strata status --json`: the object of the command-line contract (design brief §8).
//! Field names are stable: fields may be added, never renamed. `pid` is null when the
//! process is not running; LSNs are strings as Postgres prints them (`0/16B3740`);
//! `pageserver` is null only for a cluster created before the pageserver joined.

use postgres_wal::Lsn;
use serde::{Deserialize, Serialize};
use strata_ids::{NodeId, TenantId, TimelineId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    pub object_store: String,
    pub compute: ComputeStatus,
    pub safekeepers: Vec<SafekeeperStatus>,
    /// `None` (JSON null) for a cluster created without a pageserver.
    pub pageserver: Option<PageserverStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeStatus {
    /// The postmaster's pid.
    pub pid: Option<u32>,
    /// Postgres's TCP port on 127.0.0.1 (fixed at cluster creation).
    pub port: u16,
    pub connstr: String,
    /// `compute_ctl` and Postgres are alive and `compute_ctl` reported `running`.
    pub running: bool,
    /// Added to the contract's fields: the agent's pid, which is what `strata down`
    /// signals.
    pub compute_ctl_pid: Option<u32>,
    /// The term `compute_ctl` was elected in, when running.
    pub term: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafekeeperStatus {
    pub id: NodeId,
    pub pid: Option<u32>,
    pub running: bool,
    pub pg_port: u16,
    pub grpc_port: u16,
    pub http_port: u16,
    /// Null when the safekeeper is down or does not have the timeline yet.
    pub term: Option<u64>,
    #[serde(with = "lsn_text")]
    pub flush_lsn: Option<Lsn>,
    #[serde(with = "lsn_text")]
    pub commit_lsn: Option<Lsn>,
}

/// The contract's pageserver object. The LSNs come from its `TimelineStatus` and are
/// null when it is down or does not have the timeline (yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageserverStatus {
    pub pid: Option<u32>,
    pub running: bool,
    pub grpc_port: u16,
    pub http_port: u16,
    #[serde(with = "lsn_text")]
    pub last_record_lsn: Option<Lsn>,
    #[serde(with = "lsn_text")]
    pub disk_consistent_lsn: Option<Lsn>,
    #[serde(with = "lsn_text")]
    pub remote_consistent_lsn: Option<Lsn>,
}

/// `Option<Lsn>` as `"0/16B3740"` or null.
mod lsn_text {
    use postgres_wal::Lsn;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(lsn: &Option<Lsn>, s: S) -> Result<S::Ok, S::Error> {
        match lsn {
            Some(lsn) => s.collect_str(lsn),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Lsn>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| text.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl ClusterStatus {
    /// A table for people: one row per process (kind, id, state, pid, ports, term), its
    /// LSNs named in the last column. `--json` is the stable format for programs.
    pub fn to_table(&self) -> String {
        use std::fmt::Write as _;
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
        let state = |running: bool| if running { "running" } else { "stopped" };
        let lsns = |named: &[(&str, Option<Lsn>)]| {
            named
                .iter()
                .map(|(name, lsn)| format!("{name} {}", or_dash(lsn.map(|l| l.to_string()))))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let mut rows: Vec<[String; 9]> = vec![[
            "KIND", "ID", "STATE", "PID", "PG", "GRPC", "HTTP", "TERM", "LSNS",
        ]
        .map(str::to_owned)];
        for sk in &self.safekeepers {
            rows.push([
                "safekeeper".to_owned(),
                sk.id.to_string(),
                state(sk.running).to_owned(),
                or_dash(sk.pid.map(|p| p.to_string())),
                sk.pg_port.to_string(),
                sk.grpc_port.to_string(),
                sk.http_port.to_string(),
                or_dash(sk.term.map(|t| t.to_string())),
                lsns(&[("flush", sk.flush_lsn), ("commit", sk.commit_lsn)]),
            ]);
        }
        if let Some(ps) = &self.pageserver {
            rows.push([
                "pageserver".to_owned(),
                "-".to_owned(),
                state(ps.running).to_owned(),
                or_dash(ps.pid.map(|p| p.to_string())),
                "-".to_owned(),
                ps.grpc_port.to_string(),
                ps.http_port.to_string(),
                "-".to_owned(),
                lsns(&[
                    ("last_record", ps.last_record_lsn),
                    ("disk_consistent", ps.disk_consistent_lsn),
                    ("remote_consistent", ps.remote_consistent_lsn),
                ]),
            ]);
        }
        let compute = &self.compute;
        rows.push([
            "compute".to_owned(),
            "-".to_owned(),
            state(compute.running).to_owned(),
            or_dash(compute.pid.map(|p| p.to_string())),
            compute.port.to_string(),
            "-".to_owned(),
            "-".to_owned(),
            or_dash(compute.term.map(|t| t.to_string())),
            String::new(),
        ]);
        let mut widths = [0; 9];
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        let mut out = String::new();
        let _ = writeln!(out, "tenant        {}", self.tenant_id);
        let _ = writeln!(out, "timeline      {}", self.timeline_id);
        let _ = writeln!(out, "object store  {}", self.object_store);
        if self.pageserver.is_none() {
            let _ = writeln!(out, "pageserver    none in this cluster");
        }
        let _ = writeln!(out);
        for row in &rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                // The last column is not padded: no trailing blanks.
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let _ = writeln!(out);
        let _ = write!(out, "connect: {}", compute.connstr);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_contract_fields_and_lsn_strings() {
        let status = ClusterStatus {
            tenant_id: TenantId(1),
            timeline_id: TimelineId(2),
            object_store: "file:///x/object-store".into(),
            compute: ComputeStatus {
                pid: None,
                port: 5432,
                connstr: "postgresql://postgres@127.0.0.1:5432/postgres".into(),
                running: false,
                compute_ctl_pid: None,
                term: None,
            },
            safekeepers: vec![SafekeeperStatus {
                id: NodeId(1),
                pid: Some(42),
                running: true,
                pg_port: 1,
                grpc_port: 2,
                http_port: 3,
                term: Some(4),
                flush_lsn: Some(Lsn(0x16B3740)),
                commit_lsn: None,
            }],
            pageserver: None,
        };
        let json: serde_json::Value = serde_json::to_value(&status).unwrap();
        assert_eq!(json["safekeepers"][0]["flush_lsn"], "0/16B3740");
        assert!(json["safekeepers"][0]["commit_lsn"].is_null());
        assert!(json["pageserver"].is_null());
        let mut with = status.clone();
        with.pageserver = Some(PageserverStatus {
            pid: Some(7),
            running: true,
            grpc_port: 4,
            http_port: 5,
            last_record_lsn: Some(Lsn(0x300_0028)),
            disk_consistent_lsn: Some(Lsn(0x300_0028)),
            remote_consistent_lsn: Some(Lsn(0)),
        });
        let with_json: serde_json::Value = serde_json::to_value(&with).unwrap();
        assert_eq!(with_json["pageserver"]["last_record_lsn"], "0/3000028");
        assert_eq!(with_json["pageserver"]["remote_consistent_lsn"], "0/0");
        let back: ClusterStatus = serde_json::from_value(with_json).unwrap();
        assert_eq!(back, with);
        assert!(json["compute"]["pid"].is_null());
        let back: ClusterStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, status);
        let table = status.to_table();
        let row = |kind: &str| {
            table
                .lines()
                .find(|l| l.starts_with(kind))
                .unwrap_or_else(|| panic!("no {kind} row in\n{table}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            row("KIND"),
            ["KIND", "ID", "STATE", "PID", "PG", "GRPC", "HTTP", "TERM", "LSNS"]
        );
        assert_eq!(
            row("safekeeper"),
            [
                "safekeeper",
                "1",
                "running",
                "42",
                "1",
                "2",
                "3",
                "4",
                "flush",
                "0/16B3740",
                "commit",
                "-"
            ]
        );
        assert_eq!(row("compute")[..4], ["compute", "-", "stopped", "-"]);
        assert!(table.contains("none in this cluster"), "{table}");
        let table = with.to_table();
        assert!(
            table.contains(
                "last_record 0/3000028  disk_consistent 0/3000028  remote_consistent 0/0"
            ),
            "{table}"
        );
        assert!(!table.lines().any(|l| l.ends_with(' ')), "{table}");
    }
}
