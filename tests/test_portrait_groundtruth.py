"""The portrait renderer's ground truth: same pixels, part map of what is drawn, head points, true flow."""
from __future__ import annotations

import json

import cv2

import numpy as np
import pytest

from datasets.faces.edits import Expression
from datasets.pose.landmarks import visible
from datasets.specs import SynthesizeSpec
from datasets.synthetic import groundtruth, portrait_true_edits
from datasets.synthetic.portrait_dataset import identity_views, render_view, sample_identity, true_edits, write_dataset
from datasets.synthetic.portrait_geometry import HeadPose
from datasets.synthetic.portrait_groundtruth import PORTRAIT_PARTS, PORTRAIT_REGIONS, part_id
from datasets.synthetic.portrait_true_edits import TRUE_EDITS

SIZE = (64, 64)
SPEC = SynthesizeSpec(generator="portrait", seed=5, height=64, width=64, train_identities=1, test_identities=1,
                      views_per_identity=2, file_prefix="portrait", supersample=2, max_yaw_deg=20.0)


def _identity(contrast: float = 0.0, **want):
    """The first identity (seed 0) whose appearance has the wanted attributes (and hair and skin
    colours at least ``contrast`` apart, summed over RGB)."""
    for n in range(200):
        ident = sample_identity(0, n, "gradient")
        app = ident.appearance
        apart = np.abs(np.subtract(app.hair, app.skin)).sum() >= contrast
        if apart and all(getattr(app, k) == v for k, v in want.items()):
            return ident
    raise AssertionError(f"no identity with {want}")


def _pose(yaw: float = 0.0, roll: float = 0.0) -> HeadPose:
    return HeadPose(31.5, 28.0, 64 / 4.3, roll_deg=roll, yaw_deg=yaw)


@pytest.mark.parametrize("want", [{"glasses": "round"}, {"earrings": "hoop"}, {"hair_style": "long"}])
def test_recording_leaves_every_pixel_unchanged(want):
    ident = _identity(**want)
    expr = Expression(mouth_open=0.6, smile=0.4)
    plain = render_view(ident, expr, _pose(12.0, 5.0), SIZE, 2)
    recorded = render_view(ident, expr, _pose(12.0, 5.0), SIZE, 2, with_truth=True)
    assert np.array_equal(plain.image, recorded.image)
    assert np.array_equal(plain.landmarks, recorded.landmarks)
    assert plain.truth is None and recorded.truth is not None


def _parts(view) -> set[str]:
    part = view.truth.part
    return {PORTRAIT_PARTS[p] for p in np.unique(part) if p != groundtruth.BACKGROUND}


def test_part_map_holds_what_the_renderer_draws():
    expr = Expression(mouth_open=0.8)
    glasses = render_view(_identity(glasses="square"), expr, _pose(10.0), SIZE, 2, with_truth=True)
    bare = render_view(_identity(glasses="none", earrings="none"), expr, _pose(10.0), SIZE, 2, with_truth=True)
    hoop = render_view(_identity(earrings="hoop", glasses="none"), expr, _pose(-15.0), SIZE, 2, with_truth=True)
    assert {"skin", "hair", "eyes", "brows", "lips", "mouth", "nose", "neck"} <= _parts(bare)
    assert "glasses" in _parts(glasses) and "glasses" not in _parts(bare)
    assert "earrings" in _parts(hoop) and "earrings" not in _parts(bare)
    # The appearance regions follow the parts (the nose is skin, hanging hair is hair).
    truth = glasses.truth
    nose = truth.part == part_id("nose")
    assert nose.any() and (truth.garment[nose] == PORTRAIT_REGIONS.index("skin")).all()
    assert (truth.garment[truth.part == groundtruth.BACKGROUND] == 0).all()


def test_part_map_matches_the_pixels():
    """Eye whites are bright, the mouth interior dark, the hair the identity's hair colour."""
    ident = _identity(contrast=1.0, glasses="none", hair_style="short")
    view = render_view(ident, Expression(mouth_open=1.0), _pose(), SIZE, 2, with_truth=True)
    img, part = view.image.astype(float) / 255, view.truth.part
    assert img[part == part_id("mouth")].mean() < img[part == part_id("skin")].mean()
    hair = img[part == part_id("hair")].mean(0)
    skin = img[part == part_id("skin")].mean(0)
    assert np.abs(hair - np.asarray(ident.appearance.hair)).sum() < np.abs(skin - np.asarray(ident.appearance.hair)).sum()


