"""Benchmarks and the chaos run: `askq bench`, `askq chaos` and the baselines they measure against."""
