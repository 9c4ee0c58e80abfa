"""Smoke runs of the benchmarks at toy scale, so that they do not rot."""
