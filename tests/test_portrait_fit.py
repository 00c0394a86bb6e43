"""Edit scores on training identities beside held-out ones (pipelines/evaluation/portrait_fit.py and
`python -m pipelines.portrait_eval fit`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datasets.pose.scheme import PORTRAIT
from datasets.specs import SynthesizeSpec
from pipelines import portrait_eval
from pipelines.evaluation import portrait_fit

SPEC = SynthesizeSpec(generator="portrait", seed=3, height=64, width=64, train_identities=2, test_identities=1,
                      views_per_identity=2)
SIGMA = 1.0


def test_identities_of_each_split():
    assert portrait_fit.identities(SPEC, "train", 5) == range(0, 2)  # no more than the split has
    assert portrait_fit.identities(SPEC, "test", 5) == range(2, 3)
    with pytest.raises(ValueError, match="train or test"):
        portrait_fit.identities(SPEC, "val", 1)


def _oracle(spec: SynthesizeSpec, numbers: range):
    """A generator that answers every requested edit with the renderer's true edit (and no edit
    with the source): the scores must read all of each edit, no error."""
    answers = {}
    for image, lm, truth in portrait_fit._sources(spec, numbers):
        for target, answer in zip([*truth.requested, lm], [*truth.images, image]):
            answers[PORTRAIT.dense(target, (spec.height, spec.width), SIGMA).tobytes()] = answer

    def generate(batch):
        out = [answers[p.numpy().tobytes()] for p in batch["target_pose"]]
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 127.5 - 1

    return generate


def test_an_oracle_reaches_every_edit_and_copying_the_source_none():
    numbers = portrait_fit.identities(SPEC, "train", 1)
    scores = portrait_fit.edit_scores(_oracle(SPEC, numbers), SPEC, numbers, SIGMA)
    assert set(scores) >= {"rotate", "mouth_open", "smile", "eyes_closed", "brows", "shift"}
    for name, s in scores.items():
        assert s["sources"] == SPEC.views_per_identity
        if math.isfinite(s["reached"]):
            assert s["reached"] == pytest.approx(1.0, abs=1e-3), name
            assert s["changed_l1"] == pytest.approx(0.0, abs=0.01), name
    copy = portrait_fit.edit_scores(lambda b: b["source_image"], SPEC, numbers, SIGMA)
    assert all(s["reached"] == 0 or not math.isfinite(s["reached"]) for s in copy.values())
    assert copy["rotate"]["changed_l1"] > 5  # the unchanged source is far from a turned head
    text = portrait_fit.table({"train": scores, "test": copy})
    assert "| train | reached |" in text and "| test | changed_l1 |" in text


def test_fit_refuses_a_dataset_that_is_not_a_synthetic_portrait(caplog):
    assert portrait_eval.main(["fit", "--checkpoint", "nowhere", "--dataset", "synthetic_fashion"]) == 2
    assert "synthetic_fashion is not a synthetic portrait dataset" in caplog.text
