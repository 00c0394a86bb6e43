"""The statistics that say whether a score difference is real: kernel distance (KID) with its spread
over subsets, the rule for when a Fréchet distance is defined at all, bootstrap confidence intervals
of per-pair means, and the paired bootstrap that compares two generators on the same pairs; both
bootstraps resample identities (all pairs of a drawn identity together), not single pairs.

Every resampling draws from a generator seeded by the caller, so the same scores give the same
intervals on every run (DVC would otherwise report a changed metric where nothing changed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95


# ---------------------------------------------------------------------------- kernel distance


def _poly_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the cubic polynomial kernel k(a, b) = (a·b / d + 1)³ (Bińkowski et al.
    2018, as torch-fidelity and clean-fid compute KID)."""
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2 * kxy.mean()
    )


@dataclass(frozen=True)
class KernelDistance:
    mean: float
    std: float
    subsets: int
    subset_size: int


def kernel_distance(
    features: np.ndarray, reference: np.ndarray, subsets: int, subset_size: int, seed: int
) -> KernelDistance:
    """KID: the unbiased MMD² of ``features`` [N, D] to ``reference`` [M, D], mean ± std over
    ``subsets`` random subsets of ``min(subset_size, N, M)`` rows each (drawn without replacement)."""
    x, y = np.asarray(features, np.float64), np.asarray(reference, np.float64)
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise ValueError(f"KID needs at least 2 rows on each side, have {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)
    values = np.array(
        [
            _poly_mmd2_unbiased(
                x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)]
            )
            for _ in range(subsets)
        ]
    )
    return KernelDistance(
        float(values.mean()), float(values.std(ddof=1)) if subsets > 1 else 0.0, subsets, size
    )


# ---------------------------------------------------------------------------- Fréchet rule


def distinct_rows(features: np.ndarray) -> int:
    """How many different feature rows there are: a copied source or a repeated target enters the
    pair list once per pair but adds nothing to the covariance's rank."""
    return len(np.unique(np.asarray(features), axis=0)) if len(features) else 0


def frechet_not_computed_reason(features: np.ndarray) -> str | None:
    """Why the Fréchet distance of these features is not defined (None when it is): a D-dimensional
    covariance from N ≤ D distinct samples is rank-deficient, and its matrix square root then
    measures the sample size as much as the images."""
    n, dim = distinct_rows(features), int(features.shape[1]) if np.ndim(features) == 2 else 0
    if n <= dim:
        return f"{n} distinct images do not exceed the {dim} feature dimensions (rank-deficient covariance)"
    return None


# ---------------------------------------------------------------------------- bootstrap
#
# The test pairs are not independent draws: every pair of the field's test CSVs (and of the
# synthetic sets) joins two views of one person, so the pairs of an identity share its look,
# garments and difficulty.  Resampling single pairs then treats 144 pairs of 12 people as 144
# independent people and gives intervals that are too narrow.  The unit resampled is therefore
# the identity (a cluster bootstrap): a drawn identity brings all of its pairs.  Only where the
# test pairs carry no identity does the bootstrap fall back to single pairs, and says so.

IDENTITY_BOOTSTRAP, PAIR_BOOTSTRAP = "identity bootstrap", "pair bootstrap"

# Resample indices drawn per block: bounds memory (resamples x units) on large test sets.
_BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True, eq=False)
class Resampling:
    """What the bootstrap resamples: ``units[i]`` is the unit (0 … n_units-1) of pair ``i``.

    ``method`` is :data:`IDENTITY_BOOTSTRAP` (a unit is an identity, all of its pairs come along)
    or :data:`PAIR_BOOTSTRAP` (a unit is one pair: the fallback, ``fallback`` says why)."""

    units: np.ndarray
    method: str
    fallback: str | None = None

    @property
    def pairs(self) -> int:
        return int(self.units.size)

    @property
    def n_units(self) -> int:
        return int(np.unique(self.units).size)

    def subset(self, keep: np.ndarray) -> Resampling:
        """The same units restricted to the pairs where ``keep`` (a boolean mask) is true."""
        _, relabelled = np.unique(self.units[np.asarray(keep, bool)], return_inverse=True)
        return Resampling(relabelled.astype(np.int64), self.method, self.fallback)

    def describe(self) -> str:
        if self.method == IDENTITY_BOOTSTRAP:
            return f"{self.method} over {self.n_units} identities ({self.pairs} pairs)"
        return f"{self.method} over {self.pairs} pairs"

    def record(self) -> dict:
        """What the evaluation record says about its intervals' resampling."""
        return {
            "method": self.method,
            "pairs": self.pairs,
            "identities": self.n_units if self.method == IDENTITY_BOOTSTRAP else None,
            "units": self.n_units,
            "fallback": self.fallback,
        }


def by_pair(pairs: int, why: str | None = None) -> Resampling:
    """Every pair its own unit (the fallback; ``why`` is recorded)."""
    return Resampling(np.arange(pairs, dtype=np.int64), PAIR_BOOTSTRAP, why)


