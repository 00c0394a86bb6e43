"""Portrait evaluation extras: the landmark NME, its plumbing over the scored test images, the grid."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from datasets.pose.landmarks import NUM_PARTS
from datasets.shards.views import split_views
from datasets.specs import DatasetSpec, PreprocessConfig, SynthesizeSpec
from pipelines.evaluation.landmark_regressor import (
    RegressorError,
    RegressorRecipe,
    load_regressor,
    nme,
    regressor_path,
    train_and_save,
)
from datasets.synthetic import portrait_true_edits
from pipelines.apps.portrait_editor import target_landmarks
from pipelines.evaluation.portrait import GRID_EDITS, editing_grid, evaluate_portrait, report
from pipelines.evaluation.portrait_edits import load_true_edits

SIZE = (32, 32)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, dict]:
    from datasets.shards.build import preprocess
    from datasets.synthetic.portrait_dataset import write_dataset

    root = tmp_path_factory.mktemp("peval")
    spec = SynthesizeSpec(generator="portrait", seed=11, height=32, width=32, train_identities=2,
                          test_identities=2, views_per_identity=2, file_prefix="portrait", supersample=1)
    raw = write_dataset(spec, root / "raw").root
    ds = DatasetSpec(layout="portrait", task="portrait", root=str(raw), image_size=SIZE, source_size=SIZE,
                     shards=str(root / "shards"), pose_sigma=1.0)
    manifest = preprocess("p", ds, PreprocessConfig(shard_size=2, face_size=16), root / "shards", show_progress=False)
    return root / "shards", manifest


def test_nme_is_distance_over_the_outer_eye_corner_distance():
    truth = np.full((2, 68, 2), -1.0)
    truth[0, :10] = np.arange(20).reshape(10, 2)
    truth[0, 36], truth[0, 45] = (10.0, 20.0), (30.0, 20.0)  # inter-ocular distance 20
    pred = truth.copy()
    pred[0, truth[0, :, 0] >= 0] += (3.0, 4.0)  # every present point 5 px off
    pred[0, 50] = (500.0, 500.0)  # a point missing in the truth does not count
    truth[1, :] = (5.0, 5.0)
    truth[1, 45] = -1  # no outer eye corner: not scored
    out = nme(pred, truth)
    assert out[0] == pytest.approx(5.0 / 20.0) and np.isnan(out[1])


def test_scores_are_read_from_the_scored_images_in_pair_order(shards, tmp_path):
    """An oracle that 'generates' each pair's exact target scores exactly the regressor's floor."""
    from datasets.shards.loader import eval_loader

    shards_dir, manifest = shards
    images = tmp_path / "images"
    images.mkdir()
    names = []
    for batch in eval_loader(shards_dir, batch_size=4):
        tgt = ((batch["target_image"] + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        for i, (s, t) in enumerate(zip(batch["source_name"], batch["target_name"])):
            names.append((s, t))
            cv2.imwrite(str(images / f"{Path(s).stem}_2_{Path(t).stem}.png"), cv2.cvtColor(tgt[i], cv2.COLOR_RGB2BGR))

    def generate(batch: dict) -> torch.Tensor:  # the editing grid's generator: the source unchanged
        return batch["source_image"]

    mean = np.full((*SIZE, 3), 128, np.uint8)
    recipe = RegressorRecipe(epochs=1, batch_size=8)
    regressor = regressor_path("p", tmp_path / "regressor")
    with pytest.raises(RegressorError, match="pipelines.train_landmarks"):  # evaluation never trains one itself
        evaluate_portrait(generate, shards_dir, manifest, "p", names, images, mean, tmp_path / "plots", regressor,
                          grid_rows=2, recipe=recipe)
    record = train_and_save(shards_dir, manifest, regressor, recipe)
    result = evaluate_portrait(generate, shards_dir, manifest, "p", names, images, mean, tmp_path / "plots",
                               regressor, grid_rows=2, recipe=recipe)
    assert result.protocol["regressor"]["weights_sha256"] == record["weights_sha256"]
    assert result.scores["model"] == pytest.approx(result.details["landmark_nme"]["target_image"], abs=1e-6)
    assert set(result.scores) == {"model", "copy_source", "mean_train_image"}
    assert result.protocol["pairs_counted"] == len(names) and result.protocol["regressor"]["weights_sha256"]
    assert all(f.is_file() for f in result.files)
    # Every test view carries the renderer's true edits: each method scored on each edit.
    assert result.protocol["edit_sources"] == len(set(n for pair in names for n in pair))
    for method in ("model", "copy_source", "mean_train_image"):
        assert {"edit_ssim_mouth_open", "edit_nme_mouth_open"} <= set(result.edit_scores[method])
    # The generator copies the source: none of a rotation arrives.  (A share reached needs the edit
    # measurable on the regressor's landmarks; a one-epoch regressor's expressions are not.)
    for method in ("model", "copy_source"):
        assert result.edit_scores[method]["edit_reached_rotate"] == pytest.approx(0.0, abs=1e-3)
    # The regressor is read, not retrained: a second evaluation scores identically.
    again = evaluate_portrait(generate, shards_dir, manifest, "p", names, images, mean, tmp_path / "plots2",
                              regressor, grid_rows=2, recipe=recipe)
    assert again.protocol == result.protocol and again.scores == result.scores
    # A regressor made for other shards (or another recipe) is refused, naming the command that remakes it.
    with pytest.raises(RegressorError, match="retrain"):
        load_regressor(regressor, manifest, "p", RegressorRecipe(epochs=2, batch_size=8))
    doc = {"dataset": "p", "protocol": {"pairs": len(names)}, "metric_names": {}, "portrait": result.details,
           "model": {"landmark_nme": result.scores["model"]},
           "baselines": {m: {"landmark_nme": result.scores[m]} for m in ("copy_source", "mean_train_image")}}
    assert "copy_source" in report(doc) and "landmark_nme" in report(doc)


def test_editing_grid_feeds_each_edit_to_the_generator(shards):
    shards_dir, manifest = shards
    names, images, lms, ids = split_views(shards_dir, manifest, "test")
    seen: list[torch.Tensor] = []
    sources: list[torch.Tensor] = []

    def generate(batch: dict) -> torch.Tensor:
        assert batch["source_pose"].shape[1] == batch["target_pose"].shape[1] == NUM_PARTS
        seen.append(batch["target_pose"])
        sources.append(batch["source_pose"][0])
        # Paint the target part maps so that every edit gives a visibly different cell.
        return batch["target_pose"][:, :3] * 2 - 1

    grid = editing_grid(generate, names, images, lms, ids, sigma=1.0, rows=2, scale=1)
    columns = 1 + len(GRID_EDITS) + 2  # source, the edits, drive, driver
    assert grid.shape[1] == columns * (SIZE[1] + 4)
    assert len(seen) == 2 and all(t.shape[0] == len(GRID_EDITS) + 1 for t in seen)
    for targets, source in zip(seen, sources):  # each edit moved some part (by at least ~1 px at σ = 1)
        flat = torch.cat([source[None], targets]).flatten(1)
        assert all((flat[i] - flat[j]).abs().max() > 0.3 for i in range(len(flat)) for j in range(i))


def test_editing_grid_puts_the_true_edit_beside_each_edit(shards):
    shards_dir, manifest = shards
    names, images, lms, ids = split_views(shards_dir, manifest, "test")
    true_edits = load_true_edits(shards_dir, manifest)
    assert true_edits, "the synthetic portrait test shards carry the renderer's true edits"

    def generate(batch: dict) -> torch.Tensor:
        return batch["source_image"]

    grid = editing_grid(generate, names, images, lms, ids, 1.0, true_edits, rows=1, scale=1)
    assert grid.shape[1] == (1 + 2 * len(GRID_EDITS) + 2) * (SIZE[1] + 4)  # source, edit + truth each, drive, driver
    first = names[0]
    truth = portrait_true_edits.decode(true_edits[first])
    cell = grid[2 : 2 + SIZE[0], 2 * (SIZE[1] + 4) + 2 : 3 * (SIZE[1] + 4) - 2]  # right of the first edit
    assert np.array_equal(cell, truth.images[truth.index(GRID_EDITS[0][2])])  # titles are a band below
    for title, edits, true_name in GRID_EDITS:  # the request the edit scores make of the same view
        k = truth.index(true_name)
        values = (float(truth.values[k][0]), float(truth.values[k][1]))
        scored = portrait_true_edits.requested_landmarks(lms[0], true_name, values, SIZE)
        assert np.allclose(target_landmarks(lms[0], edits, SIZE), scored, atol=1e-4), title
