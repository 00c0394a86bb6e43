"""Shards: round trip equals the input, deterministic bytes, standard readers, atomic writes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import make_raw, tiny_config

from datasets.files import file_sha256
from datasets.pose import heatmaps
from datasets.shards import build
from datasets.shards.samples import parse_sample
from datasets.shards.tar import ShardFormatError, ShardWriter, iter_members, iter_samples

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    info = make_raw(root / "raw", "fashion-resize")
    cfg = tiny_config()
    manifest = build.preprocess("rt", info.spec(), cfg, root / "a", root / "sheet.png", root / "m.json", False)
    return info, cfg, root, manifest


def test_round_trip_equals_input(built):
    info, cfg, root, manifest = built
    seen = set()
    for shard in manifest["shards"]:
        path = root / "a" / shard["name"]
        assert file_sha256(path) == shard["sha256"]
        for key, files in iter_samples(path.read_bytes()):
            sample = parse_sample(key, files)
            split = json.loads(bytes(files["meta.json"]))["split"]
            for view in sample.views:
                src = info.root / split / view.name
                assert bytes(view.jpeg) == src.read_bytes()  # same size: stored byte for byte
                kp = info.keypoints[view.name].astype(np.float32)
                assert np.array_equal(view.keypoints, kp)
                want = heatmaps.quantise(heatmaps.render_dense(kp, info.size, cfg.heatmap_sigma))
                assert np.array_equal(heatmaps.to_dense(heatmaps.decode(bytes(view.pose))), want)
                seen.add((split, view.name))
            names = sample.names
            for (a, b), line in zip(sample.pairs, sample.pair_lines):
                assert (names[a], names[b]) == info.pairs[split][line - 2]
    assert seen == {(s, n) for s in ("train", "test") for n in info.names[s]}
    test_order = []
    for shard in (s for s in manifest["shards"] if s["split"] == "test"):
        for key, files in iter_samples((root / "a" / shard["name"]).read_bytes()):
            sample = parse_sample(key, files)
            test_order += [(sample.names[a], sample.names[b]) for a, b in sample.pairs]
    assert test_order == info.pairs["test"]  # test pairs in CSV order


def test_output_bytes_are_deterministic(built):
    info, cfg, root, manifest = built
    again = build.preprocess("rt", info.spec(), cfg, root / "b", None, None, False)
    assert again == manifest
    for name in [s["name"] for s in manifest["shards"]] + ["manifest.json", "rejects.csv"]:
        assert (root / "a" / name).read_bytes() == (root / "b" / name).read_bytes(), name


def test_shards_open_with_tarfile_and_webdataset(built):
    import webdataset as wds

    _, _, root, manifest = built
    path = root / "a" / manifest["shards"][0]["name"]
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in members)
    assert [m.name for m in members] == [n for n, _ in iter_members(path.read_bytes())]
    samples = list(wds.WebDataset(str(path), shardshuffle=False, empty_check=False))
    assert len(samples) == manifest["shards"][0]["samples"]
    first = samples[0]
    assert {"meta.json", "v0.jpg", "v0.kp.json", "v0.pose.bin", "v0.face.jpg"} <= set(first)
    assert json.loads(first["meta.json"])["names"][0] == json.loads(first["v0.kp.json"])["name"]


def test_contact_sheet_written(built):
    _, _, root, _ = built
    data = (root / "sheet.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_reader_reports_corrupt_and_truncated_tars(built):
    _, _, root, manifest = built
    data = (root / "a" / manifest["shards"][0]["name"]).read_bytes()
    with pytest.raises(ShardFormatError, match="truncated"):
        list(iter_members(data[:3000]))
    with pytest.raises(ShardFormatError, match="truncated"):
        list(iter_members(data[:3072]))  # cut exactly between two members
    flipped = bytearray(data)
    flipped[1030] ^= 0x20  # a letter of the second member's name
    with pytest.raises(ShardFormatError, match="checksum mismatch at byte 1024"):
        list(iter_members(bytes(flipped)))
    with pytest.raises(ShardFormatError, match="bad tar header at byte 1024"):
        list(iter_members(data[:1024] + b"\x01" * 512 + data[1536:]))


_KILL_SCRIPT = """
import sys, time
from datasets.shards.tar import ShardWriter
w = ShardWriter(sys.argv[1], "train", max_samples=4)
for i in range(6):
    w.write(f"{i:06d}", [("bin", bytes(2000))])
    if i == 5:  # second shard is half full: tell the test, then hang
        print("mid-shard", flush=True)
        time.sleep(60)
w.close()
"""


def test_writer_killed_mid_shard_leaves_no_final_named_partial(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "mid-shard"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".train-000001.tar.partial", "train-000000.tar"]
    with tarfile.open(tmp_path / "train-000000.tar") as tar:  # the finished shard is complete
        assert len(tar.getmembers()) == 4
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["train-000000.tar"]


def test_writer_abort_removes_partial(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, "test", 10) as w:
            w.write("000000", [("bin", b"x")])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
