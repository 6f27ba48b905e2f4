"""Benchmarks and studies; each script says how to run it and writes to analysis/results/."""
