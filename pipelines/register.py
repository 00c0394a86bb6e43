"""Register the evaluated EMA generator in the MLflow model registry (the DVC ``register`` stage).

    python -m pipelines.register --dataset synthetic_fashion

Reads the evaluation record ``metrics/<dataset>.protocol.json`` beside ``metrics/<dataset>.json``
(both written by pipelines.evaluate), loads the very checkpoint that was
evaluated (its sha256 must match), logs its EMA generator to the training run as an MLflow model
(PyTorch flavour: the packed-tensor generator; python_function flavour: the column service of
pipelines/serving that ``mlflow models serve`` answers HTTP with; the request signature and
example, pinned pip requirements, the project packages as code), registers it as
``attnflow-pose`` (``attnflow-portrait`` for portrait datasets), sets alias ``candidate`` and moves
``champion`` by ``register.promotion_policy`` on ``register.primary_metric`` under the same protocol
(default: only when the identity-level paired bootstrap puts the gain over the champion and over
both baselines beyond noise; see pipelines/registry/promotion.py).  A refusal is an ordinary
outcome: the version stays ``candidate``, the champion is unchanged, the receipt says why.  The evaluation's metrics JSON, plots and sample grid are
attached to the model and the run; the version's description is its model card
(pipelines/registry/cards.py).  Writes ``runs/<run>/registered-<dataset>.json``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets.specs import DatasetSpec
from model.generator import AttnFlowGenerator
from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.config.params import add_config_args, config_from_args, dataset_from_args
from pipelines.config.schema import Config
from pipelines.evaluation.generators import (
    EvaluationError,
    GeneratorUnderTest,
    generator_from_checkpoint,
    generator_from_model,
)
from pipelines.evaluation.run import load_record, run_evaluation
from pipelines.registry.publish import (
    TASK_MODEL_NAMES,
    RegistrationRequest,
    export_generator,
    register_generator,
)
from pipelines.runs.folder import RunFolder
from pipelines.runs.records import EvaluationRecord, RegistrationReceipt, protocol_path
from pipelines.tracking.journal import default_artifact_location, git_commit, project_root, tracking_uri
from pipelines.tracking.redact import redact

log = logging.getLogger("register")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipelines.register", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", help="dataset name from params.yaml (default: train.dataset)")
    ap.add_argument(
        "--metrics",
        help="evaluation scores JSON (default: metrics/<dataset>.json); its record "
        "<name>.protocol.json beside it is read",
    )
    ap.add_argument("--run-name", help="training run (default: train.run_name or the dataset)")
    add_config_args(ap)
    add_log_level_arg(ap)
    return ap


def _evaluated_checkpoint(
    metrics_path: Path,
) -> tuple[EvaluationRecord, GeneratorUnderTest, AttnFlowGenerator, dict] | None:
    """The evaluation record and the very checkpoint it scored (its sha256 checked); None when
    either cannot be had (the reason logged)."""
    try:
        record = load_record(metrics_path)
    except EvaluationError as exc:
        log.error("%s", exc)
        return None
    gen_info = record.generator
    if gen_info.get("source") != "checkpoint":
        log.error(
            "%s scores %s, not a training checkpoint; evaluate a checkpoint to register it",
            metrics_path,
            gen_info.get("uri") or "a model",
        )
        return None
    try:
        generator, ema, state = generator_from_checkpoint(gen_info["path"])
    except EvaluationError as exc:
        log.error("%s", redact(str(exc)))
        return None
    if generator.info["state_sha256"] != gen_info.get("state_sha256"):
        log.error(
            "checkpoint %s changed since it was evaluated (sha256 differs); evaluate it again",
            gen_info["path"],
        )
        return None
    return record, generator, ema, state


def _champion_rescorer(
    cfg: Config, dataset: str, record: EvaluationRecord
) -> Callable[[str], tuple[float, list[float] | None]]:
    """How the champion is scored again when its protocol differs from this evaluation's."""
    rcfg = cfg.register

    def rescore(uri: str) -> tuple[float, list[float] | None]:
        # The champion under this evaluation's protocol: same pairs, networks and settings.
        with tempfile.TemporaryDirectory() as tmp:
            redo = run_evaluation(
                cfg,
                dataset,
                generator_from_model(uri),
                run=None,
                metrics_path=Path(tmp) / "m.json",
                plots_dir=Path(tmp) / "plots",
                log_mlflow=False,
                images_dir=Path(tmp) / "images",
            )
        if redo.protocol_sha256 != record.protocol_sha256:
            raise EvaluationError("re-scoring the champion gave another protocol")
        # The per-pair values too: the comparison with the candidate is a paired bootstrap.
        return float(redo.model[rcfg.primary_metric]), redo.per_pair["model"].get(rcfg.primary_metric)

    return rescore


