"""Model benchmark: ``python -m pipelines.bench model [--device cpu|cuda] [--threads N] [--quick]``.

Measures, in one run on one machine (figures from different machines are not comparable):
- generator forward+backward time and peak memory per variant, for the default configuration at
  64×44 and 128×88 and the paper configuration at 256×176;
- the full/flow-only time ratio (goal <= 1.3);
- GFLOPs of one generator forward at 256×176 per variant (``torch.utils.flop_counter``);
- achieved FLOP/s of a whole training step (G, D, face D, loss backbone; forward and backward)
  divided by the dense matmul FLOP/s measured in the same run (goal >= 40%);
- memory of the 1/4-scale attention of 256×176 with fused attention vs an explicit matrix;
- on CUDA (bf16 autocast, channels-last): training images/s and MFU against the GPU's bf16 peak.
On CPU, times are the process's CPU seconds (robust on a shared machine; equal to wall time for one
thread on an idle one) and peak memory is the growth of the peak resident set of a fresh process
that runs only that measurement; on CUDA, times are wall time and peak memory is
``torch.cuda.max_memory_allocated``. Writes reports/bench-model.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from model.config import VARIANTS, LossConfig, ModelConfig, OptimConfig
from model.discriminator import build_discriminators
from model.gan import GanStep, prepare_module
from model.generator import build_generator, count_parameters
from model.warp import attention_warp, attention_warp_reference
from pipelines.config.logs import add_log_level_arg, setup_logging

POSE_CHANNELS = 18
SIZES = {
    "default@64x44": ("default", (64, 44)),
    "default@128x88": ("default", (128, 88)),
    "paper@256x176": ("paper", (256, 176)),
}
# Dense bf16 tensor-core peaks (no sparsity) by device-name fragment, in FLOP/s.
GPU_BF16_PEAK = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
}


def model_config(kind: str, variant: str) -> ModelConfig:
    return ModelConfig.paper(variant=variant) if kind == "paper" else ModelConfig(variant=variant)


def make_batch(b: int, size: tuple[int, int], device: torch.device, channels_last: bool = False) -> dict:
    h, w = size
    g = torch.Generator().manual_seed(0)
    batch = {
        "source_image": torch.rand(b, 3, h, w, generator=g) * 2 - 1,
        "target_image": torch.rand(b, 3, h, w, generator=g) * 2 - 1,
        "source_pose": torch.rand(b, POSE_CHANNELS, h, w, generator=g),
        "target_pose": torch.rand(b, POSE_CHANNELS, h, w, generator=g),
        "target_face_box": torch.tensor([[w * 0.3, h * 0.04, w * 0.7, h * 0.3]]).repeat(b, 1),
        "target_face_valid": torch.ones(b, dtype=torch.bool),
    }
    out = {}
    for k, v in batch.items():
        v = v.to(device)
        out[k] = v.contiguous(memory_format=torch.channels_last) if channels_last and v.dim() == 4 else v
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timeit(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Fastest of ``repeats`` runs after ``warmup`` runs, in seconds.

    On CPU the clock is this process's CPU time: on a machine shared with other jobs, wall time
    mostly measures the queue for a core, CPU time measures the work (at --threads 1 the two agree
    on an idle machine). On CUDA it is wall time after a synchronise."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        _sync(device)
        times.append(clock() - t0)
    return min(times)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> float:
    """Reset the resident-set high-water mark (Linux >= 4.0) and return the current RSS in MB.

    ``getrusage``'s ru_maxrss would not do: Linux carries it across fork+exec, so a spawned child
    starts with its parent's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # then VmHWM still covers only this process image (it is reset at exec)
    return _status_mb("VmRSS")


def _peak_rss_mb() -> float:
    return _status_mb("VmHWM")


