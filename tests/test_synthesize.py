"""Synthetic person data: layout, determinism, annotations, splits, pairs and the CLI."""
from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datasets.pose.keypoints import JOINT_INDEX, NUM_JOINTS
from datasets.raw.layout import get_layout, identity_of
from datasets.sheets.pose_sheet import draw_skeleton, pose_sheet
from datasets.specs import SynthesizeSpec
from datasets.synthetic import fashion as synthetic_fashion
from datasets.synthetic.data_generators import GENERATORS
from datasets.synthetic.figure_render import BodyView, render_figure
from pipelines import synthesize as cli

ROOT = Path(__file__).resolve().parents[1]
TINY = SynthesizeSpec(generator="figure", seed=3, height=64, width=44, train_identities=3, test_identities=2,
                      views_per_identity=3)
TINY_MARKET = replace(TINY, width=32, background="clutter", file_prefix="market", jpeg_quality=85,
                      blur_sigma=0.6, noise_std=3.0, crop_probability=0.0)
TINY_SETS = [f"synthesize.synthetic_fashion.{k}={v}" for k, v in
             (("height", 64), ("width", 44), ("train_identities", 3), ("test_identities", 2),
              ("views_per_identity", 3))]
FASHION_NAME = re.compile(r"^fashion(WOMEN|MEN)[A-Za-z_]+id\d{10}_\d(front|side|back|full|additional)\.jpg$")
MARKET_NAME = re.compile(r"^\d{4}_c[1-6]s[1-6]_\d{6}_\d{2}\.jpg$")


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> Path:
    return synthetic_fashion.write_dataset(TINY, tmp_path_factory.mktemp("fashion") / "synthetic_fashion").root


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return synthetic_fashion.write_dataset(TINY_MARKET, tmp_path_factory.mktemp("market") / "synthetic_market").root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _annotations(root: Path, prefix: str, split: str) -> pd.DataFrame:
    """Read exactly as the field's code does: pandas with sep=':' and json.loads per cell."""
    return pd.read_csv(root / f"{prefix}-annotation-{split}.csv", sep=":")


def test_layout_files(fashion: Path) -> None:
    assert sorted(p.name for p in fashion.iterdir()) == [
        "fasion-annotation-test.csv", "fasion-annotation-train.csv", "fasion-pairs-test.csv",
        "fasion-pairs-train.csv", "groundtruth", "test", "train"]  # groundtruth/: the renderer's, beside the layout
    header = (fashion / "fasion-annotation-train.csv").read_bytes().split(b"\n")[0]
    assert header == b"name:keypoints_y:keypoints_x"
    assert (fashion / "fasion-pairs-train.csv").read_bytes().startswith(b"from,to\n")
    for split, ids in (("train", 3), ("test", 2)):
        names = sorted(p.name for p in (fashion / split).iterdir())
        assert len(names) == ids * 3 and all(FASHION_NAME.match(n) for n in names), names


def test_same_seed_gives_identical_bytes(fashion: Path, tmp_path: Path) -> None:
    again = synthetic_fashion.write_dataset(TINY, tmp_path / "again").root
    assert _files(again) == _files(fashion)
    other = synthetic_fashion.write_dataset(replace(TINY, seed=4), tmp_path / "other").root
    assert _files(other)["fasion-annotation-train.csv"] != _files(fashion)["fasion-annotation-train.csv"]


def test_annotations_parse_like_the_field_code(fashion: Path) -> None:
    for split in ("train", "test"):
        frame = _annotations(fashion, "fasion", split)
        assert list(frame.columns) == ["name", "keypoints_y", "keypoints_x"]
        assert sorted(frame["name"]) == sorted(p.name for p in (fashion / split).iterdir())
        for ys, xs in zip(frame["keypoints_y"], frame["keypoints_x"]):
            ys, xs = json.loads(ys), json.loads(xs)
            assert len(ys) == len(xs) == NUM_JOINTS
            assert all(type(v) is int for v in ys + xs)
            assert all((y == -1) == (x == -1) for y, x in zip(ys, xs))


def test_visible_keypoints_inside_image_and_sizes(fashion: Path, market: Path) -> None:
    for root, prefix, (h, w) in ((fashion, "fasion", (64, 44)), (market, "market", (64, 32))):
        for split in ("train", "test"):
            for name, ys, xs in _annotations(root, prefix, split).itertuples(index=False):
                with Image.open(root / split / name) as img:
                    assert img.size == (w, h) and img.format == "JPEG" and img.mode == "RGB"
                kp = np.stack([json.loads(xs), json.loads(ys)], axis=1)
                seen = kp[:, 0] != -1
                assert seen.sum() >= 4, name
                assert ((kp[seen] >= 0) & (kp[seen] < [w, h])).all(), (name, kp)


