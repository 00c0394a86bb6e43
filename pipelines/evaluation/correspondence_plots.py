"""Pictures of the correspondence scores: error per body part and garment, true vs predicted flow.

Flows are drawn on the usual colour wheel (hue = direction, saturation = length, white = no
motion), every flow of a row on the same scale so their colours compare; pixels without a true
flow are dark grey.  Without ground truth (real data) each file says why instead, so the stage
always writes the same outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

UNMASKED = np.array([60, 60, 60], np.uint8)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def flow_to_rgb(flow: np.ndarray, max_len: float, mask: np.ndarray | None = None) -> np.ndarray:
    """[H, W, 2] (dx, dy) -> uint8 RGB on the colour wheel, lengths scaled by ``max_len``."""
    import cv2

    dx, dy = flow[..., 0], flow[..., 1]
    hue = (np.degrees(np.arctan2(dy, dx)) % 360) / 2  # OpenCV hue is 0..180
    sat = np.clip(np.hypot(dx, dy) / max(max_len, 1e-6), 0, 1) * 255
    hsv = np.stack([hue, sat, np.full_like(hue, 255)], axis=-1).astype(np.uint8)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if mask is not None:
        rgb[~mask] = UNMASKED
    return rgb


def _not_available(path: Path, title: str, why: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 1.6), dpi=100)
    ax.axis("off")
    ax.text(0.5, 0.5, f"{title}\nnot available: {why}", ha="center", va="center", wrap=True, fontsize=8)
    fig.savefig(path)
    plt.close(fig)


def plot_part_errors(path: Path, record: dict[str, Any], dataset: str) -> None:
    """Left: mean end-point error per target body part of the model's finest flow, its finest
    attention location and the identity flow; right: median CIEDE2000 per garment by method."""
    if not record.get("available"):
        _not_available(path, f"{dataset}: correspondence error by part", record.get("why", ""))
        return
    plt = _pyplot()
    epe, de = record["epe_by_part"], record["appearance_by_garment"]

    def finest(kind: str) -> str | None:
        names = [n for n in epe if n.startswith(kind + "_s")]
        return min(names, key=lambda n: int(n.rsplit("_s", 1)[1])) if names else None

    fields = [n for n in (finest("flow"), finest("attn"), "identity") if n is not None and n in epe]
    parts = sorted({p for n in fields for p in epe[n]}, key=lambda p: -epe["identity"].get(p, 0))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110, gridspec_kw={"width_ratios": [2.2, 1]})
    width = 0.8 / len(fields)
    x = np.arange(len(parts))
    for k, name in enumerate(fields):
        ax1.bar(
            x + k * width,
            [epe[name].get(p, np.nan) for p in parts],
            width,
            label={"identity": "identity flow (copy_source)"}.get(name, f"model {name}"),
        )
    ax1.set_xticks(x + width * (len(fields) - 1) / 2, parts, rotation=60, fontsize=7)
    ax1.set_ylabel("end-point error (image px)")
    ax1.set_title(f"{dataset}: flow error by target part", fontsize=9)
    ax1.legend(fontsize=7)
    methods = list(de)
    garments = sorted({g for m in methods for g in de[m]})
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(garments))
    for k, method in enumerate(methods):
        ax2.bar(x + k * width, [de[method].get(g, np.nan) for g in garments], width, label=method)
    ax2.set_xticks(x + width * (len(methods) - 1) / 2, garments, rotation=45, fontsize=7)
    ax2.set_ylabel("median CIEDE2000, output vs target mean colour")
    ax2.set_title("appearance by region", fontsize=9)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_flow_examples(
    path: Path, examples: list[dict[str, Any]], record: dict[str, Any], dataset: str
) -> None:
    """One row per pair: source, target, output, true flow, the model's finest flow and attention
    location (same colour scale), and the flow's end-point error on the mask."""
    if not record.get("available") or not examples:
        _not_available(path, f"{dataset}: true vs predicted flow", record.get("why", "no pairs"))
        return
    plt = _pyplot()
    names = sorted({n for e in examples for n in e["predicted"]}, key=lambda n: (n[0] != "f", n))
    cols = 4 + len(names) + (1 if names else 0)
    fig, axes = plt.subplots(
        len(examples), cols, figsize=(1.35 * cols, 2.0 * len(examples)), dpi=110, squeeze=False
    )
    for row, ex in zip(axes, examples):
        mask, true = ex["mask"], ex["true"]
        scale = float(np.percentile(np.hypot(true[..., 0], true[..., 1])[mask], 95)) if mask.any() else 1.0
        src, tgt = (Path(n.strip()).stem for n in ex["name"].split("->"))
        panels = [
            (ex["source"], f"source\n…{src[-12:]}"),
            (ex["target"], f"target\n…{tgt[-12:]}"),
            (ex["output"], "output"),
            (flow_to_rgb(true, scale, mask), f"true flow\n(scale {scale:.0f} px)"),
        ]
        panels += [(flow_to_rgb(ex["predicted"][n], scale, mask), n) for n in names]
        if names:
            err = np.linalg.norm(ex["predicted"][names[0]] - true, axis=-1)
            err[~mask] = np.nan
            panels.append((err, f"{names[0]} EPE\n(mean {np.nanmean(err):.1f} px)" if mask.any() else "EPE"))
        for ax, (img, title) in zip(row, panels):
            if img.ndim == 2:
                ax.imshow(img, cmap="magma", vmin=0, vmax=max(scale, 1.0))
            else:
                ax.imshow(img)
            ax.set_title(title, fontsize=6)
            ax.axis("off")
    fig.suptitle(
        f"{dataset}: true vs predicted flow (hue = direction, saturation = length; grey = no true flow)",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
