#!/usr/bin/env bash
# Submit training as a Ray job, stream its logs, and exit with the job's status (0 = succeeded).
#
#   infra/submit.sh [pipelines.train arguments]      e.g. infra/submit.sh --dataset synthetic_fashion --workers 2
#   make submit TRAIN_ARGS="--dataset synthetic_fashion --workers 2"
#   make submit TRAIN_ARGS="--params profiles/deepfashion-paper-gpu.yaml"   (the paper run, on GPUs)
#
# RAY_ADDRESS   the cluster's jobs API (dashboard), default http://127.0.0.1:8265 (infra/ray-head.sh start)
# RUNTIME_ENV   default infra/runtime_env.yaml (the code only: the job runs on the head's and
#               workers' Python, the locked set: .venv for a local head, the worker image on a
#               cluster; nothing is pip-installed per job)
# ATTNFLOW_ROOT where data/, runs/ and the default MLflow store live for the job: default this
#               repository for a local head; on a cluster, the shared mount (see docs/cluster.md).
# MLFLOW_TRACKING_URI, ATTNFLOW_FAULTS are passed to the job when set, and so are the object-store
#               client settings (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, ...: datasets/storage.py
#               CLIENT_ENV) for shards and checkpoints in a bucket; the access keys only to a head on
#               127.0.0.1 (a job's env vars show in the dashboard; cluster nodes use their own roles).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${BIN:-$ROOT/.venv/bin}
ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
case "$ADDRESS" in
  http://*|https://*) ;;
  *) echo "submit: RAY_ADDRESS must be the jobs API URL (http://HOST:8265), got '$ADDRESS'" >&2; exit 2 ;;
esac
LOCAL=0
case "$ADDRESS" in http://127.0.0.1:*|http://localhost:*) LOCAL=1 ;; esac
if [ "$LOCAL" = 1 ]; then
  JOB_ROOT=${ATTNFLOW_ROOT:-$ROOT}
else
  JOB_ROOT=${ATTNFLOW_ROOT:-}
fi

RUNTIME_ENV_JSON=$(RUNTIME_ENV="${RUNTIME_ENV:-infra/runtime_env.yaml}" JOB_ROOT="$JOB_ROOT" LOCAL="$LOCAL" \
  "$BIN/python" - <<'PY'
import json, os, yaml
from datasets.storage import client_env
env = yaml.safe_load(open(os.environ["RUNTIME_ENV"]))
if isinstance(env.get("pip"), str):  # a requirements file: read here, on the submitting machine
    lines = [l.split("#")[0].strip() for l in open(env["pip"])]
    env["pip"] = {"packages": [l for l in lines if l], "pip_check": False}
env_vars = {k: str(v) for k, v in (env.get("env_vars") or {}).items()}
for key in ("MLFLOW_TRACKING_URI", "ATTNFLOW_FAULTS"):
    if os.environ.get(key):
        env_vars[key] = os.environ[key]
env_vars.update(client_env(credentials=os.environ["LOCAL"] == "1"))
if os.environ["JOB_ROOT"]:
    env_vars["ATTNFLOW_ROOT"] = os.environ["JOB_ROOT"]
env["env_vars"] = env_vars
print(json.dumps(env))
PY
)

# Fail here, at once, on a runtime env Ray would reject late (unknown field, wrong type) or a
# working dir over Ray's upload limit, instead of after an upload or with a job stuck in PENDING.
"$BIN/python" -m pipelines.job_preflight "$RUNTIME_ENV_JSON" || exit 2

echo "submit: $ADDRESS  python -m pipelines.train $*  ${JOB_ROOT:+ (ATTNFLOW_ROOT=$JOB_ROOT)}" >&2
# Ray 2.60 clusters use token authentication; the token comes from ~/.ray/auth_token or RAY_AUTH_TOKEN.
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
# A head that has just started may not have registered its job agent yet; that refusal comes
# before any job exists, so retrying it cannot start the training twice.
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
for attempt in $(seq 36); do
  set +e
  "$BIN/ray" job submit --address "$ADDRESS" --runtime-env-json "$RUNTIME_ENV_JSON" \
    -- python -m pipelines.train "$@" 2>&1 | tee "$LOG"
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ] && grep -q "No available agent to submit job" "$LOG"; then
    echo "submit: the head's job agent is not ready yet; retrying in 5 s ($attempt/36)" >&2
    sleep 5
    continue
  fi
  exit "$rc"
done
exit "$rc"
