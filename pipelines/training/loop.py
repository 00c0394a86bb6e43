"""The per-worker training loop, shared by ``--workers 0`` (one process, no Ray) and every Ray worker.

One call of :func:`run_worker` is one worker's whole life: build G and D (each DDP-wrapped on
its own when distributed), resume from the newest committed checkpoint that is not damaged (a
storage error stops the run instead: pipelines/training/checkpoint.py), stream this rank's shards,
run the GAN step from ``model/`` until ``train.total_images`` images have been seen (summed over
workers), log from rank 0, checkpoint every ``train.checkpoint_every_images`` images.

It reads as its phases: set-up (:func:`_worker_device`, :func:`_resume`, :func:`_open_run_folder`),
the step (:func:`_train`, :func:`_step`, :func:`_account`), the periodic work (:func:`_periodic`:
logging, grids, checkpoints) and the end (:func:`_finish`: digests, summary, the MLflow run closed).
What the phases share is a :class:`Worker` (fixed once set up) and a :class:`LoopState` (what the
steps advance); the timing figures are :mod:`pipelines.training.step_timing`'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
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

from datasets import storage
from datasets.files import atomic_write_bytes, atomic_write_text
from pipelines.config.params import build_dataclass, to_dict
from pipelines.config.schema import Config
from pipelines.config.stages import TrainConfig
from pipelines.runs.folder import RunFolder
from pipelines.runs.records import TrainSummary
from pipelines.tracking.journal import Tracker, flatten, tracking_uri, write_run_meta
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

    g: torch.nn.Module = prepare_module(build_generator(cfg.model), device, cfg.optim)
    d_net, d_face_net = build_discriminators(cfg.model)
    d: torch.nn.Module = prepare_module(d_net, device, cfg.optim)
    d_face: torch.nn.Module | None = (
        prepare_module(d_face_net, device, cfg.optim) if d_face_net is not None else None
    )
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
        augment=AugmentConfig(same_view_p=tcfg.same_view_pairs) if tcfg.augment else None,
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


# -- the loop's state -----------------------------------------------------------------------------


def _fresh_history() -> dict:
    return {"skipped_steps": 0, "data_errors": 0, "restarts": 0, "first_loss": None}


@dataclass(frozen=True)
class Start:
    """Where this session starts: the checkpoint resumed from (None: a fresh run), and the newer
    ones skipped as damaged."""

    checkpoint: CheckpointInfo | None
    skipped: tuple[SkippedCheckpoint, ...] = ()


@dataclass
class LoopState:
    """What the steps advance: the counters and history that checkpoints carry, where this session
    started, and the loss sums of the logging interval under way."""

    step: int = 0
    images: int = 0
    history: dict = field(default_factory=_fresh_history)
    start_step: int = 0
    start_images: int = 0
    start_errors: int = 0  # data errors counted by earlier sessions
    loss_sums: dict[str, float] = field(default_factory=dict)
    loss_steps: int = 0
    last_means: dict[str, float] = field(default_factory=dict)  # the latest interval with a finite step

    def add_losses(self, out: dict[str, float]) -> None:
        for k, v in out.items():
            if k != "skipped" and math.isfinite(v):
                self.loss_sums[k] = self.loss_sums.get(k, 0.0) + v
        self.loss_steps += 1


@dataclass(frozen=True)
class Worker:
    """What set-up hands the steps, the periodic work and the end; fixed for the session."""

    ctx: LoopContext
    session: Session
    device: torch.device
    config_data: dict  # to_dict(ctx.config)
    store: CheckpointStore
    faults: FaultHooks
    gan: Any
    batches: Iterator[dict]
    loader: Any
    timing: StepTiming
    start: Start
    tracker: Tracker | None
    preview: dict | None
    progress: _Progress | None

    @property
    def rank(self) -> int:
        return self.session.rank

    @property
    def world(self) -> int:
        return self.session.world_size

    @property
    def tcfg(self) -> TrainConfig:
        return self.ctx.config.train

    @property
    def step_images(self) -> int:
        return self.tcfg.batch_size * self.world

    @property
    def run(self) -> RunFolder:
        """The run's local files (the checkpoints are at ``ctx.checkpoint_root``)."""
        return RunFolder.at(Path(self.ctx.run_dir))


# -- the loop ------------------------------------------------------------------------------------


