"""Benchmarks behind `gflow bench` (docs/benchmarks.md): each module writes one JSON."""
