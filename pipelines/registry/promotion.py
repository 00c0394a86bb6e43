"""The promotion rule users rely on: every new version gets alias ``candidate``; ``champion`` moves to
it only when the evidence that ``register.promotion_policy`` asks for is there, on the same
evaluation protocol.  When the champion was scored under another protocol, its score is not
comparable: the champion is re-scored under the candidate's protocol if a re-evaluation function is
given, and otherwise left where it is.

Whether a gain is real: with both generators' per-pair scores on the same pairs, a paired bootstrap
that resamples identities (the candidate's evaluation record lists each pair's) gives the 95%
interval of the gain; the evaluation record holds the same verdict of the candidate against each
baseline.  The policies (``register.promotion_policy``):

- ``beyond_baselines_and_champion`` (the default): the gain over the champion on the primary
  metric is beyond noise (its interval excludes 0 on the better side) and the candidate beats both
  baselines (``copy_source``, ``mean_train_image``) beyond noise on it; a first version needs the
  baselines too.  A metric without per-pair values (a Fréchet or kernel distance) has no interval:
  nothing is promoted on it.
- ``beyond_noise``: the gain over the champion is beyond noise; the baselines are not asked; a
  first version is promoted.
- ``any_gain``: any gain of the primary metric over the champion; a first version is promoted.

A refusal is an ordinary outcome: the version stays ``candidate`` and the champion is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.evaluation.metric_table import lower_is_better
from pipelines.evaluation.statistics import PairedComparison, Resampling, by_pair, paired_bootstrap

CANDIDATE, CHAMPION = "candidate", "champion"

ANY_GAIN, BEYOND_NOISE, BEYOND_BASELINES_AND_CHAMPION = (
    "any_gain",
    "beyond_noise",
    "beyond_baselines_and_champion",
)
POLICIES = (ANY_GAIN, BEYOND_NOISE, BEYOND_BASELINES_AND_CHAMPION)
DEFAULT_POLICY = BEYOND_BASELINES_AND_CHAMPION

# What each policy asks, as the cards and the registration receipt state it.
POLICY_RULES = {
    ANY_GAIN: "promote on any gain of the primary metric over the champion (a first version always)",
    BEYOND_NOISE: "promote when the paired bootstrap's 95% interval of the gain over the champion excludes 0 "
    "on the better side (a first version always)",
    BEYOND_BASELINES_AND_CHAMPION: "promote when the paired bootstrap's 95% interval of the gain over the "
    "champion and over both baselines (copy_source, mean_train_image) excludes 0 "
    "on the better side (a first version: over both baselines)",
}

# The evaluation's baselines (pipelines/evaluation/scoring.py BASELINES), as its record names them.
BASELINES = ("copy_source", "mean_train_image")

# Version tags the promotion rule reads back.
TAG_PRIMARY_METRIC = "primary_metric"


TAG_PRIMARY_VALUE = "primary_metric_value"


TAG_PROTOCOL = "protocol_sha256"


def beats(candidate: float, champion: float, metric: str) -> bool:
    """Strictly better; a tie keeps the current champion, a non-finite candidate never wins."""
    if not math.isfinite(candidate):
        return False
    if not math.isfinite(champion):
        return True
    return candidate < champion if lower_is_better(metric) else candidate > champion


@dataclass(frozen=True)
class BaselineEvidence:
    """The candidate against one baseline on the primary metric, from its evaluation record's
    ``model_vs_baselines`` (None numbers and verdict ``missing`` when the record has none)."""

    baseline: str
    gain: float | None = None
    low: float | None = None
    high: float | None = None
    verdict: str = "missing"  # better / worse / noise (the interval straddles 0) / missing
    method: str | None = None
    identities: int | None = None

    @property
    def beaten(self) -> bool:
        return self.verdict == "better"

    def describe(self, metric: str) -> str:
        if self.gain is None:
            return f"over {self.baseline}: no {metric} verdict in the evaluation record"
        return (
            f"over {self.baseline}: {metric} gain {self.gain:+.4g}, 95% CI [{self.low:+.4g}, {self.high:+.4g}], "
            + (
                "beyond noise"
                if self.beaten
                else "worse beyond noise"
                if self.verdict == "worse"
                else "within noise"
            )
        )

    def record(self) -> dict:
        return {
            "gain": self.gain,
            "ci95_low": self.low,
            "ci95_high": self.high,
            "verdict": self.verdict,
            "beaten": self.beaten,
            "method": self.method,
            "identities": self.identities,
        }


def baseline_evidence(versus: Mapping[str, Any] | None, metric: str) -> tuple[BaselineEvidence, ...]:
    """Both baselines' verdicts on ``metric`` from an evaluation record's ``model_vs_baselines``."""
    out = []
    for baseline in BASELINES:
        v = ((versus or {}).get(baseline) or {}).get(metric)
        if not v:
            out.append(BaselineEvidence(baseline))
            continue
        out.append(
            BaselineEvidence(
                baseline,
                float(v["gain"]),
                float(v["ci95_low"]),
                float(v["ci95_high"]),
                str(v.get("verdict")),
                v.get("method"),
                v.get("identities"),
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    champion_version: str | None = None
    champion_value: float | None = None
    comparison: PairedComparison | None = None  # candidate vs champion on the same pairs, when both are known
    policy: str = DEFAULT_POLICY
    baselines: tuple[BaselineEvidence, ...] = ()

    @property
    def beyond_noise(self) -> bool | None:
        return None if self.comparison is None else self.comparison.beyond_noise

    def record(self) -> dict:
        """What decided, with the numbers: the registration receipt's ``promotion``."""
        return {
            "policy": self.policy,
            "rule": POLICY_RULES[self.policy],
            "promoted": self.promote,
            "reason": self.reason,
            "champion_version": self.champion_version,
            "champion_value": self.champion_value,
            "versus_champion": self.comparison.record() if self.comparison is not None else None,
            "versus_baselines": {b.baseline: b.record() for b in self.baselines},
        }


