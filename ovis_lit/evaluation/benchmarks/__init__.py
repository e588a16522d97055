"""Benchmarks by kind. Importing the modules registers them; `build_benchmark(kind, path=..., ...)` makes one."""

from . import (  # noqa: F401  (registration)
    captions,
    hallusionbench,
    mathvista,
    mmbench,
    mme,
    mmmu,
    mmvet,
    ocrbench,
    pope,
    scienceqa,
    shapes,
    videomme,
    vqa,
)
from .base import BENCHMARKS, Benchmark, Item, Scores, build_benchmark

__all__ = ["BENCHMARKS", "Benchmark", "Item", "Scores", "build_benchmark"]
