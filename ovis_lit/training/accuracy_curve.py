"""Held-out multiple-choice accuracy during training: the points of an accuracy-vs-step curve.

Scores a (validation) A-D set every `every_n_steps` optimiser steps and at the stage's end, with evals/run.py's
generation and answer extraction, logs it as `val/mc_accuracy`, and writes the curve to `<output>` as JSON. Meant
for a validation split: choosing anything by it keeps the test split untouched (experiments/connectors.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch


class AccuracyCurve(L.Callback):
    def __init__(self, path: str, every_n_steps: int, output: str, kind: str = "shapes", limit: int | None = None,
                 batch_size: int = 32, step_offset: int = 0, score_at_start: bool = True):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be at least 1, got {every_n_steps}")
        self.path, self.kind, self.limit, self.batch_size = path, kind, limit, batch_size
        self.every_n_steps = every_n_steps
        self.output = Path(output)
        self.step_offset = step_offset  # the steps of earlier stages, so that a chain's curve has one x axis
        self.score_at_start = score_at_start  # false for a chain's later stage: its start is the last one's end
        self.points: list[dict[str, float]] = []
        self._items = None

    def score(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float | None:
        from ..evaluation.benchmarks import build_benchmark
        from ..evaluation.suite import run_benchmark

        benchmark = build_benchmark(self.kind, path=self.path)
        if self._items is None:
            self._items = benchmark.load()[: self.limit]
        model = pl_module.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                result = run_benchmark(model, trainer.datamodule.processor, benchmark, batch_size=self.batch_size,
                                       progress=False, items=self._items)
        finally:
            model.train(was_training)
        accuracy = result.scores.metrics["accuracy"]
        step = self.step_offset + trainer.global_step
        self.points.append({"step": step, "accuracy": accuracy})
        for logger in trainer.loggers:
            logger.log_metrics({"val/mc_accuracy": accuracy if accuracy is not None else float("nan")}, step=step)
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
            self.output.write_text(json.dumps({"kind": self.kind, "path": str(self.path), "points": self.points},
                                              indent=1) + "\n")

    def _new_step(self, step: int) -> bool:
        # with gradient accumulation a step ends on several batches: score it once
        return not self.points or self.points[-1]["step"] != self.step_offset + step
