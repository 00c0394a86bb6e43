"""MLflow model registry glue: log the EMA generator, register it, move aliases by the rule.

The rule users rely on: every new version gets alias ``candidate``; ``champion`` moves to it only
when its primary metric beats the current champion's *on the same evaluation protocol* (or there
is no champion yet).  When the champion was scored under another protocol, its score is not
comparable: the champion is re-scored under the candidate's protocol if a re-evaluation function
is given, and otherwise left where it is.  :mod:`pipelines.register` is the CLI around this.
"""
from __future__ import annotations

import json
import math
import platform
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from datasets.shards.loader import eval_loader
from datasets.shards.tar import load_manifest
from model.export import PackedGenerator, pack_inputs
from pipelines.serving import flavor
from pipelines.serving.contract import check_task, example_request, task_for_channels

CANDIDATE, CHAMPION = "candidate", "champion"
MODEL_ARTIFACT = "generator_ema"
TASK_MODEL_NAMES = {"pose": "attnflow-pose", "portrait": "attnflow-portrait"}

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


# What loading the model needs: the PyTorch form (torch, numpy, cloudpickle) and the served
# pyfunc form (the apps' imaging and data code).  The pose extra (mediapipe) stays optional.
MODEL_DISTRIBUTIONS = ("torch", "numpy", "cloudpickle", "mlflow", "pillow", "opencv-python-headless",
                       "albumentations", "scipy", "pyyaml")


def project_pip_requirements() -> list[str]:
    """What loading the model needs, pinned to this environment's versions (never a +cpu local tag)."""
    reqs = []
    for dist in MODEL_DISTRIBUTIONS:
        version = metadata.version(dist).split("+")[0]
        reqs.append(f"{dist}=={version}")
    return reqs


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


@dataclass(frozen=True)
class Registration:
    model_name: str
    version: str
    model_uri: str  # models:/<name>/<version>
    promoted: bool
    reason: str
    champion_version: str  # after the decision


