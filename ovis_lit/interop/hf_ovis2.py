"""Import and export transformers' own Ovis2 layout (`Ovis2ForConditionalGeneration`, the `-hf` checkpoints).

The layout: `config.json` with `model_type: ovis2`, a `vision_config` (`ovis2_vision`: AIMv2 shapes plus the visual
head's vocab_size, hidden_stride, tokenize_function, num_visual_indicator_tokens) and a `text_config` (the LLM), and
safetensors weights:
  model.vision_tower.transformer.embeddings.{patch_embedding,rms_norm,position_embedding}.*
  model.vision_tower.transformer.encoder.layers.N.{rms_norm1,rms_norm2,attention.{q,k,v,out}_proj,ffn.*}.*
  model.vision_tower.transformer.rms_norm.weight          the final vision norm (AIMv2's post_trunk_norm)
  model.vision_tower.head_linear.weight, model.vision_tower.head_norm.{weight,bias}
  model.visual_embeddings_table.weight
  model.language_model.*  and  lm_head.weight (absent when tied)

transformers' port applies the final vision norm to the features before the visual head. The original Ovis2 code
(and vLLM's Ovis2) does not: features are the last block's output. ovis-lit follows the original for this layout
too, so an -hf checkpoint imported here computes what the original checkpoint it was converted from computed
(the norm's weight is kept, unused, and written back on export).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors.torch import save_file

from ..model.build import as_dtype, llm_config_from_dict
from ..model.ovis import OvisModel
from ..model.vision import FAMILIES
from ..processing.processor import PREPROCESSOR_FILE, OvisProcessor
from .export_files import write_json, write_tokenizer
from .local_files import read_json_file, safetensors_files
from .original_layout import OURS_BACKBONE_PREFIX, visual_parts
from .reading import has_tokenizer, load_into, load_llm, load_tensors, quiet_transformers

MODEL_TYPE = "ovis2"
VISION = "model.vision_tower."
BACKBONE = VISION + "transformer."
TABLE = "model.visual_embeddings_table.weight"
LLM = "model.language_model."
# the -hf backbone's names -> Aimv2VisionModel's (everything else is the same below `transformer.`)
_BACKBONE_RENAMES = {"embeddings.patch_embedding.": "embeddings.patch_embed."}
_HEAD = {"head_linear.weight": "0.weight", "head_norm.weight": "1.weight", "head_norm.bias": "1.bias"}
_VISION_FIELDS = (  # Ovis2VisionConfig fields that are AIMv2's
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels", "image_size",
    "patch_size", "rms_norm_eps", "attention_dropout", "qkv_bias", "mlp_bias", "hidden_act",
)


def read_hf_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a checkpoint directory")
    config = read_json_file(path)
    if config.get("model_type") != MODEL_TYPE:
        raise ValueError(f"{path} has model_type {config.get('model_type')!r}, expected {MODEL_TYPE!r}")
    vision = config.get("vision_config") or {}
    if vision.get("num_visual_indicator_tokens", 5) != 5:
        raise ValueError(f"{path}: {vision['num_visual_indicator_tokens']} visual indicator tokens; Ovis2 has 5")
    return config


def backbone_config(vision: dict[str, Any]) -> transformers.Aimv2VisionConfig:
    fields = {k: vision[k] for k in _VISION_FIELDS if k in vision}
    return transformers.Aimv2VisionConfig(**fields, is_native=False, use_head=False)


def _backbone_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in tensors.items():
        for old, new in _BACKBONE_RENAMES.items():
            if name.startswith(old):
                name = new + name[len(old) :]
        out[name] = tensor
    return out


def load_hf_ovis2(
    directory: str | Path, dtype: str | torch.dtype | None = None, attn_implementation: str | None = None
) -> tuple[OvisModel, OvisProcessor | None]:
    """An `Ovis2ForConditionalGeneration` checkpoint directory -> (OvisModel, OvisProcessor or None when it has no
    tokenizer). Features are taken before the final vision norm, as the original Ovis2 (see the module doc)."""
    directory = Path(directory)
    config = read_hf_config(directory)
    safetensors_files(directory)  # safetensors only
    vision, text = config["vision_config"], dict(config["text_config"])
    torch_dtype = as_dtype(dtype) or as_dtype(str(text.get("dtype") or config.get("dtype") or "float32"))
    text.setdefault("tie_word_embeddings", config.get("tie_word_embeddings", True))
    llm_cfg = llm_config_from_dict(text, attn_implementation)
    family = FAMILIES["aimv2_vision_model"]

    with quiet_transformers():
        llm = load_llm(directory, llm_cfg, {r"^model\.language_model\.": "model."}, torch_dtype, prefix="")
        backbone, info = family.model_class.from_pretrained(
            None, config=backbone_config(vision), state_dict=_backbone_state(load_tensors(directory, BACKBONE)),
            dtype=torch_dtype, output_loading_info=True, trust_remote_code=False,
        )
    if info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]:
        raise ValueError(f"checkpoint {directory}: vision weights do not fit AIMv2: {info}")

    vt_config = {k: vision[k] for k in ("vocab_size", "hidden_stride", "tokenize_function") if k in vision}
    with torch.device("meta"):
        visual_tokenizer, vte = visual_parts(vt_config, backbone, llm.config.hidden_size)
    load_into(directory, visual_tokenizer.head, VISION, torch_dtype, "visual head", rename=_HEAD)
    load_into(directory, vte, TABLE.removesuffix("weight"), torch_dtype, "visual embedding table")
    model = OvisModel(visual_tokenizer, vte, llm)

    processor = None
    if has_tokenizer(directory):
        processor = OvisProcessor.from_pretrained(directory, "qwen", model.visual_tokenizer.tokens_per_crop())
    return model, processor


# --------------------------------------------------------------------------------------------------------- export
def hf_state_dict(model: OvisModel) -> dict[str, torch.Tensor]:
    """Our parameter names -> `Ovis2ForConditionalGeneration`'s (a tied lm_head left out)."""
    inverse = {v: k for k, v in _BACKBONE_RENAMES.items()}
    head = {v: k for k, v in _HEAD.items()}
    tied = model.llm.config.tie_word_embeddings
    out = {}
    for name, tensor in model.state_dict().items():
        if name.startswith(OURS_BACKBONE_PREFIX):
            name = name.removeprefix(OURS_BACKBONE_PREFIX)
            if name.startswith("head."):
                raise ValueError("the -hf layout has no place for AIMv2's pooling head: build with use_head=False")
            for ours, theirs in inverse.items():
                if name.startswith(ours):
                    name = theirs + name[len(ours) :]
            name = BACKBONE + name
        elif name.startswith("visual_tokenizer.head."):
            name = VISION + head[name.removeprefix("visual_tokenizer.head.")]
        elif name == "vte.weight":
            name = TABLE
        elif name.startswith("llm.model."):
            name = LLM + name.removeprefix("llm.model.")
        elif name == "llm.lm_head.weight":
            if tied:
                continue
            name = "lm_head.weight"
        else:
            raise ValueError(f"parameter {name!r} has no place in the Ovis2 -hf layout")
        out[name] = tensor.detach().contiguous()
    return out


