"""Fit or generalisation: the portrait edit scores on training identities beside held-out ones.

The test shards' edit scores (:mod:`pipelines.evaluation.portrait_edits`) say how much of each edit
arrives on faces the model has never seen.  The renderer can draw the true edits of a training
identity as well, so the same scores on training identities tell the two failures apart: an edit
that reaches as little on faces the model trained on as on new ones is not learnt (more steps,
capacity or loss weight), one that reaches more on training faces is learnt but not carried over
(more data).  Synthetic portrait datasets only: the identities are re-rendered from the dataset's
``synthesize`` spec, each view through the view's JPEG as the dataset writes it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from tqdm import tqdm

from datasets.specs import SynthesizeSpec
from datasets.synthetic import portrait_dataset
from datasets.synthetic.fashion import jpeg_round_trip
from datasets.synthetic.portrait_true_edits import TrueEdits
from pipelines.evaluation.generators import GenerateFn
from pipelines.evaluation.portrait_edits import (
    EditScores,
    changed_l1,
    changed_mask,
    generate_views,
    pixel_share,
)

SCORES = ("reached", "changed_l1")
METHOD = "model"


def identities(spec: SynthesizeSpec, split: str, count: int) -> range:
    """The first ``count`` identity numbers of ``split`` (train: 0…, test: after the training ones)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    start, total = (
        (0, spec.train_identities) if split == "train" else (spec.train_identities, spec.test_identities)
    )
    if count < 1:
        raise ValueError(f"identities per split must be >= 1, got {count}")
    return range(start, start + min(count, total))


def _sources(
    spec: SynthesizeSpec, numbers: range, desc: str | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, TrueEdits]]:
    size = (spec.height, spec.width)
    for number in tqdm(numbers, desc=desc, unit="identity", disable=desc is None, dynamic_ncols=True):
        identity = portrait_dataset.sample_identity(spec.seed, number, spec.background)
        for view in portrait_dataset.identity_views(identity, spec):
            truth = portrait_dataset.true_edits(identity, view, size, spec.supersample, spec.jpeg_quality)
            yield jpeg_round_trip(view.image, spec.jpeg_quality), view.landmarks, truth


def edit_scores(
    generate: GenerateFn, spec: SynthesizeSpec, numbers: range, sigma: float, desc: str | None = None
) -> dict[str, dict[str, float]]:
    """``{edit: {"reached": mean, "changed_l1": mean, "sources": n}}`` over every view of ``numbers``
    (means over sources with a finite value, as the evaluation's ``edit_<score>_<edit>``); with
    ``desc``, a progress bar over the identities."""
    scores = EditScores({}, 0)
    for image, lm, truth in _sources(spec, numbers, desc):
        targets = np.concatenate([truth.requested, lm[None]])
        out = generate_views(generate, image, lm, targets, sigma)
        for k, name in enumerate(truth.names):
            mask = changed_mask(image, truth.images[k])
            scores.add(METHOD, name, "reached", pixel_share(out[k], out[-1], image, truth.images[k], mask))
            scores.add(METHOD, name, "changed_l1", changed_l1(out[k], truth.images[k], mask))
        scores.sources += 1
    means = scores.means().get(METHOD, {})
    return {
        name: {s: means.get(f"edit_{s}_{name}", math.nan) for s in SCORES}
        | {"sources": float(scores.sources)}
        for name in scores.values.get(METHOD, {})
    }


def table(by_split: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown table: one row per split and score, one column per edit."""
    edits = list(next(iter(by_split.values())))
    lines = ["| split | score | " + " | ".join(edits) + " |", "|---|---|" + "---:|" * len(edits)]
    for split, scores in by_split.items():
        for s, fmt in (("reached", "{:.2f}"), ("changed_l1", "{:.1f}")):
            lines.append(f"| {split} | {s} | " + " | ".join(fmt.format(scores[e][s]) for e in edits) + " |")
    return "\n".join(lines)
