"""Decoding's matmuls on MKL-packed weights (CPU, float32): a decode step's Linear layers at their real row count.

A decode step multiplies a handful of rows (one token per prompt) by every weight of the LLM, the output head's
[vocab, d] included. MKL's plain sgemm is far from the memory bandwidth at so few rows (the benchmark's
[8, 512] x [512, 32000] head: 21 ms, where reading the weight takes 6.5 ms); a weight packed once for that row count
(`cblas_sgemm_pack`, what torch.compile's CPU backend uses for frozen Linear weights) halves it. `packed_linears`
makes every Linear of the LLM multiply the batch's row count with its packed weight while `generate` runs: calls with
any other row count (the prefill) run the plain Linear, bit for bit. The packed product rounds differently in the
last bits (about 1e-7 relative), so generation's answers are tested equal with and without it.

The packed copies are kept between calls (on each Linear, for the latest row count): packing the benchmark's LLM
takes ~60 ms (the head alone ~35 ms), a cost every batch of `chat.py --batch` or an evaluation would otherwise pay
again. A copy is used only while its weight is the one it was packed from (same storage, unchanged since:
`Tensor._version` counts in-place writes, which an optimizer step or `load_state_dict` makes), else packed again;
writes through `.data` bypass that count, so code that makes them calls `release(llm)`.
Memory: the copies hold about as much as the LLM's Linear weights, from the first `generate` until `release(llm)`;
above `MAX_PACKED_BYTES` of weights nothing is packed.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from .instance_forward import forwards_replaced

# A second copy of the weights, kept between `generate` calls until `release`: fine for the CPU models this serves
# (a tiny model is ~0.1 GB), not for a multi-billion-parameter LLM on a CPU.
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


# the attribute of a Linear that holds (the weight it was packed from, its version, rows, the packed weight): not a
# buffer, so no state dict, checkpoint or `.to()` ever sees it
_PACKED = "_ovis_packed_weight"


@contextlib.contextmanager
def packed_linears(llm: nn.Module, rows: int) -> Iterator[None]:
    """While inside: every Linear of `llm` multiplies inputs of exactly `rows` rows with its MKL-packed weight (packed
    on entry unless an up-to-date copy for `rows` is kept from an earlier call); other inputs take the plain Linear.
    The caller checks `applies(llm)` first."""
    linears = [m for m in llm.modules() if isinstance(m, nn.Linear)]
    with forwards_replaced((m, _packed_forward(m, _packed_weight(m, rows), rows)) for m in linears):
        yield


def release(llm: nn.Module) -> None:
    """Drop the packed copies kept on `llm`'s Linear layers (the next `packed_linears` packs again)."""
    for module in llm.modules():
        if isinstance(module, nn.Linear) and _PACKED in vars(module):
            delattr(module, _PACKED)


def _packed_weight(module: nn.Linear, rows: int) -> torch.Tensor:
    weight = module.weight.detach()  # shares the parameter's storage and version counter
    if weight.is_inference():  # no version counter to tell whether it changed: packed for this call only
        return _reorder(weight, rows)
    kept = vars(module).get(_PACKED)
    if kept is None or not _packed_from(kept, weight, rows):
        kept = (weight, weight._version, rows, _reorder(weight, rows))
        setattr(module, _PACKED, kept)
    return kept[3]


def _packed_from(kept: tuple, weight: torch.Tensor, rows: int) -> bool:
    """Whether `kept` was packed for `rows` from `weight` as it is now. The kept tensor holds the storage it was
    packed from, so no other tensor can take its address meanwhile: the same address and layout is the same memory,
    and an unchanged version counter means no in-place write since (writes through `.data`, which bypass the counter,
    go unseen: `release` after them)."""
    source, version, packed_rows, _ = kept
    return (packed_rows == rows and source.data_ptr() == weight.data_ptr() and source.shape == weight.shape
            and source.stride() == weight.stride() and weight._version == version)


def _packed_forward(module: nn.Linear, packed: torch.Tensor, rows: int):
    weight, bias = module.weight.detach(), None if module.bias is None else module.bias.detach()

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad or x.dtype != torch.float32 or x.numel() != rows * module.in_features:
            return nn.Linear.forward(module, x)
        return torch.ops.mkl._mkl_linear(x, packed, weight, bias, rows)

    return forward


def _reorder(weight: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.ops.mkl._mkl_reorder_linear_weight(weight, rows)
