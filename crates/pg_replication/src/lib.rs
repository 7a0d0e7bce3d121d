//! A small PostgreSQL physical-replication client, shared by the two Strata programs
//! that stream WAL: `compute_ctl` (the compute's synchronous standby, streaming from
//! PostgreSQL) and the pageserver's walreceiver (streaming from a safekeeper, which
//! speaks the same protocol).
//!
//! It connects with `replication=true` (the walsender's protocol, no database),
//! authenticates by trust only (the `pg_hba.conf` lines `compute_ctl` writes; the
//! safekeepers accept every connection for now), runs `IDENTIFY_SYSTEM` and
//! `START_REPLICATION [SLOT …] PHYSICAL`, then receives `XLogData` and keepalives and
//! sends standby status updates. The positions it reports are whatever its caller
//! passes: `compute_ctl` passes the quorum commit LSN as write, flush and apply
//! position, which is what releases PostgreSQL's waiting commits; the pageserver
//! reports what it received as write and what is durable as flush and apply.
//!
//! Bounded: every message length is checked against
//! [`MAX_PG_MESSAGE_BYTES`](crate::limits::MAX_PG_MESSAGE_BYTES) before it is buffered,
//! and connecting and each command have time limits. [`WalStream::next`] is cancel-safe
//! (bytes are only ever appended to the connection's buffer), so a caller can `select!`
//! between it and its own events.

pub mod limits;
pub mod messages;

use std::time::Duration;

use postgres_wal::Lsn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::limits::{PG_COMMAND_TIMEOUT, PG_CONNECT_TIMEOUT};
use messages::{BackendMessage, CopyMessage};

/// Why a replication connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("connecting to PostgreSQL at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("replication connection I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer from PostgreSQL within {timeout:?} while {what}")]
    Timeout {
        timeout: Duration,
        what: &'static str,
    },
    /// PostgreSQL's own `ErrorResponse`, as `ERROR <sqlstate>: <message>`.
    #[error("PostgreSQL: {0}")]
    Server(String),
    #[error("replication protocol: {0}")]
    Protocol(String),
    #[error(
        "PostgreSQL asked for authentication (method {0}); this client connects by trust \
         only (compute_ctl writes the pg_hba.conf lines that allow it)"
    )]
    Authentication(i32),
    #[error("PostgreSQL closed the replication connection")]
    Closed,
}

/// What `IDENTIFY_SYSTEM` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentifySystem {
    pub system_id: u64,
    pub timeline: u32,
    /// PostgreSQL's current WAL flush position.
    pub xlog_pos: Lsn,
}

/// A connection in the command phase.
#[derive(Debug)]
pub struct ReplicationConnection {
    stream: TcpStream,
    /// Bytes received and not yet taken as messages.
    inbuf: Vec<u8>,
}

async fn bounded<T>(
    timeout: Duration,
    what: &'static str,
    work: impl std::future::Future<Output = Result<T, ReplicationError>>,
) -> Result<T, ReplicationError> {
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ReplicationError::Timeout { timeout, what })?
}

impl ReplicationConnection {
    /// Connect as `user` with `application_name` (the name `synchronous_standby_names`
    /// lists) in replication mode, and wait until the server is ready for commands.
    pub async fn connect(
        addr: impl ToSocketAddrs + std::fmt::Display,
        user: &str,
        application_name: &str,
    ) -> Result<ReplicationConnection, ReplicationError> {
        Self::connect_with(addr, user, application_name, &[]).await
    }

    /// [`ReplicationConnection::connect`] with further startup parameters, such as
    /// `options` (`-c name=value` settings: a safekeeper reads the timeline from them).
    pub async fn connect_with(
        addr: impl ToSocketAddrs + std::fmt::Display,
        user: &str,
        application_name: &str,
        extra_params: &[(&str, &str)],
    ) -> Result<ReplicationConnection, ReplicationError> {
        bounded(PG_CONNECT_TIMEOUT, "connecting", async {
            let stream =
                TcpStream::connect(&addr)
                    .await
                    .map_err(|source| ReplicationError::Connect {
                        addr: addr.to_string(),
                        source,
                    })?;
            // Status updates release commits: they must not wait for Nagle.
            stream.set_nodelay(true)?;
            let mut connection = ReplicationConnection {
                stream,
                inbuf: Vec::new(),
            };
            let mut params = vec![
                ("user", user),
                ("replication", "true"),
                ("application_name", application_name),
            ];
            params.extend_from_slice(extra_params);
            connection.send(&messages::startup(&params)).await?;
            connection.until_ready().await?;
            Ok(connection)
        })
        .await
    }

