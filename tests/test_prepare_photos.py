"""``pipelines.prepare --photos``: real photos (scikit-image's, offline) → a dataset, with quarantine.

Needs the pose extra (mediapipe); the crop geometry is checked without it.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from datasets.raw.photos import person_crop
from tests.photo_fixtures import EXPECTED, make_photo_folder
from tests.pose_marks import needs_pose_extra

ROOT = Path(__file__).resolve().parents[1]


def test_person_crop_keeps_keypoints_on_the_pixels_they_mark():
    img = np.zeros((300, 500, 3), np.uint8)
    kp = np.full((18, 2), -1.0, np.float32)
    kp[:6] = [[250, 40], [250, 80], [220, 80], [210, 150], [280, 80], [290, 150]]
    for x, y in kp[:6]:
        img[int(y), int(x)] = 255
    out, mapped = person_crop(img, kp, (256, 176), margin=0.1)
    assert out.shape == (256, 176, 3)
    for x, y in mapped[:6]:
        assert out[int(round(y)), int(round(x))].max() > 20  # the marked pixel is still under its joint
    assert (mapped[6:] == -1).all()


@needs_pose_extra
def test_photo_folder_becomes_a_dataset_with_reasons(tmp_path, capfd):
    from pipelines.prepare import main

    photos = make_photo_folder(tmp_path / "photos")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["datasets"]["mine"] = {"layout": "deepfashion", "root": str(tmp_path / "raw"), "image_size": [256, 176],
                               "source_size": [256, 176], "shards": str(tmp_path / "shards")}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    sheet = tmp_path / "sheet.png"
    assert main(["--params", str(params), "--dataset", "mine", "--photos", str(photos), "--no-progress",
                 "--contact", str(sheet), "--metrics", str(tmp_path / "m.json")]) == 0
    err = capfd.readouterr().err
    assert "GetPrototype" not in err and "inference_feedback_manager" not in err
    out = tmp_path / "raw"
    with open(out / "prepare-photos.csv", newline="") as fh:
        outcomes = {r["source"]: r for r in csv.DictReader(fh)}
    assert {s: r["outcome"] for s, r in outcomes.items() if r["outcome"] == "written"} == \
        {s: "written" for s, o in EXPECTED.items() if o == "written"}
    for source, expected in EXPECTED.items():
        assert outcomes[source]["outcome"].startswith(expected), (source, outcomes[source])
    assert float(outcomes["astronaut/05_two_people.jpg"]["confidence"]) > 0.7
    with open(out / "prepare-rejects.csv", newline="") as fh:
        assert {r["source"] for r in csv.DictReader(fh)} == {s for s, o in EXPECTED.items() if o != "written"}
    # One identity per split; all ordered pairs within it; keypoints inside the frame.
    splits = {s: sorted(p.name for p in (out / s).iterdir()) for s in ("train", "test")}
    assert sorted(len(v) for v in splits.values()) == [3, 4]
    for split, names in splits.items():
        pairs = (out / f"fasion-pairs-{split}.csv").read_text().split()[1:]
        assert len(pairs) == len(names) * (len(names) - 1)
        for line in (out / f"fasion-annotation-{split}.csv").read_text().splitlines()[1:]:
            name, ys, xs = line.split(":")
            xs, ys = np.array(yaml.safe_load(xs)), np.array(yaml.safe_load(ys))
            seen = xs >= 0
            assert seen.sum() >= 8 and xs[seen].max() < 176 and ys[seen].max() < 256
            with Image.open(out / split / name) as im:
                assert im.size == (176, 256)
    # The EXIF-rotated copy is upright: its nose sits above its neck, as in the original.
    rows = {ln.split(":")[0]: ln for ln in (out / "fasion-annotation-test.csv").read_text().splitlines()[1:]}
    rows.update({ln.split(":")[0]: ln for ln in (out / "fasion-annotation-train.csv").read_text().splitlines()[1:]})
    rotated = outcomes["astronaut/04_exif_rotated.jpg"]["name"]
    ys = yaml.safe_load(rows[rotated].split(":")[1])
    assert 0 <= ys[0] < ys[1]
    with Image.open(sheet) as im:
        assert im.size[0] > 500 and im.size[1] > 500
