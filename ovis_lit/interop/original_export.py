"""Export to the original Ovis Hugging Face layout (Ovis 1.6 and Ovis2 / v2.0); an Ovis2.5 model goes to `ovis25`.

Writes what `original.load_original` (and the original code) reads: config.json with the fields transformers 4.4x
wrote, safetensors weights under the original's names (the backbone in its layout, see `original_layout`), tokenizer
files, preprocessor_config.json and generation_config.json.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
import transformers

from ..model import packed_attention
from ..model.ovis import OvisModel
from ..model.vision import FAMILIES
from ..processing.conversation import CHAT_FORMATS
from ..processing.processor import OvisProcessor, save_image_preprocessor
from .export_files import save_sharded, write_generation_config, write_json, write_tokenizer
from .legacy_config import LEGACY_COMMON_FIELDS, LEGACY_MODEL_FIELDS, LEGACY_TRANSFORMERS_VERSION
from .original_layout import LAYOUTS, OURS_BACKBONE_PREFIX, layout_of

log = logging.getLogger(__name__)


def _legacy_dict(config: transformers.PretrainedConfig) -> dict[str, Any]:
    """A transformers-5 config as a dict that the original (transformers 4.4x) code reads the same way."""
    d = copy.deepcopy(LEGACY_COMMON_FIELDS)
    d.update(config.to_dict())
    rope = d.get("rope_parameters") or {}
    if "rope_theta" in rope:
        d.setdefault("rope_theta", rope["rope_theta"])
    if rope.get("rope_type", "default") != "default":
        d.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
    for key, value in LEGACY_MODEL_FIELDS.get(config.model_type, {}).items():
        d.setdefault(key, value)
    d["torch_dtype"] = str(d.pop("dtype", None) or "float32").replace("torch.", "")
    d.pop("transformers_version", None)
    return d


def _original_tokenize_function(function: str) -> str:
    if function == "st_softmax":
        # The original code has no softmax straight-through. Its st_argmax has the same one-hot forward (inference
        # is unchanged); only training the export there would use the original's straight-through gradient.
        log.warning("the original Ovis code has no tokenize_function st_softmax: exported as st_argmax")
        return "st_argmax"
    return function


def original_config(model: OvisModel, chat_format: str, multimodal_max_length: int) -> dict[str, Any]:
    """config.json for the original loader. An imported model keeps its original fields."""
    vt = model.visual_tokenizer
    llm_cfg = model.llm.config
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    source = getattr(model, "original_config", None)
    if source is not None:
        config = copy.deepcopy(source)
    else:
        layout = layout_of(model)
        backbone = layout.config_to_original(vt.backbone.config)
        vt_config = copy.deepcopy(LEGACY_COMMON_FIELDS)
        vt_config.update(
            {"backbone_config": backbone, "backbone_kwargs": {}, "depths": None, "model_type": layout.visual_tokenizer}
        )
        config = {
            "architectures": ["Ovis"],
            "disable_tie_weight": False,
            "llm_config": _legacy_dict(llm_cfg),
            "model_type": "ovis",
            "transformers_version": LEGACY_TRANSFORMERS_VERSION,
            "visual_tokenizer_config": vt_config,
        }
    config["visual_tokenizer_config"].update(
        {
            "drop_cls_token": FAMILIES[vt.backbone.config.model_type].drop_cls_token,
            "hidden_stride": vt.hidden_stride,
            "tau": vt.tau,
            "tokenize_function": _original_tokenize_function(vt.tokenize_function),
            "vocab_size": vt.vocab_size,
        }
    )
    config.update(
        {
            "conversation_formatter_class": CHAT_FORMATS[chat_format].formatter_class,
            "hidden_size": llm_cfg.hidden_size,
            "llm_attn_implementation": packed_attention.public_name(llm_cfg._attn_implementation),
            "multimodal_max_length": multimodal_max_length,
            "torch_dtype": dtype,
        }
    )
    return config


def original_state_dict(model: OvisModel, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Our names -> the original's (the backbone in its layout, a tied lm_head left out). `state`: the model's full
    state dict when the model itself holds only shards (FSDP), or any tensors named like its parameters (gradients)."""
    out, backbone = {}, {}
    tied = model.llm.config.tie_word_embeddings
    for name, tensor in (model.state_dict() if state is None else state).items():
        if tied and name == "llm.lm_head.weight":
            continue
        if name.startswith(OURS_BACKBONE_PREFIX):
            backbone[name[len(OURS_BACKBONE_PREFIX) :]] = tensor
        else:
            out[name] = tensor.detach().contiguous()
    for name, tensor in layout_of(model).state_to_original(backbone).items():
        out[OURS_BACKBONE_PREFIX + name] = tensor.detach().contiguous()
    return out


def export_original(
    model: OvisModel,
    processor: OvisProcessor,
    directory: str | Path,
    multimodal_max_length: int = 8192,
    max_shard_bytes: int = 5 * 1024**3,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write `model` and `processor` in the original Ovis layout (sharded above `max_shard_bytes`). `state`: the
    full (consolidated) state dict, for a model whose parameters are FSDP shards."""
    if model.visual_tokenizer.projects:
        raise ValueError("the original Ovis layout has a visual head and embedding table, no MLP connector: export "
                         "an mlp / mlp_wide arm in ovis-lit's own layout (interop.ovis_lit_layout.export_ovis_lit)")
    if model.visual_tokenizer.native_resolution:  # Ovis2.5: its own layout
        from .ovis25 import export_ovis25

        return export_ovis25(model, processor, directory, max_shard_bytes, state)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = original_config(model, processor.chat_format, multimodal_max_length)
    write_json(directory / "config.json", config)
    save_sharded(original_state_dict(model, state), directory, max_shard_bytes)
    write_generation_config(directory, config["llm_config"], config["transformers_version"], also=("cache_implementation",))
    image_processor_class = LAYOUTS[config["visual_tokenizer_config"]["model_type"]].image_processor
    save_image_preprocessor(processor.image_preprocessor, directory, image_processor_class)
    write_tokenizer(processor, directory)
    return directory
