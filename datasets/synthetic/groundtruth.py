"""Ground truth of the figure renderer: body-part map, part-frame points, garments, true flow.

For every rendered image the figure generator also writes ``<root>/groundtruth/<split>/<stem>.npz``
beside the field's layout (whose files stay byte-identical):

- ``part`` uint8 [H, W]: the body part owning the pixel (index into
  :data:`datasets.synthetic.figure_render.BODY_PARTS`), :data:`BACKGROUND` where no part does;
- ``garment`` uint8 [H, W]: the garment there (index into ``GARMENTS``; 0 background);
- ``surface`` float16 [H, W, 3]: the pixel's point in its part's own frame, body units (fractions
  of the standing height), NaN where the part has no frame there (ears, the hair bun, the hair
  volume around the skull, limb end caps) or the pixel mixes parts;
- ``px_per_unit`` float32: output pixels per body unit of this view (the pixel footprint, so
  tolerances can be given in pixels of the image they are measured in).

The part frame is the one the renderer evaluates cloth patterns in, so the same point has the same
cloth colour in every view: for limbs, the torso, the skirt and long hair, ``s`` along the part's
3-D axis and the angle around it (0 = the body's front, view yaw removed), stored as the point
``(r sin angle, s, r cos angle)`` on a cylinder of the part's mean radius ``r`` (front and back of
a limb are distinct points and nearness needs no angle wrap-around); for the head, the head-local
surface point (view yaw, head turn and roll removed).  The around-angle is the renderer's: exact
for an upright limb, measured in the screen-plane cross-section for one strongly tilted towards
the camera, where the renderer's cloth pattern itself follows the same coordinates.

:func:`true_flow` turns two views' ground truth into the true flow from target to source pixels.
The files are written with fixed zip timestamps, so equal renders give equal bytes.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BACKGROUND = 255  # part id of pixels no body part owns
FOLDER = "groundtruth"  # beside the layout's split folders
SUFFIX = ".npz"
DEFAULT_TOLERANCE_PX = 1.0  # a source point this far (source pixels) from the target's still matches


@dataclass(frozen=True)
class GroundTruth:
    """One image's ground truth at output resolution (see the module doc)."""

    part: np.ndarray  # uint8 [H, W]
    garment: np.ndarray  # uint8 [H, W]
    surface: np.ndarray  # float32 [H, W, 3], NaN where undefined
    px_per_unit: float

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.part.shape)  # type: ignore[return-value]


def path_for(root: str | Path, split: str, image_name: str) -> Path:
    """``<root>/groundtruth/<split>/<image stem>.npz``."""
    return Path(root) / FOLDER / split / (Path(image_name).stem + SUFFIX)


def from_canvas(
    owner: np.ndarray, surface: np.ndarray, garment: np.ndarray, supersample: int, px_per_unit: float
) -> GroundTruth:
    """Reduce a supersampled canvas's records to output pixels, as the image is area-averaged.

    Each output pixel covers ``supersample``² canvas samples: its part and garment are those of
    the most common owner among them; its surface point is their mean, defined only when all of
    them belong to one part and have a point (pixels mixing parts blend colours too).
    """
    ss = supersample
    h, w = owner.shape[0] // ss, owner.shape[1] // ss

    def blocks(a: np.ndarray) -> np.ndarray:  # [h*ss, w*ss, ...] -> [h, w, ss*ss, ...]
        a = a[: h * ss, : w * ss].reshape(h, ss, w, ss, *a.shape[2:])
        return np.moveaxis(a, 2, 1).reshape(h, w, ss * ss, *a.shape[4:])

    own, gar, pts = blocks(owner.astype(np.int16)), blocks(garment), blocks(surface)
    counts = (own[..., :, None] == own[..., None, :]).sum(-1)  # [h, w, n]: agreeing samples
    pick = counts.argmax(-1)[..., None]
    major = np.take_along_axis(own, pick, -1)[..., 0]
    part = np.where(major < 0, BACKGROUND, major).astype(np.uint8)
    garment_out = np.take_along_axis(gar, pick, -1)[..., 0].astype(np.uint8)
    whole = (counts.min(-1) == ss * ss) & (major >= 0) & np.isfinite(pts).all(axis=(-1, -2))
    point = np.where(whole[..., None], np.where(whole[..., None, None], pts, 0.0).mean(axis=2), np.nan)
    return GroundTruth(
        part,
        np.where(major < 0, 0, garment_out).astype(np.uint8),
        point.astype(np.float32),
        float(px_per_unit),
    )


