"""Benchmarks (``python -m pipelines.bench {data,model,serve,train}``): they print figures and write reports/."""
