"""Every config combination composes, without loading any weights."""

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from ovis_lit.training.run import stage_settings

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
    assert {"s1", "s2", "s3", "all"} <= set(_options("stage"))
    assert set(_options("recipe")) == set(_options("model"))  # every model has its recipe numbers
    assert {"cpu", "gpu", "ddp"} <= set(_options("trainer"))
    assert {"wandb", "csv", "none"} <= set(_options("logger"))
    assert {"smoke", "ovis9b_finetune"} <= set(_options("experiment"))


@pytest.mark.parametrize("model", _options("model"))
@pytest.mark.parametrize("stage", ["1", "2", "3"])
@pytest.mark.parametrize("trainer", _options("trainer"))
def test_every_model_stage_trainer_combination_composes(model, stage, trainer, tmp_path):
    cfg = _compose([f"model={model}", f"stage=s{stage}", f"trainer={trainer}", f"paths.output_dir={tmp_path}"])
    OmegaConf.resolve(cfg)  # every interpolation resolves
    settings = stage_settings(cfg)
    assert settings["name"] == cfg.stage.name == f"s{stage}"
    assert settings["max_steps"] == cfg.recipe[f"s{stage}"].max_steps and settings["lr"] > 0
    assert settings["trainable"], "a stage must train something"
    assert settings["data"]["use"] and settings["data"]["batch_size"] > 0


def test_default_config_is_the_three_stage_tiny_recipe(tmp_path):
    cfg = _compose([f"paths.output_dir={tmp_path}"])
    assert cfg.model.name == "ovis_tiny" and list(cfg.stage.chain) == ["s1", "s2", "s3"]


def test_stage_freezing_follows_the_recipe(tmp_path):
    stages = {s: _compose([f"stage=s{s}", f"paths.output_dir={tmp_path}"]).stage for s in ("1", "2", "3")}
    assert set(stages["1"].trainable) == {"visual_tokenizer.head", "vte", "visual_tokenizer.backbone.layers.-1"}
    assert set(stages["2"].trainable) == {"visual_tokenizer", "vte"}
    assert list(stages["3"].trainable) == ["all"]
    assert stages["1"].data.captions_as == "template" and stages["2"].data.captions_as == "chat"


