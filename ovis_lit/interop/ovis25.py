"""Import and export checkpoints in the original Ovis2.5 layout (SigLIP2-NaViT + Qwen3).

The layout: `config.json` (model_type "ovis", top-level `visual_vocab_size`, nested `llm_config` and `vit_config`
with model_type siglip2_navit, `conversation_formatter_class` Qwen3ConversationFormatter), safetensors weights named
`llm.*`, `visual_tokenizer.vit.vision_model.*`, `visual_tokenizer.head.{0,1}.*`, `vte.weight` (a tied
`llm.lm_head.weight` is absent), tokenizer files, a SigLIP `preprocessor_config.json` and `generation_config.json`.
The last 4 rows of the visual table are the indicator rows. Only safetensors are read; no code from the directory
runs.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any

import torch
import transformers

from ..model.build import as_dtype, llm_config_from_dict
from ..model.embedding import VisualEmbedding
from ..model.navit import Siglip2NavitConfig, Siglip2NavitModel
from ..model.ovis import OvisModel
from ..model.visual_tokenizer import VisualTokenizer
from ..processing.conversation import CHAT_FORMATS
from ..processing.image import ImagePreprocessor
from ..processing.native_processor import NativeOvisProcessor
from ..processing.native_resolution import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, NATIVE_N_INDICATORS
from ..processing.processor import PREPROCESSOR_FILE, image_preprocessor_config
from .export_files import save_sharded, write_generation_config, write_json, write_tokenizer
from .local_files import read_json_file, safetensors_files
from .reading import chat_format_of, has_tokenizer, load_into, load_llm, quiet_transformers

VIT_KEY_PREFIX = "visual_tokenizer.vit.vision_model."
OURS_VIT_PREFIX = "visual_tokenizer.backbone."
TRANSFORMERS_VERSION = "4.51.3"  # the version of the original Ovis2.5 code
# vit_config as the original writes it (its non-default fields)
VIT_CONFIG_FIELDS = (
    "attention_dropout", "fullatt_block_indexes", "hidden_act", "hidden_size", "hidden_stride", "image_size",
    "intermediate_size", "layer_norm_eps", "num_attention_heads", "num_channels", "num_hidden_layers",
    "num_patches", "patch_size", "preserve_original_pe", "temporal_patch_size", "use_rope", "window_size",
)
# PretrainedConfig arguments shared by every model: not part of an llm_config the original writes
_COMMON_CONFIG_ARGS = {
    "self", "transformers_version", "architectures", "output_hidden_states", "return_dict", "dtype",
    "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id", "problem_type", "layer_types",
    "rope_parameters", "kwargs",
}


def is_ovis25_config(config: dict[str, Any]) -> bool:
    return config.get("model_type") == "ovis" and "vit_config" in config


def read_ovis25_config(directory: str | Path) -> dict[str, Any]:
    config_path = Path(directory) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: not an Ovis checkpoint directory")
    config = read_json_file(config_path)
    if not is_ovis25_config(config):
        raise ValueError(f"{config_path} is not an Ovis2.5 config (model_type 'ovis' with a vit_config)")
    vit_type = config["vit_config"].get("model_type")
    if vit_type != Siglip2NavitConfig.model_type:
        raise ValueError(f"unsupported Ovis2.5 ViT {vit_type!r}; supported: {Siglip2NavitConfig.model_type!r}")
    return config


def _vit_config(config: dict[str, Any], attn_implementation: str | None) -> Siglip2NavitConfig:
    fields = {k: v for k, v in config["vit_config"].items() if k != "model_type" and not k.startswith("_")}
    vit_cfg = Siglip2NavitConfig(**fields)
    vit_cfg._attn_implementation = attn_implementation or default_vit_attn()
    return vit_cfg


def default_vit_attn() -> str:
    """flash-attn varlen when it is installed and a GPU is there (what the original runs), else sdpa per sequence."""
    from transformers.utils import is_flash_attn_2_available

    return "flash_attention_2" if torch.cuda.is_available() and is_flash_attn_2_available() else "sdpa"


def _skeleton(
    config: dict[str, Any], dtype: torch.dtype, attn_implementation: str | None, llm=None,
    vit_attn_implementation: str | None = None,
) -> OvisModel:
    """Every part on the meta device (the LLM too unless given), except the ViT's rotary tables."""
    vit_cfg = _vit_config(config, vit_attn_implementation)
    with torch.device("meta"):
        if llm is None:
            llm_cfg = llm_config_from_dict(config["llm_config"], attn_implementation)
            llm = transformers.AutoModelForCausalLM.from_config(llm_cfg, dtype=dtype, trust_remote_code=False)
            llm.config._attn_implementation = llm_cfg._attn_implementation
        vit = Siglip2NavitModel(vit_cfg).to(dtype)
        visual_tokenizer = VisualTokenizer(
            vit, vocab_size=config["visual_vocab_size"], n_indicators=NATIVE_N_INDICATORS,
            hidden_stride=vit_cfg.hidden_stride, tokenize_function=config.get("tokenize_function", "softmax"),
        )
        visual_tokenizer.head.to(dtype)
        vte = VisualEmbedding(config["visual_vocab_size"], llm.config.hidden_size, dtype=dtype)
    vit.init_rotary()  # non-persistent buffers: computed, never loaded
    model = OvisModel(visual_tokenizer, vte, llm)
    model.original_config = config
    return model


