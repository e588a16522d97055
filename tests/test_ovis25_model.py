"""The Ovis2.5 model imported from the original layout against the reference fixture: merged embeddings, logits,
loss (full logits and training path), gradients, greedy generation (alone and left-padded batch), export."""

import json

import pytest
import torch
from safetensors.torch import load_file

from .test_ovis25 import FIXTURE25, _sample, expected25, tensors25  # noqa: F401  (module fixtures)


@pytest.fixture(scope="module")
def ovis25():
    """The fixture checkpoint imported into ovis-lit, the ViT's attention computed as the CPU stand-in of
    flash-attn that made the fixture (eager); `test_vit_sdpa_matches_eager` covers the default kernel."""
    from ovis_lit.interop.ovis25 import load_ovis25

    model, processor = load_ovis25(FIXTURE25 / "checkpoint", vit_attn_implementation="eager")
    return model.eval(), processor


def test_visual_tokens_match_reference(ovis25, tensors25):
    model, _ = ovis25
    with torch.no_grad():
        tokens = model.visual_tokenizer(tensors25["forward.sample0.pixel_values"], torch.tensor([[1, 4, 18]]))
    ref = tensors25["forward.sample0.visual_tokens"]
    assert tokens.shape == (ref.shape[0], 1, ref.shape[1])
    assert (tokens[:, 0] - ref).abs().max().item() <= 1e-6


def test_vit_sdpa_matches_eager(ovis25, tensors25):
    """The default CPU kernel (sdpa per group of equal-length sequences) against eager, on windows and full layers."""
    model, _ = ovis25
    vit = model.visual_tokenizer.backbone
    pixel_values, grids = tensors25["forward.batch.pixel_values"], tensors25["forward.batch.grid_thws"]
    with torch.no_grad():
        eager = vit(pixel_values, grids)
        vit.config._attn_implementation = "sdpa"
        try:
            sdpa = vit(pixel_values, grids)
        finally:
            vit.config._attn_implementation = "eager"
    assert (sdpa - eager).abs().max().item() <= 1e-5


def _batch(tensors):
    return {k.rsplit(".", 1)[-1]: v for k, v in tensors.items() if k.startswith("forward.batch.")}


def test_forward_matches_reference(ovis25, tensors25):
    model, _ = ovis25
    b = _batch(tensors25)
    with torch.no_grad():
        out = model(b["input_ids"], b["attention_mask"], b["labels"], b["pixel_values"], return_logits=True,
                    grid_thws=b["grid_thws"])
    mask = b["attention_mask"].bool()
    assert torch.equal(out.merged.attention_mask.bool(), mask)
    assert (out.merged.inputs_embeds - tensors25["forward.merged.inputs_embeds"])[mask].abs().max().item() <= 1e-6
    assert (out.logits - tensors25["forward.logits"])[mask].abs().max().item() <= 1e-5
    assert abs(out.loss.item() - tensors25["forward.loss"].item()) <= 1e-5