@pytest.mark.parametrize("trainer", [[], ["trainer=fsdp"]], ids=["default", "fsdp"])
def test_9b_stage3_on_8_devices_prints_without_loading_weights(trainer):
    """The design card's command, as `--cfg job`: composes and prints, touches no weights."""
    out = subprocess.run(
        [sys.executable, "train.py", "model=ovis_9b", "stage=s3", *trainer, "trainer.devices=8", "--cfg", "job"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    cfg = OmegaConf.create(out.stdout)
    assert cfg.model.name == "ovis_9b" and cfg.trainer.devices == 8 and cfg.stage.name == "s3"
    if trainer:
        assert cfg.trainer.strategy._target_ == "ovis_lit.training.strategies.FSDP2Strategy"
    assert cfg.model.spec.visual_vocab_size == 65536 and cfg.model.spec.hidden_stride == 2


def test_stage_recipe_and_mixture_are_merged_by_stage_settings(tmp_path):
    """The stage file, recipe/<model>.yaml's numbers for that stage and the data config's mixture for it."""
    cfg = _compose(["model=ovis_9b", "stage=s2", "data=mixture_example", "recipe.s2.batch_size=3",
                    f"paths.output_dir={tmp_path}"])
    settings = stage_settings(cfg)
    assert (settings["lr"], settings["max_steps"], settings["accumulate"]) == (5.0e-5, 2000, 32)
    assert settings["data"] == {"use": {"pixelprose": 0.5, "captions": 0.5}, "captions_as": "chat",
                                "batch_size": 3, "max_length": 2048}
    assert settings["val_every"] == 2000  # null: at the end of the stage
    with pytest.raises(ValueError, match="chain"):
        stage_settings(_compose(["stage=all", f"paths.output_dir={tmp_path}"]))


def test_heldout_prompt_matches_what_the_shapes_data_teaches(tmp_path):
    from ovis_lit.data import shapes

    assert _compose([f"paths.output_dir={tmp_path}"]).data.heldout_instruction == shapes.MC_INSTRUCTION


# Released shapes: Ovis1.6-Gemma2-9B has 10.2 B parameters; Ovis1.6-Llama3.2-3B: SigLIP-so400m (0.40 B with its
# unused pooling head) + visual head (1152*4 x 65531) + table (65536 x 3072) + Llama-3.2-3B (3.21 B, tied).
# Ovis2-1B: AIMv2-large-patch14-448 without its pooling head (309,984,256) + visual head (1024*4 x 65531 + its
# LayerNorm) + table (65536 x 896) + Qwen2.5-0.5B-Instruct (494,032,768, tied) = 1.131 B.
# Ovis2-8B: AIMv2-huge-patch14-448 (682,031,616) + visual head (1536*4 x 65531) + table (65536 x 3584)
# + Qwen2.5-7B-Instruct (7,615,616,512, untied) = 8.935 B.
@pytest.mark.parametrize(
    "model,billions", [("ovis_9b", 10.2), ("ovis_3b", 4.14), ("ovis2_1b", 1.131), ("ovis2_8b", 8.935)]
)
def test_full_size_configs_have_the_released_parameter_counts(model, billions, tmp_path):
    from ovis_lit.model.build import build_ovis

    cfg = _compose([f"model={model}", f"paths.output_dir={tmp_path}"])
    built = build_ovis(OmegaConf.to_container(cfg.model.spec, resolve=True), device="meta")
    count = sum(p.numel() for p in built.parameters()) / 1e9
    print(f"{model}: {count:.3f} B parameters")
    assert count == pytest.approx(billions, rel=0.01)


@pytest.mark.parametrize("model,llm,vit", [("ovis2_1b", 494_032_768, 309_984_256), ("ovis2_8b", 7_615_616_512, 682_031_616)])
def test_ovis2_configs_are_the_released_parts(model, llm, vit, tmp_path):
    """The parts alone have the released LLM's and ViT's parameter counts (no Gemma field leaks into Qwen2)."""
    from ovis_lit.model.build import build_ovis

    cfg = _compose([f"model={model}", f"paths.output_dir={tmp_path}"])
    built = build_ovis(OmegaConf.to_container(cfg.model.spec, resolve=True), device="meta")
    assert sum(p.numel() for p in built.llm.parameters()) == llm
    assert sum(p.numel() for p in built.visual_tokenizer.backbone.parameters()) == vit
    assert built.visual_tokenizer.tokens_per_crop() == 256
    assert cfg.processor.chat_format == "qwen"
    assert (cfg.processor.max_partition, cfg.processor.multi_image_max_partition) == (9, 1)


def test_memory_plan_matches_a_measured_cpu_step():
    out = subprocess.run(
        [sys.executable, "scripts/plan_memory.py", "stage=s3", "--crops", "1", "--text-tokens", "60", "--measure",
         "recipe.s3.batch_size=16"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    ratio = float(out.stdout.rsplit("(ratio ", 1)[1].split(")")[0])
    assert 0.6 <= ratio <= 1.5, out.stdout


def test_memory_plan_says_whether_9b_fits():
    from ovis_lit.training.memory import Workload, plan

    cfg = _compose(["model=ovis_9b", "stage=s3", "paths.output_dir=/tmp/x"])
    spec = OmegaConf.to_container(cfg.model.spec, resolve=True)
    work = Workload(batch_size=1, text_tokens=512, crops=10)
    sharded = plan(spec, ["all"], work, world=8, sharded=True, master_dtype="float32", checkpointing=True)
    single = plan(spec, ["all"], work, world=1, sharded=False, master_dtype="float32", checkpointing=True)
    gib = 1024**3
    # fp32 master weights + grads + AdamW: 16 bytes x 10.2 B = 152 GiB replicated, 1/8 of that sharded
    assert single.parameters + single.gradients + single.optimizer == pytest.approx(16 * 10.207e9, rel=0.01)
    assert sharded.parameters + sharded.gradients + sharded.optimizer == pytest.approx(16 * 10.207e9 / 8, rel=0.01)
    assert sharded.total < 80 * gib < single.total
    assert "does NOT fit" in single.table(80) and "fits" in sharded.table(80)
    by_mode = sharded.activations_by_mode
    assert by_mode["full"] < by_mode["selective"] < by_mode["none"]
    assert sharded.activations == by_mode["full"]


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_composes(experiment, tmp_path):
    cfg = _compose([f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    OmegaConf.resolve(cfg)
    assert cfg.run_name


def test_finetune_experiment_turns_the_caption_source_off(tmp_path):
    cfg = _compose(["experiment=ovis9b_finetune", f"paths.output_dir={tmp_path}"])
    assert cfg.model.name == "ovis_9b" and cfg.trainer.strategy._target_.endswith("FSDP2Strategy")
    assert stage_settings(cfg)["data"]["use"] == {"llava_instruct": 0.9, "captions": 0, "text_instruct": 0.1}


@pytest.mark.parametrize("entry", ["eval", "chat"])
def test_processor_dir_overrides_on_the_command_line(entry, tmp_path):
    """The tokenizer/image-settings directory of evals/run.py and chat.py is `processor_dir`: a key named `processor`
    would collide with the `processor` config group (Hydra reads `processor=<dir>` as a group choice and fails)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(entry, overrides=["checkpoint=x.ckpt", f"processor_dir={tmp_path}"])
    assert cfg.processor_dir == str(tmp_path) and "processor" not in cfg
