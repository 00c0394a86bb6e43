"""pipelines.convert_portraits on a generated 'real-style' set: .pts and CSV inputs, crops, errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datasets.faces.edits import Expression
from datasets.pose.landmarks import MISSING, visible
from datasets.raw.layout import get_layout, identity_of
from datasets.raw.portrait_import import read_pts
from datasets.synthetic.portrait_dataset import base_pose, render_view, sample_identity
from datasets.synthetic.portrait_geometry import HeadPose
from pipelines.convert_portraits import main

SRC = (120, 100)  # (H, W) of the fixture's "camera" images


@pytest.fixture(scope="module")
def fixture_set(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """4 people x 2 photos as PNG + 1-based .pts (the 300-W convention), plus the exact landmarks."""
    root = tmp_path_factory.mktemp("faces")
    truth = {}
    for person in range(4):
        ident = sample_identity(11, person, "gradient")
        for k in range(2):
            b = base_pose(SRC)
            view = render_view(ident, Expression(mouth_open=0.4 * k), HeadPose(b.cx, b.cy, b.scale, 6.0 * k, 25.0 * k),
                               SRC, 2)
            name = f"person{person}_{k:04d}"
            Image.fromarray(view.image).save(root / f"{name}.png")
            lines = [f"{x + 1:.3f} {y + 1:.3f}" if x >= 0 else "0 0" for x, y in view.landmarks]
            (root / f"{name}.pts").write_text("version: 1\nn_points:  68\n{\n" + "\n".join(lines) + "\n}\n")
            truth[name] = view.landmarks
    return root, truth


def read_layout(root: Path) -> dict[str, tuple[str, np.ndarray]]:
    out = {}
    for split in ("train", "test"):
        frame = pd.read_csv(root / f"portrait-landmarks-{split}.csv", sep=":")
        for name, ys, xs in zip(frame["name"], frame["landmarks_y"], frame["landmarks_x"]):
            out[name] = (split, np.stack([json.loads(xs), json.loads(ys)], 1).astype(float))
    return out


def test_pts_reader_origin_and_missing(fixture_set):
    root, truth = fixture_set
    lm = read_pts(root / "person0_0001.pts")
    ok = visible(truth["person0_0001"])
    np.testing.assert_allclose(lm[ok], truth["person0_0001"][ok], atol=1e-3)
    assert (lm[~ok] == MISSING).all() and (~ok).any()  # the yawed photo hides far jaw points


def test_whole_image_resize_maps_landmarks_with_the_pixels(fixture_set, tmp_path):
    root, truth = fixture_set
    out = tmp_path / "whole"
    assert main(["--images", str(root), "--pts", "--out", str(out), "--crop", "none", "--size", "60", "50",
                 "--test-fraction", "0.25"]) == 0
    got = read_layout(out)
    assert len(got) == 8
    for name, (split, lm) in got.items():
        assert Image.open(out / split / name).size == (50, 60)
        exact = truth[Path(name).stem]
        ok = visible(exact)
        expect = (exact[ok] + 0.5) * 0.5 - 0.5  # half size, pixel centres preserved
        assert np.abs(lm[ok] - expect).max() <= 0.5 + 1e-6
        assert (lm[~ok] == MISSING).all()


def test_face_crop_centres_the_face_and_splits_by_identity(fixture_set, tmp_path):
    root, _ = fixture_set
    out = tmp_path / "crop"
    assert main(["--images", str(root), "--pts", "--out", str(out), "--size", "64", "64", "--margin", "0.3",
                 "--test-fraction", "0.25", "--seed", "1"]) == 0
    got = read_layout(out)
    layout = get_layout("portrait")
    ids = {s: {identity_of(n, layout) for n, (sp, _) in got.items() if sp == s} for s in ("train", "test")}
    assert len(ids["test"]) == 1 and len(ids["train"]) == 3 and not ids["train"] & ids["test"]
    assert "person0_0000.jpg" in got  # <identity>_<view> keeps the source name here
    for _, lm in got.values():
        pts = lm[visible(lm)]
        # margin 0.3 on each side: the landmarks span about 1 / 1.6 of the crop, centred
        span = (pts.max(0) - pts.min(0)).max()
        assert 64 / 1.6 - 2 <= span <= 64 / 1.6 + 2
        assert abs((pts.max(0) + pts.min(0)).mean() / 2 - 31.5) < 2
    pairs = pd.read_csv(out / "portrait-pairs-train.csv")
    assert len(pairs) == 3 * 2 and all(identity_of(a, layout) == identity_of(b, layout)
                                       for a, b in zip(pairs["from"], pairs["to"]))
    # The picture moves with the landmarks: the iris centre (between the eye corners) is dark.
    big = tmp_path / "crop128"
    assert main(["--images", str(root), "--pts", "--out", str(big), "--size", "128", "128"]) == 0
    for name, (split, lm) in read_layout(big).items():
        if name.endswith("_0000.jpg"):  # the frontal photos
            img = np.asarray(Image.open(big / split / name).convert("L"), float)
            for a, b in ((36, 39), (42, 45)):
                x, y = np.rint((lm[a] + lm[b]) / 2).astype(int)
                cheek = np.rint((lm[a] + lm[2 if a == 36 else 14] * 2) / 3).astype(int)
                assert img[y, x] < 0.8 * img[cheek[1], cheek[0]]
    names = pd.read_csv(out / "portrait-names.csv")
    assert sorted(Path(s).name for s in names["source"]) == sorted(p.name for p in root.glob("*.png"))


def test_csv_input_and_bad_inputs(fixture_set, tmp_path, capsys):
    root, truth = fixture_set
    rows = []
    for name, lm in truth.items():
        row = {"name": f"{name}.png"}
        row.update({f"x{i}": (v if v >= 0 else "") for i, v in enumerate(lm[:, 0])})
        row.update({f"y{i}": (v if v >= 0 else "") for i, v in enumerate(lm[:, 1])})
        rows.append(row)
    table = tmp_path / "landmarks.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    out = tmp_path / "from_csv"
    assert main(["--images", str(root), "--csv", str(table), "--out", str(out), "--crop", "none",
                 "--size", "120", "100"]) == 0
    for name, (_, lm) in read_layout(out).items():
        exact = truth[Path(name).stem]
        ok = visible(exact)
        assert np.abs(lm[ok] - exact[ok]).max() <= 0.5 + 1e-6

    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(bad / "x_1.png")
    (bad / "x_1.pts").write_text("version: 1\nn_points: 5\n{\n1 1\n2 2\n3 3\n4 4\n5 5\n}\n")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(bad / "y_1.png")  # no landmark file
    assert main(["--images", str(bad), "--pts", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "x_1.pts: expected 68 landmarks, found 5" in err and "y_1.png: no landmark file y_1.pts" in err
    assert "nothing to convert" in err and not (tmp_path / "none").exists()
    pd.DataFrame([{"name": "a.png", "x0": 1}]).to_csv(tmp_path / "short.csv", index=False)
    assert main(["--images", str(root), "--csv", str(tmp_path / "short.csv"), "--out", str(tmp_path / "n2")]) == 2
    assert "missing columns" in capsys.readouterr().err
