"""Publishing an evaluated EMA generator: log it (both flavours, pipelines/serving/flavor.py), register
it as a version of ``attnflow-pose`` / ``attnflow-portrait``, and move the aliases by
:mod:`pipelines.registry.promotion`.  :mod:`pipelines.register` is the command around this.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets.shards.loader import eval_loader
from datasets.shards.tar import load_manifest
from model.export import PackedGenerator, pack_inputs
from model.generator import AttnFlowGenerator
from pipelines.evaluation.statistics import Resampling, by_identity
from pipelines.registry import cards
from pipelines.registry.promotion import (
    CANDIDATE,
    CHAMPION,
    DEFAULT_POLICY,
    TAG_PRIMARY_METRIC,
    TAG_PRIMARY_VALUE,
    TAG_PROTOCOL,
    PromotionDecision,
    current_champion,
    decide_promotion,
)
from pipelines.runs.records import EvaluationRecord, RegistrationReceipt
from pipelines.serving import flavor
from pipelines.serving.contract import check_task, example_request, task_for_channels

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "generator_ema"


TASK_MODEL_NAMES = {"pose": "attnflow-pose", "portrait": "attnflow-portrait"}


# What loading the model needs: the PyTorch form (torch, numpy, cloudpickle) and the served
# pyfunc form (the apps' imaging and data code).  The pose extra (mediapipe) stays optional.
MODEL_DISTRIBUTIONS = (
    "torch",
    "numpy",
    "cloudpickle",
    "mlflow",
    "pillow",
    "opencv-python-headless",
    "albumentations",
    "scipy",
    "pyyaml",
)


def project_pip_requirements() -> list[str]:
    """What loading the model needs, pinned to this environment's versions (never a +cpu local tag)."""
    reqs = []
    for dist in MODEL_DISTRIBUTIONS:
        version = metadata.version(dist).split("+")[0]
        reqs.append(f"{dist}=={version}")
    return reqs


@dataclass(frozen=True)
class RegistrationRequest:
    """What to register and by which rule: the evaluation that scored the generator, the names,
    files and tags that go with it, and the promotion settings (the ``register`` section)."""

    model_name: str
    record: EvaluationRecord  # its MLflow run (mlflow_run_id) gets the model; None: a new run
    primary_metric: str
    artifacts: Sequence[Path] = ()  # the evaluation's files, attached to the model and the run
    tags: Mapping[str, str] = field(default_factory=dict)  # the version's, beyond the scores
    experiment: str = "attnflow"  # for the new run when the record names none
    task: str | None = None  # "pose" or "portrait"; None: by the generator's pose channels
    request_example: Mapping[str, str] | None = None  # one service request (column -> value)
    # The model card's training facts beyond the record (dataset, layout, synthetic,
    # batch_size, workers, total_images).
    training: Mapping[str, Any] | None = None
    promotion_policy: str = DEFAULT_POLICY  # register.promotion_policy
    bootstrap_resamples: int = 2000
    seed: int = 0


def register_generator(
    exported: PackedGenerator,
    example: np.ndarray,
    request: RegistrationRequest,
    *,
    rescore: Callable[[str], float | tuple[float, list[float] | None]] | None = None,
) -> RegistrationReceipt:
    """Log ``exported`` to the record's training run (a new run in ``request.experiment`` when it
    names none), register it as ``request.model_name``, set ``candidate``, and move ``champion`` by
    the rule in the module docstring; ``rescore`` scores the champion under this protocol when its
    own differs.

    ``example`` is a packed input [1, C, H, W] whose output is stored beside the model so a fresh
    process can check it reproduces the registration-time output.  The model loads both as the
    PyTorch PackedGenerator and as the column service of ``request.task``, see
    :mod:`pipelines.serving.flavor`; ``request.request_example`` is stored as its input example.

    The version's description is its model card and the registered model's names the champion
    (:mod:`pipelines.registry.cards`).  The record's per-pair values make the comparison with the
    champion a paired bootstrap over the record's identities (``pair_identity``); its
    ``model_vs_baselines`` holds the verdicts against the baselines
    (:mod:`pipelines.registry.promotion`).
    """
    import mlflow

    client = mlflow.MlflowClient()
    candidate_value = check_candidate(exported, request)
    task = check_task(request.task) if request.task is not None else task_for_channels(exported.pose_channels)
    logged = log_to_run(exported, example, request, task)
    version = str(
        mlflow.register_model(
            logged.info.model_uri, request.model_name, tags=version_tags(request, logged)
        ).version
    )
    decision = decide(client, request, candidate_value, rescore)
    after = apply_decision(client, request, version, decision)
    shape = cards.ModelShape(task, exported.image_size, exported.pose_channels)
    write_cards(client, request, version, decision, logged, shape, after)
    champion_version = str(after.version) if after is not None else ""
    record, model_name, primary_metric = request.record, request.model_name, request.primary_metric
    return RegistrationReceipt(
        model_name,
        version,
        f"models:/{model_name}/{version}",
        decision.promote,
        decision.reason,
        champion_version,
        decision.record(),
        primary_metric,
        record.model[primary_metric],
        record.protocol_sha256,
    )


