"""Import checkpoints in the original Ovis Hugging Face layout (Ovis 1.6 and Ovis2 / v2.0); export is
`original_export`, the backbone layouts `original_layout`, an Ovis2.5 directory goes to `ovis25`.

The layout: `config.json` (model_type "ovis", nested `llm_config` and `visual_tokenizer_config`), safetensors
weights (one file or shards with an index) named `llm.*`, `visual_tokenizer.backbone.*`,
`visual_tokenizer.head.{0,1}.*`, `vte.weight` (a tied `llm.lm_head.weight` is absent), tokenizer files,
`preprocessor_config.json` and `generation_config.json`. Only safetensors are read; no code from the directory
ever runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers

from ..model.build import as_dtype, llm_config_from_dict
from ..model.ovis import OvisModel
from ..model.vision import FAMILIES
from ..processing.processor import OvisProcessor
from .local_files import read_json_file, safetensors_files
from .original_layout import LAYOUTS, OURS_BACKBONE_PREFIX, BackboneLayout, visual_parts
from .reading import chat_format_of, has_tokenizer, is_ovis25_dir, load_into, load_llm, load_tensors, quiet_transformers


def read_original_config(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: not an Ovis checkpoint directory")
    config = read_json_file(config_path)
    if config.get("model_type") != "ovis":
        raise ValueError(f"{config_path} has model_type {config.get('model_type')!r}, expected 'ovis'")
    for key in ("visual_tokenizer_config", "llm_config"):
        if not isinstance(config.get(key), dict):
            raise ValueError(f"{config_path} has no {key} object: not an Ovis 1.6 checkpoint")
    vt_type = config["visual_tokenizer_config"].get("model_type")
    if vt_type not in LAYOUTS:
        raise ValueError(
            f"unsupported visual tokenizer {vt_type!r} (supported: {sorted(LAYOUTS)}); "
            "Ovis2.5 checkpoints use another layout"
        )
    return config


def original_tokens_per_crop(config: dict[str, Any]) -> int:
    """Visual tokens per crop of an original-layout config (what the processor expands each crop into)."""
    vt = config["visual_tokenizer_config"]
    grid = vt["backbone_config"]["image_size"] // vt["backbone_config"]["patch_size"]
    merged = -(-grid // vt.get("hidden_stride", 1))
    return merged * merged


def _backbone_layout(config: dict[str, Any]) -> tuple[BackboneLayout, transformers.PretrainedConfig]:
    vt_config = config["visual_tokenizer_config"]
    layout = LAYOUTS[vt_config["model_type"]]
    return layout, layout.config_to_ours(vt_config["backbone_config"])


def _load_backbone(directory: Path, config: dict[str, Any], dtype: torch.dtype) -> torch.nn.Module:
    """The backbone's weights from the checkpoint, through transformers' loading (meta init, dtype)."""
    layout, backbone_cfg = _backbone_layout(config)
    model_class = FAMILIES[layout.family].model_class
    common = dict(config=backbone_cfg, dtype=dtype, output_loading_info=True)
    if layout.key_prefix is not None:  # a renaming: transformers reads the files itself, one tensor at a time
        prefix = (OURS_BACKBONE_PREFIX + layout.key_prefix).replace(".", r"\.")
        backbone, info = model_class.from_pretrained(
            directory, key_mapping={"^" + prefix: ""}, local_files_only=True, use_safetensors=True,
            trust_remote_code=False, ignore_mismatched_sizes=True, **common  # mismatches reported below, named
        )
    else:  # names and shapes change (AIMv2's stacked qkv): convert the backbone's tensors here
        tensors = layout.state_to_ours(load_tensors(directory, OURS_BACKBONE_PREFIX))
        backbone, info = model_class.from_pretrained(None, state_dict=tensors, trust_remote_code=False, **common)
        if info["unexpected_keys"]:
            raise ValueError(f"checkpoint {directory}: backbone tensors with no place: {sorted(info['unexpected_keys'])}")
    missing = [k for k in info["missing_keys"] if not k.startswith(FAMILIES[layout.family].unused_prefixes)]
    if missing or info["mismatched_keys"]:
        raise ValueError(
            f"checkpoint {directory}: backbone weights missing {sorted(missing)} or of the wrong shape "
            f"{sorted(info['mismatched_keys'])}"
        )
    return backbone


def original_skeleton(
    directory: str | Path, dtype: str | torch.dtype | None = None, attn_implementation: str | None = None
) -> OvisModel:
    """The model an original Ovis checkpoint directory describes, on the meta device (no weights read): what the
    ranks other than 0 build under FSDP before rank 0's weights reach their shards."""
    directory = Path(directory)
    if is_ovis25_dir(directory):
        from .ovis25 import ovis25_skeleton

        return ovis25_skeleton(directory, dtype, attn_implementation)
    config = read_original_config(directory)
    vt_config = config["visual_tokenizer_config"]
    torch_dtype = as_dtype(dtype) or as_dtype(config.get("torch_dtype") or "float32")
    llm_cfg = llm_config_from_dict(config["llm_config"], attn_implementation or config.get("llm_attn_implementation"))
    layout, backbone_cfg = _backbone_layout(config)
    with torch.device("meta"):
        llm = transformers.AutoModelForCausalLM.from_config(llm_cfg, dtype=torch_dtype, trust_remote_code=False)
        backbone = FAMILIES[layout.family].model_class(backbone_cfg).to(torch_dtype)
        visual_tokenizer, vte = visual_parts(vt_config, backbone, llm.config.hidden_size)
        visual_tokenizer.to(torch_dtype)
        vte.to(torch_dtype)
    llm.config._attn_implementation = llm_cfg._attn_implementation
    model = OvisModel(visual_tokenizer, vte, llm)
    model.original_config = config
    return model


def load_original(
    directory: str | Path, dtype: str | torch.dtype | None = None, attn_implementation: str | None = None
) -> tuple[OvisModel, OvisProcessor | None]:
    """An original Ovis checkpoint directory -> (OvisModel, OvisProcessor or None when it has no tokenizer)."""
    directory = Path(directory)
    if is_ovis25_dir(directory):  # the Ovis2.5 layout has its own module
        from .ovis25 import load_ovis25

        return load_ovis25(directory, dtype, attn_implementation)
    config = read_original_config(directory)
    safetensors_files(directory)  # fail early, and never fall back to pickled weights
    vt_config = config["visual_tokenizer_config"]
    torch_dtype = as_dtype(dtype) or as_dtype(config.get("torch_dtype") or "float32")

    llm_cfg = llm_config_from_dict(config["llm_config"], attn_implementation or config.get("llm_attn_implementation"))
    with quiet_transformers():
        # transformers does the loading (meta init, dtype, tied weights); key_mapping picks each part's keys.
        llm = load_llm(directory, llm_cfg, {r"^llm\.": ""}, torch_dtype)
        backbone = _load_backbone(directory, config, torch_dtype)

    with torch.device("meta"):  # head and table are filled from the checkpoint: skip their random init
        visual_tokenizer, vte = visual_parts(vt_config, backbone, llm.config.hidden_size)
    load_into(directory, visual_tokenizer.head, "visual_tokenizer.head.", torch_dtype, "visual head")
    load_into(directory, vte, "vte.", torch_dtype, "visual embedding table")
    model = OvisModel(visual_tokenizer, vte, llm)
    model.original_config = config  # kept so an export writes the same config fields back

    processor = None
    if has_tokenizer(directory):
        processor = OvisProcessor.from_pretrained(
            directory, chat_format_of(config, directory), model.visual_tokenizer.tokens_per_crop()
        )
    return model, processor
