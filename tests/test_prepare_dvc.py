"""The DVC path a user with real data takes: a release in data/releases/deepfashion, then
``dvc repro prepare@deepfashion preprocess@deepfashion train`` in a temporary copy of the project.

The release is a tiny In-shop-shaped tree (datasets/synthetic/release_trees.py) kept outside the copy,
with data/releases/deepfashion a symlink to it, as a user points the stage at a download kept
elsewhere.  The stages must run once, leave the layout, shards and checkpoints, and a second
``dvc repro`` must rerun nothing; an edit inside the linked release must show as a changed dep.
"""
from __future__ import annotations

import json

import pytest

from datasets.synthetic.release_trees import make_deepfashion_release
from tests.test_pipeline_e2e import make_repo_copy, run_dvc, stages_run

TARGETS = ["prepare@deepfashion", "preprocess@deepfashion", "train"]


def _real_dataset(raw: dict) -> None:
    raw["pipeline"]["prepare"] = ["deepfashion"]
    raw["pipeline"]["preprocess"] = [*raw["pipeline"]["preprocess"], "deepfashion"]
    # The release's 256×176 annotation frame, trained at half of it with the tiny model.
    raw["datasets"]["deepfashion"].update(source_size=[256, 176], image_size=[128, 88])
    raw["prepare"]["deepfashion"].update(fit="resize", aspect_tolerance=0.02)
    raw["train"]["dataset"] = "deepfashion"


@pytest.mark.slow  # two dvc repro runs, a dvc status, 4 training steps: 2 min on 2 busy cores (5 at load 20)
def test_dvc_repro_prepares_a_release_then_nothing(tmp_path):
    work = tmp_path / "project"
    work.mkdir()
    env = make_repo_copy(work, {}, edit=_real_dataset, profile="tiny")
    # 275×187 keeps img_highres's aspect (1.1% off the frame's) at a fraction of its pixels.
    release = make_deepfashion_release(tmp_path / "downloads" / "inshop", size=(275, 187), full_size_first=False,
                                       faults=True)
    (work / "data" / "releases").mkdir(parents=True)
    (work / "data" / "releases" / "deepfashion").symlink_to(release.root, target_is_directory=True)

    first = run_dvc(work, env, "repro", *TARGETS)
    assert stages_run(first.stdout) == TARGETS, first.stdout[-3000:]
    raw = work / "data" / "raw" / "deepfashion"
    for split in ("train", "test"):
        assert sorted(p.name for p in (raw / split).iterdir()) == sorted(release.names[split])
    counts = json.loads((work / "metrics" / "prepare" / "deepfashion.json").read_text())["images"]
    assert counts["found"] == release.images and counts["rejected"] == len(
        [s for s in release.rejected() if not s.startswith("list:")])
    manifest = json.loads((work / "data" / "shards" / "deepfashion" / "manifest.json").read_text())
    assert manifest["image_size"] == [128, 88]
    assert manifest["splits"]["train"]["images_written"] == len(release.names["train"])
    assert any((work / "runs" / "deepfashion" / "checkpoints").iterdir())

    second = run_dvc(work, env, "repro", *TARGETS)
    assert stages_run(second.stdout) == [], second.stdout[-3000:]
    for stage in TARGETS:
        assert f"Stage '{stage}' didn't change, skipping" in second.stdout, second.stdout[-3000:]

    # A file changed inside the linked release is a changed dep of prepare (DVC follows the link).
    lst = release.root / "test.lst"
    lst.write_text("\n".join(lst.read_text().split()[:-1]) + "\n")
    status = run_dvc(work, env, "status", "prepare@deepfashion").stdout
    assert "prepare@deepfashion" in status and "data/releases/deepfashion" in status, status
