"""Model cards: the Markdown descriptions the registry shows for a registered model and its versions.

:func:`version_card` describes one registered version: the task, the request/response contract of
both flavours (:mod:`pipelines.serving.contract`), the training data and budget, the scores against
both baselines and the floor, the evaluation protocol hash, the promotion decision, where the
evaluation's sample grid and plots are, and how to call it.  :func:`registered_model_card`
describes the registered model: the task, the contract, and which version is champion.  Both are
pure functions of what registration knows (:func:`pipelines.registry.publish.register_generator`
sets them), written for the MLflow UI's Markdown renderer: its tables come out without cell
padding, so the scores are a preformatted block.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from datasets.faces.edits import ROTATE_RANGE, STRENGTH_RANGE
from pipelines.evaluation.metric_table import (
    CI95_HIGH,
    CI95_LOW,
    LOWER,
    SPREAD,
    arrow,
    direction,
    is_statistic,
    score_spec,
)
from pipelines.registry.promotion import (
    BASELINES,
    CANDIDATE,
    CHAMPION,
    DEFAULT_POLICY,
    POLICY_RULES,
    TAG_PRIMARY_METRIC,
    TAG_PRIMARY_VALUE,
    TAG_PROTOCOL,
)
from pipelines.serving.contract import EDIT_COLUMNS, INPUTS, MAX_BYTES, MAX_SIDE, OUTPUTS, POSE, check_task

# MLflow's SQL stores keep a description in a VARCHAR(5000): longer ones fail on PostgreSQL/MySQL.
MAX_DESCRIPTION = 5000

TASK_TITLES = {"pose": "pose transfer", "portrait": "portrait editing"}
TASK_SUMMARIES = {
    "pose": "Renders the person of a source photo in a target body pose (18 OpenPose-18 keypoints).",
    "portrait": "Re-renders the face of a source photo with moved facial landmarks (68 iBUG points) or "
    "named edits (rotate, shift, mouth, smile, eyes, brows).",
}
POSE_INPUT = {"pose": "pose heatmaps", "portrait": "face part maps"}
BASELINE_NAMES = BASELINES

_MB = MAX_BYTES // 2**20
COLUMN_NOTES = {
    "source_image": f"base64 PNG/JPEG (or a `data:` URL), up to {MAX_SIDE} px a side and {_MB} MB",
    "target_keypoints": "JSON `[[x, y], ...]`, 18 points, `null` or negative = missing; it or `target_image` is needed",
    "target_image": "base64 photo whose person's pose (found by the pose extra) is the target",
    "source_keypoints": "JSON, 18 points in `source_image` pixels (default: found by the pose extra)",
    "source_landmarks": "JSON, 68 points in `source_image` pixels (default: found by the face mesh)",
    "target_landmarks": "JSON, 68 points in the output frame (or in `target_size`); else the edits apply",
    "target_size": "JSON `[H, W]`, the frame of the target points (default: the model's)",
    "return_maps": "true: also answer `combination_maps`",
}
# Response columns: what they hold, and the request column that asks for them (None: always there).
OUTPUT_NOTES = {
    "image": ("the generated image, base64 PNG", None),
    "combination_maps": (
        "grey PNG strip, one cell per scale: white = attention-warped, black = flow-warped features taken",
        "return_maps",
    ),
}
EDIT_NOTE = (
    f"`rotate` degrees in [{ROTATE_RANGE[0]:g}, {ROTATE_RANGE[1]:g}]; `shift_x`, `shift_y` pixels of the "
    f"output frame; the others strengths in [{STRENGTH_RANGE[0]:g}, {STRENGTH_RANGE[1]:g}], 0 = unchanged"
)


@dataclass(frozen=True)
class ModelShape:
    """What the card says about the served model's frame and packed input."""

    task: str
    image_size: tuple[int, int]  # (H, W)
    pose_channels: int


@dataclass(frozen=True)
class ChampionSummary:
    """The champion as the registered model's card names it (from its version tags)."""

    version: str
    primary_metric: str | None = None
    value: float | None = None
    protocol_sha256: str | None = None
    dataset: str | None = None


