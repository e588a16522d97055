"""The visual tokenizer: ViT patch features -> merged patches -> head -> probabilistic visual tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .navit import Siglip2NavitModel
from .vision import crop_side, vision_features

# softmax, gumbel_argmax and st_argmax are the original's; st_softmax is ovis-lit's own (see `tokenize`).
TOKENIZE_FUNCTIONS = ("softmax", "gumbel_argmax", "st_argmax", "st_softmax")


def merge_patches(features: torch.Tensor, hidden_stride: int) -> torch.Tensor:
    """Concatenate each hs x hs group of neighbouring patches: [N, s*s, d] -> [N, ceil(s/hs)^2, hs*hs*d].

    The grid is zero-padded at the bottom and right to a multiple of hs; within a group the patches are
    concatenated in row-major order (r0c0, r0c1, r1c0, r1c1 for hs = 2).
    """
    if hidden_stride == 1:
        return features
    n, length, d = features.shape
    side = int(round(length**0.5))
    if side * side != length:
        raise ValueError(f"hidden_stride needs a square patch grid, got {length} patches")
    grid = features.reshape(n, side, side, d)
    padded_side = -(-side // hidden_stride) * hidden_stride
    if padded_side != side:
        pad = padded_side - side
        grid = F.pad(grid, (0, 0, 0, pad, 0, pad))  # d untouched; pad width (right) and height (bottom)
    g = padded_side // hidden_stride
    grid = grid.reshape(n, g, hidden_stride, g, hidden_stride, d).permute(0, 1, 3, 2, 4, 5)
    return grid.reshape(n, g * g, hidden_stride * hidden_stride * d)


def tokenize(logits: torch.Tensor, function: str = "softmax", tau: float = 1.0) -> torch.Tensor:
    """Turn head logits into visual tokens (one weight per non-indicator visual word).

    - softmax: the probabilistic tokens of every released Ovis (computed in float32 whatever the compute dtype).
    - gumbel_argmax: a hard Gumbel-softmax sample (one-hot forward, Gumbel-softmax gradient), temperature `tau`.
    - st_argmax: the original's straight-through one-hot, `one_hot(argmax) - logits.detach() + logits` on the raw
      (LayerNormed) logits: the upstream gradient reaches the logits unchanged. The soft part is not a distribution.
    - st_softmax: the same one-hot forward with the softmax as the soft part, so the gradient is the softmax's
      (ovis-lit's own; the original code has no such function).
    """
    if function == "softmax":
        return _softmax(logits)
    if function == "gumbel_argmax":
        return F.gumbel_softmax(logits, tau=tau, hard=True)
    if function == "st_argmax":
        return _one_hot_argmax(logits) - logits.detach() + logits  # the original's order of operations
    if function == "st_softmax":
        soft = _softmax(logits)
        return _one_hot_argmax(logits) - soft.detach() + soft
    raise ValueError(f"unknown tokenize_function {function!r}; choose from {TOKENIZE_FUNCTIONS}")


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    # At least float32 whatever the compute dtype: bf16 probabilities over 65k words lose too much mass.
    return torch.softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32)).to(logits.dtype)


@torch.no_grad()
def normed_softmax_(logits: torch.Tensor, norm: nn.LayerNorm, block_bytes: int = 1 << 20) -> torch.Tensor:
    """softmax(norm(logits)) written over `logits` [..., w] (float32/float64, inference), rows in blocks of about
    `block_bytes`: bitwise the LayerNorm, then the softmax, over the whole tensor (rows are independent), but each
    block's normed logits and probabilities stay in cache between the two, and no second [rows, w] tensor is made.
    At the benchmark's [640, 16379] (`benchmarks/generation_speed.py`) the two passes cost ~20-40 ms whole, ~10-15
    a block at a time."""
    rows = logits.view(-1, logits.shape[-1])
    step = max(1, block_bytes // (rows.shape[1] * rows.element_size()))
    for start in range(0, rows.shape[0], step):
        block = rows[start : start + step]
        torch.ops.aten._softmax.out(norm(block), -1, False, out=block)
    return logits


def _one_hot_argmax(logits: torch.Tensor) -> torch.Tensor:
    return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)


class VisualFeatures(nn.Module):
    """The ViT backbone and its merged patch features: what every connector reads (`model/connector.py`).

    `n_indicators` visual-side embeddings (the indicator tokens -301..-305) belong to the model's table whatever
    the connector; `vocab_size` is the number of rows that table has.
    """

    projects = False  # True: the connector's head gives LLM embeddings directly (no visual tokens, no table read)

    def __init__(self, backbone: nn.Module, vocab_size: int, n_indicators: int = 5, hidden_stride: int = 2):
        super().__init__()
        if isinstance(backbone, Siglip2NavitModel) and backbone.config.hidden_stride != hidden_stride:
            raise ValueError(f"hidden_stride {hidden_stride} differs from the ViT's {backbone.config.hidden_stride} "
                             "(its patches come ordered in blocks of that stride)")
        self.backbone = backbone
        self.vocab_size = vocab_size
        self.n_indicators = n_indicators
        self.hidden_stride = hidden_stride

    @property
    def feature_dim(self) -> int:
        """Width of one merged patch feature (the connector's input)."""
        return self.backbone.config.hidden_size * self.hidden_stride * self.hidden_stride

    @property
    def native_resolution(self) -> bool:
        """True for the Ovis2.5 NaViT: packed patches + grid_thws in, one visual token per placeholder out."""
        return isinstance(self.backbone, Siglip2NavitModel)

    def features(self, pixel_values: torch.Tensor, grid_thws: torch.Tensor | None = None) -> torch.Tensor:
        """Merged patch features [N, T, hs*hs*d] for N crops.

        Native resolution (`grid_thws` given): packed patches [P, C*tp*p*p] -> [P / hs^2, 1, hs*hs*d], one "crop"
        per visual token, so the model's merge puts each token at its own -300. The patches come in hs x hs block
        order, so each hs^2 consecutive patch features make one token.
        """
        if self.native_resolution:
            if grid_thws is None:
                raise ValueError("a native-resolution visual tokenizer needs grid_thws with its pixel_values")
            features = self.backbone(pixel_values, grid_thws)
            return features.reshape(-1, 1, self.hidden_stride * self.hidden_stride * features.shape[-1])
        return merge_patches(vision_features(self.backbone, pixel_values), self.hidden_stride)

    def tokens_per_crop(self) -> int:
        if self.native_resolution:
            return 1
        grid = crop_side(self.backbone) // self.backbone.config.patch_size
        merged = -(-grid // self.hidden_stride)
        return merged * merged


class VisualTokenizer(VisualFeatures):
    """ViT backbone + visual head (Linear without bias, then LayerNorm over the logits).

    The head has V - n_indicators outputs: the last n_indicators words of the visual vocabulary are the indicator
    tokens, which images never produce.
    """

    def __init__(
        self,
        backbone: nn.Module,
        vocab_size: int,
        n_indicators: int = 5,
        hidden_stride: int = 2,
        tokenize_function: str = "softmax",
        tau: float = 1.0,
    ):
        if tokenize_function not in TOKENIZE_FUNCTIONS:
            raise ValueError(f"unknown tokenize_function {tokenize_function!r}; choose from {TOKENIZE_FUNCTIONS}")
        if vocab_size <= n_indicators:
            raise ValueError(f"visual vocab_size {vocab_size} must exceed n_indicators {n_indicators}")
        super().__init__(backbone, vocab_size, n_indicators, hidden_stride)
        self.tokenize_function = tokenize_function
        self.tau = tau  # gumbel_argmax: annealed during training by training.tau.TauAnnealing (callbacks.tau)
        head_dim = vocab_size - n_indicators
        self.head = nn.Sequential(nn.Linear(self.feature_dim, head_dim, bias=False), nn.LayerNorm(head_dim))

    def logits(self, pixel_values: torch.Tensor, grid_thws: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(pixel_values, grid_thws))

    def tokenize(self, logits: torch.Tensor) -> torch.Tensor:
        """Head logits -> visual tokens with this tokenizer's function (`tokenize`)."""
        return tokenize(logits, self.tokenize_function, self.tau)

    def tokens(self, pixel_values: torch.Tensor, grid_thws: torch.Tensor | None = None) -> torch.Tensor:
        """Visual tokens over the V - n_indicators image words [N, T, V - n_ind] (what the model embeds)."""
        return self.tokenize(self.logits(pixel_values, grid_thws))

    def softmax_in_blocks(self) -> bool:
        """Whether `tokens_in_blocks` may stand in for `tokens`: softmax tokens, no gradient (inference), and no hook
        on the head, which the blocks would bypass (FSDP's unsharding, a hook that reads the logits)."""
        head = self.head
        return (self.tokenize_function == "softmax" and not torch.is_grad_enabled()
                and not (head._forward_hooks or head._forward_pre_hooks))

    @torch.no_grad()
    def tokens_in_blocks(self, pixel_values: torch.Tensor, grid_thws: torch.Tensor | None = None) -> torch.Tensor:
        """`tokens` at inference, bit for bit: in float32/float64 the head's LayerNorm and the softmax run over one
        block of rows at a time, written over the head's output (`normed_softmax_`); other dtypes (autocast) take
        `tokens`' own operations."""
        linear, norm = self.head
        logits = linear(self.features(pixel_values, grid_thws))
        if logits.dtype not in (torch.float32, torch.float64):
            return self.tokenize(norm(logits))
        return normed_softmax_(logits, norm)

    def forward(self, pixel_values: torch.Tensor, grid_thws: torch.Tensor | None = None) -> torch.Tensor:
        """Visual tokens over the whole visual vocabulary [N, T, V]: the indicator columns are zero."""
        return F.pad(self.tokens(pixel_values, grid_thws), (0, self.n_indicators))
