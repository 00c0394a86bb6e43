#!/usr/bin/env bash
# Start, stop or inspect an MLflow tracking server on 127.0.0.1 with a SQLite backend.
#
#   infra/mlflow-server.sh start    # http://127.0.0.1:${MLFLOW_PORT:-5000}, store mlruns.db, artifacts mlartifacts/
#   infra/mlflow-server.sh status
#   infra/mlflow-server.sh stop
#
# Then point training at it:  MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python -m pipelines.train ...
# (without MLFLOW_TRACKING_URI, training writes the same SQLite file directly).
# Env: MLFLOW_PORT, MLFLOW_BACKEND (default sqlite:///<repo>/mlruns.db), MLFLOW_ARTIFACTS (default <repo>/mlartifacts).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${BIN:-$ROOT/.venv/bin}
PORT=${MLFLOW_PORT:-5000}
BACKEND=${MLFLOW_BACKEND:-sqlite:///$ROOT/mlruns.db}
ARTIFACTS=${MLFLOW_ARTIFACTS:-$ROOT/mlartifacts}
STATE=${MLFLOW_STATE_DIR:-/tmp/attnflow-mlflow-$PORT}
PIDFILE=$STATE/server.pid
LOG=$STATE/server.log

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-}" in
  start)
    if running; then echo "mlflow-server: already running on http://127.0.0.1:$PORT"; exit 0; fi
    mkdir -p "$STATE" "$ARTIFACTS"
    # Own process group (setsid), so `stop` ends the server and its gunicorn/uvicorn worker together.
    # --workers 1: one worker is plenty for one training run and keeps SQLite writes serial.
    setsid "$BIN/mlflow" server --host 127.0.0.1 --port "$PORT" --workers 1 \
      --backend-store-uri "$BACKEND" --artifacts-destination "$ARTIFACTS" --serve-artifacts \
      >"$LOG" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    # A wall-clock limit (not a count of tries, each of which starts a Python): the server's
    # start-up alone took 73 s on a 2-core machine that was also training.
    deadline=$((SECONDS + ${MLFLOW_START_TIMEOUT:-180}))
    while [ "$SECONDS" -lt "$deadline" ]; do
      if "$BIN/python" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=1)" 2>/dev/null; then
        echo "mlflow-server: http://127.0.0.1:$PORT  (store $BACKEND, artifacts $ARTIFACTS, log $LOG)"; exit 0
      fi
      running || { echo "mlflow-server: failed to start; see $LOG" >&2; tail -5 "$LOG" >&2; exit 1; }
      sleep 0.5
    done
    echo "mlflow-server: not answering after ${MLFLOW_START_TIMEOUT:-180} s (MLFLOW_START_TIMEOUT); see $LOG" >&2; exit 1
    ;;
  status)
    if running; then echo "mlflow-server: running on http://127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"; else echo "mlflow-server: not running"; exit 1; fi
    ;;
  stop)
    if ! running; then echo "mlflow-server: not running"; rm -f "$PIDFILE"; exit 0; fi
    pid=$(cat "$PIDFILE")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
    echo "mlflow-server: stopped"
    ;;
  *)
    echo "usage: infra/mlflow-server.sh start|status|stop   (env: MLFLOW_PORT, MLFLOW_BACKEND, MLFLOW_ARTIFACTS)" >&2
    exit 2
    ;;
esac
