"""The evaluation protocol as the record states it: everything that fixes what a score means (test
pairs, image handling, each metric's settings and networks, the intervals' units, the reference
set, the mask, the baselines).  Two evaluations with the same ``protocol_sha256`` scored alike, so
their scores are comparable; the registry promotes only on that condition."""

from __future__ import annotations

from typing import Any

from datasets.synthetic.groundtruth import DEFAULT_TOLERANCE_PX
from model.metrics import SSIM_SIGMA
from pipelines.evaluation.correspondence import MIN_REGION_PIXELS
from pipelines.evaluation.networks import Networks
from pipelines.evaluation.scoring import PairIdentities, canonical_sha256, reference_set_hash
from pipelines.evaluation.statistics import CONFIDENCE, IDENTITY_BOOTSTRAP, Resampling


def pairs_protocol(dataset: str, layout: str, manifest: dict, pair_names: list[tuple[str, str]]) -> dict:
    """Which pairs, in which order, and the pixels they are scored on."""
    size = [int(v) for v in manifest["image_size"]]
    preprocess = manifest.get("preprocess", {})
    return {
        "dataset": dataset,
        "layout": layout,
        "pairs": len(pair_names),
        "pairs_order": "test pairs CSV order",
        "pairs_sha256": canonical_sha256(pair_names),
        "image_size": size,
        "resize": (
            f"images resized to {size[0]}x{size[1]} with cv2 INTER_AREA at preprocessing when their size "
            f"differs; generated at that size; no resize before the metrics"
        ),
        "targets": f"test images as stored in the shards (JPEG, preprocess.jpeg_quality "
        f"{preprocess.get('jpeg_quality')}), decoded to uint8",
        "file_format": "png (lossless): scores are computed on the uint8 pixels written",
        "heatmap_sigma": preprocess.get("heatmap_sigma"),
    }


def image_metrics_protocol(nets: Networks, ecfg: Any, feature_dimensions: int) -> dict:
    """SSIM, PSNR and the networks behind the Fréchet, kernel and perceptual distances."""
    return {
        # The published tables' SSIM (PG2 -> PATN -> GFLA script/metrics.py) and the fixed-range one.
        "ssim": {
            "gaussian_weights": True,
            "sigma": SSIM_SIGMA,
            "use_sample_covariance": False,
            "data_range": "generated.max() - generated.min() per image (the field's scripts; 1 if constant)",
            "channels": "all three at once (multichannel)",
            "equals": "skimage.metrics.structural_similarity",
        },
        "ssim_range255": {
            "gaussian_weights": True,
            "sigma": SSIM_SIGMA,
            "use_sample_covariance": False,
            "data_range": 255,
            "channels": "mean over RGB",
            "equals": "skimage.metrics.structural_similarity",
        },
        "psnr": {"data_range": 255, "average": "mean of per-image PSNR"},
        "feature_extractors": nets.description,
        "lpips": (
            {"net": ecfg.lpips_net, "model": "net-lin v0.1", "metric": nets.names.lpd}
            if getattr(nets.lpd, "is_reference", False)
            else {
                "net": None,
                "metric": nets.names.lpd,
                "why": f"no LPIPS weights for evaluate.lpips_net={ecfg.lpips_net}; the backbone's unweighted "
                "distance is reported under its own name",
            }
        ),
        "frechet": {
            "rule": "computed only when the distinct images outnumber the feature dimensions",
            "feature_dimensions": feature_dimensions,
        },
        "kid": {
            "metric": nets.description["fd"]["kid_metric"],
            "kernel": "(x.y / d + 1)^3",
            "estimator": "unbiased MMD^2",
            "subsets": ecfg.kid_subsets,
            "subset_size": f"min({ecfg.kid_subset_size}, rows of each side)",
            "seed": ecfg.seed,
            "spread": "<metric>_std: standard deviation over the subsets",
        },
    }


def intervals_protocol(resampling: Resampling, ids: PairIdentities, ecfg: Any) -> dict:
    """What the intervals and the paired verdicts resample: method ("identity bootstrap", or "pair
    bootstrap" with the fallback's reason), pairs, identities and units."""
    return {
        "per_pair_means": f"percentile bootstrap {CONFIDENCE:.0%} interval, <metric>_ci95_low/_high",
        "paired": "model minus baseline per pair, bootstrapped with the same units",
        "unit": (
            "an identity: every pair of a drawn identity comes along"
            if resampling.method == IDENTITY_BOOTSTRAP
            else "a single test pair"
        ),
        "identity_of_pair": "the source image's identity as the test shards record it (sample "
        "meta.json; pairs join views of one identity)",
        "cross_identity_pairs": ids.cross_identity_pairs,
        **resampling.record(),
        "resamples": ecfg.bootstrap_resamples,
        "seed": ecfg.seed,
        "psnr_inf": "capped at 100 dB, as the mean",
    }


def evaluation_protocol(
    *,
    pairs: dict,
    image_metrics: dict,
    intervals: dict,
    manifest: dict,
    reference_count: int,
    masked: bool,
    mask_radius: float,
    landmark_following: dict | None = None,
) -> dict:
    """The whole protocol: the three sections above, the reference set, the mask, the baselines and
    (portraits) how the landmark-following error is measured."""
    protocol = {
        **pairs,
        **image_metrics,
        "intervals": intervals,
        "reference_set": {
            "what": "training images, every view once (as the field's FID)",
            "count": reference_count,
            "sha256": reference_set_hash(manifest),
        },
        "masked": {
            "enabled": masked,
            "mask": "PATN body mask from the target keypoints (limb quads, joint discs, "
            "5x5 closing), pixels outside zeroed in both images",
            "radius": mask_radius,
        }
        if masked
        else {"enabled": False},
        "baselines": {
            "copy_source": "the source image unchanged",
            "mean_train_image": f"per-pixel mean of the {reference_count} training images, rounded to uint8",
        },
    }
    if landmark_following is not None:
        protocol["landmark_following"] = landmark_following
    return protocol


def correspondence_protocol() -> dict:
    """How the scores against the renderer's ground truth are computed (correspondence.py)."""
    return {
        "truth": "renderer part-frame points (datasets/synthetic/groundtruth.py); true flow target->source "
        "to the nearest source pixel of the same part with the nearest point",
        "tolerance_px": DEFAULT_TOLERANCE_PX,
        "epe": "image pixels; predicted flows upsampled as model.warp.resize_flow; mean over the pair's masked "
        "pixels, then over pairs",
        "attention_location": "softmax-weighted mean of the source cell centres",
        "branch_choice": "combination map > 0.5 = attention; the nearer branch per pixel against the truth",
        "appearance": "CIEDE2000 (skimage) of the mean sRGB colour of output vs target per garment region "
        f"(clean pixels, at least {MIN_REGION_PIXELS}); median over regions and pairs",
        "baselines": {"copy_source": "identity flow", "mean_train_image": "no flow: appearance only"},
    }