def hf_config(model: OvisModel, image_token_id: int, indicator_token_ids: list[int]) -> transformers.Ovis2Config:
    """`Ovis2Config` for `model`. The -hf layout writes images as ids of the text vocabulary (one `image_token_id`
    per visual token, 5 indicator ids); they must exist in the tokenizer that goes with it."""
    backbone = model.visual_tokenizer.backbone.config
    if backbone.model_type != "aimv2_vision_model":
        raise ValueError(f"the Ovis2 -hf layout holds an AIMv2 backbone, not {backbone.model_type!r}")
    vt = model.visual_tokenizer
    if vt.n_indicators != 5 or len(indicator_token_ids) != 5:
        raise ValueError("the Ovis2 -hf layout has exactly 5 visual indicator tokens")
    vision = {k: getattr(backbone, k) for k in _VISION_FIELDS}
    vision.update(vocab_size=vt.vocab_size, hidden_stride=vt.hidden_stride, tokenize_function=vt.tokenize_function,
                  num_visual_indicator_tokens=5)
    text = model.llm.config
    return transformers.Ovis2Config(
        vision_config=vision, text_config=text.to_dict(), image_token_id=image_token_id,
        visual_indicator_token_ids=list(indicator_token_ids), vocab_size=text.vocab_size,
        hidden_size=text.hidden_size, tie_word_embeddings=text.tie_word_embeddings,
    )


def export_hf_ovis2(
    model: OvisModel,
    directory: str | Path,
    image_token_id: int,
    indicator_token_ids: list[int],
    processor: OvisProcessor | None = None,
) -> Path:
    """Write `model` in transformers' Ovis2 layout (loads with `Ovis2ForConditionalGeneration.from_pretrained`).
    Beware: transformers' port applies the final vision norm that the original Ovis2 skips, so it computes slightly
    different visual tokens than this model (see the module doc). With `processor`, its tokenizer files and an
    `Ovis2ImageProcessor` preprocessor_config.json (crop side, mean/std, max_partition as max_patches) are written
    too; ovis-lit itself preprocesses as the original code does, whatever transformers' processor does."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = hf_config(model, image_token_id, indicator_token_ids)
    config.dtype = next(model.parameters()).dtype
    config.save_pretrained(directory)
    save_file(hf_state_dict(model), directory / "model.safetensors", metadata={"format": "pt"})
    if processor is not None:
        write_tokenizer(processor, directory)
        _write_image_processor(processor, directory)
    return directory


def _write_image_processor(processor: OvisProcessor, directory: Path) -> None:
    pp = processor.image_preprocessor
    config = {
        "image_processor_type": "Ovis2ImageProcessor",
        "size": {"height": pp.side, "width": pp.side},
        "crop_to_patches": True,
        "min_patches": 1,
        "max_patches": processor.max_partition,
        "use_covering_area_grid": True,
        "do_convert_rgb": True,
        "do_resize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(pp.image_mean),
        "image_std": list(pp.image_std),
        "resample": int(pp.resample),
    }
    write_json(directory / PREPROCESSOR_FILE, config)