def run_worker(ctx: LoopContext, session: Session) -> TrainSummary:
    """Train until ``train.total_images``; returns (and on rank 0 writes) the run summary."""
    cfg, tcfg, rank = ctx.config, ctx.config.train, session.rank
    device = _worker_device(session, tcfg.threads_per_worker)
    store = CheckpointStore(ctx.checkpoint_root, keep=tcfg.keep_checkpoints)
    faults = FaultHooks(from_env(tcfg.faults), rank, RunFolder.at(Path(ctx.run_dir)).faults)
    timing = StepTiming(device, ctx.t_command, profile=ctx.profile_comm)
    _seed_all(tcfg.seed)  # identical initial weights on every rank
    gan = build_gan(cfg, device, timing.comm_hook())
    state, start = _resume(ctx, session, store, gan, device)
    # Each rank streams its own share of the shards.
    batches, loader, feed = make_batches(
        cfg, ctx.shards, rank, session.world_size, state.step, device, profile=ctx.profile_comm
    )
    timing.watch(gan, feed)
    config_data = to_dict(cfg)  # as config.json, the MLflow params and the checkpoints record it
    tracker, preview, progress = None, None, None
    if rank == 0:
        tracker, preview = _open_run_folder(ctx, config_data, gan, device, session.world_size, start)
        under_ray = type(session).__name__ == "RaySession"
        progress = _Progress(
            tcfg.total_images, state.images, under_ray, f"train {ctx.run_name}", bar=ctx.progress_bar
        )
    w = Worker(
        ctx=ctx,
        session=session,
        device=device,
        config_data=config_data,
        store=store,
        faults=faults,
        gan=gan,
        batches=batches,
        loader=loader,
        timing=timing,
        start=start,
        tracker=tracker,
        preview=preview,
        progress=progress,
    )
    status, error = _train(w, state)
    return _finish(w, state, status, error)


# -- set-up --------------------------------------------------------------------------------------


def _worker_device(session: Session, threads: int) -> torch.device:
    device = session.device()
    if device.type == "cpu":
        torch.set_num_threads(threads)
    if session.rank == 0:
        facts = device_facts(device, session.world_size)
        log.info(
            "training on %s: %d worker(s)%s",
            facts["device"],
            session.world_size,
            f", {facts['gpu_count']} x {facts['gpu_model']}" if facts["gpu_count"] else "",
        )
    return device


def _resume(
    ctx: LoopContext, session: Session, store: CheckpointStore, gan: Any, device: torch.device
) -> tuple[LoopState, Start]:
    """Load the newest committed checkpoint that loads (rank 0 chooses, everyone loads that one) and
    seed this rank's streams. Damaged ones are skipped; a storage error raises here, before
    anything is written."""
    rank, world, seed = session.rank, session.world_size, ctx.config.train.seed
    resumed: ResumePoint | None = store.resume_point(map_location=device) if rank == 0 else None
    chosen = _broadcast_object(resumed.info if resumed is not None else None)
    start = Start(chosen, resumed.skipped if resumed is not None else ())
    if chosen is None:
        _seed_all(seed + rank)
        return LoopState(), start
    saved = resumed.state if resumed is not None else store.load(chosen, map_location=device)
    gan.load_state_dict(saved["gan"])
    step, images = int(saved["step"]), int(saved["images"])
    history = dict(saved.get("history", _fresh_history()))
    history["restarts"] = history.get("restarts", 0) + 1
    rng = saved.get("rng") or []
    if len(rng) == world:
        _set_rng_state(rng[rank])
    else:  # a different worker count: fresh per-rank streams, still reproducible
        _seed_all(seed + 1000 * step + rank)
    if rank == 0:
        log.info("resumed run %r from %s (step %d, %d images)", ctx.run_name, chosen.path, step, images)
    errors = int(history.get("data_errors", 0))
    state = LoopState(step, images, history, start_step=step, start_images=images, start_errors=errors)
    return state, start


def _open_run_folder(
    ctx: LoopContext, config_data: dict, gan: Any, device: torch.device, world: int, start: Start
) -> tuple[Tracker | None, dict]:
    """Rank 0: the run folder with its config, the MLflow run, and the preview batch for the grids."""
    run = RunFolder.at(Path(ctx.run_dir))
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config, json.dumps(config_data, indent=2, sort_keys=True))
    tracker = None
    if ctx.track:
        uri = ctx.tracking_uri or tracking_uri()
        experiment = ctx.config.train.mlflow_experiment
        write_run_meta(run.path, ctx.run_name, experiment, uri, ctx.artifact_location)
        tracker = Tracker(
            run.path, ctx.run_name, experiment=experiment, uri=uri, artifact_location=ctx.artifact_location
        )
        if start.checkpoint is None:
            tracker.log_params(flatten(config_data))
        tracker.set_tags(
            {
                **ctx.tags,
                "feature_backbone": gan.backbone.name,
                "workers": world,
                **device_facts(device, world),
                "run_name": ctx.run_name,
                **skipped_checkpoint_tags(start.skipped),
            }
        )
    preview = preview_batch(ctx.shards)
    run.grids.mkdir(parents=True, exist_ok=True)
    return tracker, preview


