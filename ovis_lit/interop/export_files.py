"""Files every exporter (original Ovis 1.6/2, -hf Ovis2, Ovis2.5) writes the same way: JSON, sharded safetensors,
generation_config.json and the tokenizer files the original (transformers 4.4x/4.51) loaders read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import save_file

from ..processing.conversation import CHAT_FORMATS
from .local_files import INDEX_FILE, WEIGHTS_FILE

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


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Sorted and indented, as transformers writes its JSON files."""
    Path(path).write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_generation_config(
    directory: Path, llm_config: dict[str, Any], transformers_version: str, also: tuple[str, ...] = ()
) -> None:
    """generation_config.json as transformers 4.x derives it from a model config: only the fields set (the token ids,
    and the `also` fields, which default to None there)."""
    generation = {
        k: llm_config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id", *also) if llm_config.get(k) is not None
    }
    generation.update({"_from_model_config": True, "transformers_version": transformers_version})
    write_json(directory / "generation_config.json", generation)


def save_sharded(state: dict[str, torch.Tensor], directory: Path, max_shard_bytes: int) -> None:
    """`model.safetensors`, or shards of at most `max_shard_bytes` (a larger tensor alone) and their index, as
    transformers' save_pretrained writes them (huggingface_hub's splitter, names and index)."""
    for old in list(directory.glob("model*.safetensors")) + [directory / INDEX_FILE]:
        old.unlink(missing_ok=True)
    state = {name: state[name] for name in sorted(state)}  # shards in name order, as before
    pattern = WEIGHTS_FILE.replace(".safetensors", "{suffix}.safetensors")
    split = split_torch_state_dict_into_shards(state, filename_pattern=pattern, max_shard_size=max_shard_bytes)
    for filename, names in split.filename_to_tensors.items():
        save_file({name: state[name] for name in names}, directory / filename, metadata={"format": "pt"})
    if split.is_sharded:
        write_json(directory / INDEX_FILE, {"metadata": split.metadata, "weight_map": split.tensor_to_filename})


def write_tokenizer(processor, directory: Path) -> None:
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
    write_json(path, cfg)
    special = dict(tokenizer.special_tokens_map)
    if extra:
        special["additional_special_tokens"] = list(extra)
    write_json(directory / "special_tokens_map.json", special)
