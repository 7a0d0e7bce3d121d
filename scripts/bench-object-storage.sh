#!/usr/bin/env bash
# Object storage benchmarks, each against its baseline in the same run:
# 1. uploads: Strata's S3 backend (RemoteStorage::put, put_file) against a plain
#    aws-sdk-s3 put_object loop, same data, same strata-s3-server on loopback
#    (crates/remote_storage/benches/upload.rs);
# 2. GetPage for a page whose layers must first be downloaded from S3, against the
#    same page once local (tests/benches/getpage_remote.rs).
#
# Environment: STRATA_BENCH_OBJECTS (64), STRATA_BENCH_OBJECT_MIB (4),
# STRATA_BENCH_FILES (2), STRATA_BENCH_FILE_MIB (64), STRATA_BENCH_ROUNDS (3);
# STRATA_BENCH_GETPAGE_ROUNDS (10), STRATA_BENCH_SCALE (5, pgbench -i -s).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --bins
cargo bench -p remote_storage --bench upload
cargo bench -p strata_integration_tests --bench getpage_remote
