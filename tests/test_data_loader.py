"""Loader: ranks × workers cover an epoch once with equal batch counts; bad data; augmentation."""
from __future__ import annotations

import collections
import shutil

import albumentations as A
import numpy as np
import pytest
import torch
from data_fixtures import make_raw, rerecord_shards, tiny_config

from datasets.pose.keypoints import JOINT_INDEX, NUM_JOINTS, flip_permutation
from datasets.shards import build, expand
from datasets.shards.augment import AugmentConfig, Augmenter, _affine_matrix
from datasets.shards.loader import BATCH_KEYS, DataLoaderError, eval_loader, plan_epoch, train_loader
from datasets.shards.tar import ShardWriter, iter_samples, load_manifest


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    info = make_raw(root / "raw", "fasion", train_ids=4, test_ids=3, views=3)  # 24 train, 6 test pairs
    build.preprocess("l", info.spec(), tiny_config(shard_size=1), root / "shards", None, None, False)
    return info, root / "shards"


def _positions(plan, shard_pairs):
    starts = np.concatenate([[0], np.cumsum(shard_pairs)])
    return [(int(starts[s.shard]), s.lo, s.hi) for w in plan.workers for s in w]


@pytest.mark.parametrize("pad", [True, False])
def test_plan_covers_every_pair_with_equal_batches(pad):
    rng = np.random.default_rng(0)
    for _ in range(60):
        shard_pairs = rng.integers(0, 9, rng.integers(1, 7)).tolist()
        if sum(shard_pairs) == 0:
            shard_pairs[0] = 1
        world, batch, workers = int(rng.integers(1, 5)), int(rng.integers(1, 6)), int(rng.integers(0, 4))
        total = sum(shard_pairs)
        if not pad and total < world:
            continue
        plans = [plan_epoch(shard_pairs, r, world, batch, workers, seed=3, epoch=1, pad=pad) for r in range(world)]
        assert len({p.num_batches for p in plans}) == 1 and len({p.num_pairs for p in plans}) == 1
        seen = collections.Counter()
        for plan in plans:
            assert sum(plan.worker_pairs) == plan.num_pairs
            for shard, lo, hi in _positions(plan, shard_pairs):
                seen.update((shard, i) for i in range(lo, hi))
        assert sum(seen.values()) == world * plans[0].num_pairs
        if pad:
            assert len(seen) == total  # all covered, fewer than world_size repeats
            assert sum(seen.values()) - total < world
        else:
            assert max(seen.values()) == 1 and total - len(seen) < world


def _run_epoch(shards_dir, world, workers, batch, **kw):
    seen, batches, skipped = collections.Counter(), [], 0
    for rank in range(world):
        loader = train_loader(shards_dir, rank=rank, world_size=world, batch_size=batch, num_workers=workers, **kw)
        loader.set_epoch(2)
        n = 0
        for b in loader:
            n += 1
            seen.update(zip(b["source_name"], b["target_name"]))
        batches.append((len(loader), n))
        skipped += loader.skipped
    return seen, batches, skipped


def test_two_ranks_two_workers_cover_the_epoch_exactly_once(shards):
    info, shards_dir = shards
    seen, batches, skipped = _run_epoch(shards_dir, world=2, workers=2, batch=5)
    assert batches == [(3, 3), (3, 3)]  # 12 pairs per rank -> 5 + 5 + 2
    assert set(seen) == set(info.pairs["train"]) and set(seen.values()) == {1}
    assert skipped == 0


def test_uneven_split_pads_with_few_repeats_and_equal_batches(shards):
    info, shards_dir = shards
    seen, batches, _ = _run_epoch(shards_dir, world=5, workers=2, batch=2, augment=None)
    assert len({b for b in batches}) == 1 and batches[0] == (3, 3)  # ceil(24/5)=5 pairs -> 3 batches
    assert set(seen) == set(info.pairs["train"]) and sum(seen.values()) == 25


