#!/usr/bin/env bash
# make job-env-check: does the RayJob run in the environment the worker image ships?
#
#   1. a new virtual environment holding exactly what infra/Dockerfile installs (its LOCK, through
#      infra/install-lock.sh, `pip check` included); nothing of .venv reaches the job
#   2. a local Ray head started from it (infra/ray-head.sh, on free ports, its own temp dir)
#   3. the tiny profile's synthetic_fashion shards in a local S3 bucket (moto, infra/s3-local.sh)
#   4. the manifest's entrypoint submitted with `ray job submit` from that environment, with the
#      manifest's runtime env: working_dir a copy of this repository without data/, runs/ or the
#      virtual environments; its env_vars, with ATTNFLOW_ROOT, MLFLOW_TRACKING_URI and the S3
#      client settings pointed at this machine. The entrypoint's --params become the tiny profile,
#      on one Ray Train CPU worker with the shards in the bucket; every other argument is kept.
#   5. exit 0 when the job succeeded; the job's log otherwise.
#
# Env: MANIFEST (infra/rayjob.yaml), WORKER_LOCK (the Dockerfile's LOCK), KEEP=1 keeps the work
# folder (printed). Needs .venv (make setup) for the S3 server and the shards only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MANIFEST=${MANIFEST:-infra/rayjob.yaml}
WORKER_LOCK=${WORKER_LOCK:-$(sed -n 's/^ARG LOCK=//p' infra/Dockerfile)}
DEV=$ROOT/.venv/bin
WORK=$(mktemp -d /tmp/attnflow-job-env-check.XXXXXX)
VENV=$WORK/worker-venv
free_port() { "$DEV/python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
RAY_PORT=$(free_port) DASH_PORT=$(free_port) S3_PORT=$(free_port)
export RAY_PORT RAY_DASHBOARD_PORT=$DASH_PORT RAY_TEMP_DIR=$WORK/ray RAY_NUM_CPUS=2 S3_PORT S3_STATE_DIR=$WORK/s3
export RAY_START_ARGS="--dashboard-agent-listen-port=$(free_port) --ray-client-server-port=$(free_port) --object-store-memory=200000000"
log() { echo "job-env-check: $*" >&2; }

cleanup() {
  BIN=$VENV/bin infra/ray-head.sh stop >/dev/null 2>&1 || true
  BIN=$DEV infra/s3-local.sh stop >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

log "worker environment from $WORKER_LOCK (as infra/Dockerfile installs it) in $VENV"
t0=$SECONDS
env -u PYTHONPATH infra/install-lock.sh "$VENV" "$WORKER_LOCK"
log "installed in $((SECONDS - t0)) s; pip check passed"

log "shards: tiny profile's synthetic_fashion into s3://attnflow/shards/synthetic_fashion (moto on 127.0.0.1:$S3_PORT)"
BIN=$DEV infra/s3-local.sh start >/dev/null
eval "$(BIN=$DEV infra/s3-local.sh env)"
"$DEV/python" -m pipelines.synthesize --params profiles/tiny.yaml --dataset synthetic_fashion \
  --out "$WORK/raw" --no-contact --no-progress >/dev/null
"$DEV/python" -m pipelines.preprocess --params profiles/tiny.yaml --dataset synthetic_fashion \
  --root "$WORK/raw" --out s3://attnflow/shards/synthetic_fashion --no-figure --quiet \
  --metrics "$WORK/preprocess.json" --receipt "$WORK/receipt" >/dev/null

log "working_dir: a copy of the repository without data/, runs/ or the virtual environments"
mkdir -p "$WORK/code" "$WORK/root"
tar -C "$ROOT" --exclude=./data --exclude=./runs --exclude=./.venv --exclude=./.venv-pose --exclude=./.git \
  --exclude=./mlruns --exclude=./mlruns.db --exclude=./mlartifacts --exclude=./.dvc/cache --exclude=./.dvc/tmp \
  --exclude=./reports --exclude=./metrics --exclude=./plots --exclude=./tmp -cf - . | tar -C "$WORK/code" -xf -

# The job as the manifest declares it, pointed at this machine (pipelines/jobs/manifests.py).
JOB_JSON=$(MANIFEST="$MANIFEST" WORK="$WORK" env -u PYTHONPATH PYTHONPATH="$ROOT" "$VENV/bin/python" - <<'PY'
import json, os, shlex
from pathlib import Path
import yaml
from pipelines.jobs import manifests

path = Path(os.environ["MANIFEST"]).resolve()
job = next(d for d in manifests.load(path) if manifests.kind(d) == "rayjob")
argv = manifests.train_argv(job["spec"]["entrypoint"])
if argv is None:
    raise SystemExit(f"{path}: spec.entrypoint is not python -m pipelines.train")
kept, skip = [], False
for arg in argv:  # the manifest's profile is for its GPUs; the environment is what is checked here
    if skip:
        skip = False
    elif arg == "--params":
        skip = True
    elif not arg.startswith("--params="):
        kept.append(arg)
entry = ["python", "-m", "pipelines.train", "--params", "profiles/tiny.yaml", *kept,
         "--set", "datasets.synthetic_fashion.shards=s3://attnflow/shards/synthetic_fashion",
         "--set", "train.dataset=synthetic_fashion", "--set", "train.workers=1", "--set", "train.device=cpu",
         "--run-name", "job-env-check"]
env = yaml.safe_load(job["spec"].get("runtimeEnvYAML") or "{}") or {}
work = os.environ["WORK"]
env["working_dir"] = f"{work}/code"
env_vars = {k: str(v) for k, v in (env.get("env_vars") or {}).items()}
env_vars.update({"ATTNFLOW_ROOT": f"{work}/root", "MLFLOW_TRACKING_URI": f"sqlite:///{work}/root/mlruns.db"})
env_vars.update({k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EC2_METADATA_DISABLED")})
env["env_vars"] = env_vars
print(json.dumps({"runtime_env": env, "entrypoint": shlex.join(entry)}))
PY
)
RUNTIME_ENV=$("$DEV/python" -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["runtime_env"]))' "$JOB_JSON")
ENTRYPOINT=$("$DEV/python" -c 'import json,sys; print(json.loads(sys.argv[1])["entrypoint"])' "$JOB_JSON")

log "Ray head from the worker environment on 127.0.0.1:$RAY_PORT (jobs API http://127.0.0.1:$DASH_PORT)"
env -u PYTHONPATH BIN="$VENV/bin" infra/ray-head.sh start >/dev/null

log "ray job submit -- $ENTRYPOINT"
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
set +e
for attempt in $(seq 36); do  # a new head's job agent may not be registered yet (infra/submit.sh)
  env -u PYTHONPATH "$VENV/bin/ray" job submit --address "http://127.0.0.1:$DASH_PORT" \
    --runtime-env-json "$RUNTIME_ENV" -- $ENTRYPOINT >"$WORK/job.log" 2>&1
  rc=$?
  grep -q "No available agent to submit job" "$WORK/job.log" || break
  sleep 5
done
set -e
if [ "$rc" -ne 0 ]; then
  cat "$WORK/job.log" >&2
  log "FAILED: the job did not succeed in the worker image's environment (ray job submit exit $rc)"
  exit 1
fi
grep -E "done: |Job '.*' succeeded" "$WORK/job.log" >&2 || true
log "passed: $MANIFEST's job succeeded in $WORKER_LOCK's environment ($((SECONDS - t0)) s)"
