"""Portrait evaluation extras: the landmark-following error and the editing grid.

``pipelines.evaluate`` calls :func:`evaluate_portrait` for datasets whose task is ``portrait``,
after the image metrics (SSIM, PSNR, Fréchet and perceptual distances), which stay as for bodies.

Landmark-following error (``landmark_nme``).  On synthetic portraits the target's 68 landmarks
are exact, so "does the output follow the driving landmarks?" is measured: a small landmark
regressor (model/landmark_net.py) finds the landmarks in an image, and the error against the
target's true landmarks is the field's normalised mean error - the mean point-to-point distance
over the points present in the target, divided by the target's outer-eye-corner distance
(iBUG 36-45).  The regressor is trained on the synthetic *training* images only (seeded, with
flips, small affine jitter, blur, noise and colour jitter so that it reads generated faces as well
as rendered ones) and cached under ``data/landmark_regressor/`` by the training shards' hashes and
its recipe; its weights' sha256 is part of the evaluation protocol.  The same regressor scores the
copy-source and mean-image baselines, and the real target images (``target_image``: the
regressor's own error on held-out faces, the floor below which differences are not resolved).

Editing grid (``editing_grid.png``): held-out identities (rows) edited through the evaluated
generator with the landmark edit model - rotate, mouth-open, smile, eyes-closed, and a drive by
another held-out face (shown in the last column).
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from datasets.pose.landmarks import NUM_LANDMARKS, visible
from datasets.pose.scheme import PORTRAIT
from model.landmark_net import LandmarkRegressor, to_normalised, to_pixels

EYE_CORNERS = (36, 45)  # outer corners: the inter-ocular distance of the 68-point NME
REGRESSOR_DIR = Path("data/landmark_regressor")

GenerateFn = Callable[[dict[str, Any]], torch.Tensor]


@dataclass(frozen=True)
class RegressorRecipe:
    """How the landmark regressor is trained (part of its cache key and of the protocol)."""

    version: int = 1
    width: int = 16
    epochs: int = 60
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    rotate: float = 15.0  # augmentation: degrees
    max_blur: float = 1.2  # Gaussian σ (px), drawn per image in [0, max_blur]


# ---------------------------------------------------------------------------- data


def split_views(shards_dir: Path, manifest: dict, split: str) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """Every view of a split once: names, uint8 images [N,H,W,3], landmarks [N,68,2], identities."""
    from datasets.shards.samples import decode_image, parse_sample
    from datasets.shards.tar import iter_samples

    size = tuple(manifest["image_size"])
    names, images, lms, ids, seen = [], [], [], [], set()
    for shard in manifest["shards"]:
        if shard["split"] != split:
            continue
        for key, files in iter_samples((shards_dir / shard["name"]).read_bytes()):
            sample = parse_sample(key, files)
            meta = json.loads(bytes(files["meta.json"]))
            for i, view in enumerate(sample.views):
                if view.name in seen:
                    continue
                seen.add(view.name)
                names.append(view.name)
                images.append(decode_image(view.jpeg, f"{shard['name']}:{key}.v{i}", size))
                lms.append(view.keypoints)
                ids.append(str(meta.get("identity", "")))
    if not names:
        raise ValueError(f"{shards_dir}: no {split} views")
    return names, np.stack(images), np.stack(lms).astype(np.float32), ids


# ---------------------------------------------------------------------------- regressor


def _augment(images: np.ndarray, lms: np.ndarray, recipe: RegressorRecipe, rng: np.random.Generator,
             seed: int) -> tuple[np.ndarray, np.ndarray]:
    from datasets.shards.augment import AugmentConfig, Augmenter

    aug = Augmenter(AugmentConfig(flip_p=0.5, affine_p=0.9, scale=(0.9, 1.1), translate=0.06, rotate=recipe.rotate),
                    PORTRAIT.flip_permutation(), seed=seed)
    out_i, out_l = np.empty_like(images), np.empty_like(lms)
    for k in range(len(images)):
        a = aug(images[k], lms[k], np.zeros(4, np.float32), False)
        img = a.rgb.astype(np.float32)
        sigma = rng.uniform(0, recipe.max_blur)
        if sigma > 0.25:
            img = cv2.GaussianBlur(img, (0, 0), sigma)
        img = img * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20) + rng.normal(0, rng.uniform(0, 4), img.shape)
        out_i[k] = np.clip(img, 0, 255).astype(np.uint8)
        out_l[k] = a.keypoints
    return out_i, out_l


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def train_regressor(images: np.ndarray, lms: np.ndarray, recipe: RegressorRecipe,
                    log: Callable[[str], None] = lambda s: None) -> LandmarkRegressor:
    """Fit the regressor to (image, landmarks) with L1 on the present points; deterministic per seed."""
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    size = images.shape[1:3]
    net = LandmarkRegressor(recipe.width)
    steps_per_epoch = math.ceil(len(images) / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=total, pct_start=0.15)
    net.train()
    t0 = time.time()
    for epoch in range(recipe.epochs):
        aug_i, aug_l = _augment(images, lms, recipe, rng, seed=recipe.seed * 1000 + epoch)
        order = rng.permutation(len(images))
        running = 0.0
        for s in range(steps_per_epoch):
            idx = order[s * recipe.batch_size:(s + 1) * recipe.batch_size]
            x = _tensor(aug_i[idx])
            truth = torch.from_numpy(aug_l[idx])
            mask = torch.from_numpy(visible(aug_l[idx].reshape(-1, 2)).reshape(len(idx), NUM_LANDMARKS, 1))
            pred = net(x)
            err = (pred - to_normalised(truth, size)).abs() * mask
            loss = err.sum() / mask.sum().clamp(min=1) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
        log(f"[evaluate] landmark regressor epoch {epoch + 1}/{recipe.epochs}: L1 {running / steps_per_epoch:.4f} "
            f"({time.time() - t0:.0f} s)")
    return net.eval()


@torch.no_grad()
def predict(net: LandmarkRegressor, images: np.ndarray | torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Pixel landmarks [N, 68, 2] of uint8 images [N,H,W,3] (or float [N,3,H,W] in [-1, 1])."""
    x = _tensor(images) if isinstance(images, np.ndarray) else images.float()
    size = tuple(x.shape[-2:])
    out = [to_pixels(net(x[i:i + batch_size]), size) for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()


def nme(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per image: mean distance over the points present in ``truth`` / the outer-eye-corner distance;
    NaN where either eye corner is missing in ``truth``."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    out = np.full(len(truth), np.nan)
    a, b = EYE_CORNERS
    for i in range(len(truth)):
        ok = visible(truth[i])
        if not (ok[a] and ok[b]):
            continue
        iod = float(np.linalg.norm(truth[i, a] - truth[i, b]))
        if iod <= 0:
            continue
        out[i] = float(np.linalg.norm(pred[i, ok] - truth[i, ok], axis=1).mean()) / iod
    return out


def regressor_key(manifest: dict, recipe: RegressorRecipe) -> str:
    train = sorted(s["sha256"] for s in manifest["shards"] if s["split"] == "train")
    blob = json.dumps({"train_shards": train, "recipe": asdict(recipe)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_or_train_regressor(dataset: str, shards_dir: Path, manifest: dict, recipe: RegressorRecipe = RegressorRecipe(),
                            cache_dir: Path = REGRESSOR_DIR) -> tuple[LandmarkRegressor, dict]:
    """The regressor for these training shards (trained once, then read from the cache) and its record."""
    key = regressor_key(manifest, recipe)
    path = Path(cache_dir) / f"{dataset}-{key}.pt"
    net = LandmarkRegressor(recipe.width)
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(saved["state"])
        info = dict(saved["info"])
    else:
        _, images, lms, _ = split_views(shards_dir, manifest, "train")
        t0 = time.time()
        print(f"[evaluate] training the landmark regressor on {len(images)} training faces "
              f"({recipe.epochs} epochs; cached in {path})", file=sys.stderr)
        net = train_regressor(images, lms, recipe, log=lambda s: print(s, file=sys.stderr))
        train_nme = float(np.nanmean(nme(predict(net, images), lms)))
        info = {"train_images": len(images), "train_nme": train_nme, "seconds": round(time.time() - t0, 1)}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"state": net.state_dict(), "info": info, "recipe": asdict(recipe)}, tmp)
        tmp.replace(path)
    sha = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        sha.update(name.encode())
        sha.update(t.detach().contiguous().numpy().tobytes())
    info.update({"path": str(path), "weights_sha256": sha.hexdigest(), "recipe": asdict(recipe)})
    return net.eval(), info


# ---------------------------------------------------------------------------- editing grid


GRID_EDITS: tuple[tuple[str, dict[str, float]], ...] = (
    ("rotate 20 deg", {"rotate": 20.0}),  # cv2 fonts have no degree sign
    ("mouth-open 0.8", {"mouth_open": 0.8}),
    ("smile 1", {"smile": 1.0}),
    ("eyes-closed 1", {"eyes_closed": 1.0}),
)


def _expressiveness(lm: np.ndarray) -> float:
    from datasets.synthetic.face_edits import expression_state

    try:
        e = expression_state(lm)
    except ValueError:
        return -1.0
    return abs(e.mouth_open) + abs(e.smile) + abs(e.eyes_closed) + abs(e.brows)


def editing_grid(generate: GenerateFn, names: list[str], images: np.ndarray, lms: np.ndarray, ids: list[str],
                 sigma: float, rows: int = 5, scale: int = 3) -> np.ndarray:
    """uint8 grid: per held-out identity its first view, then each edit of :data:`GRID_EDITS`, then a
    drive by the most expressive view of the next identity (that driver shown last)."""
    from pipelines.edit_portrait import Edits, _label, enlarge, target_landmarks

    size = images.shape[1:3]
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
        targets = [target_landmarks(lms[src], Edits(**kw), size) for _, kw in GRID_EDITS]
        targets.append(target_landmarks(lms[src], Edits(drive=lms[driver]), size))
        n = len(targets)
        x = _tensor(images[src:src + 1]).expand(n, -1, -1, -1)
        src_pose = torch.from_numpy(PORTRAIT.dense(lms[src], size, sigma))[None].expand(n, -1, -1, -1)
        tgt_pose = torch.stack([torch.from_numpy(PORTRAIT.dense(t, size, sigma)) for t in targets])
        with torch.no_grad():
            out = generate({"source_image": x, "source_pose": src_pose, "target_pose": tgt_pose})
        gen = ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        labels = ["source " + Path(names[src]).stem[-10:]] + [t for t, _ in GRID_EDITS] + ["drive", "driver"]
        cells = [images[src]] + list(gen) + [images[driver]]
        cells = [_label(enlarge(c, scale), t if r == 0 else "") if r == 0 else enlarge(c, scale)
                 for c, t in zip(cells, labels)]
        lines.append(np.concatenate([np.pad(c, ((2, 2), (2, 2), (0, 0)), constant_values=255) for c in cells], axis=1))
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)), constant_values=255) for line in lines]
    return np.concatenate(lines, axis=0)


