# AttnFlow: `make run` sets up and runs the whole pipeline on the embedded
# synthetic data; `make test` sets up and runs the fast test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/pip
UV := $(BIN)/uv
POSE_VENV := .venv-pose
POSE_STAMP := $(POSE_VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONPATH := $(CURDIR)

# Where the CPU build of torch comes from (requirements/torch-cpu.txt: every CPU lock pins
# torch==2.13.0+cpu by hash). PyPI has only the CUDA build for Linux; the +cpu wheel's home is
# the PyTorch CPU index. Machines that reach PyPI alone keep the wheel in /opt/wheels, which is
# used when it holds it. Nothing else decides the build: uv reads no pip configuration.
TORCH_CPU_WHEELS ?= $(if $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl),/opt/wheels,https://download.pytorch.org/whl/cpu/torch/)
export TORCH_CPU_WHEELS
# An environment is exactly its lock: uv adds, replaces and removes until it matches, checking
# every file against the lock's sha256.
SYNC = $(UV) pip sync --quiet --require-hashes --default-index https://pypi.org/simple --find-links $(TORCH_CPU_WHEELS)

.PHONY: run run-portrait test lint test-slow test-faults bench gpu-check setup setup-pose lock image job-env-check mlflow-ui serve serve-ray serve-ray-stop ablation submit clean-outputs s3-local s3-local-stop

setup: $(STAMP)

# pip installs only uv (hash-pinned, requirements/bootstrap.lock); uv installs the rest from the
# lock. `uv pip check` fails the set-up if the locked set is inconsistent.
$(STAMP): requirements/dev.lock requirements/bootstrap.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --require-hashes --no-deps -r requirements/bootstrap.lock
	$(SYNC) --python $(BIN)/python requirements/dev.lock
	$(UV) pip check --python $(BIN)/python
	$(BIN)/python -c "import torch; assert torch.__version__ == '2.13.0+cpu', torch.__version__"
	$(BIN)/dvc config --local core.analytics false 2>/dev/null || true
	@touch $@

# The pose extra (mediapipe: keypoints and face landmarks from photos) in an environment of its
# own, .venv-pose: dev.lock's set plus the extra, with mediapipe's declarations overridden
# (requirements/pose-overrides.txt); its `uv pip check` names those and nothing else.
setup-pose: $(POSE_STAMP)

$(POSE_STAMP): requirements/pose.lock $(STAMP)
	@test -x $(POSE_VENV)/bin/python || $(PYTHON) -m venv $(POSE_VENV)
	$(SYNC) --python $(POSE_VENV)/bin/python requirements/pose.lock
	infra/pip-check-pose.sh $(UV) $(POSE_VENV)/bin/python
	@touch $@

# The Ray head/worker images (infra/Dockerfile), tagged as infra/rayjob.yaml and infra/cluster.yaml
# name them (tests/test_dependencies.py holds the three together); push them where the cluster
# pulls from. Needs a Docker engine and the rayproject base images.
IMAGE ?= attnflow/ray
IMAGE_TAG ?= 0.1.0
RAY_BASE_IMAGE := rayproject/ray:2.60.0-py311
image:
	docker build -f infra/Dockerfile --build-arg BASE_IMAGE=$(RAY_BASE_IMAGE) \
	  --build-arg LOCK=requirements/worker-cpu.lock -t $(IMAGE):$(IMAGE_TAG)-cpu .
	docker build -f infra/Dockerfile --build-arg BASE_IMAGE=$(RAY_BASE_IMAGE)-gpu \
	  --build-arg LOCK=requirements/worker-cuda.lock -t $(IMAGE):$(IMAGE_TAG)-cuda .

# The RayJob (infra/rayjob.yaml) as submitted, in a new environment holding exactly what the
# worker image installs, on a local Ray head with shards in a local S3 bucket (infra/job-env-check.sh).
job-env-check: $(STAMP)
	infra/job-env-check.sh

# Re-resolve requirements/*.lock from pyproject.toml (requirements/lock.sh; UPGRADE=1 for the newest).
lock: $(STAMP)
	UV=$(UV) requirements/lock.sh

run: $(STAMP)
	$(BIN)/dvc repro
	@$(BIN)/python -m pipelines.summary

# The portrait editing task's training, evaluation and registry (portrait/dvc.yaml; its data
# stages are part of `make run`). Kept out of `make run`: its training budget alone is about as
# long as the default run's time goal on two cores (docs/portrait.md). Registers attnflow-portrait.
run-portrait: $(STAMP)
	$(BIN)/dvc repro portrait/dvc.yaml
	@$(BIN)/python -m pipelines.portrait_eval report metrics/portrait.json

# The fast suite in .venv, then the tests that need the pose extra in .venv-pose, where a missing
# extra fails them rather than skips them.
test: $(STAMP) $(POSE_STAMP)
	$(BIN)/python -m pytest -q
	ATTNFLOW_REQUIRE_POSE=1 $(POSE_VENV)/bin/python -m pytest -q -m pose

# Format, lint and type check of the code folders ([tool.ruff] and [tool.mypy] in pyproject.toml;
# plain mypy checks the folders its configuration names).
lint: $(STAMP)
	$(BIN)/ruff format --check pipelines datasets model
	$(BIN)/ruff check pipelines datasets model
	$(BIN)/mypy

# The slow suite includes the registry UI test in headless Chromium: installed here when missing
# (infra/ensure-chromium.sh: apt-get as root, else it fails saying why); with
# ATTNFLOW_REQUIRE_CHROMIUM=1 that test fails rather than skips without it.
test-slow: $(STAMP)
	infra/ensure-chromium.sh
	ATTNFLOW_REQUIRE_CHROMIUM=1 $(BIN)/python -m pytest -q -m slow

test-faults: $(STAMP)
	$(BIN)/python -m pytest -q -m faults

bench: $(STAMP)
	$(BIN)/python -m pipelines.bench data
	$(BIN)/python -m pipelines.bench model
	$(BIN)/python -m pipelines.bench train

# On a GPU machine: the `gpu` tests, then the GPU training benchmark (reports/bench-gpu.json;
# docs/model.md). Not tied to `setup`: a GPU image brings its own CUDA build of torch.
gpu-check:
	infra/gpu-check.sh

# MLflow UI on 127.0.0.1 over the project's store (mlruns.db); runs in the background.
mlflow-ui: $(STAMP)
	@infra/mlflow-server.sh start
	@echo "registered models: http://127.0.0.1:$${MLFLOW_PORT:-5000}/#/models   (stop: infra/mlflow-server.sh stop)"

# A registered champion as an HTTP service (MLflow pyfunc; docs/serving.md) on 127.0.0.1:SERVE_PORT,
# from .venv-pose, so a request without keypoints gets them from its photo,
# in the foreground (Ctrl-C stops it). MODEL=models:/attnflow-portrait@champion serves the portrait model.
MODEL ?= models:/attnflow-pose@champion
SERVE_PORT ?= 5001
serve: $(POSE_STAMP)
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlruns.db} \
	  $(POSE_VENV)/bin/mlflow models serve -m $(MODEL) --env-manager local -h 127.0.0.1 -p $(SERVE_PORT)

