"""Correspondence scores against the renderer's ground truth: EPE, branch choice, appearance."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets.specs import SynthesizeSpec
from datasets.synthetic import fashion, groundtruth
from datasets.synthetic.portrait_groundtruth import PORTRAIT_PARTS, PORTRAIT_REGIONS
from model.config import ModelConfig
from model.generator import build_generator
from pipelines.evaluation import correspondence

SPEC = SynthesizeSpec(generator="figure", seed=2, height=64, width=44, train_identities=1, test_identities=1,
                      views_per_identity=4, crop_probability=0.0)


@pytest.fixture(scope="module")
def pair():
    """Views 0 and 3 (front, full) of one test identity: images uint8 [H,W,3] and ground truth."""
    ident = [i for i in fashion.plan_identities(SPEC) if i.split == "test"][0]
    return [fashion.render_sample(SPEC, ident, k) for k in (0, 3)]


def _stored_flow(pair):
    """The true flow from the ground truth as stored (float16 points), as the scorer computes it."""
    src, tgt = (groundtruth.decode(groundtruth.encode(s.groundtruth)) for s in pair)
    return groundtruth.true_flow(src, tgt)


def _batch(pair, outputs_model: np.ndarray):
    src, tgt = pair
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]  # noqa: E731
    truth = {s.name: groundtruth.encode(s.groundtruth) for s in pair}
    batch = {"source_name": [src.name], "target_name": [tgt.name], "pair_index": torch.tensor([7])}
    target = as_t(tgt.image)
    mean = torch.full_like(target, 128)
    outputs = {"model": as_t(outputs_model), "copy_source": as_t(src.image), "mean_train_image": mean}
    return truth, batch, target, outputs


def test_true_flow_scores_zero_and_identity_does_not(pair) -> None:
    truth, batch, target, outputs = _batch(pair, pair[1].image)  # the model outputs the target itself
    flow, mask = _stored_flow(pair)
    assert mask.sum() > 100
    exact = torch.from_numpy(flow).permute(2, 0, 1)[None]
    fields = {"flow_s4": exact, "flow_s2": exact, "attn_s4": torch.zeros_like(exact)}
    maps = {4: torch.zeros(1, 1, *flow.shape[:2])}  # prefers the flow everywhere, and the flow is exact
    scorer = correspondence.CorrespondenceScorer(truth)
    scorer.add(batch, target, outputs, fields, maps)
    part = correspondence.merge([scorer.part])
    scores = correspondence.summarise(part, lambda v, kept: (float(v.min()), float(v.max())))
    assert scores["model"]["flow_epe"] == pytest.approx(0.0, abs=1e-6)
    assert scores["model"]["flow_epe_s4"] == pytest.approx(0.0, abs=1e-6)
    identity = float(np.linalg.norm(flow[mask], axis=1).mean())
    assert scores["copy_source"]["flow_epe"] == pytest.approx(identity, rel=1e-6) and identity > 2
    assert scores["model"]["attn_epe_s4"] == pytest.approx(identity, rel=1e-6)  # zero flow = identity
    # Wherever the two branches differ the flow is nearer, and the map chose it: all correct.
    assert scores["model"]["branch_choice_s4"] > 0.95
    # The target itself has no colour error; the mean image a large one.
    assert scores["model"]["appearance_de00"] == pytest.approx(0.0, abs=1e-6)
    assert scores["mean_train_image"]["appearance_de00"] > 5
    assert part.index == [7] and "torso" in correspondence.part_table(part)["identity"]
    garments = correspondence.garment_table(part)["model"]
    assert "skin" in garments and all(v == pytest.approx(0.0, abs=1e-6) for v in garments.values())


def test_wrong_branch_choice_and_colour_shift_are_seen(pair) -> None:
    shifted = np.clip(pair[1].image.astype(int) + np.array([60, -40, 0]), 0, 255).astype(np.uint8)
    truth, batch, target, outputs = _batch(pair, shifted)
    flow, _ = _stored_flow(pair)
    exact = torch.from_numpy(flow).permute(2, 0, 1)[None]
    fields = {"flow_s4": exact, "attn_s4": torch.zeros_like(exact)}
    maps = {4: torch.ones(1, 1, *flow.shape[:2])}  # prefers the (worse) attention everywhere
    scorer = correspondence.CorrespondenceScorer(truth)
    scorer.add(batch, target, outputs, fields, maps)
    scores = correspondence.summarise(scorer.part, lambda v, kept: (0.0, 0.0))
    assert scores["model"]["branch_choice_s4"] < 0.05
    assert scores["model"]["appearance_de00"] > 10


def test_model_fields_are_image_size_flows_inside_the_source() -> None:
    cfg = ModelConfig(variant="full", base_channels=8, pose_channels=18)
    g = build_generator(cfg).eval()
    b, h, w = 2, 64, 48
    batch = {"source_image": torch.rand(b, 3, h, w) * 2 - 1, "source_pose": torch.rand(b, 18, h, w),
             "target_pose": torch.rand(b, 18, h, w)}
    with torch.no_grad():
        out = g(batch["source_image"], batch["source_pose"], batch["target_pose"])
        fields, maps = correspondence.model_fields(g, out, batch)
    assert {n for n in fields if n.startswith("flow_s")} == {f"flow_s{s}" for s in out.flows}
    assert {n for n in fields if n.startswith("attn_s")} == {f"attn_s{s}" for s in g.attention.scales
                                                                 if s in cfg.warp_scales}
    for name, f in fields.items():
        assert f.shape == (b, 2, h, w), name
    for name in (n for n in fields if n.startswith("attn")):
        # An expected location is a convex mix of source cell centres: inside the image.
        xs = fields[name][:, 0] + torch.arange(w).view(1, 1, w)
        ys = fields[name][:, 1] + torch.arange(h).view(1, h, 1)
        assert xs.min() > -4 and xs.max() < w + 3 and ys.min() > -4 and ys.max() < h + 3
    assert all(m.shape == (b, 1, h, w) and 0 <= float(m.min()) and float(m.max()) <= 1 for m in maps.values())
    # The encoders' outputs read from the forward itself give the same fields as running them again.
    with torch.no_grad():
        out2, features = correspondence.forward_with_features(g, batch)
        fields2, _ = correspondence.model_fields(g, out2, batch, features)
    assert set(features) == {"textures", "skeleton"} and torch.equal(out2.image, out.image)
    assert all(torch.equal(fields[n], fields2[n]) for n in fields)
    assert not g.reference_encoder._forward_hooks and not g.skeleton_encoder._forward_hooks


def test_real_data_is_reported_as_not_available() -> None:
    assert "no renderer ground truth" in correspondence.unavailable_reason({"format_version": 1})
    assert correspondence.unavailable_reason({"groundtruth": {"test_sample_views": 0}}) is not None
    assert correspondence.unavailable_reason({"groundtruth": {"test_sample_views": 4}}) is None


def _portrait_pair():
    """Two views of one synthetic portrait with glasses: images uint8 [H,W,3] and ground truth."""
    from datasets.faces.edits import Expression
    from datasets.synthetic.portrait_dataset import render_view, sample_identity
    from datasets.synthetic.portrait_geometry import HeadPose

    ident = next(i for i in (sample_identity(0, n, "gradient") for n in range(200)) if i.appearance.glasses != "none")
    poses = (HeadPose(29.0, 28.0, 15.0, roll_deg=-5.0, yaw_deg=-8.0), HeadPose(34.0, 29.0, 15.0, roll_deg=6.0, yaw_deg=12.0))
    return [render_view(ident, Expression(), p, (64, 64), 2, with_truth=True) for p in poses]


def test_portrait_ground_truth_is_scored_with_portrait_names() -> None:
    src, tgt = _portrait_pair()
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]  # noqa: E731
    truth = {"a.jpg": groundtruth.encode(src.truth), "b.jpg": groundtruth.encode(tgt.truth)}
    batch = {"source_name": ["a.jpg"], "target_name": ["b.jpg"], "pair_index": torch.tensor([0])}
    target = as_t(tgt.image)
    outputs = {"model": target, "copy_source": as_t(src.image), "mean_train_image": torch.full_like(target, 128)}
    labels = correspondence.labels_for({"task": "portrait"})
    assert (labels.parts, labels.regions) == (PORTRAIT_PARTS, PORTRAIT_REGIONS)
    assert correspondence.labels_for({"task": "pose"}) == correspondence.FIGURE_LABELS
    scorer = correspondence.CorrespondenceScorer(truth, labels=labels)
    scorer.add(batch, target, outputs, None, None)
    part = correspondence.merge([scorer.part])
    scores = correspondence.summarise(part, lambda v, kept: None)
    for region in ("hair", "glasses", "skin", "lips"):  # glasses: thinner than a pixel, yet scored
        assert scores["model"][f"appearance_de00_{region}"] == pytest.approx(0.0, abs=1e-6)
        assert scores["mean_train_image"][f"appearance_de00_{region}"] > 3
    assert scores["copy_source"]["flow_epe"] > 2  # the identity flow against the true flow
    assert {"skin", "hair"} <= set(correspondence.part_table(part)["identity"])
