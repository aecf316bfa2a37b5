#!/usr/bin/env bash
# ensure-dockerd.sh - make sure a Docker engine answers on this machine.
#
# Idempotent: if `docker info` already works, it does nothing. Otherwise it
# installs docker.io (only when dockerd is missing), starts
#   dockerd --bridge=none --iptables=false
# in the background (no default bridge network: containers use host
# networking), logs to $DOCKERD_LOG, records the PID in $DOCKERD_PIDFILE so
# that stop-dockerd.sh stops only an engine we started, and waits (bounded by
# $DOCKERD_TIMEOUT seconds) until `docker info` answers.
set -euo pipefail

PIDFILE=${DOCKERD_PIDFILE:-/run/propensity-dockerd.pid}
LOG=${DOCKERD_LOG:-/var/log/propensity-dockerd.log}
TIMEOUT=${DOCKERD_TIMEOUT:-60}

docker_up() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }
ours_alive() { [[ -s $PIDFILE ]] && [[ $(cat "/proc/$(cat "$PIDFILE")/comm" 2>/dev/null) == dockerd ]]; }

docker_up && exit 0

if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
  echo "ensure-dockerd: installing docker.io" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

if ours_alive; then
  echo "ensure-dockerd: dockerd $(cat "$PIDFILE") already started by us; waiting" >&2
else
  mkdir -p "$(dirname "$PIDFILE")" "$(dirname "$LOG")"
  # setsid: own session, so the engine outlives this shell and its terminal.
  setsid dockerd --bridge=none --iptables=false </dev/null >>"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  echo "ensure-dockerd: started dockerd pid $(cat "$PIDFILE") (log $LOG, pidfile $PIDFILE)" >&2
fi

for ((i = 0; i < TIMEOUT; i++)); do
  docker_up && exit 0
  ours_alive || { echo "ensure-dockerd: dockerd exited; tail of $LOG:" >&2; tail -n 20 "$LOG" >&2; rm -f "$PIDFILE"; exit 1; }
  sleep 1
done
echo "ensure-dockerd: docker info did not answer within ${TIMEOUT}s; see $LOG" >&2
exit 1
