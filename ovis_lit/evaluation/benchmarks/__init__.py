"""Benchmarks by kind. Importing the modules registers them; `build_benchmark(kind, path=..., ...)` makes one."""

from . import captions, mmbench, mme, mmmu, pope, scienceqa, shapes, videomme, vqa  # noqa: F401  (registration)
from .base import BENCHMARKS, Benchmark, Item, Scores, build_benchmark

__all__ = ["BENCHMARKS", "Benchmark", "Item", "Scores", "build_benchmark"]