def champion_summary(version: Any, tags: Mapping[str, str] | None) -> ChampionSummary:
    """The champion from its version tags (those :mod:`pipelines.registry.promotion` reads back)."""
    tags = tags or {}
    try:
        value = float(tags[TAG_PRIMARY_VALUE])
    except (KeyError, ValueError):
        value = None
    return ChampionSummary(
        str(version), tags.get(TAG_PRIMARY_METRIC), value, tags.get(TAG_PROTOCOL), tags.get("dataset")
    )


def fmt(value: Any) -> str:
    """A score as the cards print it: 4 significant digits, '–' when absent or not finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    return f"{value:.4g}"


def with_interval(scores: Mapping[str, Any], metric: str) -> str:
    """``0.7014 [0.69, 0.711]`` with a bootstrap 95% interval, ``0.0123 ± 0.002`` with a KID spread."""
    low, high, std = (scores.get(metric + s) for s in (CI95_LOW, CI95_HIGH, SPREAD))
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        return f"{fmt(scores.get(metric))} [{low:.3g}, {high:.3g}]"
    if isinstance(std, (int, float)):
        return f"{fmt(scores.get(metric))} ± {std:.2g}"
    return fmt(scores.get(metric))


def _size(hw: Sequence[int]) -> str:
    return f"{int(hw[0])}×{int(hw[1])} (H×W)"


def contract_section(shape: ModelShape) -> str:
    """The request columns (names, types, optional or not), the response and the tensor flavour."""
    task = check_task(shape.task)
    lines = [
        "## Request (python_function flavour)",
        'One row per image, `{"dataframe_records": [...]}` over HTTP:',
    ]
    edits = [c for c in INPUTS[task] if c.name in EDIT_COLUMNS]
    for col in INPUTS[task]:
        if col.name in EDIT_COLUMNS:
            continue
        need = "required" if col.required else "optional"
        lines.append(f"- `{col.name}` ({col.type}, {need}): {COLUMN_NOTES.get(col.name, '')}".rstrip(": "))
    if edits:
        types = "/".join(sorted({c.type for c in edits}))
        need = "required" if any(c.required for c in edits) else "optional"
        lines.append(f"- {', '.join(f'`{c.name}`' for c in edits)} ({types}, {need}): {EDIT_NOTE}")
    asked = {c.name for c in INPUTS[task]}
    answers = []
    for col in OUTPUTS:
        note, needs = OUTPUT_NOTES.get(col.name, ("", None))
        if needs is not None and needs not in asked:
            continue  # this task's requests cannot ask for it
        when = f"with `{needs}`" if needs else ("always" if col.required else "optional")
        answers.append(
            f"`{col.name}` ({col.type}, {when}): {note}".rstrip(": ")
            + (f", {_size(shape.image_size)}" if col.name == "image" else "")
        )
    h, w = shape.image_size
    p = int(shape.pose_channels)
    lines += [
        "",
        "Response, per row: " + "; ".join(answers) + ". An unusable request gets HTTP 400 naming the column.",
        "",
        "## Tensor (pytorch flavour)",
        (
            f"`mlflow.pytorch.load_model` gives the PackedGenerator: float32 `[B, {3 + 2 * p}, {h}, {w}]` = "
            f"source image (3, in [-1, 1]) | source {POSE_INPUT[task]} ({p}, in [0, 1]) | target "
            f"{POSE_INPUT[task]} ({p}); output `[B, 3, {h}, {w}]` in [-1, 1]; other shapes are rejected. "
            "`extra_files/reference_input.npy` -> `reference_output.npy` checks a loaded copy."
        ),
    ]
    return "\n".join(lines)


def usage_section(
    model_name: str, version: str | None, task: str, request_example: Mapping[str, Any] | None = None
) -> str:
    """How to call it: pyfunc in Python, ``mlflow models serve`` and curl (code lines short enough
    for the UI, which cuts preformatted lines rather than wrapping them)."""
    uri = f"models:/{model_name}/{version}" if version else f"models:/{model_name}@{CHAMPION}"
    if task == POSE:
        image = "person.png"
        points = (request_example or {}).get("target_keypoints")
        intro = (
            "`pose.json` holds the target pose, 18 `[x, y]` in the model's frame"
            + (f"; the first test pair's: `{points}`" if points else "")
            + "."
        )
        py_col, json_col, shell_arg = (
            '"target_keypoints": open("pose.json").read()',
            '"target_keypoints": "%s"',
            " \"$(tr -d '\\n' < pose.json)\"",
        )
    else:
        image = "face.png"
        intro = "One edit, `smile`; the request columns above list the others."
        py_col, json_col, shell_arg = '"smile": 0.5', '"smile": 0.5', ""
    return "\n".join(
        [
            "## Use it",
            intro,
            "```python",
            "import base64, mlflow, pandas as pd",
            'mlflow.set_tracking_uri("sqlite:///mlruns.db")  # the project\'s store, or its server',
            f'model = mlflow.pyfunc.load_model("{uri}")',
            f'image = base64.b64encode(open("{image}", "rb").read()).decode()',
            f'row = {{"source_image": image, {py_col}}}',
            "out = model.predict(pd.DataFrame([row]))",
            'open("out.png", "wb").write(base64.b64decode(out["image"][0]))',
            "```",
            "Served over HTTP:",
            "```bash",
            "export MLFLOW_TRACKING_URI=sqlite:///$PWD/mlruns.db  # the project's store, or its server",
            f"mlflow models serve -m models:/{model_name}@{CHAMPION} --env-manager local -h 127.0.0.1 -p 5001",
            "# then, from another shell:",
            f'printf \'{{"dataframe_records": [{{"source_image": "%s", {json_col}}}]}}\' \\',
            f'  "$(base64 -w0 {image})"{shell_arg} |',
            "  curl -s http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' -d @-",
            '# -> {"predictions": [{"image": "<base64 PNG>"}]}',
            "```",
        ]
    )


def floor_scores(metrics_doc: Mapping[str, Any]) -> dict[str, float]:
    """What the real targets score, per metric: the floor no generator is expected to beat (the
    held-out targets' Fréchet distance; for portraits, the landmark regressor's error on them)."""
    out: dict[str, float] = {}
    for scores in (metrics_doc.get("floor") or {}).values():
        for metric, value in (scores or {}).items():
            out.setdefault(metric, value)
    nme = ((metrics_doc.get("portrait") or {}).get("landmark_nme") or {}).get("target_image")
    if nme is not None:
        out.setdefault("landmark_nme", nme)
    return out


FAMILY_MIN = 2  # a pattern with this many members (per region, edit, stride) is one compact table
# Families left to the metrics file and the run's metrics (MLflow keeps a card under 5000 characters):
# the landmark regressor's readings of the edits, which its own ceiling shows blind to small edits,
# and whole-frame SSIM against the true edits, which the changed-pixel error says better.
CARD_LEFT_OUT = ("edit_nme_<edit>", "edit_lm_reached_<edit>", "edit_ssim_<edit>")


def _families(metrics: Sequence[str]) -> dict[str, list[str]]:
    """Pattern (``edit_reached_<edit>``) -> its member metrics, for patterns with at least
    :data:`FAMILY_MIN` members; the other metrics stay rows of their own."""
    groups: dict[str, list[str]] = {}
    for m in metrics:
        spec = score_spec(m)
        if spec is not None and "<" in spec.pattern:
            groups.setdefault(spec.pattern, []).append(m)
    return {k: v for k, v in groups.items() if len(v) >= FAMILY_MIN}


def _family_block(
    pattern: str, members: list[str], columns: list[tuple[str, Mapping[str, Any]]]
) -> list[str]:
    """One table: a column per member (its name past the pattern's prefix), a row per method."""
    prefix = pattern.split("<", 1)[0]
    keys = [m[len(prefix) :] for m in members]
    rows = [(name, [fmt(scores.get(m)) if m in scores else "" for m in members]) for name, scores in columns]
    # A row of zeros is a baseline's "none of it" by construction (edit_reached): it says nothing.
    rows = [(name, cells) for name, cells in rows if any(cells) and set(cells) - {"0", ""}]
    head = f"{pattern} {arrow(members[0])}".rstrip()
    width = max([len(head)] + [len(name) for name, _ in rows])
    widths = [max([len(k)] + [len(cells[i]) for _, cells in rows]) for i, k in enumerate(keys)]
    lines = [head.ljust(width) + "".join(f"  {k:>{w}}" for k, w in zip(keys, widths))]
    lines += [
        name.ljust(width) + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths)) for name, cells in rows
    ]
    return lines


