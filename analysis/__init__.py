"""Benchmarks and studies, one script per study, each run as `python -m analysis.NAME` from the
repository root and writing to analysis/results/; what they share is in analysis.common."""
