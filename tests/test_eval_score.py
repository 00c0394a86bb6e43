"""python -m pipelines.score on a tiny generated dataset: folders named as the field's code names its
outputs, scored by the evaluation's own code against pipelines.evaluate's record."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.train_fixtures import DATASET, make_tiny_project

GFLA = "{src}_2_{tgt}_vis.jpg"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny project with shards and one committed checkpoint of an (untrained) generator."""
    from model.generator import build_generator
    from pipelines.config.params import load_config, to_dict
    from pipelines.training.checkpoint import CheckpointStore

    root = tmp_path_factory.mktemp("scoreproj")
    params = make_tiny_project(root)
    cfg = load_config(params)
    torch.manual_seed(0)
    store = CheckpointStore(root / "runs" / DATASET / "checkpoints")
    store.save(8, {"gan": {"ema": build_generator(cfg.model).state_dict()}, "config": to_dict(cfg), "step": 8,
                   "images": 16})
    return root, params


@pytest.fixture()
def in_project(project: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    root, params = project
    monkeypatch.chdir(root)
    monkeypatch.setenv("ATTNFLOW_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root, params


def _test_pairs(root: Path) -> list[tuple[str, str]]:
    with open(root / "data/raw/tiny/fasion-pairs-test.csv") as fh:
        return [(r["from"], r["to"]) for r in csv.DictReader(fh)]


def _copies(root: Path, folder: str, which: int) -> Path:
    """What a user does to score a method's folder: the raw test image of each pair's source
    (which=0) or target (which=1), copied under GFLA's output name."""
    out = root / folder
    out.mkdir(exist_ok=True)
    for pair in _test_pairs(root):
        shutil.copyfile(root / "data/raw/tiny/test" / pair[which],
                        out / GFLA.format(src=Path(pair[0]).stem, tgt=Path(pair[1]).stem))
    return out


def _score(params: Path, folder: Path, out: str, *extra: str) -> int:
    from pipelines import score

    return score.main(["--params", str(params), "--dataset", DATASET, "--generated", str(folder), "--out", out,
                       "--no-progress", "--set", "evaluate.threads=1", *extra])


def test_sources_score_as_copy_source_targets_perfectly_and_the_export_as_evaluate(
        in_project: tuple[Path, Path]) -> None:
    from pipelines import evaluate

    root, params = in_project
    rc = evaluate.main(["--params", str(params), "--dataset", DATASET, "--no-mlflow", "--no-progress",
                        "--set", "evaluate.threads=1", "--set", "evaluate.export_convention=gfla",
                        "--metrics", "metrics/eval.json", "--plots", "plots/eval"])
    assert rc == 0
    evaluated = json.loads(Path("metrics/eval.protocol.json").read_text())
    pairs = _test_pairs(root)
    exported = root / "data/export" / DATASET / "gfla"
    assert sorted(p.name for p in exported.iterdir()) == sorted(
        f"{Path(s).stem}_2_{Path(t).stem}_vis.png" for s, t in pairs)

    assert _score(params, _copies(root, "sources", 0), "scores/sources.json") == 0
    sources = json.loads(Path("scores/sources.protocol.json").read_text())
    flat = json.loads(Path("scores/sources.json").read_text())
    # The same protocol, hash included, as evaluate's; the folder, its naming and the policy beside it.
    assert sources["protocol"] == evaluated["protocol"]
    assert sources["protocol_sha256"] == evaluated["protocol_sha256"]
    gen = sources["generator"]
    assert (gen["source"], gen["folder"], gen["convention"], gen["resize"], gen["images"]) == (
        "folder", str(root / "sources"), "gfla", "none", len(pairs))
    assert "auto" in gen["convention_chosen"] and len(gen["images_sha256"]) == 64
    # Copies of the sources are the copy_source baseline: every score, interval and per-pair value.
    copy_source = evaluated["baselines"]["copy_source"]
    assert {"ssim", "ssim_range255", "psnr", "lpd_effnet_lite1", "kid_effnet_lite1"} <= set(sources["model"])
    assert sources["model"] == {k: v for k, v in copy_source.items() if k in sources["model"]}
    assert {k.removesuffix("_ci95_low").removesuffix("_ci95_high")  # images in a folder carry no flow
            for k in set(copy_source) - set(sources["model"])} == {"flow_epe"}
    per_pair = evaluated["per_pair"]["copy_source"]
    assert sources["per_pair"]["model"] == {k: v for k, v in per_pair.items() if k in sources["per_pair"]["model"]}
    assert flat == sources["model"] and all(isinstance(v, float) for v in flat.values())
    assert sources["baselines"] == evaluated["baselines"] and sources["floor"] == evaluated["floor"]
    assert sources["pair_names"] == [list(p) for p in pairs]

    # Copies of the targets: a perfect score, and the held-out targets' own distance to the reference.
    assert _score(params, _copies(root, "targets", 1), "scores/targets.json", "--convention", "gfla") == 0
    targets = json.loads(Path("scores/targets.json").read_text())
    assert (targets["ssim"], targets["ssim_range255"], targets["psnr"], targets["lpd_effnet_lite1"]) == (
        pytest.approx(1.0, abs=1e-12), 1.0, 100.0, 0.0)
    assert targets["kid_effnet_lite1"] == evaluated["floor"]["held_out_targets"]["kid_effnet_lite1"]

    # AttnFlow's own images, exported under GFLA's names, score as evaluate scored them.
    assert _score(params, exported, "scores/export.json") == 0
    again = json.loads(Path("scores/export.json").read_text())
    model = evaluated["model"]
    for key in ("ssim", "ssim_range255", "psnr", "ssim_ci95_low", "psnr_ci95_high"):
        assert again[key] == model[key], key
    for key in ("lpd_effnet_lite1", "kid_effnet_lite1"):  # single-image vs batched passes: float rounding
        assert again[key] == pytest.approx(model[key], rel=1e-5), key


def test_a_worker_rebuilds_the_same_folder_generator(in_project: tuple[Path, Path]) -> None:
    from pipelines.evaluation.generators import generator_from_folder, rebuild_generator

    root, _ = in_project
    folder = _copies(root, "sources_w", 0)
    pairs = _test_pairs(root)
    files = [[s, t, str(folder / GFLA.format(src=Path(s).stem, tgt=Path(t).stem))] for s, t in pairs]
    g = generator_from_folder({"folder": str(folder), "convention": "gfla", "resize": "none", "size": [48, 32],
                               "files": files, "images_sha256": "0" * 64})
    batch = {"source_name": [p[0] for p in pairs[:3]], "target_name": [p[1] for p in pairs[:3]]}
    images = g.fn(batch)
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 48, 32) and g.per_image
    assert torch.equal(rebuild_generator(g.source).fn(batch), images)


def test_bad_input_exits_2_naming_the_file(in_project: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    from pipelines import score

    root, params = in_project

    def err(*argv: str) -> str:
        capsys.readouterr()
        try:
            rc = score.main(["--params", str(params), "--no-progress", "--out", "scores/bad.json", *argv])
        except SystemExit as exc:
            rc = exc.code
        assert rc == 2, argv
        return capsys.readouterr().err

    assert "unknown dataset 'nope'" in err("--dataset", "nope", "--generated", "sources")
    assert "absent: no such folder" in err("--dataset", DATASET, "--generated", "absent")
    folder = _copies(root, "broken", 1)
    victim = sorted(folder.iterdir())[2]
    victim.write_bytes(b"\xff\xd8 truncated")
    assert f"{victim}: not a readable image" in err("--dataset", DATASET, "--generated", str(folder))
    Image.new("RGB", (32, 32)).save(victim)  # square, as GFLA's and PIDM's DeepFashion outputs
    message = err("--dataset", DATASET, "--generated", str(folder))
    assert f"{victim}: 32x32, the dataset's images are 48x32; --resize" in message
    victim.unlink()
    assert f"{victim.name}" in err("--dataset", DATASET, "--generated", str(folder))  # now missing
    assert "pose_transfer_test.py" in err("--dataset", DATASET, "--generated", str(folder), "--convention", "cfld")
    assert not Path("scores/bad.json").exists()
