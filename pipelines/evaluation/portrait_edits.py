"""Portrait edits scored against the renderer's true edits (synthetic portrait test sets only).

Each test view whose shard sample carries ``vN.edits.npz``
(:mod:`datasets.synthetic.portrait_true_edits`) is a source; every edit ``<e>`` stored there
(rotate, mouth_open, smile, eyes_closed, brows, shift) is requested of the generator as the landmark
edit of the source's landmarks (what an editor asks), and each method's image is scored:

- ``edit_ssim_<e>``: the field's SSIM against the renderer's true edited image;
- ``edit_changed_l1_<e>``: the mean absolute error against the true edited image over the pixels the
  edit changes (:func:`changed_mask`).  Whole-frame SSIM favours copy-source for a local edit (a
  smile moves a few dozen of 4096 pixels, so the unchanged source scores 0.97 against the true
  smile); this one is the edit's own pixels, where copy-source scores the size of the change;
- ``edit_nme_<e>``: the landmark regressor's landmarks of the image against the requested landmarks,
  over the outer-eye-corner distance (as ``landmark_nme``);
- ``edit_reached_<e>``: the share of the true edit's pixel change that arrives
  (:func:`pixel_share`): the method's answer to the edit minus its answer to no edit (the source's
  own landmarks requested), projected on the true change (true edit minus source) over the changed
  pixels, over that change's size: 1 = all of it, 0 = none (copy-source and the mean image by
  construction), above 1 overshoots.  Taking the difference of two answers removes what the method
  does to every image (blur, colour) from what the edit makes it do;
- ``edit_lm_reached_<e>``: the same share read by the landmark regressor instead of pixels.  The
  edit's quantity (:func:`edit_quantity`: the lip gap, corner lift, eye opening or brow height with no
  dead zone; the eye line's angle; the face centre) is measured on the output and on the source, and
  their difference projected on the requested change (true source → requested landmarks).

Methods: ``model`` (the generator), ``copy_source`` (the source image unchanged) and
``mean_train_image``.  A method's score is the mean over sources with a finite value.  The true edited
images themselves are scored too, as ``held_out_targets`` (``edit_nme_<e>`` and
``edit_lm_reached_<e>`` only): how much of each edit the regressor can see in a perfect answer, the
ceiling a method's ``edit_lm_reached`` is read against.  At 64x64 it sees the rigid edits (0.85) and
hardly any of the expression edits (eyes closed 0.005, mouth open 0.2), which is why
``edit_reached`` is measured in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from datasets.faces import edits as face_edits
from datasets.pose.scheme import PORTRAIT
from datasets.shards.samples import parse_sample
from datasets.shards.tar import iter_samples, read_shard
from datasets.synthetic import portrait_true_edits
from pipelines.evaluation.generators import GenerateFn
from pipelines.evaluation.landmark_regressor import nme, to_tensor
from pipelines.evaluation.scoring import TARGETS, field_ssim

METHODS = ("model", "copy_source", "mean_train_image")
MIN_REQUESTED = {"rotate": 1.0, "shift": 0.5}  # smaller requested changes (degrees, px) are not scored
CHANGED_LEVELS = 8  # a pixel the true edit moves by more than this (max over RGB, 0-255) is changed
# Smaller requested expression changes are not scored (an eye already closed cannot close further):
# measure units are frontalised eye distances, about 12 px at 64x64, so this is ~0.1 px.
MIN_EXPRESSION_CHANGE = 0.01

Predict = Callable[[np.ndarray], np.ndarray]  # uint8 images [N,H,W,3] -> landmarks [N,68,2]


def load_true_edits(shards: str, manifest: dict) -> dict[str, bytes]:
    """Encoded true edits of every test view that has them, by image name."""
    out: dict[str, bytes] = {}
    if not (manifest.get("true_edits") or {}).get("test_sample_views"):
        return out
    for shard in manifest["shards"]:
        if shard["split"] != "test":
            continue
        for key, files in iter_samples(read_shard(shards, shard)):
            for i, name in enumerate(parse_sample(key, files).names):
                data = files.get(f"v{i}.edits.npz")
                if data is not None and name not in out:
                    out[name] = bytes(data)
    return out


def _eye_line_degrees(lm: np.ndarray) -> float:
    right, left = lm[36:42].mean(0), lm[42:48].mean(0)
    return math.degrees(math.atan2(-(left[1] - right[1]), left[0] - right[0]))  # counter-clockwise


def edit_quantity(name: str, lm: np.ndarray) -> np.ndarray:
    """What edit ``name`` changes, measured on landmarks [68, 2] (NaN where unmeasurable): the eye
    line's angle, the face centre, or the edit's raw expression measure
    (:func:`datasets.faces.edits.expression_measures`: no dead zone, so a small change counts)."""
    try:
        if name == "rotate":
            return np.array([_eye_line_degrees(np.asarray(lm, np.float64))])
        if name == "shift":
            return face_edits.face_centre(lm)
        return np.array([face_edits.expression_measures(lm)[name]])
    except ValueError:
        return np.array([math.nan])


def changed_mask(source: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels where ``edited`` differs from ``source`` (uint8 [H, W, 3]) by more than
    :data:`CHANGED_LEVELS`, grown by one pixel so an edge that moved counts on both sides."""
    diff = np.abs(edited.astype(np.int16) - source.astype(np.int16)).max(-1) > CHANGED_LEVELS
    return cv2.dilate(diff.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def changed_l1(output: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error (0-255, over RGB) of ``output`` against ``truth`` on ``mask``; NaN if empty."""
    if not mask.any():
        return math.nan
    return float(np.abs(output.astype(np.float64) - truth.astype(np.float64))[mask].mean())


def pixel_share(
    edited: np.ndarray, unedited: np.ndarray, source: np.ndarray, truth: np.ndarray, mask: np.ndarray
) -> float:
    """Share of the true change (``truth`` - ``source``) that the answer's change (``edited`` -
    ``unedited``) carries on ``mask``: their inner product over the true change's squared size; NaN
    when nothing changes or the true change is below one level per pixel."""
    want = truth.astype(np.float64)[mask] - source.astype(np.float64)[mask]
    got = edited.astype(np.float64)[mask] - unedited.astype(np.float64)[mask]
    size = float((want * want).sum())
    if not mask.any() or size < want.size:
        return math.nan
    return float((got * want).sum() / size)


def share_reached(
    name: str, source: np.ndarray, requested: np.ndarray, found_source: np.ndarray, found: np.ndarray
) -> float:
    """Measured change (``found`` vs ``found_source``, both by the regressor) projected on the requested
    one (``source`` → ``requested``, true landmarks), over the requested one; NaN when too small."""
    want = edit_quantity(name, requested) - edit_quantity(name, source)
    got = edit_quantity(name, found) - edit_quantity(name, found_source)
    size = float(np.linalg.norm(want))
    if not np.isfinite(size) or size < MIN_REQUESTED.get(name, MIN_EXPRESSION_CHANGE):
        return math.nan
    return float(np.dot(got, want) / size**2)


@dataclass
class EditScores:
    """Per method and edit, the per-source values of each score (``ssim``, ``nme``, ``reached``)."""

    values: dict[str, dict[str, dict[str, list[float]]]]  # method -> edit -> score -> values
    sources: int

    def add(self, method: str, edit: str, score: str, value: float) -> None:
        self.values.setdefault(method, {}).setdefault(edit, {}).setdefault(score, []).append(value)

    def means(self) -> dict[str, dict[str, float]]:
        """``edit_<score>_<edit>`` per method: mean over sources with a finite value."""
        out: dict[str, dict[str, float]] = {}
        for method, edits in self.values.items():
            for edit, scores in edits.items():
                for score, vals in scores.items():
                    v = np.asarray(vals, np.float64)
                    if np.isfinite(v).any():
                        out.setdefault(method, {})[f"edit_{score}_{edit}"] = float(np.nanmean(v))
        return out


def generate_views(
    generate: GenerateFn, image: np.ndarray, lm: np.ndarray, targets: np.ndarray, sigma: float
) -> np.ndarray:
    """uint8 [E,H,W,3]: ``image`` driven to each of ``targets`` [E,68,2]."""
    size = (image.shape[0], image.shape[1])
    n = len(targets)
    x = to_tensor(image[None]).expand(n, -1, -1, -1)
    src_pose = torch.from_numpy(PORTRAIT.dense(lm, size, sigma))[None].expand(n, -1, -1, -1)
    tgt_pose = torch.stack([torch.from_numpy(PORTRAIT.dense(t, size, sigma)) for t in targets])
    with torch.no_grad():
        out = generate({"source_image": x, "source_pose": src_pose, "target_pose": tgt_pose})
    return ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def score_source(
    scores: EditScores,
    generate: GenerateFn,
    predict: Predict,
    image: np.ndarray,
    lm: np.ndarray,
    truth: portrait_true_edits.TrueEdits,
    mean_image: np.ndarray,
    sigma: float,
) -> None:
    """Every stored edit of one source, for every method, added to ``scores``."""
    size = (image.shape[0], image.shape[1])
    requested = np.stack(
        [
            portrait_true_edits.requested_landmarks(lm, name, (float(v[0]), float(v[1])), size)
            for name, v in zip(truth.names, truth.values)
        ]
    )
    e = len(truth.names)
    generated = generate_views(generate, image, lm, np.concatenate([requested, lm[None]]), sigma)
    # method -> (answers to the edits, answer to no edit)
    outputs = {
        "model": (generated[:e], generated[e]),
        "copy_source": (np.repeat(image[None], e, 0), image),
        "mean_train_image": (np.repeat(mean_image[None], e, 0), mean_image),
        TARGETS: (truth.images, image),
    }
    found_source = predict(image[None])[0]
    true_t = torch.from_numpy(truth.images).permute(0, 3, 1, 2)
    masks = [changed_mask(image, edited) for edited in truth.images]
    for method, (imgs, unedited) in outputs.items():
        ssim = field_ssim(torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2), true_t)
        found = predict(imgs)
        errors = nme(found, requested)
        for k, name in enumerate(truth.names):
            if method != TARGETS:  # 1, 0 and 1 by construction
                scores.add(method, name, "ssim", float(ssim[k]))
                scores.add(method, name, "changed_l1", changed_l1(imgs[k], truth.images[k], masks[k]))
                scores.add(
                    method, name, "reached", pixel_share(imgs[k], unedited, image, truth.images[k], masks[k])
                )
            scores.add(method, name, "nme", float(errors[k]))
            scores.add(
                method, name, "lm_reached", share_reached(name, lm, requested[k], found_source, found[k])
            )


def score_edits(
    generate: GenerateFn,
    predict: Predict,
    names: list[str],
    images: np.ndarray,
    lms: np.ndarray,
    encoded: dict[str, bytes],
    mean_image: np.ndarray,
    sigma: float,
) -> EditScores:
    """Scores of every test view (``names``, ``images`` [N,H,W,3], ``lms`` [N,68,2]) with true edits."""
    scores = EditScores({}, 0)
    for name, image, lm in zip(names, images, lms):
        if name not in encoded:
            continue
        truth = portrait_true_edits.decode(encoded[name])
        score_source(scores, generate, predict, image, lm, truth, mean_image, sigma)
        scores.sources += 1
    return scores
