"""Fault injection, training side (issue 8, faults 8 and 10), default suite.

A real SIGKILL at each point of a checkpoint write (the in-process crash variants are in
tests/test_train_checkpoint.py), and inf in the discriminator's gradients with finite losses.
NaN on one of two DDP ranks is tests/test_model_gan.py::test_ddp_two_ranks_stay_in_sync_and_skip_together
(plain torch.distributed) and tests/test_train_slow.py::test_nan_on_one_rank_is_skipped_by_all (Ray);
a non-finite state never written: tests/test_train_checkpoint.py::test_non_finite_state_is_never_written.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines.training import checkpoint as ckpt
from pipelines.training.checkpoint import CheckpointStore, NonFiniteCheckpointError
from tests.model_utils import synthetic_batch, tiny_config

ROOT = Path(__file__).resolve().parents[1]

_KILL_CHECKPOINT = """
import os, sys, time
import torch
from pipelines.training import checkpoint as ckpt
where = sys.argv[2]
store = ckpt.CheckpointStore(sys.argv[1], keep=5)
store.save(4, {"w": torch.full((64, 64), 4.0), "step": 4})

def stop(label):
    if label == where:
        print("stopped", flush=True)
        time.sleep(120)

real_write, real_replace = ckpt._write_synced, os.replace
def write(path, data):
    if path.name == ckpt.STATE_FILE:
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2]); f.flush(); os.fsync(f.fileno())
        stop("state-half-written")
        with open(path, "ab") as f:
            f.write(data[len(data) // 2:])
        return
    real_write(path, data)
    if path.name == ckpt.META_FILE:
        stop("before-folder-rename")
def replace(src, dst):
    if os.path.basename(dst) == ckpt.MARKER_FILE:  # its temporary sibling is complete and synced
        stop("marker-written-not-renamed")
    real_replace(src, dst)
    if str(dst).endswith("step-000000008"):
        stop("renamed-before-marker")
ckpt._write_synced = write
ckpt.os.replace = replace
store.save(8, {"w": torch.full((64, 64), 8.0), "step": 8})
print("finished", flush=True)
"""


@pytest.mark.parametrize("where", ["state-half-written", "before-folder-rename", "renamed-before-marker",
                                   "marker-written-not-renamed"])
def test_sigkill_while_writing_a_checkpoint_never_loads_the_partial_one(tmp_path: Path, where: str) -> None:
    root = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_CHECKPOINT, str(root), where], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "stopped"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    leftovers = {p.name for p in root.iterdir()}
    assert "step-000000004" in leftovers and len(leftovers) == 2  # the previous one + the interrupted write
    store = CheckpointStore(root, keep=5)
    assert [c.step for c in store.committed()] == [4]
    info, state = store.load_latest()
    assert info.step == 4 and state["step"] == 4 and torch.equal(state["w"], torch.full((64, 64), 4.0))
    # The resumed run writes step 8 again over whatever the killed one left.
    store.save(8, {"w": torch.full((64, 64), 8.0), "step": 8})
    info, state = store.load_latest()
    assert info.step == 8 and state["step"] == 8
    assert [c.step for c in store.committed()] == [4, 8]


def _gan():
    from model.config import LossConfig, OptimConfig
    from model.discriminator import build_discriminators
    from model.gan import GanStep
    from model.generator import build_generator

    torch.manual_seed(0)
    cfg = tiny_config("full")
    g = build_generator(cfg)
    d, d_face = build_discriminators(cfg)
    return GanStep(g, d, d_face, cfg, LossConfig(backbone="none"), OptimConfig(flow_warmup_steps=0))


def _params(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def test_inf_in_discriminator_grads_with_finite_losses_skips_the_step(tmp_path: Path) -> None:
    step = _gan()
    assert step.step(synthetic_batch(2, seed=1))["skipped"] == 0.0
    g0, d0, e0 = _params(step.G), _params(step.D), _params(step.ema)
    first_d = next(p for p in step.D.parameters() if p.requires_grad)
    handle = first_d.register_hook(lambda grad: grad * float("inf"))  # the loss stays finite
    out = step.step(synthetic_batch(2, seed=2))
    handle.remove()
    assert out["skipped"] == 1.0 and math.isinf(out["grad_norm_d"])
    assert all(math.isfinite(v) for k, v in out.items() if k not in ("grad_norm_d", "skipped"))
    for before, module in ((g0, step.G), (d0, step.D), (e0, step.ema)):
        after = _params(module)
        assert all(torch.equal(before[k], after[k]) for k in before)  # no half-applied update
    assert step.total_skips == 1 and step.consecutive_skips == 1
    state = step.state_dict()
    assert ckpt.non_finite_tensors(state) == []  # the skipped step left nothing non-finite behind
    CheckpointStore(tmp_path / "ck").save(2, state)
    # A state that did pick up an inf is refused, so it can never be resumed from or registered.
    poisoned = {"gan": step.state_dict(), "extra": torch.tensor([float("inf")])}
    with pytest.raises(NonFiniteCheckpointError):
        CheckpointStore(tmp_path / "ck").save(3, poisoned)
    assert [c.step for c in CheckpointStore(tmp_path / "ck").committed()] == [2]
    assert step.step(synthetic_batch(2, seed=3))["skipped"] == 0.0 and step.consecutive_skips == 0


def test_a_generator_with_non_finite_weights_is_never_registered(tmp_path: Path, monkeypatch) -> None:
    from model.config import ModelConfig
    from model.export import PackedGenerator
    from model.generator import build_generator
    from pipelines.registry import publish
    from tests.record_fixtures import evaluation_record

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    cfg = ModelConfig(base_channels=4, max_channels=8, attn_dim=8, flow_channels=4, combine_channels=4,
                      encoder_blocks=0, bottleneck_blocks=1, decoder_blocks=0, flow_depth=8)
    exported = PackedGenerator(build_generator(cfg), cfg.pose_channels, (32, 24))
    with torch.no_grad():
        next(exported.parameters()).view(-1)[0] = float("inf")
    example = torch.rand(1, exported.in_channels, 32, 24).numpy()
    with pytest.raises(ValueError, match="refusing to register a generator with non-finite parameters"):
        publish.register_generator(exported, example, publish.RegistrationRequest(
            "attnflow-pose", evaluation_record({"ssim": 0.9}), "ssim"))
    assert not (tmp_path / "mlruns.db").exists()  # refused before the store was even opened


@pytest.mark.faults
def test_corrupt_shard_at_train_time_is_skipped_and_counted_in_mlflow(tmp_path: Path, monkeypatch) -> None:
    """Fault 5 through the training loop: a truncated and a bit-flipped shard; the run completes its
    steps and MLflow's ``data/errors`` counts what was skipped (the loader's part is in test_faults_data)."""
    import dataclasses

    from mlflow.tracking import MlflowClient
    from train_fixtures import DATASET, make_tiny_project, read_summary

    from datasets.shards.build import preprocess
    from datasets.shards.tar import load_manifest
    from pipelines import train
    from pipelines.config.params import load_config

    params = make_tiny_project(tmp_path)
    cfg = load_config(params)
    preprocess(DATASET, cfg.datasets[DATASET], dataclasses.replace(cfg.preprocess, shard_size=1),
               Path(cfg.datasets[DATASET].shards), show_progress=False)  # one group per shard
    monkeypatch.setenv("ATTNFLOW_ROOT", str(tmp_path))
    for key in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "ATTNFLOW_FAULTS"):
        monkeypatch.delenv(key, raising=False)
    shards = tmp_path / "data/shards" / DATASET
    names = [s["name"] for s in load_manifest(shards)["shards"] if s["split"] == "train"]
    assert len(names) >= 3
    data = (shards / names[0]).read_bytes()
    (shards / names[0]).write_bytes(data[: len(data) // 2])
    data = bytearray((shards / names[-1]).read_bytes())
    data[513] ^= 0xFF  # the first sample's meta.json
    (shards / names[-1]).write_bytes(bytes(data))
    assert train.main(["--params", str(params), "--workers", "0", "--run-name", "corrupt"]) == 0
    s = read_summary(tmp_path, "corrupt")
    assert s["status"] == "completed" and s["steps"] == 8 and s["data_errors"] >= 1  # the run reads part of an epoch
    errors = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}").get_metric_history(s["mlflow_run_id"], "data/errors")
    assert max(m.value for m in errors) == s["data_errors"]
