//! Durable storage of a timeline: its control file and WAL segments.
