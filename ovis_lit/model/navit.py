"""The Ovis2.5 vision transformer: SigLIP2 layers over packed native-resolution patches (NaViT).

Input: the patches of every image (and video) of a batch concatenated, [patches, 3 * tp * p * p], each image's in
hidden_stride x hidden_stride block order (`processing.native_resolution`), with `grid_thws` [images, 3].
What the original computes, and so this module:
- a Linear patch embedding over the flattened patch (a Conv2d of kernel = stride = patch when `num_patches` is -1,
  the same map on the same numbers);
- the learned position-embedding grid (sqrt(num_patches) per side) bicubically interpolated (align_corners false)
  to each image's (h, w), put in block order, repeated over the frames of a video;
- 2D rotary embeddings on q and k (Qwen2.5-VL style: half of head_dim rotated by the row, half by the column);
- windowed attention on the layers not listed in `fullatt_block_indexes` (windows of window_size / hidden_stride /
  patch_size merged tokens per side; tokens are reordered into windows once, and back at the end), full
  attention within each frame of each image on the listed layers;
- features: the last encoder layer's output, before `post_layernorm`, in the original token order.

Attention runs on variable-length sequences without padding them to a common length: flash-attn varlen when the
config asks for flash_attention_2, else one attention call per group of equal-length sequences (no padding).
Parameter names are those of the original checkpoint under `visual_tokenizer.vit.vision_model.`.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VLVisionRotaryEmbedding,
    apply_rotary_pos_emb_vision,
)
from transformers.models.siglip.modeling_siglip import SiglipAttention, SiglipEncoderLayer, eager_attention_forward
from transformers.utils.generic import is_flash_attention_requested
from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids, get_vision_window_index

ROPE_THETA = 10000.0  # Qwen2.5-VL's vision rotary base, which the Ovis2.5 ViT uses


class Siglip2NavitConfig(PretrainedConfig):
    """The original's `vit_config` (model_type siglip2_navit); field names and defaults as Ovis2.5 writes them."""

    model_type = "siglip2_navit"

    def __init__(
        self,
        hidden_size: int = 1152,
        intermediate_size: int = 4304,
        num_hidden_layers: int = 27,
        num_attention_heads: int = 16,
        num_channels: int = 3,
        num_patches: int = -1,
        image_size: int = 512,
        patch_size: int = 16,
        hidden_act: str = "gelu_pytorch_tanh",
        layer_norm_eps: float = 1e-6,
        attention_dropout: float = 0.0,
        hidden_stride: int = 2,
        window_size: int = 112,
        fullatt_block_indexes: str | list[int] | None = None,
        temporal_patch_size: int = 1,
        preserve_original_pe: bool = True,
        use_rope: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_channels = num_channels
        self.num_patches = num_patches
        self.image_size = image_size
        self.patch_size = patch_size
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.attention_dropout = attention_dropout
        self.hidden_stride = hidden_stride
        self.window_size = window_size
        self.fullatt_block_indexes = fullatt_block_indexes
        self.temporal_patch_size = temporal_patch_size
        self.preserve_original_pe = preserve_original_pe
        self.use_rope = use_rope

    @property
    def full_attention_layers(self) -> frozenset[int]:
        """`fullatt_block_indexes` as layer numbers (the original writes them as a "|"-separated string)."""
        value = self.fullatt_block_indexes
        if value is None or value == "":
            return frozenset()
        if isinstance(value, str):
            return frozenset(int(x) for x in value.split("|"))
        return frozenset(int(x) for x in value)

    @property
    def position_grid_side(self) -> int:
        n = self.num_patches if self.num_patches > 0 else (self.image_size // self.patch_size) ** 2
        side = int(round(n**0.5))
        if side * side != n:
            raise ValueError(f"the position embedding needs a square grid, got {n} positions")
        return side


class NavitEmbeddings(nn.Module):
    def __init__(self, config: Siglip2NavitConfig):
        super().__init__()
        self.config = config
        p, channels = config.patch_size, config.num_channels * config.temporal_patch_size
        if config.num_patches == -1:
            self.patch_embedding = nn.Conv2d(channels, config.hidden_size, kernel_size=p, stride=p)
        else:
            self.patch_embedding = nn.Linear(channels * p * p, config.hidden_size)
        if config.preserve_original_pe:
            self.position_embedding = nn.Embedding(config.position_grid_side**2, config.hidden_size)

    def forward(self, pixel_values: torch.Tensor, grid_thws: torch.Tensor) -> torch.Tensor:
        """Patches [N, C*tp*p*p] -> embeddings [N, d] (patch + interpolated position embedding)."""
        weight_dtype = self.patch_embedding.weight.dtype
        pixel_values = pixel_values.to(weight_dtype)
        if isinstance(self.patch_embedding, nn.Conv2d):
            p = self.config.patch_size
            patches = pixel_values.view(-1, self.patch_embedding.in_channels, p, p)
            embeds = self.patch_embedding(patches).flatten(1)
        else:
            embeds = self.patch_embedding(pixel_values)
        if self.config.preserve_original_pe:
            embeds = embeds + self.position_embeddings(grid_thws)
        return embeds

    def position_embeddings(self, grid_thws: torch.Tensor) -> torch.Tensor:
        """The position grid resized to each image's (h, w), in hidden_stride block order, once per frame."""
        side, hs = self.config.position_grid_side, self.config.hidden_stride
        table = self.position_embedding.weight
        grid = table.reshape(side, side, -1).permute(2, 0, 1).unsqueeze(0)  # [1, d, side, side]
        resized: dict[tuple[int, int], torch.Tensor] = {}
        out = []
        for t, h, w in grid_thws.tolist():
            if (h, w) not in resized:
                # bicubic in float32 (F.interpolate has no bicubic kernel for every low-precision dtype)
                pe = F.interpolate(grid.float(), size=(h, w), mode="bicubic", align_corners=False).to(table.dtype)
                pe = pe[0].reshape(-1, h // hs, hs, w // hs, hs).permute(1, 3, 2, 4, 0).reshape(h * w, -1)
                resized[(h, w)] = pe
            out.append(resized[(h, w)].repeat(t, 1))
        return torch.cat(out)


class NavitAttention(SiglipAttention):
    """SigLIP's attention (same q/k/v/out projections) with 2D rotary embeddings, over packed sequences."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        segments: "Segments | None" = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None]:
        n = hidden_states.shape[0]
        shape = (n, self.num_heads, self.head_dim)
        q = self.q_proj(hidden_states).view(shape)
        k = self.k_proj(hidden_states).view(shape)
        v = self.v_proj(hidden_states).view(shape)
        if position_embeddings is not None:
            q, k = apply_rotary_pos_emb_vision(q, k, *position_embeddings)
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        dropout = self.dropout if self.training else 0.0
        if is_flash_attention_requested(self.config):
            out, _ = attention(
                self, q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], None,
                is_causal=False, scaling=self.scale, dropout=dropout,
                cu_seq_lens_q=segments.cu_seqlens, cu_seq_lens_k=segments.cu_seqlens,
                max_length_q=segments.max_length, max_length_k=segments.max_length,
            )
            out = out.reshape(n, -1)
        else:
            out = q.new_empty(shape)
            for index in segments.groups:  # [sequences, length]: equal-length sequences in one call, no padding
                flat = index.reshape(-1)
                qs, ks, vs = (x[index].transpose(1, 2) for x in (q, k, v))  # [sequences, heads, length, hd]
                part, _ = attention(self, qs, ks, vs, None, is_causal=False, scaling=self.scale, dropout=dropout)
                out = out.index_copy(0, flat, part.reshape(flat.shape[0], self.num_heads, self.head_dim))
            out = out.reshape(n, -1)
        return self.out_proj(out), None


class NavitEncoderLayer(SiglipEncoderLayer):
    def __init__(self, config: Siglip2NavitConfig):
        super().__init__(config)
        self.self_attn = NavitAttention(config)


class Segments:
    """Sequence boundaries of a packed batch: `cu_seqlens` for flash-attn varlen, and for other kernels the
    token indices of each sequence grouped by length (one attention call per distinct length)."""

    def __init__(self, cu_seqlens: torch.Tensor):
        self.cu_seqlens = cu_seqlens.to(torch.int32)
        bounds = cu_seqlens.tolist()
        lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
        self.max_length = max(lengths) if lengths else 0
        by_length: dict[int, list[int]] = {}
        for start, length in zip(bounds[:-1], lengths):
            if length:
                by_length.setdefault(length, []).append(start)
        device = cu_seqlens.device
        self.groups = [
            torch.tensor(starts, device=device)[:, None] + torch.arange(length, device=device)
            for length, starts in sorted(by_length.items())
        ]


class NavitEncoder(nn.Module):
    def __init__(self, config: Siglip2NavitConfig):
        super().__init__()
        self.layers = nn.ModuleList([NavitEncoderLayer(config) for _ in range(config.num_hidden_layers)])


class Siglip2NavitModel(PreTrainedModel):
    """Packed patches + grid_thws -> patch features [patches, d] of the last layer, before `post_layernorm`."""

    config_class = Siglip2NavitConfig
    base_model_prefix = "vision_model"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["NavitEncoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True

    def __init__(self, config: Siglip2NavitConfig):
        super().__init__(config)
        self.embeddings = NavitEmbeddings(config)
        self.encoder = NavitEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)  # unused, kept for the layout
        self.rotary = None
        self.init_rotary()
        self.post_init()

    def init_rotary(self) -> None:
        """(Re)build the rotary frequency table on the CPU: it is a non-persistent buffer, so a model built on the
        meta device and then loaded calls this to get real values."""
        if not self.config.use_rope:
            return
        head_dim = self.config.hidden_size // self.config.num_attention_heads
        rope_config = SimpleNamespace(rope_parameters={"rope_type": "axial", "rope_theta": ROPE_THETA}, head_dim=head_dim)
        with torch.device("cpu"):
            self.rotary = Qwen2_5_VLVisionRotaryEmbedding(rope_config)

    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's default initialisation, as the original builds its ViT (transformers' SigLIP init would differ)
        return

    def forward(self, pixel_values: torch.Tensor, grid_thws: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        hs, unit = cfg.hidden_stride, cfg.hidden_stride**2
        grid_thws = grid_thws.to(device=pixel_values.device, dtype=torch.long)
        expected = int((grid_thws[:, 0] * grid_thws[:, 1] * grid_thws[:, 2]).sum()) if len(grid_thws) else 0
        if pixel_values.shape[0] != expected:
            raise ValueError(f"grid_thws describe {expected} patches, pixel_values has {pixel_values.shape[0]}")
        if len(grid_thws) and bool(((grid_thws[:, 1] % hs) | (grid_thws[:, 2] % hs)).any()):
            raise ValueError(f"every grid's h and w must be multiples of hidden_stride {hs}, got {grid_thws.tolist()}")
        hidden = self.embeddings(pixel_values, grid_thws)
        n = hidden.shape[0]

        full = Segments(get_vision_cu_seqlens(grid_thws))  # each frame of each image
        windows = window_index = None
        if len(cfg.full_attention_layers) < cfg.num_hidden_layers:
            window_index, cu_windows = get_vision_window_index(grid_thws, hs, cfg.window_size, cfg.patch_size)
            window_index = window_index.to(hidden.device)
            windows = Segments(cu_windows.to(hidden.device))

        def to_windows(x: torch.Tensor) -> torch.Tensor:  # whole merge units (hs^2 patches) move together
            return x if window_index is None else x.reshape(n // unit, unit, -1)[window_index].reshape(n, -1)

        hidden = to_windows(hidden)
        position_embeddings = None
        if self.rotary is not None:
            position_ids = get_vision_position_ids(grid_thws, hs).to(hidden.device)
            position_embeddings = tuple(to_windows(x) for x in self.rotary(hidden, position_ids))
        for i, layer in enumerate(self.encoder.layers):
            segments = full if i in cfg.full_attention_layers else windows
            hidden = layer(hidden, None, position_embeddings=position_embeddings, segments=segments)
        if window_index is not None:
            hidden = hidden.reshape(n // unit, unit, -1)[torch.argsort(window_index)].reshape(n, -1)
        return hidden

    def tokens_of(self, grid_thws: torch.Tensor) -> int:
        """Visual tokens (merged patches) the grids give."""
        return int((grid_thws[:, 0] * grid_thws[:, 1] * grid_thws[:, 2]).sum()) // self.config.hidden_stride**2


def _register_backbone_family() -> None:
    """Make the NaViT a vision backbone family like the transformers ViTs (building, freezing, sharding)."""
    from .vision import FAMILIES, BackboneFamily

    FAMILIES.setdefault(
        Siglip2NavitConfig.model_type,
        BackboneFamily(
            Siglip2NavitConfig.model_type,
            Siglip2NavitConfig,
            Siglip2NavitModel,
            drop_cls_token=False,
            unused_prefixes=("post_layernorm.",),  # features are taken before it
        ),
    )


_register_backbone_family()
