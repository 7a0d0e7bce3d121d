#!/usr/bin/env bash
# Pageserver benchmark against stock PostgreSQL in the same run: WAL volume with
# wal_consistency_checking, ingest against a stock standby's replay, GetPage latency,
# basebackup against pg_basebackup. See tests/benches/pageserver.rs.
#
# Environment: STRATA_BENCH_SCALE (10), STRATA_BENCH_TRANSACTIONS (2000 per client, 4
# clients), STRATA_BENCH_GETPAGES (2000).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --bins
cargo bench -p strata_integration_tests --bench pageserver "$@"
