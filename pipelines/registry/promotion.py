"""The promotion rule users rely on: every new version gets alias ``candidate``; ``champion`` moves to
it only when its primary metric beats the current champion's *on the same evaluation protocol* (or
there is no champion yet).  When the champion was scored under another protocol, its score is not
comparable: the champion is re-scored under the candidate's protocol if a re-evaluation function is
given, and otherwise left where it is.

Whether a gain is real: with both generators' per-pair scores on the same pairs, a paired bootstrap
gives the 95% interval of the gain; the decision always says whether the gain was beyond noise, and
``register.promotion_policy: beyond_noise`` promotes only then (``any_gain``: on any gain).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from pipelines.evaluation.statistics import PairedComparison, by_pair, paired_bootstrap

CANDIDATE, CHAMPION = "candidate", "champion"

POLICIES = ("any_gain", "beyond_noise")

# Version tags the promotion rule reads back.
TAG_PRIMARY_METRIC = "primary_metric"


TAG_PRIMARY_VALUE = "primary_metric_value"


TAG_PROTOCOL = "protocol_sha256"


def lower_is_better(metric: str) -> bool:
    """Distances (FID/FD, LPIPS/LPD, their masked forms, the portrait landmark error) fall as
    images improve; SSIM/PSNR rise."""
    name = metric.removeprefix("masked_")
    # branch_choice_s<k>: share of pixels where the combination map picks the nearer branch.
    if name in ("ssim", "ssim_range255", "psnr") or name.startswith("branch_choice_s"):
        return False
    if name in ("fid", "kid", "lpips", "lpips_vgg", "landmark_nme") or name.startswith(("fd_", "kid_", "lpd_")):
        return True
    if name.startswith(("flow_epe", "attn_epe_s", "appearance_de00")):  # correspondence.py: errors
        return True
    raise ValueError(f"unknown metric {metric!r}: cannot tell whether lower is better "
                     "(expected ssim, ssim_range255, psnr, fid, kid, lpips, lpips_vgg, fd_*, kid_*, lpd_*, "
                     "landmark_nme, or a masked_ form)")


def beats(candidate: float, champion: float, metric: str) -> bool:
    """Strictly better; a tie keeps the current champion, a non-finite candidate never wins."""
    if not math.isfinite(candidate):
        return False
    if not math.isfinite(champion):
        return True
    return candidate < champion if lower_is_better(metric) else candidate > champion


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    champion_version: str | None = None
    champion_value: float | None = None
    comparison: PairedComparison | None = None  # candidate vs champion on the same pairs, when both are known

    @property
    def beyond_noise(self) -> bool | None:
        return None if self.comparison is None else self.comparison.beyond_noise


def decide_promotion(
    metric: str,
    candidate_value: float,
    candidate_protocol: str,
    champion: Any | None,
    rescore: Callable[[str], Any] | None = None,
    model_name: str = "",
    *,
    policy: str = "any_gain",
    candidate_pairs: Sequence[float] | None = None,
    champion_pairs: Callable[[Any], Sequence[float] | None] | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> PromotionDecision:
    """Whether the new version becomes champion; ``champion`` is the current champion's
    ModelVersion (or None); ``rescore(model_uri)`` re-scores it under the candidate's protocol and
    returns its value, or ``(value, per_pair_values)``.  ``candidate_pairs`` are the candidate's
    per-pair values of ``metric``; ``champion_pairs(champion)`` the champion's under the same
    protocol (None when unknown).  ``policy``: any_gain or beyond_noise (module docstring)."""
    if policy not in POLICIES:
        raise ValueError(f"register.promotion_policy: {policy!r} is not one of {', '.join(POLICIES)}")
    if not math.isfinite(candidate_value):
        return PromotionDecision(False, f"candidate {metric}={candidate_value} is not finite")
    if champion is None:
        return PromotionDecision(True, "no champion yet")
    tags = champion.tags or {}
    version = str(champion.version)
    champ_pairs = None
    if tags.get(TAG_PRIMARY_METRIC) == metric and tags.get(TAG_PROTOCOL) == candidate_protocol:
        value = float(tags[TAG_PRIMARY_VALUE])
        how = "same protocol"
        if champion_pairs is not None and candidate_pairs is not None:
            champ_pairs = champion_pairs(champion)
    elif rescore is not None:
        redone = rescore(f"models:/{model_name}/{version}")
        value, champ_pairs = (float(redone[0]), redone[1]) if isinstance(redone, tuple) else (float(redone), None)
        how = "champion re-scored under the candidate's protocol"
    else:
        return PromotionDecision(
            False, f"champion v{version} was scored under another protocol or metric "
                   f"({tags.get(TAG_PRIMARY_METRIC)}, {str(tags.get(TAG_PROTOCOL))[:12]}); not comparable",
            version, None)
    comparison = None
    if candidate_pairs is not None and champ_pairs is not None and len(candidate_pairs) == len(champ_pairs):
        comparison = paired_bootstrap(candidate_pairs, champ_pairs, lower_is_better(metric),
                                     by_pair(len(candidate_pairs)), resamples, seed)
    noise = comparison.describe(metric) if comparison else "no per-pair scores of both: noise not assessed"
    gained = beats(candidate_value, value, metric)
    if gained and policy == "beyond_noise" and not (comparison and comparison.beyond_noise):
        return PromotionDecision(False, f"{metric} {candidate_value:.6g} beats champion v{version}'s {value:.6g} "
                                        f"({how}) but not beyond noise ({noise}); policy beyond_noise keeps the champion",
                                 version, value, comparison)
    if gained:
        return PromotionDecision(True, f"{metric} {candidate_value:.6g} beats champion v{version}'s {value:.6g} "
                                       f"({how}; {noise}; policy {policy})", version, value, comparison)
    return PromotionDecision(False, f"{metric} {candidate_value:.6g} does not beat champion v{version}'s "
                                    f"{value:.6g} ({how}; {noise})", version, value, comparison)


def current_champion(client: Any, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None  # no registered model yet, or no champion alias
