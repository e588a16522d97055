"""FSDP2 (`fully_shard`) for an OvisModel under Lightning's ModelParallelStrategy.

Units, innermost first: every ViT encoder layer and every LLM decoder layer (the classes each transformers
backbone declares in `_no_split_modules`), the visual head, the visual embedding table, then the root (text
embeddings, final norm, lm_head). Frozen parameters stay frozen: FSDP2 keeps `requires_grad` per parameter, so
they get no gradient and, because the optimiser is built after sharding from trainable parameters only, no
optimiser state.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

from ..model.build import as_dtype
from ..model.ovis import OvisModel

log = logging.getLogger(__name__)


def layer_classes(module: nn.Module) -> set[str]:
    """The block classes a transformers model asks not to split (its decoder / encoder layers)."""
    names = getattr(module, "_no_split_modules", None) or []
    return set(names)


def shard_units(model: OvisModel) -> list[nn.Module]:
    """Modules that become their own FSDP unit, in the order they are wrapped (the root comes last, separately)."""
    units: list[nn.Module] = []
    for part in (model.visual_tokenizer.backbone, model.llm):
        classes = layer_classes(part)
        layers = [m for m in part.modules() if type(m).__name__ in classes]
        if not layers:
            raise ValueError(f"{type(part).__name__} declares no layer class to shard (_no_split_modules)")
        units += layers
    units += [model.visual_tokenizer.head, model.vte]
    return units


def shard_model(
    model: OvisModel,
    mesh: DeviceMesh,
    param_dtype: str | torch.dtype | None = "bfloat16",
    reduce_dtype: str | torch.dtype | None = "float32",
    cpu_offload: bool = False,
    reshard_after_forward: bool = True,
) -> OvisModel:
    """Apply `fully_shard` per layer, head, table and root. `param_dtype`: the compute dtype of the gathered
    parameters (None: keep the stored dtype); gradients are reduced in `reduce_dtype`."""
    policy: dict[str, Any] = {
        "mesh": mesh,
        "mp_policy": MixedPrecisionPolicy(param_dtype=as_dtype(param_dtype), reduce_dtype=as_dtype(reduce_dtype)),
        "reshard_after_forward": reshard_after_forward,
    }
    if cpu_offload:
        policy["offload_policy"] = CPUOffloadPolicy()
    units = shard_units(model)
    for unit in units:
        fully_shard(unit, **policy)
    fully_shard(model, **policy)
    log.info("FSDP2: %d units + root over a data-parallel mesh of %d", len(units), mesh.size())
    return model


def load_full_state_from_rank0(model: nn.Module, full_state: dict[str, torch.Tensor], device: torch.device) -> None:
    """After sharding: ranks that built `model` on the meta device allocate their shards, and every rank's shards
    and buffers are filled from rank 0's full state (`full_state` on rank 0, empty elsewhere)."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if dist.get_rank() != 0:
        model.to_empty(device=device)
    set_model_state_dict(
        model, full_state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=True)
    )
    for buffer in model.buffers():  # not sharded, and some (rotary frequencies) are not in the state dict
        dist.broadcast(buffer, src=0)