def test_batch_contract(shards):
    info, shards_dir = shards
    loader = train_loader(shards_dir, rank=0, world_size=1, batch_size=4, num_workers=0)
    batch = next(iter(loader))
    assert set(batch) == set(BATCH_KEYS)
    h, w = info.size
    for key in ("source_image", "target_image"):
        assert batch[key].shape == (4, 3, h, w) and batch[key].dtype == torch.float32
        assert batch[key].min() >= -1 and batch[key].max() <= 1
    for key in ("source_pose", "target_pose"):
        assert batch[key].shape == (4, NUM_JOINTS, h, w) and batch[key].dtype == torch.float32
        assert batch[key].min() >= 0 and batch[key].max() <= 1
    assert batch["target_face"].shape == (4, 3, 16, 16) and batch["target_face"].min() >= -1
    assert batch["target_face_box"].shape == (4, 4) and batch["target_face_valid"].dtype == torch.bool
    assert batch["source_keypoints"].shape == (4, NUM_JOINTS, 2) and len(batch["target_name"]) == 4
    # Pose maps are drawn at the (augmented) keypoints; missing joints are empty channels.
    for kp, pose in ((batch["target_keypoints"], batch["target_pose"]), (batch["source_keypoints"], batch["source_pose"])):
        for i in range(4):
            for c in range(NUM_JOINTS):
                x, y = kp[i, c].tolist()
                if x == -1:
                    assert pose[i, c].max() == 0
                else:
                    yy, xx = np.unravel_index(int(pose[i, c].argmax()), (h, w))
                    assert abs(xx - x) <= 1 and abs(yy - y) <= 1


@pytest.mark.parametrize("augment", [None, AugmentConfig()])
@pytest.mark.parametrize("poses", ["keypoints", "sparse"])
def test_compact_batches_expanded_on_the_device_equal_the_float_path(shards, augment, poses):
    # What training consumes (compact batches, pose maps made by datasets.shards.expand after
    # the copy, no face crops) against the CPU float path, pair for pair over two epochs.
    _, shards_dir = shards
    kw = dict(rank=0, world_size=1, batch_size=4, num_workers=0, seed=5, augment=augment)
    old = train_loader(shards_dir, **kw)
    new = train_loader(shards_dir, compact=True, poses=poses, face_crops=False, **kw)
    fed = expand.DeviceBatches(_epochs(new, 2), torch.device("cpu"), expand.Expander.of_loader(new))
    count = 0
    for want, got in zip(_epochs(old, 2), fed, strict=True):
        assert set(got) == set(BATCH_KEYS) - {"target_face"}
        for key, value in got.items():
            if isinstance(value, torch.Tensor):
                assert value.dtype == want[key].dtype and value.shape == want[key].shape, key
                assert torch.equal(value, want[key]) or (key.endswith("_pose") and (value - want[key]).abs().max() <= 1e-6), key
            else:
                assert value == want[key], key
        count += 1
    assert count == 2 * len(old)


def _epochs(loader, n):
    for epoch in range(n):
        loader.set_epoch(epoch)
        yield from loader


def test_loader_workers_persist_across_epochs_and_follow_set_epoch(shards):
    # One set of worker processes for the whole run; each epoch still yields exactly the batches
    # (pairs, order, augmentation draws) of a loader started for that epoch alone.
    _, shards_dir = shards
    kw = dict(rank=0, world_size=1, batch_size=3, num_workers=2, seed=1, compact=True)
    loader = train_loader(shards_dir, **kw)
    orders, pools = [], set()
    for epoch in range(3):
        loader.set_epoch(epoch)
        got = list(loader)
        pools.add(id(loader._workers))
        fresh = train_loader(shards_dir, **kw)
        fresh.set_epoch(epoch)
        want = list(fresh)
        assert [b["source_name"] + b["target_name"] for b in got] == [b["source_name"] + b["target_name"] for b in want]
        assert all(np.array_equal(g["target_rgb"], w["target_rgb"]) for g, w in zip(got, want))
        orders.append([n for b in got for n in b["source_name"] + b["target_name"]])
    assert len(pools) == 1 and orders[0] != orders[1] != orders[2]


