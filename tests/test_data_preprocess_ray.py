"""Preprocessing on Ray workers: the same bytes for any worker count, one decode per image, and a
worker killed mid-shard is re-run without leaving anything partial behind."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from data_fixtures import annotation_line, draw_figure, make_raw, tiny_config

from datasets.parallel import connect, shutdown
from datasets.raw import validate
from datasets.shards import build, jobs
from datasets.shards.tar import load_manifest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray with 2 CPUs for the module (preprocess joins it instead of starting its own);
    this module's functions travel by value, as tests/ is not importable on Ray workers."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = connect(None, 2, {}, ROOT)
    yield
    shutdown(started)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A small DeepFashion-layout set with files only a full decode rejects, in both splits: a
    truncated JPEG with pairs (train) and a zero-byte image and a wrong-size one used by test pairs."""
    root = tmp_path_factory.mktemp("rayraw")
    info = make_raw(root / "raw", "fasion", train_ids=6, test_ids=3, views=3)
    size = info.size
    bad = {"train": info.names["train"][4], "test": info.names["test"][1]}
    data = (info.root / "train" / bad["train"]).read_bytes()
    (info.root / "train" / bad["train"]).write_bytes(data[: len(data) // 2])
    (info.root / "test" / bad["test"]).write_bytes(b"")
    kp = info.keypoints[info.names["test"][0]]
    odd = info.names["test"][0].replace(".jpg", "x.jpg")
    img = draw_figure(kp, (size[0], size[1] + 4), (40, 90, 40))
    (info.root / "test" / odd).write_bytes(cv2.imencode(".jpg", img)[1].tobytes())
    with open(next(info.root.glob("*-annotation-test.csv")), "a") as fh:
        fh.write(annotation_line(odd, kp))
    return info, bad


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_zero_one_and_two_workers_write_the_same_bytes(raw, tmp_path):
    info, bad = raw
    cfg = tiny_config(shard_size=2, max_reject_fraction=0.5)
    outs = {}
    for n in (0, 1, 2):
        manifest = build.preprocess("r", info.spec(), cfg, tmp_path / f"w{n}", None, None, False, workers=n)
        outs[n] = _files(tmp_path / f"w{n}")
    assert outs[0] == outs[1] == outs[2]
    assert "workers" not in manifest["preprocess"]  # how it ran is not part of what it wrote
    rejects = outs[0]["rejects.csv"].decode()
    assert f"train,image,{bad['train']},truncated image" in rejects
    assert f"test,image,{bad['test']},zero-byte file" in rejects
    assert "wrong size" in rejects and f"image {bad['train']} was rejected (truncated image" in rejects
    for split, c in manifest["splits"].items():  # the counts still add up after the jobs' rejects
        assert c["images_in"] == c["images_written"] + c["images_rejected"], split
        assert c["pairs_in"] == c["pairs_written"] + c["pairs_rejected"], split
        assert sum(s["pairs"] for s in manifest["shards"] if s["split"] == split) == c["pairs_written"]
    assert not list(tmp_path.glob(".*"))  # no staging folder, no partial file


def test_every_image_is_decoded_once(raw, monkeypatch, tmp_path):
    """Checking an image and writing it share one decode (training images are each in one shard)."""
    info, _ = raw
    calls: list[str] = []
    real = jobs.load_image

    def counting(path, *a, **kw):
        calls.append(Path(path).name)
        return real(path, *a, **kw)

    def second_decode(*a, **kw):
        raise AssertionError("validation decoded an image before the shard job did")

    monkeypatch.setattr(jobs, "load_image", counting)
    monkeypatch.setattr(validate, "check_image", second_decode)
    manifest = build.preprocess("r", info.spec(), tiny_config(shard_size=2, max_reject_fraction=0.5),
                                tmp_path / "out", None, None, False, workers=0)
    train = [c for c in calls if c in set(info.names["train"])]
    assert sorted(train) == sorted(set(info.names["train"]))  # each training image exactly once
    assert manifest["splits"]["train"]["images_in"] == len(train)


def _killed_once(job: jobs.ShardJob) -> jobs.ShardResult:
    """``write_shard``, except that the first attempt at train shard 1 is SIGKILLed after its first
    sample went into the partial file (a marker file in the output's parent says it happened)."""
    marker = Path(job.out).parent / "killed-once"
    if job.split == "train" and job.index == 1 and not marker.exists():
        from datasets.shards import tar

        real = tar.ShardWriter.write

        def write_then_die(self, *a, **kw):
            real(self, *a, **kw)
            self._fh.flush()
            marker.write_text(str(self._tmp))
            os.kill(os.getpid(), signal.SIGKILL)

        tar.ShardWriter.write = write_then_die
    return jobs.write_shard(job)


@pytest.mark.faults
def test_a_worker_killed_mid_shard_is_retried_and_the_output_is_unchanged(raw, tmp_path, monkeypatch):
    info, _ = raw
    cfg = tiny_config(shard_size=2, max_reject_fraction=0.5)
    build.preprocess("r", info.spec(), cfg, tmp_path / "clean", None, None, False, workers=0)
    monkeypatch.setattr(build, "write_shard", _killed_once)
    out = tmp_path / "out"
    manifest = build.preprocess("r", info.spec(), cfg, out, None, None, False, workers=2)
    partial = (tmp_path / "killed-once").read_text()
    assert partial.endswith(".train-000001.tar.partial")  # it did die half-way through a shard
    assert _files(out) == _files(tmp_path / "clean")
    assert manifest == load_manifest(tmp_path / "clean")
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".partial")]


def test_negative_workers_are_refused(raw, tmp_path):
    info, _ = raw
    with pytest.raises(ValueError, match="workers must be >= 0"):
        build.preprocess("r", info.spec(), tiny_config(), tmp_path / "o", None, None, False, workers=-1)
    assert not np.any([p.exists() for p in (tmp_path / "o", tmp_path / ".o.staging")])
