"""Fine-tuning a released Ovis2.5 checkpoint: the experiment preset, the memory planner at native resolution, and
the fine-tune command end to end on the tiny original-layout checkpoint."""

import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from ovis_lit.training.memory import Workload, plan
from ovis_lit.training.run import stage_settings

from .conftest import REPO
from .helpers import compose_train
from .test_ovis25 import FIXTURE25

GiB = 1024**3


def test_ovis25_finetune_preset_is_the_released_sft_recipe(tmp_path):
    cfg = compose_train(["experiment=ovis25_finetune"], tmp_path, tmp_path)
    assert cfg.model.name == "ovis25_9b" and cfg.trainer.strategy._target_.endswith("FSDP2Strategy")
    assert cfg.trainer.devices == 8 and cfg.processor.chat_format == "qwen3"
    s = stage_settings(cfg)
    assert (s["name"], s["trainable"], s["lr"], s["warmup_ratio"], s["accumulate"]) == ("s3", ["all"], 2e-5, 0.1, 4)
    assert (s["data"]["batch_size"], s["data"]["max_length"]) == (2, 6000)  # x 8 GPUs x 4 = the released 64
    assert s["data"]["use"] == {"llava_instruct": 0.9, "captions": 0, "text_instruct": 0.1}


def test_the_issue_command_composes(tmp_path):
    cfg = compose_train(["model=ovis25_9b", "model.pretrained=/ckpt/Ovis2.5-9B", "stage=s3", "data=mixture_example",
                         "trainer=fsdp", "trainer.devices=8"], tmp_path, tmp_path)
    s = stage_settings(cfg)
    assert s["trainable"] == ["all"] and s["lr"] == 2e-5 and cfg.trainer.devices == 8


def _spec25(tmp_path):
    cfg = compose_train(["model=ovis25_9b"], tmp_path, tmp_path)
    return OmegaConf.to_container(cfg.model.spec, resolve=True)


def test_memory_plan_covers_ovis25_9b(tmp_path):
    spec = _spec25(tmp_path)
    # the preset's micro-batch: 2 samples of 6000 tokens, one image at 1792x1344 pixels (2352 visual tokens)
    work = Workload(batch_size=2, text_tokens=3645, crops=1, tokens_per_image=1792 * 1344 // 32**2)
    sharded = plan(spec, ["all"], work, world=8, sharded=True, master_dtype="float32", checkpointing=True)
    single = plan(spec, ["all"], work, world=1, sharded=False, master_dtype="float32", checkpointing=True)
    # fp32 master weights + grads + AdamW: 16 bytes x 9.175 B parameters, replicated or 1/8 of it
    assert single.parameters + single.gradients + single.optimizer == pytest.approx(16 * 9.175e9, rel=0.01)
    assert sharded.parameters + sharded.gradients + sharded.optimizer == pytest.approx(16 * 9.175e9 / 8, rel=0.01)
    assert sharded.total < 80 * GiB < single.total
    by_mode = sharded.activations_by_mode
    assert by_mode["full"] < by_mode["selective"] < by_mode["none"]
    # activations grow with the image's pixels (the ViT sees 4 patches per visual token)
    small = plan(spec, ["all"], Workload(2, 3645, 1, tokens_per_image=196), world=8, sharded=True, checkpointing=True)
    assert small.activations < sharded.activations
    with pytest.raises(ValueError, match="tokens_per_image"):
        plan(spec, ["all"], Workload(2, 3645, 1), world=8, sharded=True)


@pytest.mark.slow
def test_plan_memory_script_on_ovis25(tmp_path):
    """The script on the preset (no weights) and its CPU measurement on the tiny Ovis2.5."""
    out = subprocess.run([sys.executable, "scripts/plan_memory.py", "experiment=ovis25_finetune", "--gpu-gib", "80"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "1 images x 2352" in out.stdout and "fits a 80 GiB device" in out.stdout
    out = subprocess.run(
        [sys.executable, "scripts/plan_memory.py", "model=ovis25_tiny", "stage=s3", "--crops", "2", "--pixels", "16384",
         "--text-tokens", "60", "--measure", "recipe.s3.batch_size=16"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    ratio = float(out.stdout.rsplit("(ratio ", 1)[1].split(")")[0])
    assert 0.6 <= ratio <= 1.5, out.stdout


@pytest.mark.slow
def test_finetune_command_on_an_original_ovis25_checkpoint(tmp_path, shapes_data):
    """The fine-tune command (one CPU process here) from the tiny original-layout checkpoint: it trains every part
    and exports the original layout, tokenizer and config included (scripts/check_in_original.py loads such an
    export in the original code)."""
    from safetensors.torch import load_file

    out = subprocess.run(
        [sys.executable, "train.py", "model=ovis25_9b", f"model.pretrained={FIXTURE25 / 'checkpoint'}", "stage=s3",
         "data=shapes", "trainer=cpu", "recipe.s3.max_steps=2", "recipe.s3.batch_size=2", "recipe.s3.accumulate=1",
         "recipe.s3.max_length=256", "processor.image.min_pixels=256", "processor.image.max_pixels=4096",
         "logger=csv", f"paths.output_dir={tmp_path}", f"paths.data_dir={shapes_data}", "+data.prepare.scale=0.03",
         "data.num_workers=0", "evaluate=false"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    export = tmp_path / "export"
    config = json.loads((export / "config.json").read_text())
    source = json.loads((FIXTURE25 / "checkpoint" / "config.json").read_text())
    assert config["vit_config"]["model_type"] == "siglip2_navit"
    assert config["conversation_formatter_class"] == "Qwen3ConversationFormatter"
    assert config["llm_config"]["hidden_size"] == source["llm_config"]["hidden_size"]  # the checkpoint's, not 9B's
    before, after = load_file(FIXTURE25 / "checkpoint" / "model.safetensors"), load_file(export / "model.safetensors")
    changed = {k for k in before if not (before[k].float() == after[k].float()).all()}
    assert any(k.startswith("llm.") for k in changed) and any(k.startswith("visual_tokenizer.vit.") for k in changed)
    assert "vte.weight" in changed and (export / "tokenizer_config.json").is_file()
