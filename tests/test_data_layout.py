"""Layout adapters: every file-name variant, coordinate conventions, layouts as data."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from data_fixtures import VARIANTS, make_raw, tiny_config

from datasets.raw.layout import (
    LAYOUTS,
    LayoutError,
    LayoutSpec,
    find_split,
    get_layout,
    identity_of,
    read_annotations,
    read_pairs,
    rescale_keypoints,
)
from datasets.raw.validate import validate_dataset


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_adapter_reads_every_file_name_variant(tmp_path, variant):
    info = make_raw(tmp_path / variant, variant, train_ids=2, test_ids=1, views=2)
    layout = get_layout(info.layout)
    for split in ("train", "test"):
        files = find_split(info.root, layout, split)
        assert files.annotation_csv.name.startswith(VARIANTS[variant][1] + "-annotation")
        rows, issues = read_annotations(files.annotation_csv, layout)
        assert not issues
        assert [r.name for r in rows] == info.names[split]
        for row in rows:  # CSV holds y first; in memory (x, y)
            assert np.array_equal(row.keypoints, info.keypoints[row.name].astype(np.float32))
        pairs, pair_issues = read_pairs(files.pairs_csv, layout)
        assert not pair_issues and [(p.source, p.target) for p in pairs] == info.pairs[split]
    results = validate_dataset(info.spec(), layout, tiny_config(), "t")
    assert all(not r.rejects for r in results.values())


def test_keypoints_are_rescaled_from_the_annotation_frame():
    kp = np.array([[0, 0], [175, 255], [-1, -1], [87, 300]], np.float32)  # (x, y); last is outside
    out = rescale_keypoints(kp, (256, 176), (128, 88))
    assert np.allclose(out[0], [-0.25, -0.25]) and np.allclose(out[1], [87.25, 127.25])
    assert (out[2] == -1).all() and (out[3] == -1).all()
    same = np.array([[0, 0], [43, 63], [-1, -1]], np.float32)
    assert np.array_equal(rescale_keypoints(same, (64, 44), (64, 44)), same)


def test_identity_rules():
    df, mk = get_layout("deepfashion"), get_layout("market")
    assert identity_of("fashionWOMENBlouses_Shirtsid0000035501_1front.jpg", df) == "fashionWOMENBlouses_Shirtsid0000035501"
    assert identity_of("0002_c1s1_000451_03.jpg", mk) == "0002"


def test_missing_csv_names_what_was_looked_for(tmp_path):
    info = make_raw(tmp_path / "r", "fasion", train_ids=1, test_ids=1, views=2)
    (info.root / "fasion-pairs-test.csv").unlink()
    with pytest.raises(LayoutError, match="fasion-pairs-test.csv, fashion-pairs-test.csv"):
        find_split(info.root, get_layout("deepfashion"), "test")
    with pytest.raises(LayoutError, match="unknown layout"):
        get_layout("nope")


def test_a_new_layout_is_a_data_entry(tmp_path, monkeypatch):
    """The portrait layout (68 landmarks, other CSV names) needs no code change."""
    portrait = LayoutSpec(name="portrait", num_keypoints=68,
                          annotation_names=("portrait-landmarks-{split}.csv",),
                          pair_names=("portrait-pairs-{split}.csv",))
    monkeypatch.setitem(LAYOUTS, "portrait", portrait)
    (tmp_path / "train").mkdir()
    ys, xs = list(range(68)), list(range(68, 136))
    (tmp_path / "portrait-landmarks-train.csv").write_text(
        f"name:keypoints_y:keypoints_x\na.jpg:{json.dumps(ys)}:{json.dumps(xs)}\nb.jpg:[1]:[2]\n")
    (tmp_path / "portrait-pairs-train.csv").write_text("from,to\na.jpg,a.jpg\n")
    files = find_split(tmp_path, get_layout("portrait"), "train")
    rows, issues = read_annotations(files.annotation_csv, portrait)
    assert rows[0].keypoints.shape == (68, 2) and rows[0].keypoints[5].tolist() == [73, 5]
    assert len(issues) == 1 and "expected 68 values" in issues[0].reason and issues[0].line == 3


def test_bad_header_is_a_clear_error(tmp_path):
    info = make_raw(tmp_path / "r", "market", train_ids=1, test_ids=1, views=2)
    ann = info.root / "market-annotation-train.csv"
    ann.write_text("name,y,x\n")
    with pytest.raises(LayoutError, match="market-annotation-train.csv: header must hold columns"):
        read_annotations(ann, dataclasses.replace(get_layout("market")))
