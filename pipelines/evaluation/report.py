"""The console summary of an evaluation record: one row per method, the paired verdicts, what was not computed."""

from __future__ import annotations

from pipelines.evaluation.metric_table import MASKED_PREFIX, is_statistic


def cell(scores: dict, key: str) -> str:
    """``mean [low, high]`` of a per-pair score, blank where the method has none."""
    if key not in scores:
        return ""
    lo, hi = scores.get(f"{key}_ci95_low"), scores.get(f"{key}_ci95_high")
    return f"{scores[key]:.4f} [{lo:.3f},{hi:.3f}]" if lo is not None else f"{scores[key]:.4f}"


def summary_lines(doc: dict, label: str = "model") -> list[str]:
    """The record's scores as a table, ``label`` naming the method under test."""
    names = doc["metric_names"]
    keys = ["ssim", "ssim_range255", "psnr", names["lpd"]] + sorted(
        k for k in doc["model"] if k.startswith(MASKED_PREFIX) and not is_statistic(k)
    )
    keys += [k for k in ("landmark_nme",) if k in doc["model"]]
    iv = doc["protocol"]["intervals"]
    units = f"{iv['identities']} identities" if iv.get("identities") else f"{iv['pairs']} pairs"
    fallback = f" (fallback: {iv['fallback']})" if iv.get("fallback") else ""
    lines = [
        (
            f"{doc['dataset']}: {doc['protocol']['pairs']} test pairs, protocol {doc['protocol_sha256'][:12]}, "
            f"{doc['seconds']:.0f} s; means with 95% intervals, {iv['method']} over {units}{fallback}"
        ),
        f"{'method':<18}"
        + "".join(f" {k:>25}" for k in keys)
        + f"{names['fd']:>20}{names['kid'] + ' ± std':>28}",
    ]
    for method, scores in [(label, doc["model"]), *doc["baselines"].items(), *doc["floor"].items()]:
        cells = "".join(f" {cell(scores, k):>25}" for k in keys)
        fd = f"{scores[names['fd']]:.4f}" if names["fd"] in scores else "n/a"
        kid = (
            f"{scores[names['kid']]:.5f} ± {scores[names['kid'] + '_std']:.5f}"
            if names["kid"] in scores
            else "n/a"
        )
        lines.append(f"{method:<18}{cells}{fd:>20}{kid:>28}")
    for baseline, by_metric in doc["model_vs_baselines"].items():
        verdicts = [
            f"{m} {v['gain']:+.4g} [{v['ci95_low']:+.3g}, {v['ci95_high']:+.3g}] {v['verdict']}"
            for m, v in by_metric.items()
        ]
        lines.append(f"{label} vs {baseline} (gain, paired {iv['method']} 95% CI): " + "; ".join(verdicts))
    for method, why in doc["not_computed"].items():
        for metric, reason in why.items():
            lines.append(f"{method if method != 'model' else label}: {metric} not computed: {reason}")
    return lines