def scores_block(metrics_doc: Mapping[str, Any], primary_metric: str) -> str:
    """Model, both baselines and the floor per metric (primary first), aligned in a preformatted block;
    a score family (per region, edit or stride) as one table of its own below."""
    model = metrics_doc.get("model") or {}
    baselines = metrics_doc.get("baselines") or {}
    columns = [("model", model)] + [(b, baselines.get(b) or {}) for b in BASELINE_NAMES]
    columns.append(("floor", floor_scores(metrics_doc)))
    # Intervals and spreads are shown beside their score, not as metrics of their own.
    metrics = sorted(
        (m for m in model if isinstance(model[m], (int, float)) and not is_statistic(m)),
        key=lambda m: (m != primary_metric, m),
    )
    families = _families([m for m in metrics if m != primary_metric])
    in_family = {m for members in families.values() for m in members}
    metrics = [m for m in metrics if m not in in_family]
    labels = {m: f"{m} {arrow(m)}".rstrip() + (" *" if m == primary_metric else "") for m in metrics}
    width = max([len("metric")] + [len(v) for v in labels.values()])
    cells = [[with_interval(scores, m) for m in metrics] for _, scores in columns]
    widths = [max([len(name)] + [len(c) for c in col]) for (name, _), col in zip(columns, cells)]
    head = "metric".ljust(width) + "".join(f"  {name:>{w}}" for (name, _), w in zip(columns, widths))
    rows = [
        labels[m].ljust(width) + "".join(f"  {col[i]:>{w}}" for col, w in zip(cells, widths))
        for i, m in enumerate(metrics)
    ]
    left_out = []
    for pattern, members in families.items():
        if pattern in CARD_LEFT_OUT:
            left_out.append(pattern)
            continue
        rows += ["", *_family_block(pattern, members, columns)]
    note = [f"Also in the metrics file: {', '.join(left_out)}."] if left_out else []
    return "\n".join(["```text", head, *rows, "```", *note])


