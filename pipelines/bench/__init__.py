"""Benchmarks (``python -m pipelines.bench {data,model,train}``): they print figures and write reports/."""
