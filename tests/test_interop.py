"""Checkpoint interop with the original Ovis layout for models built here."""

import json

import pytest
import torch
from safetensors import safe_open

from ovis_lit.interop.original import load_original
from ovis_lit.interop.original_export import export_original, original_state_dict
from ovis_lit.processing.image import ImagePreprocessor
from ovis_lit.processing.processor import OvisProcessor
from ovis_lit.processing.tokenizer import byte_level_tokenizer

from .conftest import FIXTURE
from .parity import expand_original_batch
from .tiny import tiny_model


def _processor(fmt="qwen"):
    return OvisProcessor(byte_level_tokenizer(fmt), fmt, ImagePreprocessor(side=42), tokens_per_crop=4)


def _assert_bitwise(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("llm,fmt", [("qwen2", "qwen"), ("gemma2", "gemma"), ("llama", "llama3")])
def test_fresh_model_export_reimport_is_bitwise(tmp_path, llm, fmt):
    model = tiny_model(llm=llm)
    out = export_original(model, _processor(fmt), tmp_path, multimodal_max_length=1024)
    again, processor = load_original(out)
    _assert_bitwise(model, again)
    assert processor.chat_format == fmt
    assert again.llm.config.model_type == model.llm.config.model_type


def test_fresh_export_has_the_original_layout(tmp_path):
    model = tiny_model(llm="gemma2")
    out = export_original(model, _processor("gemma"), tmp_path)
    ref = json.loads((FIXTURE / "checkpoint" / "config.json").read_text())
    ours = json.loads((out / "config.json").read_text())
    assert set(ours) == set(ref)
    assert set(ref["visual_tokenizer_config"]) <= set(ours["visual_tokenizer_config"])
    assert set(ref["visual_tokenizer_config"]["backbone_config"]) <= set(ours["visual_tokenizer_config"]["backbone_config"])
    assert set(ref["llm_config"]) - set(ours["llm_config"]) == set()
    assert ours["llm_config"]["rope_theta"] == model.llm.config.rope_parameters["rope_theta"]  # 4.x reads rope_theta
    assert ours["conversation_formatter_class"] == "GemmaConversationFormatter"
    with safe_open(out / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "llm.lm_head.weight" not in keys  # tied
    assert any(k.startswith("visual_tokenizer.backbone.vision_model.") for k in keys)
    assert {"visual_tokenizer.head.0.weight", "visual_tokenizer.head.1.weight", "visual_tokenizer.head.1.bias", "vte.weight"} <= keys
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "GemmaTokenizerFast" and "backend" not in tok_cfg
    assert (out / "special_tokens_map.json").is_file()


@pytest.mark.parametrize("llm,fmt,tokenizer_class", [("gemma2", "gemma", "GemmaTokenizerFast"),
                                                     ("qwen2", "qwen", "Qwen2TokenizerFast"),
                                                     ("llama", "llama3", "PreTrainedTokenizerFast")])
def test_fresh_export_names_a_tokenizer_class_the_original_formatter_accepts(tmp_path, llm, fmt, tokenizer_class):
    # The original's Gemma/Qwen formatters assert the tokenizer's class name (GemmaTokenizer(Fast), QWenTokenizer /
    # Qwen2TokenizerFast): a generic PreTrainedTokenizerFast made the original refuse every fresh Gemma/Qwen export
    # (found by scripts/check_in_original.py). The named class must still read the same tokenizer.json here.
    processor = _processor(fmt)
    out = export_original(tiny_model(llm=llm), processor, tmp_path)
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == tokenizer_class
    again = load_original(out)[1].tokenizer
    for text in ["<|im_start|>user\nHello <image> world!<|im_end|>\n", "<bos><start_of_turn>model\nA bus.<end_of_turn>",
                 "  two  spaces\tand é ü"]:
        assert again(text, add_special_tokens=False).input_ids == processor.tokenizer(text, add_special_tokens=False).input_ids
    assert (again.bos_token, again.eos_token, again.pad_token) == (
        processor.tokenizer.bos_token, processor.tokenizer.eos_token, processor.tokenizer.pad_token)


def test_sharded_export_reimports(tmp_path):
    model = tiny_model()
    out = export_original(model, _processor(), tmp_path, max_shard_bytes=20_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (out / "model.safetensors").exists()
    state = original_state_dict(model)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in state.values())
    for shard in set(index["weight_map"].values()):  # at most 20 kB, or one larger tensor alone
        names = [k for k, f in index["weight_map"].items() if f == shard]
        size = sum(state[k].numel() * state[k].element_size() for k in names)
        assert size <= 20_000 or len(names) == 1, (shard, size, names)
    _assert_bitwise(model, load_original(out)[0])


def test_bfloat16_round_trip(tmp_path):
    model = tiny_model(dtype="bfloat16")
    assert model.vte.weight.dtype == torch.bfloat16
    out = export_original(model, _processor(), tmp_path)
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    _assert_bitwise(model, load_original(out)[0])


def test_import_refuses_non_ovis_and_pickles(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="expected 'ovis'"):
        load_original(tmp_path)
    cfg = json.loads((FIXTURE / "checkpoint" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="only safetensors"):
        load_original(tmp_path)


def test_imported_model_equals_reexport_forward(reference, tmp_path, expected_tensors):
    """Forward of a re-imported export equals the original import (fp32, bitwise)."""
    model, processor = reference
    again, _ = load_original(export_original(model, processor, tmp_path))
    original = {k.rsplit(".", 1)[-1]: v for k, v in expected_tensors.items() if k.startswith("forward.batch.")}
    batch = expand_original_batch(original, processor.tokens_per_crop)
    crops = torch.cat([expected_tensors[f"forward.sample{i}.pixel_values"] for i in (0, 1, 3)])
    with torch.no_grad():
        a = model(batch["input_ids"], batch["attention_mask"], batch["labels"], crops, return_logits=True).logits
        b = again.eval()(batch["input_ids"], batch["attention_mask"], batch["labels"], crops, return_logits=True).logits
    assert torch.equal(a, b)


OVIS2_FIXTURE = FIXTURE.parent / "ovis2-reference-tiny"


def test_fresh_aimv2_model_exports_in_the_ovis2_layout_and_reimports_bitwise(tmp_path):
    model = tiny_model(llm="qwen2", backbone="aimv2_vision_model")
    assert not any(name.startswith("visual_tokenizer.backbone.head.") for name in model.state_dict())  # no pooling head
    out = export_original(model, _processor("qwen"), tmp_path, multimodal_max_length=512)
    ref = json.loads((OVIS2_FIXTURE / "checkpoint" / "config.json").read_text())
    ours = json.loads((out / "config.json").read_text())
    assert set(ours) == set(ref)
    assert ours["visual_tokenizer_config"]["model_type"] == "aimv2_visual_tokenizer"
    assert set(ref["visual_tokenizer_config"]) <= set(ours["visual_tokenizer_config"])
    assert set(ours["visual_tokenizer_config"]["backbone_config"]) == set(ref["visual_tokenizer_config"]["backbone_config"])
    assert set(ref["llm_config"]) <= set(ours["llm_config"])
    with safe_open(out / "model.safetensors", "pt") as f:
        keys = {k.removeprefix("visual_tokenizer.backbone.") for k in f.keys() if k.startswith("visual_tokenizer.backbone.")}
    with safe_open(OVIS2_FIXTURE / "checkpoint" / "model.safetensors", "pt") as f:
        ref_keys = {k.removeprefix("visual_tokenizer.backbone.") for k in f.keys() if k.startswith("visual_tokenizer.backbone.")}
    assert keys == ref_keys  # same two blocks, the original's names
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    assert preprocessor["image_processor_type"] == "CLIPImageProcessor"
    assert preprocessor["crop_size"] == {"height": 42, "width": 42} and preprocessor["do_center_crop"] is False
    again, processor = load_original(out)
    _assert_bitwise(model, again)
    assert processor.chat_format == "qwen" and processor.image_preprocessor.side == 42


def test_aimv2_layouts_that_transformers_cannot_express_are_refused():
    from ovis_lit.interop import aimv2

    cfg = json.loads((OVIS2_FIXTURE / "checkpoint" / "config.json").read_text())["visual_tokenizer_config"]["backbone_config"]
    with pytest.raises(ValueError, match="no transformers equivalent"):
        aimv2.config_to_ours({**cfg, "qkv_bias": True, "use_bias": False})
    with pytest.raises(ValueError, match="unknown AIMv2 parameter"):
        aimv2.state_to_ours({"trunk.blocks.0.attn.rope.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="pooling head"):
        aimv2.state_to_original({"head.attention_pooling.q.weight": torch.zeros(1)})


def test_centre_cropping_preprocessor_is_refused(tmp_path):
    from ovis_lit.processing.processor import load_image_preprocessor

    cfg = json.loads((OVIS2_FIXTURE / "checkpoint" / "preprocessor_config.json").read_text())
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({**cfg, "do_center_crop": True}))
    with pytest.raises(ValueError, match="centre-crops"):
        load_image_preprocessor(tmp_path)


def test_st_softmax_exports_as_the_originals_st_argmax(tmp_path):
    # The original has no st_softmax; st_argmax has the same one-hot forward.
    model = tiny_model(tokenize_function="st_softmax")
    out = export_original(model, _processor(), tmp_path)
    assert json.loads((out / "config.json").read_text())["visual_tokenizer_config"]["tokenize_function"] == "st_argmax"


@pytest.mark.parametrize("backbone,processor_class", [("clip_vision_model", "CLIPImageProcessor"),
                                                      ("siglip_vision_model", "SiglipImageProcessor")])
def test_export_preprocessor_has_the_crop_size_and_no_centre_crop(tmp_path, backbone, processor_class):
    # The original reads a CLIP-based tokenizer's crop side from crop_size and refuses a centre crop (CLIP's
    # default when the field is absent). SigLIP's processor has neither field (the 1.6 fixture's has none).
    out = export_original(tiny_model(backbone=backbone), _processor(), tmp_path)
    config = json.loads((out / "preprocessor_config.json").read_text())
    assert config["image_processor_type"] == processor_class
    if processor_class == "CLIPImageProcessor":
        assert config["crop_size"] == {"height": 42, "width": 42} and config["size"] == {"shortest_edge": 42}
        assert config["do_center_crop"] is False
    else:
        assert config["size"] == {"height": 42, "width": 42} and not config.get("do_center_crop")
    assert config["do_resize"] and config["do_rescale"] and config["do_normalize"]
    again = load_original(out)[1].image_preprocessor
    assert again.side == 42