@dataclass(frozen=True)
class LoggedModel:
    """The model as logged to its MLflow run, and the scores logged with it."""

    info: Any  # mlflow.models.model.ModelInfo
    run_id: str
    experiment_id: str
    finite_scores: dict[str, float]


def check_candidate(exported: PackedGenerator, request: RegistrationRequest) -> float:
    """The candidate's primary score; refuses a missing primary metric or non-finite weights."""
    scores, primary_metric = request.record.model, request.primary_metric
    if primary_metric not in scores:
        raise ValueError(
            f"primary metric {primary_metric!r} is not among the evaluated scores: {', '.join(sorted(scores))}"
        )
    bad = [n for n, p in exported.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise ValueError(f"refusing to register a generator with non-finite parameters: {', '.join(bad[:5])}")
    return float(scores[primary_metric])


def log_to_run(
    exported: PackedGenerator, example: np.ndarray, request: RegistrationRequest, task: str
) -> LoggedModel:
    """Log the model with both flavours, its reference input/output and the evaluation's files to
    the record's training run (a new run in ``request.experiment`` when it names none)."""
    import mlflow

    record = request.record
    example = np.ascontiguousarray(example, dtype=np.float32)
    with torch.no_grad():
        reference = exported(torch.from_numpy(example)).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        np.save(staging / "reference_input.npy", example)
        np.save(staging / "reference_output.npy", reference)
        (staging / "metrics.json").write_text(json.dumps(record.to_dict(), indent=2, sort_keys=True))
        extra = [
            str(staging / "reference_input.npy"),
            str(staging / "reference_output.npy"),
            str(staging / "metrics.json"),
        ] + [str(p) for p in request.artifacts]
        if record.mlflow_run_id is None:
            mlflow.set_experiment(request.experiment)
            run_ctx = mlflow.start_run(run_name=f"register-{request.model_name}")
        else:
            run_ctx = mlflow.start_run(run_id=record.mlflow_run_id)
        with run_ctx as run:
            # Pickled (any batch size; "pt2" would fix it to the example's 1), with the model,
            # datasets and pipelines packages as code: cloudpickle stores the classes by
            # reference, and the pyfunc form serves through the apps.
            info = flavor.log_model(
                exported,
                task=task,
                name=MODEL_ARTIFACT,
                input_example=request.request_example,
                pip_requirements=project_pip_requirements(),
                extra_files=extra,
                metadata={
                    "python": platform.python_version(),
                    "packed_input": "source_image(3)|source_pose(P)|target_pose(P)",
                    "packed_shape": [int(v) for v in example.shape[1:]],
                },
            )
            for p in request.artifacts:
                mlflow.log_artifact(str(p), artifact_path="evaluation")
            finite = {
                k: float(v)
                for k, v in record.model.items()
                if isinstance(v, (int, float)) and math.isfinite(v)
            }
            mlflow.log_metrics({f"eval/{k}": v for k, v in finite.items()}, model_id=info.model_id)
            return LoggedModel(info, run.info.run_id, run.info.experiment_id, finite)


def version_tags(request: RegistrationRequest, logged: LoggedModel) -> dict[str, str]:
    """The version's tags: its primary score and interval, protocol, scores and networks."""
    scores, primary_metric = request.record.model, request.primary_metric
    tags = {
        TAG_PRIMARY_METRIC: primary_metric,
        TAG_PRIMARY_VALUE: repr(float(scores[primary_metric])),
        TAG_PROTOCOL: request.record.protocol_sha256,
        **{f"metric.{k}": f"{v:.6g}" for k, v in logged.finite_scores.items()},
        **network_tags(request.record.to_dict()),
        **request.tags,
    }
    low, high = scores.get(f"{primary_metric}_ci95_low"), scores.get(f"{primary_metric}_ci95_high")
    if low is not None and high is not None:
        tags[f"{TAG_PRIMARY_METRIC}_ci95"] = f"[{low:.6g}, {high:.6g}]"
    return tags


def decide(
    client: Any,
    request: RegistrationRequest,
    candidate_value: float,
    rescore: Callable[[str], float | tuple[float, list[float] | None]] | None,
) -> PromotionDecision:
    """The promotion rule applied to the candidate against the current champion and the baselines."""
    record, model_name, primary_metric = request.record, request.model_name, request.primary_metric
    protocol = record.protocol_sha256
    metrics_doc = record.to_dict()
    candidate_pairs = per_pair_values(metrics_doc, primary_metric)
    return decide_promotion(
        primary_metric,
        candidate_value,
        protocol,
        current_champion(client, model_name),
        rescore,
        model_name,
        policy=request.promotion_policy,
        candidate_pairs=candidate_pairs,
        champion_pairs=lambda mv: champion_per_pair(mv, model_name, primary_metric, protocol),
        versus_baselines=record.model_vs_baselines,
        resampling=record_resampling(metrics_doc, len(candidate_pairs or ())),
        resamples=request.bootstrap_resamples,
        seed=request.seed,
    )


def apply_decision(
    client: Any, request: RegistrationRequest, version: str, decision: PromotionDecision
) -> Any:
    """Aliases and promotion tags as decided; the champion afterwards (its ModelVersion, or None)."""
    model_name = request.model_name
    client.set_registered_model_alias(model_name, CANDIDATE, version)
    if decision.promote:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    client.set_model_version_tag(model_name, version, "promotion", decision.reason)
    client.set_model_version_tag(model_name, version, "promotion_policy", request.promotion_policy)
    if decision.comparison is not None:
        c = decision.comparison
        client.set_model_version_tag(model_name, version, "promotion_gain", f"{c.gain:.6g}")
        client.set_model_version_tag(
            model_name, version, "promotion_gain_ci95", f"[{c.low:.6g}, {c.high:.6g}]"
        )
        client.set_model_version_tag(
            model_name, version, "promotion_beyond_noise", str(c.beyond_noise).lower()
        )
        client.set_model_version_tag(model_name, version, "promotion_bootstrap", c.over())
    for b in decision.baselines:
        if b.gain is not None:
            client.set_model_version_tag(
                model_name,
                version,
                f"promotion_vs_{b.baseline}",
                f"{b.gain:.6g} [{b.low:.6g}, {b.high:.6g}] {b.verdict}",
            )
    after = current_champion(client, model_name)
    champion_version = str(after.version) if after is not None else ""
    if not decision.promote:
        log.info(
            "%s v%s registered as %s only (champion: %s): %s",
            model_name,
            version,
            CANDIDATE,
            f"v{champion_version}" if champion_version else "none yet",
            decision.reason,
        )
    return after


def write_cards(
    client: Any,
    request: RegistrationRequest,
    version: str,
    decision: PromotionDecision,
    logged: LoggedModel,
    shape: cards.ModelShape,
    after: Any,
) -> None:
    """The version's model card and the registered model's (which names the champion ``after``)."""
    model_name = request.model_name
    client.update_model_version(
        model_name,
        version,
        description=cards.version_card(
            model_name=model_name,
            version=version,
            shape=shape,
            metrics_doc=request.record.to_dict(),
            primary_metric=request.primary_metric,
            promoted=decision.promote,
            reason=decision.reason,
            champion_version=str(after.version) if after is not None else "",
            run_id=logged.run_id,
            promotion=decision.record(),
            experiment_id=logged.experiment_id,
            model_id=logged.info.model_id,
            evaluation_files=[Path(p).name for p in request.artifacts],
            training=request.training,
            request_example=request.request_example,
        ),
    )
    client.update_registered_model(
        model_name,
        description=cards.registered_model_card(
            model_name=model_name,
            shape=shape,
            candidate_version=version,
            request_example=request.request_example,
            champion=cards.champion_summary(after.version, after.tags) if after is not None else None,
            policy=request.promotion_policy,
        ),
    )


def network_tags(metrics_doc: Mapping[str, Any]) -> dict[str, str]:
    """The evaluation and loss networks' weight hashes, so a version says what scored it."""
    nets = (metrics_doc.get("protocol") or {}).get("feature_extractors") or {}
    out = {}
    for role, key in (
        ("fd", "eval_fd_network"),
        ("lpd", "eval_lpd_network"),
        ("loss_network", "loss_network"),
    ):
        net = nets.get(role) or {}
        if net:
            out[key] = str(net.get("name") or net.get("backbone"))
            out[f"{key}_sha256"] = str(net.get("weights_sha256"))
    return out


def record_resampling(metrics_doc: Mapping[str, Any], pairs: int) -> Resampling:
    """The units the evaluation record's intervals resample: its pairs' identities, or single pairs
    (with the reason) where it lists none."""
    return by_identity(
        metrics_doc.get("pair_identity"),
        pairs,
        "the evaluation record lists no identity per pair (pair_identity)",
    )


def per_pair_values(metrics_doc: Mapping[str, Any], metric: str) -> list[float] | None:
    """The model's per-pair values of ``metric`` from an evaluation record (None if it has none)."""
    values = ((metrics_doc.get("per_pair") or {}).get("model") or {}).get(metric)
    return [float(v) for v in values] if values else None


def champion_per_pair(champion: Any, model_name: str, metric: str, protocol: str) -> list[float] | None:
    """The champion's per-pair values from the evaluation record stored in its model folder
    (``extra_files/metrics.json``), if it was scored under ``protocol``; None otherwise."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{model_name}/{champion.version}", dst_path=tmp
                )
            )
        except Exception:  # noqa: BLE001 - an unreachable artifact store only costs the noise estimate
            return None
        record = next(local.rglob("extra_files/metrics.json"), None)
        if record is None:
            return None
        doc = json.loads(record.read_text())
    if doc.get("protocol_sha256") != protocol:
        return None
    return per_pair_values(doc, metric)


def export_generator(
    ema: AttnFlowGenerator, shards: str | Path
) -> tuple[PackedGenerator, np.ndarray, float, dict[str, str]]:
    """The EMA generator as the registry serves it (one packed tensor in, the image out), the
    input example (the first test pair, as the loader gives it), the largest difference between
    the exported and the direct output on it (a reproducibility check: should be 0), and the same
    pair as a request to the served model (:mod:`pipelines.serving.contract`)."""
    manifest = load_manifest(shards)
    size = (int(manifest["image_size"][0]), int(manifest["image_size"][1]))
    sigma = float(manifest["preprocess"]["heatmap_sigma"])
    exported = PackedGenerator(ema, ema.cfg.pose_channels, size, heatmap_sigma=sigma)
    batch = next(iter(eval_loader(shards, batch_size=1, num_workers=0)))
    packed = pack_inputs(batch["source_image"], batch["source_pose"], batch["target_pose"])
    with torch.no_grad():
        direct = ema(batch["source_image"], batch["source_pose"], batch["target_pose"]).image
        err = float((exported(packed) - direct).abs().max())
    task = manifest.get("task") or task_for_channels(exported.pose_channels)
    image = ((batch["source_image"][0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    request = example_request(
        task, image, batch["source_keypoints"][0].numpy(), batch["target_keypoints"][0].numpy()
    )
    return exported, packed.numpy(), err, request
