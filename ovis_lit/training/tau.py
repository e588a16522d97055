"""The Gumbel temperature schedule of a `gumbel_argmax` visual tokenizer, as the original Ovis trains it."""

from __future__ import annotations

import lightning as L


class TauAnnealing(L.Callback):
    """Anneal the visual tokenizer's Gumbel-softmax temperature linearly from `start` to `end` over the stage's
    `max_steps` (the original: 5.0 -> 0.05). Does nothing for the other tokenize functions (softmax, st_argmax),
    which have no temperature. Set before every batch from the global step, so a resumed run continues the
    schedule where it stopped."""

    def __init__(self, start: float = 5.0, end: float = 0.05):
        self.start, self.end = start, end

    def tau_at(self, step: int, max_steps: int) -> float:
        progress = min(1.0, step / max_steps) if max_steps > 0 else 1.0
        return self.start + (self.end - self.start) * progress

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        tokenizer = pl_module.model.visual_tokenizer
        if tokenizer.tokenize_function == "gumbel_argmax":
            tokenizer.tau = self.tau_at(trainer.global_step, trainer.max_steps)
