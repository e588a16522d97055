"""Weights in and out of training: `init_from` (weights only, a new run) as opposed to resuming (everything)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..model.ovis import OvisModel

log = logging.getLogger(__name__)

MODEL_PREFIX = "model."  # OvisLitModule keeps the OvisModel at `.model`


def read_lightning_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint file, memory-mapped (no pickle code runs: weights_only; a refusal names the file)."""
    from ..interop.safe_dcp import read_torch_file

    checkpoint = read_torch_file(path, mmap=True)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ValueError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return checkpoint


def check_resumable(path: str | Path) -> None:
    """Refuse, naming the file, a `ckpt_path` that would run code or cannot be read, before any training starts
    (Lightning's own refusal of a crafted pickle does not say which file it was)."""
    path = Path(path)
    if path.is_dir():  # trainer=fsdp's sharded checkpoint: the shard index is checked, meta.pt read weights-only
        from ..interop.consolidate import read_sharded_meta

        read_sharded_meta(path)
    else:
        read_lightning_checkpoint(path)


def check_resume_strategy(path: str | Path, strategy: Any) -> None:
    """A sharded checkpoint resumes only under FSDP2Strategy (trainer=fsdp): Lightning's other strategies read
    one with torch.distributed.checkpoint's own reader, which unpickles it."""
    from .strategies import FSDP2Strategy

    if Path(path).is_dir() and not isinstance(strategy, FSDP2Strategy):
        raise ValueError(f"{path} is a sharded checkpoint: resume it with trainer=fsdp (ovis-lit's FSDP2Strategy "
                         f"reads it without running code), not {type(strategy).__name__}")


def lightning_model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The OvisModel state dict inside a loaded Lightning checkpoint."""
    return {k[len(MODEL_PREFIX) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(MODEL_PREFIX)}


def load_model_weights(model: OvisModel, source: str | Path) -> None:
    """Load weights from a Lightning checkpoint (.ckpt), an Ovis-layout directory (an export or an original
    checkpoint) or an ovis-lit layout directory (interop/ovis_lit_layout.py). Every parameter must be there with the same shape: a silent partial load is a wrong model."""
    source = Path(source)
    from ..interop.consolidate import is_sharded_checkpoint, load_sharded_weights

    if is_sharded_checkpoint(source):  # an FSDP run's checkpoint (e.g. the previous stage of a chain)
        load_sharded_weights(model, source)
        return
    if source.is_dir():
        from ..interop.ovis_lit_layout import is_ovis_lit_dir, read_ovis_lit_config
        from ..interop.reading import load_tensors

        if is_ovis_lit_dir(source):  # ovis-lit's own layout (any connector arm): our names already
            read_ovis_lit_config(source)
            state = load_tensors(source, "")
        else:
            from ..interop.original import load_original

            state = load_original(source)[0].state_dict()
    elif source.is_file():
        state = lightning_model_state(read_lightning_checkpoint(source))
    else:
        raise FileNotFoundError(f"init_from: {source} is neither a checkpoint file nor a directory")
    load_model_state(model, state, source)


def load_model_state(model: OvisModel, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Every parameter must be in `state` with the same shape (a tied lm_head may be absent)."""
    tied = getattr(model.llm.config, "tie_word_embeddings", False)
    if tied:
        state.pop("llm.lm_head.weight", None)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches: torch's message lists them, but not where they came from
        raise ValueError(f"{source} does not fit the model: {e}") from None
    missing = [k for k in missing if not (tied and k == "llm.lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"{source} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
