"""evals/run.py's body: load a checkpoint, run the configured benchmarks, write and print the results."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from .benchmarks import build_benchmark
from .benchmarks.base import BENCHMARKS
from .loading import load_for_eval
from .modes import MODES
from .report import log_to_wandb, write_results
from .suite import BenchmarkResult, run_benchmark

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def benchmark_options(name: str, spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A benchmarks.<name> config node -> (kind, constructor options)."""
    options = dict(spec)
    kind = options.pop("kind", name)
    if not options.get("path"):
        raise ValueError(f"benchmarks.{name}.path is not set (the benchmark's file)")
    return kind, options


def with_scoring_mode(kind: str, options: dict[str, Any], mode: str | None) -> dict[str, Any]:
    """`scoring_mode=` on the command line scores every selected benchmark that has that mode in it; the others keep
    their own (each benchmark's mode is in the summary)."""
    if not mode:
        return options
    if mode not in MODES:
        raise ValueError(f"scoring_mode={mode!r} is not a scoring mode; the modes are {list(MODES)}")
    if kind in BENCHMARKS and mode in BENCHMARKS[kind].modes:
        return {**options, "mode": mode}
    log.info("%s has no %s mode: it keeps %s", kind, mode, options.get("mode") or "its default")
    return options


def thinking_settings(cfg: DictConfig) -> dict[str, Any]:
    """conf/eval.yaml's thinking options, checked before the model is loaded."""
    thinking, budget, tokens = bool(cfg.get("thinking", False)), cfg.get("thinking_budget"), cfg.get("thinking_tokens")
    if budget is not None and not thinking:
        raise ValueError("thinking_budget is set but thinking is off: pass thinking=true")
    if thinking and (tokens is None or int(tokens) < 1):
        raise ValueError(f"thinking_tokens must be a positive number of tokens, got {tokens}")
    if thinking and budget is not None and not 0 < int(budget) <= int(tokens):
        raise ValueError(f"thinking_budget must be between 1 and thinking_tokens ({tokens}), got {budget}")
    return {"thinking": thinking, "thinking_budget": None if budget is None else int(budget),
            "thinking_tokens": int(tokens or 0)}


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    torch.manual_seed(cfg.get("seed", 0))  # greedy decoding needs no randomness; this is belt and braces
    specs = OmegaConf.to_container(cfg.benchmarks, resolve=True) if cfg.get("benchmarks") else {}
    if not specs:
        raise ValueError(f"no benchmarks selected: pass benchmark=[...] (known kinds: {sorted(BENCHMARKS)})")
    benchmarks = {}
    for name, spec in specs.items():
        kind, options = benchmark_options(name, spec)
        benchmarks[name] = build_benchmark(kind, **with_scoring_mode(kind, options, cfg.get("scoring_mode")))
    for benchmark in benchmarks.values():  # a file wrong as a whole fails now, before the model is loaded
        benchmark.check()

    thinking = thinking_settings(cfg)
    device = resolve_device(cfg.get("device", "auto"))
    started = time.perf_counter()
    model, processor, run_info = load_for_eval(cfg.checkpoint, cfg.get("processor_dir"), device, cfg.get("dtype"),
                                               adapters=cfg.get("adapters"))
    log.info("loaded %s (%s) in %.1f s", run_info["checkpoint"], run_info["format"], time.perf_counter() - started)

    results: list[BenchmarkResult] = []
    for name, benchmark in benchmarks.items():
        result = run_benchmark(model, processor, benchmark, name, cfg.batch_size, cfg.get("limit"),
                               cfg.get("progress", True), **thinking)
        results.append(result)
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.scores.metrics.items()}
        log.info("%s: %s", name, shown)

    run_info.update(batch_size=cfg.batch_size, limit=cfg.get("limit"), decoding="greedy",
                    chat_format=processor.chat_format, thinking=thinking["thinking"],
                    thinking_budget=thinking["thinking_budget"],
                    thinking_tokens=thinking["thinking_tokens"] if thinking["thinking"] else None)
    headlines = {name: b.headline for name, b in benchmarks.items()}
    output_dir = Path(cfg.output_dir)
    markdown = write_results(output_dir, results, run_info, headlines)
    wandb_cfg = OmegaConf.to_container(cfg.wandb, resolve=True) if cfg.get("wandb") else {}
    wandb_cfg.setdefault("dir", str(output_dir))
    logged = log_to_wandb(results, wandb_cfg, run_info)
    print("\n" + markdown + f"\nresults in {output_dir}" + (" (and W&B)" if logged else ""), flush=True)
    unscored = {r.name: r.skipped for r in results if not r.scores.predictions}
    if unscored:  # every item was refused at generation time (e.g. all its images): no score, and the run fails
        raise ValueError(f"no item was scored in {sorted(unscored)} (skipped: {unscored}): they have no score; the "
                         f"other benchmarks' results are in {output_dir}")
    return {r.name: r.scores.metrics for r in results}
