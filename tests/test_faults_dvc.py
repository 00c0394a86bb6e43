"""Fault injection, DVC (issue 8, fault 13), ``faults`` suite: a ``dvc repro`` killed in the middle
of a stage reruns cleanly (only the interrupted stage, no stale lock, complete outputs), and a
repro after that runs zero stages.  The full pipeline's "everything, then nothing" is
tests/test_pipeline_e2e.py::test_dvc_repro_runs_every_stage_then_nothing (default suite)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_pipeline_e2e import make_repo_copy, run_dvc, stages_run

pytestmark = pytest.mark.faults

TARGET = "preprocess@synthetic_market"
# Enough market images that preprocessing them takes seconds: on the tiny profile's ten the stage can finish
# between two polls, before the kill it is meant to suffer.
SETTINGS = {"synthesize.synthetic_market.train_identities": 24,
            "synthesize.synthetic_market.views_per_identity": 4}


@pytest.fixture()
def project(tmp_path: Path) -> tuple[Path, dict]:
    work = tmp_path / "copy"
    work.mkdir()
    return work, make_repo_copy(work, SETTINGS, profile="tiny")


def _kill_repro_mid_stage(work: Path, env: dict) -> None:
    """Start ``dvc repro TARGET`` and SIGKILL its whole process group once the stage writes shards."""
    dvc = Path(sys.executable).parent / "dvc"
    staging = work / "data/shards/.synthetic_market.staging"
    proc = subprocess.Popen([str(dvc), "repro", TARGET], cwd=work, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if staging.is_dir() and any(staging.glob("*.tar")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "dvc repro ended before it could be interrupted"
        assert staging.is_dir(), "never saw the preprocess stage write"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)


def test_interrupted_dvc_repro_reruns_only_the_interrupted_stage_then_nothing(project):
    work, env = project
    _kill_repro_mid_stage(work, env)
    out = work / "data/shards/synthetic_market"
    assert not out.exists(), "a partial preprocess output got its final name"
    assert not list((work / "data/shards").rglob("[!.]*.partial"))

    rerun = run_dvc(work, env, "repro", TARGET)  # no stale lock, no manual cleanup
    assert stages_run(rerun.stdout) == [TARGET], rerun.stdout[-3000:]
    assert not (work / "data/shards/.synthetic_market.staging").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    from datasets.files import file_sha256

    assert sorted(p.name for p in out.glob("*.tar")) == sorted(s["name"] for s in manifest["shards"])
    for s in manifest["shards"]:
        assert file_sha256(out / s["name"]) == s["sha256"], s["name"]

    again = run_dvc(work, env, "repro", TARGET)
    assert stages_run(again.stdout) == [], again.stdout
    status = run_dvc(work, env, "status", TARGET)
    assert "changed" not in status.stdout and "modified" not in status.stdout, status.stdout
