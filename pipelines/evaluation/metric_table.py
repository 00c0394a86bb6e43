"""Every score name an evaluation record can hold, which way is better, what it means and its unit.

The one place that says whether a higher or a lower value of a score is better: the evaluation's
paired verdicts against the baselines, the registry's promotion rule, the model cards' arrows and
the ablation table all ask :func:`lower_is_better` or :func:`arrow`.  A name is looked up as

- a score of :data:`METRICS`, matched whole; a ``<placeholder>`` stands for a backbone name
  (``fd_effnet_lite1``, ``lpd_lossnet_effnet_lite0``), a stride (``flow_epe_s8``) or a garment
  (``appearance_de00_top``) or a portrait edit (``edit_ssim_mouth_open``);
- ``masked_<score>``: the score on the target's body mask, better the same way;
- a statistic of a score (:data:`STATISTICS`: ``<score>_ci95_low``, ``<score>_ci95_high``, a
  kernel distance's ``_std``).  A statistic describes its score's uncertainty and has no direction of its
  own: nothing is ranked or promoted on one.

An unknown name is an error, never a guess: a new score is added here before anything ranks it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

Direction = Literal["higher", "lower"]
HIGHER: Direction = "higher"
LOWER: Direction = "lower"

MASKED_PREFIX = "masked_"
CI95_LOW, CI95_HIGH, SPREAD = "_ci95_low", "_ci95_high", "_std"
STATISTIC_SUFFIXES = (CI95_LOW, CI95_HIGH, SPREAD)


@dataclass(frozen=True)
class MetricSpec:
    """One score, or one family of scores named by a pattern with a ``<placeholder>``."""

    pattern: str
    better: Direction | None  # None: a statistic of another score
    meaning: str
    unit: str


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "ssim",
        HIGHER,
        "SSIM as the published tables compute it (Gaussian window, data range of the generated image, "
        "channels at once)",
        "unitless, 1 = identical",
    ),
    MetricSpec("ssim_range255", HIGHER, "SSIM with data range 255, mean over RGB", "unitless, 1 = identical"),
    MetricSpec("psnr", HIGHER, "peak signal-to-noise ratio of the uint8 pixels (an exact copy: 100)", "dB"),
    MetricSpec(
        "fid",
        LOWER,
        "Fréchet distance to the training images on the FID Inception's pool3 features",
        "squared feature units",
    ),
    MetricSpec(
        "fd_<backbone>",
        LOWER,
        "Fréchet distance to the training images on a backbone's pooled features",
        "squared feature units",
    ),
    MetricSpec(
        "kid",
        LOWER,
        "kernel distance (unbiased MMD²) to the training images on FID Inception features",
        "squared feature units",
    ),
    MetricSpec(
        "kid_<backbone>",
        LOWER,
        "kernel distance (unbiased MMD²) to the training images on a backbone",
        "squared feature units",
    ),
    MetricSpec("lpips", LOWER, "LPIPS v0.1, the field's AlexNet net-lin model", "unitless, 0 = identical"),
    MetricSpec("lpips_vgg", LOWER, "LPIPS with the learned VGG16 weights", "unitless, 0 = identical"),
    MetricSpec(
        "lpd_<backbone>",
        LOWER,
        "LPIPS's formula with equal layer weights on a backbone's features",
        "unitless, 0 = identical",
    ),
    MetricSpec(
        "landmark_nme",
        LOWER,
        "portraits: landmarks found in the image vs the target's, over its outer-eye-corner distance",
        "eye distances",
    ),
    MetricSpec(
        "flow_epe", LOWER, "end-point error of the finest flow against the renderer's true flow", "px"
    ),
    MetricSpec("flow_epe_s<k>", LOWER, "end-point error of the flow at stride k against the true flow", "px"),
    MetricSpec(
        "attn_epe_s<k>",
        LOWER,
        "end-point error of the attention's expected source location at stride k",
        "px",
    ),
    MetricSpec(
        "branch_choice_s<k>",
        HIGHER,
        "share of masked target pixels where the combination map takes the branch nearer the truth",
        "fraction, 1 = always the nearer",
    ),
    MetricSpec(
        "appearance_de00",
        LOWER,
        "median CIEDE2000 of output vs target mean colour per garment region",
        "ΔE00",
    ),
    MetricSpec(
        "appearance_de00_<garment>",
        LOWER,
        "appearance_de00 over one garment's regions (portraits: one part's, e.g. hair, glasses, skin, lips)",
        "ΔE00",
    ),
    MetricSpec(
        "edit_ssim_<edit>",
        HIGHER,
        "portraits: SSIM of the edited source against the renderer's true edit (rotate, mouth_open, ...)",
        "unitless, 1 = identical",
    ),
    MetricSpec(
        "edit_changed_l1_<edit>",
        LOWER,
        "portraits: mean absolute error against the renderer's true edit over the pixels the edit changes "
        "(true edit vs source by more than 8 levels, grown by 1 px); copy-source scores the change itself",
        "0-255 levels",
    ),
    MetricSpec(
        "edit_nme_<edit>",
        LOWER,
        "portraits: landmarks found in the edited source vs the requested landmarks, over the eye distance",
        "eye distances",
    ),
    MetricSpec(
        "edit_reached_<edit>",
        HIGHER,
        "portraits: share of the true edit's pixel change that arrives (answer to the edit minus answer "
        "to no edit, projected on true edit minus source; 1 = all of it, 0 = none, as copying the source)",
        "fraction",
    ),
    MetricSpec(
        "edit_lm_reached_<edit>",
        HIGHER,
        "portraits: share of the requested landmark change that the landmark regressor measures arriving "
        "(1 = all of it; the held-out targets' value is what the regressor can see at all)",
        "fraction",
    ),
)

# By suffix: the statistics the evaluation writes beside a score.
STATISTICS: dict[str, MetricSpec] = {
    CI95_LOW: MetricSpec(
        f"<score>{CI95_LOW}",
        None,
        "lower bound of the bootstrap 95% interval of the score's mean",
        "the score's",
    ),
    CI95_HIGH: MetricSpec(
        f"<score>{CI95_HIGH}",
        None,
        "upper bound of the bootstrap 95% interval of the score's mean",
        "the score's",
    ),
    SPREAD: MetricSpec(
        f"<kernel distance>{SPREAD}",
        None,
        "standard deviation of the kernel distance over its subsets",
        "the score's",
    ),
}
KERNEL_DISTANCES = ("kid", "kid_<backbone>")  # the scores with a SPREAD

_PLACEHOLDERS = {
    "<backbone>": r"[a-z0-9_]+",
    "<garment>": r"[a-z0-9_]+",
    "<edit>": r"[a-z_]+",
    "<k>": r"[0-9]+",
}


def _regex(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(<[a-z]+>)", pattern)
    return re.compile("".join(_PLACEHOLDERS[p] if p in _PLACEHOLDERS else re.escape(p) for p in parts))


_COMPILED = tuple((_regex(spec.pattern), spec) for spec in METRICS)


class UnknownMetric(ValueError):
    """A name that is no score of :data:`METRICS` (nor a masked form or statistic of one)."""


def score_spec(name: str) -> MetricSpec | None:
    """The score ``name`` is (its masked form included), or None when it is none."""
    base = name.removeprefix(MASKED_PREFIX)
    spec = next((s for regex, s in _COMPILED if regex.fullmatch(base)), None)
    if spec is None or base == name:
        return spec
    return dataclasses.replace(
        spec, pattern=MASKED_PREFIX + spec.pattern, meaning=f"{spec.meaning}, on the body mask"
    )


def lookup(name: str) -> MetricSpec:
    """What ``name`` is: a score, a masked score or a statistic of one; :class:`UnknownMetric` otherwise."""
    # Statistics first: a backbone placeholder would otherwise take "effnet_lite1_std" for a backbone.
    for suffix, stat in STATISTICS.items():
        of = score_spec(name.removesuffix(suffix)) if name.endswith(suffix) else None
        if of is not None and (suffix != SPREAD or of.pattern in KERNEL_DISTANCES):
            return stat
    spec = score_spec(name)
    if spec is None:
        raise UnknownMetric(
            f"unknown metric {name!r}: cannot tell whether lower is better (expected one of "
            + ", ".join(s.pattern for s in METRICS)
            + f", a {MASKED_PREFIX} form of one, or one with a suffix {', '.join(STATISTICS)})"
        )
    return spec


def is_statistic(name: str) -> bool:
    """An interval bound or spread of a score rather than a score (by its suffix)."""
    return name.endswith(STATISTIC_SUFFIXES)


def lower_is_better(name: str) -> bool:
    """True for the errors and distances, False for SSIM, PSNR and branch choice; an unknown name or a
    statistic (which ranks nothing) raises :class:`UnknownMetric`."""
    better = lookup(name).better
    if better is None:
        raise UnknownMetric(f"{name!r} is a statistic of a score: neither lower nor higher is better")
    return better == LOWER


def direction(name: str) -> Direction | None:
    """Which way ``name`` is better; None for a statistic or an unknown name."""
    try:
        return lookup(name).better
    except UnknownMetric:
        return None


def arrow(name: str) -> str:
    """``↓`` (lower is better), ``↑`` (higher is better), or ``""`` for a statistic or unknown name."""
    return {LOWER: "↓", HIGHER: "↑", None: ""}[direction(name)]
