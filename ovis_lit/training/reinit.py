"""The original recipe's re-initialisation options, applied when a stage starts (after its weights are loaded):

- `visual_re_init_layer_begin: i`: the ViT's encoder layers i..end are drawn afresh, the way the backbone family
  initialises its layers (its transformers `_init_weights`; the Ovis2.5 NaViT, built with PyTorch's default
  initialisation, by its modules' `reset_parameters`), and they train in this stage whatever `trainable` says:
  the original v1.0 stage 1 re-initialises CLIP's last layer (23 of 24) and trains it (`re_init_layers`). A negative
  i counts from the end (-1: the last layer).
- `vte_re_init: true`: the visual embedding table is re-drawn from N(mean, std) of the LLM's text embedding table
  (the statistics of the whole table), the original's `--vte_re_init`.

As in the original, neither applies to a stage that starts from Ovis weights (`init_from`, or `model.pretrained`):
re-initialising a trained Ovis throws its training away. Such a stage logs that it ignored them.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ..model.navit import Siglip2NavitModel
from ..model.ovis import OvisModel
from ..model.vision import encoder_layers

log = logging.getLogger(__name__)


def reinit_layer_indices(n_layers: int, begin: int) -> list[int]:
    if not -n_layers <= begin < n_layers:
        raise ValueError(f"visual_re_init_layer_begin={begin}: the ViT has {n_layers} layers")
    return list(range(begin % n_layers, n_layers))


@torch.no_grad()
def reinit_module(backbone: nn.Module, module: nn.Module) -> None:
    """Draw `module` (a part of `backbone`) afresh with the backbone family's own initialisation."""
    for param in module.parameters():
        # transformers' init functions leave tensors marked as loaded from a checkpoint untouched
        param._is_hf_initialized = False
    if isinstance(backbone, Siglip2NavitModel):  # its _init_weights is a no-op: PyTorch's defaults, as built
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
    else:
        module.apply(backbone._init_weights)


def reinit_vit_layers(backbone: nn.Module, begin: int) -> list[int]:
    """Re-initialise encoder layers begin..end of a ViT backbone; returns their indices."""
    layers = encoder_layers(backbone)
    indices = reinit_layer_indices(len(layers), begin)
    for i in indices:
        reinit_module(backbone, layers[i])
    return indices


def apply_stage_reinit(model: OvisModel, stage: dict[str, Any], from_ovis: bool, materialised: bool = True) -> list[str]:
    """Apply the stage's re-init options to `model` (only when `materialised`: a meta-device replica of a sharded
    run gets its weights from rank 0). Returns the trainable patterns the re-initialised layers add (the same on
    every rank)."""
    begin = stage.get("visual_re_init_layer_begin")
    vte = bool(stage.get("vte_re_init"))
    if begin is None and not vte:
        return []
    if from_ovis:
        log.warning("stage %s starts from Ovis weights: visual_re_init_layer_begin / vte_re_init are ignored "
                    "(as in the original: re-initialising a trained Ovis discards its training)", stage.get("name"))
        return []
    patterns: list[str] = []
    if begin is not None:
        backbone = model.visual_tokenizer.backbone
        indices = reinit_layer_indices(len(encoder_layers(backbone)), int(begin))
        if materialised:
            reinit_vit_layers(backbone, int(begin))
            log.info("re-initialised ViT layers %s", indices)
        patterns = [f"visual_tokenizer.backbone.layers.{i}" for i in indices]
    if vte and materialised:
        model.vte.reinit_like(model.llm.get_input_embeddings().weight)
        log.info("re-drew the visual embedding table from the text embedding table's mean and std")
    return patterns
