"""`python -m pipelines.portrait_eval report metrics/portrait.json` (the last step of `make
run-portrait`): it reads the evaluation record beside the scores file, which holds the dataset and
the protocol, and shows a dash where a baseline has no score."""
from __future__ import annotations

import json
from pathlib import Path

from pipelines import portrait_eval


def _write(tmp_path: Path) -> Path:
    scores = {"model": {"ssim": 0.6, "fd_x": 5.4, "landmark_nme": 0.08},
              "copy_source": {"ssim": 0.52, "landmark_nme": 0.29}}
    record = {"dataset": "synthetic_portrait", "protocol": {"pairs": 300}, "metric_names": {"fd": "fd_x"},
              "model": scores["model"], "baselines": {"copy_source": scores["copy_source"]},
              "portrait": {"landmark_nme": {"target_image": 0.06}}}
    metrics = tmp_path / "portrait.json"
    metrics.write_text(json.dumps(scores))  # numbers only, as dvc metrics diff wants them
    (tmp_path / "portrait.protocol.json").write_text(json.dumps(record))
    return metrics


def test_report_reads_the_record_beside_the_scores(tmp_path, capsys):
    metrics = _write(tmp_path)
    assert portrait_eval.main(["report", str(metrics)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("synthetic_portrait: 300 held-out test pairs")
    copy_row = next(line for line in out.splitlines() if line.startswith("copy_source"))
    assert "0.5200" in copy_row and "–" in copy_row  # no Fréchet distance for the baseline
    assert portrait_eval.main(["report", str(tmp_path / "portrait.protocol.json")]) == 0  # the record itself


def test_a_missing_record_is_one_clear_error(tmp_path, caplog):
    metrics = _write(tmp_path)
    (tmp_path / "portrait.protocol.json").unlink()
    assert portrait_eval.main(["report", str(metrics)]) == 2
    assert "portrait.protocol.json not found" in caplog.text and "make run-portrait" in caplog.text
