"""Train the generator and discriminators (the DVC ``train`` stage).

    python -m pipelines.train --dataset synthetic_fashion [--workers N] [--run-name NAME] [--set …]

``--workers N`` (default ``train.workers``) runs a Ray ``TorchTrainer`` with N workers: gloo and one
thread per worker on CPU, nccl and one GPU per worker when the cluster has GPUs. It joins the
cluster named by ``train.ray_address`` or ``RAY_ADDRESS``, else starts a local Ray bound to
127.0.0.1 (shut down again at the end). ``--workers 0`` runs the same loop in this process
without Ray.

Resuming: the run name (``--run-name``, else ``train.run_name``, else the dataset name) names
``runs/<run>/`` and the checkpoints under ``<train.storage_path>/<run>/checkpoints``. Re-running
with the same name continues from the newest committed checkpoint (a larger
``train.total_images`` extends the run); a new name starts fresh. A run whose newest checkpoint
was trained with a different model, loss or optimiser config is refused rather than resumed.

Outputs: ``runs/<run>/summary.json`` (images, steps, losses, images/s, skipped steps, MLflow run
id), ``runs/<run>/grids/*.png``, checkpoints, and the MLflow run (see pipelines/tracking/journal.py).
Exit status: 0 when training completed, 1 when it stopped (numerical fault, failures beyond
``train.max_failures``), 2 for a usage or config error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

T_COMMAND = time.time()

import torch

from datasets import storage as data_storage
from datasets.files import atomic_write_text, file_sha256
from datasets.parallel import resolve_address
from datasets.specs import DatasetSpec
from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.config.params import add_config_args, config_from_args, dataset_from_args, to_dict
from pipelines.config.schema import Config
from pipelines.config.stages import TrainConfig
from pipelines.runs.folder import RunFolder
from pipelines.runs.records import TrainSummary
from pipelines.tracking.journal import (
    default_artifact_location,
    git_commit,
    prepare_local_store,
    project_root,
    tracking_uri,
)
from pipelines.training.checkpoint import (
    CheckpointReadError,
    CheckpointStore,
    DamagedCheckpointError,
)
from pipelines.training.loop import LocalSession, LoopContext, run_worker
from pipelines.training.placement import Placement, PlacementError, decide
from pipelines.training.ray_trainer import train_on_ray
from pipelines.training.resume import ResumeError, prepare_run

log = logging.getLogger("train")


def _usage_error(message: str) -> int:
    log.error("%s", message)
    return 2


def _resolve(path: str, root: Path) -> str:
    """Absolute form of a params path (URLs untouched): workers may run in another directory."""
    if data_storage.is_url(path):
        return path
    return str(root / data_storage.local_path(path))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", help="dataset name from params.yaml (default: train.dataset)")
    parser.add_argument(
        "--workers", type=int, help="Ray Train workers; 0 = in-process, no Ray (default: train.workers)"
    )
    parser.add_argument(
        "--run-name", help="run folder name; the same name resumes (default: train.run_name or the dataset)"
    )
    parser.add_argument(
        "--no-mlflow", action="store_true", help="do not log to MLflow (summary and checkpoints only)"
    )
    parser.add_argument(
        "--profile-comm",
        action="store_true",
        help="time the step's phases for the breakdown (the gradient all-reduce made synchronous; the "
        "H2D copy, on-device expansion, forward/backward and optimiser each synchronised)",
    )
    add_config_args(parser)
    add_log_level_arg(parser)
    return parser


class _UsageError(Exception):
    """A usage or config error found before anything starts: one line, exit status 2."""


def _with_flag_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` overrides plus the ones ``--dataset``, ``--workers`` and ``--run-name`` stand for."""
    overrides = list(args.overrides)
    if args.dataset:
        overrides.append(f"train.dataset={args.dataset}")
    if args.workers is not None:
        overrides.append(f"train.workers={args.workers}")
    if args.run_name:
        overrides.append(f"train.run_name={args.run_name}")
    return overrides


