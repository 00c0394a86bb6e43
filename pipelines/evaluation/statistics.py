"""The statistics that say whether a score difference is real: kernel distance (KID) with its spread
over subsets, the rule for when a Fréchet distance is defined at all, bootstrap confidence intervals
of per-pair means, and the paired bootstrap that compares two generators on the same pairs.

Every resampling draws from a generator seeded by the caller, so the same scores give the same
intervals on every run (DVC would otherwise report a changed metric where nothing changed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

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
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


@dataclass(frozen=True)
class KernelDistance:
    mean: float
    std: float
    subsets: int
    subset_size: int


def kernel_distance(features: np.ndarray, reference: np.ndarray, subsets: int, subset_size: int,
                    seed: int) -> KernelDistance:
    """KID: the unbiased MMD² of ``features`` [N, D] to ``reference`` [M, D], mean ± std over
    ``subsets`` random subsets of ``min(subset_size, N, M)`` rows each (drawn without replacement)."""
    x, y = np.asarray(features, np.float64), np.asarray(reference, np.float64)
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise ValueError(f"KID needs at least 2 rows on each side, have {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)
    values = np.array([_poly_mmd2_unbiased(x[rng.choice(len(x), size, replace=False)],
                                           y[rng.choice(len(y), size, replace=False)]) for _ in range(subsets)])
    return KernelDistance(float(values.mean()), float(values.std(ddof=1)) if subsets > 1 else 0.0, subsets, size)


# ---------------------------------------------------------------------------- Fréchet rule


def distinct_rows(features: np.ndarray) -> int:
    """How many different feature rows there are: a copied source or a repeated target enters the
    pair list once per pair but adds nothing to the covariance's rank."""
    return int(len(np.unique(np.asarray(features), axis=0))) if len(features) else 0


def frechet_not_computed_reason(features: np.ndarray) -> str | None:
    """Why the Fréchet distance of these features is not defined (None when it is): a D-dimensional
    covariance from N ≤ D distinct samples is rank-deficient, and its matrix square root then
    measures the sample size as much as the images."""
    n, dim = distinct_rows(features), int(features.shape[1]) if np.ndim(features) == 2 else 0
    if n <= dim:
        return f"{n} distinct images do not exceed the {dim} feature dimensions (rank-deficient covariance)"
    return None


# ---------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def bootstrap_mean_ci(values: np.ndarray, resamples: int, seed: int) -> Interval:
    """Percentile bootstrap 95% interval of the mean of per-pair values (scipy.stats.bootstrap)."""
    v = np.asarray(values, np.float64)
    if v.size < 2 or np.ptp(v) == 0:
        return Interval(float(v.mean()) if v.size else float("nan"), float(v.mean()) if v.size else float("nan"))
    res = sps.bootstrap((v,), np.mean, n_resamples=resamples, confidence_level=CONFIDENCE, method="percentile",
                        rng=np.random.default_rng(seed))
    return Interval(float(res.confidence_interval.low), float(res.confidence_interval.high))


@dataclass(frozen=True)
class PairedComparison:
    """Candidate minus champion on the same pairs, signed so that a positive gain is an improvement."""

    gain: float
    low: float
    high: float
    pairs: int

    @property
    def beyond_noise(self) -> bool:
        return self.low > 0

    def describe(self, metric: str) -> str:
        verdict = "beyond noise" if self.beyond_noise else "within noise"
        return (f"paired bootstrap over {self.pairs} pairs: {metric} gain {self.gain:+.4g}, "
                f"95% CI [{self.low:+.4g}, {self.high:+.4g}], {verdict}")


def paired_bootstrap(candidate: np.ndarray, champion: np.ndarray, lower_is_better: bool, resamples: int,
                     seed: int) -> PairedComparison:
    """Bootstrap the mean per-pair difference (pairs resampled together, so the shared difficulty
    of each pair cancels); the gain is beyond noise when the whole 95% interval is above zero."""
    a, b = np.asarray(candidate, np.float64), np.asarray(champion, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired comparison needs per-pair values of the same pairs, got {a.shape} and {b.shape}")
    diff = (b - a) if lower_is_better else (a - b)
    ci = bootstrap_mean_ci(diff, resamples, seed)
    return PairedComparison(float(diff.mean()), ci.low, ci.high, int(diff.size))
