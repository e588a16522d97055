"""stage=dpo: the LightningModule that trains an Ovis on preference pairs with the DPO loss.

The policy is `OvisLitModule`'s model (built, loaded, frozen per stage as in every stage). Each batch holds P pairs
as 2P sequences, chosen answers first (`data.preference.PairCollate`); the sequence log-probs are summed over each
answer's labelled tokens (`model.sequence_logprobs`) and compared with the reference model's
(`training.dpo_loss`). The reference, by the stage's `dpo.reference`:

- `copy`: a frozen copy of the policy taken in `configure_model`, as the stage starts (after `init_from` is loaded,
  before a resumed checkpoint is restored, so a resumed run has the same reference). It is kept out of the module's
  registered children: not in the optimiser, the checkpoint or the export; eval mode, no gradients.
- `adapters_off`: the policy itself with its LoRA adapters disabled (peft's tuner layers), for a stage that trains
  adapters (`model.lora`): the base is the reference and no second copy is held.
- `precomputed`: each pair's reference log-probs from its shard (`ref_logps`, scripts/precompute_reference_logps.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..model.sequence_logprobs import batch_sequence_logps
from ..model.source import ModelSource
from .dpo_loss import DPOTerms, check_loss_type, dpo_loss
from .module import OvisLitModule

REFERENCES = ("copy", "adapters_off", "precomputed")


def dpo_settings(stage: dict[str, Any]) -> dict[str, Any]:
    """The stage's `dpo` options with their defaults, checked (at build time, not in the first step)."""
    options = {"beta": 0.1, "loss_type": "sigmoid", "label_smoothing": 0.0, "reference": "copy",
               **(stage.get("dpo") or {})}
    unknown = set(options) - {"beta", "loss_type", "label_smoothing", "reference"}
    if unknown:
        raise ValueError(f"stage.dpo has unknown keys {sorted(unknown)}")
    check_loss_type(options["loss_type"], options["beta"], options["label_smoothing"])
    if options["reference"] not in REFERENCES:
        raise ValueError(f"stage.dpo.reference must be one of {REFERENCES}, got {options['reference']!r}")
    return options


def apply_dpo_data_settings(stage: dict[str, Any]) -> None:
    """A DPO stage reads preference pairs, with reference log-probs when they are precomputed (run.stage_settings)."""
    if "dpo" in stage:
        stage["data"]["pairs"] = True
        stage["data"]["reference_logps"] = dpo_settings(stage)["reference"] == "precomputed"


def adapter_layers(model: nn.Module) -> list[nn.Module]:
    """peft's LoRA (tuner) layers in `model` (none without peft or adapters)."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return []
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """The model without its LoRA adapters (the base it started from), restored afterwards. peft's own switch
    (`enable_adapters`) also sets the adapters' requires_grad, so that is restored as it was."""
    layers = adapter_layers(model)
    if not layers:
        raise ValueError("dpo.reference=adapters_off needs LoRA adapters on the model (model.lora)")
    trainable = {p: p.requires_grad for layer in layers for p in layer.parameters()}
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)
        for p, flag in trainable.items():
            p.requires_grad_(flag)


class DPOLitModule(OvisLitModule):
    """`OvisLitModule` with the DPO loss on preference batches (see the module docstring)."""

    def __init__(
        self,
        model: ModelSource,
        stage: dict[str, Any],
        init_from: str | None = None,
        activation_checkpointing: dict[str, bool | str] | None = None,
        fsdp: dict[str, Any] | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
    ):  # OvisLitModule's arguments, spelt out: Lightning saves the hyper-parameters of this signature
        super().__init__(model, stage, init_from, activation_checkpointing, fsdp, optimizer)
        self.dpo = dpo_settings(self.hparams.stage)
        self._reference: list[nn.Module] = []  # a list: a registered child would be trained, saved and exported

    @property
    def reference(self) -> nn.Module | None:
        return self._reference[0] if self._reference else None

    def configure_model(self) -> None:
        built = self.model is not None
        super().configure_model()
        if built or self.dpo["reference"] != "copy":
            if self.dpo["reference"] == "adapters_off" and not adapter_layers(self.model):
                raise ValueError("dpo.reference=adapters_off needs LoRA adapters on the model (model.lora)")
            return
        if self.device_mesh is not None:
            raise ValueError("dpo.reference=copy is not supported under trainer=fsdp (the copy would not be sharded): "
                             "use reference=precomputed, or adapters_off with LoRA")
        reference = copy.deepcopy(self.model).eval()
        reference.requires_grad_(False)
        self._reference = [reference]

    # --------------------------------------------------------------------------------------------------- steps
    def reference_logps(self, batch: dict[str, Any]) -> torch.Tensor:
        """The reference's sequence log-probs [2P] (no gradients)."""
        if self.dpo["reference"] == "precomputed":
            if "ref_logps" not in batch:  # PreferenceBuilder(reference_logps=True) skips pairs without them
                raise ValueError("dpo.reference=precomputed but the batch has no ref_logps")
            return batch["ref_logps"].to(self.device, torch.float32)
        with torch.no_grad():
            if self.dpo["reference"] == "adapters_off":
                with adapters_disabled(self.model):
                    return batch_sequence_logps(self.model, batch)[0]
            reference = self.reference
            if next(reference.parameters()).device != self.device:  # Lightning moves registered children only
                reference.to(self.device)
            return batch_sequence_logps(reference, batch)[0]

    def dpo_terms(self, batch: dict[str, Any]) -> DPOTerms:
        pairs = int(batch["pairs"])
        if batch["input_ids"].shape[0] != 2 * pairs:
            raise ValueError(f"a preference batch holds 2 x {pairs} sequences, got {batch['input_ids'].shape[0]}")
        policy, tokens = batch_sequence_logps(self.model, batch)
        reference = self.reference_logps(batch)
        return dpo_loss(policy[:pairs], policy[pairs:], reference[:pairs], reference[pairs:],
                        beta=self.dpo["beta"], loss_type=self.dpo["loss_type"],
                        label_smoothing=self.dpo["label_smoothing"],
                        chosen_tokens=tokens[:pairs], rejected_tokens=tokens[pairs:])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        terms = self.dpo_terms(batch)
        batch["n_tokens"] = int(batch["attention_mask"].sum())  # text tokens (ThroughputMonitor)
        metrics = terms.metrics("train")
        self.log("train/loss", metrics.pop("train/loss"), prog_bar=True, batch_size=int(batch["pairs"]))
        self.log_dict(metrics, batch_size=int(batch["pairs"]))
        return terms.loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        terms = self.dpo_terms(batch)
        self.log_dict(terms.metrics("val"), prog_bar=False, sync_dist=True, batch_size=int(batch["pairs"]))
