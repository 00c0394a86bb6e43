"""The GAN step: returned terms, fault skipping, EMA, warm-up, R1, checkpoint round trip, DDP."""
import copy
import os
import socket

import pytest
import torch

from model.config import LossConfig, OptimConfig
from model.discriminator import build_discriminators
from model.gan import GanStep
from model.generator import build_generator
from tests.model_utils import synthetic_batch, tiny_config


def _make(variant="full", loss=None, optim=None, seed=0):
    torch.manual_seed(seed)
    cfg = tiny_config(variant)
    g = build_generator(cfg)
    d, d_face = build_discriminators(cfg)
    return GanStep(g, d, d_face, cfg, loss or LossConfig(backbone="none"), optim or OptimConfig())


def _snapshot(module, buffers=True):
    if not buffers:  # spectral norm's power-iteration vectors move on every forward, by design
        return {k: v.detach().clone() for k, v in module.named_parameters()}
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_step_returns_unweighted_terms_as_floats():
    step = _make("full")
    out = step.step(synthetic_batch(2))
    expected = {"l1", "content", "style", "g_adv", "sampling_correctness", "flow_reg", "attn_rec", "face_adv",
                "face_perceptual", "g_total", "d_real", "d_fake", "d_face_real", "d_face_fake", "d_total",
                "grad_norm_g", "grad_norm_d", "skipped"}
    assert set(out) == expected
    assert all(isinstance(v, float) for v in out.values()) and out["skipped"] == 0.0
    weights = LossConfig().weights()
    g_total = sum(weights[k] * out[k] for k in weights if k in out)
    assert abs(g_total - out["g_total"]) < 1e-3 * max(1.0, abs(g_total))


@pytest.mark.parametrize("variant,absent", [("baseline", {"sampling_correctness", "attn_rec", "face_adv"}),
                                            ("attn", {"sampling_correctness", "flow_reg", "face_adv"}),
                                            ("flow", {"attn_rec", "face_adv"}),
                                            ("no_face", {"face_adv", "face_perceptual", "d_face_real"})])
def test_terms_follow_the_variant(variant, absent):
    out = _make(variant).step(synthetic_batch(2))
    assert not absent & set(out)


def test_a_step_updates_g_d_and_the_ema():
    step = _make("full")
    g0, d0, e0 = _snapshot(step.G), _snapshot(step.D), _snapshot(step.ema)
    step.step(synthetic_batch(2))
    assert not _same(g0, _snapshot(step.G)) and not _same(d0, _snapshot(step.D))
    assert not _same(e0, _snapshot(step.ema))
    assert step.step_count == 1 and step.consecutive_skips == 0


def test_non_finite_loss_skips_the_whole_step_and_counts():
    step = _make("full")
    step.step(synthetic_batch(2))
    g0, e0 = _snapshot(step.G), _snapshot(step.ema)
    d0, df0 = _snapshot(step.D, buffers=False), _snapshot(step.D_face, buffers=False)
    opt0 = copy.deepcopy(step.opt_g.state_dict())
    bad = synthetic_batch(2)
    bad["source_image"][0, 0, 0, 0] = float("nan")
    for i in range(2):
        out = step.step(bad)
        assert out["skipped"] == 1.0 and step.consecutive_skips == i + 1
    assert _same(g0, _snapshot(step.G)) and _same(e0, _snapshot(step.ema))
    assert _same(d0, _snapshot(step.D, False)) and _same(df0, _snapshot(step.D_face, False))
    assert all(torch.isfinite(b).all() for b in step.D.buffers())
    assert opt0["state"][0]["step"] == step.opt_g.state_dict()["state"][0]["step"]
    assert all(p.grad is None for p in step.g_params)
    assert step.step(synthetic_batch(2))["skipped"] == 0.0 and step.consecutive_skips == 0
    assert step.total_skips == 2 and step.step_count == 4


def test_invalid_faces_are_masked_out():
    step = _make("full")
    batch = synthetic_batch(2)
    batch["target_face_valid"] = torch.zeros(2, dtype=torch.bool)
    out = step.step(batch)
    assert out["face_adv"] == 0 and out["face_perceptual"] == 0 and out["d_face_real"] == 0
    assert out["skipped"] == 0.0


def test_missing_batch_keys_fail_clearly():
    step = _make("full")
    batch = synthetic_batch(2)
    del batch["target_face_box"]
    with pytest.raises(ValueError, match="target_face_box"):
        step.step(batch)


