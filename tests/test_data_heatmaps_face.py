"""Pose heatmaps (peak, zero channel, storage) and the face box rule."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets.pose import heatmaps
from datasets.pose.face import MIN_SIDE_FRACTION, NECK_SCALE, SPREAD_SCALE, body_face_box, crop_face
from datasets.pose.keypoints import JOINT_INDEX, NUM_JOINTS, flip_permutation
from datasets.shards import expand


def _kp(**joints) -> np.ndarray:
    kp = np.full((NUM_JOINTS, 2), -1, np.float32)
    for name, xy in joints.items():
        kp[JOINT_INDEX[name]] = xy
    return kp


def test_heatmap_peak_at_keypoint_and_zero_channel_for_missing():
    kp = _kp(nose=(20, 30), neck=(21.4, 40.6), Rsho=(0, 0))
    dense = heatmaps.quantise(heatmaps.render_dense(kp, (64, 44), 2.0))
    assert np.unravel_index(dense[0].argmax(), dense[0].shape) == (30, 20) and dense[0, 30, 20] == 255
    assert np.unravel_index(dense[1].argmax(), dense[1].shape) == (41, 21)
    assert dense[2, 0, 0] == 255
    missing = [i for i in range(NUM_JOINTS) if i not in (0, 1, 2)]
    assert dense[missing].max() == 0


@pytest.mark.parametrize("sigma", [1.5, 3.0, 6.0])
def test_sparse_storage_equals_dense_render(sigma):
    rng = np.random.default_rng(1)
    for _ in range(40):
        kp = rng.uniform(-20, [110, 150], (NUM_JOINTS, 2)).astype(np.float32)
        kp[rng.random(NUM_JOINTS) < 0.3] = -1
        dense = heatmaps.quantise(heatmaps.render_dense(kp, (128, 88), sigma))
        stored = heatmaps.decode(heatmaps.encode(heatmaps.render_sparse(kp, (128, 88), sigma)))
        assert np.array_equal(heatmaps.to_dense(stored), dense)
        out = np.zeros((1, NUM_JOINTS, 128, 88), np.float32)
        heatmaps.paste_into(out, [stored])
        assert np.allclose(out[0], dense / 255.0, atol=1e-6)


@pytest.mark.parametrize("sigma", [1.5, 3.0, 6.0])
def test_device_rendering_equals_the_cpu_patches(sigma):
    # What training renders on its device from (augmented) keypoints vs what the CPU loader
    # pasted: batched, with joints missing, on the border, off the frame and on half pixels.
    rng = np.random.default_rng(2)
    b, size = 16, (128, 88)
    kp = rng.uniform(-25, [113, 153], (b, NUM_JOINTS, 2)).astype(np.float32)
    kp[rng.random((b, NUM_JOINTS)) < 0.2] = -1
    kp[0, :4] = [[0, 0], [87, 127], [10.5, 20.5], [-1, 30]]  # corners, .5 ties, one coordinate missing
    kp[1, :3] = [[-3.2, 50], [50, 130.9], [95, 60]]  # partly outside: clipped patches
    sparse = [heatmaps.render_sparse(k, size, sigma) for k in kp]
    want = heatmaps.paste_into(np.zeros((b, NUM_JOINTS, *size), np.float32), sparse)
    got = expand.render_gaussians(torch.from_numpy(kp), size, sigma)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert np.abs(got.numpy() - want).max() <= 1e-6
    pasted = expand.paste_sparse({k: v if k in ("shape", "sigma") else torch.from_numpy(v)
                                  for k, v in heatmaps.pack(sparse).items()}, b)
    assert np.array_equal(pasted.numpy(), want)


def _edge_keypoints(rng, b, size, whole=False):
    h, w = size
    kp = rng.uniform(-25, [w + 25, h + 25], (b, NUM_JOINTS, 2)).astype(np.float32)
    if whole:  # every other joint at whole-pixel coordinates, in and out of the frame
        kp[:, ::2] = np.rint(kp[:, ::2])
    kp[rng.random((b, NUM_JOINTS)) < 0.2] = -1
    kp[0, :4] = [[0, 0], [w - 1, h - 1], [10.5, 20.5], [-1, 30]]
    kp[1, :3] = [[-3.2, 50], [50, h + 2.9], [w + 7, 60]]
    if whole:
        kp[2, :6] = [[-11, 5], [w + 10, 20], [3, -11], [20, h + 10], [w - 2, 1], [1, h - 3]]  # patch edges
    return kp


@pytest.mark.parametrize("whole", [False, True])
@pytest.mark.parametrize("sigma", [1.5, 3.0, 6.0])
def test_cpu_canvas_equals_the_cpu_patches_bit_for_bit_through_reuse(sigma, whole):
    # The CPU device's renderer (compiled loop into reused buffers) against the stored patches'
    # arithmetic, over batches that reuse one buffer: the old patches must be gone each time.
    # Joints at whole-pixel coordinates get a copy of one patch drawn once: the same values.
    from datasets.pose.cpu_render import GaussianCanvas

    rng = np.random.default_rng(3)
    size = (64, 44)
    canvas = GaussianCanvas(size, sigma)
    for _ in range(4):
        kp = _edge_keypoints(rng, 6, size, whole)
        want = heatmaps.paste_into(np.zeros((6, NUM_JOINTS, *size), np.float32),
                                   [heatmaps.render_sparse(k, size, sigma) for k in kp])
        got = canvas(torch.from_numpy(kp))
        assert got.dtype == torch.float32 and np.array_equal(got.numpy(), want)
        del got  # released: the next batch may reuse its buffer
    assert len(canvas.pool.buffers) == 1


def test_cpu_canvas_never_reuses_a_buffer_someone_still_holds():
    from datasets.pose.cpu_render import GaussianCanvas

    rng = np.random.default_rng(4)
    size = (32, 24)
    canvas = GaussianCanvas(size, 3.0)
    first = canvas(torch.from_numpy(_edge_keypoints(rng, 3, size)))
    kept, part = first.clone(), first[1:, 2:5]  # a view of it outlives the batch
    del first
    for _ in range(3):
        canvas(torch.from_numpy(_edge_keypoints(rng, 3, size)))
    assert torch.equal(part, kept[1:, 2:5])
    assert len(canvas.pool.buffers) == 2  # the held buffer plus one reused for the three others


def test_heatmap_bytes_are_compact_and_corruption_is_detected():
    kp = np.random.default_rng(0).uniform(0, [88, 128], (NUM_JOINTS, 2)).astype(np.float32)
    data = heatmaps.encode(heatmaps.render_sparse(kp, (128, 88), 3.0))
    assert len(data) < 8000  # vs 202,752 bytes dense uint8
    with pytest.raises(ValueError, match="magic"):
        heatmaps.decode(b"XXXX" + data[4:])
    with pytest.raises(ValueError):
        heatmaps.decode(data[:-10])


def test_flip_swaps_left_and_right_channels():
    kp = _kp(Rsho=(10, 20), Lsho=(30, 20), nose=(22, 8))
    hm = heatmaps.render_sparse(kp, (64, 44), 2.0)
    flipped = heatmaps.to_dense(heatmaps.flip_horizontal(hm, flip_permutation()))
    mirrored_kp = kp[flip_permutation()].copy()
    vis = mirrored_kp[:, 0] >= 0
    mirrored_kp[vis, 0] = 43 - mirrored_kp[vis, 0]
    assert np.array_equal(flipped, heatmaps.to_dense(heatmaps.render_sparse(mirrored_kp, (64, 44), 2.0)))
    assert flipped[JOINT_INDEX["Lsho"], 20, 33] == 255  # right shoulder at x=10 -> left at x=33


def test_face_box_rule():
    h, w = 128, 88
    frontal = _kp(nose=(44, 20), neck=(44, 36), Reye=(41, 18), Leye=(47, 18))
    fb = body_face_box(frontal, (h, w))
    side = max(SPREAD_SCALE * np.hypot(6, 0), NECK_SCALE * 16)
    cx, cy = (44 + 41 + 47) / 3, (20 + 18 + 18) / 3
    assert fb.valid and np.allclose(fb.box, (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), atol=0.01)
    ears = _kp(Rear=(30, 20), Lear=(50, 20))  # seen from the back: ears only
    fb = body_face_box(ears, (h, w))
    assert fb.valid and np.isclose(fb.box[2] - fb.box[0], SPREAD_SCALE * 20, atol=0.01)
    assert not body_face_box(_kp(neck=(44, 36)), (h, w)).valid  # no head point
    lone = body_face_box(_kp(nose=(44, 20)), (h, w))
    assert not lone.valid and MIN_SIDE_FRACTION * h > 0 and "too close" in lone.reason
    edge = body_face_box(_kp(nose=(0, 0), neck=(0, 20), Reye=(1, 1)), (h, w))  # head in the corner
    assert not edge.valid and "outside" in edge.reason
    clipped = body_face_box(_kp(nose=(5, 20), neck=(5, 36), Reye=(3, 18), Leye=(7, 18)), (h, w))
    assert clipped.valid and clipped.box[0] == 0.0


def test_face_crop_and_missing_face():
    img = np.zeros((64, 44, 3), np.uint8)
    img[10:20, 10:20] = 200
    crop = crop_face(img, (10, 10, 20, 20), 16, True)
    assert crop.shape == (16, 16, 3) and crop.min() == 200
    assert crop_face(img, (10, 10, 20, 20), 16, False).max() == 0
