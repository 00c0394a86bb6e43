"""The synthetic portrait generator: determinism, the written layout, splits, pairs, exact landmarks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datasets.faces.edits import Expression
from datasets.pose.landmarks import MISSING, visible
from datasets.raw.layout import find_split, get_layout, identity_of, read_annotations, read_pairs
from datasets.specs import SynthesizeSpec
from datasets.synthetic import portrait_dataset
from datasets.synthetic.portrait_dataset import (
    base_pose,
    identity_views,
    render_view,
    sample_identity,
    write_dataset,
)
from datasets.synthetic.portrait_geometry import HeadPose
from datasets.synthetic.synthesis_summary import total_images

SPEC = SynthesizeSpec(generator="portrait", seed=3, height=48, width=48, train_identities=3, test_identities=2,
                      views_per_identity=3, file_prefix="portrait", supersample=2)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    return write_dataset(SPEC, tmp_path_factory.mktemp("p") / "portraits").root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_faces(written, tmp_path):
    again = write_dataset(SPEC, tmp_path / "again").root
    assert _files(again) == _files(written)
    other = SynthesizeSpec(**{**SPEC.__dict__, "seed": 4})
    ident_a, ident_b = sample_identity(SPEC.seed, 0, "gradient"), sample_identity(other.seed, 0, "gradient")
    assert ident_a != ident_b


def test_layout_is_written_exactly(written):
    assert sorted(p.name for p in written.iterdir()) == [
        "groundtruth", "portrait-landmarks-test.csv", "portrait-landmarks-train.csv", "portrait-pairs-test.csv",
        "portrait-pairs-train.csv", "test", "train"]  # groundtruth/: the renderer's, beside the layout
    assert len(list((written / "train").glob("*.jpg"))) + len(list((written / "test").glob("*.jpg"))) == total_images(SPEC)
    frame = pd.read_csv(written / "portrait-landmarks-train.csv", sep=":")
    assert list(frame.columns) == ["name", "landmarks_y", "landmarks_x"]
    for name, ys, xs in zip(frame["name"], frame["landmarks_y"], frame["landmarks_x"]):
        ys, xs = json.loads(ys), json.loads(xs)
        assert len(ys) == len(xs) == 68 and all(isinstance(v, int) for v in ys + xs)
        assert all(-1 <= v < 48 for v in ys + xs)
        assert (written / "train" / name).is_file()
    # The project's own reader agrees (portrait layout registered as data).
    files = find_split(written, get_layout("portrait"), "test")
    rows, issues = read_annotations(files.annotation_csv, get_layout("portrait"))
    assert not issues and len(rows) == 2 * SPEC.views_per_identity and rows[0].keypoints.shape == (68, 2)


def test_csv_holds_the_rendered_landmarks_y_first(written):
    frame = pd.read_csv(written / "portrait-landmarks-train.csv", sep=":")
    views = identity_views(sample_identity(SPEC.seed, 0, SPEC.background), SPEC)
    for (ys, xs), view in zip(zip(frame["landmarks_y"][:3], frame["landmarks_x"][:3]), views):
        ys, xs = np.array(json.loads(ys)), np.array(json.loads(xs))
        ok = visible(view.landmarks)
        np.testing.assert_array_equal(xs[ok], np.rint(view.landmarks[ok, 0]))
        np.testing.assert_array_equal(ys[ok], np.rint(view.landmarks[ok, 1]))
        assert (xs[~ok] == MISSING).all() and (ys[~ok] == MISSING).all()


def test_identities_are_disjoint_and_pairs_stay_within_one(written):
    layout = get_layout("portrait")
    ids = {}
    for split in ("train", "test"):
        files = find_split(written, layout, split)
        ids[split] = {identity_of(n, layout) for n in files.image_files}
        pairs, issues = read_pairs(files.pairs_csv, layout)
        assert not issues
        n = SPEC.views_per_identity
        assert len(pairs) == len(ids[split]) * n * (n - 1)
        for pair in pairs:
            assert identity_of(pair.source, layout) == identity_of(pair.target, layout)
            assert pair.source != pair.target and pair.source in files.image_files
    assert len(ids["train"]) == 3 and len(ids["test"]) == 2 and not ids["train"] & ids["test"]


def test_far_jaw_is_hidden_under_strong_yaw_only():
    size = (64, 64)
    ident = sample_identity(0, 1, "plain")
    b = base_pose(size)
    front = render_view(ident, Expression(), b, size, 1)
    assert visible(front.landmarks).all()
    turned = render_view(ident, Expression(), HeadPose(b.cx, b.cy, b.scale, 0.0, 30.0), size, 1)
    vis = visible(turned.landmarks)
    # yaw > 0 turns the face towards the image right: its right half (jaw 9-16) faces away
    assert not vis[13:17].any() and vis[0:9].all() and vis[17:].all()
    mirrored = render_view(ident, Expression(), HeadPose(b.cx, b.cy, b.scale, 0.0, -30.0), size, 1)
    assert not visible(mirrored.landmarks)[0:4].any() and visible(mirrored.landmarks)[8:17].all()


def test_landmarks_sit_on_the_drawn_features():
    size = (128, 128)
    ident = sample_identity(0, 2, "plain")
    app = ident.appearance
    view = render_view(ident, Expression(mouth_open=0.8), base_pose(size), size, 4)
    img = view.image.astype(float) / 255.0
    lm = view.landmarks

    def at(p):
        x, y = np.rint(p).astype(int)
        return img[y, x]

    skin = np.asarray(app.skin)
    for corners in ((36, 39), (42, 45)):  # iris centre between the eye corners: dark, not skin
        pupil = at(lm[list(corners)].mean(0) + [0, -0.4])
        assert pupil.mean() < 0.5 * skin.mean()
    mouth = at((lm[62] + lm[66]) / 2)  # inside the open mouth: dark
    assert mouth.mean() < 0.35
    lip = at((lm[51] + lm[62]) / 2)  # upper lip between its outer and inner edge: redder than skin
    assert lip[0] - lip[1] > skin[0] - skin[1]
    chin = np.rint(lm[8]).astype(int)  # the chin point is on the face outline: skin above, none below
    assert np.abs(img[chin[1] - 3, chin[0]] - img[chin[1] + 4, chin[0]]).sum() > 0.05


def test_synthesize_cli_writes_the_portrait_dataset(tmp_path, capsys):
    from pipelines.synthesize import main

    out = tmp_path / "cli"
    rc = main(["--dataset", "synthetic_portrait", "--out", str(out), "--no-progress",
               "--set", "synthesize.synthetic_portrait.train_identities=1",
               "--set", "synthesize.synthetic_portrait.test_identities=1",
               "--set", "synthesize.synthetic_portrait.views_per_identity=2",
               "--set", "synthesize.synthetic_portrait.supersample=1"])
    # params.yaml's expression_twins: 1 gives each training view a twin.
    assert rc == 0 and "6 portraits (4 train / 2 test" in capsys.readouterr().out
    assert (out / "portrait-landmarks-test.csv").is_file() and len(list((out / "train").glob("*.jpg"))) == 4


def test_bad_generator_is_refused(tmp_path):
    with pytest.raises(ValueError, match="portrait"):
        write_dataset(SynthesizeSpec(generator="figure"), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_expression_twins_keep_the_head_pose_change_the_face_and_leave_the_rest_as_it_was(written, tmp_path):
    spec = SynthesizeSpec(**{**SPEC.__dict__, "expression_twins": 2})
    root = write_dataset(spec, tmp_path / "twins").root
    before, after = _files(written), _files(root)
    # Every file of the dataset without twins is unchanged but the training CSVs, which grow.
    changed = sorted(k for k in before if before[k] != after.get(k))
    assert changed == ["portrait-landmarks-train.csv", "portrait-pairs-train.csv"]
    for name in changed:  # the same lines in the same order, the twins' lines among them
        old, new = before[name].decode().splitlines(), iter(after[name].decode().splitlines())
        assert all(line in new for line in old) and len(after[name]) > len(before[name])
    extra = sorted(set(after) - set(before))
    assert all(k.startswith(("train/", "groundtruth/train/")) for k in extra)
    assert len(list((root / "train").glob("*.jpg"))) + len(list((root / "test").glob("*.jpg"))) == total_images(spec)
    layout = get_layout("portrait")
    pairs, issues = read_pairs(find_split(root, layout, "train").pairs_csv, layout)
    n, k = SPEC.views_per_identity, spec.expression_twins
    assert not issues and len(pairs) == SPEC.train_identities * (n * (n - 1) + 2 * n * k)
    identity = sample_identity(SPEC.seed, 0, SPEC.background)
    views = identity_views(identity, spec)
    twins = portrait_dataset.expression_twins(identity, views, spec)
    assert len(twins) == n * k
    for i, twin in enumerate(twins):
        view = views[i // k]
        assert twin.pose == view.pose
        moved = [
            f
            for f in portrait_dataset.EXPRESSION_FEATURES
            if getattr(twin.expression, f) != getattr(view.expression, f)
        ]
        assert len(moved) == 1  # one edit at a time
        assert (
            abs(getattr(twin.expression, moved[0]) - getattr(view.expression, moved[0]))
            >= portrait_dataset.TWIN_MIN_CHANGE
        )
        twin_name, view_name = f"portrait-id00000_{n + i:02d}.jpg", f"portrait-id00000_{i // k:02d}.jpg"
        assert (view_name, twin_name) in {(p.source, p.target) for p in pairs}
        assert (twin_name, view_name) in {(p.source, p.target) for p in pairs}
    with pytest.raises(ValueError, match="expression_twins is a portrait generator option"):
        SynthesizeSpec(generator="figure", expression_twins=1)


def test_twin_expressions_change_every_feature_and_close_open_eyes():
    rng = np.random.default_rng(0)
    moved: dict[str, int] = {}
    closed = 0
    for _ in range(400):
        face = portrait_dataset.sample_expression(rng)
        twin = portrait_dataset.twin_expression(rng, face)
        (name,) = [f for f in portrait_dataset.EXPRESSION_FEATURES if getattr(twin, f) != getattr(face, f)]
        moved[name] = moved.get(name, 0) + 1
        closed += name == "eyes_closed" and face.eyes_closed < 0.5 <= twin.eyes_closed
    assert set(moved) == set(portrait_dataset.EXPRESSION_FEATURES)
    assert min(moved.values()) > 60  # about a quarter each
    assert closed > 20  # the eyes_closed edit's direction is among them
    # a feature drawn near its old value again and again goes to the far end of its range
    never = type(
        "Never", (), {"integers": lambda s, n: 2, "random": lambda s: 0.5, "uniform": lambda s, a, b: 0.1}
    )()
    assert portrait_dataset.twin_expression(never, Expression(eyes_closed=0.1)).eyes_closed == -1.0
