"""Benchmark scripts (run with `python -m tlc_jax.benchmarks.<name>`); not tests."""
