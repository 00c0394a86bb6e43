"""One saved model, two loaders: the PyTorch PackedGenerator and the column pyfunc service.

Tiny untrained generators (the plumbing is under test: the request contract, the flavours, the
errors a client sees); the HTTP path through ``mlflow models serve`` is tests/test_serving_http.py.
"""
from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from datasets.pose.keypoints import NUM_JOINTS
from datasets.pose.landmarks import NUM_LANDMARKS, NUM_PARTS
from model.config import ModelConfig
from model.export import PackedGenerator
from model.generator import build_generator
from pipelines.apps.pose_extract import PoseExtraMissing
from pipelines.bench.serve import ASTRONAUT_KEYPOINTS, astronaut
from pipelines.serving import contract, flavor
from pipelines.serving import pyfunc as service
from pipelines.serving.contract import RequestError, encode_png
from tests.pose_marks import needs_pose_extra

POSE_SIZE = (32, 24)
PORTRAIT_SIZE = (32, 32)
TINY = dict(base_channels=4, max_channels=8, attn_dim=8, flow_channels=4, combine_channels=4,
            encoder_blocks=0, bottleneck_blocks=1, decoder_blocks=0, flow_depth=8)


def tiny_generator(pose_channels: int, size: tuple[int, int], seed: int = 0) -> PackedGenerator:
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**TINY, "pose_channels": pose_channels})
    return PackedGenerator(build_generator(cfg), cfg.pose_channels, size, heatmap_sigma=2.0)


def save_served(path: Path, task: str) -> PackedGenerator:
    """A tiny generator of ``task`` saved with both flavours to ``path``."""
    net = tiny_generator(NUM_JOINTS if task == "pose" else NUM_PARTS, POSE_SIZE if task == "pose" else PORTRAIT_SIZE)
    flavor.save_model(net, str(path), task=task, pip_requirements=["torch"])
    return net


def astronaut_keypoints() -> list[list[float]]:
    """Rough OpenPose-18 points of the astronaut (512×512), as the serve benchmark posts them."""
    return [list(p) for p in ASTRONAUT_KEYPOINTS]


def pose_request() -> dict[str, str]:
    kp = json.dumps(astronaut_keypoints())
    return {"source_image": encode_png(astronaut()), "source_keypoints": kp, "target_keypoints": kp,
            "target_size": "[512, 512]"}


def decode_png(text: str) -> np.ndarray:
    raw = base64.b64decode(text)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(raw)))


def png_b64(image: np.ndarray, mode: str | None = None) -> str:
    buf = io.BytesIO()
    Image.fromarray(image, mode).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def keep_sys_path():
    """mlflow.pyfunc.load_model prepends the model's code folder to sys.path: undo it afterwards."""
    saved = list(sys.path)
    yield
    sys.path[:] = saved


@pytest.fixture(scope="module")
def pose_model(tmp_path_factory, keep_sys_path):
    import mlflow.pyfunc

    path = tmp_path_factory.mktemp("serve") / "pose"
    net = save_served(path, "pose")
    return {"path": path, "net": net, "pyfunc": mlflow.pyfunc.load_model(str(path))}


@pytest.fixture(scope="module")
def portrait_model(tmp_path_factory, keep_sys_path):
    import mlflow.pyfunc

    from datasets.specs import SynthesizeSpec
    from datasets.synthetic.portrait_dataset import identity_views, sample_identity

    path = tmp_path_factory.mktemp("serve") / "portrait"
    save_served(path, "portrait")
    spec = SynthesizeSpec(generator="portrait", seed=7, height=64, width=64, views_per_identity=2,
                          file_prefix="portrait", supersample=2)
    views = identity_views(sample_identity(7, 0, "gradient"), spec)
    return {"path": path, "pyfunc": mlflow.pyfunc.load_model(str(path)), "views": views}


def test_both_flavours_read_the_same_model_data(pose_model):
    mlmodel = yaml.safe_load((pose_model["path"] / "MLmodel").read_text())
    pyf, pt = mlmodel["flavors"]["python_function"], mlmodel["flavors"]["pytorch"]
    assert pyf["loader_module"] == "pipelines.serving.pyfunc" and pyf["config"] == {"task": "pose"}
    assert pyf["data"] == pt["model_data"] and pyf["code"] == pt["code"] == "code"
    shipped = {p.name for p in (pose_model["path"] / "code").iterdir()}
    assert {"pipelines", "datasets", "model"} <= shipped
    inputs = {c["name"]: c["required"] for c in json.loads(mlmodel["signature"]["inputs"])}
    assert inputs == {"source_image": True, "target_keypoints": False, "target_size": False, "source_keypoints": False,
                      "target_image": False, "return_maps": False}