def _placement(tcfg: TrainConfig) -> Placement:
    """Where the workers run; a GPU run on a machine without one fails here, in one line."""
    try:
        return decide(
            tcfg.device,
            gpus_per_worker=tcfg.gpus_per_worker,
            threads_per_worker=tcfg.threads_per_worker,
            on_cluster=tcfg.workers > 0 and resolve_address(tcfg.ray_address) is not None,
            local_cuda=torch.cuda.is_available(),
        )
    except PlacementError as exc:
        raise _UsageError(str(exc)) from exc


def _check_loss_weights(cfg: Config, params: list[str], root: Path) -> None:
    """The paper's perceptual loss needs the VGG19 weights on disk (before any worker starts)."""
    if cfg.loss.backbone == "vgg19" and not (
        cfg.loss.vgg19_weights and Path(_resolve(cfg.loss.vgg19_weights, root)).is_file()
    ):
        raise _UsageError(
            f"loss.backbone is vgg19 ({', '.join(params)}) but loss.vgg19_weights "
            f"{cfg.loss.vgg19_weights!r} is not a file; nothing is downloaded: put a torchvision "
            "VGG19 state dict (vgg19-dcbb9e9d.pth) there, or set loss.backbone: effnet_lite0"
        )


def _shard_manifest(shards: str, cfg: Config, spec: DatasetSpec, params: list[str]) -> bytes:
    """The shards' manifest.json, its pose channels checked against the model's."""
    dataset = cfg.train.dataset
    try:
        manifest_bytes = data_storage.read_bytes(data_storage.join(shards, "manifest.json"))
    except FileNotFoundError as exc:
        raise _UsageError(
            f"no shards for {dataset!r} at {data_storage.safe_url(shards)} (missing "
            f"manifest.json); run `python -m pipelines.preprocess --dataset {dataset}` "
            "(or `dvc repro`) first"
        ) from exc
    except data_storage.StorageError as exc:
        raise _UsageError(str(exc)) from exc
    channels = json.loads(manifest_bytes).get("pose_channels")
    if channels is not None and channels != cfg.model.pose_channels:
        hint = (
            " (the portrait task trains with --params params.yaml --params portrait/params.yaml)"
            if spec.task == "portrait"
            else ""
        )
        raise _UsageError(
            f"model.pose_channels is {cfg.model.pose_channels} ({', '.join(params)}) but the "
            f"{dataset} shards carry {channels} pose channels{hint}"
        )
    return manifest_bytes


def _loop_context(
    cfg: Config,
    args: argparse.Namespace,
    run_name: str,
    run: RunFolder,
    shards: str,
    manifest_bytes: bytes,
    root: Path,
) -> LoopContext:
    """What every worker's loop is given: the config, the run's places and its MLflow tags."""
    tags = {
        "git_commit": git_commit(root),
        "dvc_lock_sha256": file_sha256(root / "dvc.lock"),
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "dataset": cfg.train.dataset,
        # Where the data and the checkpoints live (bucket URLs on a cluster), credentials stripped.
        "shards": data_storage.safe_url(shards),
        "checkpoints": data_storage.safe_url(run.checkpoints),
    }
    return LoopContext(
        config=cfg,
        run_name=run_name,
        run_dir=str(run.path),
        checkpoint_root=run.checkpoints,
        shards=shards,
        tags=tags,
        t_command=T_COMMAND,
        progress_bar=sys.stderr.isatty(),
        tracking_uri=tracking_uri(),
        artifact_location=default_artifact_location(),
        track=not args.no_mlflow,
        profile_comm=args.profile_comm,
        log_level=args.log_level,
    )