def ovis25_skeleton(
    directory: str | Path, dtype: str | torch.dtype | None = None, attn_implementation: str | None = None,
    vit_attn_implementation: str | None = None,
) -> OvisModel:
    """The model an Ovis2.5 checkpoint directory describes, on the meta device (no weights read)."""
    config = read_ovis25_config(directory)
    torch_dtype = as_dtype(dtype) or as_dtype(config.get("torch_dtype") or "float32")
    return _skeleton(config, torch_dtype, attn_implementation, vit_attn_implementation=vit_attn_implementation)


def load_ovis25(
    directory: str | Path, dtype: str | torch.dtype | None = None, attn_implementation: str | None = None,
    vit_attn_implementation: str | None = None,
) -> tuple[OvisModel, NativeOvisProcessor | None]:
    """An original Ovis2.5 checkpoint directory -> (OvisModel, NativeOvisProcessor or None without a tokenizer).

    `attn_implementation` is the LLM's; `vit_attn_implementation` the ViT's (default `default_vit_attn()`;
    "eager" computes attention exactly as the CPU stand-in of flash-attn that made the reference fixture)."""
    directory = Path(directory)
    config = read_ovis25_config(directory)
    safetensors_files(directory)  # fail early, and never fall back to pickled weights
    torch_dtype = as_dtype(dtype) or as_dtype(config.get("torch_dtype") or "float32")
    llm_cfg = llm_config_from_dict(config["llm_config"], attn_implementation)
    with quiet_transformers():
        llm = load_llm(directory, llm_cfg, {r"^llm\.": ""}, torch_dtype)
    model = _skeleton(config, torch_dtype, attn_implementation, llm=llm, vit_attn_implementation=vit_attn_implementation)

    load_into(directory, model.visual_tokenizer.backbone, VIT_KEY_PREFIX, torch_dtype, "ViT")
    load_into(directory, model.visual_tokenizer.head, "visual_tokenizer.head.", torch_dtype, "visual head")
    load_into(directory, model.vte, "vte.", torch_dtype, "visual embedding table")

    processor = None
    if has_tokenizer(directory):
        processor = NativeOvisProcessor.from_pretrained(directory, chat_format_of(config, directory), config["vit_config"])
    return model, processor


