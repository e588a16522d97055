"""Stages for every generation (Ovis1.6 SigLIP, Ovis2 AIMv2, Ovis2.5 NaViT): what each stage trains, the original's
`train_modules` syntax, and the re-initialisation options (ViT layers, visual table)."""

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from ovis_lit.training.optim import param_groups
from ovis_lit.training.reinit import apply_stage_reinit, reinit_vit_layers
from ovis_lit.training.run import build_processor, build_stage, stage_settings
from ovis_lit.training.train_modules import parse_train_modules

from .helpers import compose_train

GENERATIONS = ["ovis_tiny", "ovis2_tiny", "ovis25_tiny"]
NEW_GENERATIONS = ["ovis2_tiny", "ovis25_tiny"]  # ovis_tiny's stages: test_training.py, through Lightning


def _module(model, overrides, tmp_path):
    cfg = compose_train([f"model={model}", *overrides], tmp_path, tmp_path)
    module = build_stage(cfg).module  # train.py's module for this stage
    module.configure_model()
    return cfg, module


def _batch(cfg):
    processor = build_processor(cfg)
    images = [Image.new("RGB", (64, 48), (200, 40, 40)), Image.new("RGB", (40, 64), (40, 40, 200))]
    answer = "<think>\nred first\n</think>\n\nred" if processor.chat_format == "qwen3" else "red"
    samples = [
        processor.conversation([{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": answer}],
                               images[:1]),
        processor.conversation([{"from": "human", "value": "<image>\nAnd this?"}, {"from": "gpt", "value": "blue"}],
                               images[1:]),
    ]
    return processor.collate(samples)


def _steps(module, batch, n=2, lr=1e-2):
    stage = module.hparams.stage
    optimizer = torch.optim.AdamW(param_groups(module.model, lr, stage["module_lr"]))
    module.model.train()
    for _ in range(n):
        out = module(batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("stage", ["s1", "s2", "s3"])
@pytest.mark.parametrize("model", NEW_GENERATIONS)
def test_each_generation_trains_what_its_stage_says(model, stage, tmp_path):
    cfg, module = _module(model, [f"stage={stage}"], tmp_path)
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    _steps(module, _batch(cfg))
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    for name, param in module.model.named_parameters():
        if name in trainable:
            assert not torch.equal(param, before[name]), f"{model} {stage}: {name} should have trained"
        else:
            assert torch.equal(param, before[name]), f"{model} {stage}: {name} is frozen but changed"
    vit = "visual_tokenizer.backbone."
    layers = {n.split(".")[4] for n in trainable if n.startswith(vit + "encoder.layers.")}
    n_layers = cfg.model.spec.backbone.config.num_hidden_layers
    if stage == "s1":  # head, table and the last ViT block
        assert layers == {str(n_layers - 1)}
        assert {n for n in trainable if not n.startswith(vit + "encoder.layers.")} == {
            "visual_tokenizer.head.0.weight", "visual_tokenizer.head.1.weight", "visual_tokenizer.head.1.bias",
            "vte.weight"}
    elif stage == "s2":  # the visual tokenizer (ViT, head) and the table
        assert layers == {str(i) for i in range(n_layers)}
        assert any(n.startswith(vit + "embeddings.") for n in trainable)
        assert not any(n.startswith("llm.") for n in trainable)
    else:
        assert any(n.startswith("llm.") for n in trainable) and any(n.startswith(vit) for n in trainable)
    unused = ("post_layernorm.", "head.", "rms_norm.")  # final norms / pooling heads the features never reach
    assert not any(n.startswith(tuple(vit + u for u in unused)) for n in trainable)


def test_train_modules_string_sets_trainable_and_module_lr(tmp_path):
    spec = '"visual_tokenizer.head:1e-4|vte|visual_tokenizer.vit.last_block:5e-5"'  # the original's names
    _, module = _module("ovis25_tiny", ["stage=s1", f"stage.train_modules={spec}", "recipe.s1.lr=2e-3"], tmp_path)
    settings = module.hparams.stage
    assert settings["trainable"] == ["visual_tokenizer.head", "vte", "visual_tokenizer.vit.last_block"]
    assert settings["module_lr"] == {"visual_tokenizer.head": 1e-4, "visual_tokenizer.vit.last_block": 5e-5}
    groups = {g["name"]: g for g in param_groups(module.model, settings["lr"], settings["module_lr"])}
    assert {k: g["lr"] for k, g in groups.items()} == {
        "default": 2e-3, "visual_tokenizer.head": 1e-4, "visual_tokenizer.vit.last_block": 5e-5}
    last = module.model.visual_tokenizer.backbone.encoder.layers[-1]
    assert {id(p) for p in last.parameters()} == {id(p) for p in groups["visual_tokenizer.vit.last_block"]["params"]}
    assert [id(p) for p in groups["default"]["params"]] == [id(module.model.vte.weight)]


@pytest.mark.parametrize("model", ["ovis_tiny", "ovis2_tiny"])
def test_module_lr_string_and_original_layer_names(model, tmp_path):
    _, module = _module(model, ["stage=s2", 'recipe.s2.module_lr="visual_tokenizer.backbone.layer.-1:3e-4|vte:1e-4"'],
                        tmp_path)
    assert module.hparams.stage["module_lr"] == {"visual_tokenizer.backbone.layer.-1": 3e-4, "vte": 1e-4}
    groups = {g["name"]: g for g in param_groups(module.model, 1e-3, module.hparams.stage["module_lr"])}
    last = module.model.visual_tokenizer.backbone.encoder.layers[-1]
    assert {id(p) for p in last.parameters()} == {id(p) for p in groups["visual_tokenizer.backbone.layer.-1"]["params"]}


@pytest.mark.parametrize("text", ["a:", "a:b", ":1e-4", "a:1:2", "a|a", "a:-1"])
def test_bad_train_modules_strings_are_refused(text):
    with pytest.raises(ValueError):
        parse_train_modules(text)


def test_module_lr_string_needs_every_rate():
    with pytest.raises(ValueError, match="no learning rate"):
        parse_train_modules("vte:1e-4|llm", need_lr=True)
    assert parse_train_modules(" all : 2e-5 ") == {"all": 2e-5}


# ------------------------------------------------------------------------------------------------- re-initialising
def _perturbed(module: torch.nn.Module) -> torch.nn.Module:
    """Weights unlike any initialisation (norm weights are not 1, biases not 0), as a trained backbone's."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.rand_like(p) + 0.5)
    return module


@pytest.mark.parametrize("family", ["siglip_vision_model", "clip_vision_model", "aimv2_vision_model",
                                    "siglip2_vision_model"])
def test_vit_layer_reinit_of_a_loaded_backbone(family, tmp_path):
    """From a checkpoint directory (transformers marks loaded tensors, and its init functions skip marked ones)."""
    from ovis_lit.model.vision import build_vision_backbone

    from .tiny import VISION

    config = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2, **VISION[family])
    _perturbed(build_vision_backbone(family, config)).save_pretrained(tmp_path)
    backbone = build_vision_backbone(family, pretrained=tmp_path)
    before = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    assert reinit_vit_layers(backbone, 1) == [1, 2]
    for name, param in backbone.named_parameters():
        if name.startswith(("encoder.layers.1.", "encoder.layers.2.")):
            assert not torch.equal(param, before[name]), f"{family}: {name} was not re-initialised"
        else:
            assert torch.equal(param, before[name]), f"{family}: {name} changed"


def test_vit_layer_reinit_of_the_navit(tmp_path):
    cfg = compose_train(["model=ovis25_tiny"], tmp_path, tmp_path)
    from ovis_lit.model.build import build_ovis

    backbone = _perturbed(build_ovis(OmegaConf.to_container(cfg.model.spec, resolve=True)).visual_tokenizer.backbone)
    before = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    assert reinit_vit_layers(backbone, -1) == [1]
    for name, param in backbone.named_parameters():
        if name.startswith("encoder.layers.1."):
            assert not torch.equal(param, before[name]), name
            if name.endswith("layer_norm1.weight"):
                assert torch.equal(param, torch.ones_like(param))  # PyTorch's default LayerNorm
        else:
            assert torch.equal(param, before[name]), name
    with pytest.raises(ValueError, match="has 2 layers"):
        reinit_vit_layers(backbone, 2)


@pytest.mark.parametrize("model", GENERATIONS)
def test_stage_reinit_options(model, tmp_path):
    """visual_re_init_layer_begin re-draws those layers and trains them (here more than stage 1's last block);
    vte_re_init gives the table the text table's mean and std."""
    torch.manual_seed(0)
    _, plain = _module(model, ["stage=s1"], tmp_path)
    torch.manual_seed(0)  # the same built weights, then the options
    _, module = _module(model, ["stage=s1", "stage.visual_re_init_layer_begin=0", "stage.vte_re_init=true"], tmp_path)
    weights = dict(module.model.named_parameters())
    for name, param in plain.model.named_parameters():
        if name.startswith("visual_tokenizer.backbone.encoder.layers."):
            if param.ndim > 1:  # (freshly built norms are at their initial values already)
                assert not torch.equal(param, weights[name]), f"{name} was not re-initialised"
            assert weights[name].requires_grad, f"{name} was re-initialised but is frozen"
        elif name != "vte.weight":
            assert torch.equal(param, weights[name]), name
    text = module.model.llm.get_input_embeddings().weight.detach()
    table = module.model.vte.weight.detach()
    assert plain.model.vte.weight.std() > 0.5  # N(0, 1) without the option; the text table's std is 0.02
    assert abs(table.std() - text.std()) < 0.05 * text.std()
    assert abs(table.mean() - text.mean()) < 0.05 * text.std()


def test_reinit_is_ignored_when_the_stage_starts_from_ovis_weights(tmp_path, caplog):
    cfg = compose_train(["model=ovis2_tiny"], tmp_path, tmp_path)
    from ovis_lit.model.build import build_ovis

    model = build_ovis(OmegaConf.to_container(cfg.model.spec, resolve=True))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stage = {"name": "s2", "visual_re_init_layer_begin": 0, "vte_re_init": True}
    assert apply_stage_reinit(model, stage, from_ovis=True) == []
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert "ignored" in caplog.text


def test_a_chain_gives_the_options_to_one_stage_through_its_recipe(tmp_path):
    """`recipe.s1.*` reaches stage s1 only (a `stage.*` override would reach every stage of a chain; the stages
    after the first start from Ovis weights, where the options are ignored)."""
    overrides = ["++recipe.s1.visual_re_init_layer_begin=-1", "++recipe.s1.vte_re_init=true",
                 '++recipe.s1.train_modules="visual_tokenizer.head|vte:1e-3"']
    s1 = stage_settings(compose_train(["model=ovis25_tiny", "stage=s1", *overrides], tmp_path, tmp_path))
    s2 = stage_settings(compose_train(["model=ovis25_tiny", "stage=s2", *overrides], tmp_path, tmp_path))
    assert (s1["visual_re_init_layer_begin"], s1["vte_re_init"]) == (-1, True)
    assert s1["trainable"] == ["visual_tokenizer.head", "vte"] and s1["module_lr"] == {"vte": 1e-3}
    assert (s2["visual_re_init_layer_begin"], s2["vte_re_init"], s2["trainable"]) == (None, False, ["visual_tokenizer", "vte"])


@pytest.mark.parametrize("model", ["ovis2_1b", "ovis2_8b", "ovis25_2b", "ovis25_9b"])
def test_released_configs_resolve_every_stage(model, tmp_path):
    """The stage files' module names on the full-size AIMv2 and NaViT models (meta device, no weights)."""
    from ovis_lit.model.build import build_ovis
    from ovis_lit.training.freezing import apply_trainable

    cfg = compose_train([f"model={model}"], tmp_path, tmp_path)
    built = build_ovis(OmegaConf.to_container(cfg.model.spec, resolve=True), device="meta")
    n_layers = len(built.visual_tokenizer.backbone.encoder.layers)
    for stage in ("s1", "s2", "s3"):
        settings = stage_settings(compose_train([f"model={model}", f"stage={stage}"], tmp_path, tmp_path))
        names = apply_trainable(built, list(settings["trainable"]))
        layers = {n.split(".")[4] for n in names if n.startswith("visual_tokenizer.backbone.encoder.layers.")}
        assert layers == ({str(n_layers - 1)} if stage == "s1" else {str(i) for i in range(n_layers)}), stage
        assert any(n.startswith("llm.") for n in names) == (stage == "s3")


def test_the_text_stage_is_refused_by_a_recipe_without_it(tmp_path):
    """Stage s0 (a random LLM's text pretraining) has numbers for the tiny Ovis (and ovis2_tiny, which shares its
    recipe) only: a model that starts from a pretrained LLM refuses it, by name."""
    assert stage_settings(compose_train(["stage=s0"], tmp_path, tmp_path))["trainable"] == ["llm"]
    with pytest.raises(ValueError, match="no numbers for stage 's0'"):
        stage_settings(compose_train(["model=ovis_9b", "stage=s0"], tmp_path, tmp_path))