def _int(value: Any) -> int | None:
    return (
        int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None
    )


def training_lines(metrics_doc: Mapping[str, Any], training: Mapping[str, Any] | None) -> list[str]:
    """Dataset, image size, images seen and steps (checkpoint info of the metrics doc) and the budget."""
    training = training or {}
    gen = metrics_doc.get("generator") or {}
    protocol = metrics_doc.get("protocol") or {}
    dataset = training.get("dataset") or metrics_doc.get("dataset") or protocol.get("dataset")
    kind = ", ".join(
        str(v)
        for v in (
            training.get("layout") or protocol.get("layout"),
            "synthetic" if training.get("synthetic") else None,
        )
        if v
    )
    n_train = _int((protocol.get("reference_set") or {}).get("count"))
    size = protocol.get("image_size")
    data = f"- data: `{dataset or 'unknown'}`" + (f" ({kind})" if kind else "")
    if n_train is not None:
        data += f", {n_train} training images"
    if size:
        data += f", at {_size(size)}"
    lines = [data]
    images, steps = _int(gen.get("images")), _int(gen.get("step"))
    batch, workers, total = (_int(training.get(k)) for k in ("batch_size", "workers", "total_images"))
    if images is not None or steps is not None:
        seen = f"- budget: {images if images is not None else '?'} training images seen in {steps if steps is not None else '?'} steps"
        if batch and workers:
            seen += f" (batch {batch} per worker × {workers} workers)"
        if images and n_train:
            seen += f", {images / n_train:.3g} epochs"
        if total:
            seen += f"; `train.total_images` {total}"
        lines.append(seen)
    ckpt = [
        f"step {steps}" if steps is not None else None,
        f"variant `{gen['variant']}`" if gen.get("variant") else None,
        f"sha256 `{str(gen['state_sha256'])[:12]}`" if gen.get("state_sha256") else None,
    ]
    if any(ckpt):
        lines.append("- checkpoint (EMA weights): " + ", ".join(c for c in ckpt if c))
    return lines


