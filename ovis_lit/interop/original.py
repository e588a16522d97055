"""Import and export checkpoints in the original Ovis Hugging Face layout (Ovis 1.6 and Ovis2 / v2.0).

The layout: `config.json` (model_type "ovis", nested `llm_config` and `visual_tokenizer_config`), safetensors
weights (one file or shards with an index) named `llm.*`, `visual_tokenizer.backbone.*`,
`visual_tokenizer.head.{0,1}.*`, `vte.weight` (a tied `llm.lm_head.weight` is absent), tokenizer files,
`preprocessor_config.json` and `generation_config.json`. The backbone's names depend on the visual tokenizer:
SigLIP and CLIP (1.6) are transformers' own under `vision_model.`; AIMv2 (Ovis2) is the original repository's own
module, converted by `aimv2.py`. Only safetensors are read; no code from the directory ever runs.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file

from ..model import packed_attention
from ..model.build import as_dtype, llm_config_from_dict
from ..model.embedding import VisualEmbedding
from ..model.ovis import OvisModel
from ..model.vision import FAMILIES
from ..model.visual_tokenizer import VisualTokenizer
from ..processing.conversation import CHAT_FORMATS, FORMAT_BY_CLASS
from ..processing.processor import OvisProcessor, save_image_preprocessor
from . import aimv2
from .local_files import INDEX_FILE, WEIGHTS_FILE, read_json_file, safetensors_files
from .legacy_config import LEGACY_COMMON_FIELDS, LEGACY_MODEL_FIELDS, LEGACY_TRANSFORMERS_VERSION

log = logging.getLogger(__name__)

N_INDICATORS = 5  # Ovis 1.6 / 2.0
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
)

# The original's conversation formatters accept only these tokenizer classes (checked by class name): a generic
# PreTrainedTokenizerFast passes the Llama 3 formatter alone.
ORIGINAL_TOKENIZER_CLASS = {
    "GemmaConversationFormatter": "GemmaTokenizerFast",
    "QwenConversationFormatter": "Qwen2TokenizerFast",
    "Qwen3ConversationFormatter": "Qwen2TokenizerFast",
    "Llama3ConversationFormatter": "PreTrainedTokenizerFast",
}

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


# --------------------------------------------------------------------------------------------------------- import
def _weight_files(directory: Path) -> list[Path]:
    return safetensors_files(directory)  # inside the directory, headers checked, never pickled formats


def _load_tensors(directory: Path, prefix: str) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in _weight_files(directory):
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                if key.startswith(prefix):
                    tensors[key[len(prefix) :]] = f.get_tensor(key)
    return tensors


def load_llm(
    directory: Path, llm_cfg, key_mapping: dict[str, str], dtype: torch.dtype, prefix: str = "llm."
) -> torch.nn.Module:
    """The LLM's weights from a checkpoint directory, through transformers' loading (meta init, dtype, tied weights);
    `key_mapping` picks the LLM's keys. transformers fills missing or mis-shaped weights with a random init and only
    logs it: here that is an error naming the weights."""
    llm, info = transformers.AutoModelForCausalLM.from_pretrained(
        directory, config=llm_cfg, key_mapping=key_mapping, dtype=dtype, local_files_only=True,
        use_safetensors=True, trust_remote_code=False, output_loading_info=True, ignore_mismatched_sizes=True,
    )
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ValueError(f"checkpoint {directory} lacks weights: {[prefix + k for k in missing[:5]]}")
    mismatched = sorted(info.get("mismatched_keys") or [])
    if mismatched:
        raise ValueError(f"checkpoint {directory} has weights of the wrong shape: "
                         + "; ".join(f"{prefix}{k}: {tuple(a)} for {tuple(b)}" for k, a, b in mismatched[:5]))
    return llm


def _quiet_transformers():
    """transformers reports every key of the other components as unexpected: true, and noise here."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return verbosity


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
        tensors = layout.state_to_ours(_load_tensors(directory, OURS_BACKBONE_PREFIX))
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


def _visual_parts(vt_config: dict[str, Any], backbone, llm_hidden: int) -> tuple[VisualTokenizer, VisualEmbedding]:
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
        visual_tokenizer, vte = _visual_parts(vt_config, backbone, llm.config.hidden_size)
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
    _weight_files(directory)  # fail early, and never fall back to pickled weights
    vt_config = config["visual_tokenizer_config"]
    torch_dtype = as_dtype(dtype) or as_dtype(config.get("torch_dtype") or "float32")

    llm_cfg = llm_config_from_dict(config["llm_config"], attn_implementation or config.get("llm_attn_implementation"))
    verbosity = _quiet_transformers()
    try:
        # transformers does the loading (meta init, dtype, tied weights); key_mapping picks each part's keys.
        llm = load_llm(directory, llm_cfg, {r"^llm\.": ""}, torch_dtype)
        backbone = _load_backbone(directory, config, torch_dtype)
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()
    llm.config._attn_implementation = llm_cfg._attn_implementation

    with torch.device("meta"):  # head and table are filled from the checkpoint: skip their random init
        visual_tokenizer, vte = _visual_parts(vt_config, backbone, llm.config.hidden_size)
    head = _load_tensors(directory, "visual_tokenizer.head.")
    table = _load_tensors(directory, "vte.")
    missing = {"0.weight", "1.weight", "1.bias"} - set(head) or ({"weight"} - set(table))
    if missing:
        raise ValueError(f"checkpoint {directory} lacks visual head / vte weights: {sorted(missing)}")
    visual_tokenizer.head.load_state_dict(head, assign=True)
    vte.load_state_dict(table, assign=True)
    visual_tokenizer.head.to(torch_dtype)
    vte.to(torch_dtype)
    model = OvisModel(visual_tokenizer, vte, llm)
    model.original_config = config  # kept so an export writes the same config fields back

    processor = None
    if has_tokenizer(directory):
        processor = OvisProcessor.from_pretrained(
            directory, chat_format_of(config, directory), model.visual_tokenizer.tokens_per_crop()
        )
    return model, processor


