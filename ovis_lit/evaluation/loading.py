"""A checkpoint to evaluate -> (model, processor): a train.py Lightning `.ckpt`, an ovis-lit export, or an
original Ovis checkpoint directory.

A `.ckpt` holds the weights and the model hyper-parameters (OvisLitModule.save_hyperparameters) but no tokenizer,
so its processor comes from, in this order: an explicit `processor` directory; the stage's `export/` directory
beside `checkpoints/`; the pretrained Ovis directory the model was built from; the run's `.hydra/config.yaml`
(its `processor` config, for the checkpoint's model). Nothing found is an error that lists what was tried.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from ..interop.consolidate import is_sharded_checkpoint, load_sharded_model, read_sharded_meta
from ..interop.original import load_original, original_tokens_per_crop, read_original_config
from ..interop.ovis_lit_layout import is_ovis_lit_dir, load_ovis_lit, read_ovis_lit_config
from ..interop.reading import chat_format_of, has_tokenizer, is_ovis25_dir
from ..model.build import as_dtype
from ..model.ovis import OvisModel
from ..model.source import ModelSource, build_model
from ..processing.processor import OvisProcessor
from ..training.checkpoints import lightning_model_state, load_model_state, read_lightning_checkpoint

log = logging.getLogger(__name__)

HYDRA_SEARCH_DEPTH = 4  # run/stageN/checkpoints/last.ckpt: the run's .hydra is up to 3 levels above the file


def processor_from_ovis_dir(directory: str | Path) -> OvisProcessor:
    """The processor of an Ovis-layout directory (export or original): tokenizer files + config.json's format."""
    directory = Path(directory)
    if is_ovis_lit_dir(directory):  # ovis-lit's own layout (e.g. an MLP connector arm)
        config = read_ovis_lit_config(directory)
        if not has_tokenizer(directory):
            raise FileNotFoundError(f"{directory} has no tokenizer files")
        return OvisProcessor.from_pretrained(directory, config["chat_format"], int(config["tokens_per_crop"]))
    native = is_ovis25_dir(directory)  # native resolution
    if native:
        from ..interop.ovis25 import read_ovis25_config
        from ..processing.native_processor import NativeOvisProcessor

        config = read_ovis25_config(directory)
    else:
        config = read_original_config(directory)
    chat_format = chat_format_of(config, directory)
    if not has_tokenizer(directory):
        raise FileNotFoundError(f"{directory} has no tokenizer files")
    if native:
        return NativeOvisProcessor.from_pretrained(directory, chat_format, config["vit_config"])
    return OvisProcessor.from_pretrained(directory, chat_format, original_tokens_per_crop(config))


def _hydra_config(checkpoint: Path) -> Path | None:
    for parent in list(checkpoint.parents)[:HYDRA_SEARCH_DEPTH]:
        candidate = parent / ".hydra" / "config.yaml"
        if candidate.is_file():
            return candidate
    return None


# What a run's .hydra/config.yaml may name for Hydra to call when the processor is rebuilt from it: the file lies
# beside a checkpoint, so any other `_target_` (os.system, ...) would be code run from a checkpoint folder.
PROCESSOR_TARGETS = frozenset({
    "ovis_lit.processing.build.crop_processor",
    "ovis_lit.processing.build.native_processor",
    "ovis_lit.processing.tokenizer.load_tokenizer",
    "ovis_lit.processing.tokenizer.qwen_tokenizer",
    "ovis_lit.processing.tokenizer.byte_level_tokenizer",
    "ovis_lit.data.shapes.tokenizer",
})


def _check_targets(node: Any, source: Path) -> None:
    if isinstance(node, dict):
        target = node.get("_target_")
        if target is not None and target not in PROCESSOR_TARGETS:
            raise ValueError(f"{source}: refused: _target_ {target!r} is not one of ovis-lit's processor builders "
                             f"({sorted(PROCESSOR_TARGETS)}); pass processor_dir=<a directory> instead")
        for value in node.values():
            _check_targets(value, source)
    elif isinstance(node, list):
        for value in node:
            _check_targets(value, source)


