#!/usr/bin/env bash
# The main job: install what is missing (PostgreSQL 15, protoc), build the release
# binaries, and start a local cluster with `strata up`: 3 safekeepers and a stock
# PostgreSQL 15 under compute_ctl, in ./.strata (or --dir DIR). The last line printed
# is the connection URI, so `psql "$(scripts/up.sh | tail -n1)"` connects.
# Extra arguments go to `strata up` (see docs/local-cluster.md); stop with
# `target/release/strata down`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release --bins --locked --quiet
exec target/release/strata up "$@"