def is_ovis25_dir(directory: Path) -> bool:
    """An Ovis2.5 checkpoint (its config has `vit_config`), which `interop.ovis25` reads."""
    config_path = Path(directory) / "config.json"
    return config_path.is_file() and "vit_config" in read_json_file(config_path)


def has_tokenizer(directory: Path) -> bool:
    return any((Path(directory) / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))


def chat_format_of(config: dict[str, Any], directory: Path) -> str:
    """The chat format named by an original config's `conversation_formatter_class`."""
    formatter_class = config.get("conversation_formatter_class")
    if formatter_class not in FORMAT_BY_CLASS:
        raise ValueError(f"{directory}: unknown conversation_formatter_class {formatter_class!r}")
    return FORMAT_BY_CLASS[formatter_class].name


# --------------------------------------------------------------------------------------------------------- export
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


def layout_of(model: OvisModel) -> BackboneLayout:
    backbone_type = model.visual_tokenizer.backbone.config.model_type
    if backbone_type not in LAYOUT_BY_FAMILY:
        raise ValueError(f"the original Ovis layout has no visual tokenizer for a {backbone_type!r} backbone")
    return LAYOUT_BY_FAMILY[backbone_type]


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
    if model.visual_tokenizer.native_resolution:  # Ovis2.5: its own layout
        from .ovis25 import export_ovis25

        return export_ovis25(model, processor, directory, max_shard_bytes, state)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = original_config(model, processor.chat_format, multimodal_max_length)
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    _save_sharded(original_state_dict(model, state), directory, max_shard_bytes)
    # transformers 4.4x writes only the fields that differ from their defaults (None for these three)
    generation = {
        k: config["llm_config"][k]
        for k in ("bos_token_id", "eos_token_id", "pad_token_id")
        if config["llm_config"].get(k) is not None
    }
    if config["llm_config"].get("cache_implementation"):
        generation["cache_implementation"] = config["llm_config"]["cache_implementation"]
    generation.update({"_from_model_config": True, "transformers_version": config["transformers_version"]})
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=2, sort_keys=True) + "\n")
    image_processor_class = LAYOUTS[config["visual_tokenizer_config"]["model_type"]].image_processor
    save_image_preprocessor(processor.image_preprocessor, directory, image_processor_class)
    _write_tokenizer(processor, directory)
    return directory


def _write_tokenizer(processor: OvisProcessor, directory: Path) -> None:
    """Tokenizer files the original (transformers 4.4x) loader reads.

    A tokenizer read from a checkpoint directory is copied file for file. A new one is saved by transformers 5 and
    its config translated: 4.x knows no "TokenizersBackend" class, the original's formatter refuses a generic
    class (ORIGINAL_TOKENIZER_CLASS), and 4.x expects `additional_special_tokens` and a special_tokens_map.json.
    """
    source = processor.tokenizer_source
    if source is not None and source.resolve() != directory.resolve():
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, directory / name)
        return
    tokenizer = processor.tokenizer
    tokenizer.save_pretrained(directory)
    path = directory / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    for key in ("backend", "is_local", "local_files_only"):
        cfg.pop(key, None)
    extra = cfg.pop("extra_special_tokens", None)
    if extra:
        cfg["additional_special_tokens"] = list(extra)
    if cfg.get("tokenizer_class") in (None, "TokenizersBackend", "PreTrainedTokenizerFast"):
        # 4.x's fast class of that name reads the same tokenizer.json
        formatter = CHAT_FORMATS[processor.chat_format].formatter_class
        cfg["tokenizer_class"] = ORIGINAL_TOKENIZER_CLASS.get(formatter, "PreTrainedTokenizerFast")
    cfg.setdefault("add_bos_token", False)
    cfg.setdefault("add_eos_token", False)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    special = dict(tokenizer.special_tokens_map)
    if extra:
        special["additional_special_tokens"] = list(extra)
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2, sort_keys=True) + "\n")


def _save_sharded(state: dict[str, torch.Tensor], directory: Path, max_shard_bytes: int) -> None:
    """`model.safetensors`, or shards of at most `max_shard_bytes` (a larger tensor alone) and their index, as
    transformers' save_pretrained writes them (huggingface_hub's splitter, names and index)."""
    from huggingface_hub import split_torch_state_dict_into_shards

    for old in list(directory.glob("model*.safetensors")) + [directory / INDEX_FILE]:
        old.unlink(missing_ok=True)
    state = {name: state[name] for name in sorted(state)}  # shards in name order, as before
    split = split_torch_state_dict_into_shards(state, filename_pattern=WEIGHTS_FILE.replace(".safetensors",
                                                                                              "{suffix}.safetensors"),
                                               max_shard_size=max_shard_bytes)
    for filename, names in split.filename_to_tensors.items():
        save_file({name: state[name] for name in names}, directory / filename, metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (directory / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