def processor_for_checkpoint(checkpoint: Path, hparams: dict[str, Any], explicit: str | Path | None) -> OvisProcessor:
    tried = []
    if explicit:
        return processor_from_ovis_dir(explicit)
    export = checkpoint.parent.parent / "export"
    tried.append(f"{export} (the stage's export)")
    if ((export / "config.json").is_file() or is_ovis_lit_dir(export)) and has_tokenizer(export):
        return processor_from_ovis_dir(export)
    pretrained = (hparams.get("model") or {}).get("pretrained")
    if pretrained:
        tried.append(f"{pretrained} (the pretrained model)")
        if has_tokenizer(Path(pretrained)):
            return processor_from_ovis_dir(pretrained)
    config_path = _hydra_config(checkpoint)
    tried.append(f".hydra/config.yaml in the {HYDRA_SEARCH_DEPTH} directories above {checkpoint.name}")
    if config_path is not None:
        from hydra.utils import instantiate

        try:  # resolved first, so that what is checked is what is instantiated (no node hidden behind ${...})
            processor_cfg = OmegaConf.to_container(OmegaConf.load(config_path).processor, resolve=True)
        except Exception as e:
            raise ValueError(f"{config_path}: no usable processor config ({type(e).__name__}: {e})") from None
        _check_targets(processor_cfg, config_path)
        log.info("processor rebuilt from %s", config_path)
        # for the checkpoint's model (its pretrained directory, its visual tokens per crop)
        build = instantiate({**processor_cfg, "_partial_": True})
        return build(model=ModelSource.from_dict(hparams.get("model") or {}))
    raise FileNotFoundError(
        f"no processor (tokenizer) found for {checkpoint}; tried: " + "; ".join(tried)
        + ". Pass processor_dir=<an ovis-lit export or original Ovis directory>."
    )


def model_from_lightning(checkpoint: Path) -> tuple[OvisModel, dict[str, Any]]:
    """Build the model the hyper-parameters describe, then load every weight (strictly) from the file."""
    ckpt = read_lightning_checkpoint(checkpoint)
    hparams = ckpt.get("hyper_parameters") or {}
    if "model" not in hparams:
        raise ValueError(f"{checkpoint} has no hyper_parameters['model']: not a checkpoint written by train.py")
    model = build_model(hparams["model"])
    load_model_state(model, lightning_model_state(ckpt), checkpoint)
    _warn_if_stale(checkpoint, ckpt.get("global_step"))
    return model, {**hparams, "global_step": ckpt.get("global_step")}


def _warn_if_stale(checkpoint: Path, step: int | None) -> None:
    """A stage's last.ckpt is written every `callbacks.checkpoint.every_n_train_steps` steps, so it can predate the
    end of the stage."""
    summary = checkpoint.parent.parent / "summary.json"
    if step is None or not summary.is_file():
        return
    try:
        steps = json.loads(summary.read_text()).get("steps")
    except (ValueError, AttributeError):  # only a warning hangs on it
        return
    if isinstance(steps, int) and steps > step:
        log.warning("%s is from step %d but its stage ran %d steps; %s holds the final weights",
                    checkpoint, step, steps, checkpoint.parent.parent / "export")


def load_for_eval(
    checkpoint: str | Path,
    processor: str | Path | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    adapters: str | Path | None = None,
) -> tuple[OvisModel, OvisProcessor, dict[str, str]]:
    """(model in eval mode on `device`, processor, a description of what was loaded). `adapters`: a directory of
    LoRA adapters in peft's layout (a LoRA stage's `adapters/`) applied to the checkpoint; a checkpoint of a LoRA
    run carries its own. Either way they are merged into the weights before evaluation."""
    from ..model.lora import has_adapters, load_adapters, merge_adapters

    path = Path(checkpoint)
    if is_sharded_checkpoint(path):  # trainer=fsdp's last.ckpt: a directory of shards
        meta = read_sharded_meta(path)
        model = load_sharded_model(path, meta)
        hparams = {**(meta.get("hyper_parameters") or {}), "global_step": meta.get("global_step")}
        found = processor_for_checkpoint(path, hparams, processor)
        kind = f"sharded lightning checkpoint (step {hparams['global_step']})"
    elif path.is_dir():
        model, found = load_ovis_lit(path) if is_ovis_lit_dir(path) else load_original(path)
        if processor:
            found = processor_from_ovis_dir(processor)
        if found is None:
            raise FileNotFoundError(f"{path} has no tokenizer files; pass processor_dir=<a directory with them>")
        kind = "ovis directory"
    elif path.is_file():
        model, hparams = model_from_lightning(path)
        found = processor_for_checkpoint(path, hparams, processor)
        kind = f"lightning checkpoint (step {hparams['global_step']})"
    else:
        raise FileNotFoundError(f"checkpoint {path} is neither a file (.ckpt) nor a directory (export / original Ovis)")
    if adapters:
        if has_adapters(model):
            raise ValueError(f"{path} carries its own LoRA adapters (a LoRA run's checkpoint): evaluate it without "
                             f"adapters=, or its stage's export with adapters={adapters}")
        load_adapters(model, adapters)
        kind += f" + LoRA adapters {Path(adapters).resolve()}"
    if has_adapters(model):
        merge_adapters(model)
    model.to(device=torch.device(device), dtype=as_dtype(dtype) if dtype else None).eval()
    info = {"checkpoint": str(path.resolve()), "format": kind, **({"adapters": str(Path(adapters).resolve())} if adapters else {}), "device": device,
            "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}
    return model, found, info
