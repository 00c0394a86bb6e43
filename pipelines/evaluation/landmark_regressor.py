"""The landmark regressor behind ``landmark_nme``: trained on the synthetic training faces by its own
stage (``python -m pipelines.train_landmarks``, a declared DVC output), read by evaluation.

On synthetic portraits the target's 68 landmarks are exact, so "does the output follow the driving
landmarks?" is measured: this small regressor (model/landmark_net.py) finds the landmarks in an
image, and the error against the target's true landmarks is the field's normalised mean error.  It
is trained on the *training* images only (seeded, with flips, small affine jitter, blur, noise and
colour jitter so that it reads generated faces as well as rendered ones).  The saved file records
the training shards' hashes and the recipe (its key); evaluation refuses a file whose key does not
match the shards it scores, instead of training one silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from datasets.pose.landmarks import NUM_LANDMARKS, visible
from datasets.pose.scheme import PORTRAIT
from datasets.shards.augment import AugmentConfig, Augmenter
from datasets.shards.views import split_views
from model.landmark_net import LandmarkRegressor, to_normalised, to_pixels

log = logging.getLogger(__name__)

EYE_CORNERS = (36, 45)  # outer corners: the inter-ocular distance of the 68-point NME
REGRESSOR_DIR = Path("data/landmark_regressor")


class RegressorError(RuntimeError):
    """No landmark regressor for these shards; the message says which command makes one."""


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


def _augment(
    images: np.ndarray, lms: np.ndarray, recipe: RegressorRecipe, rng: np.random.Generator, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    aug = Augmenter(
        AugmentConfig(flip_p=0.5, affine_p=0.9, scale=(0.9, 1.1), translate=0.06, rotate=recipe.rotate),
        PORTRAIT.flip_permutation(),
        seed=seed,
    )
    out_i, out_l = np.empty_like(images), np.empty_like(lms)
    for k in range(len(images)):
        a = aug(images[k], lms[k], np.zeros(4, np.float32), False)
        img: np.ndarray = a.rgb.astype(np.float32)
        sigma = rng.uniform(0, recipe.max_blur)
        if sigma > 0.25:
            img = cv2.GaussianBlur(img, (0, 0), sigma)
        img = img * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20) + rng.normal(0, rng.uniform(0, 4), img.shape)
        out_i[k] = np.clip(img, 0, 255).astype(np.uint8)
        out_l[k] = a.keypoints
    return out_i, out_l


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def train_regressor(images: np.ndarray, lms: np.ndarray, recipe: RegressorRecipe) -> LandmarkRegressor:
    """Fit the regressor to (image, landmarks) with L1 on the present points; deterministic per seed."""
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    size = (images.shape[1], images.shape[2])
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
            idx = order[s * recipe.batch_size : (s + 1) * recipe.batch_size]
            x = to_tensor(aug_i[idx])
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
        log.info(
            "landmark regressor epoch %d/%d: L1 %.4f (%.0f s)",
            epoch + 1,
            recipe.epochs,
            running / steps_per_epoch,
            time.time() - t0,
        )
    return net.eval()


@torch.no_grad()
def predict(net: LandmarkRegressor, images: np.ndarray | torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Pixel landmarks [N, 68, 2] of uint8 images [N,H,W,3] (or float [N,3,H,W] in [-1, 1])."""
    x = to_tensor(images) if isinstance(images, np.ndarray) else images.float()
    size = (x.shape[-2], x.shape[-1])
    out = [to_pixels(net(x[i : i + batch_size]), size) for i in range(0, len(x), batch_size)]
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


def regressor_path(dataset: str, root: Path = REGRESSOR_DIR) -> Path:
    return Path(root) / f"{dataset}.pt"


def weights_sha256(net: LandmarkRegressor) -> str:
    sha = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        sha.update(name.encode())
        sha.update(t.detach().contiguous().numpy().tobytes())
    return sha.hexdigest()


def train_and_save(
    shards_dir: Path | str, manifest: dict, path: Path, recipe: RegressorRecipe = RegressorRecipe()
) -> dict:
    """Train the regressor on the training views of these shards and write it atomically to ``path``;
    returns its record (training images, training NME, seconds, key)."""
    _, images, lms, _ = split_views(shards_dir, manifest, "train")
    t0 = time.time()
    log.info(
        "training the landmark regressor on %d training faces (%d epochs) -> %s",
        len(images),
        recipe.epochs,
        path,
    )
    net = train_regressor(images, lms, recipe)
    info = {
        "train_images": len(images),
        "train_nme": float(np.nanmean(nme(predict(net, images), lms))),
        "seconds": round(time.time() - t0, 1),
    }
    key = regressor_key(manifest, recipe)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state": net.state_dict(), "info": info, "recipe": asdict(recipe), "key": key}, tmp)
    tmp.replace(path)
    return {**info, "key": key, "weights_sha256": weights_sha256(net)}


def load_regressor(
    path: Path, manifest: dict, dataset: str, recipe: RegressorRecipe = RegressorRecipe()
) -> tuple[LandmarkRegressor, dict]:
    """The regressor trained for exactly these training shards and recipe, and its record."""
    make = f"python -m pipelines.train_landmarks --dataset {dataset} --out {path}"
    if not Path(path).is_file():
        raise RegressorError(
            f"{path}: no landmark regressor for {dataset}; train it first: {make} "
            "(dvc repro portrait/dvc.yaml runs it)"
        )
    saved = torch.load(path, map_location="cpu", weights_only=True)
    key = regressor_key(manifest, recipe)
    if saved.get("key") != key:
        raise RegressorError(
            f"{path}: trained for other training shards or another recipe than {dataset}'s "
            f"current ones; retrain it: {make}"
        )
    net = LandmarkRegressor(recipe.width)
    net.load_state_dict(saved["state"])
    info = dict(saved["info"])
    info.update({"path": str(path), "weights_sha256": weights_sha256(net), "recipe": asdict(recipe)})
    return net.eval(), info
