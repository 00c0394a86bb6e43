"""The per-worker training loop, shared by ``--workers 0`` (one process, no Ray) and every Ray worker.

One call of :func:`run_worker` is one worker's whole life: build G and D (each DDP-wrapped on
its own when distributed), resume from the newest committed checkpoint that is not damaged (a
storage error stops the run instead: pipelines/training/checkpoint.py), stream this rank's shards,
run the GAN step from ``model/`` until ``train.total_images`` images have been seen (summed over
workers), log from rank 0, checkpoint every ``train.checkpoint_every_images`` images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist

from pipelines.config.params import build_dataclass, to_dict
from pipelines.config.schema import Config
from pipelines.tracking.journal import Tracker, tracking_uri, write_run_meta
from pipelines.training.checkpoint import (
    CheckpointInfo,
    CheckpointStore,
    NonFiniteCheckpointError,
    ResumePoint,
    SkippedCheckpoint,
)
from pipelines.training.faults import FaultHooks, from_env
from pipelines.training.placement import device_facts
from pipelines.training.step_timing import StepTiming

log = logging.getLogger(__name__)


class NumericalFaultError(RuntimeError):
    """Too many consecutive steps with non-finite losses or gradients."""


@dataclass(frozen=True)
class LoopContext:
    """Everything a worker needs. Ray ships it as plain data: :func:`loop_config_from` on the
    driver, :func:`context_from` on each worker (the config loader's to_dict and build_dataclass)."""

    config: Config
    run_name: str
    run_dir: str  # runs/<run_name> under the project root: summary, grids, tracking journal (a folder)
    checkpoint_root: str  # <train.storage_path>/<run_name>/checkpoints: a folder or a URL
    shards: str  # absolute folder of the dataset's shards
    tags: dict[str, Any] = field(default_factory=dict)  # git commit, dvc.lock and manifest hashes
    t_command: float = 0.0  # time.time() when the command started (for time-to-first-step)
    profile_comm: bool = False  # time gradient all-reduce synchronously (benchmark only)
    track: bool = True  # log to MLflow from rank 0
    tracking_uri: str = ""  # resolved by the driver ("" → pipelines.tracking.tracking_uri())
    artifact_location: str | None = None  # for a new experiment in the default SQLite store
    progress_bar: bool = False  # a live bar (the driver's stderr is a terminal) or periodic lines
    log_level: str = "info"  # the command's --log-level, for the Ray workers' own logging


class Session(Protocol):
    rank: int
    world_size: int

    def device(self) -> torch.device: ...

    def report(
        self, metrics: dict[str, float], checkpoint: CheckpointInfo | None, store: CheckpointStore
    ) -> None: ...


class LocalSession:
    """``--workers 0``: one process, no process group, nothing to report to."""

    rank = 0
    world_size = 1

    def __init__(self, device: str = "auto") -> None:
        self._device = torch.device(
            "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
        )

    def device(self) -> torch.device:
        return self._device

    def report(
        self, metrics: dict[str, float], checkpoint: CheckpointInfo | None, store: CheckpointStore
    ) -> None:
        return None


# -- small helpers -----------------------------------------------------------------------------


def _crossed(after: int, step_images: int, every: int) -> bool:
    """Did the image counter pass a multiple of ``every`` on the step that ended at ``after``?"""
    return after // every > (after - step_images) // every


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def skipped_checkpoint_tags(skipped: tuple[SkippedCheckpoint, ...]) -> dict[str, str]:
    """One MLflow tag per checkpoint a resume skipped as damaged: its folder name -> the reason.
    Keyed by folder so that the record of an earlier restart's skip stays on the run."""
    return {f"skipped_checkpoint.{s.where.rstrip('/').rsplit('/', 1)[-1]}": s.reason[:1000] for s in skipped}


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _broadcast_object(obj: Any) -> Any:
    if not _distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _all_gather_object(obj: Any) -> list:
    if not _distributed():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _mean_over_ranks(sums: dict[str, float], count: int, device: torch.device) -> dict[str, float]:
    """Interval means of the loss terms over all ranks (one all-reduce per logging interval)."""
    # Skips are decided together, so the keys agree across ranks; the union guards the all-reduce
    # against a shape mismatch (a hang) should a term ever be missing on one rank.
    keys = sorted(set().union(*_all_gather_object(sorted(sums))))
    values = torch.tensor(
        [sums.get(k, 0.0) for k in keys] + [float(count)],
        dtype=torch.float64,
        device=device if device.type == "cuda" else "cpu",
    )
    if _distributed():
        dist.all_reduce(values)
    n = values[-1].item()
    return {k: v / n for k, v in zip(keys, values[:-1].tolist())} if n > 0 else {}


# -- building blocks -----------------------------------------------------------------------------


def build_gan(cfg: Config, device: torch.device, comm_hook: Callable | None = None) -> Any:
    """G, D (and face D) on ``device``, each wrapped in DDP on its own when distributed (with
    ``comm_hook`` reducing their gradients, if given)."""
    from model.discriminator import build_discriminators
    from model.gan import GanStep, prepare_module
    from model.generator import build_generator

    g = prepare_module(build_generator(cfg.model), device, cfg.optim)
    d_net, d_face_net = build_discriminators(cfg.model)
    d = prepare_module(d_net, device, cfg.optim)
    d_face = prepare_module(d_face_net, device, cfg.optim) if d_face_net is not None else None
    if _distributed():
        # Separate wrappers: G's and D's gradients are reduced in their own backward passes.
        g, d = _ddp(g, device, comm_hook), _ddp(d, device, comm_hook)
        d_face = _ddp(d_face, device, comm_hook) if d_face is not None else None
    return GanStep(g, d, d_face, cfg.model, cfg.loss, cfg.optim)


def _ddp(module: torch.nn.Module, device: torch.device, comm_hook: Callable | None) -> torch.nn.Module:
    wrapped = torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None
    )
    if comm_hook is not None:
        wrapped.register_comm_hook(None, comm_hook)
    return wrapped


