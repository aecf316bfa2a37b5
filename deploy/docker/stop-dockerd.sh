#!/usr/bin/env bash
# stop-dockerd.sh - stop the Docker engine only if ensure-dockerd.sh started it.
#
# Reads the PID from $DOCKERD_PIDFILE; does nothing when the pidfile is absent
# (an engine someone else runs is left alone). Sends SIGTERM, waits up to
# $DOCKERD_STOP_TIMEOUT seconds for a clean shutdown, then removes the pidfile.
set -euo pipefail

PIDFILE=${DOCKERD_PIDFILE:-/run/propensity-dockerd.pid}
TIMEOUT=${DOCKERD_STOP_TIMEOUT:-30}

[[ -s $PIDFILE ]] || { echo "stop-dockerd: no $PIDFILE; not ours, nothing to do" >&2; exit 0; }
pid=$(cat "$PIDFILE")
if [[ $(cat "/proc/$pid/comm" 2>/dev/null) != dockerd ]]; then
  echo "stop-dockerd: pid $pid is not a running dockerd; removing stale $PIDFILE" >&2
  rm -f "$PIDFILE"
  exit 0
fi
kill -TERM "$pid"
for ((i = 0; i < TIMEOUT; i++)); do
  [[ -d /proc/$pid ]] || break
  sleep 1
done
if [[ -d /proc/$pid ]]; then
  echo "stop-dockerd: dockerd $pid still running after ${TIMEOUT}s; sending SIGKILL" >&2
  kill -KILL "$pid"
fi
rm -f "$PIDFILE"
echo "stop-dockerd: stopped dockerd $pid" >&2
