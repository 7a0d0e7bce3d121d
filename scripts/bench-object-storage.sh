#!/usr/bin/env bash
# Object storage upload benchmark: Strata's S3 backend (RemoteStorage::put, put_file)
# against a plain aws-sdk-s3 put_object loop, same data, same strata-s3-server on
# loopback, in one run. See crates/remote_storage/benches/upload.rs.
#
# Environment: STRATA_BENCH_OBJECTS (64), STRATA_BENCH_OBJECT_MIB (4),
# STRATA_BENCH_FILES (2), STRATA_BENCH_FILE_MIB (64), STRATA_BENCH_ROUNDS (3).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -p s3_harness --bins
cargo bench -p remote_storage --bench upload "$@"
