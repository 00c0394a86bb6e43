"""pipelines.infer: clear errors for bad inputs, the pose-extra message, single and batch runs."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from datasets.pose.keypoints import NUM_JOINTS
from model.config import ModelConfig
from model.export import PackedGenerator
from model.generator import build_generator
from pipelines import infer
from pipelines.apps import pose_extract, pose_transfer
from tests.pose_marks import needs_pose_extra

SIZE = (32, 24)
TINY = dict(base_channels=4, max_channels=8, attn_dim=8, flow_channels=4, combine_channels=4,
            encoder_blocks=0, bottleneck_blocks=1, decoder_blocks=0, flow_depth=8)


def _kp(n: int = NUM_JOINTS, h: int = 128, w: int = 88) -> list[list[float]]:
    rng = np.random.default_rng(n)
    return np.stack([rng.uniform(5, w - 5, n), rng.uniform(5, h - 5, n)], 1).round(1).tolist()


def _write_image(path: Path, h: int = 64, w: int = 48) -> Path:
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))
    return path


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    rc = infer.main(list(argv))
    return rc, capsys.readouterr().err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mlflow.pytorch

    torch.manual_seed(0)
    cfg = ModelConfig(**TINY)
    path = tmp_path_factory.mktemp("model") / "generator"
    packed = PackedGenerator(build_generator(cfg), cfg.pose_channels, SIZE, heatmap_sigma=2.0)
    mlflow.pytorch.save_model(packed, str(path), serialization_format="pickle", pip_requirements=["torch"])
    return path


def test_missing_source_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pose = tmp_path / "pose.json"
    pose.write_text(json.dumps(_kp()))
    rc, err = _run(capsys, "--source", str(tmp_path / "nope.jpg"), "--target-pose", str(pose), "--out", "o.png")
    assert rc == 2 and "nope.jpg: image file not found" in err


def test_missing_pose_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = _write_image(tmp_path / "a.png")
    rc, err = _run(capsys, "--source", str(src), "--target-pose", str(tmp_path / "gone.json"), "--out", "o.png")
    assert rc == 2 and "gone.json: pose file not found" in err


def test_unreadable_image(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    pose = tmp_path / "pose.json"
    pose.write_text(json.dumps(_kp()))
    rc, err = _run(capsys, "--source", str(bad), "--target-pose", str(pose), "--out", "o.png")
    assert rc == 2 and "not a readable image" in err


@pytest.mark.parametrize("n", [17, 25])
def test_keypoint_json_with_wrong_count(tmp_path: Path, capsys: pytest.CaptureFixture, n: int) -> None:
    src = _write_image(tmp_path / "a.png")
    pose = tmp_path / "pose.json"
    pose.write_text(json.dumps({"keypoints": _kp(n), "size": [128, 88]}))
    rc, err = _run(capsys, "--source", str(src), "--source-pose", str(pose), "--target-pose", str(pose), "--out", "o.png")
    assert rc == 2 and f"expected 18 keypoints (OpenPose-18 order), found {n}" in err


def test_annotation_row_with_wrong_count(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ann = tmp_path / "ann.csv"
    ann.write_text("name:keypoints_y:keypoints_x\nx.jpg:[1, 2, 3]:[4, 5, 6]\n")
    src = _write_image(tmp_path / "a.png")
    rc, err = _run(capsys, "--source", str(src), "--source-pose", f"{ann}#x.jpg", "--target-pose", f"{ann}#x.jpg",
                   "--out", "o.png")
    assert rc == 2 and "found 3" in err


def test_missing_pose_extra_names_the_extra(tmp_path: Path, capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def absent():
        raise pose_extract.PoseExtraMissing(f"keypoints from a photo need the pose extra (mediapipe): {pose_extract.INSTALL_HINT}")

    monkeypatch.setattr(pose_extract, "_import_mediapipe", absent)
    src = _write_image(tmp_path / "a.png")
    pose = tmp_path / "pose.json"
    pose.write_text(json.dumps(_kp()))
    rc, err = _run(capsys, "--source", str(src), "--target-pose", str(pose), "--out", "o.png")
    assert rc == 2 and "pose extra" in err and "make setup-pose" in err


@needs_pose_extra
def test_image_with_no_person(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = _write_image(tmp_path / "empty.png", 256, 256)
    pose = tmp_path / "pose.json"
    pose.write_text(json.dumps(_kp()))
    rc, err = _run(capsys, "--source", str(src), "--target-pose", str(pose), "--out", "o.png")
    assert rc == 2 and "empty.png: no person found" in err


def test_mediapipe_landmarks_map_onto_openpose18() -> None:
    lm = np.zeros((33, 3))
    lm[:, 2] = 1.0
    lm[11, :2], lm[12, :2] = (0.6, 0.3), (0.4, 0.3)  # MediaPipe left/right shoulder (person's own sides)
    lm[0, :2] = (0.5, 0.1)
    lm[27, 2] = 0.1  # left ankle barely visible
    kp = pose_extract.mediapipe_to_openpose(lm, (100, 200))
    assert kp[5].tolist() == pytest.approx([120, 30]) and kp[2].tolist() == pytest.approx([80, 30])  # Lsho, Rsho
    assert kp[1].tolist() == pytest.approx([100, 30])  # neck = mid-shoulders
    assert kp[0].tolist() == pytest.approx([100, 10])
    assert kp[13].tolist() == [-1, -1]  # Lank below the visibility threshold


def test_fit_crops_to_the_model_aspect_and_moves_keypoints_with_it() -> None:
    fit = pose_transfer.Fit.between((100, 200), (50, 50))  # too wide: crop 50 px each side
    kp = fit.keypoints(np.array([[100.0, 50.0], [10.0, 50.0], [-1, -1]]), (50, 50))
    assert kp[0].tolist() == pytest.approx([24.75, 24.75])  # centre stays centre (pixel-centre convention)
    assert kp[1].tolist() == [-1, -1] and kp[2].tolist() == [-1, -1]  # cropped away / missing
    assert fit.image(np.zeros((100, 200, 3), np.uint8), (50, 50)).shape == (50, 50, 3)


def test_single_and_batch_runs_with_given_keypoints(tmp_path: Path, capsys: pytest.CaptureFixture, model_dir: Path) -> None:
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    for name in ("p1.jpg", "p2.jpg"):
        cv2.imwrite(str(img_dir / name), rng.integers(0, 255, (128, 88, 3), dtype=np.uint8))
    rows = ["name:keypoints_y:keypoints_x"]
    for name in ("p1.jpg", "p2.jpg"):
        kp = np.array(_kp(h=128, w=88))
        rows.append(f"{name}:{json.dumps(kp[:, 1].astype(int).tolist())}:{json.dumps(kp[:, 0].astype(int).tolist())}")
    ann = tmp_path / "ann.csv"
    ann.write_text("\n".join(rows) + "\n")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("from,to\np1.jpg,p2.jpg\np2.jpg,p1.jpg\n")

    out = tmp_path / "out.png"
    rc = infer.main(["--model", str(model_dir), "--source", str(img_dir / "p1.jpg"), "--source-pose", f"{ann}#p1.jpg",
                     "--target-pose", f"{ann}#p2.jpg", "--pose-frame", "128", "88", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert cv2.imread(str(out)).shape == (*SIZE, 3)

    rc = infer.main(["--model", str(model_dir), "--pairs", str(pairs), "--images", str(img_dir),
                     "--annotations", str(ann), "--out", str(tmp_path / "batch")])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "batch").iterdir()) == ["p1_2_p2.png", "p2_2_p1.png"]


@needs_pose_extra
def test_astronaut_photo_with_extracted_keypoints(tmp_path: Path, model_dir: Path) -> None:
    from skimage import data

    pt = pose_transfer.PoseTransfer.load(str(model_dir))
    image, src, tgt = pt.prepare(data.astronaut(), np.array(_kp()), (128, 88))
    assert image.shape == (*SIZE, 3)
    assert ((src != -1).all(axis=1)).sum() >= 6  # head and shoulders at least
    assert pt.generate(image, src, tgt).shape == (*SIZE, 3)
