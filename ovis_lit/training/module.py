"""The LightningModule: an OvisModel trained by stage (freezing, per-module LRs, warmup + cosine)."""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import lightning as L
import torch
from torch.distributed.tensor import DTensor
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from ..model.build import as_dtype, connector_parameters
from ..model.lora import add_adapters, freeze_adapted_bases
from ..model.ovis import OvisModel
from ..model.source import ModelSource
from .checkpoints import load_model_weights
from .freezing import apply_trainable, format_table, trainable_table
from .optim import param_groups
from .reinit import apply_stage_reinit

log = logging.getLogger(__name__)


class OvisLitModule(L.LightningModule):
    """Trains the model `model` describes, by stage. Built by `training.run.build_stage` from the `module` config
    group (a partial: `optimizer`, `fsdp`) with what the other groups decide (model, stage, init_from, activation
    checkpointing)."""

    def __init__(
        self,
        model: ModelSource,
        stage: dict[str, Any],
        init_from: str | None = None,
        activation_checkpointing: dict[str, bool | str] | None = None,  # per part: none/selective/full
        fsdp: dict[str, Any] | None = None,  # shard_model() options under trainer=fsdp (mixed precision, offload)
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,  # param groups -> optimiser (default AdamW)
    ):
        super().__init__()
        # Checkpoints hold plain values only (they are read back with weights_only): the model's description as a
        # dict (evaluation rebuilds the model from it), not the optimiser factory.
        self.save_hyperparameters(ignore=["model", "optimizer"])
        self.hparams["model"] = model.to_dict()
        self.source = model
        self.make_optimizer = optimizer or torch.optim.AdamW
        self.model: OvisModel | None = None

    # ------------------------------------------------------------------------------------------------- building
    def configure_model(self) -> None:
        """Build (once), load `init_from`, freeze for the stage. Lightning calls this before sharding/restoring."""
        if self.model is not None:
            return
        # Sharded runs build the weights once per node's rank 0 and hand each rank its shard (below); the other
        # ranks build on the meta device, so a 10 B model is not materialised 8 times on a node's CPU.
        rank0_builds = self.device_mesh is not None and self.trainer.world_size > 1
        on_meta = rank0_builds and self.trainer.global_rank != 0
        self.model = self.source.build(device="meta" if on_meta else None)
        if self.hparams.init_from and not on_meta:
            load_model_weights(self.model, self.hparams.init_from)
            log.info("initialised weights from %s", self.hparams.init_from)
        stage = self.hparams.stage
        from_ovis = bool(self.hparams.init_from or self.hparams.model.get("pretrained"))
        reinit = apply_stage_reinit(self.model, stage, from_ovis, materialised=not on_meta)  # re-initialised layers train
        lora = self.source.lora_settings()
        if lora is not None:  # after the base weights are in: the adapters start at zero (B = 0) on top of them
            if lora.quantize and self.device_mesh is not None:
                raise ValueError("QLoRA (model.lora.quantize) runs on one GPU (trainer=gpu); under trainer=fsdp use "
                                 "LoRA (model.lora.quantize=null)")
            add_adapters(self.model, lora)
        apply_trainable(self.model, list(stage["trainable"]) + reinit)
        if lora is not None:  # the adapted parts train through their adapters only
            freeze_adapted_bases(self.model, lora)
        ac = self.hparams.activation_checkpointing or {}
        self.model.set_activation_checkpointing(vision=ac.get("vision", False), llm=ac.get("llm", False))
        if self.device_mesh is not None:  # ModelParallelStrategy (trainer=fsdp): shard after freezing
            from .sharding import shard_model

            mesh = self.device_mesh["data_parallel"] if self.device_mesh.mesh_dim_names else self.device_mesh
            options = dict(self.hparams.fsdp or {})
            master = as_dtype(options.pop("master_dtype", None))
            if master is not None:  # the sharded weights (and so the optimiser state) are kept in this dtype;
                self.model.to(master)  # the policy casts gathered copies to param_dtype for compute
            full_state = self.model.state_dict() if rank0_builds and not on_meta else {}
            shard_model(self.model, mesh, **options)
            if rank0_builds:
                from .sharding import load_full_state_from_rank0

                load_full_state_from_rank0(self.model, full_state, self.device)
                del full_state
        self.parameter_table = format_table(trainable_table(self.model))
        connector = self.source.spec.get("connector", "ovis")
        log.info("connector %s: %s parameters (visual head or projector + visual table)", connector,
                 f"{connector_parameters(self.model):,}")
        log.info("stage %s trainable parameters:\n%s", self.hparams.stage.get("name", "?"), self.parameter_table)

    def on_fit_start(self) -> None:
        for logger in self.loggers:  # the freezing table belongs with the run
            if hasattr(logger, "log_text"):
                rows = [line.split() for line in self.parameter_table.splitlines()[1:]]
                logger.log_text(key="trainable_parameters", columns=["module", "trainable", "frozen"], data=rows)

    # --------------------------------------------------------------------------------------------------- steps
    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """LoRA dropout draws from torch's global generator, which a resume does not restore (and which the data
        loader draws from when it starts): each micro-batch's masks are drawn from a seed of (run seed, step,
        micro-batch), so a resumed run repeats the uninterrupted one's masks exactly, and every rank draws the same."""
        lora = self.source.lora_settings()
        if lora is None or not lora.dropout:
            return
        step = self.global_step
        self._micro = self._micro + 1 if getattr(self, "_seeded_step", None) == step else 0
        self._seeded_step = step
        base = int(os.environ.get("PL_GLOBAL_SEED", "0"))
        torch.manual_seed(base + 1_000_003 * (step + 1) + self._micro)

    def forward(self, batch: dict[str, torch.Tensor]):
        return self.model(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["pixel_values"],
                          grid_thws=batch.get("grid_thws"))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # (the DataModule records each batch's stream position and skips itself; SkipCountLogger logs the skips)
        out = self(batch)
        # The LLM's tokens (visual ones included), for ThroughputMonitor's tokens/s: it reads the batch after this step.
        batch["n_tokens"] = int(out.merged.attention_mask.sum())
        self.log("train/loss", out.loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        if out.merged.visual_tokens is not None and self.global_step % self.trainer.log_every_n_steps == 0:
            self.log_dict(visual_token_stats(out.merged.visual_tokens.detach()), batch_size=batch["input_ids"].shape[0])
        return out.loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self(batch)
        self.log("val/loss", out.loss, prog_bar=True, sync_dist=True, batch_size=batch["input_ids"].shape[0])

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.global_step % self.trainer.log_every_n_steps == 0:
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            if grads:  # get_total_norm also takes FSDP's sharded (DTensor) gradients
                total = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
                self.log("train/grad_norm", total.full_tensor() if isinstance(total, DTensor) else total)

    # ------------------------------------------------------------------------------------------------ optimiser
    def configure_optimizers(self):
        stage = self.hparams.stage
        groups = param_groups(self.model, stage["lr"], stage.get("module_lr"), stage.get("weight_decay", 0.0))
        optimizer = self.make_optimizer(groups)  # each group carries its lr and weight decay
        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(round(stage.get("warmup_ratio", 0.0) * total))
        min_ratio = stage.get("min_lr_ratio", 0.0)
        # transformers' warmup + cosine, the schedule the original Ovis trains with (HF Trainer, lr_scheduler_type
        # cosine): LR rises linearly from 0 over `warmup` steps, then falls to `min_lr_ratio` x LR at `total`
        schedule = get_cosine_with_min_lr_schedule_with_warmup(optimizer, warmup, total, min_lr_rate=min_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


@torch.no_grad()
def visual_token_stats(probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean entropy (nats) of the probabilistic visual tokens and the share of visual words that are some token's
    most likely word in this batch (a collapse to a few words shows up as a share near zero)."""
    p = probs.float().flatten(0, -2)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
    used = torch.zeros(p.shape[-1], dtype=torch.bool, device=p.device)
    used[p.argmax(-1)] = True
    return {"visual/entropy": entropy, "visual/vocab_used": used.float().mean(), "visual/max_prob": p.max(-1).values.mean()}