def decide_promotion(
    metric: str,
    candidate_value: float,
    candidate_protocol: str,
    champion: Any | None,
    rescore: Callable[[str], Any] | None = None,
    model_name: str = "",
    *,
    policy: str = DEFAULT_POLICY,
    candidate_pairs: Sequence[float] | None = None,
    champion_pairs: Callable[[Any], Sequence[float] | None] | None = None,
    versus_baselines: Mapping[str, Any] | None = None,
    resampling: Resampling | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> PromotionDecision:
    """Whether the new version becomes champion; ``champion`` is the current champion's
    ModelVersion (or None); ``rescore(model_uri)`` re-scores it under the candidate's protocol and
    returns its value, or ``(value, per_pair_values)``.  ``candidate_pairs`` are the candidate's
    per-pair values of ``metric``; ``champion_pairs(champion)`` the champion's under the same
    protocol (None when unknown); ``versus_baselines`` the candidate's evaluation record's
    ``model_vs_baselines``; ``resampling`` the units the paired bootstrap resamples (the
    candidate's identities; None: single pairs, said so in the reason).  ``policy``: one of
    :data:`POLICIES` (module docstring)."""
    if policy not in POLICIES:
        raise ValueError(f"register.promotion_policy: {policy!r} is not one of {', '.join(POLICIES)}")
    baselines = baseline_evidence(versus_baselines, metric)
    # The baselines the policy asks for and the candidate did not beat beyond noise.
    short = [b.baseline for b in baselines if not b.beaten] if policy == BEYOND_BASELINES_AND_CHAMPION else []
    vs_baselines = "; ".join(b.describe(metric) for b in baselines)

    def decision(
        promote: bool,
        champion_part: str,
        why_not: str = "",
        version: str | None = None,
        value: float | None = None,
        comparison: PairedComparison | None = None,
    ) -> PromotionDecision:
        verdict = f"promoted under {policy}" if promote else f"not promoted under {policy}{why_not}"
        reason = f"{verdict}: {champion_part}; {vs_baselines}"  # one line: the verdict, then the evidence
        return PromotionDecision(promote, reason, version, value, comparison, policy, baselines)

    if not math.isfinite(candidate_value):
        return decision(False, f"candidate {metric}={candidate_value} is not finite")
    if champion is None:
        if short:
            return decision(
                False,
                "no champion yet",
                f" (a first version must beat both baselines beyond noise; not: {', '.join(short)})",
            )
        return decision(True, "no champion yet")
    # The champion's per-pair values are asked for only when the candidate's are there to pair with.
    pairs_of = champion_pairs if candidate_pairs is not None else None
    champ = champion_score(champion, metric, candidate_protocol, rescore, model_name, pairs_of)
    if champ is None:
        tags = champion.tags or {}
        return decision(
            False,
            f"champion v{champion.version} was scored under another protocol or metric "
            f"({tags.get(TAG_PRIMARY_METRIC)}, {str(tags.get(TAG_PROTOCOL))[:12]}); not comparable",
            "",
            str(champion.version),
        )
    comparison = paired_comparison(metric, candidate_pairs, champ.pairs, resampling, resamples, seed)
    noise = comparison.describe(metric) if comparison else "no per-pair scores of both: noise not assessed"
    gained = beats(candidate_value, champ.value, metric)
    over_champion = (
        f"{metric} {candidate_value:.6g} {'beats' if gained else 'does not beat'} champion v{champ.version}'s "
        f"{champ.value:.6g} ({champ.how}; {noise})"
    )
    stays = champion_stays(gained, policy, comparison, short)
    return decision(
        stays is None,
        over_champion,
        f", champion stays v{champ.version}{stays}" if stays is not None else "",
        champ.version,
        champ.value,
        comparison,
    )


@dataclass(frozen=True)
class ChampionScore:
    """The champion's value of the primary metric under the candidate's protocol."""

    version: str
    value: float
    pairs: Sequence[float] | None  # its per-pair values, when known
    how: str  # same protocol, or re-scored


def champion_score(
    champion: Any,
    metric: str,
    candidate_protocol: str,
    rescore: Callable[[str], Any] | None,
    model_name: str,
    champion_pairs: Callable[[Any], Sequence[float] | None] | None,
) -> ChampionScore | None:
    """From its version tags when it was scored on ``metric`` under ``candidate_protocol``, else
    re-scored by ``rescore``; None when neither (not comparable)."""
    tags = champion.tags or {}
    version = str(champion.version)
    if tags.get(TAG_PRIMARY_METRIC) == metric and tags.get(TAG_PROTOCOL) == candidate_protocol:
        pairs = champion_pairs(champion) if champion_pairs is not None else None
        return ChampionScore(version, float(tags[TAG_PRIMARY_VALUE]), pairs, "same protocol")
    if rescore is None:
        return None
    redone = rescore(f"models:/{model_name}/{version}")
    value, pairs = (float(redone[0]), redone[1]) if isinstance(redone, tuple) else (float(redone), None)
    return ChampionScore(version, value, pairs, "champion re-scored under the candidate's protocol")


def paired_comparison(
    metric: str,
    candidate_pairs: Sequence[float] | None,
    champion_pairs: Sequence[float] | None,
    resampling: Resampling | None,
    resamples: int,
    seed: int,
) -> PairedComparison | None:
    """The paired bootstrap of the candidate against the champion on the same pairs, resampling the
    candidate's identities (single pairs when they are not known); None without both pairs' values."""
    if candidate_pairs is None or champion_pairs is None or len(candidate_pairs) != len(champion_pairs):
        return None
    units = (
        resampling
        if resampling is not None and resampling.pairs == len(candidate_pairs)
        else by_pair(len(candidate_pairs), "no identities of the candidate's pairs")
    )
    return paired_bootstrap(candidate_pairs, champion_pairs, lower_is_better(metric), units, resamples, seed)


def champion_stays(
    gained: bool, policy: str, comparison: PairedComparison | None, baselines_short: Sequence[str]
) -> str | None:
    """Why the champion stays (after ", champion stays vN"), or None when the candidate is promoted."""
    if not gained:
        return ""
    if policy != ANY_GAIN and not (comparison and comparison.beyond_noise):
        return " (the gain over it is not beyond noise)"
    if baselines_short:
        return f" (not beyond noise over {', '.join(baselines_short)})"
    return None


def current_champion(client: Any, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None  # no registered model yet, or no champion alias