# --------------------------------------------------------------------------------------------------------- export
def _llm_config_dict(config: transformers.PretrainedConfig) -> dict[str, Any]:
    """llm_config as the original (transformers 4.51) writes it: the model's own arguments, rope as rope_theta /
    rope_scaling, the token ids that are set."""
    d = config.to_dict()
    own = set(inspect.signature(type(config).__init__).parameters) - _COMMON_CONFIG_ARGS
    out = {k: d[k] for k in own if k in d and not k.endswith("_token_id")}
    out.update({k: d[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if d.get(k) is not None})
    rope = dict(d.get("rope_parameters") or {})
    out["rope_theta"] = rope.pop("rope_theta", 10000.0)
    out["rope_scaling"] = None if rope.get("rope_type", "default") == "default" else rope
    out["model_type"] = config.model_type
    return out


def ovis25_config(model: OvisModel, chat_format: str) -> dict[str, Any]:
    """config.json for the original Ovis2.5 loader. An imported model keeps its original fields."""
    vt = model.visual_tokenizer
    vit_cfg = vt.backbone.config
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    source = getattr(model, "original_config", None)
    config = copy.deepcopy(source) if source is not None else {
        "architectures": ["Ovis"],
        "llm_config": _llm_config_dict(model.llm.config),
        "transformers_version": TRANSFORMERS_VERSION,
        "vit_config": {"model_type": Siglip2NavitConfig.model_type},
    }
    config["vit_config"].update({k: getattr(vit_cfg, k) for k in VIT_CONFIG_FIELDS})
    config.update(
        {
            "conversation_formatter_class": CHAT_FORMATS[chat_format].formatter_class,
            "hidden_size": model.llm.config.hidden_size,
            "model_type": "ovis",
            "torch_dtype": dtype,
            "visual_vocab_size": vt.vocab_size,
        }
    )
    return config


def ovis25_state_dict(model: OvisModel, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Our parameter names -> the original's (ViT under `vit.vision_model.`, a tied lm_head left out)."""
    out = {}
    tied = model.llm.config.tie_word_embeddings
    for name, tensor in (model.state_dict() if state is None else state).items():
        if tied and name == "llm.lm_head.weight":
            continue
        if name.startswith(OURS_VIT_PREFIX):
            name = VIT_KEY_PREFIX + name[len(OURS_VIT_PREFIX):]
        out[name] = tensor.detach().contiguous()
    return out


def with_pixel_range(config: dict[str, Any], min_pixels: int, max_pixels: int) -> dict[str, Any]:
    """preprocessor_config.json with the processor's single-image pixel range, where it is not the original code's
    default (448^2 .. 1344x1792, which that code passes at inference) or the file already records one. A model
    trained at other sizes (the tiny ones: 16^2 .. 64^2) would otherwise be scored at 448^2 and more after a
    round-trip through its export; the original code ignores the two keys (it takes the range as arguments)."""
    if "min_pixels" in config or "max_pixels" in config or (min_pixels, max_pixels) != (DEFAULT_MIN_PIXELS,
                                                                                        DEFAULT_MAX_PIXELS):
        config = {**config, "min_pixels": int(min_pixels), "max_pixels": int(max_pixels)}
    return config


def export_ovis25(
    model: OvisModel,
    processor: NativeOvisProcessor,
    directory: str | Path,
    max_shard_bytes: int = 5 * 1024**3,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write `model` and `processor` in the original Ovis2.5 layout. `state`: the full state dict of a model
    whose parameters are FSDP shards."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = ovis25_config(model, processor.chat_format)
    write_json(directory / "config.json", config)
    save_sharded(ovis25_state_dict(model, state), directory, max_shard_bytes)
    write_generation_config(directory, config["llm_config"], config["transformers_version"])
    pp = processor.image_preprocessor
    source = getattr(processor, "preprocessor_config", None)
    if source is not None:
        config = dict(source)
    else:  # a SigLIP processor; its size is not used at native resolution, the ViT's image_size by convention
        config = image_preprocessor_config(
            ImagePreprocessor(side=model.visual_tokenizer.backbone.config.image_size, image_mean=pp.image_mean,
                              image_std=pp.image_std, resample=pp.resample),
            "SiglipImageProcessor",
        )
    write_json(directory / PREPROCESSOR_FILE, with_pixel_range(config, pp.min_pixels, pp.max_pixels))
    write_tokenizer(processor, directory)
    return directory