def test_head_points_exist_on_the_shell_only():
    view = render_view(_identity(glasses="round"), Expression(), _pose(), SIZE, 2, with_truth=True)
    has_point = np.isfinite(view.truth.surface).all(-1)
    shell = np.isin(view.truth.part, [part_id(p) for p in ("skin", "hair", "eyes", "brows", "lips", "mouth")])
    assert has_point.any() and not (has_point & ~shell).any()
    assert view.truth.px_per_unit == pytest.approx(64 / 4.3)


def test_true_flow_between_two_views_warps_the_source_onto_the_target():
    """Moved and rolled (the light stays, so colours stay): the true flow rebuilds the target."""
    ident = _identity(glasses="none", hair_style="short")
    src = render_view(ident, Expression(), HeadPose(27.0, 28.0, 64 / 4.3, roll_deg=-6.0), SIZE, 2, with_truth=True)
    tgt = render_view(ident, Expression(), HeadPose(35.0, 30.0, 64 / 4.3, roll_deg=8.0), SIZE, 2, with_truth=True)
    flow, mask = groundtruth.true_flow(src.truth, tgt.truth)
    assert mask.sum() > 500  # most of the face is seen in both
    tgt_img, src_img = tgt.image.astype(float), src.image.astype(float)
    err_true = np.abs(groundtruth.warp_nearest(src_img, flow) - tgt_img).mean(-1)[mask].mean()
    err_identity = np.abs(src_img - tgt_img).mean(-1)[mask].mean()
    assert err_true < 0.3 * err_identity


def test_true_flow_under_yaw_takes_landmarks_to_their_source_landmarks():
    ident = _identity(glasses="none")
    src = render_view(ident, Expression(), _pose(-12.0), SIZE, 2, with_truth=True)
    tgt = render_view(ident, Expression(), _pose(18.0, 5.0), SIZE, 2, with_truth=True)
    flow, mask = groundtruth.true_flow(src.truth, tgt.truth)
    checked = 0
    for i in range(36, 68):  # eyes and lips: painted on the head shell
        x, y = np.rint(tgt.landmarks[i]).astype(int)
        if mask[y, x]:
            moved = tgt.landmarks[i] + flow[y, x]
            assert np.abs(moved - src.landmarks[i]).max() < 1.5
            checked += 1
    assert checked >= 10


def test_an_opened_mouth_keeps_the_chin_points():
    """Head points below the jaw top are measured on the closed jaw, so the chin matches itself."""
    ident = _identity(glasses="none")
    closed = render_view(ident, Expression(), _pose(), SIZE, 2, with_truth=True)
    opened = render_view(ident, Expression(mouth_open=1.0), _pose(), SIZE, 2, with_truth=True)
    flow, mask = groundtruth.true_flow(closed.truth, opened.truth)
    chin = mask & (opened.truth.part == part_id("skin")) & (np.arange(64)[:, None] > 44)
    assert chin.sum() > 20
    assert np.median(flow[chin][:, 1]) < -1.0  # the opened chin's skin came from higher up


def test_writer_stores_the_ground_truth_of_every_image(tmp_path):
    root = write_dataset(SPEC, tmp_path / "p").root
    for split in ("train", "test"):
        images = sorted(p.stem for p in (root / split).glob("*.jpg"))
        files = sorted(p.stem for p in (root / groundtruth.FOLDER / split).glob("*.npz") if ".edits" not in p.name)
        assert images == files
    ident = sample_identity(SPEC.seed, 1, SPEC.background)
    views = identity_views(ident, SPEC, with_truth=True)
    stored = groundtruth.decode(groundtruth.path_for(root, "test", "portrait-id00001_01.jpg").read_bytes())
    assert stored.shape == SIZE
    assert np.array_equal(stored.part, views[1].truth.part)


def _edits_of(ident, expression=Expression(), pose=None):
    view = render_view(ident, expression, pose or _pose(6.0, 3.0), SIZE, 2)
    return view, true_edits(ident, view, SIZE, 2)


def test_true_edits_show_the_requested_landmarks():
    """Re-rendered with the edit as a parameter, the face's own landmarks are the requested ones."""
    view, edits = _edits_of(_identity(glasses="none"), Expression(smile=0.3), _pose(-14.0, 4.0))
    assert edits.names == tuple(n for n, *_ in TRUE_EDITS)
    for i, name in enumerate(edits.names):
        ok = visible(edits.requested[i]) & visible(edits.rendered[i])
        assert ok.sum() > 50, name
        tolerance = 1e-3 if name in ("rotate", "shift") else 0.3  # rigid moves are exact
        assert np.abs(edits.requested[i] - edits.rendered[i])[ok].max() < tolerance, name
        assert not np.array_equal(edits.images[i], view.image), name


