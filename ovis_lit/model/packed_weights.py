"""Decoding's matmuls on MKL-packed weights (CPU, float32): a decode step's Linear layers at their real row count.

A decode step multiplies a handful of rows (one token per prompt) by every weight of the LLM, the output head's
[vocab, d] included. MKL's plain sgemm is far from the memory bandwidth at so few rows (the benchmark's
[8, 512] x [512, 32000] head: 21 ms, where reading the weight takes 6.5 ms); a weight packed once for that row count
(`cblas_sgemm_pack`, what torch.compile's CPU backend uses for frozen Linear weights) halves it. `packed_linears`
packs every Linear of the LLM for the batch's row count while `generate` runs, then drops the copies: calls with any
other row count (the prefill) run the plain Linear, bit for bit. The packed product rounds differently in the last
bits (about 1e-7 relative), so generation's answers are tested equal with and without it.

Memory: the packed copies hold about as much as the LLM's Linear weights while `generate` runs; above
`MAX_PACKED_BYTES` of weights nothing is packed.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

# A second copy of the weights for the duration of one `generate`: fine for the CPU models this serves (a tiny model
# is ~0.1 GB), not for a multi-billion-parameter LLM on a CPU.
MAX_PACKED_BYTES = 2 * 2**30


def applies(llm: nn.Module) -> bool:
    """CPU float32 weights, a PyTorch with MKL's packed sgemm, and at most `MAX_PACKED_BYTES` of Linear weights."""
    linears = [m for m in llm.modules() if isinstance(m, nn.Linear)]
    if not linears or not torch.backends.mkl.is_available() or not hasattr(torch.ops.mkl, "_mkl_linear"):
        return False
    weights = [m.weight for m in linears]
    if any(w.device.type != "cpu" or w.dtype != torch.float32 for w in weights):
        return False
    return sum(w.numel() * w.element_size() for w in weights) <= MAX_PACKED_BYTES


@contextlib.contextmanager
def packed_linears(llm: nn.Module, rows: int) -> Iterator[None]:
    """While inside: every Linear of `llm` multiplies inputs of exactly `rows` rows with its MKL-packed weight (packed
    on entry, dropped on exit); other inputs take the plain Linear. The caller checks `applies(llm)` first."""
    patched = []
    try:
        for module in llm.modules():
            if isinstance(module, nn.Linear):
                packed = torch.ops.mkl._mkl_reorder_linear_weight(module.weight.detach(), rows)
                module.forward = _packed_forward(module, packed, rows)  # an instance attribute: the class's stays
                patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward


def _packed_forward(module: nn.Linear, packed: torch.Tensor, rows: int):
    weight, bias = module.weight.detach(), None if module.bias is None else module.bias.detach()

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad or x.dtype != torch.float32 or x.numel() != rows * module.in_features:
            return nn.Linear.forward(module, x)
        return torch.ops.mkl._mkl_linear(x, packed, weight, bias, rows)

    return forward
