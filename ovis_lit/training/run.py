"""What `train.py` does with a composed config: one stage, or a chain of stages each starting from the last."""

from __future__ import annotations

import json
import logging
import secrets
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ThroughputMonitor
from omegaconf import DictConfig, OmegaConf, open_dict

from ..model.lora import base_state_dict, check_quantization, has_adapters, save_adapters
from ..model.source import ModelSource
from ..processing.native_processor import NativeOvisProcessor
from ..processing.processor import OvisProcessor
from .checkpoints import check_resumable, check_resume_strategy
from .dpo import apply_dpo_data_settings
from .module import OvisLitModule
from .skips import skip_summary, summed_over_ranks
from .vocab_diagnostics import VisualVocabularyDiagnostics
from .train_modules import apply_train_modules

log = logging.getLogger(__name__)


def build_processor(cfg: DictConfig, model: ModelSource | None = None) -> OvisProcessor | NativeOvisProcessor:
    """The `processor` group's processor for the `model` group's model (or `model`, when the caller has it)."""
    return instantiate(cfg.processor)(model=model or instantiate(cfg.model))


def check_vocab(processor, model: ModelSource) -> None:
    vocab = model.llm_vocab_size()
    if vocab is not None and len(processor.tokenizer) > vocab:
        raise ValueError(f"the tokenizer has {len(processor.tokenizer)} tokens but the LLM vocab_size is {vocab}")


# The stage settings a recipe gives per scale; batch_size, max_length and `use` (the stage's data mix, for a model
# that trains on other sources than the stage file's, e.g. Ovis2.5's videos) go to the data module. The re-init
# options (model/reinit.py) and train_modules (training/train_modules.py) may be set per stage here too, which is
# how a chain (stage=all) gives them to one of its stages.
RECIPE_STAGE_KEYS = ("lr", "module_lr", "max_steps", "accumulate", "train_modules", "visual_re_init_layer_begin",
                     "vte_re_init")
RECIPE_DATA_KEYS = ("batch_size", "max_length", "use")


def stage_settings(cfg: DictConfig) -> dict[str, Any]:
    """One stage's full settings: the stage file (what every scale shares), the numbers `recipe.<stage>` gives for
    this model's scale (its `use`, if it gives one, in place of the stage's data mix), and the data config's
    `mixture.<stage>` (if it has one: it wins over both)."""
    stage = OmegaConf.to_container(cfg.stage, resolve=True)
    name = stage["name"]
    if stage.get("chain"):
        raise ValueError(f"stage={name} is a chain of stages ({stage['chain']}): run_stage takes one of them")
    recipe = OmegaConf.to_container(cfg.recipe, resolve=True).get(name)
    if recipe is None:
        stages = sorted(k for k, v in cfg.recipe.items() if k != "activation_checkpointing")
        raise ValueError(f"recipe has no numbers for stage {name!r} (it has {stages})")
    unknown = set(recipe) - set(RECIPE_STAGE_KEYS) - set(RECIPE_DATA_KEYS)
    if unknown:
        raise ValueError(f"recipe.{name} has unknown keys {sorted(unknown)}: known are "
                         f"{list(RECIPE_STAGE_KEYS + RECIPE_DATA_KEYS)}")
    stage.update({k: recipe[k] for k in RECIPE_STAGE_KEYS if k in recipe})
    stage.setdefault("accumulate", 1)
    apply_train_modules(stage)  # "name:lr|..." strings -> trainable + module_lr
    apply_dpo_data_settings(stage)  # stage=dpo reads preference pairs
    stage["data"].update({k: recipe[k] for k in RECIPE_DATA_KEYS if k in recipe})
    mixture = OmegaConf.select(cfg, f"data.mixture.{name}")
    if mixture is not None:
        stage["data"]["use"] = OmegaConf.to_container(mixture, resolve=True)
    if stage.get("val_every") is None:  # validate once, at the end of the stage
        stage["val_every"] = stage["max_steps"]
    return stage


