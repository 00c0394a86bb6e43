"""Portrait evaluation extras: the landmark-following error and the editing grid.

:func:`pipelines.evaluation.run.run_evaluation` calls :func:`evaluate_portrait` for datasets whose
task is ``portrait``, after the image metrics (SSIM, PSNR, Fréchet and perceptual distances), which
stay as for bodies.

Landmark-following error (``landmark_nme``): the landmark regressor
(:mod:`pipelines.evaluation.landmark_regressor`, trained by its own stage) finds the landmarks in
each generated test image; the error against the target's true landmarks is the field's normalised
mean error - the mean point-to-point distance over the points present in the target, divided by the
target's outer-eye-corner distance (iBUG 36-45).  The same regressor scores the copy-source and
mean-image baselines, and the real target images (``target_image``: the regressor's own error on
held-out faces, the floor below which differences are not resolved).

Editing grid (``editing_grid.png``): held-out identities (rows) edited through the evaluated
generator with the landmark edit model - rotate, mouth-open, smile, eyes-closed, and a drive by
another held-out face (shown in the last column).

Edits against the renderer's true edits (``edit_ssim_<e>``, ``edit_nme_<e>``, ``edit_reached_<e>``;
:mod:`pipelines.evaluation.portrait_edits`) when the test shards carry them (synthetic portraits).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from datasets.faces.edits import expression_state
from datasets.shards.loader import eval_loader
from datasets.shards.views import split_views
from datasets.sheets.cells import enlarge, label
from datasets.sheets.pose_sheet import save_png
from datasets.synthetic import portrait_true_edits
from pipelines.apps.portrait_editor import Edits, target_landmarks
from pipelines.evaluation.generators import GenerateFn
from pipelines.evaluation.landmark_regressor import RegressorRecipe, load_regressor, nme, predict
from pipelines.evaluation.plots import plot_edit_bars, plot_histograms
from pipelines.evaluation.portrait_edits import generate_views, load_true_edits, score_edits

# (column title, the edit requested, the renderer's true edit of the same name and strength)
GRID_EDITS: tuple[tuple[str, Edits, str], ...] = (
    ("rotate 20 deg", Edits(rotate=20.0), "rotate"),  # cv2 fonts have no degree sign
    ("mouth-open 0.8", Edits(mouth_open=0.8), "mouth_open"),
    ("smile 1", Edits(smile=1.0), "smile"),
    ("eyes-closed 1", Edits(eyes_closed=1.0), "eyes_closed"),
    ("brows 0.8", Edits(brows=0.8), "brows"),
)


def _expressiveness(lm: np.ndarray) -> float:
    try:
        e = expression_state(lm)
    except ValueError:
        return -1.0
    return abs(e.mouth_open) + abs(e.smile) + abs(e.eyes_closed) + abs(e.brows)


def editing_grid(
    generate: GenerateFn,
    names: list[str],
    images: np.ndarray,
    lms: np.ndarray,
    ids: list[str],
    sigma: float,
    true_edits: dict[str, bytes] | None = None,
    rows: int = 5,
    scale: int = 3,
) -> np.ndarray:
    """uint8 grid: per held-out identity its first view, then each edit of :data:`GRID_EDITS` with the
    renderer's true edit beside it (when ``true_edits``, encoded by image name, has the view), then a
    drive by the most expressive view of the next identity (that driver shown last)."""
    size = (images.shape[1], images.shape[2])
    true_edits = true_edits or {}
    order: dict[str, list[int]] = {}
    for i, ident in enumerate(ids):
        order.setdefault(ident, []).append(i)
    identities = list(order)[:rows]
    if not identities:
        raise ValueError("editing grid: no test identities")
    lines = []
    for r, ident in enumerate(identities):
        src = order[ident][0]
        others = order[identities[(r + 1) % len(identities)]] if len(identities) > 1 else order[ident][1:]
        driver = max(others or [src], key=lambda i: _expressiveness(lms[i]))
        targets = [target_landmarks(lms[src], edits, size) for _, edits, _ in GRID_EDITS]
        targets.append(target_landmarks(lms[src], Edits(drive=lms[driver]), size))
        gen = generate_views(generate, images[src], lms[src], np.stack(targets), sigma)
        truth = portrait_true_edits.decode(true_edits[names[src]]) if names[src] in true_edits else None
        cells = [(images[src], "source " + Path(names[src]).stem[-10:])]
        for k, (title, _, true_name) in enumerate(GRID_EDITS):
            cells.append((gen[k], title))
            if truth is not None and true_name in truth.names:
                cells.append((truth.images[truth.index(true_name)], "true " + true_name.replace("_", "-")))
        cells += [(gen[-1], "drive"), (images[driver], "driver")]
        tiles = [label(enlarge(c, scale), t) if r == 0 else enlarge(c, scale) for c, t in cells]
        lines.append(
            np.concatenate([np.pad(c, ((2, 2), (2, 2), (0, 0)), constant_values=255) for c in tiles], axis=1)
        )
    width = max(line.shape[1] for line in lines)
    lines = [
        np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)), constant_values=255) for line in lines
    ]
    return np.concatenate(lines, axis=0)


@dataclass
class PortraitResult:
    scores: dict[str, float]  # method -> landmark_nme (model, copy_source, mean_train_image)
    details: dict[str, Any]  # target_image floor, pixel errors, counts, regressor record
    protocol: dict[str, Any]
    files: list[Path]
    edit_scores: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> edit_<score>_<e>


def evaluate_portrait(
    generate: GenerateFn,
    shards_dir: Path | str,
    manifest: dict,
    dataset: str,
    pair_names: list[tuple[str, str]],
    images_dir: Path,
    mean_image: np.ndarray,
    plots_dir: Path,
    regressor: Path,
    grid_rows: int = 5,
    recipe: RegressorRecipe = RegressorRecipe(),
) -> PortraitResult:
    """Landmark-following error of the generated test images (read back from ``images_dir``, as
    scored) and of the baselines, and the editing grid; see the module docstring."""
    sigma = float(manifest["preprocess"]["heatmap_sigma"])
    net, reg = load_regressor(regressor, manifest, dataset, recipe)
    truth, model_imgs, src_imgs, tgt_imgs = [], [], [], []
    for batch in eval_loader(shards_dir, batch_size=32, num_workers=0):
        for i, (src, tgt) in enumerate(zip(batch["source_name"], batch["target_name"])):
            png = images_dir / f"{Path(src).stem}_2_{Path(tgt).stem}.png"
            img = cv2.imread(str(png), cv2.IMREAD_COLOR)
            if img is None:
                raise FileNotFoundError(f"{png}: generated test image missing")
            model_imgs.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        truth.append(batch["target_keypoints"].numpy())
        src_imgs.append(((batch["source_image"] + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
        tgt_imgs.append(((batch["target_image"] + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    truth_a = np.concatenate(truth)
    if len(truth_a) != len(pair_names):
        raise ValueError(f"landmark error: {len(truth_a)} test pairs read, {len(pair_names)} scored")
    per = {
        "model": nme(predict(net, np.stack(model_imgs)), truth_a),
        "copy_source": nme(predict(net, np.concatenate(src_imgs)), truth_a),
        "mean_train_image": nme(predict(net, np.repeat(mean_image[None], len(truth_a), 0)), truth_a),
        "target_image": nme(predict(net, np.concatenate(tgt_imgs)), truth_a),
    }
    counted = int(np.isfinite(per["model"]).sum())
    scores = {m: float(np.nanmean(v)) for m, v in per.items()}

    plots_dir.mkdir(parents=True, exist_ok=True)
    hist = plots_dir / "landmark_nme_hist.png"
    finite = np.concatenate([v[np.isfinite(v)] for v in per.values()])
    plot_histograms(
        hist,
        per,
        np.linspace(0, max(float(np.percentile(finite, 99)), 1e-3), 41),
        "landmark NME per test pair (lower follows the target better)",
        f"{dataset}: landmark-following error",
        alpha=0.5,
    )
    names, images, lms, ids = split_views(shards_dir, manifest, "test")
    true_edits = load_true_edits(str(shards_dir), manifest)
    grid = save_png(
        plots_dir / "editing_grid.png",
        editing_grid(generate, names, images, lms, ids, sigma, true_edits, rows=grid_rows),
    )
    edits = score_edits(
        generate, lambda imgs: predict(net, imgs), names, images, lms, true_edits, mean_image, sigma
    )
    files = [hist, grid]
    if edits.sources:
        files.append(plots_dir / "edit_scores.png")
        plot_edit_bars(files[-1], edits.means(), dataset, edits.sources)
    protocol = {
        "metric": "landmark_nme: mean distance over the target's present landmarks between the landmarks a "
        "regressor finds in the image and the target's true landmarks, / the target's outer-eye-corner "
        "distance (iBUG 36-45); mean over test pairs whose target has both eye corners",
        "regressor": {k: reg[k] for k in ("weights_sha256", "recipe", "train_images")},
        "pairs_counted": counted,
        "edit_sources": edits.sources,
    }
    details = {
        "landmark_nme": scores,
        "pairs_counted": counted,
        "regressor": reg,
        "editing_grid": str(grid),
        "grid_edits": [t for t, _, _ in GRID_EDITS] + ["drive"],
        "true_edit_sources": edits.sources,
    }
    return PortraitResult(
        {m: scores[m] for m in ("model", "copy_source", "mean_train_image")},
        details,
        protocol,
        files,
        edits.means(),
    )


def report(doc: dict) -> str:
    """The portrait scores of a metrics JSON as a small table: model against both baselines."""
    names = doc.get("metric_names", {})
    keys = [
        k
        for k in ("ssim", "psnr", names.get("fd"), names.get("lpd"), "landmark_nme")
        if k and k in doc["model"]
    ]
    lines = [
        (
            f"{doc['dataset']}: {doc['protocol']['pairs']} held-out test pairs "
            f"(landmark_nme: lower follows the target landmarks better; the regressor's own error on the "
            f"real targets is {doc.get('portrait', {}).get('landmark_nme', {}).get('target_image', float('nan')):.4f})"
        ),
        f"{'method':<18}" + "".join(f"{k:>22}" for k in keys),
    ]
    for method, scores in [("model", doc["model"])] + list(doc["baselines"].items()):
        # A baseline has no score where it is not computed (a Fréchet distance on too few images).
        lines.append(
            f"{method:<18}" + "".join(f"{scores[k]:>22.4f}" if k in scores else f"{'–':>22}" for k in keys)
        )
    return "\n".join(lines)
