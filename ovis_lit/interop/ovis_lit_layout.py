"""ovis-lit's own checkpoint layout: any connector arm (model/connector.py), the MLP ones included, which the
original Ovis layout cannot hold.

A directory with `ovis_lit_model.json` (the model description `ModelSource.to_dict()` builds from, the chat format
and the visual tokens per crop), safetensors weights under ovis-lit's own parameter names (a tied lm_head left
out), `preprocessor_config.json` and the tokenizer files. Reading builds the model from the description and loads
every weight (all must be there, with their shapes); only JSON and safetensors are read, nothing runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..model.build import as_dtype
from ..model.ovis import OvisModel
from ..model.source import ModelSource
from ..processing.processor import OvisProcessor, save_image_preprocessor
from ..training.checkpoints import load_model_state
from .export_files import save_sharded, write_json, write_tokenizer
from .local_files import read_json_file
from .reading import has_tokenizer, load_tensors

MODEL_FILE = "ovis_lit_model.json"
FORMAT = "ovis-lit"
FORMAT_VERSION = 1


def is_ovis_lit_dir(directory: str | Path) -> bool:
    return (Path(directory) / MODEL_FILE).is_file()


def export_ovis_lit(
    model: OvisModel,
    source: ModelSource | dict[str, Any],
    processor: OvisProcessor,
    directory: str | Path,
    max_shard_bytes: int = 5 * 1024**3,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write `model` (built from `source`) and `processor`. `state`: the full state dict of a sharded model."""
    if model.visual_tokenizer.native_resolution:
        raise ValueError("ovis-lit's own layout holds crop-based models (Ovis 1.6/2 style); a native-resolution "
                         "model exports to the Ovis2.5 layout")
    source = source if isinstance(source, ModelSource) else ModelSource.from_dict(source)
    if source.pretrained:
        raise ValueError("a model built from an original Ovis directory exports to the original layout")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = dict(model.state_dict() if state is None else state)
    if model.llm.config.tie_word_embeddings:
        state.pop("llm.lm_head.weight", None)  # the same tensor as the input embeddings (safetensors refuses shares)
    save_sharded({k: v.detach().contiguous() for k, v in state.items()}, directory, max_shard_bytes)
    write_json(directory / MODEL_FILE, {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": source.to_dict(),
        "chat_format": processor.chat_format,
        "tokens_per_crop": model.visual_tokenizer.tokens_per_crop(),
    })
    save_image_preprocessor(processor.image_preprocessor, directory, "SiglipImageProcessor")
    write_tokenizer(processor, directory)
    return directory


def read_ovis_lit_config(directory: str | Path) -> dict[str, Any]:
    config = read_json_file(Path(directory) / MODEL_FILE)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{directory}/{MODEL_FILE} is not an ovis-lit model description")
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory}: ovis-lit layout version {config.get('format_version')!r}, this code reads "
                         f"{FORMAT_VERSION}")
    if not isinstance(config.get("model"), dict):  # bad file content: a ValueError, as above
        raise ValueError(f"{directory}/{MODEL_FILE} has no model description")  # noqa: TRY004
    return config


def load_ovis_lit(
    directory: str | Path, dtype: str | torch.dtype | None = None
) -> tuple[OvisModel, OvisProcessor | None]:
    """An ovis-lit layout directory -> (model, processor or None when it has no tokenizer files)."""
    directory = Path(directory)
    config = read_ovis_lit_config(directory)
    source = ModelSource.from_dict(config["model"])
    model = source.build()
    load_model_state(model, load_tensors(directory, ""), directory)
    if dtype is not None:
        model.to(as_dtype(dtype))
    processor = None
    if has_tokenizer(directory):
        processor = OvisProcessor.from_pretrained(directory, config["chat_format"], int(config["tokens_per_crop"]))
    return model, processor
