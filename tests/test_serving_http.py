"""``mlflow models serve`` answers the column contract over HTTP (slow suite: a server process).

The model folder is saved by pipelines.serving.flavor, the server runs in a fresh process without
the repository on its path (the model ships its code), on loopback only; every wait is bounded.
"""
from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from pipelines.serving.server import Server, free_port
from tests.test_serving_pyfunc import (
    PORTRAIT_SIZE,
    POSE_SIZE,
    astronaut_keypoints,
    decode_png,
    png_b64,
    pose_request,
    save_served,
)

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 240
REQUEST_TIMEOUT_S = 120


def _post(url: str, rows: list[dict]) -> tuple[int, dict]:
    body = json.dumps({"dataframe_records": rows}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@contextlib.contextmanager
def served(model_dir: Path, tmp_path: Path) -> Iterator[str]:
    """``mlflow models serve`` for ``model_dir`` on a free loopback port; yields the invocations URL."""
    with Server(str(model_dir), free_port(), tmp_path, start_timeout_s=START_TIMEOUT_S) as running:
        yield f"{running.base}/invocations"


def _assert_bad(url: str, bad: dict[str, tuple[dict, str]]) -> dict:
    """Each bad row answers 4xx INVALID_PARAMETER_VALUE, its message naming the column, no trace."""
    answers = {}
    for name, (row, message) in bad.items():
        status, body = _post(url, [row])
        answers[name] = (status, body.get("error_code"), body.get("message", "")[-200:])
        assert 400 <= status < 500, (name, status, body)
        assert body.get("error_code") == "INVALID_PARAMETER_VALUE", (name, body)
        assert message in body.get("message", ""), (name, body)
        assert "stack_trace" not in body, (name, body)
    return answers


def test_served_pose_model_answers_good_and_bad_requests(tmp_path: Path) -> None:
    model_dir = tmp_path / "pose-model"
    save_served(model_dir, "pose")
    with served(model_dir, tmp_path) as url:
        good = pose_request()

        status, body = _post(url, [good])
        assert status == 200, body
        first = decode_png(body["predictions"][0]["image"])
        assert first.shape == (*POSE_SIZE, 3)

        bad = {
            "source_image": ({**good, "source_image": "aGVsbG8gd29ybGQ="}, "source_image: not a decodable PNG/JPEG"),
            "target_keypoints": ({**good, "target_keypoints": json.dumps(astronaut_keypoints()[:17])},
                                 "target_keypoints: expected 18 [x, y] pairs, found 17"),
            "missing": ({k: v for k, v in good.items() if k != "target_keypoints"},
                        "missing column target_keypoints (or target_image"),
            "oversize": ({**good, "source_image": png_b64(np.zeros((300, 5000, 3), np.uint8))},
                         "source_image: 5000x300 exceeds the 4096-pixel limit"),
        }
        print(json.dumps(_assert_bad(url, bad), indent=1))

        status, body = _post(url, [good])  # the server is still serving, and answers the same
        assert status == 200, body
        assert np.array_equal(decode_png(body["predictions"][0]["image"]), first)

        # The documented client example (docs/examples/serve_client.py) against the same server.
        photo, pose, out = tmp_path / "astronaut.png", tmp_path / "pose.json", tmp_path / "out.png"
        photo.write_bytes(base64.b64decode(good["source_image"]))
        kp = astronaut_keypoints()
        pose.write_text(json.dumps({"keypoints": kp, "size": [512, 512], "source_keypoints": kp}))
        client = Path(__file__).resolve().parents[1] / "docs/examples/serve_client.py"
        done = subprocess.run([sys.executable, str(client), str(photo), str(pose), str(out), url],
                              capture_output=True, text=True, timeout=REQUEST_TIMEOUT_S)
        assert done.returncode == 0, done.stderr
        assert np.array_equal(np.asarray(Image.open(out)), first)
        pose.write_text(json.dumps({"keypoints": kp[:17], "size": [512, 512], "source_keypoints": kp}))
        done = subprocess.run([sys.executable, str(client), str(photo), str(pose), str(out), url],
                              capture_output=True, text=True, timeout=REQUEST_TIMEOUT_S)
        assert done.returncode == 1 and "HTTP 400: Error: target_keypoints: expected 18" in done.stderr, done.stderr


def test_served_portrait_model_edits_a_face_and_refuses_bad_edits(tmp_path: Path) -> None:
    from datasets.specs import SynthesizeSpec
    from datasets.synthetic.portrait_dataset import identity_views, sample_identity
    from pipelines.serving import contract

    model_dir = tmp_path / "portrait-model"
    save_served(model_dir, "portrait")
    spec = SynthesizeSpec(generator="portrait", seed=7, height=64, width=64, views_per_identity=2,
                          file_prefix="portrait", supersample=2)
    view = identity_views(sample_identity(7, 0, "gradient"), spec)[0]
    face = {"source_image": contract.encode_png(view.image),
            "source_landmarks": contract.points_json(np.asarray(view.landmarks))}
    with served(model_dir, tmp_path) as url:
        status, body = _post(url, [{**face, "smile": 0.8}])
        assert status == 200, body
        smiling = decode_png(body["predictions"][0]["image"])
        assert smiling.shape == (*PORTRAIT_SIZE, 3)
        bad = {
            "smile": ({**face, "smile": 1.5}, "smile 1.5 is outside its valid range [-1, 1]"),
            "source_landmarks": ({**face, "source_landmarks": json.dumps([[1, 1]] * 18), "smile": 0.8},
                                 "source_landmarks: expected 68 [x, y] pairs, found 18"),
            "source_image": ({**face, "source_image": "bm90IGFuIGltYWdl", "smile": 0.8},
                             "source_image: not a decodable PNG/JPEG"),
        }
        print(json.dumps(_assert_bad(url, bad), indent=1))
        status, body = _post(url, [{**face, "smile": 0.8}])
        assert status == 200 and np.array_equal(decode_png(body["predictions"][0]["image"]), smiling), body
