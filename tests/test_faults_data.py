"""Fault injection, data side (issue 8, faults 1-6): every broken input is quarantined with a reason
and counted, a killed or disk-full preprocess leaves no final-named partial shard and reruns to the
clean run's bytes, and corrupt or uneven shards never change the batch counts.

Already covered elsewhere (not repeated here): each rejection reason of a JPEG (truncated,
zero-byte, wrong size, wrong mode, bad rows) in tests/test_data_validate.py; a ShardWriter killed
with SIGKILL mid-shard in tests/test_data_shards.py; one corrupt sample and a non-tar shard in the
loader in tests/test_data_loader.py.  The tests here run in the default suite; the real-tmpfs one is
marked ``faults``.
"""
from __future__ import annotations

import collections
import csv
import errno
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from data_fixtures import annotation_line, draw_figure, make_raw, rerecord_shards, tiny_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasets.files import file_sha256
from datasets.pose import heatmaps
from datasets.pose.face import HEAD_JOINTS, body_face_box
from datasets.pose.keypoints import MISSING, NUM_JOINTS
from datasets.raw.layout import get_layout
from datasets.raw.validate import validate_split
from datasets.shards import build
from datasets.shards import tar as shards_mod
from datasets.shards.loader import DataLoaderError, eval_loader, train_loader
from datasets.shards.samples import encode_view, parse_sample
from datasets.shards.tar import iter_samples, load_manifest

ROOT = Path(__file__).resolve().parents[1]


def _rejects(out: Path) -> dict[tuple[str, str, str], str]:
    with open(out / "rejects.csv", newline="") as fh:
        return {(r["split"], r["kind"], r["name"]): r["reason"] for r in csv.DictReader(fh)}


def _assert_counts_add_up(manifest: dict) -> None:
    for split, c in manifest["splits"].items():
        assert c["images_in"] == c["images_written"] + c["images_rejected"], split
        assert c["pairs_in"] == c["pairs_written"] + c["pairs_rejected"], split
        written = [s for s in manifest["shards"] if s["split"] == split]
        assert sum(s["pairs"] for s in written) == c["pairs_written"], split


def _shard_pairs(out: Path, manifest: dict) -> dict[str, list[tuple[str, str]]]:
    """Every pair in the shards by split; asserts both images of each pair are in its sample."""
    found: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for s in manifest["shards"]:
        for key, files in iter_samples((out / s["name"]).read_bytes()):
            sample = parse_sample(key, files)
            assert len(sample.views) == len(sample.names)
            for view in sample.views:
                assert len(bytes(view.jpeg)) > 0 and view.keypoints.shape == (NUM_JOINTS, 2)
            found[s["split"]] += [(sample.names[a], sample.names[b]) for a, b in sample.pairs]
    return found


# ---------------------------------------------------------------- 1. raw input faults

