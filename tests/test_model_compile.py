"""torch.compile of the GAN step (model/compiled.py): same losses as eager, and a way back."""
from __future__ import annotations

import logging

import pytest
import torch

from model.compiled import CompiledOrEager, should_compile
from model.config import LossConfig, OptimConfig
from model.discriminator import build_discriminators
from model.gan import GanStep
from model.generator import build_generator
from tests.model_utils import synthetic_batch, tiny_config


def test_compile_setting_follows_the_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not should_compile("auto", cpu) and should_compile("auto", cuda)
    assert should_compile("always", cpu) and not should_compile("never", cuda)
    with pytest.raises(ValueError, match="auto, always or never"):
        should_compile("yes", cpu)
    with pytest.raises(ValueError, match="optim.compile must be"):
        OptimConfig(compile="true")
    with pytest.raises(ValueError, match="compile_mode"):
        OptimConfig(compile_mode="fastest")


class _Boom(Exception):
    pass


_Boom.__module__ = "torch._inductor.exc"  # what a compiler failure looks like from outside


def _failing_compiler(fail_on: int):
    def compiler(module, mode):
        calls = {"n": 0}

        def run(*args):
            calls["n"] += 1
            if calls["n"] == fail_on:
                raise _Boom("C++ compile error: no such header")
            return module(*args)
        return run
    return compiler


def test_a_compiler_failure_falls_back_to_eager_once_with_a_warning(caplog):
    lin = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    wrapped = CompiledOrEager(lin, "the generator", compiler=_failing_compiler(fail_on=2))
    with caplog.at_level(logging.WARNING, logger="model.compiled"):
        assert torch.equal(wrapped(x), lin(x))  # first call compiles fine
        assert torch.equal(wrapped(x), lin(x))  # a recompilation fails: eager from now on
        assert torch.equal(wrapped(x), lin(x))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "the generator" in warnings[0] and "no such header" in warnings[0]
    assert not wrapped.compiled


def test_a_model_error_after_the_first_call_is_not_swallowed():
    lin = torch.nn.Linear(3, 2)
    wrapped = CompiledOrEager(lin, "D", compiler=lambda m, mode: m)
    wrapped(torch.randn(1, 3))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        wrapped(torch.randn(1, 5))
    assert wrapped.compiled


def _gan(compile_: str) -> GanStep:
    torch.manual_seed(0)
    cfg = tiny_config("full")
    g = build_generator(cfg)
    d, d_face = build_discriminators(cfg)
    return GanStep(g, d, d_face, cfg, LossConfig(backbone="none"), OptimConfig(compile=compile_))


@pytest.mark.slow
@pytest.mark.timeout(2400)  # inductor compiles C++ kernels for G, D and face D, forward and backward
def test_compiled_step_matches_eager_on_cpu_inductor():
    batch = synthetic_batch(2)
    eager, compiled = _gan("never"), _gan("always")
    assert compiled.compiled and not eager.compiled
    for _ in range(2):  # the second step runs the already-compiled graphs on updated weights
        a, b = eager.step(dict(batch)), compiled.step(dict(batch))
        for key in ("g_total", "d_total", "l1", "g_adv"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    assert all(f.compiled for f in (compiled._g_fn, compiled._d_fn, compiled._d_face_fn))