def encode(gt: GroundTruth) -> bytes:
    """npz bytes (deflated, fixed timestamps: the same ground truth gives the same bytes)."""
    arrays = {
        "part": gt.part.astype(np.uint8),
        "garment": gt.garment.astype(np.uint8),
        "surface": gt.surface.astype(np.float16),
        "px_per_unit": np.asarray(gt.px_per_unit, np.float32),
    }
    return npz_bytes(arrays)


def npz_bytes(arrays: Mapping[str, object]) -> bytes:
    """``arrays`` as npz bytes, deflated, with fixed timestamps: the same arrays give the same
    bytes, so a stage that writes them is reproducible byte for byte."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def decode(data: bytes | memoryview) -> GroundTruth:
    """Inverse of :func:`encode`; raises ValueError on anything else."""
    try:
        with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as z:
            part, garment = z["part"], z["garment"]
            surface, ppu = z["surface"].astype(np.float32), float(z["px_per_unit"])
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"not a ground-truth file ({exc})") from None
    if part.ndim != 2 or garment.shape != part.shape or surface.shape != (*part.shape, 3):
        raise ValueError(
            f"ground-truth arrays disagree in shape: part {part.shape}, garment {garment.shape}, "
            f"surface {surface.shape}"
        )
    return GroundTruth(part, garment, surface, ppu)


def true_flow(
    source: GroundTruth, target: GroundTruth, tolerance_px: float = DEFAULT_TOLERANCE_PX
) -> tuple[np.ndarray, np.ndarray]:
    """The true flow from target to source pixels and where it exists.

    Returns ``flow`` float32 [H, W, 2] = (dx, dy) such that target pixel (x, y) shows the body
    point the source shows at (x + dx, y + dy) (the convention of :mod:`model.warp`), and ``mask``
    bool [H, W].  For each target pixel with a part-frame point, the source pixel of the same part
    whose point is nearest is its match; the mask is False on the background, where the target
    pixel has no point, and where the nearest source point is farther than ``tolerance_px``
    source pixels (the point is hidden in the source: turned away, behind another part, out of
    frame).  Matches are source pixel centres, so the flow is exact to the source pixel grid.
    """
    from scipy.spatial import cKDTree

    if source.shape != target.shape:
        raise ValueError(f"source ground truth is {source.shape}, target {target.shape}")
    h, w = target.shape
    flow = np.zeros((h, w, 2), np.float32)
    mask = np.zeros((h, w), bool)
    tol = tolerance_px / source.px_per_unit  # body units
    src_ok = np.isfinite(source.surface).all(-1)
    tgt_ok = np.isfinite(target.surface).all(-1)
    for p in np.unique(target.part[tgt_ok]):
        sy, sx = np.nonzero(src_ok & (source.part == p))
        if len(sy) == 0:
            continue
        ty, tx = np.nonzero(tgt_ok & (target.part == p))
        dist, idx = cKDTree(source.surface[sy, sx]).query(target.surface[ty, tx])
        near = dist <= tol
        ty, tx, idx = ty[near], tx[near], idx[near]
        flow[ty, tx, 0] = sx[idx] - tx
        flow[ty, tx, 1] = sy[idx] - ty
        mask[ty, tx] = True
    return flow, mask


def warp_nearest(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` [H, W, C] sampled at the nearest pixel of ``(x, y) + flow`` (clamped to the frame)."""
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    sx = np.clip(np.rint(xs + flow[..., 0]).astype(int), 0, w - 1)
    sy = np.clip(np.rint(ys + flow[..., 1]).astype(int), 0, h - 1)
    return image[sy, sx]
