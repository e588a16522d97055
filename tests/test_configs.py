"""Every config combination composes, without loading any weights."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from .conftest import REPO

CONF = REPO / "conf"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def test_groups_are_populated():
    assert {"ovis_tiny", "ovis_9b"} <= set(_options("model"))
    assert {"1", "2", "3", "all"} <= set(_options("stage"))
    assert {"cpu", "gpu", "ddp"} <= set(_options("trainer"))
    assert {"wandb", "csv", "none"} <= set(_options("logger"))


@pytest.mark.parametrize("model", _options("model"))
@pytest.mark.parametrize("stage", ["1", "2", "3"])
@pytest.mark.parametrize("trainer", _options("trainer"))
def test_every_model_stage_trainer_combination_composes(model, stage, trainer, tmp_path):
    cfg = _compose([f"model={model}", f"stage='{stage}'", f"trainer={trainer}", f"paths.output_dir={tmp_path}"])
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert cfg.stage.name == f"s{stage}"
    assert cfg.trainer.max_steps == cfg.stage.max_steps
    assert cfg.stage.trainable, "a stage must train something"
    assert cfg.stage.data.use


def test_default_config_is_the_three_stage_tiny_recipe(tmp_path):
    cfg = _compose([f"paths.output_dir={tmp_path}"])
    assert cfg.model.name == "ovis_tiny" and list(cfg.stage.chain) == ["1", "2", "3"]


def test_stage_freezing_follows_the_recipe(tmp_path):
    stages = {s: _compose([f"stage='{s}'", f"paths.output_dir={tmp_path}"]).stage for s in ("1", "2", "3")}
    assert set(stages["1"].trainable) == {"visual_tokenizer.head", "vte", "visual_tokenizer.backbone.layers.-1"}
    assert set(stages["2"].trainable) == {"visual_tokenizer", "vte"}
    assert list(stages["3"].trainable) == ["all"]
    assert stages["1"].data.captions_as == "template" and stages["2"].data.captions_as == "chat"


def test_9b_stage3_on_8_devices_prints_without_loading_weights():
    """The design card's command, as `--cfg job`: composes and prints, touches no weights."""
    out = subprocess.run(
        [sys.executable, "train.py", "model=ovis_9b", "stage=3", "trainer.devices=8", "--cfg", "job"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    cfg = OmegaConf.create(out.stdout)
    assert cfg.model.name == "ovis_9b" and cfg.trainer.devices == 8 and cfg.stage.name == "s3"
    assert cfg.model.spec.visual_vocab_size == 65536 and cfg.model.spec.hidden_stride == 2


def test_numeric_stage_override_is_quoted_for_hydra():
    sys.path.insert(0, str(REPO))
    from train import quote_numeric_stage

    assert quote_numeric_stage(["train.py", "stage=3", "stage.lr=1", "stage=1,2"]) == [
        "train.py", "stage='3'", "stage.lr=1", "stage='1','2'"]


def test_heldout_prompt_matches_what_the_shapes_data_teaches(tmp_path):
    from ovis_lit.data import shapes

    assert _compose([f"paths.output_dir={tmp_path}"]).data.heldout_instruction == shapes.MC_INSTRUCTION