@pytest.mark.parametrize("batch,chunk", [(3, 8), (5, 2)])
def test_workers_running_ahead_into_the_next_epoch_change_no_epoch(shards, monkeypatch, batch, chunk):
    # Loader workers go on into the next epoch while the consumer finishes one. Epochs taken in
    # order, out of order (the stream restarts), or a pass left midway: every epoch is still
    # exactly the batches of a loader started for that epoch alone. With 5 batches in messages
    # of 2, worker 0 sends one message per epoch and worker 1 two, so the round-robin hands over
    # worker 0's next epoch before worker 1's last message of this one: it has to wait aside.
    from datasets.shards import ring

    monkeypatch.setattr(ring, "MAX_CHUNK", chunk)
    _, shards_dir = shards
    kw = dict(rank=0, world_size=1, batch_size=batch, num_workers=2, seed=4, compact=True)
    loader = train_loader(shards_dir, **kw)
    waited = 0

    def names(batches):
        return [b["source_name"] + b["target_name"] for b in batches]

    def fresh(epoch):
        other = train_loader(shards_dir, **kw)
        other.set_epoch(epoch)
        return list(other)

    for epoch, leave_after in [(0, None), (1, None), (2, 2), (3, None), (7, None), (4, None), (5, None)]:
        loader.set_epoch(epoch)
        if leave_after is not None:  # a pass left midway: the next epoch restarts the stream
            it = iter(loader)
            for _ in range(leave_after):
                next(it)
            it.close()
            continue
        got = []
        for b in loader:
            got.append(b)
            waited = max(waited, len(loader._ahead))
        want = fresh(epoch)
        assert names(got) == names(want), epoch
        assert all(np.array_equal(g["target_rgb"], w["target_rgb"]) for g, w in zip(got, want))
        assert all("_epoch" not in b for b in got)
    assert (waited > 0) == (chunk == 2)


def test_worker_batches_through_shared_memory_equal_in_process_ones(shards):
    # Images reach the consumer through the workers' shared-memory slots, the rest through the
    # pipe: pair for pair the same arrays as without workers (face crops included).
    _, shards_dir = shards
    kw = dict(rank=0, world_size=1, batch_size=5, seed=3, augment=None, compact=True)
    by_pair = {}
    for workers in (0, 2):
        loader = train_loader(shards_dir, num_workers=workers, **kw)
        loader.set_epoch(1)
        got = {}
        for b in loader:
            for i, key in enumerate(zip(b["source_name"], b["target_name"])):
                got[key] = (b["source_rgb"][i], b["target_rgb"][i], b["face_rgb"][i], b["target_keypoints"][i])
        by_pair[workers] = got
    assert by_pair[0].keys() == by_pair[2].keys() and len(by_pair[0]) == 24
    for key, want in by_pair[0].items():
        assert all(np.array_equal(a, b) for a, b in zip(want, by_pair[2][key])), key


def test_shared_memory_slot_rewritten_before_it_is_read_is_an_error():
    from datasets.shards.ring import Layout, SlotRing

    ring = SlotRing(Layout((("rgb", (4, 2, 3)),), batch=2), workers=1, messages=2)
    images = [np.full((2, 4, 2, 3), v, np.uint8) for v in (1, 2, 3)]
    first, second = ring.put(0, {"rgb": images[0]}), ring.put(0, {"rgb": images[1]})
    assert np.array_equal(ring.take(first)["rgb"], images[0])
    ring.put(0, {"rgb": images[2]})  # reuses the first slot: fine, it was read
    assert np.array_equal(ring.take(second)["rgb"], images[1])
    with pytest.raises(RuntimeError, match="rewrote shared-memory slot 0"):
        ring.take(first)  # its slot now holds the third batch
    short = ring.put(0, {"rgb": images[0][:1]})  # a last, smaller batch
    assert ring.take(short)["rgb"].shape == (1, 4, 2, 3)