@dataclass
class Stage:
    """Everything one stage trains with, built from a composed config (before any weight is loaded: the module
    builds its model in configure_model)."""

    settings: dict[str, Any]
    processor: OvisProcessor | NativeOvisProcessor
    datamodule: L.LightningDataModule
    module: OvisLitModule
    trainer: L.Trainer


def instantiate_datamodule(cfg: DictConfig, settings: dict[str, Any] | None = None, **overrides: Any):
    """The data config's DataModule with the stage's data settings (`overrides` win; tests swap sources)."""
    settings = settings or stage_settings(cfg)
    with open_dict(cfg):  # `mixture` is read by stage_settings, it is no DataModule argument
        data = cfg.data.copy()
        data.pop("mixture", None)
    return instantiate(data, **{**settings["data"], **overrides})


def build_stage(cfg: DictConfig) -> Stage:
    """The processor, DataModule, LightningModule and Trainer of one stage, as train.py runs it."""
    settings = stage_settings(cfg)
    model = instantiate(cfg.model)
    check_quantization(model.lora_settings())  # QLoRA without a GPU or bitsandbytes: refused before anything loads
    processor = build_processor(cfg, model)
    check_vocab(processor, model)
    datamodule = instantiate_datamodule(cfg, settings)
    datamodule.attach(processor)
    # plain values (_convert_): the module's arguments are saved in checkpoints, its optimiser's in the optimiser state
    module = instantiate(cfg.module, _convert_="all")(
        model=model,
        stage=settings,
        init_from=cfg.get("init_from"),
        activation_checkpointing=OmegaConf.to_container(cfg.recipe.activation_checkpointing, resolve=True),
    )
    output_dir = Path(cfg.paths.output_dir)
    loggers = [instantiate(lg, **_logger_identity(lg, output_dir)) for lg in (cfg.get("logger") or {}).values()]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    if not loggers:  # these only log; Lightning refuses them without a logger
        callbacks = [c for c in callbacks if not isinstance(c, (LearningRateMonitor, ThroughputMonitor))]
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        max_steps=settings["max_steps"],
        accumulate_grad_batches=settings["accumulate"],
        val_check_interval=settings["val_every"],  # in steps: the training stream has no epoch end
        limit_val_batches=settings["val_batches"],
        callbacks=callbacks,
        logger=loggers or False,
    )
    return Stage(settings, processor, datamodule, module, trainer)


