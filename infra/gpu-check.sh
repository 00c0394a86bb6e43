#!/usr/bin/env bash
# The GPU checks in one go (<= 8 minutes on one GPU): the `gpu` tests (a CUDA step against the CPU
# step, bf16, compiled against eager, a 1-GPU-worker Ray run with checkpoint and resume), then the
# device benchmark through the real training command (Ray, 1 GPU worker, synthetic data at 256x176,
# eager and compiled, batch 32/64/128) into reports/bench-gpu.json. Uses .venv when `make setup`
# made one, else the machine's python3 (a GPU image with CUDA torch, Ray and MLflow installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" - <<'PYEOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"error: make gpu-check needs a CUDA device; torch {torch.__version__} sees none")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} x {torch.cuda.get_device_name()}")
PYEOF
mkdir -p reports
timeout "${GPU_TEST_TIMEOUT:-200}" "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider 2>&1 | tee reports/gpu-tests.log
timeout "${GPU_BENCH_TIMEOUT:-330}" "$PY" -m pipelines.bench train --device cuda --budget-s "${GPU_BENCH_BUDGET:-290}" \
  --out reports/bench-gpu.json
