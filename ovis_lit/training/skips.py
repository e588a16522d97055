"""Skip counts of the data a stage consumed: logged every step by a callback, summed over ranks for the summary.

The DataModule counts them itself (OvisDataModule.on_before_batch_transfer); this only reads and reports."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from ..data.stream import rank_world


def summed_over_ranks(counts: dict[str, int]) -> dict[str, int]:
    """Counts summed over ranks (a collective: every rank calls it at the same point). Each rank counts its own
    samples and which reasons occur differs by rank, so the counters are gathered as objects."""
    _, world = rank_world()
    if world == 1:
        return dict(counts)
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, dict(counts))
    total: dict[str, int] = {}
    for rank_counts in gathered:
        for reason, n in rank_counts.items():
            total[reason] = total.get(reason, 0) + n
    return total


def skip_summary(datamodule) -> dict[str, dict[str, int]]:
    """The end-of-stage skip counts, summed over ranks (a collective): `train`, the skips in the training batches
    the stage consumed (over the whole run, resumes included); `val`, those of the latest validation pass. See
    BatchStream for what a batch's counts hold."""
    return {"train": summed_over_ranks(getattr(datamodule, "skipped", {})),
            "val": summed_over_ranks(getattr(datamodule, "val_skipped", {}))}


class SkipCountLogger(L.Callback):
    """Logs `data/skipped/<reason>`: the samples skipped so far in the training data consumed, summed over ranks.
    One process logs every step; several gather their counts only at the steps the logger writes (the step count
    after the optimiser step is Lightning's logging step, and the same on every rank, so all take part)."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        skipped = getattr(trainer.datamodule, "skipped", None)
        if skipped is None:
            return
        if trainer.world_size == 1 or trainer.global_step % trainer.log_every_n_steps == 0:
            for reason, count in summed_over_ranks(skipped).items():
                pl_module.log(f"data/skipped/{reason}", float(count), reduce_fx="max", rank_zero_only=True)
