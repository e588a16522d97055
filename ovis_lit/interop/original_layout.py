"""How the original Ovis 1.6 / Ovis2 layout stores each visual tokenizer, and the visual parts its config describes.

The backbone's names depend on the visual tokenizer: SigLIP and CLIP (1.6) are transformers' own under
`vision_model.`; AIMv2 (Ovis2) is the original repository's own module, converted by `aimv2.py`. The visual head
(`visual_tokenizer.head.{0,1}.*`) and table (`vte.weight`) are the same in every one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import transformers

from ..model.embedding import VisualEmbedding
from ..model.ovis import OvisModel
from ..model.vision import FAMILIES
from ..model.visual_tokenizer import VisualTokenizer
from . import aimv2
from .legacy_config import LEGACY_COMMON_FIELDS

N_INDICATORS = 5  # Ovis 1.6 / 2.0
OURS_BACKBONE_PREFIX = "visual_tokenizer.backbone."  # also the original's prefix of every backbone tensor


def _prefixed(prefix: str) -> tuple[Callable, Callable]:
    """Name maps for a backbone stored as transformers' own module under `prefix` (SigLIP, CLIP)."""

    def to_ours(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    def to_original(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {prefix + k: v for k, v in tensors.items()}

    return to_ours, to_original


def _transformers_backbone_config(config: transformers.PretrainedConfig) -> dict[str, Any]:
    backbone = copy.deepcopy(LEGACY_COMMON_FIELDS)
    backbone.update(config.to_dict())
    backbone.pop("dtype", None)
    backbone.pop("transformers_version", None)
    backbone["torch_dtype"] = None
    return backbone


@dataclass(frozen=True)
class BackboneLayout:
    """How one original visual tokenizer stores its backbone, and how that maps onto a transformers module."""

    visual_tokenizer: str  # the original `visual_tokenizer_config.model_type`
    family: str  # our backbone family (vision.FAMILIES)
    image_processor: str  # the image processor class the original's preprocessor_config.json names
    config_to_ours: Callable[[dict[str, Any]], transformers.PretrainedConfig]
    config_to_original: Callable[[transformers.PretrainedConfig], dict[str, Any]]
    # tensor names (and shapes) below `visual_tokenizer.backbone.`: original -> ours and back
    state_to_ours: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    state_to_original: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    # the original's prefix when it is a pure renaming: transformers then reads the weights straight from the files
    key_prefix: str | None = None


def _transformers_layout(vt_type: str, family: str, image_processor: str) -> BackboneLayout:
    to_ours, to_original = _prefixed("vision_model.")
    return BackboneLayout(
        vt_type, family, image_processor,
        config_to_ours=FAMILIES[family].config_class.from_dict,
        config_to_original=_transformers_backbone_config,
        state_to_ours=to_ours,
        state_to_original=to_original,
        key_prefix="vision_model.",
    )


LAYOUTS = {
    layout.visual_tokenizer: layout
    for layout in (
        _transformers_layout("siglip_visual_tokenizer", "siglip_vision_model", "SiglipImageProcessor"),
        _transformers_layout("clip_visual_tokenizer", "clip_vision_model", "CLIPImageProcessor"),
        BackboneLayout(
            "aimv2_visual_tokenizer", "aimv2_vision_model", "CLIPImageProcessor",
            config_to_ours=aimv2.config_to_ours,
            config_to_original=aimv2.config_to_original,
            state_to_ours=aimv2.state_to_ours,
            state_to_original=aimv2.state_to_original,
        ),
    )
}
LAYOUT_BY_FAMILY = {layout.family: layout for layout in LAYOUTS.values()}


def layout_of(model: OvisModel) -> BackboneLayout:
    backbone_type = model.visual_tokenizer.backbone.config.model_type
    if backbone_type not in LAYOUT_BY_FAMILY:
        raise ValueError(f"the original Ovis layout has no visual tokenizer for a {backbone_type!r} backbone")
    return LAYOUT_BY_FAMILY[backbone_type]


def visual_parts(vt_config: dict[str, Any], backbone, llm_hidden: int) -> tuple[VisualTokenizer, VisualEmbedding]:
    """Visual tokenizer (around `backbone`) and embedding table as `visual_tokenizer_config` describes them."""
    visual_tokenizer = VisualTokenizer(
        backbone,
        vocab_size=vt_config["vocab_size"],
        n_indicators=N_INDICATORS,
        hidden_stride=vt_config.get("hidden_stride", 1),
        tokenize_function=vt_config.get("tokenize_function", "softmax"),
        tau=vt_config.get("tau", 1.0),
    )
    return visual_tokenizer, VisualEmbedding(vt_config["vocab_size"], llm_hidden)
