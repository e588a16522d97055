"""The LightningModule, by stage: freezing, per-module learning rates, loss going down."""

import lightning as L
import pytest
import torch

from ovis_lit.training.optim import param_groups
from ovis_lit.training.run import build_stage, stage_settings

from .helpers import compose_train


@pytest.fixture(scope="module")
def data_dir(shapes_data):
    return shapes_data  # conftest's, built once per session


def _fit(cfg, steps):
    built = build_stage(cfg)  # train.py's processor, DataModule and module; a quiet Trainer of our own
    datamodule, module = built.datamodule, built.module
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        limit_val_batches=0, enable_model_summary=False, gradient_clip_val=1.0,
    )
    trainer.fit(module, datamodule=datamodule)
    return module, before, trainer


@pytest.mark.parametrize("stage", ["0", "1", "2", "3"])
def test_frozen_parameters_stay_bitwise_and_trainable_ones_move(stage, tmp_path, data_dir):
    cfg = compose_train([f"stage=s{stage}", "recipe.s1.lr=1e-3", "recipe.s2.lr=1e-3"], tmp_path, data_dir)
    module, before, trainer = _fit(cfg, steps=3)
    assert trainer.global_step == 3
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable
    for name, param in module.model.named_parameters():
        if name in trainable:
            assert not torch.equal(param, before[name]), f"{name} should have trained in stage {stage}"
        else:
            assert torch.equal(param, before[name]), f"{name} is frozen in stage {stage} but changed"
    frozen_llm = not any(n.startswith("llm.") for n in trainable)
    assert frozen_llm == (stage in ("1", "2"))
    if stage == "0":  # the LLM alone, on text (its batches hold no image)
        assert trainable == {n for n, _ in module.model.named_parameters() if n.startswith("llm.")}
    if stage == "1":  # only the last ViT block of the backbone
        layers = {n.split(".")[4] for n in trainable if n.startswith("visual_tokenizer.backbone.encoder.layers.")}
        assert layers == {"2"}
    # the unused final norm / pooling head of the ViT never trains
    assert not any(n.startswith(("visual_tokenizer.backbone.post_layernorm", "visual_tokenizer.backbone.head"))
                   for n in trainable)


def test_each_module_learning_rate_reaches_the_optimizer(tmp_path, data_dir):
    cfg = compose_train(
        ["stage=s3", "recipe.s3.lr=2e-3",
         "++recipe.s3.module_lr={vte:5e-4,visual_tokenizer:1e-4,visual_tokenizer.head:3e-4}"],
        tmp_path, data_dir,
    )
    module = build_stage(cfg).module
    module.configure_model()
    groups = {g["name"]: g for g in param_groups(module.model, 2e-3, stage_settings(cfg)["module_lr"])}
    assert {k: g["lr"] for k, g in groups.items()} == {
        "default": 2e-3, "vte": 5e-4, "visual_tokenizer": 1e-4, "visual_tokenizer.head": 3e-4}
    head = module.model.visual_tokenizer.head[0].weight
    assert any(p is head for p in groups["visual_tokenizer.head"]["params"])  # most specific pattern wins
    n_params = sum(len(g["params"]) for g in groups.values())
    assert n_params == sum(1 for p in module.model.parameters() if p.requires_grad)


def test_unknown_module_lr_pattern_is_an_error():
    from .tiny import tiny_model

    with pytest.raises(ValueError, match="unknown module pattern"):
        param_groups(tiny_model(), 1e-3, {"visual_tokenizr": 1e-4})


def test_warmup_then_cosine(tmp_path, data_dir):
    """The module's schedule (transformers', as the original's HF Trainer): linear warmup from 0, then cosine to
    min_lr_ratio; the numbers of the hand-written schedule it replaced after warmup, and step/warmup during it."""
    import math
    from types import SimpleNamespace

    from .tiny import tiny_model

    cfg = compose_train(["stage=s3", "recipe.s3.lr=1.0", "stage.warmup_ratio=0.1", "stage.min_lr_ratio=0.1",
                         "~recipe.s3.module_lr"], tmp_path, data_dir)
    module = build_stage(cfg).module
    module.model = tiny_model()
    module._trainer = SimpleNamespace(estimated_stepping_batches=100)
    schedule = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(101):
        lrs.append(schedule.get_last_lr()[0])
        schedule.optimizer.step()
        schedule.step()
    assert lrs[:11] == pytest.approx([s / 10 for s in range(11)])
    for step in range(10, 101):
        assert lrs[step] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 10) / 90)))
    assert lrs[55] == pytest.approx(0.1 + 0.9 * 0.5) and lrs[100] == pytest.approx(0.1)


def _losses(cfg, steps: int) -> list[float]:
    """The training loss of each of `steps` steps of train.py's stage for `cfg`."""
    built = build_stage(cfg)
    datamodule, module = built.datamodule, built.module
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              limit_val_batches=0, enable_model_summary=False, callbacks=[Record()]).fit(module, datamodule=datamodule)
    return losses


def test_loss_decreases_on_the_synthetic_data(tmp_path, data_dir):
    losses = _losses(compose_train(["stage=s3", "recipe.s3.batch_size=16"], tmp_path, data_dir), 60)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)


def test_text_only_stage_lowers_the_text_loss(tmp_path, data_dir):
    """Stage s0 (the random LLM's language-model pretraining on the data's text, images dropped) learns."""
    losses = _losses(compose_train(["stage=s0", "recipe.s0.batch_size=8"], tmp_path, data_dir), 30)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)


def test_module_group_options_reach_the_module_and_checkpoints_hold_plain_values(tmp_path, data_dir):
    """module.optimizer (AdamW's betas, eps), the recipe's activation checkpointing and module.fsdp get to the
    LightningModule build_stage makes; its hyper-parameters (saved in every checkpoint, read back with
    weights_only) are plain values from which evaluation rebuilds the same model."""
    import json
    from types import SimpleNamespace

    from ovis_lit.model.source import build_model

    cfg = compose_train(["stage=s3", "module.optimizer.betas=[0.8,0.9]", "module.optimizer.eps=1e-6",
                         "recipe.activation_checkpointing.llm=full", "module.fsdp.cpu_offload=true"],
                        tmp_path, data_dir)
    module = build_stage(cfg).module
    module.configure_model()
    module._trainer = SimpleNamespace(estimated_stepping_batches=10)
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert {(tuple(g["betas"]), g["eps"]) for g in optimizer.param_groups} == {((0.8, 0.9), 1e-6)}
    model = module.model
    assert model.llm.is_activation_checkpointing and not model.visual_tokenizer.backbone.is_activation_checkpointing
    hparams = json.loads(json.dumps(module.hparams))  # plain values only
    assert hparams["fsdp"]["cpu_offload"] is True and hparams["model"]["name"] == "ovis_tiny"
    rebuilt = build_model(hparams["model"])
    assert {n: p.shape for n, p in rebuilt.named_parameters()} == {n: p.shape for n, p in model.named_parameters()}
