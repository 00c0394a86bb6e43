"""pipelines.ablation table: collects the variants' scores and refuses mixed protocols."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import ablation

VARIANTS = ("baseline", "attn", "flow", "no_face", "full")


def _doc(ssim: float, fd: float, protocol: str = "p" * 64) -> dict:
    scores = {"ssim": ssim, "psnr": 10 * ssim, "fd_effnet_lite0": fd, "lpd_effnet_lite0": 1 - ssim}
    return {"model": scores, "baselines": {"copy_source": dict(scores), "mean_train_image": dict(scores)},
            "metric_names": {"fd": "fd_effnet_lite0", "lpd": "lpd_effnet_lite0"},
            "protocol": {"pairs": 7}, "protocol_sha256": protocol}


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics/ablation").mkdir(parents=True)
    (tmp_path / "params.yaml").write_text((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    return tmp_path


def test_table_collects_every_variant_and_marks_the_best(workdir: Path) -> None:
    for i, v in enumerate(VARIANTS):
        (workdir / f"metrics/ablation/{v}.protocol.json").write_text(json.dumps(_doc(0.5 + i / 100, 20.0 - i)))
    (workdir / "metrics/ablation/flow.protocol.json").write_text(json.dumps(_doc(0.9, 30.0)))
    assert ablation.main(["table", "--set", f"evaluate.ablation.variants={list(VARIANTS)}"]) == 0
    out = json.loads((workdir / "metrics/ablation.json").read_text())
    assert list(out["variants"]) == list(VARIANTS)
    assert out["variants"]["flow"]["ssim"] == 0.9
    md = (workdir / "reports/ablation.md").read_text()
    flow_row = next(line for line in md.splitlines() if line.startswith("| flow |"))
    full_row = next(line for line in md.splitlines() if line.startswith("| full |"))
    assert "**0.9000**" in flow_row  # best SSIM (higher is better)
    assert "**16.0000**" in full_row  # best Fréchet distance (lower is better)
    assert "| *copy_source* |" in md


def test_table_refuses_missing_variants_and_mixed_protocols(workdir: Path) -> None:
    for v in VARIANTS[:-1]:
        (workdir / f"metrics/ablation/{v}.protocol.json").write_text(json.dumps(_doc(0.5, 20.0)))
    assert ablation.main(["table"]) == 2
    (workdir / "metrics/ablation/full.protocol.json").write_text(json.dumps(_doc(0.5, 20.0, protocol="q" * 64)))
    assert ablation.main(["table"]) == 2
    assert not (workdir / "metrics/ablation.json").exists()
