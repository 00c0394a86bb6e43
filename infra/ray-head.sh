#!/usr/bin/env bash
# Start, stop or inspect a local Ray head for AttnFlow, bound to 127.0.0.1 (dashboard included).
#
#   infra/ray-head.sh start     # GCS on 127.0.0.1:${RAY_PORT:-6379}, dashboard http://127.0.0.1:${RAY_DASHBOARD_PORT:-8265}
#                               # RAY_START_ARGS: more `ray start` options (e.g. other ports)
#   infra/ray-head.sh status
#   infra/ray-head.sh stop      # stops only the processes this head started (never `ray stop`,
#                               # which would take down every Ray instance on a shared machine)
#
# Then: `make submit` (or RAY_ADDRESS=127.0.0.1:6379 python -m pipelines.train ...).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${BIN:-$ROOT/.venv/bin}
PORT=${RAY_PORT:-6379}
DASH_PORT=${RAY_DASHBOARD_PORT:-8265}
NUM_CPUS=${RAY_NUM_CPUS:-$(getconf _NPROCESSORS_ONLN)}  # not nproc: it obeys OMP_NUM_THREADS
# A temp dir of our own: Ray's default /tmp/ray (and its "current cluster" file) stay untouched.
TEMP_DIR=${RAY_TEMP_DIR:-/tmp/attnflow-ray-$PORT}
# Every process of this head inherits this variable; `stop` finds them by it.
MARK="ATTNFLOW_RAY_HEAD=$PORT"

head_pids() {
  local pid
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    if { tr '\0' '\n' < "/proc/$pid/environ"; } 2>/dev/null | grep -qx "$MARK"; then
      echo "$pid"
    fi
  done
}

case "${1:-}" in
  start)
    if [ -n "$(head_pids)" ]; then
      echo "ray-head: already running (port $PORT); dashboard http://127.0.0.1:$DASH_PORT"; exit 0
    fi
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes Ray use 127.0.0.1 as the node address, so every
    # server binds to loopback only (without it Ray swaps 127.0.0.1 for the machine's routable IP).
    # PATH: a submitted job's `python` must be this venv's interpreter.
    env "$MARK" RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 PATH="$BIN:$PATH" \
      "$BIN/ray" start --head --node-ip-address=127.0.0.1 --port="$PORT" \
        --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$DASH_PORT" \
        --num-cpus="$NUM_CPUS" --temp-dir="$TEMP_DIR" --disable-usage-stats ${RAY_START_ARGS:-} >/dev/null
    # `ray start` returns before the dashboard answers; wait for it (up to 2 min). Any HTTP
    # answer counts, 401 included: the API wants the cluster's token, which `ray job` sends.
    for _ in $(seq 240); do
      "$BIN/python" - "$DASH_PORT" 2>/dev/null <<'PY' && break
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/version", timeout=1)
except urllib.error.HTTPError:
    pass
PY
      sleep 0.5
    done
    echo "ray-head: started on 127.0.0.1:$PORT ($NUM_CPUS CPUs); dashboard http://127.0.0.1:$DASH_PORT"
    echo "  submit: make submit            (RAY_ADDRESS=http://127.0.0.1:$DASH_PORT)"
    echo "  driver: RAY_ADDRESS=127.0.0.1:$PORT python -m pipelines.train ..."
    ;;
  status)
    pids=$(head_pids)
    if [ -z "$pids" ]; then echo "ray-head: not running (port $PORT)"; exit 1; fi
    echo "ray-head: running (port $PORT), $(echo "$pids" | wc -l) processes; dashboard http://127.0.0.1:$DASH_PORT"
    ;;
  stop)
    pids=$(head_pids)
    if [ -z "$pids" ]; then echo "ray-head: not running (port $PORT)"; exit 0; fi
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 30); do
      sleep 0.5
      [ -z "$(head_pids)" ] && break
    done
    # A dying raylet may still respawn an agent, late on a loaded machine (agents were seen
    # surviving a 2 s quiet window): keep killing until nothing with the mark is left for 5 s.
    quiet=0
    for _ in $(seq 90); do
      left=$(head_pids)
      if [ -z "$left" ]; then
        quiet=$((quiet + 1)); [ "$quiet" -ge 10 ] && break
      else
        quiet=0; kill -KILL $left 2>/dev/null || true
      fi
      sleep 0.5
    done
    [ -n "$(head_pids)" ] && { echo "ray-head: some processes survived: $(head_pids | tr '\n' ' ')" >&2; exit 1; }
    echo "ray-head: stopped (port $PORT)"
    ;;
  *)
    echo "usage: infra/ray-head.sh start|status|stop   (env: RAY_PORT, RAY_DASHBOARD_PORT, RAY_NUM_CPUS)" >&2
    exit 2
    ;;
esac
