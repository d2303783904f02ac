#!/usr/bin/env bash
# PostgreSQL's CPU per select-only transaction with pgaudit at the ALL-QUERIES classes, under the installed
# parhelion_guard and under the guard of another revision, beside pgaudit at no class (what OFF costs), in one
# run: a bare PostgreSQL 15 server (trust on a unix socket, nothing else of parhelion's), pgbench -S, rounds
# alternating. Not a test: it measures; the gateway benchmark (bench/audit.ts) measures the whole audit path.
#
#   bench/guard-cpu.sh [REV (7640edd^: the guard before pgaudit stopped building top-level lines)]
#   ROUNDS=5 T=10 CLIENTS=4 bench/guard-cpu.sh
#
# Needs root (it installs the other revision's module as parhelion_guard_rev.so in PostgreSQL's lib directory for
# the run and removes it after) and the installed guard (./bin/test or ./bin/parhelion up install it). Prints, per
# round and variant, TPS, PostgreSQL CPU per transaction (the postmaster and all its children, exited backends
# included, from /proc) and pgbench's; the medians last.
set -euo pipefail
REV="${1:-7640edd^}"
ROUNDS="${ROUNDS:-5}" T="${T:-10}" CLIENTS="${CLIENTS:-4}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
B="$("$PG_CONFIG" --bindir)" LIB="$("$PG_CONFIG" --pkglibdir)"
[ "$(id -u)" = 0 ] || { echo "guard-cpu.sh: run as root" >&2; exit 2; }
[ -f "$LIB/parhelion_guard.so" ] || { echo "guard-cpu.sh: $LIB/parhelion_guard.so is not installed (run ./bin/test or ./bin/parhelion up first)" >&2; exit 2; }
RUNAS=postgres
WORK="$(mktemp -d /tmp/guard-cpu.XXXXXX)"
chmod 755 "$WORK"
cleanup() {
  [ -f "$WORK/data/postmaster.pid" ] && su "$RUNAS" -c "$B/pg_ctl -D $WORK/data -w -m immediate stop" >/dev/null 2>&1 || true
  rm -f "$LIB/parhelion_guard_rev.so"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The other revision's module, under another name (its _PG_init's message names it; nothing else differs).
mkdir -p "$WORK/rev"
git -C "$ROOT" show "$REV:engine/guard/parhelion_guard.c" > "$WORK/rev/parhelion_guard_rev.c"
printf 'MODULES = parhelion_guard_rev\nPG_CONFIG ?= pg_config\nPGXS := $(shell $(PG_CONFIG) --pgxs)\ninclude $(PGXS)\n' > "$WORK/rev/Makefile"
make -C "$WORK/rev" PG_CONFIG="$PG_CONFIG" >/dev/null
install -m 755 "$WORK/rev/parhelion_guard_rev.so" "$LIB/parhelion_guard_rev.so"

mkdir -p "$WORK/sock"
chown "$RUNAS" "$WORK" "$WORK/sock"
su "$RUNAS" -c "$B/initdb -D $WORK/data -A trust" >/dev/null
TICK="$(getconf CLK_TCK)"
ALL="ddl,function,misc,misc_set,read,role,write"

start() { # library, pgaudit classes
  su "$RUNAS" -c "$B/pg_ctl -D $WORK/data -l $WORK/log -w -o \"-k $WORK/sock -c listen_addresses='' -c shared_preload_libraries='$1,pgaudit' -c pgaudit.log='$2' -c pgaudit.log_relation=off -c pgaudit.log_parameter=off -c pgaudit.log_catalog=on -c log_error_verbosity=verbose\" start" >/dev/null
}
stop() { su "$RUNAS" -c "$B/pg_ctl -D $WORK/data -w -m fast stop" >/dev/null; }
# CPU ticks of the postmaster (its own and its reaped children's) and of its live children.
cpu() {
  local pm t c f
  pm="$(head -1 "$WORK/data/postmaster.pid")"
  read -r -a f < <(sed 's/.*) //' "/proc/$pm/stat")
  t=$(( f[11] + f[12] + f[13] + f[14] ))
  for c in $(cat /proc/"$pm"/task/*/children); do
    read -r -a f < <(sed 's/.*) //' "/proc/$c/stat" 2>/dev/null || echo) || true
    [ "${#f[@]}" -gt 14 ] && t=$(( t + f[11] + f[12] ))
  done
  echo "$t"
}

start parhelion_guard none
su "$RUNAS" -c "$B/pgbench -h $WORK/sock -i -s 5 postgres" >/dev/null 2>&1
stop

declare -A RESULTS
echo "pgbench -S -c $CLIENTS -j 2 -T $T, $ROUNDS rounds; installed guard against $REV ($(git -C "$ROOT" rev-parse --short "$REV"))"
for round in $(seq "$ROUNDS"); do
  for v in off rev installed; do
    case "$v" in
      off) start parhelion_guard none ;;
      rev) start parhelion_guard_rev "$ALL" ;;
      installed) start parhelion_guard "$ALL" ;;
    esac
    su "$RUNAS" -c "$B/pgbench -h $WORK/sock -S -c $CLIENTS -j 2 -T 3 postgres" >/dev/null 2>&1 # warm
    c0="$(cpu)"
    out="$(su "$RUNAS" -c "/usr/bin/time -f 'CPU %U %S' $B/pgbench -h $WORK/sock -n -S -c $CLIENTS -j 2 -T $T postgres" 2>&1)"
    sleep 0.5
    c1="$(cpu)"
    stop
    tx="$(awk '/number of transactions actually processed/ {split($NF, a, "/"); print a[1]}' <<<"$out")"
    tps="$(awk '/^tps/ {printf "%d", $3}' <<<"$out")"
    client="$(awk '/^CPU/ {print $2 + $3}' <<<"$out")"
    pgus="$(awk -v c=$((c1 - c0)) -v t="$tx" -v k="$TICK" 'BEGIN { printf "%.1f", c / k / t * 1e6 }')"
    clus="$(awk -v c="$client" -v t="$tx" 'BEGIN { printf "%.1f", c / t * 1e6 }')"
    RESULTS[$v]+="$pgus "
    label=$([ "$v" = off ] && echo "pgaudit.log none" || { [ "$v" = rev ] && echo "ALL-QUERIES classes, guard $REV" || echo "ALL-QUERIES classes, installed guard"; })
    printf 'round %d  %-45s %7s tps  PostgreSQL %6s µs/txn  pgbench %5s µs/txn\n' "$round" "$label" "$tps" "$pgus" "$clus"
  done
done
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
off="$(median "${RESULTS[off]}")" rev="$(median "${RESULTS[rev]}")" inst="$(median "${RESULTS[installed]}")"
echo "median PostgreSQL CPU per transaction (µs): none $off; guard $REV $rev (+$(awk -v a="$rev" -v b="$off" 'BEGIN { printf "%.1f", a - b }')); installed guard $inst (+$(awk -v a="$inst" -v b="$off" 'BEGIN { printf "%.1f", a - b }'))"
