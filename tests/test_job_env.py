"""make job-env-check (infra/job-env-check.sh): the RayJob's entrypoint, submitted with the
manifest's runtime env to a local Ray head started from a new environment holding exactly what
the worker image installs, succeeds on the tiny profile with shards in a local S3 bucket.
Slow: it installs the worker lock (about a minute with a warm pip cache) and trains on Ray."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_rayjob_runs_in_the_worker_image_environment():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
    done = subprocess.run(["bash", "infra/job-env-check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1500)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-8000:]
    assert "passed: infra/rayjob.yaml's job succeeded" in done.stderr
