"""LoRA / QLoRA through peft (model/lora.py): which projections get adapters per generation, training (adapters
move, the adapted bases stay bitwise), exact resume, saved adapters in peft's layout, merging into a full export
(equal logits), evaluation of a base plus adapters, and QLoRA's refusal without a GPU."""

import json

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from ovis_lit.model.build import build_ovis
from ovis_lit.model.lora import (
    LoraSettings,
    add_adapters,
    base_state_dict,
    is_adapter_parameter,
    load_adapters,
    merge_adapters,
    save_adapters,
    target_module_names,
)
from ovis_lit.training.run import build_stage

from .conftest import REPO
from .helpers import compose_train
from .test_model_invariants import _batch
from .tiny import tiny_model



# ------------------------------------------------------------------------------------------ targets per generation
LLM_PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
VIT_PROJECTIONS = {
    "siglip_vision_model": {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"},
    "siglip2_vision_model": {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"},
    "aimv2_vision_model": {"q_proj", "k_proj", "v_proj", "out_proj", "gate_proj", "up_proj", "down_proj"},
    "siglip2_navit": {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"},
}


def _ovis25_tiny():
    return build_ovis(OmegaConf.to_container(OmegaConf.load(REPO / "conf/model/ovis25_tiny.yaml").spec), "meta")


@pytest.mark.parametrize("llm,backbone", [("qwen2", "siglip_vision_model"), ("gemma2", "aimv2_vision_model"),
                                          ("llama", "siglip2_vision_model"), ("qwen3", "siglip2_navit")])
def test_adapters_go_to_every_attention_and_mlp_projection_of_each_generation(llm, backbone):
    model = _ovis25_tiny() if llm == "qwen3" else tiny_model(llm=llm, backbone=backbone)
    names = target_module_names(model, LoraSettings())
    n_llm = model.llm.config.num_hidden_layers
    n_vit = model.visual_tokenizer.backbone.config.num_hidden_layers
    in_llm = [n for n in names if n.startswith("llm.")]
    in_vit = [n for n in names if n.startswith("visual_tokenizer.backbone.")]
    assert len(in_llm) + len(in_vit) == len(names)  # nothing outside the layer stacks (head, patch embedding)
    assert {n.rsplit(".", 1)[1] for n in in_llm} == LLM_PROJECTIONS and len(in_llm) == 7 * n_llm
    assert {n.rsplit(".", 1)[1] for n in in_vit} == VIT_PROJECTIONS[backbone]
    assert len(in_vit) == len(VIT_PROJECTIONS[backbone]) * n_vit
    # narrower: one ViT layer, some projections
    few = target_module_names(model, LoraSettings(target=["llm", "visual_tokenizer.backbone.layers.-1"],
                                                  modules=["q_proj", "v_proj"]))
    assert len(few) == 2 * n_llm + 2 and all(n.endswith(("q_proj", "v_proj")) for n in few)


def test_a_target_without_projections_is_refused():
    with pytest.raises(ValueError, match="train the head or the visual table fully"):
        target_module_names(tiny_model(), LoraSettings(target=["visual_tokenizer.head"]))
    with pytest.raises(ValueError, match="unknown keys"):
        LoraSettings.from_config({"rank": 4})


# --------------------------------------------------------------------------------------------------- training
STAGE3 = {"name": "s3", "trainable": ["all"], "lr": 1e-2, "module_lr": {"visual_tokenizer": 3e-3},
          "warmup_ratio": 0.0, "min_lr_ratio": 0.1}
LORA_SETTINGS = {"r": 4, "alpha": 8, "dropout": 0.1, "target": ["llm", "visual_tokenizer.backbone"]}


class Losses(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def _fit(steps, callbacks=(), ckpt_path=None, checkpoint_dir=None, lora=LORA_SETTINGS):
    """A hand-made OvisLitModule (the tiny spec + LoRA) on one fixed batch, repeated: what a resumed run sees does
    not depend on where the data stream was."""
    from ovis_lit.model.source import ModelSource
    from ovis_lit.training.module import OvisLitModule

    from .tiny import tiny_spec

    torch.manual_seed(0)
    module = OvisLitModule(ModelSource(spec=tiny_spec(llm="qwen2", vocab=64), lora=lora), STAGE3)
    ids, mask, labels, pixels = _batch(None, crops_per_sample=(2, 0, 1), pad_extra=(0, 3, 1), per_crop=4)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": pixels}
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    callbacks = list(callbacks)
    if checkpoint_dir is not None:
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(dirpath=checkpoint_dir, every_n_train_steps=2,
                                                             save_top_k=-1))
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=checkpoint_dir is not None,
                        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0,
                        callbacks=callbacks)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader([batch] * steps, batch_size=None),
                ckpt_path=ckpt_path, weights_only=True)
    return module, before


def test_lora_trains_its_adapters_and_the_head_while_the_adapted_bases_stay_bitwise():
    losses = Losses()
    module, before = _fit(4, [losses])
    model = module.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    adapters = {n for n in before if is_adapter_parameter(n)}
    assert adapters and adapters <= trainable
    # everything in the adapted parts but the adapters is frozen (norms, embeddings, the base projections)
    in_targets = {n for n in before if n.startswith(("llm.", "visual_tokenizer.backbone."))}
    assert trainable & in_targets == adapters
    # the stage (s3: all) still trains the visual head and the visual table fully
    assert trainable - adapters == {n for n in before if n.startswith(("visual_tokenizer.head", "vte."))}
    for name, param in model.named_parameters():
        if name in trainable:
            assert not torch.equal(param, before[name]), f"{name} should have trained"
        else:
            assert torch.equal(param, before[name]), f"{name} is frozen but changed"
    assert losses.losses[-1] < losses.losses[0]
    # per-module learning rates reach the adapters of the parts they name
    groups = {g["name"]: g for g in module.optimizers().optimizer.param_groups}
    vit_adapter = model.visual_tokenizer.backbone.encoder.layers[0].self_attn.q_proj.lora_A["default"].weight
    assert any(p is vit_adapter for p in groups["visual_tokenizer"]["params"])


def test_lora_resumes_exactly_with_dropout(tmp_path):
    """Losses after resuming from step 2 equal, bitwise, those of the run that went on (LoRA dropout on)."""
    straight = Losses()
    _fit(4, [straight], checkpoint_dir=tmp_path / "ckpt")
    ckpt = next((tmp_path / "ckpt").glob("*step=2.ckpt"))
    resumed = Losses()
    torch.manual_seed(7)  # another global RNG state than the first run's: the masks must not depend on it
    _fit(4, [resumed], ckpt_path=str(ckpt))
    assert len(straight.losses) == 4 and resumed.losses == straight.losses[2:]


def test_a_lora_checkpoint_loads_for_evaluation_with_its_adapters_merged(tmp_path):
    from ovis_lit.evaluation.loading import model_from_lightning
    from ovis_lit.model.lora import has_adapters

    module, _ = _fit(2, checkpoint_dir=tmp_path / "ckpt")
    model, hparams = model_from_lightning(next((tmp_path / "ckpt").glob("*step=2.ckpt")))
    assert hparams["model"]["lora"]["r"] == 4 and has_adapters(model)
    expected = _logits(module.model.eval())
    merged = merge_adapters(model).eval()
    assert not any(".lora_" in n for n in merged.state_dict())
    torch.testing.assert_close(_logits(merged), expected, atol=1e-5, rtol=0)


def test_an_adapter_that_the_stage_freezes_entirely_is_refused():
    from ovis_lit.model.source import ModelSource
    from ovis_lit.training.module import OvisLitModule

    from .tiny import tiny_spec

    stage2 = {**STAGE3, "trainable": ["visual_tokenizer.head", "vte"], "module_lr": {}}
    module = OvisLitModule(ModelSource(spec=tiny_spec(), lora={"target": ["llm"]}), stage2)
    with pytest.raises(ValueError, match="the stage trains none of it"):
        module.configure_model()


def test_qlora_on_a_cpu_is_refused_before_anything_loads(tmp_path, monkeypatch):
    from ovis_lit.model import source

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(source.ModelSource, "build", no_build)
    # (no data: nothing is read before the refusal)
    cfg = compose_train(["stage=s3", "model.lora={r: 4, quantize: nf4}"], tmp_path, tmp_path / "no-data")
    with pytest.raises(RuntimeError, match="pip install bitsandbytes"):
        build_stage(cfg)
    with pytest.raises(ValueError, match="quantize must be null"):
        LoraSettings.from_config({"quantize": "int3"})


# ----------------------------------------------------------------------------------------- saving and merging
@pytest.fixture
def lora_model():
    """A tiny model with adapters whose B is non-zero (as after training), in eval mode."""
    torch.manual_seed(0)
    model = tiny_model(llm="qwen2", vocab=64)
    add_adapters(model, LoraSettings(r=4, alpha=8, dropout=0.1))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B." in name:
                param.normal_(std=0.2)
    return model.eval()


def _logits(model, seed=1):
    torch.manual_seed(seed)
    ids, mask, labels, pixels = _batch(None, crops_per_sample=(2, 0, 1), pad_extra=(0, 3, 1),
                                       per_crop=model.visual_tokenizer.tokens_per_crop())
    with torch.no_grad():
        return model(ids, mask, labels, pixels, return_logits=True).logits


def _export_base_and_adapters(model, root):
    from ovis_lit.data import shapes
    from ovis_lit.interop.original_export import export_original
    from ovis_lit.processing.image import ImagePreprocessor
    from ovis_lit.processing.processor import OvisProcessor

    processor = OvisProcessor(shapes.tokenizer(), "qwen", ImagePreprocessor(side=42), tokens_per_crop=4)
    export_original(model, processor, root / "export", state=base_state_dict(model))
    save_adapters(model, root / "adapters")
    return root / "export", root / "adapters"


def test_saved_adapters_are_in_peft_layout_and_peft_reads_them(lora_model, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    _, adapters = _export_base_and_adapters(lora_model, tmp_path)
    config = json.loads((adapters / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    keys = list(load_file(adapters / "adapter_model.safetensors"))
    assert keys and all(k.startswith("base_model.model.") and ".lora_" in k and ".default." not in k for k in keys)
    # peft's own loader on the plain base model gives the same function
    torch.manual_seed(0)
    base = tiny_model(llm="qwen2", vocab=64)
    base.load_state_dict(base_state_dict(lora_model))
    peft_model = PeftModel.from_pretrained(base, str(adapters)).eval()
    torch.testing.assert_close(_logits(peft_model.base_model.model), _logits(lora_model), atol=1e-6, rtol=0)


def test_merge_lora_script_gives_a_full_export_with_the_same_logits(lora_model, tmp_path):
    import importlib.util

    from ovis_lit.evaluation.loading import load_for_eval
    from ovis_lit.interop.original import load_original

    export, adapters = _export_base_and_adapters(lora_model, tmp_path)
    spec = importlib.util.spec_from_file_location("merge_lora", REPO / "scripts" / "merge_lora.py")
    merge_lora = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge_lora)
    merge_lora.main([str(export), str(adapters), str(tmp_path / "merged")])
    merged, _ = load_original(tmp_path / "merged")  # the original layout, plain modules and names
    assert not any(is_adapter_parameter(n) or ".base_layer." in n for n in merged.state_dict())
    expected = _logits(lora_model)
    torch.testing.assert_close(_logits(merged.eval()), expected, atol=1e-5, rtol=0)
    # evaluation: the base export plus the adapters, merged on load
    model, _, info = load_for_eval(export, adapters=adapters)
    assert "LoRA adapters" in info["format"]
    torch.testing.assert_close(_logits(model), expected, atol=1e-5, rtol=0)
    # the base alone is another function (the adapters matter)
    base, _ = load_original(export)
    assert (_logits(base.eval()) - expected).abs().max() > 1e-3


def test_pickled_or_mismatched_adapters_are_refused(lora_model, tmp_path):
    _, adapters = _export_base_and_adapters(lora_model, tmp_path)
    (adapters / "adapter_model.safetensors").rename(adapters / "adapter_model.bin")
    with pytest.raises(FileNotFoundError, match="pickled adapter_model.bin, which is never loaded"):
        load_adapters(tiny_model(llm="qwen2", vocab=64), adapters)
    # adapters of another model (other projections) do not fit
    _, other = _export_base_and_adapters(lora_model, tmp_path / "other")
    with pytest.raises(ValueError, match="does not fit the model"):
        load_adapters(tiny_model(llm="gemma2", vocab=64), other)


def test_merge_adapters_restores_the_plain_modules(lora_model):
    expected = _logits(lora_model)
    merged = merge_adapters(lora_model)
    assert set(merged.state_dict()) == set(tiny_model(llm="qwen2", vocab=64).state_dict())
    torch.testing.assert_close(_logits(merged), expected, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_lora_under_two_process_fsdp_equals_one_process(fsdp_runs):
    """LoRA (dropout on) under FSDP2 on 2 processes, with selective activation checkpointing, gives the losses and
    weights of one process; the adapted bases get no gradient and no optimiser state. (The fits: conftest's
    `fsdp_runs`, job `lora`.)"""
    from safetensors.torch import load_file

    losses_1, _ = fsdp_runs.result("single", "lora")
    losses_2, reports = fsdp_runs.result("fsdp", "lora")
    assert len(losses_1) == 4
    assert losses_2 == pytest.approx(losses_1, rel=1e-5, abs=1e-6) and losses_1[-1] < losses_1[0]
    for report in reports:
        assert report["dtensor"] == report["params"]
        adapters = {n for n in report["trainable"] if is_adapter_parameter(n)}
        assert adapters and report["with_optimizer_state"] == report["trainable"]
        assert not any(n.startswith("llm.") for n in set(report["trainable"]) - adapters)
        assert report["frozen_with_grad"] == []
    one = load_file(fsdp_runs.dir("single", "lora") / "full.safetensors")
    two = load_file(fsdp_runs.dir("fsdp", "lora") / "full.safetensors")
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6, msg=k)


# ------------------------------------------------------------------------------------------------ memory planner
def test_memory_plan_of_lora_and_qlora_by_hand():
    """The tiny Qwen2 LLM (hidden 32, MLP 64, 4 heads of 8, 2 KV heads), 2 layers, adapters r=4 on the LLM only,
    the stage training only the LLM (so only adapters train)."""
    from ovis_lit.training.memory import NF4_BYTES, Workload, plan

    from .tiny import tiny_spec

    spec = tiny_spec(llm="qwen2", vocab=64)
    work = Workload(batch_size=2, text_tokens=10, crops=1)  # 10 + 4 visual tokens per sample
    full = plan(spec, ["llm"], work, compute_dtype="float32")
    n_all = full.details["parameters"]
    # per layer, r * (in + out): q 4*(32+32), k and v 4*(32+16), o 4*(32+32), gate and up 4*(32+64), down 4*(64+32)
    adapters = 2 * (256 + 192 + 192 + 256 + 384 + 384 + 384)
    lora = plan(spec, ["llm"], work, compute_dtype="float32", lora={"r": 4, "dropout": 0.0, "target": ["llm"]})
    assert lora.details["adapters"] == lora.details["trainable"] == adapters == 4096
    assert lora.parameters == (n_all + adapters) * 4
    assert (lora.gradients, lora.optimizer) == (adapters * 4, 2 * adapters * 4)
    tokens = 2 * 14
    assert lora.activations - full.activations == tokens * 14 * 4 * 4  # 14 projections x rank 4 x fp32
    # QLoRA: the 14 projections' weights (2 x (1024 + 512 + 512 + 1024 + 3 x 2048)) in NF4
    quantized = 2 * (1024 + 512 + 512 + 1024 + 3 * 2048)
    qlora = plan(spec, ["llm"], work, compute_dtype="float32",
                 lora={"r": 4, "dropout": 0.0, "target": ["llm"], "quantize": "nf4"})
    assert qlora.details["quantized"] == quantized
    assert qlora.parameters == pytest.approx((n_all + adapters - quantized) * 4 + quantized * NF4_BYTES)
    assert qlora.gather_buffers == 2048 * 4  # the largest weight, dequantized
    # dropout keeps each projection's dropped-out input: per layer 3 x 32 (q, k, v) + 32 (o) + 2 x 32 + 64 (down)
    dropout = plan(spec, ["llm"], work, compute_dtype="float32", lora={"r": 4, "dropout": 0.1, "target": ["llm"]})
    assert dropout.activations - lora.activations == tokens * 2 * 256 * 4
    # full checkpointing recomputes both
    ckpt = plan(spec, ["llm"], work, compute_dtype="float32", checkpointing="full",
                lora={"r": 4, "dropout": 0.1, "target": ["llm"]})
    assert ckpt.activations == plan(spec, ["llm"], work, compute_dtype="float32", checkpointing="full").activations


def test_plan_memory_methods_table_for_ovis25_9b(monkeypatch, capsys):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("plan_memory", REPO / "scripts" / "plan_memory.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(sys, "argv", ["plan_memory.py", "model=ovis25_9b", "stage=s3", "recipe.s3.batch_size=1",
                                      "--methods"])
    script.main()
    rows = {line.split()[0]: line.split()[-3:] for line in capsys.readouterr().out.splitlines()
            if line.startswith(("full", "LoRA", "QLoRA"))}
    assert rows["full"] == ["no", "no", "no"]  # 16 bytes per parameter: 137 GiB before activations
    assert rows["LoRA"][1:] == ["fits", "fits"] and rows["QLoRA"][1:] == ["fits", "fits"]


@pytest.mark.slow
def test_a_lora_stage_writes_the_base_export_and_the_adapters_and_they_merge(tmp_path, shapes_data):
    """train.py's run_stage with model.lora: export/ holds the base (original layout, no adapter names),
    adapters/ peft's layout; merged they are the trained model."""
    import importlib.util

    from ovis_lit.interop.original import load_original
    from ovis_lit.training.run import run_stage

    cfg = compose_train(["stage=s3", "recipe.s3.max_steps=2", "recipe.s3.batch_size=2", "evaluate=false",
                         "stage.val_batches=0", "logger=none", "model.lora={r: 4, target: [llm]}"],
                        tmp_path / "run", shapes_data)
    summary, stage = run_stage(cfg)
    export, adapters = tmp_path / "run" / "export", tmp_path / "run" / "adapters"
    assert summary["adapters"] == str(adapters) and (adapters / "adapter_model.safetensors").is_file()
    assert summary["trainable_parameters"] == sum(p.numel() for p in stage.module.model.parameters()
                                                  if p.requires_grad)
    base, _ = load_original(export)
    assert not any(".lora_" in n or ".base_layer." in n for n in base.state_dict())
    spec = importlib.util.spec_from_file_location("merge_lora", REPO / "scripts" / "merge_lora.py")
    merge_lora = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge_lora)
    merged, _ = load_original(merge_lora.main([str(export), str(adapters), str(tmp_path / "merged")]))
    trained = stage.module.model.eval()
    torch.manual_seed(1)
    ids, mask, labels, pixels = _batch(None, crops_per_sample=(1, 0), pad_extra=(0, 2), per_crop=4, text_len=5)
    pixels = torch.randn(1, 3, 64, 64)  # ovis_tiny's 64 px crops
    with torch.no_grad():
        expected = trained(ids, mask, labels, pixels, return_logits=True).logits
        got = merged.eval()(ids, mask, labels, pixels, return_logits=True).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
