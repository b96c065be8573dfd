"""Benchmarks and fault campaigns: `python -m bench.<name>`; results in BENCHMARKS.md."""
