"""train.py's body: run a stage or a chain of stages, then evaluate and print what the run achieved."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, open_dict

from .run import run_stage

log = logging.getLogger(__name__)


def _stage_config(cfg: DictConfig, stage: str, output_dir: Path, init_from: str | None) -> DictConfig:
    """The full config of one stage of a chain: this run's overrides with `stage=<stage>`."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("stage=", "init_from=", "paths.output_dir="))]
    overrides += [f"stage={stage}", f"paths.output_dir={output_dir}"]
    if init_from:
        overrides.append(f"init_from={init_from}")
    stage_cfg = compose(config_name=HydraConfig.get().job.config_name, overrides=overrides)
    with open_dict(stage_cfg):
        stage_cfg.group = Path(cfg.paths.output_dir).name  # one W&B group per chain
        stage_cfg.run_name = f"{cfg.model.name}-{stage_cfg.stage.name}"
    return stage_cfg


def train(cfg: DictConfig) -> float | None:
    started = time.perf_counter()
    summaries: list[dict[str, Any]] = []
    last_built = None  # what the last stage trained with, when it ran in this process (not skipped on resume)
    chain = cfg.stage.get("chain")
    if chain:
        init_from = cfg.get("init_from")
        for name in chain:
            stage_dir = Path(cfg.paths.output_dir) / name
            done = stage_dir / "summary.json"
            if done.is_file():  # resuming a chain: finished stages are not trained again
                summary, last_built = json.loads(done.read_text()), None
                log.info("stage %s already finished in %s", name, stage_dir)
            else:
                summary, last_built = run_stage(_stage_config(cfg, name, stage_dir, init_from))
            summaries.append(summary)
            init_from = summary["last_checkpoint"]
    else:
        summary, last_built = run_stage(cfg)
        summaries.append(summary)

    result = None
    if cfg.get("evaluate") and last_built is not None:
        if isinstance(last_built.trainer.strategy, ModelParallelStrategy):
            log.info("held-out evaluation skipped under FSDP: run evals/run.py on %s", summaries[-1].get("export"))
        elif cfg.data.get("heldout") and last_built.trainer.is_global_zero:
            result = evaluate_heldout(
                last_built.module.model, last_built.processor, cfg.data.heldout, cfg.data.get("heldout_instruction")
            )
    if rank_zero_only.rank == 0:  # every process of a multi-process run gets here; one reports
        report(summaries, result, time.perf_counter() - started, Path(cfg.paths.output_dir))
    close_process_group()
    return None if result is None else result["accuracy"]


def close_process_group() -> None:
    """Destroy the process group once a multi-process run has finished.

    Left alive, Gloo's worker threads can outlive the interpreter, and a run that trained and saved everything then
    aborts at exit (SIGABRT, "terminate called without an active exception"), which fails sweeps and CI. Called on
    success only: after an error other ranks may still sit in a collective, and destroying would hang them.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def evaluate_heldout(model, processor, path: str, instruction: str | None = None) -> dict[str, Any]:
    """Score the held-out multiple-choice split with evals/run.py's rules (benchmark `shapes`), and the same
    questions with blank images (a text-only baseline: near chance when the questions need the image)."""
    from PIL import Image

    from ..evaluation.benchmarks import build_benchmark
    from ..evaluation.generation import generate_answers
    from ..evaluation.suite import run_benchmark

    benchmark = build_benchmark("shapes", path=path)
    if instruction and instruction != benchmark.instruction:
        raise ValueError(f"the held-out prompt ends with {benchmark.instruction!r}, the data teaches {instruction!r}")
    items = benchmark.load()
    result = run_benchmark(model, processor, benchmark, name="held-out eval", batch_size=32, items=items)
    side = processor.image_preprocessor.side
    blank = Image.new("RGB", (side, side), (240, 240, 240))
    queries = [(item.prompt, [blank]) for item in items]
    blank_answers = generate_answers(model, processor, queries, 32, benchmark.max_new_tokens, desc="blank-image baseline")
    blank_scores = benchmark.score(items, blank_answers)
    return {
        "accuracy": result.scores.metrics["accuracy"],
        "n": result.scores.metrics["questions"],
        "failed_extractions": result.scores.metrics["failed_extractions"],
        "per_category": result.scores.details["per_category"],
        "blank_image_accuracy": blank_scores.metrics["accuracy"],
        "eval_samples_per_s": result.samples_per_s,
    }


def report(summaries: list[dict[str, Any]], result: dict[str, Any] | None, seconds: float, output_dir: Path) -> None:
    lines = ["", "=" * 72, f"ovis-lit run finished in {seconds / 60:.1f} min  ({output_dir})"]
    for s in summaries:
        lines.append(
            f"  stage {s['stage']:>3}: {s['steps']:>5} steps in {s['seconds']:>6.1f} s  "
            f"{s['samples_per_s']:>7.1f} samples/s  train loss {s['train_loss']}  val loss {s['val_loss']}"
            + (f"  skipped {s['skipped_samples']}" if s.get("skipped_samples") else "")
            + (f"  skipped in validation {s['val_skipped_samples']}" if s.get("val_skipped_samples") else "")
        )
    if result is not None and result["accuracy"] is None:  # an empty held-out file: no score, not 0%
        lines.append(f"  held-out multiple choice: no score (no question was scored; n = {result['n']})")
    elif result is not None:
        lines.append(
            f"  held-out multiple choice: accuracy {result['accuracy']:.1%} on {result['n']} questions "
            f"(chance 25%; blank-image baseline {result['blank_image_accuracy']:.1%}; "
            f"{result['failed_extractions']} unparsable answers)"
        )
        lines.append("    per category: " + ", ".join(f"{k} {v:.0%}" for k, v in result["per_category"].items()))
    lines.append("=" * 72)
    print("\n".join(lines), flush=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    payload = {"stages": summaries, "minutes": round(seconds / 60, 2)}
    if result is not None:
        payload["heldout"] = {k: v for k, v in result.items() if k != "predictions"}
    (output_dir / "run_summary.json").write_text(json.dumps(payload, indent=2) + "\n")
