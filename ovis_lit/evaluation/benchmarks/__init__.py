"""Benchmarks by kind. Importing the modules registers them; `build_benchmark(kind, path=..., ...)` makes one."""

from . import captions, hallusionbench, mmbench, mme, mmmu, pope, scienceqa, shapes, vqa  # noqa: F401  (registration)
from .base import BENCHMARKS, Benchmark, Item, Scores, build_benchmark

__all__ = ["BENCHMARKS", "Benchmark", "Item", "Scores", "build_benchmark"]