def test_pytorch_flavour_still_loads_the_packed_generator(pose_model):
    import mlflow.pytorch

    net = mlflow.pytorch.load_model(str(pose_model["path"]))
    assert isinstance(net, PackedGenerator) and net.image_size == POSE_SIZE
    x = torch.rand(2, net.in_channels, *POSE_SIZE)
    assert torch.equal(net(x), pose_model["net"](x))


def test_pose_request_returns_a_png_of_the_model_size(pose_model):
    out = pose_model["pyfunc"].predict(pd.DataFrame([pose_request()]))
    assert list(out.columns) == ["image"] and len(out) == 1
    image = decode_png(out["image"][0])
    assert image.shape == (*POSE_SIZE, 3) and image.dtype == np.uint8
    # The service is PoseTransfer on the decoded request: the same pixels as the Python API.
    from pipelines.apps.pose_transfer import PoseTransfer

    kp = np.asarray(astronaut_keypoints(), np.float64)
    direct = PoseTransfer(pose_model["net"]).transfer(astronaut(), kp, (512, 512), source_keypoints=kp)
    assert np.array_equal(image, direct)


def test_several_rows_answer_in_order_and_errors_name_the_row(pose_model):
    # Row 1's target is in the model's own frame (no target_size).
    small = [[x * POSE_SIZE[1] / 512, y * POSE_SIZE[0] / 512] if x >= 0 else None for x, y in astronaut_keypoints()]
    rows = [pose_request(), {**pose_request(), "target_size": None, "target_keypoints": json.dumps(small)}]
    out = pose_model["pyfunc"].predict(pd.DataFrame(rows))
    assert len(out) == 2 and all(decode_png(v).shape == (*POSE_SIZE, 3) for v in out["image"])
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match=r"row 1: target_keypoints: point 3 is not an \[x, y\] pair"):
        pose_model["pyfunc"].predict(pd.DataFrame([pose_request(), {**pose_request(), "target_keypoints": json.dumps(
            astronaut_keypoints()[:3] + [[1, 2, 3]] + astronaut_keypoints()[4:])}]))


@pytest.mark.parametrize("change,field,message", [
    ({"source_image": "aGVsbG8gd29ybGQ="}, "source_image", "source_image: not a decodable PNG/JPEG"),
    ({"source_image": "not base64!"}, "source_image", "source_image: not valid base64"),
    ({"target_keypoints": json.dumps(astronaut_keypoints()[:17])}, "target_keypoints",
     "target_keypoints: expected 18 [x, y] pairs, found 17"),
    ({"target_keypoints": "[[1, 2],"}, "target_keypoints", "target_keypoints: not valid JSON"),
    ({"source_keypoints": json.dumps([[0, 0]] * 68)}, "source_keypoints",
     "source_keypoints: expected 18 [x, y] pairs, found 68"),
    ({"target_size": "[512]"}, "target_size", "target_size: expected [H, W]"),
    ({"target_keypoints": None}, "target_keypoints", "missing column target_keypoints (or target_image"),
    ({"target_image": png_b64(np.zeros((8, 8, 3), np.uint8))}, "target_image",
     "target_image: give target_keypoints or target_image, not both"),
    ({"return_maps": "maybe"}, "return_maps", "Incompatible input types for column return_maps"),  # MLflow's check
    ({"source_image": png_b64(np.zeros((300, 5000, 3), np.uint8))}, "source_image",
     "source_image: 5000x300 exceeds the 4096-pixel limit"),
    ({"target_keypoints": json.dumps([[-1, -1]] * 18)}, "target_keypoints",
     "target_keypoints: target pose: no keypoint lies inside the frame"),
])
def test_bad_pose_requests_are_invalid_parameter_errors_naming_the_column(pose_model, change, field, message):
    from mlflow.exceptions import MlflowException

    row = {**pose_request(), **change}
    row = {k: v for k, v in row.items() if v is not None}  # None: the column is left out
    with pytest.raises(MlflowException) as info:
        pose_model["pyfunc"].predict(pd.DataFrame([row]))
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert info.value.get_http_status_code() == 400
    assert message in info.value.message and field in info.value.message


def test_without_source_keypoints_or_the_pose_extra_the_error_says_so(pose_model, monkeypatch):
    from mlflow.exceptions import MlflowException

    row = {k: v for k, v in pose_request().items() if k != "source_keypoints"}

    def missing(image):
        raise PoseExtraMissing("no mediapipe")

    monkeypatch.setattr(service, "extract_keypoints", missing)
    with pytest.raises(MlflowException, match="source_keypoints: not given, and this server has no pose extra"):
        pose_model["pyfunc"].predict(pd.DataFrame([row]))


