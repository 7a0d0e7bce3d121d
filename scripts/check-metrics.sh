#!/usr/bin/env bash
# Lints every daemon's /metrics with `promtool check metrics` (Prometheus naming and
# exposition rules), scraped from a running local cluster after a small workload, and
# checks that every metric deploy/grafana/strata.json queries is exported by some
# daemon, and that docs/metrics.md lists exactly the exported metrics with their types
# and labels, so neither the dashboard nor the reference can drift from the code.
#
# Expects the debug binaries built (scripts/test.sh's build step); installs promtool
# and the Prometheus server (Debian's prometheus package) when they are missing.
# Exits non-zero on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${CARGO_TARGET_DIR:-target}/debug"
strata="$bin/strata"
[ -x "$strata" ] || { echo "check-metrics: $strata not built (cargo build --workspace --bins)" >&2; exit 1; }

if ! { command -v promtool && command -v prometheus; } >/dev/null; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing: prometheus (for promtool)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

work=$(mktemp -d /tmp/strata-check-metrics.XXXXXX)
chmod 755 "$work"
cluster="$work/cluster"
prometheus_pid=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  if [ -n "$prometheus_pid" ]; then
    kill "$prometheus_pid" 2>/dev/null || true
    wait "$prometheus_pid" 2>/dev/null || true
  fi
  "$strata" down --dir "$cluster" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

connstr=$("$strata" up --dir "$cluster" 2>"$work/up.log" | tail -n1) || {
  cat "$work/up.log" >&2
  exit 1
}
status=$("$strata" status --dir "$cluster" --json)
ports=$(python3 -c '
import json, sys
s = json.loads(sys.argv[1])
for sk in s["safekeepers"]:
    print("safekeeper-%s %s" % (sk["id"], sk["http_port"]))
print("pageserver %s" % s["pageserver"]["http_port"])
' "$status")

# A real Prometheus (Debian's prometheus package, which ships promtool) scrapes the
# cluster twice a second from now on; it syncs its targets only ~5 s after starting,
# which the workload below covers. The dashboard's and the docs' queries run on it.
prometheus_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
targets=$(awk '{ printf "%s\"127.0.0.1:%s\"", (NR > 1 ? ", " : ""), $2 }' <<<"$ports")
cat >"$work/prometheus.yml" <<YAML
global: {scrape_interval: 500ms, evaluation_interval: 500ms}
scrape_configs:
  - job_name: strata
    static_configs: [{targets: [$targets]}]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prometheus_port" >"$work/prometheus.log" 2>&1 &
prometheus_pid=$!

psql -q -v ON_ERROR_STOP=1 "$connstr" >/dev/null <<'SQL'
CREATE TABLE metrics_check (id int PRIMARY KEY, payload text);
INSERT INTO metrics_check SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g;
CHECKPOINT;
SQL
rel=$(psql -qAt "$connstr" -c "SELECT (SELECT CASE WHEN reltablespace = 0 THEN 1663 ELSE reltablespace END FROM pg_class WHERE relname = 'metrics_check') || '/' || (SELECT oid FROM pg_database WHERE datname = current_database()) || '/' || pg_relation_filenode('metrics_check')")
lsn=$(psql -qAt "$connstr" -c "SELECT pg_current_wal_flush_lsn()")
# Read paths too, so their series exist: a page and a whole basebackup.
"$strata" getpage --dir "$cluster" --lsn "$lsn" --rel "$rel" --blk 0 >/dev/null
"$strata" basebackup --dir "$cluster" --lsn "$lsn" --out "$work/basebackup" >/dev/null

failed=0
: >"$work/all.prom"
while read -r name port; do
  curl -fsS "http://127.0.0.1:$port/metrics" >"$work/$name.prom"
  cat "$work/$name.prom" >>"$work/all.prom"
  # A finding is printed (and usually makes the exit status non-zero): either fails.
  if out=$(promtool check metrics <"$work/$name.prom" 2>&1) && [ -z "$out" ]; then
    echo "ok    promtool check metrics: $name ($(grep -vc '^#' "$work/$name.prom") samples)"
  else
    echo "FAIL  promtool check metrics: $name"
    echo "$out"
    failed=1
  fi
done <<<"$ports"

if out=$(python3 deploy/checks/check_dashboard.py deploy/grafana/strata.json "$work/all.prom" 2>&1); then
  echo "ok    dashboard: $out"
else
  echo "FAIL  dashboard"
  echo "$out"
  failed=1
fi

# Each query must parse and return series, so that a label mismatch cannot leave a
# panel empty or an alert silent.
if out=$(python3 deploy/checks/check_queries.py "http://127.0.0.1:$prometheus_port" \
  "$(wc -l <<<"$ports")" deploy/grafana/strata.json docs/metrics.md docs/runbooks.md docs/installation.md 2>&1); then
  echo "ok    queries: $out"
else
  echo "FAIL  queries of the dashboard and the docs"
  echo "$out"
  tail -n 5 "$work/prometheus.log"
  failed=1
fi

if out=$(python3 deploy/checks/check_metrics_doc.py docs/metrics.md "$work/all.prom" 2>&1); then
  echo "ok    docs/metrics.md: $out"
else
  echo "FAIL  docs/metrics.md does not match the exported metrics"
  echo "$out"
  failed=1
fi
exit "$failed"
