"""SwiGLU MLPs computed in place at inference: `down(silu(gate(x)) * up(x))` with the activation and the product
written over the gate projection's output.

Why: the plain forward allocates four [tokens, intermediate] tensors per call (gate, up, silu, product). On a CPU,
glibc returns such large blocks to the system when they are freed, so every fresh one is page-faulted in and zeroed
again: in `benchmarks/generation_speed.py` (40 AIMv2 crops, 2560 patches x 1024) that is 40 MB of new memory per ViT
layer, ~41,000 page faults per batch in the ViT alone. In place, two of the four tensors are never allocated
(measured there, 2 threads: 0.618 -> 0.579 s a batch, answers bitwise equal).

Same operations in the same order (gate, silu, up, product, down) on the same modules, so outputs are bitwise the
plain forward's (tested). Only without autograd: with gradients enabled, or an input that requires them, the class's
own forward runs. Applies to the SwiGLU MLP classes whose forward is exactly that expression with a SiLU activation:
AIMv2's (Ovis2's ViT), Qwen2's, Qwen3's and Llama's. Others (GELU MLPs of SigLIP and Gemma 2) keep their forward.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .instance_forward import forwards_replaced

_SWIGLU_MLPS = ("Aimv2MLP", "Qwen2MLP", "Qwen3MLP", "LlamaMLP")


def is_inplace_capable(module: nn.Module) -> bool:
    """A SwiGLU MLP of a known class with a SiLU activation (transformers' `SiLUActivation` or torch's `SiLU`)."""
    return (type(module).__name__ in _SWIGLU_MLPS
            and type(getattr(module, "act_fn", None)).__name__ in ("SiLUActivation", "SiLU"))


@contextlib.contextmanager
def inplace_mlps(model: nn.Module) -> Iterator[int]:
    """While inside, every capable MLP under `model` computes in place when autograd is off; yields their count."""
    mlps = [m for m in model.modules() if is_inplace_capable(m)]
    with forwards_replaced((m, _inplace_forward(m)) for m in mlps):
        yield len(mlps)


def _inplace_forward(module: nn.Module):
    plain = type(module).forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in module.parameters())):
            return plain(module, x)
        hidden = module.gate_proj(x)
        F.silu(hidden, inplace=True)
        hidden.mul_(module.up_proj(x))
        return module.down_proj(hidden)

    return forward
