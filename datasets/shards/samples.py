"""Turn validated images and pairs into shard samples, and shard samples back into arrays.

Encoding (preprocess side): :func:`encode_view` makes the per-image files,
:func:`train_groups` / :func:`test_samples` decide which images form a sample.
Decoding (loader side): :func:`parse_sample` reads the JSON parts and keeps the
JPEG/heatmap bytes for lazy decoding, :func:`decode_image` decodes one JPEG.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from datasets.pose import heatmaps
from datasets.pose.face import crop_face
from datasets.pose.scheme import BODY, PoseScheme
from datasets.raw.layout import PairRow
from datasets.raw.validate import ImageRecord

JPEG_MAGIC = b"\xff\xd8"


class SampleError(ValueError):
    """A shard sample that lacks a file or holds undecodable data (names key and part)."""


def _encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("cv2.imencode failed")
    return buf.tobytes()


def encode_view(
    record: ImageRecord,
    image_size: tuple[int, int],
    sigma: float,
    face_size: int,
    jpeg_quality: int,
    scheme: PoseScheme = BODY,
    decoded: tuple[bytes, np.ndarray] | None = None,
) -> tuple[list[tuple[str, bytes]], bool]:
    """Files of one image (without the ``vN.`` prefix) and whether it has a face.

    ``scheme`` (by the dataset's task) turns the keypoints into the pose maps and the face box:
    joint heatmaps and the head rule for bodies, part maps and the central face box for portraits.
    ``decoded`` is the file's bytes and RGB pixels when the caller has already read and decoded
    it (the shard writer validates and encodes from one decode); else the file is read here.

    A JPEG already at ``image_size`` is stored byte for byte (no second lossy
    encode); anything else is resized with INTER_AREA and encoded at ``jpeg_quality``.
    """
    if decoded is not None:
        raw, rgb = decoded
    else:
        raw = Path(record.path).read_bytes()
        bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:  # validated before, so the file changed underneath us
            raise SampleError(
                f"{record.path}: cannot decode any more (was it modified during preprocessing?)"
            )
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = image_size
    if rgb.shape[:2] != (h, w):
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        jpeg = _encode_jpeg(rgb, jpeg_quality)
    elif raw[:2] == JPEG_MAGIC:
        jpeg = raw
    else:
        jpeg = _encode_jpeg(rgb, jpeg_quality)
    face = scheme.face(record.keypoints, image_size)
    crop = crop_face(rgb, face, face_size)
    kp_json = {
        "name": record.name,
        "keypoints": [[round(float(x), 3), round(float(y), 3)] for x, y in record.keypoints],
        "face_box": list(face.box),
        "face_valid": face.valid,
    }
    pose = heatmaps.encode(scheme.render(record.keypoints, image_size, sigma))
    files = [
        ("jpg", jpeg),
        ("kp.json", json.dumps(kp_json, sort_keys=True, separators=(",", ":")).encode()),
        ("pose.bin", pose),
        ("face.jpg", _encode_jpeg(crop, jpeg_quality)),
    ]
    return files, face.valid


def train_groups(
    images: dict[str, ImageRecord], pairs: list[PairRow]
) -> list[tuple[list[str], list[PairRow]]]:
    """Connected components of the pair graph, plus unpaired images as singletons.

    Deterministic: components are ordered by their first name, names sorted,
    pairs kept in CSV order.
    """
    parent = {name: name for name in images}

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for p in pairs:
        ra, rb = find(p.source), find(p.target)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[str, list[str]] = {}
    for name in sorted(images):
        members.setdefault(find(name), []).append(name)
    by_root: dict[str, list[PairRow]] = {}
    for p in pairs:
        by_root.setdefault(find(p.source), []).append(p)
    return [
        (names, by_root.get(root, [])) for root, names in sorted(members.items(), key=lambda kv: kv[1][0])
    ]


def test_samples(
    images: dict[str, ImageRecord], pairs: list[PairRow]
) -> list[tuple[list[str], list[PairRow]]]:
    """One sample per test pair in CSV order, then each image no pair uses (so it is still written)."""
    out: list[tuple[list[str], list[PairRow]]] = []
    used: set[str] = set()
    for p in pairs:
        names = [p.source] if p.source == p.target else [p.source, p.target]
        used.update(names)
        out.append((names, [p]))
    out.extend(([name], []) for name in sorted(images) if name not in used)
    return out


def meta_json(
    split: str,
    names: list[str],
    pairs: list[PairRow],
    images: dict[str, ImageRecord],
    image_size: tuple[int, int],
) -> bytes:
    index = {n: i for i, n in enumerate(names)}
    meta = {
        "split": split,
        "identity": images[names[0]].identity,
        "names": names,
        "pairs": [[index[p.source], index[p.target]] for p in pairs],
        "pair_lines": [p.line for p in pairs],
        "image_size": list(image_size),
    }
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class View:
    """One image of a parsed sample; pixels are decoded on demand."""

    name: str
    keypoints: np.ndarray  # float32 [K, 2]
    face_box: np.ndarray  # float32 [4]
    face_valid: bool
    jpeg: memoryview
    pose: memoryview
    face_jpeg: memoryview


@dataclass
class Sample:
    key: str
    names: list[str]
    pairs: list[tuple[int, int]]
    pair_lines: list[int]
    views: list[View]


def parse_sample(key: str, files: dict[str, memoryview]) -> Sample:
    """Check a sample's parts and parse its JSON; raises :class:`SampleError` naming the part."""
    try:
        meta = json.loads(bytes(files["meta.json"]))
        names = list(meta["names"])
        pairs = [(int(a), int(b)) for a, b in meta["pairs"]]
    except KeyError as exc:
        raise SampleError(f"sample {key}: missing {exc.args[0]}") from None
    except (ValueError, TypeError) as exc:
        raise SampleError(f"sample {key}: bad meta.json ({exc})") from None
    views = []
    for i in range(len(names)):
        try:
            kp = json.loads(bytes(files[f"v{i}.kp.json"]))
            views.append(
                View(
                    name=kp["name"],
                    keypoints=np.asarray(kp["keypoints"], np.float32).reshape(-1, 2),
                    face_box=np.asarray(kp["face_box"], np.float32).reshape(4),
                    face_valid=bool(kp["face_valid"]),
                    jpeg=files[f"v{i}.jpg"],
                    pose=files[f"v{i}.pose.bin"],
                    face_jpeg=files[f"v{i}.face.jpg"],
                )
            )
        except KeyError as exc:
            raise SampleError(f"sample {key}: view {i} lacks {exc.args[0]}") from None
        except (ValueError, TypeError) as exc:
            raise SampleError(f"sample {key}: view {i} has bad kp.json ({exc})") from None
    if any(not (0 <= a < len(views) and 0 <= b < len(views)) for a, b in pairs):
        raise SampleError(f"sample {key}: a pair refers to a view it does not hold")
    return Sample(key, names, pairs, list(meta.get("pair_lines", [])), views)


def decode_image(data: memoryview | bytes, what: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """JPEG bytes -> uint8 H×W×3 RGB; raises :class:`SampleError` on corrupt data or wrong size."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SampleError(f"{what}: JPEG does not decode")
    if size is not None and bgr.shape[:2] != tuple(size):
        raise SampleError(f"{what}: image is {bgr.shape[0]}x{bgr.shape[1]}, expected {size[0]}x{size[1]}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