def _version_tags(
    dataset: str, spec: DatasetSpec, record: EvaluationRecord, generator: GeneratorUnderTest
) -> dict[str, str]:
    return {
        "dataset": dataset,
        "task": spec.task,
        "manifest_sha256": str(record.manifest_sha256),
        "variant": str(generator.info.get("variant")),
        "checkpoint_step": str(generator.info.get("step")),
        "checkpoint_sha256": str(generator.info.get("state_sha256")),
        "git_commit": str(git_commit(project_root())),
        "metric_names": ",".join(
            record.metric_names[k] for k in ("fd", "kid", "lpd") if k in record.metric_names
        ),
    }


def _training_facts(dataset: str, spec: DatasetSpec, state: dict) -> dict[str, Any]:
    """The model card's training facts beyond the metrics doc: the data and the run's budget."""
    train_cfg = (state.get("config") or {}).get("train") or {}
    return {
        "dataset": dataset,
        "layout": spec.layout,
        "synthetic": spec.synthetic,
        **{k: train_cfg.get(k) for k in ("batch_size", "workers", "total_images")},
    }


def _use_experiment(experiment: str) -> None:
    """Point MLflow at the project's store, with the training experiment (created if new)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.MlflowClient()
    if client.get_experiment_by_name(experiment) is None:
        client.create_experiment(experiment, artifact_location=default_artifact_location())
    mlflow.set_experiment(experiment)


def _registration_request(
    cfg: Config,
    dataset: str,
    spec: DatasetSpec,
    metrics_path: Path,
    evaluated: tuple[EvaluationRecord, GeneratorUnderTest, AttnFlowGenerator, dict],
    request_example: Any,
) -> RegistrationRequest:
    """What is registered under which name, with its evidence, tags, card facts and promotion rule."""
    record, generator, _ema, state = evaluated
    artifacts = [metrics_path, protocol_path(metrics_path)] + [
        Path(p) for p in record.plots or () if Path(p).is_file()
    ]
    return RegistrationRequest(
        model_name=cfg.register.model_name or TASK_MODEL_NAMES[spec.task],
        record=record,
        primary_metric=cfg.register.primary_metric,
        artifacts=artifacts,
        tags=_version_tags(dataset, spec, record, generator),
        experiment=cfg.train.mlflow_experiment,
        task=spec.task,
        request_example=request_example,
        training=_training_facts(dataset, spec, state),
        promotion_policy=cfg.register.promotion_policy,
        bootstrap_resamples=cfg.evaluate.bootstrap_resamples,
        seed=cfg.evaluate.seed,
    )


def _report(reg: RegistrationReceipt, model_name: str, primary_metric: str) -> None:
    champion = f"v{reg.champion_version}" if reg.champion_version else "none yet"
    print(
        f"registered {model_name} v{reg.version} ({primary_metric}={reg.value:.4f}); "
        f"candidate -> v{reg.version}; champion -> {champion}: {reg.reason}"
    )
    print("browse it: make mlflow-ui, then open http://127.0.0.1:5000/#/models/" + model_name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, "register")
    cfg = config_from_args(args)
    dataset = args.dataset or cfg.train.dataset
    spec = dataset_from_args(cfg, dataset)
    metrics_path = Path(args.metrics or f"metrics/{dataset}.json")
    evaluated = _evaluated_checkpoint(metrics_path)
    if evaluated is None:
        return 2
    record, _generator, ema, _state = evaluated
    exported, example, err, request_example = export_generator(ema, spec.shards)
    if err > 1e-6:
        log.error("the exported generator differs from the checkpoint's by %.2e", err)
        return 1
    _use_experiment(cfg.train.mlflow_experiment)
    registration = _registration_request(cfg, dataset, spec, metrics_path, evaluated, request_example)
    rescore = _champion_rescorer(cfg, dataset, record) if cfg.register.rescore_champion else None
    try:
        reg = register_generator(exported, example, registration, rescore=rescore)
    except (ValueError, EvaluationError) as exc:
        log.error("%s", redact(str(exc)))
        return 2
    run = RunFolder.of(args.run_name or cfg.train.run_name or dataset, cfg.train.storage_path)
    # The receipt: what was registered and the rule that decided, with its numbers (reg.promotion).
    reg.save(run.registered(dataset))
    _report(reg, registration.model_name, cfg.register.primary_metric)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
