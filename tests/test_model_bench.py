"""The model benchmark's measurements run (tiny sizes) and its table renders."""
from pipelines.bench import model as bench


def test_measurements_run_on_small_inputs():
    assert 0 < bench.generator_gflops("default", "attn", (64, 44)) < bench.generator_gflops("default", "full", (64, 44))
    assert bench.measure_full_over_flow("default", (64, 44), batch=1, threads=1, repeats=1) > 0
    fused = bench.measure_attention((64, 44), stride=4, dim=16, batch=1, threads=1, fused=True)
    assert fused["tokens"] == 16 * 11 and fused["seconds"] > 0
    gen = bench.measure_generator("default", "attn", (64, 44), batch=1, threads=1, repeats=1)
    assert gen["params"] > 0 and gen["seconds"] > 0


def test_table_renders_every_variant():
    gen = {v: {"seconds": 0.1, "peak_mb": 10.0, "params": 1} for v in bench.VARIANTS}
    report = {
        "machine": {"processor": "cpu", "cpu_capability": "AVX2", "torch": "2", "threads": 1, "device": "cpu"},
        "batch": 2, "load_average_start": (1.0, 1.0, 1.0), "load_average_end": (1.0, 1.0, 1.0),
        "params": {k: {v: 1_000_000 for v in bench.VARIANTS} for k in ("default", "paper")},
        "forward_gflops_128x88": {v: 2.0 for v in bench.VARIANTS},
        "forward_gflops_256x176": {v: 30.0 for v in bench.VARIANTS},
        "generator_fwd_bwd": {"default@128x88": {**gen, "full_over_flow": 1.1}},
        "train_step": {"default@128x88": {"flops": 1e11, "seconds": 2.0, "matmul_flops": 1e11,
                                          "backbone": "none (x)", "achieved_flops": 5e10,
                                          "fraction_of_matmul": 0.5}},
        "attention_1_4_256x176": {k: {"tokens": 2816, "seconds": 0.1, "peak_mb": 1.0, "explicit_matrix_mb": 60.5}
                                  for k in ("fused", "explicit")},
    }
    table = bench.format_table(report)
    assert all(f"| {v} |" in table for v in bench.VARIANTS) and "50% of the" in table
