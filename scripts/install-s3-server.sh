#!/usr/bin/env bash
# Installs s3s-fs, the S3-compatible server the tests start on loopback (a real S3
# protocol implementation with SigV4 checks; MinIO is not in the registries this
# project builds from). Built once with cargo into $HOME/.cache/strata/s3s-fs (about
# two minutes on two cores), outside the clone, so warm CI runs reuse it.
set -euo pipefail

version=0.14.1
root="$HOME/.cache/strata/s3s-fs"
if [ -x "$root/bin/s3s-fs" ] && "$root/bin/s3s-fs" --version 2>/dev/null | grep -qxF "s3s-fs $version"; then
  exit 0
fi
echo "installing: s3s-fs $version (cargo install, into $root)"
cargo install s3s-fs --version "$version" --features binary --locked --quiet \
  --root "$root" --target-dir "$HOME/.cache/strata/s3s-fs-build"
rm -rf "$HOME/.cache/strata/s3s-fs-build"
