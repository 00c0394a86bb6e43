"""The promotion rule users rely on: every new version gets alias ``candidate``; ``champion`` moves to
it only when its primary metric beats the current champion's *on the same evaluation protocol* (or
there is no champion yet).  When the champion was scored under another protocol, its score is not
comparable: the champion is re-scored under the candidate's protocol if a re-evaluation function is
given, and otherwise left where it is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

CANDIDATE, CHAMPION = "candidate", "champion"

# Version tags the promotion rule reads back.
# Version tags the promotion rule reads back.
TAG_PRIMARY_METRIC = "primary_metric"


TAG_PRIMARY_VALUE = "primary_metric_value"


TAG_PROTOCOL = "protocol_sha256"


def lower_is_better(metric: str) -> bool:
    """Distances (FID/FD, LPIPS/LPD, their masked forms, the portrait landmark error) fall as
    images improve; SSIM/PSNR rise."""
    name = metric.removeprefix("masked_")
    if name in ("ssim", "psnr"):
        return False
    if name in ("fid", "lpips", "landmark_nme") or name.startswith(("fd_", "lpd_")):
        return True
    raise ValueError(f"unknown metric {metric!r}: cannot tell whether lower is better "
                     "(expected ssim, psnr, fid, lpips, fd_*, lpd_*, landmark_nme, or a masked_ form)")


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


def decide_promotion(
    metric: str,
    candidate_value: float,
    candidate_protocol: str,
    champion: Any | None,
    rescore: Callable[[str], float] | None = None,
    model_name: str = "",
) -> PromotionDecision:
    """Whether the new version becomes champion; ``champion`` is the current champion's
    ModelVersion (or None); ``rescore(model_uri)`` re-scores it under the candidate's protocol."""
    if not math.isfinite(candidate_value):
        return PromotionDecision(False, f"candidate {metric}={candidate_value} is not finite")
    if champion is None:
        return PromotionDecision(True, "no champion yet")
    tags = champion.tags or {}
    version = str(champion.version)
    if tags.get(TAG_PRIMARY_METRIC) == metric and tags.get(TAG_PROTOCOL) == candidate_protocol:
        value = float(tags[TAG_PRIMARY_VALUE])
        how = "same protocol"
    elif rescore is not None:
        value = float(rescore(f"models:/{model_name}/{version}"))
        how = "champion re-scored under the candidate's protocol"
    else:
        return PromotionDecision(
            False, f"champion v{version} was scored under another protocol or metric "
                   f"({tags.get(TAG_PRIMARY_METRIC)}, {str(tags.get(TAG_PROTOCOL))[:12]}); not comparable",
            version, None)
    if beats(candidate_value, value, metric):
        return PromotionDecision(True, f"{metric} {candidate_value:.6g} beats champion v{version}'s {value:.6g} ({how})",
                                 version, value)
    return PromotionDecision(False, f"{metric} {candidate_value:.6g} does not beat champion v{version}'s "
                                    f"{value:.6g} ({how})", version, value)


def current_champion(client: Any, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None  # no registered model yet, or no champion alias
