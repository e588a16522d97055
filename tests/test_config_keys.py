"""Every key of the composed configs is read by code: a key nothing reads is a setting that silently does nothing.

Each `_target_` node may hold only its target's parameters; the nodes without a target have their readers named
below. The groups no longer read each other, so each option is composed once over the defaults (every model,
stage, trainer, data, logger and callbacks option) rather than in every combination; experiments, which set keys
across groups, are composed each."""

import dataclasses
import inspect

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_method
from omegaconf import OmegaConf

from ovis_lit.model.build import BackboneSpec, LLMSpec, OvisSpec
from ovis_lit.processing.image import ImagePreprocessor
from ovis_lit.processing.native_resolution import NativeResolutionPreprocessor
from ovis_lit.processing.pixel_budgets import PixelBudgets
from ovis_lit.training.run import RECIPE_DATA_KEYS, RECIPE_STAGE_KEYS
from ovis_lit.training.sharding import shard_model

from .conftest import REPO

CONF = REPO / "conf"


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


# readers of the nodes without a `_target_` (code that reads them by name)
TOP = {"paths", "model", "processor", "recipe", "module", "stage", "data", "trainer", "logger", "callbacks",  # groups
       "seed", "run_name", "init_from", "ckpt_path", "evaluate", "matmul_precision"}  # entry.py, run.py
PATHS = {"root_dir", "data_dir", "output_dir", "log_dir"}
# the image preprocessors' arguments (the processors' `image` node)
IMAGE = {"crop_processor": set(inspect.signature(ImagePreprocessor).parameters),
         "native_processor": set(inspect.signature(NativeResolutionPreprocessor).parameters)}
# the native processor's `pixel_budgets` node: PixelBudgets' fields (the single-image range is `image`'s)
PIXEL_BUDGETS = _fields(PixelBudgets) - {"single_image_min_pixels", "single_image_max_pixels"}
STAGE = {"name", "trainable", "warmup_ratio", "min_lr_ratio", "weight_decay", "val_every", "val_batches", "data",
         "train_modules",  # train_modules.py
         "visual_re_init_layer_begin", "vte_re_init",  # reinit.py
         "dpo"}  # training/dpo.py (stage=dpo)
DPO = {"beta", "loss_type", "label_smoothing", "reference"}  # training/dpo.py: dpo_settings
CHAIN = {"name", "chain"}  # stage=all
STAGE_DATA = {"use", "captions_as", "text_only"}  # OvisDataModule arguments, handed over by build_stage
FSDP = set(inspect.signature(shard_model).parameters) - {"model", "mesh"} | {"master_dtype"}  # module.py
AC = {"vision", "llm"}  # OvisModel.set_activation_checkpointing
RECIPE_TOP = {"activation_checkpointing"}  # build_stage; the other keys are stage names
# what build_stage hands to each partial: a config must not set these (they would be overridden or clash)
HANDED = {"processor": {"model", "tokens_per_crop"},
          "module": {"model", "stage", "init_from", "activation_checkpointing"}}


def _params(target: str) -> tuple[set[str], bool]:
    fn = get_method(target)
    sig = inspect.signature(fn)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return set(sig.parameters), takes_any


def _unread_in_target(node: dict, where: str) -> list[str]:
    """Keys of a `_target_` node its target does not take; nested targets are checked too."""
    bad = []
    params, takes_any = _params(node["_target_"])
    for key, value in node.items():
        if key in ("_target_", "_partial_", "_recursive_", "_convert_", "_args_"):
            continue
        if key not in params and not takes_any:
            bad.append(f"{where}.{key}")
        if isinstance(value, dict) and "_target_" in value:
            bad += _unread_in_target(value, f"{where}.{key}")
    return bad


def _extra(node: dict, allowed: set[str], where: str) -> list[str]:
    return [f"{where}.{k}" for k in node if k not in allowed]


def unread_keys(cfg) -> list[str]:
    c = OmegaConf.to_container(cfg, resolve=False)
    bad = _extra(c, TOP, "")
    bad += _extra(c["paths"], PATHS, "paths")
    m = c["model"]
    bad += _unread_in_target(m, "model")
    spec = m.get("spec") or {}
    bad += _extra(spec, _fields(OvisSpec), "model.spec")
    bad += _extra(spec.get("backbone") or {}, _fields(BackboneSpec), "model.spec.backbone")
    bad += _extra(spec.get("llm") or {}, _fields(LLMSpec), "model.spec.llm")
    p = c["processor"]
    bad += _unread_in_target(p, "processor") + _extra(p, set(p) - HANDED["processor"], "processor")
    bad += _extra(p["image"], IMAGE[p["_target_"].rsplit(".", 1)[-1]], "processor.image")
    bad += _extra(p.get("pixel_budgets") or {}, PIXEL_BUDGETS, "processor.pixel_budgets")
    module = c["module"]
    bad += _unread_in_target(module, "module") + _extra(module, set(module) - HANDED["module"], "module")
    bad += _extra(module.get("fsdp") or {}, FSDP, "module.fsdp")
    recipe = dict(c["recipe"])
    bad += _extra(recipe.pop("activation_checkpointing"), AC, "recipe.activation_checkpointing")
    for name, numbers in recipe.items():
        bad += _extra(numbers, set(RECIPE_STAGE_KEYS) | set(RECIPE_DATA_KEYS), f"recipe.{name}")
    s = c["stage"]
    if "chain" in s:
        bad += _extra(s, CHAIN, "stage")
    else:
        bad += _extra(s, STAGE, "stage") + _extra(s["data"], STAGE_DATA, "stage.data")
        bad += _extra(s.get("dpo") or {}, DPO, "stage.dpo")
    data = dict(c["data"])
    data.pop("mixture", None)  # read by stage_settings
    bad += _unread_in_target(data, "data")
    bad += _unread_in_target(c["trainer"], "trainer")
    for group in ("logger", "callbacks"):
        for name, node in (c.get(group) or {}).items():
            bad += _unread_in_target(node, f"{group}.{name}")
    return bad


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides)


CASES = ([f"model={o}" for o in _options("model")] + [f"processor={o}" for o in _options("processor")] + [f"stage={o}" for o in _options("stage")]
         + [f"trainer={o}" for o in _options("trainer")] + [f"data={o}" for o in _options("data")]
         + [f"logger={o}" for o in _options("logger")] + [f"experiment={o}" for o in _options("experiment")])


@pytest.mark.parametrize("override", CASES)
def test_every_config_key_is_read_by_code(override):
    assert unread_keys(_compose([override])) == []


def test_an_unread_key_is_found():
    cfg = _compose(["+stage.betas=[0.9,0.95]", "+trainer.max_step=3", "+data.shufle_buffer=1",
                    "+model.spec.visual_vocab=3", "+callbacks.checkpoint.every=2", "+recipe.s3.warmup=0.1",
                    "+model.multimodal_max_length=8", "+processor.image.size=3", "+processor.max_partitions=2",
                    "+module.optimizer.beta=0.9", "+module.fsdp.offload=true", "+module.stage={}",
                    "+recipe.activation_checkpointing.vit=full", "+fsdp.cpu_offload=true"])
    assert sorted(unread_keys(cfg)) == [
        ".fsdp", "callbacks.checkpoint.every", "data.shufle_buffer", "model.multimodal_max_length",
        "model.spec.visual_vocab", "module.fsdp.offload", "module.optimizer.beta", "module.stage",
        "processor.image.size", "processor.max_partitions", "recipe.activation_checkpointing.vit",
        "recipe.s3.warmup", "stage.betas", "trainer.max_step"]