def test_training_loss_path_matches_reference(ovis25, expected25, tensors25):
    model, _ = ovis25
    b = _batch(tensors25)
    with torch.no_grad():
        out = model(b["input_ids"], b["attention_mask"], b["labels"], b["pixel_values"], grid_thws=b["grid_thws"])
    assert out.logits is None  # the sparse (training) path ran
    assert abs(out.loss.item() - tensors25["forward.loss"].item()) <= 1e-5
    assert abs(out.loss.item() - expected25["loss"]) <= 1e-5


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "plain"])
def test_gradients_match_reference(tensors25, fast_path):
    from ovis_lit.interop.ovis25 import load_ovis25, ovis25_state_dict

    model, _ = load_ovis25(FIXTURE25 / "checkpoint", vit_attn_implementation="eager")
    model.fast_path = fast_path  # the path training runs, and the plain path (the Ovis idea as written)
    model.train()
    b = _batch(tensors25)
    out = model(b["input_ids"], b["attention_mask"], b["labels"], b["pixel_values"], grid_thws=b["grid_thws"])
    out.loss.backward()
    grads = ovis25_state_dict(model, {n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    ref = load_file(FIXTURE25 / "expected_grads.safetensors")
    assert grads.keys() == ref.keys()  # post_layernorm gets none, a tied lm_head appears as the embedding
    worst = max((grads[k] - ref[k]).abs().max().item() for k in ref)
    assert worst <= 1e-5, worst


def test_atom_count_must_match_grids(ovis25, tensors25):
    model, _ = ovis25
    b = _batch(tensors25)
    with pytest.raises(ValueError, match="visual tokens in grid_thws"):
        model.merge(b["input_ids"], b["attention_mask"], None, b["pixel_values"][:-16], grid_thws=b["grid_thws"][:-1])


def _generation_cases(processor, expected):
    cases = {k: v for k, v in expected["generate"].items() if "conversations" in v}
    samples = {}
    for name, case in cases.items():
        sample = _sample(processor, case, generation_preface="")
        assert sample.prompt == case["prompt"] and sample.input_ids == case["input_ids"], name
        samples[name] = (sample, case["new_token_ids"])
    return samples


def test_greedy_generation_alone(ovis25, expected25):
    model, processor = ovis25
    for name, (sample, want) in _generation_cases(processor, expected25).items():
        b = processor.collate([sample])
        new = model.generate(b["input_ids"], b["attention_mask"], b["pixel_values"], b["grid_thws"],
                             max_new_tokens=len(want), do_sample=False, eos_token_id=None)
        assert new[0].tolist() == want, name


def test_greedy_generation_left_padded_batch(ovis25, expected25):
    model, processor = ovis25
    samples = _generation_cases(processor, expected25)
    spec = expected25["generate"]["batched_left_padded"]
    chosen = [samples[name][0] for name in spec["samples"]]
    b = processor.collate(chosen, padding_side="left")
    assert not b["attention_mask"].bool().all()  # really padded
    new = model.generate(b["input_ids"], b["attention_mask"], b["pixel_values"], b["grid_thws"],
                         max_new_tokens=10, do_sample=False, eos_token_id=None)
    assert new.tolist() == spec["new_token_ids"]


def test_export_reimport_bitwise_and_same_layout(ovis25, tmp_path):
    from safetensors import safe_open

    from ovis_lit.interop.ovis25 import export_ovis25, load_ovis25

    model, processor = ovis25
    out = export_ovis25(model, processor, tmp_path / "export")
    src = FIXTURE25 / "checkpoint"

    def keys(directory):
        with safe_open(directory / "model.safetensors", "pt") as f:
            return set(f.keys())

    assert keys(out) == keys(src)
    for name in ("config.json", "preprocessor_config.json", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json"):
        assert json.loads((out / name).read_text()) == json.loads((src / name).read_text()), name
    again, again_processor = load_ovis25(out, vit_attn_implementation="eager")
    ours, theirs = model.state_dict(), again.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name].dtype == theirs[name].dtype and torch.equal(ours[name], theirs[name]), name
    assert again_processor.chat_format == "qwen3"


def test_export_records_a_trained_pixel_range(ovis25, tmp_path):
    """A model trained in another pixel range (the tiny ones: 16^2..64^2) keeps it through its export: reloading the
    export must not fall back to the original code's 448^2 minimum (which blew a 64 px image up to 784 tokens)."""
    from ovis_lit.evaluation.loading import processor_from_ovis_dir
    from ovis_lit.interop.ovis25 import export_ovis25
    from ovis_lit.processing.native_processor import NativeOvisProcessor

    model, _ = ovis25
    src = FIXTURE25 / "checkpoint"
    vit_config = json.loads((src / "config.json").read_text())["vit_config"]
    processor = NativeOvisProcessor.from_pretrained(src, "qwen3", vit_config, min_pixels=256, max_pixels=4096)
    out = export_ovis25(model, processor, tmp_path / "export")
    written = json.loads((out / "preprocessor_config.json").read_text())
    assert (written["min_pixels"], written["max_pixels"]) == (256, 4096)
    again = processor_from_ovis_dir(out).image_preprocessor
    assert (again.min_pixels, again.max_pixels) == (256, 4096)
    from PIL import Image

    assert again.target_size(Image.new("RGB", (64, 64))) == (64, 64)


@pytest.mark.parametrize("value", ["4096", -1, 0, 1.5, None])
def test_a_bad_recorded_pixel_range_is_refused(tmp_path, value):
    import shutil

    from ovis_lit.evaluation.loading import processor_from_ovis_dir

    d = tmp_path / "ckpt"
    shutil.copytree(FIXTURE25 / "checkpoint", d)
    cfg = json.loads((d / "preprocessor_config.json").read_text())
    (d / "preprocessor_config.json").write_text(json.dumps({**cfg, "max_pixels": value}))
    with pytest.raises(ValueError, match="min_pixels / max_pixels must be positive integers"):
        processor_from_ovis_dir(d)


def test_export_of_a_new_model_writes_the_original_fields(ovis25, tmp_path):
    """A model that was not imported (no original config to copy) writes the same config fields."""
    from ovis_lit.interop.ovis25 import ovis25_config

    model, processor = ovis25
    src = json.loads((FIXTURE25 / "checkpoint" / "config.json").read_text())
    saved = model.original_config
    try:
        del model.original_config
        fresh = ovis25_config(model, processor.chat_format)
    finally:
        model.original_config = saved
    assert fresh.keys() == src.keys()
    assert fresh["llm_config"] == src["llm_config"]
    assert fresh["vit_config"] == {k: v for k, v in src["vit_config"].items() if not k.startswith("_")}
    assert {k: fresh[k] for k in fresh if k not in ("llm_config", "vit_config")} == {
        k: src[k] for k in src if k not in ("llm_config", "vit_config")}


def test_thinking_budget_concludes_the_thinking_and_continues(ovis25, expected25):
    from ovis_lit.evaluation.thinking import BUDGET_EXHAUSTED_TEXT, generate_with_thinking_budget

    model, processor = ovis25
    samples = _generation_cases(processor, expected25)
    b = processor.collate([samples[name][0] for name in ("sample0", "sample3", "sample4")], padding_side="left")
    args = (model, processor.tokenizer, b["input_ids"], b["attention_mask"], b["pixel_values"], b["grid_thws"])
    extra = processor.tokenizer(BUDGET_EXHAUSTED_TEXT, add_special_tokens=False)["input_ids"]
    # a budget past max_new_tokens: plain greedy generation
    plain = generate_with_thinking_budget(*args, thinking_budget=10, max_new_tokens=10, eos_token_ids=[2], pad_token_id=0)
    assert plain == expected25["generate"]["batched_left_padded"]["new_token_ids"]
    # the budget runs out with no room left for an answer: the conclusion is still appended, nothing follows
    short = generate_with_thinking_budget(*args, thinking_budget=4, max_new_tokens=10, eos_token_ids=[2], pad_token_id=0)
    assert all(row[:4] == want[:4] and row[4:] == extra for row, (_, want) in zip(short, samples.values()))
    # the random model never closes its thinking: after 4 tokens the conclusion is appended, then 6 more come
    # (the conclusion counts against max_new_tokens, as in the original), the same as greedy decoding of that
    # longer prompt alone
    total = 4 + len(extra) + 6
    out = generate_with_thinking_budget(*args, thinking_budget=4, max_new_tokens=total, eos_token_ids=[2], pad_token_id=0)
    for row, (name, (sample, want)) in zip(out, samples.items()):
        assert row[:4] == want[:4] and row[4:4 + len(extra)] == extra and len(row) == total, name
        alone = processor.collate([sample])
        ids = torch.tensor([sample.input_ids + row[:4 + len(extra)]])
        rest = model.generate(ids, torch.ones_like(ids), alone["pixel_values"], alone["grid_thws"],
                              max_new_tokens=6, do_sample=False, eos_token_id=None)
        assert row[4 + len(extra):] == rest[0].tolist(), name


@pytest.mark.parametrize("mode", ["full", "selective"])
def test_activation_checkpointing_keeps_the_gradients(tensors25, mode):
    from ovis_lit.interop.ovis25 import load_ovis25

    b = _batch(tensors25)
    grads = []
    for checkpointing in ("none", mode):
        model, _ = load_ovis25(FIXTURE25 / "checkpoint")
        model.train().set_activation_checkpointing(vision=checkpointing, llm=checkpointing)
        model(b["input_ids"], b["attention_mask"], b["labels"], b["pixel_values"], grid_thws=b["grid_thws"]).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert max((grads[0][k] - grads[1][k]).abs().max().item() for k in grads[0]) <= 1e-6


def test_vit_checkpointing_keeps_only_layer_inputs(tensors25):
    """`set_activation_checkpointing(vision="full")` reaches the NaViT's layers: the forward keeps for backward only
    what lies outside them (the gradient test above would also pass if the mode were silently ignored). The NaViT's
    saved activations are most of the Ovis2.5 step's memory after the LLM's (`benchmarks/model_step.py --config
    ovis25`)."""
    from ovis_lit.interop.ovis25 import load_ovis25

    model, _ = load_ovis25(FIXTURE25 / "checkpoint")
    vit = model.train().visual_tokenizer.backbone
    pixel_values, grids = tensors25["forward.batch.pixel_values"], tensors25["forward.batch.grid_thws"]

    def saved_bytes(mode: str) -> int:
        model.set_activation_checkpointing(vision=mode)
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            vit(pixel_values.requires_grad_(), grids)
        return total

    plain, full = saved_bytes("none"), saved_bytes("full")
    # per layer a full checkpoint keeps its input (and the shared rotary tables), not ~20 activations
    assert full * 4 < plain, (full, plain)


def test_evaluation_loads_and_answers_with_an_ovis25_export(ovis25, tmp_path):
    from PIL import Image

    from ovis_lit.evaluation.generation import generate_answers
    from ovis_lit.evaluation.loading import load_for_eval, processor_from_ovis_dir
    from ovis_lit.interop.ovis25 import export_ovis25
    from ovis_lit.processing.native_processor import NativeOvisProcessor

    model, processor = ovis25
    out = export_ovis25(model, processor, tmp_path / "export")
    loaded, found, info = load_for_eval(out)
    assert loaded.visual_tokenizer.native_resolution and isinstance(found, NativeOvisProcessor)
    assert isinstance(processor_from_ovis_dir(out), NativeOvisProcessor)
    image = Image.open(FIXTURE25 / "images" / "wide.png")
    answers = generate_answers(loaded, found, [("Describe.", [image]), ("Hi", [])], batch_size=2, max_new_tokens=3,
                               progress=False)
    assert len(answers) == 2


def test_export_of_a_new_tokenizer_names_a_class_the_original_formatter_accepts(ovis25, tmp_path):
    """A tokenizer saved by transformers 5 (not copied from a checkpoint) must name a class the original's
    Qwen3ConversationFormatter accepts (QWenTokenizer / Qwen2TokenizerFast, checked by class name), and read back
    the same here."""
    import copy

    from ovis_lit.interop.ovis25 import export_ovis25, load_ovis25

    model, processor = ovis25
    fresh = copy.copy(processor)
    fresh.tokenizer_source = None
    out = export_ovis25(model, fresh, tmp_path / "export")
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "Qwen2TokenizerFast"
    again = load_ovis25(out)[1].tokenizer
    for text in ["<|im_start|>user\n<image>\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", "é ü  x"]:
        assert again(text, add_special_tokens=False).input_ids == processor.tokenizer(text, add_special_tokens=False).input_ids