# ---------------------------------------------------------------------------- entry


@dataclass
class PortraitResult:
    scores: dict[str, float]  # method -> landmark_nme (model, copy_source, mean_train_image)
    details: dict[str, Any]  # target_image floor, pixel errors, counts, regressor record
    protocol: dict[str, Any]
    files: list[Path]


def evaluate_portrait(generate: GenerateFn, shards_dir: Path, manifest: dict, dataset: str,
                      pair_names: list[tuple[str, str]], images_dir: Path, mean_image: np.ndarray,
                      plots_dir: Path, grid_rows: int = 5, recipe: RegressorRecipe = RegressorRecipe(),
                      cache_dir: Path = REGRESSOR_DIR) -> PortraitResult:
    """Landmark-following error of the generated test images (read back from ``images_dir``, as
    scored) and of the baselines, and the editing grid; see the module docstring."""
    from datasets.shards.loader import eval_loader
    from datasets.sheets.pose_sheet import save_png

    size = tuple(int(v) for v in manifest["image_size"])
    sigma = float(manifest["preprocess"]["heatmap_sigma"])
    net, reg = load_or_train_regressor(dataset, shards_dir, manifest, recipe, cache_dir)
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
    _plot_hist(hist, per, dataset)
    names, images, lms, ids = split_views(shards_dir, manifest, "test")
    grid = save_png(plots_dir / "editing_grid.png",
                    editing_grid(generate, names, images, lms, ids, sigma, rows=grid_rows))
    protocol = {
        "metric": "landmark_nme: mean distance over the target's present landmarks between the landmarks a "
                  "regressor finds in the image and the target's true landmarks, / the target's outer-eye-corner "
                  "distance (iBUG 36-45); mean over test pairs whose target has both eye corners",
        "regressor": {k: reg[k] for k in ("weights_sha256", "recipe", "train_images")},
        "pairs_counted": counted,
    }
    details = {"landmark_nme": scores, "pairs_counted": counted, "regressor": reg,
               "editing_grid": str(grid), "grid_edits": [t for t, _ in GRID_EDITS] + ["drive"]}
    return PortraitResult({m: scores[m] for m in ("model", "copy_source", "mean_train_image")}, details,
                          protocol, [hist, grid])


