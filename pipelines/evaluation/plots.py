"""What evaluation writes for people to look at: per-pair CSV, histograms, training curves, sample grid.

PNG only, so ``dvc plots show`` renders them offline.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datasets.pose.landmarks import NUM_LANDMARKS
from datasets.sheets.portrait_sheet import draw_landmarks
from datasets.sheets.pose_sheet import draw_skeleton
from pipelines.evaluation.scoring import METHODS, PairScores

HIST_COLOURS = ("tab:blue", "tab:orange", "tab:grey", "tab:green")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def write_per_pair(path: Path, pairs: PairScores) -> None:
    keys = list(pairs.per_method["model"])
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        # <method>_<metric>, never a dot: Vega (dvc plots) reads "model.ssim" as a nested field.
        w.writerow(["pair", "from", "to"] + [f"{m}_{k}" for m in METHODS for k in keys])
        for i, (src, tgt) in enumerate(pairs.names):
            w.writerow([i, src, tgt] + [f"{pairs.per_method[m][k][i]:.6f}" for m in METHODS for k in keys])


def plot_histograms(
    path: Path, per: dict[str, np.ndarray], bins: np.ndarray, xlabel: str, title: str, alpha: float
) -> None:
    """One histogram per method (its finite values), overlaid, each labelled with its mean."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    for (method, values), colour in zip(per.items(), HIST_COLOURS):
        v = np.asarray(values)
        v = v[np.isfinite(v)]
        ax.hist(v, bins=bins, alpha=alpha, color=colour, label=f"{method} (mean {v.mean():.3f})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_ssim_histogram(path: Path, pairs: PairScores, dataset: str) -> None:
    per = {m: np.asarray(pairs.per_method[m]["ssim"]) for m in METHODS}
    plot_histograms(
        path,
        per,
        np.linspace(0, 1, 41),
        "SSIM per test pair",
        f"{dataset}: per-pair SSIM, {len(pairs.names)} test pairs",
        alpha=0.55,
    )


CURVE_KEYS = (
    "loss/l1",
    "loss/content",
    "loss/style",
    "loss/g_adv",
    "loss/d_total",
    "loss/sampling_correctness",
    "loss/attn_rec",
    "loss/g_total",
)
# The columns dvc.yaml's "training losses" plot reads: always written (empty where a run has logged
# none, e.g. one still in its warm-up, which has no L1 or discriminator yet), so the plot renders.
PLOTTED_KEYS = ("loss/l1", "loss/g_total", "loss/d_total")


def training_curves(journal: Path) -> dict[str, list[tuple[int, float]]]:
    """Loss series by step from a training run's tracking journal (one value per step: the last)."""
    series: dict[str, dict[int, float]] = {}
    if not journal.is_file():
        return {}
    with open(journal) as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash; the journal's writer tolerates the same
            if rec.get("kind") != "metrics":
                continue
            for k, v in rec.get("values", {}).items():
                if k.startswith("loss/") and isinstance(v, (int, float)) and math.isfinite(v):
                    series.setdefault(k, {})[int(rec["step"])] = float(v)
    return {k: sorted(v.items()) for k, v in sorted(series.items())}


def plot_training_curves(
    png: Path, csv_path: Path, curves: dict[str, list[tuple[int, float]]], title: str
) -> None:
    plt = _pyplot()
    # Wide, one row per step and one column per loss, so `dvc plots diff` can draw any loss against
    # the step (x: step, y: l1, g_total, ...) for several experiments at once.
    steps = sorted({s for pts in curves.values() for s, _ in pts})
    by_step = {k: dict(pts) for k, pts in curves.items()}
    columns = sorted(set(curves) | set(PLOTTED_KEYS)) if curves else []
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step"] + [k.removeprefix("loss/") for k in columns])
        for s in steps:
            w.writerow([s] + [f"{by_step[k][s]:.6g}" if s in by_step.get(k, {}) else "" for k in columns])
    keys = [k for k in CURVE_KEYS if k in curves]
    fig, axes = plt.subplots(2, 4, figsize=(12, 5), dpi=110)
    for ax, key in zip(axes.flat, keys):
        xs, ys = zip(*curves[key])
        ax.plot(xs, ys, lw=1)
        ax.set_title(key.removeprefix("loss/"), fontsize=9)
        ax.set_xlabel("step", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
        if not keys:
            ax.text(0.5, 0.5, "no training journal", ha="center", va="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def plot_sample_grid(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    plt = _pyplot()
    columns = ("source", "target pose", "copy_source", "mean_train_image", "model", "target")
    fig, axes = plt.subplots(
        len(rows), len(columns), figsize=(len(columns) * 1.3, len(rows) * 1.75 + 0.5), dpi=120, squeeze=False
    )
    for r, row in enumerate(rows):
        src = row["source"].permute(1, 2, 0).numpy()
        if len(row["target_keypoints"]) == NUM_LANDMARKS:  # portrait: the 68 target landmarks as dots
            pose = draw_landmarks(np.full_like(src, 255), row["target_keypoints"], scale=1)
        else:
            pose = draw_skeleton(np.full_like(src, 255), row["target_keypoints"])
        cells = (
            src,
            pose,
            src,
            row["mean"].permute(1, 2, 0).numpy(),
            row["output"].permute(1, 2, 0).numpy(),
            row["target"].permute(1, 2, 0).numpy(),
        )
        for c, img in enumerate(cells):
            ax = axes[r, c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


EDIT_PANELS = (
    ("reached", "share of the true edit's change that arrives (pixels)", "1 = all, 0 = none"),
    ("changed_l1", "error vs the true edit on the pixels it changes", "mean |error|, 0-255, lower is better"),
    ("ssim", "SSIM vs the true edit (whole frame)", "higher is better"),
)


def plot_edit_bars(path: Path, means: dict[str, dict[str, float]], dataset: str, sources: int) -> None:
    """One panel per edit score (:data:`EDIT_PANELS`), a bar per method and edit."""
    plt = _pyplot()
    methods = [m for m in ("model", "copy_source", "mean_train_image") if m in means]
    edits = _edit_names(means, methods)
    fig, axes = plt.subplots(1, len(EDIT_PANELS), figsize=(5.0 * len(EDIT_PANELS), 3.8), dpi=110)
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(edits))
    for ax, (score, title, ylabel) in zip(axes, EDIT_PANELS):
        for k, (method, colour) in enumerate(zip(methods, HIST_COLOURS)):
            values = [means[method].get(f"edit_{score}_{e}", np.nan) for e in edits]
            ax.bar(x + k * width, values, width, color=colour, label=method)
        ax.set_xticks(x + width * (len(methods) - 1) / 2, edits, rotation=30, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.axhline(0, color="black", linewidth=0.5)
    axes[0].axhline(1, color="black", linewidth=0.5, linestyle=":")
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"{dataset}: edits against the renderer's true edits, {sources} held-out sources", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _edit_names(means: dict[str, dict[str, float]], methods: Sequence[str]) -> list[str]:
    prefix = "edit_ssim_"
    return sorted({k[len(prefix) :] for m in methods for k in means[m] if k.startswith(prefix)})
