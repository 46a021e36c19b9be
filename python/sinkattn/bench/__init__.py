"""Benchmark harness: every implementation in one process, checked against fp64 before it is
timed. Run ``python -m sinkattn.bench --help``; see docs/PERFORMANCE.md for a full run."""