def test_no_room_in_shared_memory_sends_batches_through_the_pipe(shards, monkeypatch, caplog):
    from datasets.shards import ring

    monkeypatch.setattr(ring, "shm_free_bytes", lambda path="/dev/shm": 1 << 20)
    _, shards_dir = shards
    loader = train_loader(shards_dir, rank=0, world_size=1, batch_size=5, num_workers=2, augment=None, compact=True)
    assert sum(len(b["source_name"]) for b in loader) == 24 and loader._ring is None
    assert "would not fit in /dev/shm" in caplog.text


def test_keypoint_poses_need_compact_batches(shards):
    with pytest.raises(ValueError, match="compact"):
        train_loader(shards[1], rank=0, world_size=1, batch_size=4, poses="keypoints")


def test_augmenter_flip_swaps_sides_and_moves_box():
    rgb = np.zeros((64, 44, 3), np.uint8)
    rgb[10:20, 5:15] = 255
    kp = np.full((NUM_JOINTS, 2), -1, np.float32)
    kp[JOINT_INDEX["Rsho"]] = (5, 30)
    kp[JOINT_INDEX["nose"]] = (20, 10)
    aug = Augmenter(AugmentConfig(flip_p=1.0, affine_p=0.0), flip_permutation(), seed=0)
    out = aug(rgb, kp, np.array([5, 10, 15, 20], np.float32), True)
    assert out.flipped and np.array_equal(out.rgb, rgb[:, ::-1])
    assert out.keypoints[JOINT_INDEX["Lsho"]].tolist() == [38, 30] and out.keypoints[JOINT_INDEX["Rsho"]].tolist() == [-1, -1]
    assert out.keypoints[JOINT_INDEX["nose"]].tolist() == [23, 10]
    assert out.face_valid and out.face_box.tolist() == [28, 10, 38, 20]
    shifted = Augmenter(AugmentConfig(flip_p=0.0, affine_p=1.0, scale=(1, 1), translate=0.0, rotate=30.0),
                        flip_permutation(), seed=1)(rgb, kp, np.array([5, 10, 15, 20], np.float32), True)
    assert not shifted.flipped and not np.array_equal(shifted.keypoints, kp)


@pytest.mark.parametrize("cfg", [AugmentConfig(), AugmentConfig(flip_p=1.0, affine_p=1.0, rotate=30.0),
                                 AugmentConfig(flip_p=0.0, affine_p=0.0)])
def test_augmenter_moves_exactly_as_the_albumentations_compose(cfg):
    # The fast path must reproduce the Compose draw for draw: same flips, same warped
    # pixels, the same moved points (to float32 rounding: cv2.transform moves them in
    # single precision, the fast path in double), and the shared generator left in the
    # same state (so every later pair of the epoch is augmented as before).
    rng = np.random.default_rng(7)
    fast, ref = (Augmenter(cfg, flip_permutation(), seed=3) for _ in range(2))
    for _ in range(120):
        h, w = (int(v) for v in rng.choice([(128, 88), (64, 44), (96, 96)]))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        pts = rng.uniform(-8, max(h, w) + 8, (NUM_JOINTS + 4, 2)).astype(np.float32)
        image, moved, flipped = fast.move(img, pts)
        out = ref.transform(image=img, keypoints=pts)
        assert flipped == any(name == "HorizontalFlip" for name, _ in out["applied_transforms"])
        assert np.array_equal(image, out["image"])
        np.testing.assert_allclose(moved, np.asarray(out["keypoints"], np.float32).reshape(-1, 2), rtol=0, atol=1e-4)
    for ours, theirs in zip([fast.transform, *fast.transform.transforms], [ref.transform, *ref.transform.transforms]):
        assert ours.py_random.getstate() == theirs.py_random.getstate()