def make_batches(
    cfg: Any,
    shards: str,
    rank: int,
    world_size: int,
    step: int,
    device: torch.device | None = None,
    profile: bool = False,
) -> tuple[Iterator[dict], Any, Any]:
    """This rank's endless stream of training batches on ``device``, the loader (for its error
    counter) and the feed (its ``seconds`` of copying and expanding when ``profile``).

    The loader's workers send compact batches (uint8 images, keypoints; no dense pose maps,
    no face crops unless ``train.face_crops``); they are copied to the device one batch
    ahead (pinned, non_blocking on CUDA) and expanded there (datasets/shards/expand.py).

    Every rank gets the same number of batches per epoch (the loader equalises them), so
    collectives line up. A run resumed mid-epoch starts at the next epoch boundary: the rest of
    the interrupted epoch is not replayed (the data order stays a pure function of seed and epoch).
    """
    from datasets.pose.scheme import scheme_of_manifest
    from datasets.shards import expand
    from datasets.shards.augment import AugmentConfig
    from datasets.shards.loader import train_loader
    from datasets.shards.tar import load_manifest

    tcfg = cfg.train
    device = device or torch.device("cpu")
    gaussian = scheme_of_manifest(load_manifest(shards)).task == "pose"  # else part maps: sparse patches
    loader = train_loader(
        shards,
        rank=rank,
        world_size=world_size,
        batch_size=tcfg.batch_size,
        num_workers=loader_workers(tcfg.loader_workers, device),
        seed=tcfg.seed,
        augment=AugmentConfig() if tcfg.augment else None,
        compact=True,
        poses="keypoints" if gaussian else "sparse",
        face_crops=tcfg.face_crops,
        shard_cache_mb=tcfg.shard_cache_mb,
    )
    per_epoch = len(loader)
    if per_epoch < 1:
        raise RuntimeError(f"the training loader for {shards} has no batch on rank {rank}")
    first_epoch = -(-step // per_epoch)

    def endless() -> Iterator[dict]:
        epoch = first_epoch
        while True:
            loader.set_epoch(epoch)
            yield from loader
            epoch += 1

    feed = expand.DeviceBatches(endless(), device, expand.Expander.of_loader(loader), profile=profile)
    return iter(feed), loader, feed


def loader_workers(setting: int | str, device: torch.device) -> int:
    """``train.loader_workers``: a count, or auto = 4 on a CUDA device (capped at this machine's
    CPUs; pipelines.bench data), 0 on the CPU, where loader processes would take cores from
    the step itself and the batches stay those of an in-process loader."""
    if setting != "auto":
        return int(setting)
    return min(4, os.cpu_count() or 1) if device.type == "cuda" else 0


def preview_batch(shards: str, rows: int = 4) -> dict:
    """A fixed batch of test pairs for the image grids (the same every time, resumes included)."""
    from datasets.shards.loader import eval_loader

    for batch in eval_loader(shards, batch_size=rows):
        return batch
    raise RuntimeError(f"no test pairs in {shards} for the image grids")


def _loader_errors(loader: Any) -> int:
    return int(getattr(loader, "skipped", 0))


class _Progress:
    """Rank 0's progress in images with an ETA.

    On a terminal: a bar (Ray's driver-side bar under Ray, tqdm otherwise). Elsewhere (logs,
    ``ray job`` output, CI) a bar's carriage returns turn into noise, so it prints a line every
    ``interval`` seconds instead."""

    def __init__(
        self, total: int, initial: int, under_ray: bool, desc: str, bar: bool, interval: float = 15.0
    ) -> None:
        self.total, self.n, self.desc, self.interval = total, initial, desc, interval
        self.start_n, self.t0, self.t_last = initial, time.monotonic(), time.monotonic()
        self.bar = None
        if bar and under_ray:
            from ray.experimental.tqdm_ray import tqdm as ray_tqdm

            self.bar = ray_tqdm(total=total, desc=desc, unit="img")
            self.bar.n = initial
        elif bar:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit="img",
                dynamic_ncols=True,
                mininterval=1.0,
                file=sys.stderr,
            )

    def update(self, n: int, desc: str | None = None) -> None:
        self.n += n
        if desc is not None:
            self.desc = desc
        if self.bar is not None:
            if desc is not None:
                self.bar.set_description(desc)
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.t_last >= self.interval or (self.n >= self.total and n):
            self.t_last = now
            rate = (self.n - self.start_n) / max(now - self.t0, 1e-9)
            eta = (self.total - self.n) / rate if rate > 0 else float("inf")
            eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
            log.info(
                "%s: %d/%d images (%.0f%%), %.2f images/s, ETA %s",
                self.desc,
                self.n,
                self.total,
                100 * self.n / self.total,
                rate,
                eta_text,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -- the loop ------------------------------------------------------------------------------------


def run_worker(ctx: LoopContext, session: Session) -> dict:
    """Train until ``train.total_images``; returns (and on rank 0 writes) the run summary."""
    cfg = ctx.config
    config_data = to_dict(cfg)  # as config.json, the MLflow params and the checkpoints record it
    tcfg = cfg.train
    rank, world = session.rank, session.world_size
    device = session.device()
    if device.type == "cpu":
        torch.set_num_threads(tcfg.threads_per_worker)
    if rank == 0:
        facts = device_facts(device, world)
        log.info(
            "training on %s: %d worker(s)%s",
            facts["device"],
            world,
            f", {facts['gpu_count']} x {facts['gpu_model']}" if facts["gpu_count"] else "",
        )
    run_dir = Path(ctx.run_dir)
    store = CheckpointStore(ctx.checkpoint_root, keep=tcfg.keep_checkpoints)
    faults = FaultHooks(from_env(tcfg.faults), rank, run_dir / "faults")
    under_ray = type(session).__name__ == "RaySession"

    # 1. Model, then the newest committed checkpoint that loads (rank 0 chooses, everyone loads
    # that one). Damaged ones are skipped; a storage error raises here, before anything is written.
    _seed_all(tcfg.seed)  # identical initial weights on every rank
    timing = StepTiming(device, ctx.t_command, profile=ctx.profile_comm)
    gan = build_gan(cfg, device, timing.comm_hook())
    resumed: ResumePoint | None = store.resume_point(map_location=device) if rank == 0 else None
    chosen = _broadcast_object(resumed.info if resumed is not None else None)
    skipped = resumed.skipped if resumed is not None else ()
    step, images, start_images = 0, 0, 0
    history: dict = {"skipped_steps": 0, "data_errors": 0, "restarts": 0, "first_loss": None}
    if chosen is not None:
        state = resumed.state if resumed is not None else store.load(chosen, map_location=device)
        gan.load_state_dict(state["gan"])
        step, images = int(state["step"]), int(state["images"])
        history = dict(state.get("history", history))
        history["restarts"] = history.get("restarts", 0) + 1
        rng = state.get("rng") or []
        if len(rng) == world:
            _set_rng_state(rng[rank])
        else:  # a different worker count: fresh per-rank streams, still reproducible
            _seed_all(tcfg.seed + 1000 * step + rank)
        start_images = images
        if rank == 0:
            log.info("resumed run %r from %s (step %d, %d images)", ctx.run_name, chosen.path, step, images)
    else:
        _seed_all(tcfg.seed + rank)
    steps_before = step
    errors_before = int(history.get("data_errors", 0))

    # 2. Data: each rank streams its own share of the shards.
    batches, loader, feed = make_batches(cfg, ctx.shards, rank, world, step, device, profile=ctx.profile_comm)
    timing.watch(gan, feed)
    step_images = tcfg.batch_size * world

    # 3. Tracking and the preview batch, rank 0 only.
    tracker = None
    preview = None
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config_data, indent=2, sort_keys=True))
        if ctx.track:
            uri = ctx.tracking_uri or tracking_uri()
            write_run_meta(run_dir, ctx.run_name, tcfg.mlflow_experiment, uri, ctx.artifact_location)
            tracker = Tracker(
                run_dir,
                ctx.run_name,
                experiment=tcfg.mlflow_experiment,
                uri=uri,
                artifact_location=ctx.artifact_location,
            )
            if chosen is None:
                from pipelines.tracking.journal import flatten

                tracker.log_params(flatten(config_data))
            tracker.set_tags(
                {
                    **ctx.tags,
                    "feature_backbone": gan.backbone.name,
                    "workers": world,
                    **device_facts(device, world),
                    "run_name": ctx.run_name,
                    **skipped_checkpoint_tags(skipped),
                }
            )
        preview = preview_batch(ctx.shards)
        (run_dir / "grids").mkdir(parents=True, exist_ok=True)
    progress = (
        _Progress(tcfg.total_images, images, under_ray, f"train {ctx.run_name}", bar=ctx.progress_bar)
        if rank == 0
        else None
    )

    # 4. Steps.
    sums: dict[str, float] = {}
    counted = 0
    timing.start(images)
    last: dict[str, float] = {}
    status, error = "completed", None
    try:
        while images < tcfg.total_images:
            with timing.waiting_for_data():
                batch = next(batches)
            with timing.stepping():
                faults.before_step(step + 1)
                batch = faults.poison(step + 1, batch)
                out = gan.step(batch)
            step += 1
            images += step_images
            if out.get("skipped", 0.0):
                history["skipped_steps"] += 1
                if rank == 0:
                    log.warning(
                        "step %d: non-finite loss or gradient on some rank; all ranks skipped it "
                        "(%d in a row)",
                        step,
                        gan.consecutive_skips,
                    )
                if gan.consecutive_skips >= tcfg.max_consecutive_skips:
                    raise NumericalFaultError(
                        f"{gan.consecutive_skips} consecutive steps (up to step {step}) had non-finite losses or "
                        f"gradients (limit train.max_consecutive_skips={tcfg.max_consecutive_skips}); stopping. "
                        "No checkpoint with non-finite weights was written; lower optim.lr_g/lr_d or check the data."
                    )
            else:
                for k, v in out.items():
                    if k != "skipped" and math.isfinite(v):
                        sums[k] = sums.get(k, 0.0) + v
                counted += 1
            if progress is not None:
                progress.update(step_images)

            # Log: interval means over ranks (a collective, so every rank takes part).
            if _crossed(images, step_images, tcfg.log_every_images) or images >= tcfg.total_images:
                means = _mean_over_ranks(sums, counted, device)
                ips = timing.interval_rate(images)
                history["data_errors"] = errors_before + sum(_all_gather_object(_loader_errors(loader)))
                sums, counted = {}, 0
                if means:
                    last = means
                    history["last_loss"] = means  # kept in checkpoints: a resumed run reports it too
                    if history.get("first_loss") is None:
                        history["first_loss"] = means
                if rank == 0:
                    metrics = {f"loss/{k}": v for k, v in means.items()}
                    metrics.update(
                        {
                            "perf/images_per_s": ips,
                            "train/images": float(images),
                            "train/skipped_steps": float(history["skipped_steps"]),
                            "data/errors": float(history["data_errors"]),
                        }
                    )
                    if tracker is not None:
                        tracker.log_metrics(metrics, step)
                    if progress is not None and means:
                        progress.update(
                            0,
                            f"train {ctx.run_name} g={means.get('g_total', 0):.3f} "
                            f"d={means.get('d_total', 0):.3f}",
                        )

            if rank == 0 and (
                _crossed(images, step_images, tcfg.grid_every_images)
                or images >= tcfg.total_images
                or step == steps_before + 1
            ):
                _write_grid(gan, preview, run_dir / "grids" / f"step-{step:07d}.png", tracker)

            final = images >= tcfg.total_images
            if _crossed(images, step_images, tcfg.checkpoint_every_images) or final:
                _checkpoint(
                    session, store, gan, step, images, ctx, config_data, history, loader, rank, world, final
                )
    except NumericalFaultError as exc:
        # Every rank sees the same skip count (the flag is all-reduced), so all stop here together
        # and return normally: Ray must not restart a run that diverged.
        status, error = "numerical_fault", str(exc)
    finally:
        if progress is not None:
            progress.close()

    # 5. Summary (rank 0) and the final checkpoint as an MLflow artifact.
    digests = _all_gather_object(_param_digest(gan.G))  # DDP keeps G identical on every rank
    steps_run = step - steps_before
    summary = {
        "status": status,
        "error": error,
        "run_name": ctx.run_name,
        "workers": world,
        "device": device.type,
        "batch_size_per_worker": tcfg.batch_size,
        "images": images,
        "steps": step,
        "steps_this_session": steps_run,
        "images_this_session": images - start_images,
        **timing.figures(steps_run, images - start_images, step_images),
        "skipped_steps": history["skipped_steps"],
        "data_errors": errors_before + sum(_all_gather_object(_loader_errors(loader))),
        "restarts": history.get("restarts", 0),
        "first_losses": history.get("first_loss"),
        "final_losses": last or history.get("last_loss") or {},
        "feature_backbone": gan.backbone.name,
        "g_param_digests": digests,
        "resumed_from_step": steps_before if chosen is not None else None,
        "skipped_checkpoints": [dataclasses.asdict(s) for s in skipped],
        "mlflow_run_id": None,
    }
    if rank == 0:
        if tracker is not None:
            final_ckpt = store.committed()
            if status == "completed" and final_ckpt:
                if "://" in ctx.checkpoint_root:
                    # Already in a bucket, out of the journal's reach (it uploads local files):
                    # the run names the object instead of holding a second copy.
                    name = final_ckpt[-1].path.rsplit("/", 1)[-1]
                    tracker.set_tags({"final_checkpoint": f"{ctx.checkpoint_root}/{name}"})
                else:
                    tracker.log_artifact(final_ckpt[-1].path, "checkpoint")
            tracker.log_artifact(run_dir / "config.json")
            left = tracker.close(timeout=60.0)
            summary["mlflow_run_id"] = tracker.run_id
            summary["mlflow_records_pending"] = left
        tmp = run_dir / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, run_dir / "summary.json")
    return summary


