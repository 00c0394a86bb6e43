"""Step timing (pipelines/training/step_timing.py): the summary's timing keys from the spans the loop
marks, on a clock the test moves by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from pipelines.training.step_timing import StepTiming, summary_figures, sync_allreduce_hook


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeStep:
    phase_seconds: dict[str, float] | None = None


class FakeFeed:
    def __init__(self, profile: bool) -> None:
        self.seconds: dict[str, float] | None = {"h2d": 0.0, "expand": 0.0} if profile else None


def _run(
    timing: StepTiming,
    clock: Clock,
    spans: list[tuple[float, float]],
    step: FakeStep | None = None,
    feed: FakeFeed | None = None,
) -> None:
    """One loop step per (data seconds, step seconds); a watched step and feed record a phase each."""
    for data_s, step_s in spans:
        with timing.waiting_for_data():
            clock.t += data_s
            if feed is not None and feed.seconds is not None:
                feed.seconds["h2d"] += data_s / 2
        with timing.stepping():
            clock.t += step_s
            if step is not None and step.phase_seconds is not None:
                step.phase_seconds["forward_backward"] = (
                    step.phase_seconds.get("forward_backward", 0.0) + step_s
                )


def test_the_first_step_sets_time_to_first_step_and_stays_out_of_the_per_step_figures() -> None:
    clock, wall = Clock(), Clock(1000.0)
    timing = StepTiming(torch.device("cpu"), t_command=990.0, profile=False, clock=clock, wall_clock=wall)
    assert timing.comm_hook() is None
    step, feed = FakeStep(), FakeFeed(profile=False)
    timing.watch(step, feed)
    assert step.phase_seconds is None  # not profiling: the GAN step measures nothing
    timing.start(images=0)
    _run(timing, clock, [(5.0, 7.0), (1.0, 3.0), (1.0, 3.0)])
    f = timing.figures(steps=3, images=6, step_images=2)
    assert f == {
        "images_per_s": 6 / 20,  # the whole session, first step included
        "time_to_first_step_s": 10.0,
        "time_per_step_s": 4.0,
        "images_per_s_steady": 2 * 2 / 8,
        "fraction_data": 0.25,
        "fraction_compute": 0.75,
        "fraction_allreduce": None,
    }
    assert list(f) == list(
        summary_figures(
            data_s=1,
            step_s=1,
            comm_s=None,
            phase_s={},
            steps=2,
            images=1,
            step_images=1,
            elapsed=1,
            time_to_first_step=None,
        )
    )


def test_profiling_times_the_phases_after_the_first_step() -> None:
    clock = Clock()
    timing = StepTiming(torch.device("cpu"), t_command=0.0, profile=True, clock=clock, wall_clock=Clock(5.0))
    step, feed = FakeStep(), FakeFeed(profile=True)
    timing.watch(step, feed)
    assert step.phase_seconds == {}
    timing.start(images=0)
    _run(timing, clock, [(10.0, 10.0), (1.0, 3.0)], step, feed)
    f = timing.figures(steps=2, images=4, step_images=2)
    # Only the second step's 4 s: the first step's phases were reset when it ended.
    assert (
        f["fraction_h2d"] == 0.5 / 4
        and f["fraction_expand"] == 0.0
        and f["fraction_forward_backward"] == 0.75
    )
    # Profiled on one process: no all-reduce ran, and its share is a measured zero, not unknown.
    assert f["fraction_allreduce"] == 0.0 and f["fraction_compute"] == 0.75
    assert f["time_to_first_step_s"] is None  # no command start time given


def test_a_step_that_raises_counts_for_nothing() -> None:
    clock = Clock()
    timing = StepTiming(torch.device("cpu"), t_command=0.0, profile=False, clock=clock)
    timing.start(images=0)
    with pytest.raises(RuntimeError), timing.stepping():
        clock.t += 1.0
        raise RuntimeError("step failed")
    assert timing.t_first_step is None and timing.step_s == 0.0


def test_no_timed_step_gives_no_rates() -> None:
    f = summary_figures(
        data_s=0.0,
        step_s=0.0,
        comm_s=0.0,
        phase_s={"h2d": 1.0},
        steps=1,
        images=2,
        step_images=2,
        elapsed=0.0,
        time_to_first_step=3.0,
    )
    assert f["images_per_s"] == 0.0 and f["time_per_step_s"] == 0.0 and f["images_per_s_steady"] is None
    assert f["fraction_data"] is None and f["fraction_allreduce"] is None and "fraction_h2d" not in f


def test_interval_rate_counts_from_the_previous_call() -> None:
    clock = Clock()
    timing = StepTiming(torch.device("cpu"), t_command=0.0, profile=False, clock=clock)
    clock.t = 100.0
    timing.start(images=10)  # a resumed run: its earlier images are not this interval's
    clock.t = 104.0
    assert timing.interval_rate(18) == 2.0
    clock.t = 105.0
    assert timing.interval_rate(24) == 6.0


def test_the_allreduce_hook_reduces_synchronously_and_records_its_time(tmp_path: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        timing = StepTiming(torch.device("cpu"), t_command=0.0, profile=True)
        hook = timing.comm_hook()
        assert hook is not None

        class Bucket:
            def buffer(self) -> torch.Tensor:
                return torch.tensor([2.0, 4.0])

        timing.start(images=0)
        with timing.stepping():
            hook(None, Bucket())  # the first step's all-reduce: left out
        with timing.stepping():
            reduced = hook(None, Bucket()).wait()
        assert reduced.tolist() == [2.0, 4.0]  # the mean over one rank
        f = timing.figures(steps=2, images=2, step_images=1)
        assert f["fraction_allreduce"] > 0
        assert f["fraction_compute"] + f["fraction_allreduce"] == pytest.approx(1.0)

        seconds: list[float] = []
        sync_allreduce_hook(seconds)(None, Bucket())
        assert len(seconds) == 1 and seconds[0] >= 0
    finally:
        dist.destroy_process_group()
