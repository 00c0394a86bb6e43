#!/usr/bin/env bash
# A local S3-compatible server (moto in server mode) on 127.0.0.1 with one bucket, for running the
# pipeline with shards and checkpoints on object storage without a cloud account.
#
#   infra/s3-local.sh start     # http://127.0.0.1:${S3_PORT:-9000}, bucket ${S3_BUCKET:-attnflow}
#   eval "$(infra/s3-local.sh env)"   # AWS_ENDPOINT_URL and test credentials for s3fs, pyarrow, boto3
#   infra/s3-local.sh status
#   infra/s3-local.sh stop      # the server keeps everything in memory: stopping it empties the bucket
#
# Env: S3_PORT, S3_BUCKET. The credentials are moto's test values, not secrets.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${BIN:-$ROOT/.venv/bin}
PORT=${S3_PORT:-9000}
BUCKET=${S3_BUCKET:-attnflow}
STATE=${S3_STATE_DIR:-/tmp/attnflow-s3-$PORT}
PIDFILE=$STATE/server.pid
LOG=$STATE/server.log
ENDPOINT=http://127.0.0.1:$PORT

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
print_env() {
  echo "export AWS_ENDPOINT_URL=$ENDPOINT AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing" \
       "AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true"
}

case "${1:-}" in
  start)
    if running; then echo "s3-local: already running on $ENDPOINT"; exit 0; fi
    mkdir -p "$STATE"
    setsid "$BIN/moto_server" -H 127.0.0.1 -p "$PORT" >"$LOG" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    for _ in $(seq 120); do
      if "$BIN/python" -c "import urllib.request; urllib.request.urlopen('$ENDPOINT/moto-api/', timeout=1)" 2>/dev/null; then
        AWS_ENDPOINT_URL=$ENDPOINT AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "$BIN/python" -c \
          "import boto3; boto3.client('s3', region_name='us-east-1').create_bucket(Bucket='$BUCKET')"
        echo "s3-local: $ENDPOINT, bucket s3://$BUCKET (log $LOG); for clients: eval \"\$(infra/s3-local.sh env)\""
        exit 0
      fi
      running || { echo "s3-local: failed to start; see $LOG" >&2; tail -5 "$LOG" >&2; exit 1; }
      sleep 0.5
    done
    echo "s3-local: not answering after 60 s; see $LOG" >&2; exit 1
    ;;
  env)
    print_env
    ;;
  status)
    if running; then echo "s3-local: running on $ENDPOINT (pid $(cat "$PIDFILE"))"; else echo "s3-local: not running"; exit 1; fi
    ;;
  stop)
    if ! running; then echo "s3-local: not running"; rm -f "$PIDFILE"; exit 0; fi
    pid=$(cat "$PIDFILE")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
    echo "s3-local: stopped"
    ;;
  *)
    echo "usage: infra/s3-local.sh start|env|status|stop   (env: S3_PORT, S3_BUCKET)" >&2
    exit 2
    ;;
esac