def test_raw_input_faults_are_quarantined_with_reasons_and_counted(tmp_path):
    info = make_raw(tmp_path / "raw", "market", train_ids=3, test_ids=2, views=2)
    root, size = info.root, info.size
    kp = info.keypoints[info.names["train"][0]]
    img = draw_figure(kp, size, (40, 90, 40))
    ann = root / "market-annotation-train.csv"
    added = {}

    def add(name: str, data: bytes, reason: str, split: str = "train") -> None:
        (root / split / name).write_bytes(data)
        with open(root / f"market-annotation-{split}.csv", "a") as fh:
            fh.write(annotation_line(name, kp))
        added[(split, "image", name)] = reason

    rgba = np.dstack([img, np.full(size, 128, np.uint8)])
    add("0090_c1s1_000000_00.png", cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))[1].tobytes(),
        "wrong mode: RGBA (4 band(s))")
    add("0091_c1s1_000000_00.jpg", cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes(),
        "wrong extension: 0091_c1s1_000000_00.jpg holds PNG data, not JPEG")
    add("0092_c1s1_000000_00.png", cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes(),
        "wrong extension: 0092_c1s1_000000_00.png holds JPEG data, not PNG", split="test")
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes()
    add("0093_c1s1_000000_00.jpg", jpeg[: len(jpeg) * 2 // 3], "truncated image")
    add("0094_c1s1_000000_00.jpg", b"", "zero-byte file", split="test")
    add("0095_c1s1_000000_00.jpg", cv2.imencode(".jpg", cv2.resize(img, (size[1] + 4, size[0])))[1].tobytes(),
        f"wrong size: {size[0]}x{size[1] + 4} (HxW)")
    # A valid RGB PNG named .png is fine.
    good_png = "0096_c1s1_000000_00.png"
    (root / "train" / good_png).write_bytes(cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes())
    with open(ann, "a") as fh:
        fh.write(annotation_line(good_png, kp))

    out = tmp_path / "shards"
    manifest = build.preprocess("f1", info.spec(), tiny_config(), out, None, None, False)
    got = _rejects(out)
    for key, reason in added.items():
        assert key in got, f"{key} not quarantined"
        assert got[key].startswith(reason), (key, got[key])
    assert {k for k in got if k[1] == "image"} == set(added)  # nothing good rejected
    _assert_counts_add_up(manifest)
    assert manifest["splits"]["train"]["images_written"] == len(info.names["train"]) + 1  # the good PNG
    assert manifest["splits"]["test"]["images_rejected"] == 2


# ---------------------------------------------------------------- 2. referential integrity

def test_referential_integrity_is_reported_exactly_and_every_shard_pair_is_complete(tmp_path):
    info = make_raw(tmp_path / "raw", "fasion", train_ids=3, test_ids=2, views=3)
    root = info.root
    ann = root / "fasion-annotation-train.csv"
    no_row = info.names["train"][4]
    ann.write_text("".join(line for line in ann.read_text().splitlines(keepends=True)
                           if not line.startswith(no_row + ":")))
    ghost = "fashionWOMENDressesid00000777_1front.jpg"
    with open(root / "fasion-pairs-test.csv", "a") as fh:
        fh.write(f"{info.names['test'][0]},{ghost}\n")
    both = info.names["train"][0]
    shutil.copy(root / "train" / both, root / "test" / both)
    with open(root / "fasion-annotation-test.csv", "a") as fh:
        fh.write(annotation_line(both, info.keypoints[both]))

    out = tmp_path / "shards"
    manifest = build.preprocess("f2", info.spec(), tiny_config(), out, None, None, False)
    got = _rejects(out)
    images = {k: v for k, v in got.items() if k[1] == "image"}
    assert set(images) == {("train", "image", no_row), ("train", "image", both), ("test", "image", both)}
    assert images[("train", "image", no_row)].startswith(f"missing annotation row: {no_row} has no row in "
                                                          "fasion-annotation-train.csv")
    for split in ("train", "test"):
        assert images[(split, "image", both)].startswith("duplicate name: the same file name is in both splits")
    pair_rejects = {k[2]: v for k, v in got.items() if k[1] == "pair"}
    expected_pairs = {f"{a},{b}" for a, b in info.pairs["train"] if no_row in (a, b) or both in (a, b)}
    expected_pairs.add(f"{info.names['test'][0]},{ghost}")
    assert set(pair_rejects) == expected_pairs
    assert pair_rejects[f"{info.names['test'][0]},{ghost}"].startswith(f"target image {ghost} is not in the test split")
    _assert_counts_add_up(manifest)
    # Every pair in the shards carries both of its images, and exactly the accepted pairs are there.
    found = _shard_pairs(out, manifest)
    for split in ("train", "test"):
        want = [p for p in info.pairs[split] if f"{p[0]},{p[1]}" not in expected_pairs]
        assert sorted(found[split]) == sorted(want), split
    assert found["test"] == [p for p in info.pairs["test"]]  # CSV order kept, the ghost pair absent


# ---------------------------------------------------------------- 3. degenerate keypoints (property)

_SIZE = (64, 44)


@pytest.fixture(scope="module")
def one_image(tmp_path_factory):
    """A raw split with one image whose annotation row each example rewrites."""
    root = tmp_path_factory.mktemp("degenerate") / "raw"
    info = make_raw(root, "fasion", train_ids=1, test_ids=1, views=1)
    return info


_coord = st.one_of(st.just(MISSING), st.integers(-30, -2), st.integers(0, 43), st.integers(44, 90))
_joints = st.lists(st.tuples(_coord, st.integers(-30, 100)), min_size=NUM_JOINTS, max_size=NUM_JOINTS)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(joints=_joints, drop_eyes=st.booleans(), all_missing=st.booleans())
def test_degenerate_keypoints_give_finite_maps_flagged_faces_and_the_keep_rule(one_image, joints, drop_eyes,
                                                                                all_missing):
    info = one_image
    kp = np.array(joints, np.int64)
    kp[kp[:, 0] == MISSING] = MISSING
    kp[kp[:, 1] == MISSING] = MISSING
    if drop_eyes:
        kp[list(HEAD_JOINTS)] = MISSING  # nose, eyes, ears
    if all_missing:
        kp[:] = MISSING
    name = info.names["train"][0]
    (info.root / "fasion-annotation-train.csv").write_text("name:keypoints_y:keypoints_x\n" + annotation_line(name, kp))
    cfg = tiny_config()
    res = validate_split(info.spec(), get_layout("deepfashion"), cfg, "train")
    h, w = _SIZE
    in_frame = (kp[:, 0] >= 0) & (kp[:, 1] >= 0) & (kp[:, 0] <= w - 1) & (kp[:, 1] <= h - 1)
    # The keep/reject rule: kept iff at least min_visible_joints joints lie inside the frame.
    keep = int(in_frame.sum()) >= cfg.min_visible_joints
    assert (name in res.images) == keep, (kp.tolist(), res.rejects)
    assert res.counts["images_in"] == res.counts["images_written"] + res.counts["images_rejected"]
    if not keep:
        (rej,) = [r for r in res.rejects if r.kind == "image"]
        assert rej.reason.startswith("too few visible joints")
        return
    rec = res.images[name]
    assert np.array_equal(rec.keypoints[~in_frame], np.full((int((~in_frame).sum()), 2), MISSING))
    dense = heatmaps.render_dense(rec.keypoints, _SIZE, cfg.heatmap_sigma)
    assert np.isfinite(dense).all() and dense.min() >= 0 and dense.max() <= 1
    assert not dense[~in_frame].any()  # a missing joint is an all-zero channel
    files, has_face = encode_view(rec, _SIZE, cfg.heatmap_sigma, cfg.face_size, cfg.jpeg_quality)
    stored = dict(files)
    pose = heatmaps.to_dense(heatmaps.decode(stored["pose.bin"]))
    assert pose.shape == (NUM_JOINTS, *_SIZE) and not pose[~in_frame].any()
    meta = json.loads(stored["kp.json"])
    assert all(np.isfinite(meta["keypoints"]).ravel()) and all(np.isfinite(meta["face_box"]))
    if not in_frame[list(HEAD_JOINTS)].any():
        assert not has_face and meta["face_valid"] is False and meta["face_box"] == [0.0, 0.0, 0.0, 0.0]
    fb = body_face_box(rec.keypoints, _SIZE)
    assert has_face == fb.valid
    if fb.valid:
        x0, y0, x1, y1 = fb.box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h


# ---------------------------------------------------------------- 4. killed / disk full preprocess

@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    info = make_raw(root / "raw", "fasion", train_ids=4, test_ids=2, views=3)
    manifest = build.preprocess("k", info.spec(), tiny_config(shard_size=2), root / "clean", None, None, False)
    return info, root / "clean", manifest


def _assert_same_bytes(a: Path, b: Path, manifest: dict) -> None:
    names = [s["name"] for s in manifest["shards"]] + ["manifest.json", "rejects.csv"]
    assert sorted(p.name for p in b.iterdir()) == sorted(names)
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def _no_partial_final_names(parent: Path) -> None:
    """Half-written files only ever carry the hidden ``.NAME.partial`` name."""
    for p in parent.rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            assert p.suffix != ".partial", p


_KILL_PREPROCESS = """
import sys, time
sys.path.insert(0, "tests")
from data_fixtures import tiny_config
from datasets.specs import DatasetSpec
from datasets.shards import tar as shards
from datasets.shards import build
stop_at = int(sys.argv[3])
orig = shards.ShardWriter.write
count = [0]
def write(self, *a, **kw):
    orig(self, *a, **kw)
    count[0] += 1
    if count[0] == stop_at:
        print("killed-here", flush=True)
        time.sleep(120)
shards.ShardWriter.write = write
spec = DatasetSpec(layout="deepfashion", root=sys.argv[1], image_size=(64, 44), source_size=(64, 44), shards=sys.argv[2])
build.preprocess("k", spec, tiny_config(shard_size=2), __import__("pathlib").Path(sys.argv[2]), None, None, False)
print("finished", flush=True)
"""


@pytest.mark.parametrize("with_previous_output", [False, True])
def test_preprocess_killed_at_a_random_point_reruns_to_clean_bytes(clean_run, tmp_path, with_previous_output):
    info, clean, manifest = clean_run
    samples = sum(1 for s in manifest["shards"] for _ in iter_samples((clean / s["name"]).read_bytes()))
    seed = random.randrange(1 << 30)
    stop_at = random.Random(seed).randint(1, samples)
    out = tmp_path / "out"
    if with_previous_output:
        shutil.copytree(clean, out)
        before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = subprocess.Popen([sys.executable, "-c", _KILL_PREPROCESS, str(info.root), str(out), str(stop_at)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "killed-here", f"seed {seed}"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    if with_previous_output:  # the earlier output is untouched, byte for byte
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before, f"seed {seed}"
    else:
        assert not out.exists(), f"seed {seed}: a partial output got the final name"
    _no_partial_final_names(tmp_path)
    assert (tmp_path / ".out.staging").is_dir()  # the interrupted work, under the staging name only
    again = build.preprocess("k", info.spec(), tiny_config(shard_size=2), out, None, None, False)
    assert again == manifest
    assert not (tmp_path / ".out.staging").exists()
    _assert_same_bytes(clean, out, manifest)


class _FullDisk(io.RawIOBase):
    """A raw file that fails with ENOSPC once ``budget`` bytes went through it; wrapped in a
    BufferedWriter like a real ``open(..., "wb")``, so a flush or close on the full disk fails too."""

    def __init__(self, raw: io.FileIO, budget: list[int]) -> None:
        self._raw, self._budget = raw, budget

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        n = len(data)
        if n > self._budget[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget[0] -= n
        return self._raw.write(data)

    def fileno(self) -> int:
        return self._raw.fileno()

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._raw.seek(pos, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.95])
def test_disk_full_during_preprocess_leaves_no_partial_and_reruns_to_clean_bytes(clean_run, tmp_path, monkeypatch,
                                                                                 fraction):
    info, clean, manifest = clean_run
    total = sum(s["bytes"] for s in manifest["shards"])
    budget = [int(total * fraction)]
    real_open = open

    def small_disk_open(file, mode="r", *a, **kw):
        if mode != "wb":
            return real_open(file, mode, *a, **kw)
        return io.BufferedWriter(_FullDisk(io.FileIO(file, mode), budget), buffer_size=64 * 1024)

    out = tmp_path / "out"
    shutil.copytree(clean, out)
    monkeypatch.setattr(shards_mod, "open", small_disk_open, raising=False)
    with pytest.raises(OSError) as exc:
        build.preprocess("k", info.spec(), tiny_config(shard_size=2), out, None, None, False)
    assert exc.value.errno == errno.ENOSPC
    monkeypatch.undo()
    _assert_same_bytes(clean, out, manifest)  # the previous output survives intact
    staging = tmp_path / ".out.staging"
    assert not list(staging.glob(".*.partial"))  # the writer removed its half-written shard
    for tar in staging.glob("*.tar"):  # what did get a final name inside staging is complete
        want = next(s for s in manifest["shards"] if s["name"] == tar.name)
        assert file_sha256(tar) == want["sha256"]
    shutil.rmtree(out)
    assert build.preprocess("k", info.spec(), tiny_config(shard_size=2), out, None, None, False) == manifest
    _assert_same_bytes(clean, out, manifest)


@pytest.mark.faults
def test_preprocess_on_a_real_full_tmpfs_fails_cleanly_and_reruns(clean_run, tmp_path):
    info, clean, manifest = clean_run
    mnt = tmp_path / "small"
    mnt.mkdir()
    need = sum(s["bytes"] for s in manifest["shards"])
    size_kb = max(16, need // 2 // 1024)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        out = mnt / "out"
        with pytest.raises(OSError) as exc:
            build.preprocess("k", info.spec(), tiny_config(shard_size=2), out, None, None, False)
        assert exc.value.errno == errno.ENOSPC
        assert not out.exists()
        assert not list((mnt / ".out.staging").glob(".*.partial"))
        shutil.rmtree(mnt / ".out.staging", ignore_errors=True)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    out = tmp_path / "out"  # the same run with room completes and equals a clean run
    assert build.preprocess("k", info.spec(), tiny_config(shard_size=2), out, None, None, False) == manifest
    _assert_same_bytes(clean, out, manifest)


# ---------------------------------------------------------------- 5-6. corrupt and uneven shards

@pytest.fixture(scope="module")
def loader_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("f5")
    info = make_raw(root / "raw", "fasion", train_ids=5, test_ids=1, views=3)  # 30 train pairs, 2 test pairs
    build.preprocess("l", info.spec(), tiny_config(shard_size=1), root / "shards", None, None, False)
    return info, root / "shards"


def _epoch(shards_dir, world, workers, batch):
    seen, batches, skipped, errors = collections.Counter(), [], 0, []
    for rank in range(world):
        loader = train_loader(shards_dir, rank=rank, world_size=world, batch_size=batch, num_workers=workers,
                              augment=None)
        loader.set_epoch(1)
        n = 0
        for b in loader:
            n += 1
            seen.update(zip(b["source_name"], b["target_name"]))
        batches.append((len(loader), n))
        skipped += loader.skipped
        errors += list(loader.recent_errors)
    return seen, batches, skipped, errors


@pytest.mark.timeout(120)
def test_truncated_and_bit_flipped_shards_are_logged_skipped_counted_with_equal_batches(loader_shards, tmp_path,
                                                                                      caplog):
    info, src = loader_shards
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    names = [s["name"] for s in load_manifest(src)["shards"] if s["split"] == "train"]  # 5 shards, one group each
    truncated, flipped = names[1], names[3]
    data = (bad / truncated).read_bytes()
    (bad / truncated).write_bytes(data[: len(data) // 2])
    data = bytearray((bad / flipped).read_bytes())
    data[512 + 1] ^= 0xFF  # inside the first member's payload (meta.json): the tar stays valid
    (bad / flipped).write_bytes(bytes(data))
    rerecord_shards(bad)  # shards written damaged: the sample-level checks (a stale one fails its sha256 first)
    # One loader process per rank: each rank's stream holds readable shards to substitute from.
    clean_seen, clean_batches, _, _ = _epoch(src, world=2, workers=0, batch=4)
    seen, batches, skipped, errors = _epoch(bad, world=2, workers=0, batch=4)
    assert batches == clean_batches and len({b for b in batches}) == 1 and batches[0][0] == batches[0][1]
    # Each skip is logged once with its shard and key (a shard split between ranks is counted by
    # each rank that reads the bad part), and the train loop sums these counts into MLflow's data/errors.
    warned = [r.getMessage() for r in caplog.records if "skipping bad data" in r.getMessage()]
    assert skipped == len(warned) == len(errors) >= 2
    assert {m.split(":")[1].split()[0] for m in warned} == {truncated, flipped}
    assert all(f"{flipped} key 000003" in m for m in warned if flipped in m)
    assert all("member 000001." in m for m in warned if truncated in m)
    lost = set(info.pairs["train"]) - set(seen)
    assert len(lost) == 12 and sum(seen.values()) == sum(clean_seen.values())  # two groups of 6 pairs replaced


def test_a_stream_with_no_readable_shard_fails_fast_naming_the_shards(loader_shards, tmp_path):
    """The documented limit: substitutes come from the same loader worker's shards; a worker whose
    every shard is unreadable stops with an error naming them instead of hanging the other ranks."""
    _, src = loader_shards
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    for s in load_manifest(src)["shards"]:
        if s["split"] == "train":
            (bad / s["name"]).write_bytes((bad / s["name"]).read_bytes()[:700])
    loader = train_loader(bad, rank=0, world_size=2, batch_size=4, num_workers=0, augment=None)
    with pytest.raises(DataLoaderError, match=r"no readable sample in .*train-0000\d\d\.tar"):
        list(loader)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("world,workers", [(2, 2), (3, 1), (4, 2)])
def test_shard_count_not_divisible_by_ranks_times_workers_keeps_equal_batches(loader_shards, world, workers):
    info, src = loader_shards  # 5 train shards
    seen, batches, skipped, _ = _epoch(src, world, workers, batch=3)
    assert len(set(batches)) == 1 and batches[0][0] == batches[0][1], batches
    assert set(seen) == set(info.pairs["train"]) and skipped == 0
    assert sum(seen.values()) - len(info.pairs["train"]) < world  # padding only, fewer than world repeats


def test_single_test_shard_with_two_ranks_is_complete_and_deterministic(loader_shards, tmp_path):
    info, _ = loader_shards
    src = tmp_path / "one-test-shard"
    build.preprocess("l", info.spec(), tiny_config(shard_size=100), src, None, None, False)
    assert sum(1 for s in load_manifest(src)["shards"] if s["split"] == "test") == 1
    runs = []
    for _ in range(2):
        got = []
        for rank in range(2):
            for b in eval_loader(src, batch_size=1, rank=rank, world_size=2, num_workers=0):
                got += list(zip(b["source_name"], b["target_name"], b["pair_index"].tolist()))
        runs.append(got)
    assert runs[0] == runs[1]
    assert [(a, b) for a, b, _ in runs[0]] == info.pairs["test"] and [i for *_, i in runs[0]] == [0, 1]
    per_rank = [sum(len(b["source_name"]) for b in eval_loader(src, batch_size=1, rank=r, world_size=2,
                                                               equal_batches=True)) for r in range(2)]
    assert per_rank[0] == per_rank[1]  # equal collective steps when ranks must stay in lockstep
