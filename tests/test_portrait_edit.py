"""The landmark edit model: each edit, its range checks, and driving one face by another."""
from __future__ import annotations

import math

import numpy as np
import pytest

from datasets.faces import edits as face_edits
from datasets.pose.landmarks import MISSING, visible
from datasets.synthetic.portrait_dataset import base_pose, sample_expression, sample_identity
from datasets.synthetic.portrait_geometry import HeadPose, image_landmarks, neutral_landmarks

SIZE = (128, 128)


def posed(identity_number: int, expression: face_edits.Expression = face_edits.Expression(), pose: HeadPose | None = None,
          seed: int = 0) -> np.ndarray:
    """Exact landmarks of a synthetic identity (the generator's own geometry)."""
    ident = sample_identity(seed, identity_number, "plain")
    neutral = neutral_landmarks(ident.shape)
    frontal = face_edits.apply_expression(neutral + 10, expression).astype(np.float64) - 10
    return image_landmarks(frontal, ident.shape, float(frontal[8, 1] - neutral[8, 1]), pose or base_pose(SIZE), SIZE)


def test_rotate_turns_every_point_by_theta_about_the_face_centre():
    lm = posed(0, pose=HeadPose(60.0, 50.0, 25.0, 5.0, 10.0))
    centre = face_edits.face_centre(lm)
    for theta in (-30.0, 7.5, 45.0):
        out = face_edits.rotate(lm, theta)
        np.testing.assert_allclose(face_edits.face_centre(out), centre, atol=1e-4)
        d0, d1 = lm - centre, out - centre
        # counter-clockwise on screen: y points down, so measure angles with -y
        a0, a1 = np.arctan2(-d0[:, 1], d0[:, 0]), np.arctan2(-d1[:, 1], d1[:, 0])
        turn = np.degrees((a1 - a0 + np.pi) % (2 * np.pi) - np.pi)
        np.testing.assert_allclose(turn, theta, atol=1e-3)
        np.testing.assert_allclose(np.linalg.norm(d1, axis=1), np.linalg.norm(d0, axis=1), rtol=1e-5)


