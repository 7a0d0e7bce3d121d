//! The PostgreSQL replication protocol: WAL for pg_receivewal, standbys and the pageserver.