def test_augmenter_matrix_is_albumentations_own():
    # The closed-form matrix against Affine's product of six matrices, for the same draws.
    affine = A.Affine(scale=(0.8, 1.2), translate_percent=(-0.1, 0.1), rotate=(-40, 40), shear=(-10, 10), p=1.0)
    twin = A.Affine(scale=(0.8, 1.2), translate_percent=(-0.1, 0.1), rotate=(-40, 40), shear=(-10, 10), p=1.0)
    affine.set_random_seed(4)
    twin.set_random_seed(4)
    for shape in [(128, 88), (256, 176), (64, 64)] * 20:
        ours = np.array(_affine_matrix(affine, shape))
        theirs = twin.get_params_dependent_on_data({"shape": shape}, {"image": np.zeros((*shape, 3), np.uint8)})
        np.testing.assert_allclose(ours, theirs["matrix"][:2], rtol=0, atol=1e-12)
    assert affine.py_random.getstate() == twin.py_random.getstate()


def test_augmenter_call_moves_points_and_box_as_move_does():
    # __call__ (one compiled pass over the joints and the box corners) against move() on the
    # same draws: missing or pushed out of the frame -> -1, sides swapped on a flip, box =
    # the moved corners' bounding box clipped to the frame.
    rng = np.random.default_rng(11)
    cfg = AugmentConfig(flip_p=0.5, affine_p=1.0, scale=(0.7, 1.3), translate=0.2, rotate=40.0)
    fast, ref = (Augmenter(cfg, flip_permutation(), seed=9) for _ in range(2))
    perm = flip_permutation()
    for _ in range(200):
        h, w = 128, 88
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        kp = rng.uniform(-5, 120, (NUM_JOINTS, 2)).astype(np.float32)
        kp[rng.random(NUM_JOINTS) < 0.2] = -1
        x0, y0 = rng.uniform(0, 70), rng.uniform(0, 100)
        box = np.array([x0, y0, x0 + rng.uniform(4, 30), y0 + rng.uniform(4, 30)], np.float32)
        out = fast(img, kp, box, True)
        corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]], np.float32)
        image, moved, flipped = ref.move(img, np.concatenate([kp, corners]))
        assert out.flipped == flipped and np.array_equal(out.rgb, image)
        want = moved[:NUM_JOINTS].copy()
        x, y = want[:, 0], want[:, 1]
        want[(kp[:, 0] == -1) | (x < 0) | (y < 0) | (x > w - 1) | (y > h - 1)] = -1
        if flipped:
            want = want[perm]
        assert np.array_equal(out.keypoints, want)
        lo, hi = moved[NUM_JOINTS:].min(axis=0), moved[NUM_JOINTS:].max(axis=0)
        clipped = np.array([max(lo[0], 0), max(lo[1], 0), min(hi[0], w), min(hi[1], h)], np.float32)
        area = float(np.prod(hi - lo))
        inside = max(clipped[2] - clipped[0], 0) * max(clipped[3] - clipped[1], 0)
        assert out.face_valid == (area > 0 and inside >= 0.5 * area)
        assert np.array_equal(out.face_box, clipped if out.face_valid else np.zeros(4, np.float32))


def _corrupt_one_sample(src, dst, shard_name):
    """Copy the shards, replacing one view's JPEG of ``shard_name`` by garbage."""
    shutil.copytree(src, dst)
    data = (dst / shard_name).read_bytes()
    (dst / shard_name).unlink()
    writer = ShardWriter(dst / "tmp", "x", 100)
    for key, files in iter_samples(data):
        files = {k: bytes(v) for k, v in files.items()}
        files["v0.jpg"] = b"garbage" * 10
        writer.write(key, list(files.items()))
    (info,) = writer.close()
    (dst / "tmp" / info.name).rename(dst / shard_name)