    /// Read messages until `ReadyForQuery`; authentication must be trust.
    async fn until_ready(&mut self) -> Result<(), ReplicationError> {
        loop {
            let message = self.recv().await?;
            match message.tag {
                b'R' => match messages::auth_code(&message.body)? {
                    0 => {}
                    code => return Err(ReplicationError::Authentication(code)),
                },
                b'Z' => return Ok(()),
                b'E' => {
                    let error = messages::parse_error_fields(&message.body);
                    return Err(ReplicationError::Server(error));
                }
                b'N' => log_notice(&message.body),
                // ParameterStatus, BackendKeyData: nothing we need.
                _ => {}
            }
        }
    }

    /// The next whole message. Cancel-safe: a cancelled read loses no bytes.
    async fn recv(&mut self) -> Result<BackendMessage, ReplicationError> {
        loop {
            if let Some(message) = messages::take_message(&mut self.inbuf)? {
                return Ok(message);
            }
            // At most one message header plus body past what is buffered is ever
            // requested; `take_message` rejects lengths over the limit first.
            self.inbuf.reserve(64 * 1024);
            if self.stream.read_buf(&mut self.inbuf).await? == 0 {
                return Err(ReplicationError::Closed);
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ReplicationError> {
        bounded(PG_COMMAND_TIMEOUT, "sending", async {
            self.stream.write_all(bytes).await?;
            Ok(())
        })
        .await
    }

    /// `IDENTIFY_SYSTEM`.
    pub async fn identify_system(&mut self) -> Result<IdentifySystem, ReplicationError> {
        self.send(&messages::query("IDENTIFY_SYSTEM")).await?;
        bounded(PG_COMMAND_TIMEOUT, "running IDENTIFY_SYSTEM", async {
            let mut row = None;
            loop {
                let message = self.recv().await?;
                match message.tag {
                    b'D' => row = Some(messages::parse_data_row(&message.body)?),
                    b'E' => {
                        let error = messages::parse_error_fields(&message.body);
                        return Err(ReplicationError::Server(error));
                    }
                    b'N' => log_notice(&message.body),
                    b'Z' => break,
                    // RowDescription, CommandComplete.
                    _ => {}
                }
            }
            parse_identify_system(row)
        })
        .await
    }

    /// `START_REPLICATION [SLOT <slot>] PHYSICAL <start> TIMELINE <timeline>`: the
    /// walsender streams from exactly `start`.
    pub async fn start_replication(
        mut self,
        slot: Option<&str>,
        start: Lsn,
        timeline: u32,
    ) -> Result<WalStream, ReplicationError> {
        let command = start_replication_command(slot, start, timeline);
        self.send(&messages::query(&command)).await?;
        bounded(PG_COMMAND_TIMEOUT, "starting replication", async {
            loop {
                let message = self.recv().await?;
                match message.tag {
                    b'W' => return Ok(()),
                    b'E' => {
                        let error = messages::parse_error_fields(&message.body);
                        return Err(ReplicationError::Server(error));
                    }
                    b'N' => log_notice(&message.body),
                    other => {
                        return Err(ReplicationError::Protocol(format!(
                            "unexpected message '{}' in answer to START_REPLICATION",
                            other as char
                        )))
                    }
                }
            }
        })
        .await?;
        Ok(WalStream { connection: self })
    }
}

fn start_replication_command(slot: Option<&str>, start: Lsn, timeline: u32) -> String {
    match slot {
        Some(slot) => format!("START_REPLICATION SLOT {slot} PHYSICAL {start} TIMELINE {timeline}"),
        None => format!("START_REPLICATION PHYSICAL {start} TIMELINE {timeline}"),
    }
}

fn parse_identify_system(
    row: Option<Vec<Option<String>>>,
) -> Result<IdentifySystem, ReplicationError> {
    let bad = |what: &str| ReplicationError::Protocol(format!("IDENTIFY_SYSTEM: {what}"));
    let row = row.ok_or_else(|| bad("no row"))?;
    let column = |i: usize| {
        row.get(i)
            .and_then(|c| c.as_deref())
            .ok_or_else(|| bad("missing column"))
    };
    Ok(IdentifySystem {
        system_id: column(0)?.parse().map_err(|_| bad("bad systemid"))?,
        timeline: column(1)?.parse().map_err(|_| bad("bad timeline"))?,
        xlog_pos: column(2)?.parse().map_err(|_| bad("bad xlogpos"))?,
    })
}

fn log_notice(body: &[u8]) {
    tracing::info!(notice = %messages::parse_error_fields(body), "PostgreSQL notice");
}

/// What the replication stream delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    Wal {
        start: Lsn,
        wal: Vec<u8>,
    },
    Keepalive {
        wal_end: Lsn,
        reply_requested: bool,
    },
    /// The server ended the copy (`CopyDone`): it is shutting down cleanly.
    End,
}

/// A connection in `CopyBoth` mode after `START_REPLICATION`.
#[derive(Debug)]
pub struct WalStream {
    connection: ReplicationConnection,
}

impl WalStream {
    /// The next event. Cancel-safe.
    pub async fn next(&mut self) -> Result<StreamEvent, ReplicationError> {
        loop {
            let message = self.connection.recv().await?;
            match message.tag {
                b'd' => {
                    return Ok(match messages::parse_copy_data(&message.body)? {
                        CopyMessage::XLogData { start, wal } => StreamEvent::Wal { start, wal },
                        CopyMessage::Keepalive {
                            wal_end,
                            reply_requested,
                        } => StreamEvent::Keepalive {
                            wal_end,
                            reply_requested,
                        },
                    })
                }
                b'c' => return Ok(StreamEvent::End),
                b'E' => {
                    let error = messages::parse_error_fields(&message.body);
                    return Err(ReplicationError::Server(error));
                }
                b'N' => log_notice(&message.body),
                // CommandComplete / ReadyForQuery after CopyDone: the stream is over.
                b'C' | b'Z' => return Ok(StreamEvent::End),
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "unexpected message '{}' in the replication stream",
                        other as char
                    )))
                }
            }
        }
    }

    /// Report `lsn` as our write, flush and apply position.
    pub async fn send_status(&mut self, lsn: Lsn) -> Result<(), ReplicationError> {
        self.send_positions(lsn, lsn, lsn).await
    }

    /// Report distinct positions: WAL received (`write`), durable (`flush`) and
    /// applied (`apply`), each the LSN after the last byte it covers.
    pub async fn send_positions(
        &mut self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
    ) -> Result<(), ReplicationError> {
        let message = messages::standby_status(write, flush, apply, messages::now_unix_micros());
        self.connection.send(&message).await
    }

    /// End the stream politely (best effort: the server may be gone already).
    pub async fn close(mut self) {
        let _ = self.connection.send(&messages::copy_done()).await;
        let _ = self.connection.send(&messages::terminate()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_system_row() {
        let row = vec![
            Some("7310000000000000001".to_owned()),
            Some("1".to_owned()),
            Some("0/16B3740".to_owned()),
            None,
        ];
        assert_eq!(
            parse_identify_system(Some(row)).unwrap(),
            IdentifySystem {
                system_id: 7_310_000_000_000_000_001,
                timeline: 1,
                xlog_pos: Lsn(0x16B_3740),
            }
        );
        assert!(parse_identify_system(None).is_err());
        assert!(parse_identify_system(Some(vec![Some("x".to_owned())])).is_err());
    }

    #[test]
    fn start_replication_with_and_without_slot() {
        assert_eq!(
            start_replication_command(Some("s"), Lsn(0x100_0028), 1),
            "START_REPLICATION SLOT s PHYSICAL 0/1000028 TIMELINE 1"
        );
        assert_eq!(
            start_replication_command(None, Lsn(0x100_0028), 1),
            "START_REPLICATION PHYSICAL 0/1000028 TIMELINE 1"
        );
    }
}
