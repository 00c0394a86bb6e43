"""pipelines.evaluation.protocol: the record's protocol, whose hash decides what the registry may compare."""

from __future__ import annotations

from types import SimpleNamespace

from pipelines.evaluation.networks import MetricNames, Networks
from pipelines.evaluation.protocol import (
    correspondence_protocol,
    evaluation_protocol,
    image_metrics_protocol,
    intervals_protocol,
    pairs_protocol,
)
from pipelines.evaluation.scoring import PairIdentities, canonical_sha256
from pipelines.evaluation.statistics import by_identity, by_pair

ECFG = SimpleNamespace(
    lpips_net="alex", kid_subsets=100, kid_subset_size=1000, seed=0, bootstrap_resamples=2000, mask_radius=4.0
)
MANIFEST = {
    "image_size": [48, 32],
    "preprocess": {"jpeg_quality": 95, "heatmap_sigma": 2.0},
    "shards": [{"split": "train", "sha256": "a" * 64}, {"split": "test", "sha256": "b" * 64}],
}
NAMES = [("a.jpg", "b.jpg"), ("b.jpg", "a.jpg"), ("c.jpg", "d.jpg"), ("d.jpg", "c.jpg")]


def _nets() -> Networks:
    names = MetricNames(
        fd="fd_effnet_lite1",
        kid="kid_effnet_lite1",
        lpd="lpd_effnet_lite1",
        masked_lpd="masked_lpd_effnet_lite1",
    )
    description = {
        "fd": {"metric": names.fd, "kid_metric": names.kid, "name": "effnet_lite1"},
        "lpd": {"metric": names.lpd},
        "loss_network": {"backbone": "none", "weights_sha256": None},
    }
    return Networks(fd=None, lpd=SimpleNamespace(is_reference=False), names=names, description=description)


def _protocol(masked: bool = False, landmark_following: dict | None = None, identities: bool = True) -> dict:
    resampling = by_identity(["p", "p", "q", "q"], 4) if identities else by_pair(4, "no identities")
    return evaluation_protocol(
        pairs=pairs_protocol("tiny", "deepfashion", MANIFEST, NAMES),
        image_metrics=image_metrics_protocol(_nets(), ECFG, 112),
        intervals=intervals_protocol(resampling, PairIdentities(["p", "p", "q", "q"]), ECFG),
        manifest=MANIFEST,
        reference_count=12,
        masked=masked,
        mask_radius=ECFG.mask_radius,
        landmark_following=landmark_following,
    )


def test_the_protocol_hash_is_pinned() -> None:
    # Existing champions were registered under this hash: a changed protocol text makes every
    # registered version incomparable (re-scored or refused), so a change must be deliberate.
    assert canonical_sha256(_protocol()) == "ea39c8a6bb7278aea8ba7009ca872c3cff213d69d785fc994c223e7301b2e90a"


def test_sections_say_what_was_scored() -> None:
    protocol = _protocol()
    assert protocol["pairs"] == 4 and protocol["pairs_sha256"] == canonical_sha256(NAMES)
    assert protocol["image_size"] == [48, 32] and protocol["heatmap_sigma"] == 2.0
    assert protocol["lpips"]["net"] is None and protocol["lpips"]["metric"] == "lpd_effnet_lite1"
    assert (
        protocol["kid"]["metric"] == "kid_effnet_lite1" and protocol["frechet"]["feature_dimensions"] == 112
    )
    assert (
        protocol["reference_set"]["count"] == 12
        and "12 training images" in protocol["baselines"]["mean_train_image"]
    )
    assert protocol["masked"] == {"enabled": False} and "landmark_following" not in protocol
    assert (
        protocol["intervals"]["method"] == "identity bootstrap" and protocol["intervals"]["identities"] == 2
    )


def test_the_mask_the_fallback_and_the_portrait_section_change_the_protocol() -> None:
    masked = _protocol(masked=True)
    assert masked["masked"]["enabled"] and masked["masked"]["radius"] == 4.0
    pairs = _protocol(identities=False)["intervals"]
    assert (pairs["unit"], pairs["fallback"]) == ("a single test pair", "no identities")
    portrait = _protocol(landmark_following={"metric": "landmark_nme"})
    assert portrait["landmark_following"] == {"metric": "landmark_nme"}
    assert len({canonical_sha256(p) for p in (_protocol(), masked, portrait)}) == 3


def test_correspondence_protocol_names_its_tolerance() -> None:
    from datasets.synthetic.groundtruth import DEFAULT_TOLERANCE_PX

    assert correspondence_protocol()["tolerance_px"] == DEFAULT_TOLERANCE_PX