def _train(
    ctx: LoopContext, run: RunFolder, store: CheckpointStore, root: Path, placement: Placement, resuming: bool
) -> TrainSummary | None:
    """Train in this process (``--workers 0``) or on Ray; None when it failed (logged)."""
    tcfg = ctx.config.train
    log.info(
        "run %r: %s, dataset %s, %s Ray workers, %d images, checkpoints in %s",
        ctx.run_name,
        "resuming" if resuming else "fresh",
        tcfg.dataset,
        tcfg.workers or "no",
        tcfg.total_images,
        ctx.checkpoint_root,
    )
    if ctx.track:
        prepare_local_store(ctx.tracking_uri, tcfg.mlflow_experiment, ctx.artifact_location)
    log.info("placement: %s (%s)", placement.device, placement.note)
    if tcfg.workers == 0:
        try:
            return run_worker(ctx, LocalSession(placement.device))
        except (CheckpointReadError, DamagedCheckpointError) as exc:  # a clear line, not a traceback
            log.error("run %r stopped: %s", ctx.run_name, exc)
            return None
    store.drop_ray_snapshot()  # it may name checkpoints the store has pruned since (see there)
    return train_on_ray(ctx, tcfg, run.storage, root, placement)  # None: failed on Ray (logged there)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, "train")
    args.overrides = _with_flag_overrides(args)
    cfg = config_from_args(args)
    tcfg = cfg.train
    root = project_root()
    try:  # before anything starts
        placement = _placement(tcfg)
        spec = dataset_from_args(cfg, tcfg.dataset)
        _check_loss_weights(cfg, args.params, root)
        shards = _resolve(spec.shards, root)  # a folder or a URL prefix (s3://…)
        manifest_bytes = _shard_manifest(shards, cfg, spec, args.params)
    except _UsageError as exc:
        return _usage_error(str(exc))
    run_name = tcfg.run_name or tcfg.dataset
    run = RunFolder.of(run_name, tcfg.storage_path, root)
    store = CheckpointStore(run.checkpoints, keep=tcfg.keep_checkpoints)
    try:
        resuming = prepare_run(run, store, to_dict(cfg))
    except ResumeError as exc:
        return _usage_error(str(exc))
    except CheckpointReadError as exc:
        log.error("cannot resume run %r: %s", run_name, exc)
        return 1
    run.path.mkdir(parents=True, exist_ok=True)
    ctx = _loop_context(cfg, args, run_name, run, shards, manifest_bytes, root)
    summary = _train(ctx, run, store, root, placement, resuming)
    if summary is None:
        return 1
    if run.checkpoints_in_bucket and summary.completed:
        write_checkpoint_receipt(store, run)
    return _report(summary, run)


def write_checkpoint_receipt(store: CheckpointStore, run: RunFolder) -> None:
    """With checkpoints in a bucket, ``runs/<run>/checkpoints`` (the train stage's DVC output) holds
    where they are and the newest one's commit marker (its sha256): a content hash of the model, so
    evaluation reruns exactly when it changes. Nothing loads weights from here."""
    committed = store.committed()
    if not committed:
        return
    newest = committed[-1]
    marker = store.marker(newest)
    atomic_write_text(run.receipt_location, f"{data_storage.safe_url(run.checkpoints)}\n")
    atomic_write_text(
        run.receipt_commit,
        json.dumps({"checkpoint": newest.path.rsplit("/", 1)[-1], **marker}, indent=1, sort_keys=True) + "\n",
    )


def _report(summary: TrainSummary, run: RunFolder) -> int:
    if not summary.completed:
        log.error("stopped: %s", summary.error)
        return 1
    first, last = summary.first_losses or {}, summary.final_losses
    log.info(
        "done: %s images, %s steps, %.1f images/s, %s skipped steps; g_total %.3f -> %.3f; summary %s; "
        "MLflow run %s",
        summary.images,
        summary.steps,
        summary.images_per_s,
        summary.skipped_steps,
        first.get("g_total", float("nan")),
        last.get("g_total", float("nan")),
        run.summary,
        summary.mlflow_run_id,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
