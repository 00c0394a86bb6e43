"""The training loop's plain parts: the context Ray ships to workers, and the loss interval's sums."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pipelines.config.params import ConfigError, load_config, to_dict
from pipelines.training.loop import LoopContext, LoopState, context_from, loop_config_from

ROOT = Path(__file__).resolve().parents[1]


def _context() -> LoopContext:
    cfg = load_config([ROOT / "params.yaml", ROOT / "portrait/params.yaml"], ["train.batch_size=3"])
    return LoopContext(
        config=cfg,
        run_name="r",
        run_dir="/runs/r",
        checkpoint_root="s3://bucket/r/checkpoints",
        shards="/data/shards/x",
        tags={"git_commit": None, "dataset": "x"},
        t_command=12.5,
        profile_comm=True,
        artifact_location=None,
        log_level="debug",
    )


def test_the_context_travels_as_plain_data_and_comes_back_equal() -> None:
    ctx = _context()
    shipped = loop_config_from(ctx)
    assert json.loads(json.dumps(shipped)) == shipped  # plain data: what Ray's train_loop_config holds
    assert shipped["ctx"]["config"] == to_dict(ctx.config)
    back = context_from(shipped)
    assert back == ctx and back.config.train.batch_size == 3
    # Typed again on the worker: tuples, not the lists they travel as.
    assert isinstance(back.config.pipeline.synthesize, tuple) and isinstance(
        shipped["ctx"]["config"]["pipeline"]["synthesize"], list
    )


def test_a_shipped_config_is_checked_as_a_params_file_is() -> None:
    shipped = loop_config_from(_context())
    shipped["ctx"]["config"]["train"]["batch_sise"] = 2
    with pytest.raises(ConfigError, match="batch_sise"):
        context_from(shipped)


def test_the_interval_sums_finite_losses_and_counts_steps() -> None:
    state = LoopState()
    state.add_losses({"g_total": 2.0, "l1": math.nan, "skipped": 0.0})
    state.add_losses({"g_total": 4.0, "l1": 1.0, "skipped": 0.0})
    assert state.loss_sums == {"g_total": 6.0, "l1": 1.0} and state.loss_steps == 2
    assert state.history == {"skipped_steps": 0, "data_errors": 0, "restarts": 0, "first_loss": None}