def _champion(client: Any, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None  # no registered model yet, or no champion alias


def register_generator(
    exported: PackedGenerator,
    example: np.ndarray,
    *,
    model_name: str,
    metrics_doc: dict,
    primary_metric: str,
    run_id: str | None = None,
    artifacts: Sequence[Path] = (),
    tags: dict[str, str] | None = None,
    rescore: Callable[[str], float] | None = None,
    experiment: str = "attnflow",
    task: str | None = None,
    request_example: Mapping[str, str] | None = None,
) -> Registration:
    """Log ``exported`` to ``run_id`` (a new run in ``experiment`` when None), register it as
    ``model_name``, set ``candidate``, and move ``champion`` by the rule in the module docstring.

    ``metrics_doc`` is the evaluation's metrics JSON (``model`` scores and ``protocol_sha256``);
    ``example`` a packed input [1, C, H, W] whose output is stored beside the model so a fresh
    process can check it reproduces the registration-time output.  The model loads both as the
    PyTorch PackedGenerator and as the column service of ``task`` ("pose" or "portrait"; None: by
    the generator's pose channels), see :mod:`pipelines.serving.flavor`; ``request_example`` is one
    service request (column -> value), stored as the model's input example.
    """
    import mlflow

    scores = metrics_doc["model"]
    if primary_metric not in scores:
        raise ValueError(f"primary metric {primary_metric!r} is not among the evaluated scores: {', '.join(sorted(scores))}")
    bad = [n for n, p in exported.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise ValueError(f"refusing to register a generator with non-finite parameters: {', '.join(bad[:5])}")
    candidate_value = float(scores[primary_metric])
    protocol = str(metrics_doc["protocol_sha256"])

    task = check_task(task) if task is not None else task_for_channels(exported.pose_channels)
    example = np.ascontiguousarray(example, dtype=np.float32)
    with torch.no_grad():
        reference = exported(torch.from_numpy(example)).numpy()
    client = mlflow.MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        np.save(staging / "reference_input.npy", example)
        np.save(staging / "reference_output.npy", reference)
        (staging / "metrics.json").write_text(json.dumps(metrics_doc, indent=2, sort_keys=True))
        extra = [str(staging / "reference_input.npy"), str(staging / "reference_output.npy"),
                 str(staging / "metrics.json")] + [str(p) for p in artifacts]
        if run_id is None:
            mlflow.set_experiment(experiment)
            run_ctx = mlflow.start_run(run_name=f"register-{model_name}")
        else:
            run_ctx = mlflow.start_run(run_id=run_id)
        with run_ctx as run:
            # Pickled (any batch size; "pt2" would fix it to the example's 1), with the model,
            # datasets and pipelines packages as code: cloudpickle stores the classes by
            # reference, and the pyfunc form serves through the apps.
            info = flavor.log_model(
                exported,
                task=task,
                name=MODEL_ARTIFACT,
                input_example=request_example,
                pip_requirements=project_pip_requirements(),
                extra_files=extra,
                metadata={"python": platform.python_version(),
                          "packed_input": "source_image(3)|source_pose(P)|target_pose(P)",
                          "packed_shape": [int(v) for v in example.shape[1:]]},
            )
            for p in artifacts:
                mlflow.log_artifact(str(p), artifact_path="evaluation")
            finite = {k: float(v) for k, v in scores.items() if isinstance(v, (int, float)) and math.isfinite(v)}
            mlflow.log_metrics({f"eval/{k}": v for k, v in finite.items()}, model_id=info.model_id)
            run_id = run.info.run_id

    version_tags = {
        TAG_PRIMARY_METRIC: primary_metric,
        TAG_PRIMARY_VALUE: repr(candidate_value),
        TAG_PROTOCOL: protocol,
        **{f"metric.{k}": f"{v:.6g}" for k, v in finite.items()},
        **(tags or {}),
    }
    mv = mlflow.register_model(info.model_uri, model_name, tags=version_tags)
    version = str(mv.version)
    champion = _champion(client, model_name)
    decision = decide_promotion(primary_metric, candidate_value, protocol, champion, rescore, model_name)
    client.set_registered_model_alias(model_name, CANDIDATE, version)
    if decision.promote:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    client.set_model_version_tag(model_name, version, "promotion", decision.reason)
    client.update_model_version(model_name, version, description=(
        f"EMA generator from run {run_id}. {primary_metric}={candidate_value:.6g} "
        f"(protocol {protocol[:12]}). Promotion: {decision.reason}."))
    after = _champion(client, model_name)
    return Registration(model_name, version, f"models:/{model_name}/{version}", decision.promote,
                        decision.reason, str(after.version) if after is not None else "")


class ModelLoadError(ValueError):
    """A model URI or folder that does not give an AttnFlow generator; the message says why."""


def load_packed(model: str) -> PackedGenerator:
    """A registered/logged MLflow model URI or a local MLflow model folder -> PackedGenerator."""
    if not (model.startswith(("models:/", "runs:/", "file:")) or (Path(model) / "MLmodel").is_file()):
        raise ModelLoadError(f"--model {model!r}: expected models:/NAME@ALIAS, models:/NAME/VERSION, runs:/… "
                             "or a folder holding an MLmodel file")
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    from pipelines.tracking.journal import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())  # the project's store (MLFLOW_TRACKING_URI overrides)
    try:
        net = mlflow.pytorch.load_model(model, map_location="cpu")
    except MlflowException as exc:
        raise ModelLoadError(f"--model {model}: {exc.message.splitlines()[0]}") from None
    if not isinstance(net, PackedGenerator):
        raise ModelLoadError(f"--model {model}: not an AttnFlow generator (got {type(net).__name__})")
    return net.eval()


def export_generator(ema: torch.nn.Module, shards: str | Path
                     ) -> tuple[PackedGenerator, np.ndarray, float, dict[str, str]]:
    """The EMA generator as the registry serves it (one packed tensor in, the image out), the
    input example (the first test pair, as the loader gives it), the largest difference between
    the exported and the direct output on it (a reproducibility check: should be 0), and the same
    pair as a request to the served model (:mod:`pipelines.serving.contract`)."""
    manifest = load_manifest(shards)
    size = tuple(int(v) for v in manifest["image_size"])
    sigma = float(manifest["preprocess"]["heatmap_sigma"])
    exported = PackedGenerator(ema, ema.cfg.pose_channels, size, heatmap_sigma=sigma)
    batch = next(iter(eval_loader(shards, batch_size=1, num_workers=0)))
    packed = pack_inputs(batch["source_image"], batch["source_pose"], batch["target_pose"])
    with torch.no_grad():
        direct = ema(batch["source_image"], batch["source_pose"], batch["target_pose"]).image
        err = float((exported(packed) - direct).abs().max())
    task = manifest.get("task") or task_for_channels(exported.pose_channels)
    image = ((batch["source_image"][0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    request = example_request(task, image, batch["source_keypoints"][0].numpy(),
                              batch["target_keypoints"][0].numpy())
    return exported, packed.numpy(), err, request