@needs_pose_extra
def test_without_source_keypoints_the_pose_extra_finds_them(pose_model):
    row = {k: v for k, v in pose_request().items() if k != "source_keypoints"}
    out = pose_model["pyfunc"].predict(pd.DataFrame([row]))  # MediaPipe finds the astronaut
    assert decode_png(out["image"][0]).shape == (*POSE_SIZE, 3)


def _portrait_request(views, **columns) -> dict:
    view = views[0]
    return {"source_image": encode_png(view.image),
            "source_landmarks": contract.points_json(np.asarray(view.landmarks)), **columns}


def test_portrait_semantic_edit_returns_a_png(portrait_model):
    out = portrait_model["pyfunc"].predict(pd.DataFrame([_portrait_request(portrait_model["views"], smile=0.8)]))
    assert decode_png(out["image"][0]).shape == (*PORTRAIT_SIZE, 3)
    # Target landmarks (another view's, in its 64×64 frame) instead of edits.
    target = contract.points_json(np.asarray(portrait_model["views"][1].landmarks))
    out = portrait_model["pyfunc"].predict(pd.DataFrame([_portrait_request(
        portrait_model["views"], target_landmarks=target, target_size="[64, 64]")]))
    assert decode_png(out["image"][0]).shape == (*PORTRAIT_SIZE, 3)


@pytest.mark.parametrize("columns,message", [
    ({"smile": 1.5}, "smile 1.5 is outside its valid range [-1, 1]"),
    ({"rotate": 60.0}, "rotate 60° is outside its valid range [-45, 45]°"),
    ({"shift_x": 20.0}, "shift_x 20 px is outside its valid range [-16, 16] px"),
    ({"smile": 0.5, "target_landmarks": "[]"}, "target_landmarks: give target_landmarks or edit columns (smile)"),
    ({"source_landmarks": json.dumps([[1, 1]] * 18)}, "source_landmarks: expected 68 [x, y] pairs, found 18"),
])
def test_bad_portrait_requests_name_the_column(portrait_model, columns, message):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as info:
        portrait_model["pyfunc"].predict(pd.DataFrame([_portrait_request(portrait_model["views"], **columns)]))
    assert info.value.error_code == "INVALID_PARAMETER_VALUE" and message in info.value.message


def test_portrait_without_landmarks_or_face_mesh_names_source_landmarks(portrait_model, monkeypatch):
    from mlflow.exceptions import MlflowException

    def missing(image):
        raise PoseExtraMissing("no mediapipe")

    monkeypatch.setattr(service, "extract_landmarks", missing)
    row = {"source_image": encode_png(portrait_model["views"][0].image), "smile": 0.5}
    with pytest.raises(MlflowException, match="source_landmarks: not given, and this server has no pose extra"):
        portrait_model["pyfunc"].predict(pd.DataFrame([row]))


@pytest.mark.parametrize("make,mode", [
    (lambda: np.full((20, 10), 7, np.uint8), "L"),
    (lambda: np.full((20, 10, 4), 7, np.uint8), "RGBA"),
    (lambda: np.full((20, 10), 7 * 256, np.uint16), "I;16"),
])
def test_decode_image_gives_rgb_uint8_for_any_mode(make, mode):
    rgb = contract.decode_image(png_b64(make(), mode))
    assert rgb.shape == (20, 10, 3) and rgb.dtype == np.uint8 and int(rgb.max()) == 7


def test_decode_image_takes_jpeg_and_data_urls_and_refuses_big_ones():
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 12, 3), 128, np.uint8)).save(buf, format="JPEG")
    jpeg = base64.b64encode(buf.getvalue()).decode()
    assert contract.decode_image("data:image/jpeg;base64," + jpeg).shape == (8, 12, 3)
    with pytest.raises(RequestError, match=r"^source_image: \d+ bytes exceeds the 100 bytes limit$"):
        contract.decode_image(jpeg, max_bytes=100)
    assert str(RequestError.missing("target_keypoints")) == "missing column target_keypoints"
    with pytest.raises(RequestError, match=r"^source_image: not a decodable PNG/JPEG$"):  # a GIF
        gif = io.BytesIO()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(gif, format="GIF")
        contract.decode_image(base64.b64encode(gif.getvalue()).decode())


def test_decode_points_marks_null_missing_and_rejects_non_numbers():
    pts = contract.decode_points(json.dumps([[1, 2], None] + [[3.5, 4]] * 16), "target_keypoints", 18)
    assert pts.shape == (18, 2) and pts[1].tolist() == [-1, -1] and pts[2].tolist() == [3.5, 4]
    with pytest.raises(RequestError, match=r"target_keypoints: point 0 is not an \[x, y\] pair"):
        contract.decode_points(json.dumps([[True, 2]] + [[0, 0]] * 17), "target_keypoints", 18)
    with pytest.raises(RequestError, match="target_keypoints: point 0 is not finite"):
        contract.decode_points("[[NaN, 2]" + ", [0, 0]" * 17 + "]", "target_keypoints", 18)
    assert contract.decode_size("[512, 352]") == (512, 352)
    with pytest.raises(RequestError, match=r"target_size: \[0, 5\] must lie in"):
        contract.decode_size("[0, 5]")
    assert NUM_LANDMARKS == contract.POINT_COUNTS["portrait"]


