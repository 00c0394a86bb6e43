"""The portrait editing CLI and API on a tiny local checkpoint: edits, sweeps, framing, input errors.

The generator is untrained (these tests are about the plumbing: landmark files, the face mesh,
framing, edit ranges, the model formats accepted); whether a trained model follows the edits is
the evaluation's landmark-following error.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from datasets.faces.edits import face_centre
from datasets.pose.landmarks import NUM_PARTS, encode_row, visible
from pipelines import edit_portrait
from pipelines.apps import portrait_editor as PED
from pipelines.config.params import to_dict
from tests.pose_marks import needs_face_mesh

SIZE = (32, 32)


def _checkpoint(root: Path, pose_channels: int = NUM_PARTS) -> Path:
    """A committed training checkpoint holding a tiny EMA generator (what pipelines.train writes)."""
    from model.config import ModelConfig
    from model.generator import build_generator
    from pipelines.training.checkpoint import CheckpointStore

    torch.manual_seed(0)
    cfg = ModelConfig(pose_channels=pose_channels, base_channels=8, max_channels=16, flow_channels=4, attn_dim=8,
                      combine_channels=4, disc_channels=4, disc_blocks=3, face_crop_size=16, face_disc_channels=4,
                      face_disc_blocks=2)
    g = build_generator(cfg)
    config = {"model": to_dict(cfg), "train": {"dataset": "tiny_portrait"}, "preprocess": {"heatmap_sigma": 3.0},
              "datasets": {"tiny_portrait": {"image_size": list(SIZE), "pose_sigma": 1.0}}}
    store = CheckpointStore(root / "checkpoints")
    store.save(1, {"gan": {"ema": g.state_dict()}, "config": config, "step": 1, "images": 4})
    return root / "checkpoints"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    from datasets.specs import SynthesizeSpec
    from datasets.synthetic.portrait_dataset import identity_views, sample_identity

    root = tmp_path_factory.mktemp("edit")
    spec = SynthesizeSpec(generator="portrait", seed=7, height=32, width=32, views_per_identity=2,
                          file_prefix="portrait", supersample=2)
    views = identity_views(sample_identity(7, 0, "gradient"), spec)
    paths = {}
    for i, view in enumerate(views):
        paths[f"face{i}"] = root / f"face{i}.png"
        cv2.imwrite(str(paths[f"face{i}"]), cv2.cvtColor(view.image, cv2.COLOR_RGB2BGR))
    ys, xs = encode_row(views[0].landmarks, SIZE)
    csv = root / "portrait-landmarks-test.csv"
    csv.write_text(f"name:landmarks_y:landmarks_x\nface0.png:{ys}:{xs}\n")
    ys1, xs1 = encode_row(views[1].landmarks, SIZE)
    drive_json = root / "face1.json"
    drive_json.write_text(json.dumps({"landmarks": np.asarray(views[1].landmarks).tolist(), "size": list(SIZE)}))
    return {"root": root, "ckpt": _checkpoint(root), "csv": f"{csv}#face0.png", "drive_json": str(drive_json),
            "views": views, **{k: str(v) for k, v in paths.items()}}


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = edit_portrait.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_edit_writes_the_edited_face_from_a_local_checkpoint(tiny, tmp_path, capsys):
    out = tmp_path / "smile.png"
    code, stdout, err = _run(capsys, "--model", str(tiny["ckpt"]), "--image", tiny["face0"],
                             "--landmarks", tiny["csv"], "--smile", "0.8", "--rotate", "10", "--out", str(out))
    assert code == 0, err
    assert f"wrote {out}" in stdout
    image = cv2.imread(str(out))
    assert image.shape == (*SIZE, 3)


def test_drive_and_sweep(tiny, tmp_path, capsys):
    out = tmp_path / "drive.png"
    code, _, err = _run(capsys, "--model", str(tiny["ckpt"]), "--image", tiny["face0"], "--landmarks", tiny["csv"],
                        "--drive", tiny["face1"], "--drive-landmarks", tiny["drive_json"], "--scale", "2",
                        "--out", str(out))
    assert code == 0, err
    assert cv2.imread(str(out)).shape == (2 * SIZE[0], 2 * SIZE[1], 3)
    sweep = tmp_path / "sweep.png"
    code, _, err = _run(capsys, "--model", str(tiny["ckpt"]), "--image", tiny["face0"], "--landmarks", tiny["csv"],
                        "--sweep", "mouth_open", "--out", str(sweep))
    assert code == 0, err
    sheet = cv2.imread(str(sweep))
    cells = 1 + len(PED.SWEEPS["mouth_open"])  # the source, then one face per strength
    assert sheet.shape[1] == cells * (3 * SIZE[1] + 8)


@pytest.mark.parametrize("option, value, message", [
    ("--smile", "1.5", "--smile 1.5 is outside its valid range [-1, 1]"),
    ("--mouth-open", "-2", "--mouth-open -2 is outside its valid range [-1, 1]"),
    ("--eyes-closed", "nan", "--eyes-closed nan is outside its valid range [-1, 1]"),
    ("--rotate", "60", "--rotate 60° is outside its valid range [-45, 45]°"),
])
def test_edit_strength_out_of_range_is_a_clear_error(tiny, tmp_path, capsys, option, value, message):
    code, _, err = _run(capsys, "--model", str(tiny["ckpt"]), "--image", tiny["face0"], "--landmarks", tiny["csv"],
                        option, value, "--out", str(tmp_path / "x.png"))
    assert code == 2 and message in err, err
    assert not (tmp_path / "x.png").exists()


def test_shift_beyond_half_the_frame_is_refused(tiny, tmp_path, capsys):
    code, _, err = _run(capsys, "--model", str(tiny["ckpt"]), "--image", tiny["face0"], "--landmarks", tiny["csv"],
                        "--shift", "20", "0", "--out", str(tmp_path / "x.png"))
    assert code == 2 and "--shift (dx) 20 px is outside its valid range [-16, 16] px" in err, err


def test_landmark_file_with_the_wrong_count_is_a_clear_error(tiny, tmp_path, capsys):
    short = tmp_path / "five.json"
    short.write_text(json.dumps([[10, 10]] * 5))
    code, _, err = _run(capsys, "--model", str(tiny["ckpt"]), "--image", tiny["face0"], "--landmarks", str(short),
                        "--out", str(tmp_path / "x.png"))
    assert code == 2 and f"{short}: expected 68 landmarks (iBUG order), found 5" in err, err
    pts = tmp_path / "face.pts"
    pts.write_text("version: 1\nn_points: 3\n{\n1 2\n3 4\n5 6\n}\n")
    code, _, err = _run(capsys, "--model", str(tiny["ckpt"]), "--image", tiny["face0"], "--landmarks", str(pts),
                        "--out", str(tmp_path / "x.png"))
    assert code == 2 and "expected 68 landmarks, found 3" in err, err
    code, _, err = _run(capsys, "--model", str(tiny["ckpt"]), "--image", tiny["face0"],
                        "--landmarks", tiny["csv"].replace("face0.png", "nobody.png"), "--out", str(tmp_path / "x.png"))
    assert code == 2 and "no row named 'nobody.png'" in err, err


def test_body_model_and_missing_model_are_refused(tiny, tmp_path, capsys):
    body = _checkpoint(tmp_path / "body", pose_channels=18)
    code, _, err = _run(capsys, "--model", str(body), "--image", tiny["face0"], "--landmarks", tiny["csv"],
                        "--out", str(tmp_path / "x.png"))
    assert code == 2 and "not a portrait model" in err, err
    code, _, err = _run(capsys, "--model", "nowhere/attnflow", "--image", tiny["face0"], "--landmarks", tiny["csv"],
                        "--out", str(tmp_path / "x.png"))
    assert code == 2 and "expected a checkpoint folder, models:/" in err, err


def test_api_edit_moves_the_landmarks_the_generator_is_given(tiny):
    editor = PED.PortraitEditor.load(str(tiny["ckpt"]))
    view = tiny["views"][0]
    face = editor.prepare(view.image, view.landmarks)  # already at the model's size: used as it is
    assert np.array_equal(face.image, view.image)
    target = PED.target_landmarks(face.landmarks, PED.Edits(rotate=20.0), editor.size)
    c = face_centre(face.landmarks)
    a, b = face.landmarks[36] - c, target[36] - c
    angle = np.degrees(np.arctan2(-b[1], b[0]) - np.arctan2(-a[1], a[0]))  # screen y points down
    assert abs(angle - 20.0) < 0.5
    out = editor.edit(face, PED.Edits(mouth_open=0.5))
    assert out.shape == (*SIZE, 3) and out.dtype == np.uint8


def test_frame_face_moves_image_and_landmarks_together():
    """A photo is framed like the training faces; a marked point lands where its landmark goes."""
    rng = np.random.default_rng(0)
    photo = np.full((300, 240, 3), 30, np.uint8)
    lm = np.full((68, 2), -1.0, np.float32)
    lm[:20] = rng.uniform([80, 90], [160, 170], (20, 2))
    lm[5] = (121.0, 141.0)
    photo[139:144, 119:124] = 255  # a 5x5 mark centred on landmark 5
    out, new = PED.frame_face(photo, lm, (64, 64))
    y, x = np.unravel_index(np.argmax(out.sum(2)), out.shape[:2])
    assert abs(x - new[5, 0]) <= 1.0 and abs(y - new[5, 1]) <= 1.0
    box = new[visible(new)].max(0) - new[visible(new)].min(0)
    assert box.max() == pytest.approx(64 / PED.FACE_SCALE, abs=0.5)


def test_mesh_mapping_averages_the_listed_points():
    from pipelines.apps.face_mesh import IBUG_FROM_MESH, mesh_to_ibug

    mesh = np.zeros((468, 3))
    mesh[:, 0] = (np.arange(468) + 1) / 1000.0  # mesh point k at pixel x = k + 0.5 (normalised edges)
    mesh[:, 1] = 0.5
    lm = mesh_to_ibug(mesh, (100, 1000))
    for i, idx in enumerate(IBUG_FROM_MESH):
        assert lm[i, 0] == pytest.approx(np.mean(idx) + 0.5)
    assert np.allclose(lm[:, 1], 49.5)
    mesh[0, 0] = -0.01  # a point left of the photo is missing, not clamped
    assert (mesh_to_ibug(mesh, (100, 1000))[IBUG_FROM_MESH.index((0,))] == -1).all()  # iBUG 51 is mesh 0
    with pytest.raises(ValueError, match="468"):
        mesh_to_ibug(np.zeros((33, 3)), (10, 10))


needs_mesh = needs_face_mesh


@needs_mesh
def test_auto_landmarks_on_a_real_photo(tiny, tmp_path, capsys):
    from skimage import data

    from pipelines.apps.face_mesh import extract_landmarks

    photo = data.astronaut()
    lm = extract_landmarks(photo)
    assert visible(lm).all()
    # The mapped points sit where the 68-point scheme puts them on this frontal face.
    assert lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0]  # eye corners, image left to right
    assert lm[19, 1] < lm[37, 1] < lm[30, 1] < lm[62, 1] < lm[8, 1]  # brow, eye, nose tip, mouth, chin
    assert lm[0, 0] < lm[48, 0] < lm[54, 0] < lm[16, 0]
    path = tmp_path / "astronaut.png"
    cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    out = tmp_path / "edited.png"
    code, _, err = _run(capsys, "--model", str(tiny["ckpt"]), "--image", str(path), "--smile", "0.5",
                        "--out", str(out))
    assert code == 0, err
    assert cv2.imread(str(out)).shape == (*SIZE, 3)


@needs_mesh
def test_auto_on_a_non_face_image_is_a_clear_error(tiny, tmp_path, capsys):
    blank = tmp_path / "wall.png"
    grad = np.tile(np.linspace(60, 200, 160, dtype=np.uint8)[None, :, None], (120, 1, 3))
    cv2.imwrite(str(blank), grad)
    code, _, err = _run(capsys, "--model", str(tiny["ckpt"]), "--image", str(blank), "--out", str(tmp_path / "x.png"))
    assert code == 2, err
    assert f"{blank}: no face found in the image" in err and "--landmarks FILE" in err