def run_stage(cfg: DictConfig) -> tuple[dict[str, Any], Stage]:
    """Train one stage. Returns its summary (checkpoint paths, steps, time, throughput; plain values, as written
    to summary.json) and what it trained with."""
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "high"))
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = _resolve_ckpt(cfg.get("ckpt_path"), output_dir)
    if ckpt_path is not None:  # before anything is built: a bad checkpoint is refused at once, with its name
        check_resumable(ckpt_path)

    stage = build_stage(cfg)
    trainer, module, datamodule = stage.trainer, stage.module, stage.datamodule
    if ckpt_path is not None:
        check_resume_strategy(ckpt_path, trainer.strategy)
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    started = time.perf_counter()
    # resuming unpickles nothing but tensors and plain containers (weights_only; FSDP2Strategy reads shards safely)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    seconds = time.perf_counter() - started
    # ModelCheckpoint saves every `every_n_train_steps`; the final step is saved here, unless it just did, so that
    # last.ckpt (what the next stage starts from and evals/run.py reads) holds the final weights. Every rank calls it.
    every = getattr(trainer.checkpoint_callback, "_every_n_train_steps", 0) or 0
    if trainer.checkpoint_callback is None or not every or trainer.global_step % every:
        trainer.save_checkpoint(output_dir / "checkpoints" / "last.ckpt", weights_only=False)  # with optimiser state

    skips = skip_summary(datamodule)  # every rank's, in the data this stage consumed (a collective)
    summary = {
        "stage": stage.settings["name"],
        "steps": trainer.global_step,
        "seconds": round(seconds, 1),
        # the samples the training batches held (every rank's, resumes included): under a token budget batches
        # hold different numbers of samples, so steps x batch_size would not count them
        "samples": summed_over_ranks({"samples": getattr(datamodule, "consumed", 0)})["samples"],
        "last_checkpoint": str(output_dir / "checkpoints" / "last.ckpt"),
        "skipped_samples": skips["train"],
        "val_skipped_samples": skips["val"],
        "train_loss": _metric(trainer, "train/loss"),
        "trainable_parameters": sum(p.numel() for p in module.model.parameters() if p.requires_grad),
        "val_loss": _metric(trainer, "val/loss"),
    }
    summary["samples_per_s"] = round(summary["samples"] / max(seconds, 1e-9), 2)
    for callback in trainer.callbacks:  # the visual vocabulary's headline numbers (and where the details are)
        if isinstance(callback, VisualVocabularyDiagnostics) and callback.summary is not None:
            summary["vocab_diagnostics"] = callback.summary
    full_state = full_state_dict(module.model)  # a collective under FSDP: every rank takes part
    if trainer.is_global_zero:
        export = output_dir / "export"
        lora = has_adapters(module.model)
        if module.model.visual_tokenizer.projects:  # an MLP connector: the original layout has no place for it
            from ..interop.ovis_lit_layout import export_ovis_lit

            export_ovis_lit(module.model, module.source, stage.processor, export, state=full_state)
        else:
            from ..interop.original_export import export_original

            # Ovis 1.6/2 exports write the processor's multimodal_max_length into config.json (Ovis2.5's have none)
            max_length = getattr(stage.processor, "multimodal_max_length", None)
            # a LoRA stage: the export holds the base (with whatever trained fully: head, visual table), the adapters
            # lie beside it in peft's layout; scripts/merge_lora.py folds them into one export
            export_original(module.model, stage.processor, export,
                            state=base_state_dict(module.model, full_state) if lora else full_state,
                            **({"multimodal_max_length": max_length} if max_length else {}))
        summary["export"] = str(export)
        if lora:
            summary["adapters"] = str(save_adapters(module.model, output_dir / "adapters", state=full_state))
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary, stage


def _logger_identity(logger_cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """A W&B logger keeps one run id per run directory, so a resumed run continues the same W&B run."""
    if not str(logger_cfg.get("_target_", "")).endswith("WandbLogger") or logger_cfg.get("id"):
        return {}
    id_file = output_dir / "wandb_run_id.txt"
    if not id_file.is_file():
        alphabet = string.ascii_lowercase + string.digits  # the shape of W&B's own run ids
        id_file.write_text("".join(secrets.choice(alphabet) for _ in range(8)))
    return {"id": id_file.read_text().strip(), "resume": "allow"}


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The consolidated state dict of an FSDP2-sharded model (on CPU; every rank must call this), else None."""
    from torch.distributed.tensor import DTensor

    if not any(isinstance(p, DTensor) for p in model.parameters()):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _metric(trainer: L.Trainer, name: str) -> float | None:
    value = trainer.callback_metrics.get(name)
    return None if value is None else round(float(value), 4)


def _resolve_ckpt(ckpt_path: str | None, output_dir: Path) -> str | None:
    """`ckpt_path=last`: the newest last.ckpt of this run directory (None, with a note, when there is none yet).
    Under trainer=fsdp last.ckpt is a directory of shards.

    Lightning resolves "last" too, but only inside `fit`, after the model is built and with its own loader: train.py
    must name the file before building anything, so that check_resumable refuses a bad or unsafe checkpoint (a
    pickle, a sharded directory with a hostile .metadata, see interop/safe_dcp.py) at once."""
    if ckpt_path != "last":
        return ckpt_path
    last = output_dir / "checkpoints" / "last.ckpt"
    if last.exists():
        return str(last)
    log.warning("ckpt_path=last but %s does not exist: starting fresh", last)
    return None