def _param_digest(module: torch.nn.Module) -> str:
    from model.gan import unwrap

    h = hashlib.sha256()
    for name, p in sorted(unwrap(module).state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _write_grid(gan: Any, preview: dict | None, path: Path, tracker: Tracker | None) -> None:
    """Render G on the fixed preview pairs (source, pose, warps, map, output, target) to a PNG."""
    from PIL import Image

    from model.gan import unwrap
    from model.visualize import make_grid

    if preview is None:
        return
    g = unwrap(gan.G)
    was_training = g.training
    g.eval()
    with torch.no_grad():
        batch = {k: v.to(gan.device) if isinstance(v, torch.Tensor) else v for k, v in preview.items()}
        out = g(batch["source_image"], batch["source_pose"], batch["target_pose"])
    g.train(was_training)
    grid = make_grid(batch, out)
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(grid).save(tmp)
    os.replace(tmp, path)
    if tracker is not None:
        tracker.log_artifact(path, "grids")


def _checkpoint(
    session: Session,
    store: CheckpointStore,
    gan: Any,
    step: int,
    images: int,
    ctx: LoopContext,
    config_data: dict,
    history: dict,
    loader: Any,
    rank: int,
    world: int,
    final: bool,
) -> None:
    """Gather RNG states, write atomically on rank 0, then report to Ray from every rank."""
    rng = _all_gather_object(_rng_state())
    info = None
    if rank == 0:
        state = {
            "gan": gan.state_dict(),
            "step": step,
            "images": images,
            "rng": rng,
            "config": config_data,
            "manifest_sha256": ctx.tags.get("manifest_sha256"),
            "history": history,
            "world_size": world,
        }
        try:
            info = store.save(
                step,
                state,
                meta={
                    "images": images,
                    "run_name": ctx.run_name,
                    "final": final,
                    "manifest_sha256": ctx.tags.get("manifest_sha256"),
                    "config": config_data,
                },
            )
        except NonFiniteCheckpointError as exc:
            # Skipped steps never update weights, so this means a bug upstream: keep the last good one.
            log.error("%s", exc)
    session.report({"step": step, "images": images}, info, store)


def loop_config_from(ctx: LoopContext) -> dict:
    """The context as Ray's ``train_loop_config``: plain data (the config through ``to_dict``)."""
    return {"ctx": to_dict(ctx)}


def context_from(loop_config: dict) -> LoopContext:
    """A worker's context from Ray's ``train_loop_config``, the config rebuilt and checked as a
    params file is."""
    return build_dataclass(LoopContext, loop_config["ctx"], "ctx")