def test_bad_samples_are_logged_counted_and_skipped(shards, tmp_path, caplog):
    info, shards_dir = shards
    name = load_manifest(shards_dir)["shards"][1]["name"]
    _corrupt_one_sample(shards_dir, tmp_path / "bad", name)
    (tmp_path / "bad" / load_manifest(shards_dir)["shards"][2]["name"]).write_bytes(b"not a tar" * 100)
    rerecord_shards(tmp_path / "bad")  # past the sha256 check (tests/test_data_storage.py covers that one)
    seen, batches, skipped = _run_epoch(tmp_path / "bad", world=2, workers=0, batch=5, augment=None)
    assert batches == [(3, 3), (3, 3)]  # bad data never changes the batch count
    assert len(seen) == 24 - 12 and sum(seen.values()) == 24  # two groups of 6 pairs replaced by repeats
    assert skipped == 2  # one bad sample, one unreadable shard
    assert "skipping bad data" in caplog.text and name in caplog.text and "key 000001" in caplog.text
    strict = train_loader(tmp_path / "bad", rank=0, world_size=1, batch_size=5, num_workers=2,
                          max_consecutive_errors=0)
    with pytest.raises(DataLoaderError, match="consecutive bad samples"):
        list(strict)


def test_skip_counter(shards, tmp_path):
    _, shards_dir = shards
    name = load_manifest(shards_dir)["shards"][0]["name"]
    _corrupt_one_sample(shards_dir, tmp_path / "bad", name)
    rerecord_shards(tmp_path / "bad")
    loader = train_loader(tmp_path / "bad", rank=0, world_size=1, batch_size=4, num_workers=2, augment=None)
    assert sum(1 for _ in loader) == len(loader) == 6
    assert loader.skipped == 1 and loader.substituted == 6 and "key 000000" in loader.recent_errors[0]


@pytest.mark.parametrize("world,workers", [(1, 0), (2, 2)])
def test_test_loader_yields_csv_order(shards, world, workers):
    info, shards_dir = shards
    got, index = [], []
    for rank in range(world):
        for b in eval_loader(shards_dir, batch_size=1, rank=rank, world_size=world, num_workers=workers):
            got += list(zip(b["source_name"], b["target_name"]))
            index += b["pair_index"].tolist()
            assert "pair_line" in b and b["source_image"].shape[0] == 1
    assert got == info.pairs["test"] and index == list(range(len(got)))


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_batch_aligned_parts_keep_the_single_rank_batches(world_size: int) -> None:
    from datasets.shards.loader import plan_contiguous

    shard_pairs, batch = [13, 5, 9], 4  # 27 pairs: 7 batches, the last one short
    plans = [plan_contiguous(shard_pairs, r, world_size, batch, 0, align_batches=True) for r in range(world_size)]
    assert sum(p.num_batches for p in plans) == 7 and sum(p.num_pairs for p in plans) == 27
    starts = [0]
    for p in plans:
        starts.append(starts[-1] + p.num_pairs)
    assert all(s % batch == 0 for s in starts[:-1])  # every part starts on a batch boundary


