"""``pipelines.prepare --from``: official-release trees → the field's layout → shards → training steps.

The trees are drawn by the synthetic generator in the releases' own shapes (datasets/synthetic/release_trees.py)
with one input per fault prepare must handle; every image must end in the layout or in the
rejects file with the expected reason, the written keypoints must be the release's rows, and the
result must go through preprocess and a few GAN steps.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from datasets.raw.frame import FitPolicy, aspect_error, conform, crop_box
from datasets.raw.release_writer import PrepareError, write_release
from datasets.raw.releases import ReleaseError, flatten_deepfashion, plan_release
from datasets.synthetic.release_trees import FRAME, make_deepfashion_release, make_market_release

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def df_release(tmp_path_factory):
    return make_deepfashion_release(tmp_path_factory.mktemp("df") / "release")


@pytest.fixture(scope="module")
def market_release(tmp_path_factory):
    return make_market_release(tmp_path_factory.mktemp("mk") / "release")


def _params(tmp: Path, name: str, layout: str, raw_root: Path) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    frame = list(FRAME[layout])
    raw["datasets"][name] = {"layout": layout, "root": str(raw_root), "source_size": frame,
                             "image_size": [128, 88] if layout == "deepfashion" else frame,
                             "shards": str(tmp / f"{name}-shards")}
    raw["preprocess"]["shard_size"] = 4
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _prepare(params: Path, name: str, release: Path, out: Path, *extra: str) -> int:
    from pipelines.prepare import main

    try:
        return main(["--params", str(params), "--dataset", name, "--from", str(release), "--out", str(out),
                     "--metrics", str(out.parent / f"{name}-metrics.json"), "--no-progress", *extra])
    except SystemExit as exc:
        return int(exc.code or 0)


def _rejects(out: Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    with open(out / "prepare-rejects.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            rows.setdefault(row["kind"], []).append(row)
    return rows


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_flatten_follows_the_fields_rule():
    assert flatten_deepfashion("img_highres/MEN/Denim/id_00000080/01_1_front.jpg") == \
        "fashionMENDenimid0000008001_1front.jpg"
    assert flatten_deepfashion("img/WOMEN/Blouses_Shirts/id_00000637/03_7_additional.jpg") == \
        "fashionWOMENBlouses_Shirtsid0000063703_7additional.jpg"  # the category keeps its underscore
    with pytest.raises(ValueError, match="expected <tree>/MEN"):
        flatten_deepfashion("img_highres/MEN/id_00000080/01_1_front.jpg")


def test_fit_policies_match_the_fields_treatment():
    assert aspect_error((750, 1101), (256, 176)) == pytest.approx(0.0091, abs=1e-4)  # img_highres: 0.9% off
    assert crop_box((256, 256), (256, 176)) == (40, 0, 216, 256)  # the field's crop of the 256×256 img/
    square = Image.new("RGB", (256, 256), (10, 20, 30))
    square.paste((200, 0, 0), (0, 0, 40, 256))  # columns the crop must remove
    buf = io.BytesIO()
    square.save(buf, format="PNG")
    out = conform(buf.getvalue(), ".png", FitPolicy((256, 176), "crop", 0.5, 95))
    img = np.asarray(Image.open(io.BytesIO(out.data)))
    assert img.shape == (256, 176, 3) and img[:, :4, 0].max() < 60  # no red left
    rejected = conform(buf.getvalue(), ".png", FitPolicy((256, 176), "resize", 0.02, 95))
    assert rejected.data is None and "beyond the policy's tolerance" in rejected.reason


def test_deepfashion_release_prepares_with_every_fault_accounted(df_release, tmp_path):
    params = _params(tmp_path, "df_real", "deepfashion", tmp_path / "raw")
    out = tmp_path / "raw"
    assert _prepare(params, "df_real", df_release.root, out) == 0
    manifest = json.loads((out / "prepare-manifest.json").read_text())
    images = manifest["images"]
    assert images["found"] == df_release.images == sum(images["written"].values()) + images["rejected"]
    rejects = _rejects(out)
    by_source = {r["source"]: r["reason"] for r in rejects["image"]}
    for source, expected in df_release.rejected().items():
        if source.startswith("list:"):
            assert any(r["name"] == source[5:] and r["reason"].startswith(expected) for r in rejects["list"])
        else:
            assert by_source[source].startswith(expected), (source, by_source.get(source))
    assert set(by_source) == {s for s in df_release.rejected() if not s.startswith("list:")}
    assert images["conversions"]["mode CMYK→RGB"] == 1 and images["conversions"]["PNG content→JPEG"] == 1
    for split in ("train", "test"):
        files = sorted(p.name for p in (out / split).iterdir())
        assert files == sorted(df_release.names[split])
        for name in files:
            with Image.open(out / split / name) as im:
                assert im.size == (176, 256) and im.mode == "RGB" and im.format == "JPEG"
        pairs = (out / f"fasion-pairs-{split}.csv").read_text().split()[1:]
        assert pairs == [f"{a},{b}" for a, b in df_release.pairs[split]]
        rows = (out / f"fasion-annotation-{split}.csv").read_text().splitlines()[1:]
        for line in rows:
            name, ys, xs = line.split(":")
            kp = df_release.keypoints[name]
            assert json.loads(ys) == kp[:, 1].tolist() and json.loads(xs) == kp[:, 0].tolist()
        assert len(rows) == len(files)
    # Pairs that used the truncated or square image are rejected with the image's reason.
    assert manifest["pairs"]["test"]["rejected"] == len(rejects["pair"]) > 0
    assert all("was rejected (" in r["reason"] for r in rejects["pair"])
    # A second run over the same release publishes the same bytes (idempotent, no timestamps).
    before = _digest(out)
    assert _prepare(params, "df_real", df_release.root, out) == 0
    assert _digest(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".raw")]  # no staging folder left


def test_market_release_prepares_and_copies_release_jpegs(market_release, tmp_path):
    out = tmp_path / "raw"
    params = _params(tmp_path, "mk_real", "market", out)
    assert _prepare(params, "mk_real", market_release.root, out) == 0
    manifest = json.loads((out / "prepare-manifest.json").read_text())
    assert manifest["images"]["found"] == market_release.images
    by_source = {r["source"]: r["reason"] for r in _rejects(out)["image"]}
    assert {s: r.split(" (")[0].split(":")[0] for s, r in by_source.items()} == market_release.rejected()
    assert manifest["images"]["conversions"] == {"copied": market_release.images - 4, "mode L→RGB": 1}
    query = [n for n in market_release.names["test"] if (market_release.root / "query" / n).exists()]
    assert query and all((out / "test" / n).is_file() for n in query)  # query/ joins the test split
    src = market_release.root / "bounding_box_train" / market_release.names["train"][1]
    assert (out / "train" / src.name).read_bytes() == src.read_bytes()  # byte for byte
    for split in ("train", "test"):
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(market_release.names[split])
    # Without query/, its images are rejected as outside the split folders and its pairs dropped.
    out2 = tmp_path / "raw2"
    assert _prepare(params, "mk_real", market_release.root, out2, "--set", "prepare.mk_real.include_query=false") == 0
    reasons = {r["source"]: r["reason"] for r in _rejects(out2)["image"]}
    assert all("query/ is excluded" in reasons[f"query/{n}"] for n in query)


# DeepFashion at half the model's 256×176 (the tiny model), Market at its own 128×64.
TRAINING_CASES = {"deepfashion": ("df_release", (128, 88)), "market": ("market_release", (128, 64))}


@pytest.mark.parametrize("layout", sorted(TRAINING_CASES))
def test_prepared_release_goes_through_preprocess_and_training(layout, request, tmp_path):
    import torch

    from datasets.shards.loader import train_loader
    from model.config import LossConfig, OptimConfig
    from model.discriminator import build_discriminators
    from model.gan import GanStep
    from model.generator import build_generator
    from pipelines.preprocess import main as preprocess_main
    from tests.model_utils import tiny_config

    fixture, image_size = TRAINING_CASES[layout]
    release = request.getfixturevalue(fixture)
    out, name = tmp_path / "raw", f"{layout}_real"
    params = _params(tmp_path, name, layout, out)
    assert _prepare(params, name, release.root, out) == 0
    shards = tmp_path / f"{name}-shards"
    code = preprocess_main(["--params", str(params), "--dataset", name, "--quiet", "--no-figure",
                            "--metrics", str(tmp_path / "pre.json")])
    assert code in (0, None)
    splits = json.loads((shards / "manifest.json").read_text())["splits"]
    for split in ("train", "test"):  # everything prepare wrote passes preprocess's validation
        assert splits[split]["images_written"] == len(release.names[split])
        assert splits[split]["images_rejected"] == 0 and splits[split]["pairs_rejected"] == 0
    torch.manual_seed(0)
    cfg = tiny_config("full")
    g = build_generator(cfg)
    d, d_face = build_discriminators(cfg)
    step = GanStep(g, d, d_face, cfg, LossConfig(backbone="none"), OptimConfig(flow_warmup_steps=0))
    loader = train_loader(shards, rank=0, world_size=1, batch_size=2, num_workers=0, augment=None)
    losses = []
    for i, batch in enumerate(loader):
        assert batch["source_image"].shape[-2:] == image_size
        losses.append(step.step(batch)["l1"])
        if i == 2:
            break
    assert len(losses) == 3 and all(np.isfinite(losses))


def test_chunking_does_not_change_a_byte(df_release, tmp_path):
    policy = FitPolicy(FRAME["deepfashion"], "resize", 0.02, 95)
    one = write_release(plan_release("deepfashion", df_release.root), tmp_path / "a", policy, chunk_size=1)
    many = write_release(plan_release("deepfashion", df_release.root), tmp_path / "b", policy, chunk_size=256)
    assert one == many and _digest(tmp_path / "a") == _digest(tmp_path / "b")


@pytest.mark.slow  # starts a local Ray (about a minute on two busy cores)
def test_ray_workers_give_byte_identical_layouts(market_release, tmp_path):
    plan = plan_release("market", market_release.root)
    policy = FitPolicy(FRAME["market"], "resize", 0.02, 95)
    serial = write_release(plan, tmp_path / "serial", policy, workers=0, chunk_size=4)
    parallel = write_release(plan_release("market", market_release.root), tmp_path / "ray", policy, workers=2,
                             chunk_size=4)
    assert serial == parallel
    assert _digest(tmp_path / "serial") == _digest(tmp_path / "ray")


def test_missing_parts_and_occupied_outputs_are_clear_errors(df_release, tmp_path):
    with pytest.raises(ReleaseError, match="no image tree; looked for img_highres/, img/"):
        plan_release("deepfashion", tmp_path)
    (tmp_path / "img_highres").mkdir()
    with pytest.raises(ReleaseError, match="train.lst and test.lst .*list_eval_partition.txt"):
        plan_release("deepfashion", tmp_path)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(PrepareError, match="notes.txt"):
        write_release(plan_release("deepfashion", df_release.root), busy, FitPolicy((256, 176), "resize", 0.02, 95))
    assert (busy / "notes.txt").read_text() == "mine"


def test_official_partition_file_splits_query_and_gallery_into_test(df_release, tmp_path):
    import shutil

    rel = tmp_path / "release"
    shutil.copytree(df_release.root, rel)
    lines = ["52712", "image_name item_id evaluation_status"]
    for split in ("train", "test"):
        names = (rel / f"{split}.lst").read_text().split()
        (rel / f"{split}.lst").unlink()
        status = "train" if split == "train" else "gallery"
        for p in sorted((rel / "img_highres").rglob("*.jpg")):
            relpath = "img/" + p.relative_to(rel / "img_highres").as_posix()
            if flatten_deepfashion(relpath) in names:
                lines.append(f"{relpath} {p.parent.name} {status}")
    (rel / "Eval").mkdir()
    (rel / "Eval" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    plan = plan_release("deepfashion", rel)
    assert plan.inputs["partition"] == "Eval/list_eval_partition.txt"
    by_lists = plan_release("deepfashion", df_release.root)
    assert {(im.name, im.split) for im in plan.images} == {(im.name, im.split) for im in by_lists.images}


def test_an_unreadable_image_has_the_same_reason_on_every_run():
    """PIL names the in-memory buffer by its address; the reject reason must not."""
    from datasets.raw.frame import decode

    reasons = {decode(b"definitely not an image")[2] for _ in range(3)}
    assert len(reasons) == 1
    (reason,) = reasons
    assert reason.startswith("unreadable image: UnidentifiedImageError") and "0x" not in reason, reason