# -- the step --------------------------------------------------------------------------------------


def _train(w: Worker, state: LoopState) -> tuple[str, str | None]:
    """Steps and their periodic work until ``train.total_images``; the run's status and error."""
    w.timing.start(state.images)
    try:
        while state.images < w.tcfg.total_images:
            out = _step(w, state)
            _account(w, state, out)
            if w.progress is not None:
                w.progress.update(w.step_images)
            _periodic(w, state)
    except NumericalFaultError as exc:
        # Every rank sees the same skip count (the flag is all-reduced), so all stop here together
        # and return normally: Ray must not restart a run that diverged.
        return "numerical_fault", str(exc)
    finally:
        if w.progress is not None:
            w.progress.close()
    return "completed", None


def _step(w: Worker, state: LoopState) -> dict[str, float]:
    with w.timing.waiting_for_data():
        batch = next(w.batches)
    with w.timing.stepping():
        w.faults.before_step(state.step + 1)
        batch = w.faults.poison(state.step + 1, batch)
        out = w.gan.step(batch)
    state.step += 1
    state.images += w.step_images
    return out


def _account(w: Worker, state: LoopState, out: dict[str, float]) -> None:
    """Add a finite step's losses to the interval; count a skipped one, stopping after too many."""
    if not out.get("skipped", 0.0):
        state.add_losses(out)
        return
    state.history["skipped_steps"] += 1
    skips, limit = w.gan.consecutive_skips, w.tcfg.max_consecutive_skips
    if w.rank == 0:
        log.warning(
            "step %d: non-finite loss or gradient on some rank; all ranks skipped it (%d in a row)",
            state.step,
            skips,
        )
    if skips >= limit:
        raise NumericalFaultError(
            f"{skips} consecutive steps (up to step {state.step}) had non-finite losses or "
            f"gradients (limit train.max_consecutive_skips={limit}); stopping. "
            "No checkpoint with non-finite weights was written; lower optim.lr_g/lr_d or check the data."
        )


# -- periodic work -------------------------------------------------------------------------------


def _periodic(w: Worker, state: LoopState) -> None:
    """Logging, grids and checkpoints, each when the image count crosses its interval, and at the end."""
    tcfg, images, step_images = w.tcfg, state.images, w.step_images
    final = images >= tcfg.total_images
    if _crossed(images, step_images, tcfg.log_every_images) or final:
        _log_interval(w, state)
    if w.rank == 0 and (
        _crossed(images, step_images, tcfg.grid_every_images) or final or state.step == state.start_step + 1
    ):
        _write_grid(w.gan, w.preview, w.run.grid(state.step), w.tracker)
    if _crossed(images, step_images, tcfg.checkpoint_every_images) or final:
        _checkpoint(w, state, final)


def _log_interval(w: Worker, state: LoopState) -> None:
    """The interval's means over ranks (a collective, so every rank takes part); rank 0 logs them."""
    means = _mean_over_ranks(state.loss_sums, state.loss_steps, w.device)
    images_per_s = w.timing.interval_rate(state.images)
    state.history["data_errors"] = state.start_errors + sum(_all_gather_object(_loader_errors(w.loader)))
    state.loss_sums, state.loss_steps = {}, 0
    if means:
        state.last_means = means
        state.history["last_loss"] = means  # kept in checkpoints: a resumed run reports it too
        if state.history.get("first_loss") is None:
            state.history["first_loss"] = means
    if w.rank == 0:
        metrics = {f"loss/{k}": v for k, v in means.items()}
        metrics.update(
            {
                "perf/images_per_s": images_per_s,
                "train/images": float(state.images),
                "train/skipped_steps": float(state.history["skipped_steps"]),
                "data/errors": float(state.history["data_errors"]),
            }
        )
        if w.tracker is not None:
            w.tracker.log_metrics(metrics, state.step)
        if w.progress is not None and means:
            w.progress.update(
                0,
                f"train {w.ctx.run_name} g={means.get('g_total', 0):.3f} d={means.get('d_total', 0):.3f}",
            )


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
    png = io.BytesIO()
    Image.fromarray(grid).save(png, format="PNG")
    atomic_write_bytes(path, png.getvalue())
    if tracker is not None:
        tracker.log_artifact(path, "grids")


