"""Build an OvisModel from a plain description (what the Hydra `model/` configs hold).

Either every part comes from configs (random init: the tiny CPU models), or the ViT and LLM come from local
checkpoint directories (stage 1 from a SigLIP + Gemma2 download), or the whole model comes from an original
Ovis checkpoint directory (`pretrained`, stages 2-3 and evaluation).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from ..interop.local_files import refuse_custom_code, safetensors_files
from .connector import (MLP_CONNECTORS, IndicatorEmbedding, ProjectorVisualTokenizer, check_connector, mlp_hidden,
                        ovis_tokenize_function)
from .embedding import VisualEmbedding
from .ovis import OvisModel
from .vision import FAMILIES, build_vision_backbone
from .visual_tokenizer import VisualTokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def as_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {sorted(DTYPES)}")
    return DTYPES[dtype]


@dataclass
class BackboneSpec:
    model_type: str = "siglip_vision_model"
    config: dict[str, Any] | None = None  # transformers vision-config fields (random init)
    pretrained: str | None = None  # or a local directory with the ViT's weights
    attn_implementation: str | None = None


@dataclass
class LLMSpec:
    config: dict[str, Any] | None = None  # transformers config fields, including model_type (random init)
    pretrained: str | None = None  # or a local directory with the LLM's weights
    attn_implementation: str | None = None  # default: eager for Gemma 2 (soft-capping), sdpa otherwise


@dataclass
class OvisSpec:
    backbone: BackboneSpec = field(default_factory=BackboneSpec)
    llm: LLMSpec = field(default_factory=LLMSpec)
    visual_vocab_size: int = 65536
    n_indicators: int = 5
    hidden_stride: int = 2
    tokenize_function: str = "softmax"
    tau: float = 1.0
    vte_init: str = "normal"  # "normal": N(0, 1) as the released recipes; "text_stats": mean/std of the text table
    dtype: str = "float32"
    # the speed-ups of `OvisModel` (fused softmax-table read, packed sparse-logits loss); false: the plain path
    fast_path: bool = True
    # what maps ViT features to LLM embeddings (model/connector.py): ovis (head + table), ovis_hard, ovis_gumbel,
    # mlp, mlp_wide; the MLP arms' hidden width: a number, "matched" (the Ovis head + table's parameters) or null
    connector: str = "ovis"
    connector_hidden: int | str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OvisSpec":
        d = dict(d)
        d["backbone"] = BackboneSpec(**(d.get("backbone") or {}))
        d["llm"] = LLMSpec(**(d.get("llm") or {}))
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_llm_attn(model_type: str) -> str:
    # Gemma 2 soft-caps attention logits, which only the eager kernel applies (the original trains it eager too).
    return "eager" if model_type == "gemma2" else "sdpa"


def llm_config_from_dict(config: dict[str, Any], attn_implementation: str | None = None) -> transformers.PretrainedConfig:
    config = dict(config)
    model_type = config.pop("model_type")
    cfg = AutoConfig.for_model(model_type, **config)
    cfg._attn_implementation = attn_implementation or default_llm_attn(model_type)
    return cfg


def build_llm(spec: LLMSpec, dtype: torch.dtype | None = None, weights: bool = True) -> torch.nn.Module:
    """A causal LLM: from a local directory, or from config (random init). `weights=False` builds from config only."""
    if spec.pretrained:
        path = Path(spec.pretrained)
        if not path.is_dir():
            raise FileNotFoundError(f"LLM directory not found: {path} (only local paths are loaded)")
        refuse_custom_code(path, native=CONFIG_MAPPING)
        if weights:
            safetensors_files(path)  # inside the directory, readable; pickled weights never
            kwargs = {"attn_implementation": spec.attn_implementation} if spec.attn_implementation else {}
            llm = AutoModelForCausalLM.from_pretrained(
                path, local_files_only=True, dtype=dtype, use_safetensors=True, trust_remote_code=False, **kwargs
            )
            if not spec.attn_implementation:
                llm.config._attn_implementation = default_llm_attn(llm.config.model_type)
            return llm
        cfg = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        cfg._attn_implementation = spec.attn_implementation or default_llm_attn(cfg.model_type)
    else:
        if not spec.config:
            raise ValueError("the LLM needs either `config` (with model_type) or `pretrained`")
        cfg = llm_config_from_dict(spec.config, spec.attn_implementation)
    return AutoModelForCausalLM.from_config(cfg, dtype=dtype, trust_remote_code=False)


def build_backbone(spec: BackboneSpec, dtype: torch.dtype | None = None, weights: bool = True) -> torch.nn.Module:
    if spec.pretrained and not weights:
        family = FAMILIES[spec.model_type]
        cfg = family.config_class.from_pretrained(
            spec.pretrained, local_files_only=True, trust_remote_code=False, **dict(family.config_defaults)
        )
        return build_vision_backbone(spec.model_type, cfg.to_dict(), None, spec.attn_implementation, dtype)
    return build_vision_backbone(spec.model_type, spec.config, spec.pretrained, spec.attn_implementation, dtype)


def build_ovis(spec: OvisSpec | dict[str, Any], device: str | torch.device | None = None) -> OvisModel:
    """Build from a spec. On the meta device nothing is allocated or loaded (parameter counts, FSDP planning)."""
    if isinstance(spec, dict):
        spec = OvisSpec.from_dict(spec)
    dtype = as_dtype(spec.dtype)
    meta = device is not None and torch.device(device).type == "meta"
    with torch.device(device) if device is not None else contextlib.nullcontext():
        backbone = build_backbone(spec.backbone, dtype, weights=not meta)
        llm = build_llm(spec.llm, dtype, weights=not meta)
        if check_connector(spec.connector) in MLP_CONNECTORS:
            return _mlp_arm(spec, backbone, llm, dtype)
        visual_tokenizer = VisualTokenizer(
            backbone,
            vocab_size=spec.visual_vocab_size,
            n_indicators=spec.n_indicators,
            hidden_stride=spec.hidden_stride,
            tokenize_function=ovis_tokenize_function(spec.connector, spec.tokenize_function),
            tau=spec.tau,
        )
        if dtype is not None:
            visual_tokenizer.head.to(dtype)
        vte = VisualEmbedding(spec.visual_vocab_size, llm.config.hidden_size, dtype=dtype)
    if spec.vte_init == "text_stats" and not meta:
        vte.reinit_like(llm.get_input_embeddings().weight)
    elif spec.vte_init not in ("normal", "text_stats"):
        raise ValueError(f"vte_init must be 'normal' or 'text_stats', got {spec.vte_init!r}")
    return OvisModel(visual_tokenizer, vte, llm, fast_path=spec.fast_path)


def _mlp_arm(spec: OvisSpec, backbone: torch.nn.Module, llm: torch.nn.Module, dtype: torch.dtype | None) -> OvisModel:
    """An MLP connector arm (built inside build_ovis's device context): projector head + indicator table."""
    llm_dim = llm.config.hidden_size
    feature_dim = backbone.config.hidden_size * spec.hidden_stride * spec.hidden_stride
    hidden = mlp_hidden(spec.connector, spec.connector_hidden, feature_dim, spec.visual_vocab_size,
                        spec.n_indicators, llm_dim)
    visual_tokenizer = ProjectorVisualTokenizer(backbone, llm_dim, hidden, spec.n_indicators, spec.hidden_stride)
    if dtype is not None:
        visual_tokenizer.head.to(dtype)
    indicators = IndicatorEmbedding(spec.n_indicators, llm_dim, dtype=dtype)
    if spec.vte_init == "text_stats" and llm.get_input_embeddings().weight.device.type != "meta":
        indicators.reinit_like(llm.get_input_embeddings().weight)
    elif spec.vte_init not in ("normal", "text_stats"):
        raise ValueError(f"vte_init must be 'normal' or 'text_stats', got {spec.vte_init!r}")
    return OvisModel(visual_tokenizer, indicators, llm, fast_path=spec.fast_path)


def connector_parameters(model: OvisModel) -> int:
    """Parameters of the connector: the visual head (or projector) and the visual table (or indicator rows)."""
    return sum(p.numel() for p in model.visual_tokenizer.head.parameters()) + model.vte.weight.numel()
