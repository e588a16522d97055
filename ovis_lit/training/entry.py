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

from ..rejection import Rejected
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

    results: dict[str, dict[str, Any]] = {}
    if cfg.get("evaluate") and last_built is not None:
        if isinstance(last_built.trainer.strategy, ModelParallelStrategy):
            log.info("held-out evaluation skipped under FSDP: run evals/run.py on %s", summaries[-1].get("export"))
        elif last_built.trainer.is_global_zero:
            results = evaluate_heldout_sets(last_built.module.model, last_built.processor, cfg.data)
    if rank_zero_only.rank == 0:  # every process of a multi-process run gets here; one reports
        report(summaries, results, time.perf_counter() - started, Path(cfg.paths.output_dir))
    close_process_group()
    result = results.get("heldout")
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


# The held-out sets a data config may name, as the run summary's keys: the images' multiple choice (a `shapes` TSV,
# `data.heldout`) and the videos' (`shapes_video` options, `data.heldout_video`: scored only for a model that reads
# videos, as the data builder makes the video splits only for such a model); and `heldout_<kind>` for each set of
# `data.heldout_extra` ({benchmark kind: TSV}: shapes_hard, digits)
HELDOUT_SETS = {"heldout": "images", "heldout_video": "videos"}


def evaluate_heldout_sets(model, processor, data_cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Score every held-out set the data config names that this model can read: {summary key: result}."""
    from omegaconf import OmegaConf

    from ..evaluation.benchmarks import build_benchmark

    results = {}
    instruction = data_cfg.get("heldout_instruction")
    if data_cfg.get("heldout"):
        results["heldout"] = evaluate_heldout(model, processor, build_benchmark("shapes", path=data_cfg.heldout),
                                              instruction)
    for kind, path in (data_cfg.get("heldout_extra") or {}).items():  # e.g. shapes_hard, digits: {kind: TSV}
        results[f"heldout_{kind}"] = evaluate_heldout(model, processor, build_benchmark(kind, path=path), instruction)
    videos = data_cfg.get("heldout_video")
    if videos and getattr(processor, "takes_video", False):
        options = OmegaConf.to_container(videos, resolve=True)
        results["heldout_video"] = evaluate_heldout(model, processor, build_benchmark("shapes_video", **options),
                                                    instruction)
    return results


def evaluate_heldout(model, processor, benchmark, instruction: str | None = None) -> dict[str, Any]:
    """Score a held-out multiple-choice benchmark with evals/run.py's rules, and the same questions with blank
    inputs (each image, or each video frame, replaced by a light grey one of its size: a text-only baseline, near
    chance when the questions need the pixels)."""
    from ..evaluation.generation import generate_answers
    from ..evaluation.suite import run_benchmark

    if instruction and instruction != benchmark.instruction:
        raise ValueError(f"the held-out prompt ends with {benchmark.instruction!r}, the data teaches {instruction!r}")
    items = benchmark.load()
    name = "held-out eval" if benchmark.kind == "shapes" else f"held-out eval ({benchmark.kind})"
    result = run_benchmark(model, processor, benchmark, name=name, batch_size=32, items=items)
    blank_items, queries = [], []
    for item in items:
        try:
            queries.append((item.prompt, blanked(item)))
            blank_items.append(item)
        except Rejected:  # an input run_benchmark skipped (and counted) too
            pass
    blank_answers = generate_answers(model, processor, queries, 32, benchmark.max_new_tokens,
                                     desc="blank-input baseline")
    blank_scores = benchmark.score(blank_items, blank_answers)
    return {
        "benchmark": benchmark.kind,
        "accuracy": result.scores.metrics["accuracy"],
        "n": result.scores.metrics["questions"],
        "failed_extractions": result.scores.metrics["failed_extractions"],
        "per_category": result.scores.details["per_category"],
        "blank_image_accuracy": blank_scores.metrics["accuracy"],
        "eval_samples_per_s": result.samples_per_s,
    }


def blanked(item) -> list:
    """The item's images (or its video's frames), each replaced by a blank of the same size, so that the blank input
    takes as many visual tokens as the real one."""
    from PIL import Image

    from ..evaluation.suite import _decoded

    decoded = _decoded(item)
    blanks = [Image.new("RGB", image.size, (240, 240, 240)) for image in decoded]
    if item.video is None:
        return blanks
    from ..processing.video import VideoFrames

    return VideoFrames(blanks).with_budget(decoded.min_pixels, decoded.max_pixels)


def report(summaries: list[dict[str, Any]], results: dict[str, dict[str, Any]], seconds: float,
           output_dir: Path) -> None:
    """Print what the run achieved and write run_summary.json: the stages, and each held-out set's result under
    its key (`heldout`: images, `heldout_video`: videos)."""
    lines = ["", "=" * 72, f"ovis-lit run finished in {seconds / 60:.1f} min  ({output_dir})"]
    for s in summaries:
        lines.append(
            f"  stage {s['stage']:>3}: {s['steps']:>5} steps in {s['seconds']:>6.1f} s  "
            f"{s['samples_per_s']:>7.1f} samples/s  train loss {s['train_loss']}  val loss {s['val_loss']}"
            + (f"  skipped {s['skipped_samples']}" if s.get("skipped_samples") else "")
            + (f"  skipped in validation {s['val_skipped_samples']}" if s.get("val_skipped_samples") else "")
        )
        vocab = s.get("vocab_diagnostics")
        if vocab and vocab.get("skipped"):
            lines.append(f"    visual vocabulary: not diagnosed ({vocab['skipped']})")
        elif vocab and vocab.get("last"):
            lines.append(
                f"    visual vocabulary: {vocab['usage_share_cumulative']:.1%} of {vocab['image_words']} words used, "
                f"{vocab['dead_words']} dead; last batch: entropy {vocab['last']['entropy']:.2f} nats, perplexity "
                f"{vocab['last']['perplexity']:.1f}  ({vocab['file']})")
    for key, result in results.items():
        which = HELDOUT_SETS.get(key, result["benchmark"])  # images, videos, or the extra set's benchmark kind
        what = "held-out multiple choice" + ("" if key == "heldout" else f" ({which})")
        blank = "blank-video" if key == "heldout_video" else "blank-image"
        if result["accuracy"] is None:  # an empty held-out file: no score, not 0%
            lines.append(f"  {what}: no score (no question was scored; n = {result['n']})")
            continue
        lines.append(
            f"  {what}: accuracy {result['accuracy']:.1%} on {result['n']} questions "
            f"(chance 25%; {blank} baseline {result['blank_image_accuracy']:.1%}; "
            f"{result['failed_extractions']} unparsable answers)"
        )
        lines.append("    per category: " + ", ".join(f"{k} {v:.0%}" for k, v in result["per_category"].items()))
    lines.append("=" * 72)
    print("\n".join(lines), flush=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"stages": summaries, "minutes": round(seconds / 60, 2)}
    for key, result in results.items():
        payload[key] = {k: v for k, v in result.items() if k != "predictions"}
    (output_dir / "run_summary.json").write_text(json.dumps(payload, indent=2) + "\n")