def test_mouth_open_widens_the_lip_gap_monotonically_and_closing_undoes_it():
    lm = posed(1)
    gaps = [face_edits.lip_gap(face_edits.mouth_open(lm, a)) for a in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert gaps[0] == pytest.approx(0.0, abs=0.02)
    assert all(b > a + 0.05 for a, b in zip(gaps, gaps[1:]))
    opened = face_edits.mouth_open(lm, 1.0)
    assert opened[8, 1] > lm[8, 1] + 5  # the chin drops with the jaw
    np.testing.assert_allclose(opened[17:48], lm[17:48], atol=1e-4)  # brows, nose, eyes stay
    half = face_edits.lip_gap(face_edits.mouth_open(opened, -0.5))
    assert half == pytest.approx(gaps[-1] / 2, rel=0.02)
    assert face_edits.lip_gap(face_edits.mouth_open(opened, -1.0)) == pytest.approx(0.0, abs=1e-4)


def test_edits_mean_the_same_on_a_rotated_face():
    lm = posed(2)
    for edit in (face_edits.mouth_open, face_edits.smile, face_edits.eyes_closed, face_edits.brows):
        a = face_edits.rotate(edit(lm, 0.8), 30.0)
        b = edit(face_edits.rotate(lm, 30.0), 0.8)
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_smile_eyes_and_brows_move_the_right_points():
    lm = posed(3)
    up = -1.0  # y grows downwards
    smiled = face_edits.smile(lm, 1.0)
    assert (smiled[[48, 54], 1] - lm[[48, 54], 1] < up).all()
    assert smiled[48, 0] < lm[48, 0] and smiled[54, 0] > lm[54, 0]  # corners move outwards
    frown = face_edits.smile(lm, -1.0)
    assert (frown[[48, 54], 1] > lm[[48, 54], 1] + 1).all()
    closed = face_edits.eyes_closed(lm, 1.0)
    np.testing.assert_allclose(closed[[37, 38, 43, 44]], lm[[41, 40, 47, 46]], atol=1e-4)
    wide = face_edits.eyes_closed(lm, -1.0)
    assert (wide[[37, 38, 43, 44], 1] < lm[[37, 38, 43, 44], 1] - 0.5).all()
    raised = face_edits.brows(lm, 1.0)
    assert (raised[17:27, 1] < lm[17:27, 1] + up).all()
    knit = face_edits.brows(lm, -1.0)
    assert knit[22, 0] - knit[21, 0] < lm[22, 0] - lm[21, 0] - 1  # inner ends closer together


@pytest.mark.parametrize("edit, bad, message", [
    (lambda lm, v: face_edits.rotate(lm, v), 46.0, r"rotate: strength 46.0 is outside its valid range \[-45, 45\]"),
    (lambda lm, v: face_edits.mouth_open(lm, v), 1.5, r"mouth_open: .*\[-1, 1\]"),
    (lambda lm, v: face_edits.smile(lm, v), -1.01, r"smile: .*\[-1, 1\]"),
    (lambda lm, v: face_edits.eyes_closed(lm, v), float("nan"), r"eyes_closed: .*\[-1, 1\]"),
    (lambda lm, v: face_edits.brows(lm, v), 2.0, r"brows: .*\[-1, 1\]"),
    (lambda lm, v: face_edits.shift(lm, v, 0.0, SIZE), 65.0, r"shift dx: .*\[-64, 64\]"),
])
def test_out_of_range_strength_raises_naming_edit_and_range(edit, bad, message):
    with pytest.raises(ValueError, match=message):
        edit(posed(0), bad)


def test_missing_points_stay_missing_and_the_frame_needs_its_points():
    lm = posed(4)
    lm[[0, 1, 60]] = MISSING
    for out in (face_edits.rotate(lm, 10.0), face_edits.shift(lm, 3.0, -2.0, SIZE), face_edits.mouth_open(lm, 0.5), face_edits.smile(lm, 0.5)):
        assert not visible(out)[[0, 1, 60]].any() and visible(out).sum() == 65
    np.testing.assert_allclose(face_edits.shift(lm, 3.0, -2.0, SIZE)[5], lm[5] + [3.0, -2.0])
    lm[36] = MISSING
    with pytest.raises(ValueError, match="eye corners and the nose base"):
        face_edits.smile(lm, 0.5)
    clipped = face_edits.clip_to_frame(face_edits.shift(posed(4), 60.0, 0.0, SIZE), SIZE)
    assert not visible(clipped).all() and visible(clipped).any()


def _shape_error(x: np.ndarray, truth: np.ndarray) -> float:
    """Mean point error after removing translation, in eye distances of the truth."""
    ok = visible(x) & visible(truth)
    d = (x[ok] - x[ok].mean(0)) - (truth[ok] - truth[ok].mean(0))
    iod = np.linalg.norm((truth[36] + truth[39]) / 2 - (truth[42] + truth[45]) / 2)
    return float(np.linalg.norm(d, axis=1).mean() / iod)


def test_drive_keeps_the_source_identity_and_takes_expression_and_pose():
    b = base_pose(SIZE)
    drive_err, naive_err = [], []
    for k in range(6):
        rng = np.random.default_rng(100 + k)
        expr = sample_expression(rng)
        pose = HeadPose(b.cx + rng.uniform(-5, 5), b.cy + rng.uniform(-5, 5), b.scale, rng.uniform(-15, 15),
                    rng.uniform(-28, 28))
        source = posed(2 * k, seed=7)
        driver = posed(2 * k + 1, expr, pose, seed=7)
        truth = posed(2 * k, expr, pose, seed=7)  # the source identity rendered in the driver's state
        out = face_edits.drive(source, driver)
        assert (visible(out) == visible(driver)).all()
        drive_err.append(_shape_error(out, truth))
        naive_err.append(_shape_error(driver, truth))
    assert np.mean(drive_err) < 0.04 and np.mean(drive_err) < 0.4 * np.mean(naive_err)


def test_drive_by_itself_changes_little_and_transfers_an_open_mouth():
    lm = posed(5, face_edits.Expression(smile=0.5), HeadPose(64.0, 55.0, 30.0, 8.0, 12.0))
    assert _shape_error(face_edits.drive(lm, lm), lm) < 0.01
    driver = posed(6, face_edits.Expression(mouth_open=1.0))
    out = face_edits.drive(posed(5), driver, frame=SIZE)
    scale = np.linalg.norm(out[45] - out[36]) / np.linalg.norm(driver[45] - driver[36])
    assert face_edits.lip_gap(out) == pytest.approx(face_edits.lip_gap(driver), rel=0.1)
    assert scale == pytest.approx(1.0, abs=0.2)
    state = face_edits.expression_state(driver)
    assert state.mouth_open == pytest.approx(1.0, abs=0.15) and abs(state.smile) < 0.2
    assert math.isclose(face_edits.estimate_pose(posed(5, pose=HeadPose(64.0, 55.0, 30.0, 0.0, 20.0))).yaw_deg, 20.0, abs_tol=3.0)


def test_drive_fills_points_the_source_hides():
    source = posed(3, pose=HeadPose(64.0, 55.0, 30.0, 0.0, 28.0))  # far jaw hidden by the yaw
    assert not visible(source).all()
    driver = posed(4, face_edits.Expression(smile=0.6))
    truth = posed(3, face_edits.Expression(smile=0.6), HeadPose(64.0, 55.0, 30.0, 0.0, 0.0))
    out = face_edits.drive(source, driver)
    assert visible(out).all()  # the frontal driver shows the whole jaw, so does the result
    assert _shape_error(out, truth) < 0.03