def protocol_lines(metrics_doc: Mapping[str, Any]) -> list[str]:
    protocol = metrics_doc.get("protocol") or {}
    sha = metrics_doc.get("protocol_sha256")
    lines = [f"Evaluation protocol sha256 `{sha}` (scores compare only under the same hash)."]
    facts = []
    if protocol.get("pairs"):
        facts.append(f"{protocol['pairs']} held-out test pairs")
    nets = protocol.get("feature_extractors") or {}
    names = sorted({str(v.get("name")) for v in nets.values() if isinstance(v, Mapping) and v.get("name")})
    if names:
        facts.append("distances on " + ", ".join(names) + " features")
    if (protocol.get("masked") or {}).get("enabled"):
        facts.append("masked scores on the body mask")
    if floor_scores(metrics_doc):
        facts.append("floor: the real target images scored as if generated")
    if facts:
        lines.append("; ".join(facts) + ". `*` marks the primary metric, ↑/↓ which way is better.")
    return lines


def evaluation_files_lines(
    files: Sequence[str],
    run_id: str | None,
    experiment_id: str | None,
    model_id: str | None,
    links: bool = True,
) -> list[str]:
    """Where the evaluation's sample grid and plots are: the model's ``extra_files/`` and the run's
    ``evaluation/``; the images link to the run's artifact viewer when the ids are known."""
    if not files:
        return []
    model_files = "**Source model** > Artifacts"
    if links and experiment_id and model_id:
        model_files = f"[Source model > Artifacts](#/experiments/{experiment_id}/models/{model_id}/artifacts)"
    run_files = f"#/experiments/{experiment_id}/runs/{run_id}/artifacts/evaluation/"
    named = []
    for name in files:
        if links and experiment_id and run_id and name.lower().endswith((".png", ".jpg", ".jpeg", ".svg")):
            named.append(f"[{name}]({run_files}{name})")
        else:
            named.append(f"`{name}`")
    return [
        "## Evaluation files",
        f"The sample grid, plots and metrics are logged with the model ({model_files}, `extra_files/`) "
        "and to the source run (`evaluation/`): " + ", ".join(named) + ".",
    ]


def _ci(gain: Any, low: Any, high: Any) -> str:
    return f"{gain:+.4g}, 95% CI [{low:+.4g}, {high:+.4g}]"


def promotion_lines(promotion: Mapping[str, Any] | None, primary_metric: str) -> list[str]:
    """The rule that decided (``register.promotion_policy``) and its numbers: the gain over the
    champion and over each baseline with their paired-bootstrap intervals (PromotionDecision.record)."""
    if not promotion:
        return []
    lines = [f"Rule `{promotion['policy']}`: {promotion['rule']}."]
    champ = promotion.get("versus_champion")
    if champ:
        units = (
            f"{champ['identities']} identities, {champ['pairs']} pairs"
            if champ.get("identities")
            else f"{champ['pairs']} pairs"
        )
        lines.append(
            f"- over champion v{promotion.get('champion_version')}: `{primary_metric}` gain "
            f"{_ci(champ['gain'], champ['ci95_low'], champ['ci95_high'])}, {champ['verdict']} "
            f"({champ['method']}, {units})"
        )
    elif promotion.get("champion_version"):
        lines.append(
            f"- over champion v{promotion['champion_version']}: no paired interval (per-pair scores missing)"
        )
    else:
        lines.append("- no champion before this version")
    for baseline, b in (promotion.get("versus_baselines") or {}).items():
        if b.get("gain") is None:
            lines.append(f"- over {baseline}: no `{primary_metric}` verdict in the evaluation record")
        else:
            how = (
                f" ({b['method']}, {b['identities']} identities)"
                if b.get("identities")
                else (f" ({b['method']})" if b.get("method") else "")
            )
            lines.append(
                f"- over {baseline}: `{primary_metric}` gain {_ci(b['gain'], b['ci95_low'], b['ci95_high'])}, "
                f"{b['verdict']}{how}"
            )
    return lines


