"""Renderer ground truth: part maps and part-frame points, the true flow and its exactness."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as nd

from datasets.raw.layout import SPLITS
from datasets.specs import SynthesizeSpec
from datasets.synthetic import fashion, groundtruth
from datasets.synthetic.figure_render import (
    BODY_PARTS,
    GARMENTS,
    BodyView,
    render_figure,
    render_figure_canvas,
)

SOLID = SynthesizeSpec(generator="figure", patterns=())  # plain cloth: every colour edge is a garment edge
TINY = SynthesizeSpec(generator="figure", seed=5, height=64, width=44, train_identities=2, test_identities=2,
                      views_per_identity=2)


def _view_pair(seed: int, spec: SynthesizeSpec, turn: float, ss: int = 1):
    """Two unshaded renders of one identity over black (pose and framing of each drawn from the
    seed, the second turned by ``turn`` degrees), with their ground truth at output size."""
    look, _ = fashion.sample_identity_look(np.random.default_rng([seed, 3]), spec)
    out = []
    for k in range(2):
        rng = np.random.default_rng([seed, k])
        pose, view = fashion.sample_body_pose(rng, "stand"), fashion.sample_view(rng, spec, 0)
        view = BodyView("t", view.yaw + (turn if k else 0.0), view.body_px, view.cx, view.sole_y)
        canvas, _ = render_figure_canvas(look, pose, view, np.zeros((128 * ss, 88 * ss, 3), np.float32), ss,
                                         record_surface=True, shading=False)
        image = canvas.rgb.reshape(128, ss, 88, ss, 3).mean(axis=(1, 3))
        out.append((image, groundtruth.from_canvas(canvas.owner, canvas.surface, canvas.garment, ss, view.body_px)))
    return out


@pytest.mark.parametrize("seed, turn", [(0, 40.0), (1, 40.0), (3, -30.0), (4, 25.0)])
def test_true_flow_warps_the_source_onto_the_target(seed: int, turn: float) -> None:
    """Exactness by construction: the renderer colours cloth by the part-frame point, so where the
    true flow exists the source pixel it points to shows the target's colour.  Rendered without
    shading (it changes with the view), supersampling, noise or JPEG, in solid cloth; the warp
    samples the nearest pixel.  Wherever the target's colour is locally constant (3x3), the warped
    source equals it exactly; at colour edges (hems, waistband, eyes) the match, within a source
    pixel of the target's point, may take the neighbouring colour, which bounds the mean."""
    (src, src_gt), (tgt, tgt_gt) = _view_pair(seed, SOLID, turn)
    flow, mask = groundtruth.true_flow(src_gt, tgt_gt)
    body = tgt_gt.part != groundtruth.BACKGROUND
    assert mask.sum() > 0.4 * body.sum()  # most of the body is seen in both views
    assert not (mask & ~body).any()
    error = np.abs(groundtruth.warp_nearest(src, flow) - tgt).max(axis=-1) * 255
    flat = np.ones(mask.shape, bool)
    for c in range(3):
        flat &= nd.maximum_filter(tgt[..., c], 3) - nd.minimum_filter(tgt[..., c], 3) < 1 / 255
    interior = mask & flat
    assert interior.sum() > 0.3 * mask.sum()
    assert (error[interior] < 1e-3).mean() >= 0.995  # exact up to float rounding
    assert np.median(error[mask]) == 0 and error[mask].mean() < 4.0 and (error[mask] < 1e-3).mean() > 0.8
    identity = np.abs(src - tgt).max(axis=-1)[mask] * 255  # no warp: what the test would see if the flow were wrong
    assert identity.mean() > 10 * max(error[mask].mean(), 1.0)


def test_points_do_not_depend_on_the_view() -> None:
    """A body point keeps its part-frame point when the camera turns: the torso's visible front
    points in a 30-degree-turned view are found in the frontal one within a pixel."""
    (_, a), (_, b) = _view_pair(2, SOLID, 30.0)
    flow, mask = groundtruth.true_flow(a, b)
    torso = b.part == BODY_PARTS.index("torso")
    assert mask[torso].mean() > 0.6
    # Front and back are distinct: a frontal view has no match for a back view's torso.
    (_, front), (_, back) = _view_pair(2, SOLID, 180.0)
    _, mask_back = groundtruth.true_flow(front, back)
    assert mask_back[back.part == BODY_PARTS.index("torso")].mean() < 0.05


def test_recording_changes_no_pixel_and_labels_the_garments() -> None:
    look, _ = fashion.sample_identity_look(np.random.default_rng(7), SynthesizeSpec(generator="figure"))
    pose = fashion.sample_body_pose(np.random.default_rng(8), "walk")
    view = BodyView("t", 20.0, 110.0, 44.0, 122.0)
    bg = np.ones((256, 176, 3), np.float32)
    plain, kp = render_figure(look, pose, view, bg, 2)
    canvas, kp2 = render_figure_canvas(look, pose, view, bg, 2, record_surface=True)
    assert np.array_equal(plain, canvas.rgb) and np.array_equal(kp, kp2)
    gt = groundtruth.from_canvas(canvas.owner, canvas.surface, canvas.garment, 2, view.body_px)
    assert gt.shape == (128, 88)
    body = gt.part != groundtruth.BACKGROUND
    assert (gt.garment[body] > 0).all() and (gt.garment[~body] == 0).all()
    names = {GARMENTS[g] for g in np.unique(gt.garment[body])}
    assert {"skin", "top"} <= names
    head = gt.garment[gt.part == BODY_PARTS.index("head")]
    assert {GARMENTS[g] for g in np.unique(head)} <= {"skin", "hair"}


def test_files_round_trip_and_repeat_byte_for_byte(tmp_path: Path) -> None:
    a = fashion.write_dataset(TINY, tmp_path / "a").root
    b = fashion.write_dataset(TINY, tmp_path / "b").root
    for split in SPLITS:
        files = sorted((a / groundtruth.FOLDER / split).iterdir())
        images = sorted((a / split).iterdir())
        assert [f.stem for f in files] == [i.stem for i in images]
        for f in files:
            assert f.read_bytes() == (b / groundtruth.FOLDER / split / f.name).read_bytes()
    gt = groundtruth.decode((a / groundtruth.FOLDER / "test" / files[0].name).read_bytes())
    assert gt.shape == (64, 44) and gt.px_per_unit > 0
    again = groundtruth.decode(groundtruth.encode(gt))
    assert np.array_equal(again.part, gt.part)
    assert np.array_equal(np.isnan(again.surface), np.isnan(gt.surface))
    with pytest.raises(ValueError):
        groundtruth.decode(b"not a zip")
