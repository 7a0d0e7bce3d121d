#!/usr/bin/env bash
# The test command: installs what is missing, checks formatting, lints and layering,
# builds, validates the deploy files and every daemon's metrics, and runs every test
# against real PostgreSQL 15.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== layering"
scripts/check-layering.sh
echo "== build"
cargo build --workspace --bins --locked
echo "== deploy files (systemd-analyze, kubernetes-validate, docker-compose)"
scripts/check-deploy.sh
echo "== metrics (promtool check metrics on a running cluster, dashboard)"
scripts/check-metrics.sh
echo "== tests"
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "${TMPDIR:-/tmp}/strata-test.log"
echo "== summary"
grep -E "^test result:|Running " "${TMPDIR:-/tmp}/strata-test.log" | sed 's/^ *//'
awk '/^test result:/ { passed += $4; failed += $6; binaries++ }
     END { printf "== total: %d passed, %d failed, in %d test binaries\n", passed, failed, binaries }' \
  "${TMPDIR:-/tmp}/strata-test.log"