def version_card(
    *,
    model_name: str,
    version: str,
    shape: ModelShape,
    metrics_doc: Mapping[str, Any],
    primary_metric: str,
    promoted: bool,
    reason: str,
    champion_version: str,
    run_id: str | None = None,
    experiment_id: str | None = None,
    model_id: str | None = None,
    evaluation_files: Sequence[str] = (),
    training: Mapping[str, Any] | None = None,
    request_example: Mapping[str, Any] | None = None,
    promotion: Mapping[str, Any] | None = None,
) -> str:
    """The Markdown card of version ``version`` of ``model_name``, as registered.

    ``metrics_doc`` is the evaluation's metrics JSON (scores, baselines, floor, protocol and its
    hash, the evaluated checkpoint); ``training`` the card's training facts beyond it (``dataset``,
    ``layout``, ``synthetic``, ``batch_size``, ``workers``, ``total_images``); ``evaluation_files``
    the file names of the evaluation's plots and sample grid as logged; ``promotion`` the decision's
    policy, rule and numbers (:meth:`pipelines.registry.promotion.PromotionDecision.record`)."""
    task = check_task(shape.task)
    value = (metrics_doc.get("model") or {}).get(primary_metric)
    decision = (
        f"promoted to **{CHAMPION}**: {reason}."
        if promoted
        else f"**{CANDIDATE}** only, {CHAMPION} stays v{champion_version}: {reason}."
        if champion_version
        else f"**{CANDIDATE}** only: {reason}."
    )
    better = "lower" if direction(primary_metric) == LOWER else "higher"

    def card(links: bool, contract: bool) -> str:
        parts = [
            f"# {model_name} v{version}: {TASK_TITLES[task]}",
            TASK_SUMMARIES[task] + (f" AttnFlow EMA generator from run `{run_id}`." if run_id else ""),
            "",
            "## Promotion",
            f"At registration: {decision} Primary metric `{primary_metric}` = {fmt(value)} ({better} is better).",
            *promotion_lines(promotion, primary_metric),
            "",
            "## Scores",
            scores_block(metrics_doc, primary_metric),
            *protocol_lines(metrics_doc),
            "",
            "## Training",
            *training_lines(metrics_doc, training),
            "",
            contract_section(shape)
            if contract
            else "## Request and response\nAs in the registered model's description (the columns of pipelines/serving/contract.py).",
            "",
            *evaluation_files_lines(evaluation_files, run_id, experiment_id, model_id, links),
            "",
            usage_section(model_name, version, task, request_example if links else None),
        ]
        return "\n".join(parts).replace("\n\n\n", "\n\n").strip() + "\n"

    return fit(
        card(links=True, contract=True), card(links=False, contract=True), card(links=False, contract=False)
    )


def fit(*texts: str) -> str:
    """The first text within :data:`MAX_DESCRIPTION` (the fullest first); else the last, cut to it."""
    for text in texts:
        if len(text) <= MAX_DESCRIPTION:
            return text
    tail = "\n\n(cut to MLflow's description limit)\n"
    return texts[-1][: MAX_DESCRIPTION - len(tail)] + tail


def registered_model_card(
    *,
    model_name: str,
    shape: ModelShape,
    champion: ChampionSummary | None,
    candidate_version: str | None = None,
    request_example: Mapping[str, Any] | None = None,
    policy: str = DEFAULT_POLICY,
) -> str:
    """The registered model's Markdown card: the task, the contract, and which version is champion."""
    task = check_task(shape.task)
    if champion is None:
        champ = f"No **{CHAMPION}** yet."
    else:
        score = f", {champion.primary_metric} {fmt(champion.value)}" if champion.primary_metric else ""
        on = f" on `{champion.dataset}`" if champion.dataset else ""
        proto = f" (protocol `{champion.protocol_sha256[:12]}`)" if champion.protocol_sha256 else ""
        champ = f"**{CHAMPION}** is v{champion.version}{score}{on}{proto}: `models:/{model_name}@{CHAMPION}`."
    cand = f" **{CANDIDATE}** is v{candidate_version}, the newest version." if candidate_version else ""
    parts = [
        f"# {model_name}: {TASK_TITLES[task]}",
        TASK_SUMMARIES[task],
        "",
        champ + cand,
        (
            f"`{CANDIDATE}` marks every new version; `{CHAMPION}` moves to it under the same evaluation protocol "
            f"by `register.promotion_policy` `{policy}`: {POLICY_RULES.get(policy, policy)}. Each version's "
            "description is its card: scores against the baselines, the promotion decision with its numbers, "
            "training data and budget, evaluation files."
        ),
        "",
        contract_section(shape),
        "",
        usage_section(model_name, None, task, request_example),
    ]
    return fit("\n".join(parts).strip() + "\n")