def test_expression_edits_change_only_their_feature():
    view, edits = _edits_of(_identity(glasses="none"))
    truth = render_view(_identity(glasses="none"), Expression(), _pose(6.0, 3.0), SIZE, 2, with_truth=True).truth
    eyes = np.isin(truth.part, [part_id("eyes"), part_id("brows")])
    near_eyes = cv2.dilate(eyes.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    changed = np.abs(edits.images[edits.index("eyes_closed")].astype(int) - view.image).max(-1) > 12
    assert changed.any() and not (changed & ~near_eyes).any()
    mouth = edits.images[edits.index("mouth_open")]
    assert np.abs(mouth.astype(int) - view.image).max(-1)[:32].max() <= 12  # the upper face stays


def test_true_edits_encode_decode():
    _, edits = _edits_of(_identity())
    data = portrait_true_edits.encode(edits)
    back = portrait_true_edits.decode(data)
    assert back.names == edits.names and np.array_equal(back.images, edits.images)
    assert np.array_equal(back.requested, edits.requested) and portrait_true_edits.encode(back) == data
    with pytest.raises(ValueError):
        portrait_true_edits.decode(b"not a zip")


def test_true_edits_travel_into_the_test_shards_only(tmp_path):
    from datasets.shards.build import preprocess
    from datasets.shards.tar import iter_samples, read_shard
    from datasets.specs import DatasetSpec, PreprocessConfig

    root = write_dataset(SPEC, tmp_path / "raw").root
    assert sorted(p.name for p in (root / "groundtruth" / "test").glob("*.edits.npz")) == [
        "portrait-id00001_00.edits.npz", "portrait-id00001_01.edits.npz"]
    assert not list((root / "groundtruth" / "train").glob("*.edits.npz"))
    ds = DatasetSpec(layout="portrait", task="portrait", root=str(root), image_size=SIZE, source_size=SIZE,
                     shards=str(tmp_path / "shards"), pose_sigma=1.0)
    # shard_size 1: the two pairs (00->01, 01->00) land in two shards, written by separate jobs
    manifest = preprocess("p", ds, PreprocessConfig(shard_size=1, face_size=16), tmp_path / "shards",
                          show_progress=False)
    assert manifest["groundtruth"]["test_sample_views"] == 4  # 2 pairs x 2 views
    assert manifest["true_edits"]["test_sample_views"] == 2  # each view's edits once
    members = {split: set() for split in ("train", "test")}
    edits_of = []
    for shard in manifest["shards"]:
        for _, files in iter_samples(read_shard(str(tmp_path / "shards"), shard)):
            members[shard["split"]] |= set(files)
            names = json.loads(bytes(files["meta.json"]))["names"]
            edits_of += [names[int(m[1])] for m in files if m.endswith(".edits.npz")]
    assert sorted(edits_of) == ["portrait-id00001_00.jpg", "portrait-id00001_01.jpg"]
    assert {"v0.gt.npz", "v1.gt.npz", "v0.edits.npz", "v1.edits.npz"} <= members["test"]
    assert not any(m.endswith((".gt.npz", ".edits.npz")) for m in members["train"])


def test_written_true_edits_went_through_the_views_jpeg_so_only_the_edit_differs(tmp_path):
    # Against the written (JPEG) view, a lossless edit would differ by compression noise all over the
    # face; encoded as the view was, the blocks the edit leaves alone come back equal, bit for bit.
    root = write_dataset(SPEC, tmp_path / "raw").root
    name = "portrait-id00001_00.jpg"
    view = cv2.cvtColor(cv2.imread(str(root / "test" / name)), cv2.COLOR_BGR2RGB)
    edits = portrait_true_edits.decode(portrait_true_edits.path_for(root, "test", name).read_bytes())
    ident = sample_identity(SPEC.seed, 1, SPEC.background)
    lossless = true_edits(ident, identity_views(ident, SPEC)[0], SIZE, SPEC.supersample)
    for i, edit in enumerate(edits.names):
        if edit in ("rotate", "shift"):
            continue
        stored = edits.images[i].astype(int)
        blocks_equal = [np.array_equal(stored[y:y + 8, x:x + 8], view[y:y + 8, x:x + 8])
                        for y in range(0, 64, 8) for x in range(0, 64, 8)]
        assert 32 <= sum(blocks_equal) < 64, edit  # half the 64 blocks or more untouched by a local edit
        noisy = np.abs(lossless.images[i].astype(int) - view).max(-1) > 0
        assert noisy.mean() > 2 * (np.abs(stored - view).max(-1) > 0).mean(), edit