# The same champion on Ray Serve (docs/serving.md): batched, replicated (params.yaml serve.*),
# following MODEL's alias, with mlflow serve's HTTP contract on 127.0.0.1:SERVE_PORT. Runs in the
# background on a local Ray head (infra/ray-head.sh, started here when none runs); serve-ray-stop
# shuts the application down, and the head too when serve-ray started it.
SERVE_RAY_MARK := /tmp/attnflow-serve-ray-started-head
serve-ray: $(STAMP)
	@infra/ray-head.sh status >/dev/null 2>&1 || { infra/ray-head.sh start && touch $(SERVE_RAY_MARK); }
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlruns.db} \
	  $(BIN)/python -m pipelines.serve_ray deploy --model $(MODEL) --port $(SERVE_PORT)
	@echo "stop: make serve-ray-stop"

serve-ray-stop:
	@infra/ray-head.sh status >/dev/null 2>&1 && $(BIN)/python -m pipelines.serve_ray shutdown || true
	@if [ -f $(SERVE_RAY_MARK) ]; then infra/ray-head.sh stop && rm -f $(SERVE_RAY_MARK); fi

# A local S3-compatible server (moto, in memory) on 127.0.0.1:S3_PORT (9000) with bucket S3_BUCKET
# (attnflow), in the background. make cannot set the calling shell's environment: the last line
# printed is what to run there (AWS_ENDPOINT_URL and moto's test credentials, not secrets).
s3-local: $(STAMP)
	@infra/s3-local.sh start
	@echo "then, in this shell:  eval \"\$$(infra/s3-local.sh env)\"   (stop: make s3-local-stop)"
	@infra/s3-local.sh env

s3-local-stop:
	@infra/s3-local.sh stop

# Training as a Ray job on RAY_ADDRESS (the jobs API, default http://127.0.0.1:8265: start a
# local head with infra/ray-head.sh start); streams the job's logs and fails when the job fails.
TRAIN_ARGS ?= --dataset synthetic_fashion
submit: $(STAMP)
	infra/submit.sh $(TRAIN_ARGS)

# The paper's ablation (five variants, one budget; ablation/dvc.yaml), kept out of `make run`.
ablation: $(STAMP)
	$(BIN)/dvc repro ablation/dvc.yaml
	@cat reports/ablation.md