def by_identity(identities: Sequence[str | None] | None, pairs: int, missing: str = "") -> Resampling:
    """Resample identities when every one of the ``pairs`` pairs has one (``identities`` in pair
    order) and there are at least two; otherwise single pairs, with the reason (``missing``: why
    ``identities`` is None)."""
    if identities is None:
        return by_pair(pairs, missing or "the test pairs carry no identity")
    if len(identities) != pairs:
        return by_pair(pairs, f"{len(identities)} identities for {pairs} test pairs")
    absent = sum(1 for i in identities if not i)
    if absent:
        return by_pair(pairs, f"{absent} of {pairs} test pairs have no identity")
    names, units = np.unique(np.asarray(identities, dtype=object).astype(str), return_inverse=True)
    if len(names) < 2:
        return by_pair(
            pairs, f"all {pairs} test pairs are of one identity: nothing to resample between identities"
        )
    return Resampling(units.astype(np.int64), IDENTITY_BOOTSTRAP)


def bootstrap_means(values: np.ndarray, resampling: Resampling, resamples: int, seed: int) -> np.ndarray:
    """``resamples`` bootstrap replicates of the mean over pairs: each draws ``n_units`` units with
    replacement and averages every pair of the drawn units (a unit drawn twice counts twice)."""
    v = np.asarray(values, np.float64)
    if v.ndim != 1 or v.size != resampling.pairs:
        raise ValueError(f"bootstrap: {v.size} values for {resampling.pairs} resampled pairs")
    _, units = np.unique(resampling.units, return_inverse=True)
    n = int(units.max()) + 1
    if n < 2:
        raise ValueError("bootstrap: fewer than 2 units to resample")
    sums, counts = (
        np.bincount(units, weights=v, minlength=n),
        np.bincount(units, minlength=n).astype(np.float64),
    )
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    block = max(1, _BLOCK_ELEMENTS // n)
    for lo in range(0, resamples, block):
        drawn = rng.integers(0, n, size=(min(block, resamples - lo), n))
        out[lo : lo + len(drawn)] = sums[drawn].sum(axis=1) / counts[drawn].sum(axis=1)
    return out


def bootstrap_mean_ci(values: np.ndarray, resampling: Resampling, resamples: int, seed: int) -> Interval:
    """Percentile bootstrap 95% interval of the mean of per-pair values, resampling the units of
    ``resampling`` (identities, or pairs where there are none)."""
    v = np.asarray(values, np.float64)
    if v.size < 2 or np.ptp(v) == 0:
        m = float(v.mean()) if v.size else float("nan")
        return Interval(m, m)
    means = bootstrap_means(v, resampling, resamples, seed)
    low, high = np.quantile(means, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return Interval(float(low), float(high))


@dataclass(frozen=True)
class PairedComparison:
    """Candidate minus champion on the same pairs, signed so that a positive gain is an improvement."""

    gain: float
    low: float
    high: float
    pairs: int
    method: str = IDENTITY_BOOTSTRAP
    units: int = 0  # identities (or pairs, for the pair bootstrap) resampled

    @property
    def beyond_noise(self) -> bool:
        return self.low > 0

    @property
    def verdict(self) -> str:
        """better / worse: the whole interval on one side of zero; noise: it straddles zero."""
        return "better" if self.low > 0 else "worse" if self.high < 0 else "noise"

    def over(self) -> str:
        if self.method == IDENTITY_BOOTSTRAP:
            return f"{self.method} over {self.units} identities ({self.pairs} pairs)"
        return f"{self.method} over {self.pairs} pairs"

    def describe(self, metric: str) -> str:
        verdict = "beyond noise" if self.beyond_noise else "within noise"
        return (
            f"paired {self.over()}: {metric} gain {self.gain:+.4g}, "
            f"95% CI [{self.low:+.4g}, {self.high:+.4g}], {verdict}"
        )

    def record(self) -> dict:
        return {
            "gain": self.gain,
            "ci95_low": self.low,
            "ci95_high": self.high,
            "beyond_noise": self.verdict != "noise",
            "verdict": self.verdict,
            "method": self.method,
            "pairs": self.pairs,
            "identities": self.units if self.method == IDENTITY_BOOTSTRAP else None,
        }


def paired_bootstrap(
    candidate: np.ndarray | Sequence[float],
    champion: np.ndarray | Sequence[float],
    lower_is_better: bool,
    resampling: Resampling,
    resamples: int,
    seed: int,
) -> PairedComparison:
    """Bootstrap the mean per-pair difference (both sides of a pair resampled together, so the
    shared difficulty of each pair cancels; whole identities at a time, so the shared difficulty of
    an identity's pairs is not counted as independent evidence); the gain is beyond noise when the
    whole 95% interval is above zero."""
    a, b = np.asarray(candidate, np.float64), np.asarray(champion, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"paired comparison needs per-pair values of the same pairs, got {a.shape} and {b.shape}"
        )
    diff = (b - a) if lower_is_better else (a - b)
    ci = bootstrap_mean_ci(diff, resampling, resamples, seed)
    return PairedComparison(
        float(diff.mean()), ci.low, ci.high, int(diff.size), resampling.method, resampling.n_units
    )