def test_variant_and_face_discriminator_must_agree():
    cfg = tiny_config("no_face")
    d, _ = build_discriminators(cfg)
    _, d_face = build_discriminators(tiny_config("full"))
    with pytest.raises(ValueError, match="face discriminator"):
        GanStep(build_generator(cfg), d, d_face, cfg, LossConfig(backbone="none"))


def test_flow_warmup_trains_only_the_flow_estimator():
    step = _make("full", optim=OptimConfig(flow_warmup_steps=2))
    flow0 = _snapshot(step.G.flow_estimator)
    rest0 = {k: v for k, v in _snapshot(step.G).items() if not k.startswith("flow_estimator.")}
    d0 = _snapshot(step.D, buffers=False)
    out = step.step(synthetic_batch(2))
    assert out["warmup"] == 1.0 and set(out) >= {"sampling_correctness", "flow_reg"} and "l1" not in out
    assert not _same(flow0, _snapshot(step.G.flow_estimator))
    assert _same(rest0, {k: v for k, v in _snapshot(step.G).items() if not k.startswith("flow_estimator.")})
    assert _same(d0, _snapshot(step.D, buffers=False))
    step.step(synthetic_batch(2))
    assert "warmup" not in step.step(synthetic_batch(2))


def test_r1_every_n_steps():
    step = _make("flow", loss=LossConfig(backbone="none", r1_gamma=10.0, r1_every=2))
    assert "r1" in step.step(synthetic_batch(2))
    assert "r1" not in step.step(synthetic_batch(2))
    assert "r1" in step.step(synthetic_batch(2))


def test_state_dict_round_trip_resumes_identically():
    a = _make("full")
    a.step(synthetic_batch(2, seed=1))
    state = copy.deepcopy(a.state_dict())
    b = _make("full", seed=5)
    b.load_state_dict(state)
    assert b.step_count == 1
    batch = synthetic_batch(2, seed=2)
    ra, rb = a.step(batch), b.step(batch)
    assert ra == rb
    assert _same(_snapshot(a.G), _snapshot(b.G)) and _same(_snapshot(a.ema), _snapshot(b.ema))


def test_loading_a_checkpoint_of_another_variant_fails():
    state = _make("full").state_dict()
    with pytest.raises(ValueError, match="face discriminator"):
        _make("no_face").load_state_dict(state)


