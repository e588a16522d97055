"""Held-out multiple-choice accuracy during training: the points of an accuracy-vs-step curve.

Scores (validation) A-D sets every `every_n_steps` optimiser steps and at the stage's end, with evals/run.py's
generation and answer extraction, logs each as `val/mc_accuracy/<kind>` and their mean as `val/mc_accuracy`, and
writes the curve to `<output>` as JSON. Meant for validation splits: choosing anything by them keeps the test
splits untouched (experiments/connectors.py). Single-process runs (each rank would score every question).
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch


class AccuracyCurve(L.Callback):
    def __init__(self, sets: dict[str, str], every_n_steps: int, output: str, limit: int | None = None,
                 batch_size: int = 32, step_offset: int = 0, score_at_start: bool = True):
        """`sets`: {benchmark kind (shapes, shapes_hard, digits): TSV path}."""
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be at least 1, got {every_n_steps}")
        if not sets:
            raise ValueError("AccuracyCurve needs at least one A-D set")
        self.sets, self.limit, self.batch_size = dict(sets), limit, batch_size
        self.every_n_steps = every_n_steps
        self.output = Path(output)
        self.step_offset = step_offset  # the steps of earlier stages, so that a chain's curve has one x axis
        self.score_at_start = score_at_start  # false for a chain's later stage: its start is the last one's end
        self.points: list[dict[str, float]] = []
        self._benchmarks: dict[str, tuple] = {}

    def score(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float | None:
        from ..evaluation.benchmarks import build_benchmark
        from ..evaluation.suite import run_benchmark

        if not self._benchmarks:
            for kind, path in self.sets.items():
                benchmark = build_benchmark(kind, path=path)
                self._benchmarks[kind] = (benchmark, benchmark.load()[: self.limit])
        model = pl_module.model
        was_training = model.training
        model.eval()
        per_set = {}
        try:
            with torch.no_grad():
                for kind, (benchmark, items) in self._benchmarks.items():
                    result = run_benchmark(model, trainer.datamodule.processor, benchmark,
                                           batch_size=self.batch_size, progress=False, items=items)
                    per_set[kind] = result.scores.metrics["accuracy"]
        finally:
            model.train(was_training)
        scored = [a for a in per_set.values() if a is not None]
        accuracy = sum(scored) / len(scored) if scored else None  # each set weighs the same
        step = self.step_offset + trainer.global_step
        self.points.append({"step": step, "accuracy": accuracy, "per_set": per_set})
        metrics = {f"val/mc_accuracy/{k}": float("nan") if a is None else a for k, a in per_set.items()}
        metrics["val/mc_accuracy"] = float("nan") if accuracy is None else accuracy
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        return accuracy

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.global_step == 0 and self.score_at_start:
            self.score(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0 and step < trainer.max_steps and self._new_step(step):
            self.score(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._new_step(trainer.global_step):
            self.score(trainer, pl_module)
        if trainer.is_global_zero:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            self.output.write_text(json.dumps({"sets": self.sets, "points": self.points}, indent=1) + "\n")

    def _new_step(self, step: int) -> bool:
        # with gradient accumulation a step ends on several batches: score it once
        return not self.points or self.points[-1]["step"] != self.step_offset + step
