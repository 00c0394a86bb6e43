"""Fault injection, job submission (issue 8, fault 14), default suite: a bad runtime env or a working
dir over Ray's upload limit fails at once with a message naming the problem, before any cluster is
contacted (no upload, no job left PENDING).  A good job on a local head: tests/test_train_slow.py::
test_ray_job_on_local_head_succeeds (slow)."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipelines.job_preflight import PreflightError, check_runtime_env

ROOT = Path(__file__).resolve().parents[1]


def _dead_address() -> str:
    with socket.socket() as s:  # a port nothing listens on: any contact attempt would fail slowly
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _submit(tmp_path: Path, runtime_env: dict, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    path = tmp_path / "runtime_env.yaml"
    path.write_text(yaml.safe_dump(runtime_env))
    full = {**os.environ, "RUNTIME_ENV": str(path), "RAY_ADDRESS": _dead_address(),
            "BIN": str(Path(os.sys.executable).parent), **env}
    start = time.monotonic()
    proc = subprocess.run(["bash", "infra/submit.sh", "--dataset", "synthetic_fashion"], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=120)
    return proc, time.monotonic() - start


def _project_env() -> dict:
    return yaml.safe_load((ROOT / "infra/runtime_env.yaml").read_text())


@pytest.mark.parametrize("change,message", [
    ({"pipp": ["torch"]}, "unknown field(s) pipp"),
    ({"pip": 5}, "runtime_env['pip'] must be of type str or List[str]"),
    ({"working_dir": "no/such/folder"}, "no/such/folder is not a valid path"),
])
def test_bad_runtime_env_fails_fast_with_a_clear_message(tmp_path, change, message):
    env = {**_project_env(), **change}
    proc, took = _submit(tmp_path, env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: runtime env") and message in proc.stderr
    assert "submit: http" not in proc.stderr  # never got to submit
    assert took < 30


def test_runtime_env_types_are_checked():
    with pytest.raises(PreflightError, match="env_vars must map names to strings"):
        check_runtime_env({"env_vars": {"OMP_NUM_THREADS": 1}})
    with pytest.raises(PreflightError, match="excludes must be a list"):
        check_runtime_env({"excludes": "/data/"})


def test_working_dir_over_the_upload_limit_fails_fast_naming_the_largest_files(tmp_path):
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "code.py").write_text("print('hi')\n")
    (work / "data" / "huge.bin").write_bytes(os.urandom(3 * 2**20))  # incompressible
    (work / "small.bin").write_bytes(os.urandom(2**19))
    env = {"working_dir": str(work)}
    with pytest.raises(PreflightError) as exc:
        check_runtime_env(env, limit=2**21)
    text = str(exc.value)
    assert "over Ray's upload limit of 2.0 MiB" in text and "data/huge.bin (3.0 MiB)" in text
    assert text.index("data/huge.bin") < text.index("small.bin")  # largest first
    # The same folder with the big file excluded (as infra/runtime_env.yaml excludes /data/) passes.
    assert check_runtime_env({**env, "excludes": ["/data/"]}, limit=2**21)
    (work / ".gitignore").write_text("data/\n")  # Ray also honours .gitignore; so does the check
    assert check_runtime_env(env, limit=2**21)


def test_submit_script_refuses_a_working_dir_over_the_limit_before_contacting_ray(tmp_path):
    # Ray's limit is the gRPC message size (RAY_max_grpc_message_size); 64 KiB makes the repository too big.
    proc, took = _submit(tmp_path, _project_env(), RAY_max_grpc_message_size=str(64 * 1024))
    assert proc.returncode == 2, proc.stderr
    assert "over Ray's upload limit of 0.1 MiB" in proc.stderr and "largest files:" in proc.stderr
    assert "submit: http" not in proc.stderr and took < 60
