#!/usr/bin/env bash
# The Debian packages the tests need, installed when missing: `make system-deps` (group test) and
# `make system-deps-swarm` (group swarm). A package counts as present when its commands are found.
#
#   tools/system-deps.sh [--dry-run] GROUP...     groups: test, swarm
#
# As root it installs with apt-get, with a policy-rc.d that stops the packages from starting their own
# daemons (nginx on :80, redis on :6379, PostgreSQL's cluster `main` on :5432): the tests start their own,
# on free loopback ports. The cluster `main` that the postgresql package creates is left stopped and set
# to start manually only (its start.conf), so no boot starts it either. Otherwise it prints the exact
# command to run and exits 1. --dry-run prints what it would run and changes nothing.
#
# PostgreSQL's server commands are not on PATH: Debian keeps them in /usr/lib/postgresql/<major>/bin
# (SYSTEM_DEPS_PGLIB overrides /usr/lib/postgresql, for the tests).
set -euo pipefail

# package:command[,command...] - the commands the tests and make targets run
declare -A PACKAGES=(
  [test]="nginx-light:nginx redis-server:redis-server prometheus:prometheus,promtool wrk:wrk chromium:chromium
    postgresql:initdb,pg_ctl,postgres"
  [swarm]="docker.io:docker,dockerd debootstrap:debootstrap"
)
SEARCH_PATH=${SYSTEM_DEPS_PATH:-$PATH:/usr/sbin:/sbin}
PGLIB=${SYSTEM_DEPS_PGLIB:-/usr/lib/postgresql}
PYTHON=${PYTHON:-python3.11}
POLICY=/usr/sbin/policy-rc.d

dry_run=0
groups=()
for arg in "$@"; do
  case $arg in
    --dry-run) dry_run=1 ;;
    test | swarm) groups+=("$arg") ;;
    *) echo "system-deps: unknown group '$arg' (test, swarm)" >&2; exit 2 ;;
  esac
done
((${#groups[@]})) || { echo "usage: $0 [--dry-run] test|swarm..." >&2; exit 2; }

# The search path plus every installed PostgreSQL major's bin dir (none: nothing is added)
pg_bin_dirs() {
  local dir
  for dir in "$PGLIB"/*/bin; do
    [[ -d $dir ]] && printf ':%s' "$dir"
  done
  return 0
}
found() { PATH=$SEARCH_PATH$(pg_bin_dirs) command -v "$1" >/dev/null 2>&1; }

missing=()
for group in "${groups[@]}"; do
  for entry in ${PACKAGES[$group]}; do
    package=${entry%%:*}
    IFS=, read -ra commands <<<"${entry#*:}"
    for cmd in "${commands[@]}"; do
      found "$cmd" || { missing+=("$package"); break; }
    done
  done
done
# The venv is built with Debian's python3.11 on a fresh machine; its venv module needs python3.11-venv.
if [[ " ${groups[*]} " == *" test "* ]]; then
  if ! found "$PYTHON"; then
    missing+=(python3.11 python3.11-venv)
  elif ! PATH=$SEARCH_PATH "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
    missing+=(python3.11-venv)
  fi
fi
((${#missing[@]})) || exit 0

install=(apt-get install -y -qq --no-install-recommends "${missing[@]}")
if [[ $(id -u) -ne 0 ]]; then
  echo "system-deps: missing Debian packages: ${missing[*]}. Install them with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "system-deps: missing ${missing[*]} and no apt-get here: install their equivalents" >&2
  exit 1
fi
if ((dry_run)); then
  echo "would install (policy-rc.d in place): ${install[*]}"
  exit 0
fi

echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if [[ ! -e $POLICY ]]; then  # an existing policy-rc.d is the machine's own: keep it, and leave it
  printf '#!/bin/sh\nexit 101\n' >"$POLICY" && chmod +x "$POLICY"
  trap 'rm -f "$POLICY"' EXIT
fi
apt-get update -qq
"${install[@]}" >/dev/null
if [[ " ${missing[*]} " == *" postgresql "* ]]; then
  # policy-rc.d kept `main` from starting; keep it so at boot too, and stop it should anything have started it
  for conf in /etc/postgresql/*/main/start.conf; do
    [[ -f $conf ]] && echo manual >"$conf"
  done
  for dir in "$PGLIB"/*/bin; do
    version=$(basename "$(dirname "$dir")")
    if command -v pg_ctlcluster >/dev/null && pg_ctlcluster "$version" main status >/dev/null 2>&1; then
      pg_ctlcluster "$version" main stop
    fi
  done
fi
