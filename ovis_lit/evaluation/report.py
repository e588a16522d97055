"""Writing evaluation results: per-sample predictions (JSONL), a summary (JSON + markdown), and W&B."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .suite import BenchmarkResult

log = logging.getLogger(__name__)

TABLE_COLUMNS = ("key", "prompt", "answer", "extracted", "gold", "correct", "accuracy", "cider", "grade")


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def summary_dict(results: list[BenchmarkResult], run_info: dict[str, Any]) -> dict[str, Any]:
    return {
        **run_info,
        "benchmarks": {
            r.name: {
                **r.benchmark,
                "metrics": r.scores.metrics,
                "details": r.scores.details,
                "skipped": r.skipped,
                "generation_seconds": r.seconds,
                "samples_per_s": r.samples_per_s,
            }
            for r in results
        },
    }


def markdown_table(results: list[BenchmarkResult], headlines: dict[str, str]) -> str:
    lines = [
        "| benchmark | score | metric | n | failed extractions | skipped | samples/s |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        m = r.scores.metrics
        headline = headlines[r.name]
        lines.append(
            f"| {r.name} | {_number(m.get(headline, 0.0))} | {headline} | {len(r.scores.predictions)} "
            f"| {m.get('failed_extractions', '-')} | {sum(r.skipped.values())} | {r.samples_per_s} |"
        )
    lines += ["", "| benchmark | metric | value |", "|---|---|---:|"]
    for r in results:
        lines += [f"| {r.name} | {k} | {_number(v)} |" for k, v in r.scores.metrics.items()]
    return "\n".join(lines + scoring_notes(results)) + "\n"


def scoring_notes(results: list[BenchmarkResult]) -> list[str]:
    """What a score was computed with, beyond its metric: the LLM judge and its pinned prompt, the caption tokenizer."""
    notes = []
    for r in results:
        judge = r.benchmark.get("judge")
        if judge:
            prompt = judge.get("prompt", {})
            notes.append(f"- {r.name}: judge {judge.get('path')} ({judge.get('kind')}), prompt {prompt.get('name')} "
                         f"{prompt.get('version')} (sha256 {str(prompt.get('sha256'))[:12]})")
        captions = r.scores.details.get("caption_metrics")
        if captions:
            notes.append(f"- {r.name}: {captions['toolkit']}, tokenizer {captions['tokenizer']}, "
                         f"METEOR {'on' if captions['meteor'] else 'off'}")
    return ["", *notes] if notes else []


def write_results(
    output_dir: str | Path, results: list[BenchmarkResult], run_info: dict[str, Any], headlines: dict[str, str]
) -> str:
    """predictions/<name>.jsonl, summary.json, summary.md under output_dir. Returns the markdown."""
    output_dir = Path(output_dir)
    (output_dir / "predictions").mkdir(parents=True, exist_ok=True)
    for r in results:
        with open(output_dir / "predictions" / f"{r.name}.jsonl", "w", encoding="utf-8") as f:
            for p in r.scores.predictions:
                f.write(json.dumps(p, ensure_ascii=False) + "\n")
    summary = summary_dict(results, run_info)
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    markdown = f"# Evaluation of {run_info.get('checkpoint', '?')}\n\n" + markdown_table(results, headlines)
    (output_dir / "summary.md").write_text(markdown)
    return markdown


def log_to_wandb(results: list[BenchmarkResult], wandb_cfg: dict[str, Any], run_info: dict[str, Any]) -> bool:
    """Log metrics and prediction tables when a W&B run is active in this process, or one is named (name or id);
    otherwise do nothing. Returns whether anything was logged."""
    import wandb

    run = wandb.run
    owned = False
    if run is None:
        if not (wandb_cfg.get("name") or wandb_cfg.get("id")):
            return False
        run = wandb.init(
            project=wandb_cfg.get("project"),
            name=wandb_cfg.get("name"),
            id=wandb_cfg.get("id"),
            group=wandb_cfg.get("group"),
            mode=wandb_cfg.get("mode") or "offline",
            dir=wandb_cfg.get("dir"),
            resume="allow",
            job_type="eval",
            config={"eval": run_info},
        )
        owned = True
    payload: dict[str, Any] = {}
    for r in results:
        for key, value in r.scores.metrics.items():
            if value is not None:  # a benchmark with nothing scored has no score to plot
                payload[f"eval/{r.name}/{key}"] = value
        columns = [c for c in TABLE_COLUMNS if any(c in p for p in r.scores.predictions)]
        rows = [[json.dumps(p[c]) if isinstance(p.get(c), (list, dict)) else p.get(c) for c in columns]
                for p in r.scores.predictions]
        payload[f"eval/{r.name}/predictions"] = wandb.Table(columns=columns, data=rows)
    run.log(payload)
    if owned:
        run.finish()
    return True
