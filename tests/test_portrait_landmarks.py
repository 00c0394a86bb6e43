"""The 68-point landmark scheme, flips, part grouping, part maps and the CSV cells."""
from __future__ import annotations

import json

import numpy as np
import pytest

from datasets.pose import landmarks
from datasets.synthetic.portrait_geometry import FaceShape, neutral_landmarks


def frontal_face(size: int = 64) -> np.ndarray:
    """The mean face's landmarks placed in a size x size frame."""
    lm = neutral_landmarks(FaceShape())
    return (lm * size / 4.0 + [size / 2.0, size * 0.35]).astype(np.float32)


def test_scheme_regions_cover_every_point_once():
    covered = np.concatenate([landmarks.region(name) for name in landmarks.REGIONS])
    assert sorted(covered.tolist()) == list(range(68))
    assert len(landmarks.LANDMARK_NAMES) == len(set(landmarks.LANDMARK_NAMES)) == 68
    assert landmarks.LANDMARK_NAMES[8] == "jaw_8" and landmarks.LANDMARK_NAMES[36] == "right_eye_0"
    assert landmarks.REGIONS["outer_lips"] == (48, 59) and landmarks.REGIONS["inner_lips"] == (60, 67)


def test_flip_permutation_is_an_involution_that_keeps_the_midline():
    perm = landmarks.flip_permutation()
    assert (perm[perm] == np.arange(68)).all()
    fixed = {int(i) for i in np.flatnonzero(perm == np.arange(68))}
    assert fixed == {8, 27, 28, 29, 30, 33, 51, 57, 62, 66}
    # eyes swap corner for corner: right outer (36) <-> left outer (45), inner 39 <-> 42
    assert perm[36] == 45 and perm[39] == 42 and perm[17] == 26 and perm[48] == 54


def test_flipping_a_symmetric_face_gives_the_same_face():
    size = 64
    lm = frontal_face(size)
    centre = lm[[27, 28, 29, 30, 33]].mean(0)[0]
    mirrored_about_centre = landmarks.flip_landmarks(lm, size) + [2 * centre - (size - 1), 0]
    np.testing.assert_allclose(mirrored_about_centre, lm, atol=1e-4)
    lm[3] = landmarks.MISSING
    flipped = landmarks.flip_landmarks(lm, size)
    assert (flipped[13] == landmarks.MISSING).all() and landmarks.visible(flipped).sum() == 67


def test_parts_group_every_point_and_flip_as_a_channel_permutation():
    assert landmarks.NUM_PARTS == 8 and landmarks.PART_NAMES == (
        "jaw", "right_brow", "left_brow", "nose", "right_eye", "left_eye", "outer_lips", "inner_lips")
    used = sorted({i for part in landmarks.PARTS for curve in part.curves for i in curve})
    assert used == list(range(68))
    size = 64
    lm = frontal_face(size)
    lm[[0, 1, 2]] = landmarks.MISSING  # asymmetric on purpose
    maps = landmarks.render_part_maps(lm, size, size, 1.2)
    flipped_maps = landmarks.render_part_maps(landmarks.flip_landmarks(lm, size), size, size, 1.2)
    np.testing.assert_allclose(landmarks.flip_part_maps(maps), flipped_maps, atol=1e-5)


def test_part_maps_peak_on_the_curve_and_fall_off_as_a_gaussian():
    size, sigma = 64, 1.5
    lm = frontal_face(size)
    lm_int = np.rint(lm)  # put the points on pixel centres so the peak is sampled exactly
    maps = landmarks.render_part_maps(lm_int, size, size, sigma)
    assert maps.shape == (8, size, size) and maps.dtype == np.float32
    for c, part in enumerate(landmarks.PARTS):
        for i in part.curves[0]:
            x, y = lm_int[i].astype(int)
            assert maps[c, y, x] == pytest.approx(1.0)
    # Midpoint of a horizontal-ish segment: on the curve; 3 sigma off it: exp(-4.5).
    a, b = np.array([10.0, 20.0]), np.array([30.0, 20.0])
    seg = np.full((68, 2), landmarks.MISSING, np.float32)
    seg[17], seg[18] = a, b
    m = landmarks.render_part_maps(seg, size, size, sigma)
    assert m[1, 20, 20] == pytest.approx(1.0)
    assert m[1, 20 + int(3 * sigma), 20] == pytest.approx(np.exp(-((int(3 * sigma)) ** 2) / (2 * sigma**2)), rel=1e-5)
    assert m[1, 20, 40] == 0.0 and m[[0, 2, 3, 4, 5, 6, 7]].max() == 0.0  # beyond 4 sigma: not computed


def test_missing_points_give_empty_parts_and_drop_only_their_segments():
    size = 64
    lm = frontal_face(size)
    lm[36:42] = landmarks.MISSING  # the whole right eye
    lm[0:5] = landmarks.MISSING  # the upper right half of the jaw
    maps = landmarks.render_part_maps(lm, size, size, 1.0)
    assert maps[landmarks.PART_NAMES.index("right_eye")].max() == 0.0
    assert maps[landmarks.PART_NAMES.index("left_eye")].max() == pytest.approx(1.0, abs=0.05)
    jaw = maps[0]
    x2, y2 = np.rint(frontal_face(size)[2]).astype(int)
    x12, y12 = np.rint(lm[12]).astype(int)
    assert jaw[y2, x2] < 0.05 and jaw[y12, x12] > 0.5
    with pytest.raises(ValueError, match="sigma"):
        landmarks.render_part_maps(lm, size, size, 0.0)
    with pytest.raises(ValueError, match="68, 2"):
        landmarks.render_part_maps(lm[:60], size, size, 1.0)


def test_csv_cells_round_trip_y_first_and_mark_outside_points_missing():
    lm = frontal_face(64)
    lm[5] = landmarks.MISSING
    lm[6] = (-0.6, 30.0)  # rounds to -1: must read as missing, not as a coordinate
    lm[7] = (70.0, 30.0)  # right of the frame
    ys, xs = landmarks.encode_row(lm, (64, 64))
    yl, xl = json.loads(ys), json.loads(xs)
    assert len(yl) == len(xl) == 68 and all(isinstance(v, int) for v in yl + xl)
    assert yl[30] == int(np.rint(lm[30, 1])) and xl[30] == int(np.rint(lm[30, 0]))
    back = landmarks.decode_row(ys, xs)
    assert (back[[5, 6, 7]] == landmarks.MISSING).all()
    ok = landmarks.visible(back)
    np.testing.assert_allclose(back[ok], np.rint(lm[ok]))
    with pytest.raises(ValueError, match="68"):
        landmarks.decode_row("[1, 2]", "[3, 4]")
