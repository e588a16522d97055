"""What every importer (original Ovis 1.6/2, transformers' -hf Ovis2, Ovis2.5) reads from a checkpoint directory the
same way: safetensors tensors by prefix, the LLM through transformers, the visual head and table into modules built
on the meta device, the tokenizer and chat format. Only safetensors and JSON are read; no code from the directory
ever runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import safe_open

from ..processing.conversation import FORMAT_BY_CLASS
from .local_files import read_json_file, safetensors_files


def load_tensors(directory: Path, prefix: str, names: set[str] | None = None) -> dict[str, torch.Tensor]:
    """The tensors named `prefix + name` in the directory's safetensors files, keyed by `name` (only `names`, when
    given). Files are checked by `safetensors_files` (inside the directory, never pickled formats)."""
    tensors = {}
    for path in safetensors_files(directory):
        with safe_open(path, framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
                name = key[len(prefix) :]
                if key.startswith(prefix) and (names is None or name in names):
                    tensors[name] = f.get_tensor(key)
    return tensors


def load_into(
    directory: Path, module: torch.nn.Module, prefix: str, dtype: torch.dtype, what: str,
    rename: dict[str, str] | None = None,
) -> None:
    """Fill `module` (built on the meta device, so no random init was spent on it) with the checkpoint's tensors
    under `prefix`, in `dtype`. `rename`: the checkpoint's names (below `prefix`) -> the module's, for a layout
    that names them otherwise; only those are read. The names must be exactly the module's."""
    tensors = load_tensors(directory, prefix, None if rename is None else set(rename))
    state = {(name if rename is None else rename[name]): t.to(dtype) for name, t in tensors.items()}
    want = set(module.state_dict())
    if set(state) != want:
        raise ValueError(
            f"checkpoint {directory}: the {what} weights differ from the layout's; missing {sorted(want - set(state))}, "
            f"unexpected {sorted(set(state) - want)}"
        )
    module.load_state_dict(state, assign=True)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers reports every key of the other components as unexpected: true, and noise here."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()


def load_llm(
    directory: Path, llm_cfg, key_mapping: dict[str, str], dtype: torch.dtype, prefix: str = "llm."
) -> torch.nn.Module:
    """The LLM's weights from a checkpoint directory, through transformers' loading (meta init, dtype, tied weights);
    `key_mapping` picks the LLM's keys. transformers fills missing or mis-shaped weights with a random init and only
    logs it: here that is an error naming the weights. The loaded LLM keeps `llm_cfg`'s attention implementation."""
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
    llm.config._attn_implementation = llm_cfg._attn_implementation
    return llm


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
