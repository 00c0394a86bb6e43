"""Ground truth of the portrait renderer: part map, head-model points, true flow, true edits.

While :func:`datasets.synthetic.portrait_render.render_with_truth` draws a portrait it records, per
supersampled pixel, which layer covers it (:class:`PartRecorder`) and, on the head shell, the point
of the head model it shows.  The record is reduced to output pixels by
:func:`datasets.synthetic.groundtruth.from_canvas` and stored in the figure generator's file format
(``<root>/groundtruth/<split>/<stem>.npz``), so the preprocess stage carries it into the test shards
and :func:`datasets.synthetic.groundtruth.true_flow` computes the true flow between two views:

- ``part`` uint8: index into :data:`PORTRAIT_PARTS` (the geometric layer: flow matches within one);
- ``garment`` uint8: index into :data:`PORTRAIT_REGIONS` (the appearance region that
  ``appearance_de00_<region>`` scores; 0 background);
- ``surface``: the head-frame point ``(x, y, z)`` (face half-widths) on the head shell and on what is
  painted on it (skin, hair shell, brows, eyes, lips, mouth), with ``y`` below the jaw top rescaled to
  the closed mouth's jaw (so a dropped chin keeps its point); NaN on the layers without a head-model
  point (nose, ears, neck, back hair, clothes, glasses, earrings) and on mixed pixels;
- ``px_per_unit``: output pixels per face half-width (the pose's scale).

Recording only reads the drawing's coverage masks (a pixel belongs to the last layer painted over it
with coverage ≥ 1/2), so the rendered pixels and the order of random draws do not change.
"""

from __future__ import annotations

import numpy as np

from datasets.synthetic.groundtruth import GroundTruth, from_canvas

PORTRAIT_PARTS: tuple[str, ...] = (
    "skin",  # the face and scalp skin of the head shell
    "hair",  # the hair shell over the head
    "eyes",
    "brows",
    "lips",
    "mouth",  # the mouth interior and teeth
    "nose",
    "ears",
    "neck",
    "hair_back",  # hair hanging behind the head, the bun
    "clothing",
    "glasses",
    "earrings",
)
PORTRAIT_REGIONS: tuple[str, ...] = (
    "background",
    "skin",
    "hair",
    "eyes",
    "brows",
    "lips",
    "mouth",
    "clothing",
    "glasses",
    "earrings",
)
_REGION_OF_PART = {
    "skin": "skin",
    "hair": "hair",
    "eyes": "eyes",
    "brows": "brows",
    "lips": "lips",
    "mouth": "mouth",
    "nose": "skin",
    "ears": "skin",
    "neck": "skin",
    "hair_back": "hair",
    "clothing": "clothing",
    "glasses": "glasses",
    "earrings": "earrings",
}
REGION_OF_PART = np.array([PORTRAIT_REGIONS.index(_REGION_OF_PART[p]) for p in PORTRAIT_PARTS], np.uint8)
COVERED = 0.5  # coverage from which a painted layer owns a pixel


def part_id(name: str) -> int:
    return PORTRAIT_PARTS.index(name)


class PartRecorder:
    """Owner layer and head-model point of every supersampled pixel, filled while drawing."""

    def __init__(self, height: int, width: int) -> None:
        self.owner = np.full((height, width), -1, np.int16)
        self.surface = np.full((height, width, 3), np.nan, np.float32)
        self.head = np.zeros((height, width), bool)  # pixels of the ray-cast head shell

    def cover(self, alpha: np.ndarray, part: str, keep_surface: bool = False) -> None:
        """The layer ``part`` painted with coverage ``alpha`` owns where it covers half or more;
        ``keep_surface``: it is painted on the head shell and shows the shell's point."""
        hit = np.asarray(alpha) >= COVERED
        self.owner[hit] = part_id(part)
        if not keep_surface:
            self.surface[hit] = np.nan

    def cover_head(
        self, box: tuple[int, int, int, int], mask: np.ndarray, points: np.ndarray, hair: np.ndarray
    ) -> None:
        """The ray-cast head: ``mask`` [h, w] of the crop ``box``, its head points [n, 3] and hair
        coverage [n] in mask order."""
        y0, y1, x0, x1 = box
        full = np.zeros_like(self.head)
        full[y0:y1, x0:x1] = mask
        self.head = full
        ids = np.where(hair >= COVERED, part_id("hair"), part_id("skin")).astype(np.int16)
        self.owner[full] = ids
        self.surface[full] = points.astype(np.float32)

    def on_head(self, alpha: np.ndarray) -> np.ndarray:
        """``alpha`` limited to the head shell (features painted into the head's albedo)."""
        return np.where(self.head, alpha, 0.0)

    def ground_truth(self, supersample: int, px_per_unit: float) -> GroundTruth:
        regions = np.where(self.owner >= 0, REGION_OF_PART[np.maximum(self.owner, 0)], 0).astype(np.uint8)
        return from_canvas(self.owner, self.surface, regions, supersample, px_per_unit)


def canonical_head_points(
    phi: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    d: np.ndarray,
    zc: np.ndarray,
    jaw_top: float,
    jaw_stretch: float,
) -> np.ndarray:
    """Head-frame points [n, 3] of surface angles ``phi`` at heights ``y`` (cross-section ``w``,
    ``d``, ``zc``), heights below the jaw top divided by ``jaw_stretch`` (opened / closed jaw length)
    so a point of the lower face keeps its coordinate when the mouth opens."""
    yc = np.where(y > jaw_top, jaw_top + (y - jaw_top) / jaw_stretch, y)
    return np.stack([w * np.sin(phi), yc, zc + d * np.cos(phi)], -1)
