#!/usr/bin/env bash
# The main job, until the local cluster exists: start a stock PostgreSQL 15 in a
# scratch directory, run pgbench on it, and decode its WAL with `strata wal dump`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release --bins --locked

pg_bindir=/usr/lib/postgresql/15/bin
work=$(mktemp -d /tmp/strata-demo.XXXXXX)
chmod 755 "$work"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  # PostgreSQL refuses to run as root.
  chown postgres "$work"
  as_pg=(runuser -u postgres --)
fi
cleanup() {
  "${as_pg[@]}" "$pg_bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(( 20000 + RANDOM % 20000 ))
"${as_pg[@]}" "$pg_bindir/initdb" -D "$work/data" --data-checksums -A trust -U postgres >/dev/null
"${as_pg[@]}" "$pg_bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w \
  -o "-p $port -k $work -c listen_addresses='' -c wal_compression=lz4" start >/dev/null
"${as_pg[@]}" "$pg_bindir/pgbench" -h "$work" -p "$port" -U postgres -i -s 2 -q postgres
"${as_pg[@]}" "$pg_bindir/pgbench" -h "$work" -p "$port" -U postgres -n -t 2000 postgres | grep -E "^(tps|number of transactions actually)"
"${as_pg[@]}" "$pg_bindir/pg_ctl" -D "$work/data" -w stop >/dev/null

echo
echo "== strata wal dump $work/data/pg_wal (first 15 records)"
target/release/strata wal dump "$work/data/pg_wal" 2>/dev/null | head -15 || true
echo
echo "== records by resource manager"
target/release/strata wal dump --json "$work/data/pg_wal" 2>/dev/null \
  | sed -E 's/.*"rmgr":"([^"]*)".*/\1/' | sort | uniq -c | sort -rn
echo
echo "== where the WAL ends"
target/release/strata wal dump "$work/data/pg_wal" 2>&1 >/dev/null | tail -1