def test_parsed_shards_are_kept_between_epochs_without_changing_anything(shards, tmp_path, monkeypatch):
    # A loader keeps the shards it parsed (read, checked, parsed once per run, not per epoch) and
    # still yields exactly the batches, and counts exactly the bad data, of one that re-reads.
    from datasets.shards import loader as loader_module

    _, shards_dir = shards
    name = load_manifest(shards_dir)["shards"][1]["name"]
    _corrupt_one_sample(shards_dir, tmp_path / "bad", name)
    rerecord_shards(tmp_path / "bad")
    reads = collections.Counter()
    real_read = loader_module.read_shard

    def counted(root, shard):
        reads[shard["name"]] += 1
        return real_read(root, shard)

    monkeypatch.setattr(loader_module, "read_shard", counted)
    kw = dict(rank=0, world_size=1, batch_size=5, num_workers=0, seed=2, compact=True)
    runs, read_counts = {}, {}
    for cache_mb in (64, 0):
        reads.clear()
        loader = train_loader(tmp_path / "bad", shard_cache_mb=cache_mb, **kw)
        epochs = []
        for epoch in range(3):
            loader.set_epoch(epoch)
            batches = list(loader)
            epochs.append(([b["source_name"] + b["target_name"] for b in batches], [b["source_rgb"] for b in batches],
                           (loader.skipped, loader.substituted)))
        runs[cache_mb], read_counts[cache_mb] = epochs, dict(reads)
    train_shards = [s["name"] for s in load_manifest(shards_dir)["shards"] if s["split"] == "train"]
    assert read_counts[64] == {n: 1 for n in train_shards} and read_counts[0] == {n: 3 for n in train_shards}
    for epoch, (cached, uncached) in enumerate(zip(runs[64], runs[0])):
        assert cached[0] == uncached[0] and all(np.array_equal(a, b) for a, b in zip(cached[1], uncached[1]))
        assert cached[2] == uncached[2] == (epoch + 1, 6 * (epoch + 1))  # the bad sample counted every epoch


def test_shard_cache_holds_at_most_its_budget(shards):
    _, shards_dir = shards
    one = max(s["bytes"] for s in load_manifest(shards_dir)["shards"] if s["split"] == "train")
    loader = train_loader(shards_dir, rank=0, world_size=1, batch_size=5, num_workers=0, compact=True,
                          shard_cache_mb=1.5 * one / 2**20)
    loader.set_epoch(0)
    list(loader)
    assert len(loader._local._parsed) == 1  # room for one shard: the last one read
    with pytest.raises(ValueError, match="shard_cache_mb"):
        train_loader(shards_dir, rank=0, world_size=1, batch_size=5, shard_cache_mb=-1)


def test_same_view_pairs_are_identical_or_an_exact_rigid_move_of_the_source(shards):
    # train.same_view_pairs: the target is the source view itself, half of the time the identical
    # image, otherwise the view moved by its own augmentation draw (its keypoints moved with it).
    _, shards_dir = shards
    kw = dict(rank=0, world_size=1, batch_size=4, num_workers=0, seed=2, compact=True, face_crops=False)
    cfg = AugmentConfig(flip_p=0.0, affine_p=1.0, same_view_p=1.0)
    batches = list(train_loader(shards_dir, augment=cfg, **kw))
    identical = moved = 0
    for b in batches:
        assert b["source_name"] == b["target_name"]
        for i in range(len(b["source_name"])):
            same = np.array_equal(b["source_rgb"][i], b["target_rgb"][i])
            assert same == np.array_equal(b["source_keypoints"][i], b["target_keypoints"][i])
            identical, moved = identical + same, moved + (not same)
    assert identical >= 4 and moved >= 4, (identical, moved)  # 24 pairs, each a fair coin


def test_same_view_pairs_off_leave_every_draw_as_it_was(shards):
    _, shards_dir = shards
    kw = dict(rank=0, world_size=1, batch_size=4, num_workers=0, seed=2, compact=True, face_crops=False)
    some = train_loader(shards_dir, augment=AugmentConfig(same_view_p=0.25), **kw)
    off = list(train_loader(shards_dir, augment=AugmentConfig(same_view_p=0.0), **kw))
    default = list(train_loader(shards_dir, augment=AugmentConfig(), **kw))
    for a, b in zip(off, default, strict=True):
        assert a["source_name"] == b["source_name"] and a["target_name"] == b["target_name"]
        assert np.array_equal(a["source_rgb"], b["source_rgb"]) and np.array_equal(a["target_rgb"], b["target_rgb"])
    names = [(s, t) for b in some for s, t in zip(b["source_name"], b["target_name"])]
    assert 0 < sum(s == t for s, t in names) < len(names)
    with pytest.raises(ValueError, match="same_view_p"):
        AugmentConfig(same_view_p=1.5)