def test_combination_maps_on_request(pose_model):
    """return_maps adds a grey strip, one model-sized cell per scale; the image is the same as without."""
    plain = pose_model["pyfunc"].predict(pd.DataFrame([pose_request()]))
    assert list(plain.columns) == ["image"]
    out = pose_model["pyfunc"].predict(pd.DataFrame([{**pose_request(), "return_maps": True}]))
    assert out["image"][0] == plain["image"][0]
    strip = decode_png(out["combination_maps"][0])
    scales = len(pose_model["net"].generator.cfg.scales) if hasattr(pose_model["net"].generator.cfg, "scales") else None
    assert strip.ndim == 2 and strip.shape[0] == POSE_SIZE[0] and strip.shape[1] % POSE_SIZE[1] == 0
    assert strip.shape[1] // POSE_SIZE[1] >= 1 and (scales is None or strip.shape[1] // POSE_SIZE[1] == scales)
    mixed = pose_model["pyfunc"].predict(pd.DataFrame([pose_request(), {**pose_request(), "return_maps": True}]))
    assert mixed["combination_maps"][0] == "" and mixed["combination_maps"][1] == out["combination_maps"][0]


def test_target_pose_from_a_photo(pose_model, monkeypatch):
    """target_image: the pose extra finds the target pose in a photo (stubbed here: MediaPipe's
    own result on the astronaut is tested with the pose extra above)."""
    from pipelines.serving import pyfunc

    seen = []

    def fake_extract(image):
        seen.append(image.shape)
        return np.asarray(astronaut_keypoints(), np.float64)

    monkeypatch.setattr(pyfunc, "extract_keypoints", fake_extract)
    row = {k: v for k, v in pose_request().items() if k not in ("target_keypoints", "target_size")}
    out = pose_model["pyfunc"].predict(pd.DataFrame([{**row, "target_image": png_b64(astronaut())}]))
    direct = pose_model["pyfunc"].predict(pd.DataFrame([pose_request()]))
    assert seen == [(512, 512, 3)] and out["image"][0] == direct["image"][0]

    def no_extra(image):
        raise pyfunc.PoseExtraMissing("mediapipe is not installed")

    monkeypatch.setattr(pyfunc, "extract_keypoints", no_extra)
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="target_keypoints: not given, and this server has no pose extra"):
        pose_model["pyfunc"].predict(pd.DataFrame([{**row, "target_image": png_b64(astronaut())}]))


def test_served_portrait_edits_are_the_editing_grid_cells(portrait_model):
    """A served edit request on a face at the model's size, with its landmarks, answers the image the
    evaluation's editing grid shows for that edit (same generator, same landmark edit, same maps)."""
    import mlflow.pytorch

    from datasets.specs import SynthesizeSpec
    from datasets.synthetic.portrait_dataset import identity_views, sample_identity
    from pipelines.evaluation.portrait import GRID_EDITS, editing_grid

    net = mlflow.pytorch.load_model(str(portrait_model["path"]))

    def generate(batch: dict) -> torch.Tensor:
        return net(torch.cat([batch["source_image"], batch["source_pose"], batch["target_pose"]], 1))

    h, w = PORTRAIT_SIZE
    spec = SynthesizeSpec(generator="portrait", seed=7, height=h, width=w, views_per_identity=2,
                          file_prefix="portrait", supersample=2)
    views = identity_views(sample_identity(7, 0, "gradient"), spec)
    images = np.stack([v.image for v in views])
    lms = np.stack([np.round(np.asarray(v.landmarks, np.float64), 3) for v in views])  # as the request sends them
    grid = editing_grid(generate, ["a_00.jpg", "a_01.jpg"], images, lms, ["a", "a"], net.heatmap_sigma,
                        rows=1, scale=1)
    for k, (title, edits, true_name) in enumerate(GRID_EDITS):
        cell = grid[2 : 2 + h, (k + 1) * (w + 4) + 2 : (k + 2) * (w + 4) - 2]
        out = portrait_model["pyfunc"].predict(
            pd.DataFrame([_portrait_request(views, **{true_name: getattr(edits, true_name)})]))
        served = decode_png(out["image"][0]).astype(int)
        # one forward pass of six (the grid) against one of one (the request): float sums may round
        # a level apart on a pixel or two
        assert np.abs(served - cell).max() <= 1 and (served != cell).mean() < 0.005, title
