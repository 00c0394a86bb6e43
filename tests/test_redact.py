"""No secret is logged: URL credentials and secret environment values never reach output or files."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pipelines.tracking.redact import MASK, redact, secret_values

PASSWORD = "pw-Zq81x7Kd"
TOKEN = "tok-93hfQ0pLm2"
AWS = "aws-Sx0s9dLq4wRt"


@pytest.mark.parametrize("text, hidden", [
    (f"https://alice:{PASSWORD}@mlflow.example.org/api", PASSWORD),
    (f"error talking to http://bob:{PASSWORD}@10.0.0.1:5000 (timeout)", PASSWORD),
    (f"https://{TOKEN}@github.com/org/repo.git", TOKEN),
    (f"s3://bucket/key?X-Amz-Signature={TOKEN}&X-Amz-Date=1", TOKEN),
    (f"http://host/api?token={TOKEN}", TOKEN),
])
def test_url_credentials_are_masked(text: str, hidden: str) -> None:
    out = redact(text, env={})
    assert hidden not in out and MASK in out


def test_plain_urls_and_text_are_left_alone() -> None:
    for text in ("http://127.0.0.1:5000", "sqlite:////tmp/mlruns.db", "s3://bucket/runs/x?versionId=3",
                 "user@example.org wrote 3 files", "models:/attnflow-pose@champion"):
        assert redact(text, env={}) == text


def test_secret_environment_values_are_masked() -> None:
    env = {"MLFLOW_TRACKING_PASSWORD": PASSWORD, "RAY_AUTH_TOKEN": TOKEN, "AWS_SECRET_ACCESS_KEY": AWS,
           "OMP_NUM_THREADS": "2", "MLFLOW_TRACKING_USERNAME": "alice", "GITHUB_TOKEN": "1"}
    assert set(secret_values(env)) == {PASSWORD, TOKEN, AWS}  # short and non-secret values untouched
    out = redact(f"a={PASSWORD} b={TOKEN} c={AWS} threads=2 user=alice", env=env)
    assert out == f"a={MASK} b={MASK} c={MASK} threads=2 user=alice"


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_training_and_evaluation_never_write_or_print_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capfd: pytest.CaptureFixture) -> None:
    """A run against an MLflow server with credentials in its URI (down, so every warning path
    prints it) and secrets in the environment: none of them in the output or any file written."""
    from pipelines import evaluate, train
    from tests.train_fixtures import DATASET, make_tiny_project

    params = make_tiny_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ATTNFLOW_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{PASSWORD}@127.0.0.1:{_dead_port()}")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS)
    for key in ("RAY_ADDRESS", "ATTNFLOW_FAULTS"):
        monkeypatch.delenv(key, raising=False)

    assert train.main(["--params", str(params), "--workers", "0", "--run-name", DATASET]) == 0
    assert evaluate.main(["--params", str(params), "--dataset", DATASET, "--set", "evaluate.threads=1"]) == 0
    out = capfd.readouterr()
    printed = out.out + out.err
    assert "unavailable" in printed  # the outage warning (which names the store) was printed
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "run.json" for p in written) and any(p.name == "journal.jsonl" for p in written)
    for secret in (PASSWORD, TOKEN, AWS):
        assert secret not in printed
        for path in written:
            assert secret.encode() not in path.read_bytes(), path