def _checkpoint(w: Worker, state: LoopState, final: bool) -> None:
    """Gather RNG states, write atomically on rank 0, then report to Ray from every rank."""
    rng = _all_gather_object(_rng_state())
    info = None
    if w.rank == 0:
        manifest = w.ctx.tags.get("manifest_sha256")
        saved = {
            "gan": w.gan.state_dict(),
            "step": state.step,
            "images": state.images,
            "rng": rng,
            "config": w.config_data,
            "manifest_sha256": manifest,
            "history": state.history,
            "world_size": w.world,
        }
        meta = {
            "images": state.images,
            "run_name": w.ctx.run_name,
            "final": final,
            "manifest_sha256": manifest,
            "config": w.config_data,
        }
        try:
            info = w.store.save(state.step, saved, meta=meta)
        except NonFiniteCheckpointError as exc:
            # Skipped steps never update weights, so this means a bug upstream: keep the last good one.
            log.error("%s", exc)
    w.session.report({"step": state.step, "images": state.images}, info, w.store)


# -- the end -------------------------------------------------------------------------------------


def _finish(w: Worker, state: LoopState, status: str, error: str | None) -> TrainSummary:
    """The summary; on rank 0 also the final checkpoint as an MLflow artifact and summary.json."""
    summary = _summary(w, state, status, error)
    if w.rank == 0:
        if w.tracker is not None:
            run_id, pending = _close_tracker(w, w.tracker, status)
            summary = dataclasses.replace(summary, mlflow_run_id=run_id, mlflow_records_pending=pending)
        summary.save(w.run.summary)
    return summary


def _summary(w: Worker, state: LoopState, status: str, error: str | None) -> TrainSummary:
    """The run's summary; its collectives (G's digest, data errors) run on every rank."""
    digests = _all_gather_object(_param_digest(w.gan.G))  # DDP keeps G identical on every rank
    steps_run, images_run = state.step - state.start_step, state.images - state.start_images
    history = state.history
    doc = {
        "status": status,
        "error": error,
        "run_name": w.ctx.run_name,
        "workers": w.world,
        "device": w.device.type,
        "batch_size_per_worker": w.tcfg.batch_size,
        "images": state.images,
        "steps": state.step,
        "steps_this_session": steps_run,
        "images_this_session": images_run,
        **w.timing.figures(steps_run, images_run, w.step_images),
        "skipped_steps": history["skipped_steps"],
        "data_errors": state.start_errors + sum(_all_gather_object(_loader_errors(w.loader))),
        "restarts": history.get("restarts", 0),
        "first_losses": history.get("first_loss"),
        "final_losses": state.last_means or history.get("last_loss") or {},
        "feature_backbone": w.gan.backbone.name,
        "g_param_digests": digests,
        "resumed_from_step": state.start_step if w.start.checkpoint is not None else None,
        "skipped_checkpoints": [dataclasses.asdict(s) for s in w.start.skipped],
        "mlflow_run_id": None,
    }
    return TrainSummary.from_dict(doc)  # the timing figures spelled as summary.json has them


def _close_tracker(w: Worker, tracker: Tracker, status: str) -> tuple[str | None, int]:
    """Log the final checkpoint and the config, close the run; its id and the records still pending."""
    final_ckpt = w.store.committed()
    if status == "completed" and final_ckpt:
        if storage.is_url(w.ctx.checkpoint_root):
            # Already in a bucket, out of the journal's reach (it uploads local files):
            # the run names the object instead of holding a second copy.
            name = final_ckpt[-1].path.rsplit("/", 1)[-1]
            tracker.set_tags({"final_checkpoint": f"{w.ctx.checkpoint_root}/{name}"})
        else:
            tracker.log_artifact(final_ckpt[-1].path, "checkpoint")
    tracker.log_artifact(w.run.config)
    left = tracker.close(timeout=60.0)
    return tracker.run_id, left


def _param_digest(module: torch.nn.Module) -> str:
    from model.gan import unwrap

    h = hashlib.sha256()
    for name, p in sorted(unwrap(module).state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def loop_config_from(ctx: LoopContext) -> dict:
    """The context as Ray's ``train_loop_config``: plain data (the config through ``to_dict``)."""
    return {"ctx": to_dict(ctx)}


def context_from(loop_config: dict) -> LoopContext:
    """A worker's context from Ray's ``train_loop_config``, the config rebuilt and checked as a
    params file is."""
    return build_dataclass(LoopContext, loop_config["ctx"], "ctx")
