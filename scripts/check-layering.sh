#!/usr/bin/env bash
# Invariant: libraries under crates/ never depend on the daemons.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
for lib in postgres_wal pg_harness local_cluster strata_ids strata_logging consensus strata_proto compute_ctl pg_replication page_model layer_store basebackup strata_http remote_storage s3_harness; do
  for daemon in safekeeper pageserver; do
    if cargo tree --locked -p "$lib" -e normal,build --prefix none | grep -q "^$daemon v"; then
      echo "layering violation: library $lib depends on daemon $daemon"
      status=1
    fi
  done
done
exit $status
