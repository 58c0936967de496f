#!/usr/bin/env bash
# Bring up (or down) the Ouroboros IRMd and the layers the cicada-ouroboros
# tests use. Ouroboros is optional: without it this prints a note and exits 0.
#
#   .ci/ouroboros.sh up    start irmd (as root, in the background) unless one
#                          already answers, and create the layers:
#                            local_layer  (ipcpd-local,  IPCP local_ipcp)
#                            udp_layer    (ipcpd-udp4 on 127.0.0.1, IPCP udp_ipcp)
#                            bc_layer     (ipcpd-broadcast, IPCP bc_ipcp; flow_join)
#   .ci/ouroboros.sh down  stop what `up` started, with SIGTERM, and wait
#
# Ouroboros processes are only ever stopped with SIGTERM: SIGKILL can wedge
# the IRMd's shared packet pool.
set -uo pipefail

STATE_DIR=${OUROBOROS_CI_STATE:-/run/cicada-ouroboros}
[ -w "$(dirname "$STATE_DIR")" ] || STATE_DIR=/tmp/cicada-ouroboros
SOCK=/var/run/ouroboros/irm.sock
LOCAL_LAYER=${OUROBOROS_LOCAL_LAYER:-local_layer}
UDP_LAYER=${OUROBOROS_UDP_LAYER:-udp_layer}
UDP_PORT=${OUROBOROS_UDP_PORT:-3435}
BC_LAYER=${OUROBOROS_BC_LAYER:-bc_layer}

note() { echo "ouroboros.sh: $*"; }

irmd_bin() { command -v irmd || { [ -x /usr/local/sbin/irmd ] && echo /usr/local/sbin/irmd; } || { [ -x /usr/sbin/irmd ] && echo /usr/sbin/irmd; }; }
irm_bin() { command -v irm || { [ -x /usr/local/sbin/irm ] && echo /usr/local/sbin/irm; } || { [ -x /usr/sbin/irm ] && echo /usr/sbin/irm; }; }

# Does an IRMd answer? `irm ipcp list` talks to it; bounded by timeout.
answering() {
  [ -S "$SOCK" ] && timeout 3 "$(irm_bin)" ipcp list >/dev/null 2>&1
}

has_layer() { timeout 3 "$(irm_bin)" ipcp list 2>/dev/null | grep -q "| *$1 *|"; }

up() {
  local irmd irm
  irmd=$(irmd_bin) || true
  irm=$(irm_bin) || true
  if [ -z "$irmd" ] || [ -z "$irm" ]; then
    note "Ouroboros (irmd/irm) is not installed: its tests will report SKIPPED"
    return 0
  fi
  mkdir -p "$STATE_DIR"
  if answering; then
    note "an IRMd already answers on $SOCK: using it"
  else
    if [ "$(id -u)" != 0 ]; then
      note "not root: cannot start irmd; Ouroboros tests will report SKIPPED"
      return 0
    fi
    if [ -S "$SOCK" ]; then
      note "removing stale socket $SOCK"
      rm -f "$SOCK"
    fi
    # No IRMd answers, so no process uses the shared memory an earlier one's
    # processes left behind: a process that ended with flows open leaves its
    # ring buffers (/dev/shm/ouroboros.rbuff.PID.FLOW), and a later process
    # given the same pid (pid_max is often 32768) cannot create its own, so
    # the IRMd fails its allocations ("Failed to create flow structs").
    stale=$(find /dev/shm -maxdepth 1 -name 'ouroboros.*' 2>/dev/null | wc -l)
    if [ "$stale" -gt 0 ]; then
      note "removing $stale stale Ouroboros files from /dev/shm"
      find /dev/shm -maxdepth 1 -name 'ouroboros.*' -delete
    fi
    "$irmd" --stdout >"$STATE_DIR/irmd.log" 2>&1 &
    echo $! >"$STATE_DIR/irmd.pid"
    for _ in $(seq 1 50); do
      answering && break
      sleep 0.1
    done
    if ! answering; then
      note "irmd did not come up (log: $STATE_DIR/irmd.log)"
      return 1
    fi
    note "started irmd, pid $(cat "$STATE_DIR/irmd.pid")"
  fi
  if ! has_layer "$LOCAL_LAYER"; then
    timeout 10 "$irm" ipcp bootstrap type local name local_ipcp layer "$LOCAL_LAYER" \
      && note "created layer $LOCAL_LAYER" || note "could not create $LOCAL_LAYER"
  fi
  if ! has_layer "$UDP_LAYER"; then
    timeout 10 "$irm" ipcp bootstrap type udp4 name udp_ipcp layer "$UDP_LAYER" \
      ip 127.0.0.1 port "$UDP_PORT" \
      && note "created layer $UDP_LAYER on 127.0.0.1:$UDP_PORT" || note "could not create $UDP_LAYER"
  fi
  if ! has_layer "$BC_LAYER"; then
    timeout 10 "$irm" ipcp bootstrap type broadcast name bc_ipcp layer "$BC_LAYER" \
      && note "created broadcast layer $BC_LAYER" || note "could not create $BC_LAYER"
  fi
  return 0
}

down() {
  local pidf="$STATE_DIR/irmd.pid" pid
  if [ ! -f "$pidf" ]; then
    note "no irmd started by up: nothing to stop"
    return 0
  fi
  pid=$(cat "$pidf")
  if kill -0 "$pid" 2>/dev/null; then
    # The IRMd stops its IPCPs and processes itself on SIGTERM.
    kill -TERM "$pid"
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      note "irmd $pid still running after 10 s (not killing it harder)"
      return 1
    fi
    note "stopped irmd $pid"
  fi
  rm -f "$pidf"
  return 0
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