def _child(conn, fn_name: str, kwargs: dict) -> None:
    try:
        conn.send(("ok", globals()[fn_name](**kwargs)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def isolated(fn_name: str, **kwargs) -> Any:
    """Run ``fn_name(**kwargs)`` from this module in a fresh process (clean peak-RSS accounting)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn_name, kwargs))
    proc.start()
    child.close()
    status, value = parent.recv()
    proc.join()
    if status != "ok":
        raise RuntimeError(f"{fn_name}({kwargs}) failed: {value}")
    return value


# ---------------------------------------------------------------------------------------------
# Measurements (each runs in its own process on CPU).


def measure_generator(
    kind: str,
    variant: str,
    size: tuple[int, int],
    batch: int,
    threads: int,
    repeats: int,
    device: str = "cpu",
    amp: bool = False,
) -> dict:
    """Generator forward+backward (loss = mean of the image): fastest time and peak memory."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    cfg = model_config(kind, variant)
    optim = OptimConfig()
    g = prepare_module(build_generator(cfg), dev, optim)
    x = make_batch(batch, size, dev, channels_last=dev.type == "cuda")
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda")

    def fwd_bwd():
        with autocast:
            out = g(x["source_image"], x["source_pose"], x["target_pose"])
        out.image.float().mean().backward()
        g.zero_grad(set_to_none=True)

    if dev.type == "cuda":
        fwd_bwd()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        seconds = _timeit(fwd_bwd, dev, repeats, warmup=0)
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        # Peak of the first pass in a fresh process: later passes reuse memory the allocator kept.
        rss = _reset_peak_rss()
        fwd_bwd()
        peak = _peak_rss_mb() - rss
        seconds = _timeit(fwd_bwd, dev, repeats, warmup=0)
    return {"seconds": seconds, "peak_mb": peak, "params": count_parameters(g)}


def measure_full_over_flow(
    kind: str,
    size: tuple[int, int],
    batch: int,
    threads: int,
    repeats: int,
    device: str = "cpu",
    amp: bool = False,
) -> float:
    """Ratio of full to flow generator fwd+bwd time, timed alternately in one process."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    x = make_batch(batch, size, dev, channels_last=dev.type == "cuda")
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda")
    fns = {}
    for v in ("flow", "full"):
        torch.manual_seed(0)
        g = prepare_module(build_generator(model_config(kind, v)), dev, OptimConfig())

        def fwd_bwd(g=g):
            with autocast:
                out = g(x["source_image"], x["source_pose"], x["target_pose"])
            out.image.float().mean().backward()
            g.zero_grad(set_to_none=True)

        fns[v] = fwd_bwd
        fwd_bwd()
    best = {v: float("inf") for v in fns}
    for _ in range(repeats):
        for v, fn in fns.items():
            best[v] = min(best[v], _timeit(fn, dev, 1, warmup=0))
    return best["full"] / best["flow"]


def generator_gflops(kind: str, variant: str, size: tuple[int, int]) -> float:
    """GFLOPs of one forward pass, batch 1 (analytic count, device independent)."""
    from torch.utils.flop_counter import FlopCounterMode

    g = build_generator(model_config(kind, variant)).eval()
    x = make_batch(1, size, torch.device("cpu"))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        g(x["source_image"], x["source_pose"], x["target_pose"])
    return counter.get_total_flops() / 1e9


def matmul_flops(threads: int, device: str = "cpu", n: int = 2048, dtype: str = "float32") -> float:
    """Dense square matmul throughput in FLOP/s (the machine's practical peak for this dtype)."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    dt = getattr(torch, dtype)
    a, b = torch.randn(n, n, device=dev, dtype=dt), torch.randn(n, n, device=dev, dtype=dt)
    reps = 50 if dev.type == "cuda" else 2
    seconds = _timeit(lambda: [torch.mm(a, b) for _ in range(reps)], dev, repeats=2) / reps
    return 2 * n**3 / seconds


def measure_train_step(
    kind: str,
    variant: str,
    size: tuple[int, int],
    batch: int,
    threads: int,
    repeats: int,
    device: str = "cpu",
    backbone: str = "effnet_lite0",
) -> dict:
    """One GanStep.step: FLOPs (forward+backward of G, D, face D and the loss backbone), fastest time."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    cfg = model_config(kind, variant)
    optim = OptimConfig()
    g = prepare_module(build_generator(cfg), dev, optim)
    d, d_face = build_discriminators(cfg)
    d = prepare_module(d, dev, optim)
    d_face = prepare_module(d_face, dev, optim) if d_face is not None else None
    step = GanStep(g, d, d_face, cfg, LossConfig(backbone=backbone), optim)
    x = make_batch(batch, size, dev)
    step.step(x)  # warm-up (allocator, kernels, Adam state)
    counter = FlopCounterMode(display=False)
    with counter:
        step.step(x)
    flops = counter.get_total_flops()
    # Alternate step and matmul timings so both see the same machine load (shared CPUs).
    mm_dtype = "bfloat16" if dev.type == "cuda" else "float32"
    seconds, mm = float("inf"), 0.0
    for _ in range(repeats):
        seconds = min(seconds, _timeit(lambda: step.step(x), dev, 1, warmup=0))
        mm = max(mm, matmul_flops(threads, device, dtype=mm_dtype))
    return {
        "flops": flops,
        "seconds": seconds,
        "matmul_flops": mm,
        "backbone": step.backbone.description,
        "amp": str(step.amp_dtype).replace("torch.", "") if step.amp_dtype else "float32",
        "channels_last": step.channels_last,
    }


def measure_attention(
    size: tuple[int, int], stride: int, dim: int, batch: int, threads: int, fused: bool, device: str = "cpu"
) -> dict:
    """Forward+backward of the 1/stride attention warp: fused kernel or explicit matrix."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    h, w = -(-size[0] // stride), -(-size[1] // stride)
    q, k, v = (torch.randn(batch, dim, h, w, device=dev, requires_grad=True) for _ in range(3))
    fn = attention_warp if fused else attention_warp_reference

    def fwd_bwd():
        fn(q, k, v).sum().backward()

    if dev.type == "cuda":
        fwd_bwd()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        seconds = _timeit(fwd_bwd, dev, 3, warmup=0)
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        # Peak of the first pass in a fresh process: later passes reuse memory the allocator kept.
        rss = _reset_peak_rss()
        fwd_bwd()
        peak = _peak_rss_mb() - rss
        seconds = _timeit(fwd_bwd, dev, 3, warmup=0)
    n = h * w
    return {"tokens": n, "seconds": seconds, "peak_mb": peak, "explicit_matrix_mb": batch * n * n * 4 / 2**20}


def measure_cuda_training(kind: str, variant: str, size: tuple[int, int], batch: int, repeats: int) -> dict:
    """Training images/s with bf16 autocast + channels-last, and MFU against the bf16 peak."""
    res = measure_train_step(kind, variant, size, batch, torch.get_num_threads(), repeats, device="cuda")
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in GPU_BF16_PEAK.items() if k in name), None)
    achieved = res["flops"] / res["seconds"]
    return {
        **res,
        "device": name,
        "images_per_s": batch / res["seconds"],
        "achieved_tflops": achieved / 1e12,
        "bf16_peak_tflops": peak / 1e12 if peak else None,
        "mfu": achieved / peak if peak else None,
    }


# ---------------------------------------------------------------------------------------------


def _run(fn_name: str, isolate: bool, **kwargs) -> Any:
    return isolated(fn_name, **kwargs) if isolate else globals()[fn_name](**kwargs)


def _machine(args: argparse.Namespace, device: str) -> dict[str, Any]:
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": args.threads,
        "device": device,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if device == "cuda":
        machine["gpu"] = torch.cuda.get_device_name()
    return machine


def _sizes_and_gflops() -> dict[str, Any]:
    """1. Parameter counts and forward GFLOPs."""
    return {
        "params": {
            kind: {v: count_parameters(build_generator(model_config(kind, v))) for v in VARIANTS}
            for kind in ("default", "paper")
        },
        "forward_gflops_256x176": {v: generator_gflops("paper", v, (256, 176)) for v in VARIANTS},
        "forward_gflops_128x88": {v: generator_gflops("default", v, (128, 88)) for v in VARIANTS},
    }


def _generator_fwd_bwd(args: argparse.Namespace, sizes: dict, device: str, isolate: bool) -> dict[str, dict]:
    """2. Generator forward+backward per variant and size, and the full/flow ratio."""
    out: dict[str, dict] = {}
    for label, (kind, size) in sizes.items():
        out[label] = {
            v: _run(
                "measure_generator",
                isolate,
                kind=kind,
                variant=v,
                size=size,
                batch=args.batch,
                threads=args.threads,
                repeats=args.repeats,
                device=device,
                amp=device == "cuda",
            )
            for v in VARIANTS
        }
        out[label]["full_over_flow"] = _run(
            "measure_full_over_flow",
            isolate,
            kind=kind,
            size=size,
            batch=args.batch,
            threads=args.threads,
            repeats=args.repeats + 1,
            device=device,
            amp=device == "cuda",
        )
    return out


def _train_steps(args: argparse.Namespace, sizes: dict, device: str, isolate: bool) -> dict[str, dict]:
    """3. Training-step FLOP/s against the matmul rate measured alongside it."""
    out: dict[str, dict] = {}
    for label, (kind, size) in sizes.items():
        if label == "default@64x44":
            continue
        r = _run(
            "measure_train_step",
            isolate,
            kind=kind,
            variant="full",
            size=size,
            batch=args.batch,
            threads=args.threads,
            repeats=max(1, args.repeats - 1),
            device=device,
        )
        r["achieved_flops"] = r["flops"] / r["seconds"]
        r["fraction_of_matmul"] = r["achieved_flops"] / r["matmul_flops"]
        out[label] = r
    return out


def _attention(args: argparse.Namespace, device: str, isolate: bool) -> dict[str, dict]:
    """4. Fused vs explicit attention at the 1/4 scale of 256×176 (paper attn_dim)."""
    dim = ModelConfig.paper().attn_dim
    return {
        name: _run(
            "measure_attention",
            isolate,
            size=(256, 176),
            stride=4,
            dim=dim,
            batch=args.batch,
            threads=args.threads,
            fused=fused,
            device=device,
        )
        for name, fused in (("fused", True), ("explicit", False))
    }


def run(args: argparse.Namespace) -> dict:
    device = "cuda" if args.device == "cuda" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    isolate = device == "cpu"  # fresh process per measurement for clean peak RSS
    sizes = {k: v for k, v in SIZES.items() if not (args.quick and k == "paper@256x176")}
    report: dict[str, Any] = {
        "machine": _machine(args, device),
        "batch": args.batch,
        "load_average_start": os.getloadavg(),
    }
    report.update(_sizes_and_gflops())
    report["generator_fwd_bwd"] = _generator_fwd_bwd(args, sizes, device, isolate)
    report["train_step"] = _train_steps(args, sizes, device, isolate)
    report["attention_1_4_256x176"] = _attention(args, device, isolate)
    report["load_average_end"] = os.getloadavg()
    # 5. GPU training throughput.
    if device == "cuda":
        report["cuda_training"] = {
            v: measure_cuda_training("paper", v, (256, 176), args.cuda_batch, args.repeats)
            for v in ("flow", "full")
        }
    return report


def format_table(r: dict) -> str:
    lines = [
        f"machine: {r['machine']['processor']} ({r['machine']['cpu_capability']}), torch {r['machine']['torch']},"
        f" {r['machine']['threads']} thread(s), device {r['machine']['device']}, batch {r['batch']}; times are "
        + (
            "wall seconds"
            if r["machine"]["device"] == "cuda"
            else "process CPU seconds (fastest of the repeats)"
        ),
        "",
    ]
    lines.append(
        "| variant | params default | params 256×176 | GFLOPs fwd 128×88 | GFLOPs fwd 256×176 | "
        + " | ".join(f"fwd+bwd {k} s (peak MB)" for k in r["generator_fwd_bwd"])
        + " |"
    )
    lines.append("|---" * (5 + len(r["generator_fwd_bwd"])) + "|")
    for v in VARIANTS:
        cells = [
            f"{r['generator_fwd_bwd'][k][v]['seconds']:.3f} ({r['generator_fwd_bwd'][k][v]['peak_mb']:.0f})"
            for k in r["generator_fwd_bwd"]
        ]
        lines.append(
            f"| {v} | {r['params']['default'][v] / 1e6:.2f} M | {r['params']['paper'][v] / 1e6:.2f} M | "
            f"{r['forward_gflops_128x88'][v]:.2f} | {r['forward_gflops_256x176'][v]:.1f} | "
            + " | ".join(cells)
            + " |"
        )
    ratios = ", ".join(f"{k}: {v['full_over_flow']:.2f}" for k, v in r["generator_fwd_bwd"].items())
    load = ", ".join(f"{x:.1f}" for x in r["load_average_start"][:1] + r["load_average_end"][:1])
    lines += [
        "",
        f"full / flow fwd+bwd time (alternated in one process): {ratios} (goal <= 1.3)",
        f"load average at start, end: {load}",
    ]
    for k, t in r["train_step"].items():
        lines.append(
            f"training step {k} (full, {t['backbone'].split(' ')[0]}): {t['flops'] / 1e9:.1f} GFLOP in "
            f"{t['seconds']:.2f} s = {t['achieved_flops'] / 1e9:.1f} GFLOP/s = "
            f"{100 * t['fraction_of_matmul']:.0f}% of the {t['matmul_flops'] / 1e9:.1f} GFLOP/s matmul "
            f"rate timed alongside (goal >= 40%)"
        )
    a = r["attention_1_4_256x176"]
    lines.append(
        f"attention at 1/4 of 256×176 ({a['fused']['tokens']} tokens, fwd+bwd): fused "
        f"{a['fused']['peak_mb']:.0f} MB / {a['fused']['seconds'] * 1e3:.0f} ms, explicit "
        f"{a['explicit']['peak_mb']:.0f} MB / {a['explicit']['seconds'] * 1e3:.0f} ms "
        f"(one explicit matrix: {a['fused']['explicit_matrix_mb']:.0f} MB)"
    )
    for v, c in r.get("cuda_training", {}).items():
        mfu = f"{100 * c['mfu']:.0f}%" if c["mfu"] is not None else "n/a (unknown peak)"
        lines.append(
            f"CUDA {c['device']} {v} 256×176 bf16: {c['images_per_s']:.1f} images/s, "
            f"{c['achieved_tflops']:.1f} TFLOP/s, MFU {mfu} (goal >= 35% on H100)"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.bench model", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU figures)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--cuda-batch", type=int, default=16, help="batch of the CUDA training-throughput run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="skip the 256×176 timings (GFLOPs still counted)")
    p.add_argument("--out", default="reports/bench-model.json")
    add_log_level_arg(p)
    args = p.parse_args(argv)
    setup_logging(args.log_level, "bench model")
    report = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(format_table(report))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