def test_no_identity_in_both_splits(fashion: Path, market: Path) -> None:
    for root, layout in ((fashion, "deepfashion"), (market, "market")):
        ids = {split: {identity_of(p.name, get_layout(layout)) for p in (root / split).iterdir()}
               for split in ("train", "test")}
        assert len(ids["train"]) == 3 and len(ids["test"]) == 2
        assert not ids["train"] & ids["test"]


def test_every_pair_is_within_an_identity_and_exists(fashion: Path, market: Path) -> None:
    for root, prefix, layout in ((fashion, "fasion", "deepfashion"), (market, "market", "market")):
        for split, n_ids in (("train", 3), ("test", 2)):
            pairs = pd.read_csv(root / f"{prefix}-pairs-{split}.csv")
            assert list(pairs.columns) == ["from", "to"]
            assert len(pairs) == n_ids * 3 * 2  # all ordered pairs of 3 distinct views
            assert not pairs.duplicated().any()
            for src, dst in zip(pairs["from"], pairs["to"]):
                assert src != dst
                assert (root / split / src).is_file() and (root / split / dst).is_file()
                spec = get_layout(layout)
                assert identity_of(src, spec) == identity_of(dst, spec)


def test_market_variant_names(market: Path) -> None:
    assert sorted(p.name for p in market.glob("*.csv")) == [
        "market-annotation-test.csv", "market-annotation-train.csv", "market-pairs-test.csv",
        "market-pairs-train.csv"]
    names = [p.name for p in market.rglob("*.jpg")]
    assert len(names) == 15 and all(MARKET_NAME.match(n) for n in names), names
    cams = {n.split("_")[1][:2] for n in names if n.startswith(names[0][:4])}
    assert len(cams) == 3  # the views of a person come from different cameras


