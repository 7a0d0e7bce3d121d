#!/usr/bin/env bash
# Installs what a fresh Debian machine with Rust lacks to build and test Strata:
# PostgreSQL 15 (server, client tools, contrib), protoc (strata_proto's build
# compiles proto/*.proto with it), and RocksDB with libclang (layer_store links
# Debian's RocksDB through generated bindings), and promtool (Debian's prometheus
# package; scripts/check-metrics.sh lints every daemon's /metrics with it). Skips what
# is already present.
set -euo pipefail

pg_bindir=/usr/lib/postgresql/15/bin
packages=()
[ -x "$pg_bindir/postgres" ] || packages+=(postgresql-15)
[ -x "$pg_bindir/pg_waldump" ] || packages+=(postgresql-client-15)
[ -f /usr/share/postgresql/15/extension/bloom.control ] || packages+=(postgresql-contrib)
command -v protoc >/dev/null || packages+=(protobuf-compiler)
[ -f /usr/include/rocksdb/c.h ] || packages+=(librocksdb-dev)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || packages+=(libclang-dev)
{ command -v promtool && command -v prometheus; } >/dev/null || packages+=(prometheus)

if [ ${#packages[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "installing: ${packages[*]}"
$sudo apt-get update -qq
# Debian's postgresql-common would create and start a default cluster; Strata starts
# its own servers, so keep the package from doing that.
$sudo mkdir -p /etc/postgresql-common
echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