# ---------------------------------------------------------------------------------------------
# DDP with G and D wrapped separately, two CPU ranks over gloo.

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same initial weights everywhere
        cfg = tiny_config("full")
        g = build_generator(cfg)
        d, d_face = build_discriminators(cfg)
        step = GanStep(DDP(g), DDP(d), DDP(d_face), cfg, LossConfig(backbone="none", r1_gamma=1.0, r1_every=2),
                       OptimConfig(flow_warmup_steps=1))
        results = [step.step(synthetic_batch(2, seed=10 * i + rank)) for i in range(3)]  # warm-up, plain, R1
        bad = synthetic_batch(2, seed=99)
        if rank == 1:
            bad["target_image"][0, 0, 0, 0] = float("inf")
        before = _snapshot(g)
        results.append(step.step(bad))
        unchanged = _same(before, _snapshot(g))
        torch.save({"results": results, "unchanged": unchanged, "skips": step.consecutive_skips,
                    "in_sync": _ranks_agree(world, g, d, d_face)}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _ranks_agree(world: int, *modules: torch.nn.Module) -> bool:
    """Whether every rank holds the same parameters of ``modules`` (gathered over the process group)."""
    import torch.distributed as dist

    flat = torch.cat([p.detach().reshape(-1) for m in modules for p in m.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    return all(torch.equal(gathered[0], x) for x in gathered)


def test_ddp_two_ranks_stay_in_sync_and_skip_together(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert r["in_sync"], f"rank {rank}: weights diverged across ranks"
        assert r["results"][0]["warmup"] == 1.0 and "r1" in r["results"][2]
        assert [x["skipped"] for x in r["results"]] == [0.0, 0.0, 0.0, 1.0]
        assert r["unchanged"] and r["skips"] == 1


def _ddp_warmup_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        cfg = tiny_config("full", decoder_image=True)
        g = build_generator(cfg)
        d, d_face = build_discriminators(cfg)
        step = GanStep(DDP(g), DDP(d), DDP(d_face), cfg, LossConfig(backbone="none"),
                       OptimConfig(flow_warmup_steps=1, warmup_attention=True, generator_warmup_steps=1))
        results = [step.step(synthetic_batch(2, seed=10 * i + rank)) for i in range(3)]  # each phase once
        torch.save({"results": results, "in_sync": _ranks_agree(world, g, d)}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_warmups_keep_the_ranks_in_sync(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_ddp_warmup_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert r["in_sync"], f"rank {rank}: weights diverged across ranks"
        phases = [("warmup" in x, "generator_warmup" in x, "d_total" in x) for x in r["results"]]
        assert phases == [(True, False, False), (False, True, False), (False, False, True)]
        assert "attn_rec" in r["results"][0]


def test_bf16_autocast_path_runs_with_float32_coordinates():
    # The CUDA path (bf16 autocast) emulated on CPU: flows and sampling grids stay float32.
    step = _make("full")
    batch = synthetic_batch(2)
    with torch.no_grad():
        ref = step.G(batch["source_image"], batch["source_pose"], batch["target_pose"])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = step.G(batch["source_image"], batch["source_pose"], batch["target_pose"])
    assert all(f.dtype == torch.float32 for f in low.flows.values())
    assert (low.image.float() - ref.image).abs().max() < 0.1
    step.amp_dtype = torch.bfloat16
    out = step.step(batch)
    assert out["skipped"] == 0.0 and all(v == v for v in out.values())


def test_ema_decay_warms_up_so_a_short_run_forgets_the_random_start():
    from model.gan import ema_decay_at
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert ema_decay_at(3, 0.999, start=5) == 0.0
    decays = [ema_decay_at(n, 0.999) for n in range(20000)]
    assert all(a <= b for a, b in zip(decays, decays[1:])) and decays[-1] == 0.999
    # After 80 steps (the default run) the initial weights keep a few percent, not 92%.
    remaining = 1.0
    for n in range(80):
        remaining *= decays[n]
    assert remaining < 0.05


def test_warmup_attention_trains_the_attention_and_its_encoders_not_the_decoder():
    step = _make("full", optim=OptimConfig(flow_warmup_steps=1, warmup_attention=True))
    trained = ("flow_estimator.", "attention.", "reference_encoder.", "skeleton_encoder.")
    g0 = _snapshot(step.G)
    out = step.step(synthetic_batch(2))
    assert out["warmup"] == 1.0 and {"sampling_correctness", "flow_reg", "attn_rec"} <= set(out) and "l1" not in out
    g1 = _snapshot(step.G)
    for prefix in trained:
        assert not _same({k: v for k, v in g0.items() if k.startswith(prefix)},
                         {k: v for k, v in g1.items() if k.startswith(prefix)}), prefix
    rest = [k for k in g0 if not k.startswith(trained)]
    assert rest and all(torch.equal(g0[k], g1[k]) for k in rest)
    weights = LossConfig().weights()
    assert abs(out["g_total"] - sum(weights[k] * out[k] for k in ("sampling_correctness", "flow_reg", "attn_rec"))) < 1e-4
    # attention alone (no flow estimator) also warms up
    step = _make("attn", optim=OptimConfig(flow_warmup_steps=1, warmup_attention=True))
    assert step.step(synthetic_batch(2)).get("warmup") is None  # warm-up needs the flow estimator


def test_generator_warmup_trains_g_without_the_discriminators_then_the_gan_starts():
    step = _make("full", optim=OptimConfig(flow_warmup_steps=1, generator_warmup_steps=1))
    assert step.step(synthetic_batch(2))["warmup"] == 1.0
    g0, e0 = _snapshot(step.G), _snapshot(step.ema)
    d0, f0 = _snapshot(step.D, buffers=False), _snapshot(step.D_face, buffers=False)
    out = step.step(synthetic_batch(2))
    assert out["generator_warmup"] == 1.0
    assert {"l1", "content", "style", "sampling_correctness", "attn_rec", "face_perceptual"} <= set(out)
    assert not {"g_adv", "face_adv", "d_real", "d_fake", "d_total"} & set(out)
    g1 = _snapshot(step.G)
    assert all(not torch.equal(g0[k], g1[k]) for k in g0 if k.startswith(("warp_blocks.", "to_image.", "flow_estimator.")))
    assert not _same(e0, _snapshot(step.ema))
    assert _same(d0, _snapshot(step.D, buffers=False)) and _same(f0, _snapshot(step.D_face, buffers=False))
    weights = LossConfig().weights()
    assert abs(out["g_total"] - sum(weights[k] * out[k] for k in weights if k in out)) < 1e-3 * max(1.0, out["g_total"])
    out = step.step(synthetic_batch(2))
    assert "generator_warmup" not in out and "warmup" not in out and {"g_adv", "d_total"} <= set(out)


def test_generator_warmup_steps_must_not_be_negative():
    with pytest.raises(ValueError, match="generator_warmup_steps"):
        OptimConfig(generator_warmup_steps=-1)
