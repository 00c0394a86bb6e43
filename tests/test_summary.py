"""pipelines.summary: the training runs and the registered models it lists, read through pipelines.runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import summary
from pipelines.runs.folder import RunFolder
from tests.test_runs import SUMMARY


def test_lists_trained_runs_and_the_models_their_receipts_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    asked: list[list[str]] = []
    monkeypatch.setattr(summary, "registry_lines", lambda names: asked.append(names) or [f"{n}: ok" for n in names])
    trained, stopped = RunFolder.of("trained", root=tmp_path), RunFolder.of("stopped", root=tmp_path)
    stopped.path.mkdir(parents=True)  # no summary: not listed
    trained.path.mkdir(parents=True)
    trained.summary.write_text(json.dumps(SUMMARY, indent=2))
    receipt = {"model_name": "attnflow-pose", "version": "1", "model_uri": "models:/attnflow-pose/1", "promoted": True,
               "reason": "first", "champion_version": "1", "promotion": None, "primary_metric": "ssim", "value": 0.5,
               "protocol_sha256": "p" * 64}
    trained.registered("tiny").write_text(json.dumps(receipt))
    stopped.registered("other").write_text(json.dumps({**receipt, "model_name": "attnflow-portrait"}))
    assert summary.main([]) == 0
    out = capsys.readouterr().out
    assert "training run     runs/trained/" in out and "runs/stopped/" not in out
    assert asked == [["attnflow-portrait", "attnflow-pose"]] and "registered model attnflow-pose: ok" in out
