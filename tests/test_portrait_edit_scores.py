"""Portrait edits scored against the renderer's true edits: an oracle reaches every edit, copying none."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets.faces import edits as face_edits
from datasets.faces.edits import Expression
from datasets.synthetic import portrait_true_edits
from datasets.synthetic.portrait_dataset import render_view, sample_identity, true_edits
from datasets.synthetic.portrait_geometry import HeadPose
from pipelines.evaluation import metric_table
from pipelines.evaluation.landmark_regressor import to_tensor
from pipelines.evaluation.portrait_edits import (
    changed_l1, changed_mask, edit_quantity, pixel_share, score_edits, share_reached)

SIZE = (64, 64)


@pytest.fixture(scope="module")
def source():
    ident = sample_identity(0, 3, "gradient")
    view = render_view(ident, Expression(), HeadPose(31.0, 28.0, 15.0, roll_deg=3.0, yaw_deg=5.0), SIZE, 2)
    return view, true_edits(ident, view, SIZE, 2)


def test_share_reached_is_one_for_the_request_and_zero_for_the_source(source):
    view, edits = source
    lm = view.landmarks
    for k, name in enumerate(edits.names):
        requested = edits.requested[k]
        assert share_reached(name, lm, requested, lm, requested) == pytest.approx(1.0, abs=1e-6), name
        assert share_reached(name, lm, requested, lm, lm) == pytest.approx(0.0, abs=1e-6), name
    half = face_edits.mouth_open(lm, 0.4)
    assert share_reached("mouth_open", lm, face_edits.mouth_open(lm, 0.8), lm, half) == pytest.approx(0.5, abs=0.1)
    assert edit_quantity("rotate", face_edits.rotate(lm, 10.0))[0] - edit_quantity("rotate", lm)[0] == pytest.approx(10.0, abs=1e-3)


def test_an_already_closed_eye_is_not_scored(source):
    view, _ = source
    closed = face_edits.eyes_closed(view.landmarks, 1.0)
    assert np.isnan(share_reached("eyes_closed", closed, face_edits.eyes_closed(closed, 1.0), closed, closed))


def test_oracle_reaches_every_edit_copy_source_none(source):
    view, edits = source
    encoded = {"s.jpg": portrait_true_edits.encode(edits)}
    known = {view.image.tobytes(): view.landmarks}
    known.update({img.tobytes(): lm for img, lm in zip(edits.images, edits.rendered)})

    def oracle(batch):  # the renderer's own true edits, in the stored order, then the source unedited
        assert batch["target_pose"].shape[0] == len(edits.names) + 1
        return to_tensor(np.concatenate([edits.images, view.image[None]]))

    def predict(images):  # a perfect regressor on the images it knows, the source's points otherwise
        return np.stack([known.get(np.ascontiguousarray(i).tobytes(), view.landmarks) for i in images])

    mean = np.full((*SIZE, 3), 128, np.uint8)
    scores = score_edits(oracle, predict, ["s.jpg", "other.jpg"], np.stack([view.image] * 2),
                         np.stack([view.landmarks] * 2), encoded, mean, 1.0)
    assert scores.sources == 1
    means = scores.means()
    for name in edits.names:
        assert means["model"][f"edit_ssim_{name}"] == pytest.approx(1.0)
        assert means["model"][f"edit_reached_{name}"] == pytest.approx(1.0, abs=1e-6)
        assert means["model"][f"edit_lm_reached_{name}"] == pytest.approx(1.0, abs=0.05)
        assert means["model"][f"edit_nme_{name}"] < 0.02  # rendered vs requested: within 0.3 px
        assert means["copy_source"][f"edit_reached_{name}"] == means["mean_train_image"][f"edit_reached_{name}"] == 0.0
        assert means["copy_source"][f"edit_lm_reached_{name}"] == pytest.approx(0.0, abs=1e-6)
        assert means["copy_source"][f"edit_ssim_{name}"] < 1.0
        assert means["model"][f"edit_changed_l1_{name}"] == 0.0
        assert means["held_out_targets"][f"edit_lm_reached_{name}"] == pytest.approx(1.0, abs=0.05)
        assert f"edit_ssim_{name}" not in means["held_out_targets"]
        assert means["copy_source"][f"edit_changed_l1_{name}"] > 3  # the change itself, diluted by the grown rim
        for method in ("model", "copy_source", "mean_train_image"):
            for score in ("ssim", "changed_l1", "nme", "reached", "lm_reached"):
                metric_table.lookup(f"edit_{score}_{name}")  # every name written has a direction
    assert torch.is_tensor(oracle({"target_pose": torch.zeros(len(edits.names) + 1)}))


def test_pixel_share_counts_the_true_change_only():
    source = np.zeros((4, 4, 3), np.uint8)
    truth = source.copy()
    truth[1:3, 1:3] = 100
    mask = np.ones((4, 4), bool)
    blurred = np.full_like(source, 20)  # what the method does to every image
    half = blurred.copy()
    half[1:3, 1:3] += 50
    assert pixel_share(half, blurred, source, truth, mask) == pytest.approx(0.5)
    assert pixel_share(blurred, blurred, source, truth, mask) == 0.0
    assert np.isnan(pixel_share(half, blurred, source, source, mask))


def test_changed_mask_covers_the_edit_and_a_pixel_around_it():
    source = np.zeros((8, 8, 3), np.uint8)
    edited = source.copy()
    edited[3, 4] = (0, 9, 0)  # above the threshold in one channel
    edited[6, 1] = (8, 8, 8)  # at it: unchanged
    mask = changed_mask(source, edited)
    assert mask.sum() == 9 and mask[2:5, 3:6].all()
    assert changed_l1(source, edited, mask) == pytest.approx(9 / 3 / 9)  # one pixel of nine, one channel of three
    assert np.isnan(changed_l1(source, source, changed_mask(source, source)))
