#!/usr/bin/env bash
# Decode-throughput benchmark: `strata wal dump` against `pg_waldump` on the same WAL.
#
# Builds the release binaries (the bench times target/release/strata), then runs the bench.
# Extra arguments go to `cargo bench`; the workload is set through the environment:
#   STRATA_BENCH_SCALE (10), STRATA_BENCH_TRANSACTIONS (5000 per client),
#   STRATA_BENCH_CLIENTS (4), STRATA_BENCH_JOBS (2), STRATA_BENCH_ROUNDS (5),
#   STRATA_BENCH_COMPRESSION (off,lz4), STRATA_BENCH_KEEP_WAL (unset: a directory to keep
#   the measured segments in). See tests/benches/wal_dump.rs.
#
# Example: STRATA_BENCH_SCALE=2 STRATA_BENCH_COMPRESSION=off scripts/bench.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --bins
cargo bench -p strata_integration_tests --bench wal_dump "$@"
