"""Sharded (FSDP2 / torch.distributed.checkpoint) Lightning checkpoints -> one model in the original Ovis layout.

A checkpoint written by `trainer=fsdp` is a directory: one `.distcp` file per rank plus Lightning's `meta.pt`
(hyper-parameters, loop state). Nothing in it runs code: `meta.pt` is read weights-only and the shards through
`safe_dcp` (DCP's own reader unpickles its index). Only the model weights are read (not the optimiser state), into
a model built from the checkpoint's own hyper-parameters, in one process, without a process group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..model.ovis import OvisModel
from ..processing.processor import OvisProcessor
from ..training.checkpoints import MODEL_PREFIX
from .safe_dcp import dcp_load, read_dcp_metadata, read_torch_file

META_FILE = "meta.pt"  # Lightning's non-tensor part of a distributed checkpoint


def is_sharded_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / META_FILE).is_file() and any(path.glob("*.distcp"))


def read_sharded_meta(path: str | Path) -> dict[str, Any]:
    """The non-tensor part (hyper-parameters, global step, ...) of a sharded Lightning checkpoint directory, after
    checking its shard index (so a crafted checkpoint is refused before anything is built from it)."""
    path = Path(path)
    if not is_sharded_checkpoint(path):
        raise ValueError(f"{path} is not a sharded Lightning checkpoint (a directory with {META_FILE} and .distcp files)")
    read_dcp_metadata(path)
    meta = read_torch_file(path / META_FILE)
    if not isinstance(meta, dict):
        raise ValueError(f"{path / META_FILE}: holds a {type(meta).__name__}, not Lightning's checkpoint metadata")
    return meta


def load_sharded_model(path: str | Path, meta: dict[str, Any] | None = None) -> OvisModel:
    """The OvisModel stored in a sharded Lightning checkpoint directory, consolidated on the CPU. `meta`: its
    `read_sharded_meta`, when the caller has read it already."""
    from ..model.source import build_model

    meta = read_sharded_meta(path) if meta is None else meta
    hparams = meta.get("hyper_parameters")
    if not isinstance(hparams, dict) or not isinstance(hparams.get("model"), dict):
        raise ValueError(f"{Path(path) / META_FILE} has no hyper_parameters['model']: not written by train.py")
    model = build_model(hparams["model"])
    load_sharded_weights(model, path)
    return model


def load_sharded_weights(model: OvisModel, path: str | Path) -> None:
    """Fill `model` (full, unsharded) with the weights of a sharded checkpoint, in one process."""
    tied = getattr(model.llm.config, "tie_word_embeddings", False)
    state = {MODEL_PREFIX + k: v for k, v in model.state_dict().items() if not (tied and k == "llm.lm_head.weight")}
    dcp_load({"state_dict": state}, path)  # fills the tensors in place


def export_sharded_checkpoint(
    checkpoint: str | Path, processor: OvisProcessor, out: str | Path, multimodal_max_length: int = 8192
) -> Path:
    from .original_export import export_original

    from ..model.lora import has_adapters, merge_adapters

    model = load_sharded_model(checkpoint)
    if has_adapters(model):  # a LoRA run's checkpoint: the export is the full model, adapters folded in
        merge_adapters(model)
    return export_original(model, processor, out, multimodal_max_length=multimodal_max_length)
