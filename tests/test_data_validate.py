"""Validation with quarantine: each rejection reason, counts that add up, the stage's exit codes."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from data_fixtures import break_raw, make_raw, tiny_config

from datasets.raw.layout import get_layout
from datasets.raw.validate import identity_leaks, validate_dataset
from datasets.shards import build
from pipelines import preprocess as stage


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    info = make_raw(root / "raw", "fasion")
    expected = break_raw(info)
    out = root / "shards"
    manifest = build.preprocess("broken", info.spec(), tiny_config(), out, None, root / "m.json", False)
    return info, expected, out, manifest


def test_every_broken_input_is_rejected_with_its_reason(broken):
    _, expected, out, _ = broken
    with open(out / "rejects.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["split", "kind", "name", "reason"]
    got = {(r["kind"], r["name"]): r["reason"] for r in rows}
    for key, reason in expected.items():
        assert key in got, f"{key} not in rejects.csv"
        assert got[key].startswith(reason), (key, got[key])
    assert set(got) == set(expected)  # nothing good was rejected


def test_counts_add_up(broken):
    _, _, out, manifest = broken
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    for split, c in manifest["splits"].items():
        assert c["images_in"] == c["images_written"] + c["images_rejected"]
        assert c["pairs_in"] == c["pairs_written"] + c["pairs_rejected"]
    train = manifest["splits"]["train"]
    assert (train["images_rejected"], train["pairs_rejected"], train["rows_rejected"]) == (11, 12, 3)
    shards = [s for s in manifest["shards"] if s["split"] == "train"]
    assert sum(s["pairs"] for s in shards) == train["pairs_written"]
    assert sum(s["images"] for s in shards) == train["images_written"]


def test_duplicate_file_name_in_both_splits_and_identity_leak(tmp_path):
    info = make_raw(tmp_path / "raw", "market", train_ids=2, test_ids=2, views=2)
    dup = info.names["train"][0]
    shutil.copy(info.root / "train" / dup, info.root / "test" / dup)
    with open(info.root / "market-annotation-test.csv", "a") as fh:
        fh.write(open(info.root / "market-annotation-train.csv").read().splitlines()[1] + "\n")
    leak = info.names["train"][1].replace("_c2s1_000001", "_c9s1_000009")  # same id 0001, another camera
    shutil.copy(info.root / "train" / info.names["train"][1], info.root / "test" / leak)
    with open(info.root / "market-annotation-test.csv", "a") as fh:
        line = open(info.root / "market-annotation-train.csv").read().splitlines()[2]
        fh.write(leak + line[line.index(":"):] + "\n")
    results = validate_dataset(info.spec(), get_layout("market"), tiny_config(), "m")
    for split in ("train", "test"):
        reasons = {r.name: r.reason for r in results[split].rejects if r.kind == "image"}
        assert reasons[dup].startswith("duplicate name: the same file name is in both splits")
    assert identity_leaks(results) == ["0001"]


def test_stage_fails_clearly_when_too_much_is_rejected(broken, tmp_path, capsys):
    info, _, _, _ = broken
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    raw["datasets"]["b"] = {"layout": "deepfashion", "root": str(info.root), "image_size": [64, 44],
                            "source_size": [64, 44], "shards": str(tmp_path / "out")}
    raw["preprocess"].update(max_reject_fraction=0.2, face_size=16)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    code = stage.main(["--dataset", "b", "--params", str(params), "--quiet", "--no-figure",
                       "--metrics", str(tmp_path / "m.json")])
    err = capsys.readouterr().err
    assert code == 1
    assert "train: 11 of 23 images rejected" in err and "max_reject_fraction=0.2" in err
    assert not (tmp_path / "out").exists()  # nothing published
    assert (tmp_path / "out.rejects-failed.csv").is_file()
    with pytest.raises(SystemExit) as exit_:  # a config error, as for any command
        stage.main(["--dataset", "nope", "--params", str(params)])
    assert exit_.value.code == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert stage.main(["--dataset", "b", "--params", str(params), "--root", str(tmp_path / "absent")]) == 2
    assert "raw dataset folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        stage.main(["--dataset", "b", "--params", str(params), "--set", "preprocess.shard_size=x"])
    assert exc.value.code == 2
