"""datasets.parallel.ordered_map: plan-ordered results on Ray tasks, the same as in-process."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from datasets.parallel import connect, ordered_map, shutdown


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (ordered_map joins it rather than starting its own); this
    test module's functions travel by value, as tests/ is not importable on Ray workers."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = connect(None, 2, {}, Path(__file__).resolve().parents[1])
    yield
    shutdown(started)


def _square_slowly(x: int) -> tuple[int, int]:
    time.sleep(0.05 * (5 - x % 5))  # later pieces finish first
    return x, x * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"piece {x} is bad")
    return x


def _die_once(args: tuple[int, str]) -> int:
    """Kills its own worker process the first time piece 2 runs (a marker file says it did)."""
    x, marker = args
    if x == 2 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return x * 10


def test_in_process_and_ray_give_the_same_ordered_results():
    pieces = list(range(9))
    here = ordered_map(_square_slowly, pieces, workers=0)
    assert here == [(x, x * x) for x in pieces]
    assert ordered_map(_square_slowly, pieces, workers=2) == here


def test_a_piece_error_propagates_as_itself():
    with pytest.raises(ValueError, match="piece 3 is bad"):
        ordered_map(_fail_on_three, list(range(5)), workers=0)
    with pytest.raises(ValueError, match="piece 3 is bad") as raised:
        ordered_map(_fail_on_three, list(range(5)), workers=2)
    assert type(raised.value) is ValueError  # not Ray's wrapper: callers catch their own errors


@pytest.mark.faults
def test_a_killed_worker_is_retried(tmp_path):
    marker = str(tmp_path / "died")
    out = ordered_map(_die_once, [(x, marker) for x in range(4)], workers=2)
    assert os.path.exists(marker)
    assert out == [0, 10, 20, 30]


def test_negative_workers_is_refused():
    with pytest.raises(ValueError, match="workers must be >= 0"):
        ordered_map(_fail_on_three, [1], workers=-1)
