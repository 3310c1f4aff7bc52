"""Tooling for demos, tests and benchmarks (building realistic submissions, the kernel baseline)."""
