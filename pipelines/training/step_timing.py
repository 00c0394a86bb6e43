"""Where a training run's time goes: the figures ``summary.json`` and the training benchmarks report.

The loop marks two spans per step (waiting for the batch, then the step itself) and asks for the
images/s of each logging interval; at the end :meth:`StepTiming.figures` turns the spans into the
summary's timing keys. The first step pays for lazy initialisation (allocator, compilation,
loader start-up), so it sets the time to first step and is left out of every per-step figure.

With ``profile`` (``train --profile-comm``, benchmarks only) the gradient all-reduce runs
synchronously in a timed DDP comm hook, and the batch feed's and the GAN step's phase timers are
switched on: the phases then add up, without overlap, to the step time they split.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch
import torch.distributed as dist


class PhaseTimedStep(Protocol):
    """The GAN step's per-phase seconds (model/gan.py): None measures nothing."""

    phase_seconds: dict[str, float] | None


class PhaseTimedFeed(Protocol):
    """The device batch feed's per-phase seconds (datasets/shards/expand.py): None measures nothing."""

    seconds: dict[str, float] | None


def sync_allreduce_hook(seconds: list[float]) -> Callable:
    """DDP comm hook that all-reduces each bucket synchronously and appends the time it took.

    It removes the overlap of communication with backward, so the sum is the full cost of the
    gradient all-reduce."""

    # No annotations: DDP compares them with dist.GradBucket, and this module's postponed
    # annotations would hand it the string "dist.GradBucket" instead.
    def hook(state, bucket):
        t0 = time.perf_counter()
        tensor = bucket.buffer().div_(dist.get_world_size())
        dist.all_reduce(tensor)
        seconds.append(time.perf_counter() - t0)
        fut: torch.futures.Future = torch.futures.Future()
        fut.set_result(tensor)
        return fut

    return hook


class StepTiming:
    """One worker's step timing for this session (a resumed run counts from its restart)."""

    def __init__(
        self,
        device: torch.device,
        t_command: float,
        profile: bool,
        clock: Callable[[], float] = time.perf_counter,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.device, self.t_command, self.profile = device, t_command, profile
        self._clock, self._wall_clock = clock, wall_clock
        self._comm: list[float] = []
        self._step: PhaseTimedStep | None = None
        self._feed: PhaseTimedFeed | None = None
        self.data_s = self.step_s = 0.0  # summed over the steps after the first
        self.t_first_step: float | None = None  # wall clock, as t_command
        self._comm_at_first_step = 0
        self._t_data = 0.0
        self._t_start = self._t_interval = clock()
        self._images_interval = 0

    def comm_hook(self) -> Callable | None:
        """The timed all-reduce hook for each DDP wrapper when profiling, else None."""
        return sync_allreduce_hook(self._comm) if self.profile else None

    def watch(self, step: PhaseTimedStep, feed: PhaseTimedFeed) -> None:
        """Switch on the GAN step's phase timer when profiling; the feed times itself when built
        with ``profile``."""
        self._step, self._feed = step, feed
        if self.profile:
            step.phase_seconds = {}

    def start(self, images: int) -> None:
        """The loop begins, at ``images`` already seen (a resume's count)."""
        self._t_start = self._t_interval = self._clock()
        self._images_interval = images

    @contextmanager
    def waiting_for_data(self) -> Iterator[None]:
        t0 = self._clock()
        yield
        self._t_data = self._clock() - t0

    @contextmanager
    def stepping(self) -> Iterator[None]:
        """The step, ended by a device synchronisation so that its time is the kernels' too."""
        t0 = self._clock()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t_step = self._clock() - t0
        if self.t_first_step is None:
            self._first_step_done()
        else:
            self.data_s += self._t_data
            self.step_s += t_step

    def _first_step_done(self) -> None:
        self.t_first_step = self._wall_clock()
        self._comm_at_first_step = len(self._comm)
        if self.profile:  # the breakdown leaves the first step out, as data_s/step_s do
            if self._step is not None:
                self._step.phase_seconds = {}
            if self._feed is not None and self._feed.seconds is not None:
                self._feed.seconds = dict.fromkeys(self._feed.seconds, 0.0)

    def interval_rate(self, images: int) -> float:
        """Images/s since the previous call (or the start), logging and checkpoints included."""
        now = self._clock()
        rate = (images - self._images_interval) / max(now - self._t_interval, 1e-9)
        self._t_interval, self._images_interval = now, images
        return rate

    def _phase_seconds(self) -> dict[str, float]:
        feed = self._feed.seconds if self._feed is not None else None
        step = self._step.phase_seconds if self._step is not None else None
        return {**(feed or {}), **(step or {})}

    def figures(self, steps: int, images: int, step_images: int) -> dict[str, Any]:
        """The summary's timing keys after ``steps`` steps and ``images`` images this session."""
        elapsed = self._clock() - self._t_start
        comm = sum(self._comm[self._comm_at_first_step :]) if self.profile else None
        return summary_figures(
            data_s=self.data_s,
            step_s=self.step_s,
            comm_s=comm,
            phase_s=self._phase_seconds() if self.profile else {},
            steps=steps,
            images=images,
            step_images=step_images,
            elapsed=elapsed,
            time_to_first_step=(
                self.t_first_step - self.t_command if self.t_first_step and self.t_command else None
            ),
        )


def summary_figures(
    *,
    data_s: float,
    step_s: float,
    comm_s: float | None,
    phase_s: dict[str, float],
    steps: int,
    images: int,
    step_images: int,
    elapsed: float,
    time_to_first_step: float | None,
) -> dict[str, Any]:
    """The timing keys of ``summary.json``, in its order. ``data_s``/``step_s`` leave the first of
    ``steps`` out; ``comm_s`` is None unless profiled, and so are the phase fractions."""
    timed = data_s + step_s
    return {
        "images_per_s": images / elapsed if elapsed > 0 else 0.0,
        "time_to_first_step_s": time_to_first_step,
        "time_per_step_s": timed / max(steps - 1, 1),
        # Steps only (first step, checkpoints, logging and grids excluded): the benchmark's figure.
        "images_per_s_steady": step_images * (steps - 1) / timed if timed else None,
        "fraction_data": data_s / timed if timed else None,
        "fraction_compute": (step_s - (comm_s or 0.0)) / timed if timed else None,
        "fraction_allreduce": (comm_s / timed) if (comm_s is not None and timed) else None,
        # Profiled only, each phase synchronised (so they add up, without overlap): data wait =
        # loader + H2D copy + on-device expansion; the step = forward/backward (all-reduce
        # included; fraction_allreduce is its share) + fault check, optimisers, EMA.
        **({f"fraction_{k}": v / timed for k, v in phase_s.items()} if timed else {}),
    }