def _plot_hist(path: Path, per: dict[str, np.ndarray], dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    finite = np.concatenate([v[np.isfinite(v)] for v in per.values()])
    bins = np.linspace(0, max(float(np.percentile(finite, 99)), 1e-3), 41)
    for (method, values), colour in zip(per.items(), ("tab:blue", "tab:orange", "tab:grey", "tab:green")):
        v = values[np.isfinite(values)]
        ax.hist(v, bins=bins, alpha=0.5, color=colour, label=f"{method} (mean {v.mean():.3f})")
    ax.set_xlabel("landmark NME per test pair (lower follows the target better)")
    ax.set_ylabel("pairs")
    ax.set_title(f"{dataset}: landmark-following error")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report(doc: dict) -> str:
    """The portrait scores of a metrics JSON as a small table: model against both baselines."""
    names = doc.get("metric_names", {})
    keys = [k for k in ("ssim", "psnr", names.get("fd"), names.get("lpd"), "landmark_nme") if k and k in doc["model"]]
    lines = [f"{doc['dataset']}: {doc['protocol']['pairs']} held-out test pairs "
             f"(landmark_nme: lower follows the target landmarks better; the regressor's own error on the "
             f"real targets is {doc.get('portrait', {}).get('landmark_nme', {}).get('target_image', float('nan')):.4f})",
             f"{'method':<18}" + "".join(f"{k:>22}" for k in keys)]
    for method, scores in [("model", doc["model"])] + list(doc["baselines"].items()):
        lines.append(f"{method:<18}" + "".join(f"{scores[k]:>22.4f}" for k in keys))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pipelines.portrait_eval", description="portrait evaluation report")
    sub = ap.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="print a portrait metrics JSON (pipelines.evaluate's output)")
    rep.add_argument("metrics", type=Path)
    args = ap.parse_args(argv)
    if not args.metrics.is_file():
        print(f"portrait_eval: {args.metrics} not found; run make run-portrait first", file=sys.stderr)
        return 2
    print(report(json.loads(args.metrics.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
