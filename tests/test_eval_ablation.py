"""pipelines.ablation table: collects the variants' scores and refuses mixed protocols."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import ablation
from tests.record_fixtures import evaluation_record

VARIANTS = ("baseline", "attn", "flow", "no_face", "full")


def _doc(ssim: float, fd: float, protocol: str = "p" * 64, de00: float = 20.0) -> dict:
    scores = {"ssim": ssim, "psnr": 10 * ssim, "fd_effnet_lite0": fd, "lpd_effnet_lite0": 1 - ssim,
              "flow_epe": 12.0, "appearance_de00": de00}
    return evaluation_record(scores, protocol, baselines={"copy_source": dict(scores), "mean_train_image": dict(scores)},
                             metric_names={"fd": "fd_effnet_lite0", "lpd": "lpd_effnet_lite0"},
                             protocol={"pairs": 7}).to_dict()


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics/ablation").mkdir(parents=True)
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "params.yaml").write_text((root / "params.yaml").read_text())
    (tmp_path / "ablation").mkdir()
    (tmp_path / "ablation/params.yaml").write_text((root / "ablation/params.yaml").read_text())
    return tmp_path


def _write(workdir: Path, variant: str, seed: int, doc: dict) -> None:
    (workdir / f"metrics/ablation/{variant}-s{seed}.protocol.json").write_text(json.dumps(doc))


def test_table_collects_every_variant_and_seed_and_marks_the_best(workdir: Path) -> None:
    for i, v in enumerate(VARIANTS):
        for seed in (0, 1):
            _write(workdir, v, seed, _doc(0.5 + i / 100 + seed / 1000, 20.0 - i))
    _write(workdir, "flow", 0, _doc(0.9, 30.0))
    _write(workdir, "flow", 1, _doc(0.7, 30.0))
    assert ablation.main(["table", "--set", f"ablation.variants={list(VARIANTS)}"]) == 0
    out = json.loads((workdir / "metrics/ablation.json").read_text())
    assert list(out["variants"]) == list(VARIANTS) and out["seeds"] == [0, 1]
    assert out["variants"]["flow"]["ssim"] == pytest.approx(0.8) and out["per_seed"]["flow"]["ssim"] == [0.9, 0.7]
    assert "appearance_de00" in out["variants"]["full"] and "flow_epe" in out["variants"]["full"]
    md = (workdir / "reports/ablation.md").read_text()
    flow_row = next(line for line in md.splitlines() if line.startswith("| flow |"))
    full_row = next(line for line in md.splitlines() if line.startswith("| full |"))
    assert "**0.8000 (0.9000, 0.7000)**" in flow_row  # best mean SSIM (higher is better)
    assert "**16.0000 (16.0000, 16.0000)**" in full_row  # best Fréchet distance (lower is better)
    assert "| *copy_source* |" in md
    verdicts = {(c["better"], c["worse"], c["metric"]): c["verdict"] for c in out["claims"]}
    assert verdicts[("full", "attn", "ssim")] == "beyond seed noise"  # 0.54, 0.541 vs 0.51, 0.511
    assert verdicts[("full", "flow", "ssim")] == "reversed"
    assert verdicts[("flow", "baseline", "ssim")] == "beyond seed noise"
    assert verdicts[("full", "attn", "appearance_de00")] == "reversed"  # all equal: not better
    assert "| full better than flow | reversed |" in md


def test_a_score_only_some_variants_have_is_shown_where_it_exists(workdir: Path) -> None:
    for v in VARIANTS:
        for seed in (0, 1):
            doc = _doc(0.5, 20.0)
            if v in ("baseline", "attn"):  # no flow branch: no flow_epe
                del doc["model"]["flow_epe"]
            _write(workdir, v, seed, doc)
    assert ablation.main(["table"]) == 0
    out = json.loads((workdir / "metrics/ablation.json").read_text())
    assert "flow_epe" in out["variants"]["full"] and "flow_epe" not in out["variants"]["baseline"]
    baseline_row = next(line for line in (workdir / "reports/ablation.md").read_text().splitlines()
                        if line.startswith("| baseline |"))
    assert "–" in baseline_row


def test_verdict_needs_every_seed_for_beyond_noise() -> None:
    assert ablation.verdict([0.6, 0.7], [0.5, 0.55], lower_better=False) == "beyond seed noise"
    assert ablation.verdict([0.6, 0.7], [0.5, 0.65], lower_better=False) == "on average"
    assert ablation.verdict([10.0, 11.0], [12.0, 13.0], lower_better=True) == "beyond seed noise"
    assert ablation.verdict([12.0, 13.0], [10.0, 11.0], lower_better=True) == "reversed"


def test_table_refuses_missing_runs_and_mixed_protocols(workdir: Path) -> None:
    for v in VARIANTS:
        _write(workdir, v, 0, _doc(0.5, 20.0))
    for v in VARIANTS[:-1]:
        _write(workdir, v, 1, _doc(0.5, 20.0))
    assert ablation.main(["table"]) == 2  # full seed 1 missing
    _write(workdir, "full", 1, _doc(0.5, 20.0, protocol="q" * 64))
    assert ablation.main(["table"]) == 2
    assert not (workdir / "metrics/ablation.json").exists()
    _write(workdir, "full", 1, {"model": {"ssim": 0.5}})  # not an evaluation record
    assert ablation.main(["table"]) == 2


def test_run_refuses_a_seed_outside_the_config(workdir: Path) -> None:
    assert ablation.main(["run", "--variant", "full", "--seed", "7"]) == 2