def test_interrupted_write_leaves_no_partial_dataset(fashion: Path, tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "data"
    good = synthetic_fashion.write_dataset(TINY, root).root
    before = _files(good)
    calls = []

    def failing(spec, ident, k):
        calls.append(k)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(spec, ident, k)

    real = synthetic_fashion.render_sample
    monkeypatch.setattr(synthetic_fashion, "render_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        synthetic_fashion.write_dataset(replace(TINY, seed=9), root)
    assert _files(root) == before  # the complete dataset is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temp folder left behind
    with pytest.raises(KeyboardInterrupt):
        calls.clear()
        synthetic_fashion.write_dataset(TINY, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


def test_refuses_to_replace_a_folder_that_is_not_a_dataset(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        synthetic_fashion.write_dataset(TINY, tmp_path)
    with pytest.raises(SystemExit) as exc:
        cli.main(["--dataset", "synthetic_fashion", "--out", str(tmp_path),
                  "--params", str(ROOT / "params.yaml"), "--no-progress"])
    assert exc.value.code == 2 and "refusing to replace" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def _figure(yaw: float, cx: float = 44.0, pose_kind: str = "stand"):
    rng = np.random.default_rng(0)
    look, _ = synthetic_fashion.sample_identity_look(rng, SynthesizeSpec(generator="figure"))
    pose = synthetic_fashion.sample_body_pose(np.random.default_rng(1), pose_kind)
    bg = np.ones((256, 176, 3), np.float32)
    image, kp = render_figure(look, pose, BodyView("test", yaw, 110.0, cx, 122.0), bg, 2)
    return image, kp


def test_views_hide_the_right_face_points_and_keep_left_right() -> None:
    j = JOINT_INDEX
    _, front = _figure(0.0)
    assert (front[[j["nose"], j["Leye"], j["Reye"], j["Lear"], j["Rear"]]] >= 0).all()
    assert front[j["Rsho"], 0] < front[j["Lsho"], 0]  # the person's right is the viewer's left
    assert front[j["Reye"], 0] < front[j["nose"], 0] < front[j["Leye"], 0]
    _, back = _figure(180.0)
    assert (back[[j["nose"], j["Leye"], j["Reye"]]] == -1).all()
    assert (back[[j["Lear"], j["Rear"], j["neck"]]] >= 0).all()
    assert back[j["Rsho"], 0] > back[j["Lsho"], 0]
    _, side = _figure(90.0)  # facing screen right: the right side is toward the camera
    assert side[j["Reye"], 0] >= 0 and side[j["Rear"], 0] >= 0
    assert side[j["Leye"], 0] == -1 and side[j["Lear"], 0] == -1


@pytest.mark.parametrize("yaw, pose_seed", [(0.0, 1), (20.0, 2), (-25.0, 3)])
def test_eye_keypoints_sit_on_the_drawn_eyes(yaw: float, pose_seed: int) -> None:
    look, _ = synthetic_fashion.sample_identity_look(np.random.default_rng(1), SynthesizeSpec(generator="figure"))
    pose = synthetic_fashion.sample_body_pose(np.random.default_rng(pose_seed), "stand")
    canvas = np.ones((256, 176, 3), np.float32)
    image, kp = render_figure(look, pose, BodyView("t", yaw, 110.0, 44.0, 122.0), canvas, 2)
    for name in ("Leye", "Reye"):
        x, y = kp[JOINT_INDEX[name]]
        assert x >= 0, name
        cx, cy = round((x + 0.5) * 2 - 0.5), round((y + 0.5) * 2 - 0.5)  # supersampled canvas pixel
        assert image[cy - 1:cy + 2, cx - 1:cx + 2].mean(axis=2).min() < 0.15, name  # dark iris, not skin


def test_joints_outside_the_frame_are_missing() -> None:
    _, kp = _figure(0.0, cx=-25.0, pose_kind="arms_out")  # pelvis left of the frame
    j = JOINT_INDEX
    assert kp[j["Rwri"], 0] == -1 and kp[j["Rhip"], 0] == -1
    assert kp[j["Lwri"], 0] >= 0
    seen = kp[:, 0] >= 0
    assert (kp[seen] >= 0).all() and (kp[seen, 0] <= 87).all()


def test_figure_is_drawn_where_its_keypoints_are() -> None:
    image, kp = _figure(0.0)
    small = image.reshape(128, 2, 88, 2, 3).mean(axis=(1, 3))
    seen = np.flatnonzero(kp[:, 0] >= 0)
    xy = np.round(kp[seen]).astype(int)
    covered = np.abs(small[xy[:, 1], xy[:, 0]] - 1.0).max(axis=1) > 0.02  # not the white background
    assert covered.all(), [i for i, c in zip(seen, covered) if not c]


def test_pose_sheet_draws_grid() -> None:
    img = np.full((64, 44, 3), 200, np.uint8)
    kp = np.full((NUM_JOINTS, 2), -1.0)
    kp[1], kp[2], kp[3] = (22, 15), (12, 16), (10, 30)
    drawn = draw_skeleton(img, kp, scale=2)
    assert drawn.shape == (128, 88, 3) and (drawn != 200).any()
    assert (draw_skeleton(img, np.full((NUM_JOINTS, 2), -1.0), 2) == 200).all()
    sheet = pose_sheet([[(img, kp, "a"), (img, kp, "b")], [(img, kp, "c")]], scale=2)
    assert sheet.shape[0] > 2 * 128 and sheet.shape[1] > 2 * 2 * 88


def test_cli_writes_dataset_speed_and_contact_sheet(tmp_path: Path, capsys) -> None:
    out, sheet = tmp_path / "raw", tmp_path / "sheet.png"
    code = cli.main(["--dataset", "synthetic_fashion", "--out", str(out), "--contact", str(sheet),
                     "--params", str(ROOT / "params.yaml"), "--no-progress"]
                    + [a for s in TINY_SETS for a in ("--set", s)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "images/s" in printed and str(out) in printed and str(sheet) in printed
    assert len(list((out / "train").glob("*.jpg"))) == 9
    with Image.open(sheet) as img:
        assert img.format == "PNG" and img.size[0] > 200


@pytest.mark.parametrize("args, message", [
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--dataset", "deepfashion"], "has no synthesize entry"),
    (["--dataset", "synthetic_fashion", "--set", "synthesize.synthetic_fashion.colour=red"], "unknown key"),
    (["--dataset", "synthetic_fashion", "--set", "synthesize.synthetic_fashion.height=tall"],
     "expected an integer"),
    (["--dataset", "synthetic_fashion", "--set", "synthesize.synthetic_fashion.file_prefix=market"],
     "does not match layout"),
    (["--dataset", "synthetic_fashion", "--params", "missing.yaml"], "params file not found"),
])
def test_cli_bad_input_exits_2_with_one_line(args: list[str], message: str, tmp_path: Path, capsys,
                                              monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exc:
        cli.main(args + ["--out", str(tmp_path / "never")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "never").exists()



def test_split_sizes_do_not_rename_the_other_split() -> None:
    def names(spec: SynthesizeSpec) -> dict[str, list[str]]:
        return {s: [synthetic_fashion.identity_key(i, spec) for i in synthetic_fashion.plan_identities(spec) if i.split == s]
                for s in ("train", "test")}

    base = names(TINY)
    more_train = names(replace(TINY, train_identities=5))
    more_test = names(replace(TINY, test_identities=4))
    assert more_train["train"][:3] == base["train"] and more_train["test"] == base["test"]
    assert more_test["train"] == base["train"] and more_test["test"][:2] == base["test"]


def test_every_generator_name_has_a_generator() -> None:
    from typing import get_args, get_type_hints

    assert set(GENERATORS) == set(get_args(get_type_hints(SynthesizeSpec)["generator"]))
