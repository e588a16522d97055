"""transformers' own Ovis2 layout (`Ovis2ForConditionalGeneration`, the -hf checkpoints) against the Ovis2 fixture.

The fixture's original checkpoint is converted into the -hf layout here, at test time, with the key mapping of
transformers' own conversion (patchifier -> embeddings, qkv split, fc1/fc2/fc3 -> gate/down/up, post_trunk_norm ->
the final `rms_norm`), by building an `Ovis2ForConditionalGeneration` and saving it.
"""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import Ovis2Config, Ovis2ForConditionalGeneration

from ovis_lit.constants import IMAGE_ATOM_ID, INDICATOR_IDS
from ovis_lit.interop.export_files import TOKENIZER_FILES
from ovis_lit.interop.hf_ovis2 import export_hf_ovis2, load_hf_ovis2
from ovis_lit.model.build import llm_config_from_dict

from . import parity

NAME = "ovis2-reference-tiny"
B = "visual_tokenizer.backbone."
V = "model.vision_tower."
T = V + "transformer."


def _to_hf_names(original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original Ovis2 checkpoint's tensors under the names (and shapes) of transformers' Ovis2 port."""
    out = {}
    block = {"norm_1": "rms_norm1", "norm_2": "rms_norm2", "attn.proj": "attention.out_proj",
             "mlp.fc1": "ffn.gate_proj", "mlp.fc2": "ffn.down_proj", "mlp.fc3": "ffn.up_proj"}
    for key, tensor in original.items():
        if key.startswith("llm.model."):
            out["model.language_model." + key.removeprefix("llm.model.")] = tensor
        elif key == "vte.weight":
            out["model.visual_embeddings_table.weight"] = tensor
        elif key.startswith("visual_tokenizer.head."):
            part = {"0": "head_linear", "1": "head_norm"}[key.split(".")[2]]
            out[V + part + "." + key.split(".")[-1]] = tensor
        elif key == B + "preprocessor.pos_embed":
            out[T + "embeddings.position_embedding.weight"] = tensor[0]
        elif key.startswith(B + "preprocessor.patchifier.proj."):
            out[T + "embeddings.patch_embedding." + key.split(".")[-1]] = tensor
        elif key == B + "preprocessor.patchifier.norm.weight":
            out[T + "embeddings.rms_norm.weight"] = tensor
        elif key == B + "trunk.post_trunk_norm.weight":
            out[T + "rms_norm.weight"] = tensor
        else:
            rest = key.removeprefix(B + "trunk.blocks.")
            i, module = rest.split(".", 1)
            module, kind = module.rsplit(".", 1)
            prefix = f"{T}encoder.layers.{i}."
            if module == "attn.qkv":
                for part, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3)):
                    out[f"{prefix}attention.{part}.{kind}"] = chunk
            else:
                out[f"{prefix}{block[module]}.{kind}"] = tensor
    return out


def _special_ids(ref) -> tuple[int, list[int]]:
    """Six text ids that the fixture's prompts never use, to stand for the image token and the 5 indicators."""
    batch, _ = parity.forward_inputs(ref)
    used = set(batch["input_ids"].flatten().tolist())
    free = [i for i in range(ref.config["llm_config"]["vocab_size"] - 1, -1, -1) if i not in used][:6]
    return free[0], free[1:]


def _hf_config(ref) -> Ovis2Config:
    cfg = ref.config
    vt, backbone = cfg["visual_tokenizer_config"], cfg["visual_tokenizer_config"]["backbone_config"]
    vision = {k: backbone[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                       "num_channels", "image_size", "patch_size", "rms_norm_eps", "qkv_bias")}
    vision.update(mlp_bias=backbone["use_bias"], vocab_size=vt["vocab_size"], hidden_stride=vt["hidden_stride"],
                  tokenize_function=vt["tokenize_function"], num_visual_indicator_tokens=5)
    text = llm_config_from_dict(cfg["llm_config"], "sdpa").to_dict()
    image_token_id, indicator_ids = _special_ids(ref)
    return Ovis2Config(vision_config=vision, text_config=text, image_token_id=image_token_id,
                       visual_indicator_token_ids=indicator_ids, vocab_size=text["vocab_size"],
                       hidden_size=text["hidden_size"], tie_word_embeddings=True)


@pytest.fixture(scope="module")
def ref():
    return parity.load_reference(NAME)


@pytest.fixture(scope="module")
def hf_dir(ref, tmp_path_factory):
    """The fixture converted into the -hf layout, saved by transformers itself."""
    hf = Ovis2ForConditionalGeneration(_hf_config(ref))
    missing, unexpected = hf.load_state_dict(_to_hf_names(load_file(ref.checkpoint / "model.safetensors")), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied to the text embedding
    directory = tmp_path_factory.mktemp("ovis2-hf")
    hf.save_pretrained(directory)
    for name in TOKENIZER_FILES + ("preprocessor_config.json",):
        if (ref.checkpoint / name).is_file():
            shutil.copyfile(ref.checkpoint / name, directory / name)
    return directory


@pytest.fixture(scope="module")
def imported(ref, hf_dir):
    model, processor = load_hf_ovis2(hf_dir)
    return parity.Reference(ref.root, ref.expected, ref.tensors, model.eval(), processor)


def _hf_logits(ref, hf_dir, final_norm: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`Ovis2ForConditionalGeneration`'s logits on the fixture batch (our batch with its own image and indicator
    ids: both layouts hold one image id per visual token), right-padded as ours; the final vision norm kept or
    bypassed."""
    hf = Ovis2ForConditionalGeneration.from_pretrained(hf_dir).eval()
    if not final_norm:
        hf.model.vision_tower.transformer.rms_norm = torch.nn.Identity()
    batch, crops = parity.forward_inputs(ref)
    ours_to_hf = dict(zip(INDICATOR_IDS, hf.config.visual_indicator_token_ids))
    ours_to_hf[IMAGE_ATOM_ID] = hf.config.image_token_id
    input_ids = batch["input_ids"].clone()
    for ours, theirs in ours_to_hf.items():
        input_ids[batch["input_ids"] == ours] = theirs
    attention_mask = batch["attention_mask"]
    with torch.no_grad():
        logits = hf(input_ids=input_ids, pixel_values=crops, attention_mask=attention_mask).logits
    return logits, attention_mask.bool()


def test_hf_layout_imports_and_gives_the_fixture_logits(imported):
    assert not imported.model.visual_tokenizer.backbone.config.use_head
    parity.check_visual_tokens(imported)
    with parity.strided_vit_stream(imported.model):  # the original's ViT memory layout: its float32 bits
        parity.check_forward(imported)
    parity.check_training_loss(imported)


def test_hf_import_equals_the_original_import(ref, imported):
    ours, theirs = ref.model.state_dict(), imported.model.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


def test_transformers_port_equals_ovis_lit_only_without_its_final_vision_norm(ref, hf_dir):
    batch, crops = parity.forward_inputs(ref)
    with torch.no_grad(), parity.strided_vit_stream(ref.model):
        ours = ref.model(batch["input_ids"], batch["attention_mask"], batch["labels"], crops, return_logits=True)
    mask = ours.merged.attention_mask.bool()

    bypassed, hf_mask = _hf_logits(ref, hf_dir, final_norm=False)
    assert torch.equal(hf_mask, mask)
    assert (bypassed - ours.logits)[mask].abs().max().item() <= 1e-5

    # As shipped, the port normalises the features first: it does not compute what the original Ovis2 computes.
    as_shipped, _ = _hf_logits(ref, hf_dir, final_norm=True)
    assert (as_shipped - ours.logits)[mask].abs().max().item() > 1e-3


def test_export_to_the_hf_layout_is_what_transformers_saves(ref, hf_dir, tmp_path):
    config = json.loads((hf_dir / "config.json").read_text())
    out = export_hf_ovis2(ref.model, tmp_path / "hf", config["image_token_id"], config["visual_indicator_token_ids"],
                          ref.processor)
    want, got = load_file(hf_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name
    again = Ovis2ForConditionalGeneration.from_pretrained(out)  # transformers reads it
    assert again.config.vision_config.hidden_stride == 2 and again.config.text_config.model_type == "qwen2"
    reimported, processor = load_hf_ovis2(out)
    for name, tensor in ref.model.state_dict().items():
        assert torch.equal(reimported.state_dict()[name], tensor), name
    assert processor.chat_format == "qwen"


def test_other_layouts_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "ovis"}))
    with pytest.raises(ValueError, match="expected 'ovis2'"):
        load_hf_ovis2(tmp_path)


def test_hf_checkpoint_converts_to_the_original_layout(ref, hf_dir, tmp_path):
    """scripts/convert_ovis2_hf.py: -hf -> original gives the fixture's checkpoint (keys and tensors) back."""
    import sys

    sys.path.insert(0, str(parity.FIXTURES.parents[1] / "scripts"))
    from convert_ovis2_hf import convert

    out = convert(str(hf_dir), str(tmp_path / "original"), multimodal_max_length=ref.config["multimodal_max_length"])
    want, got = load_file(ref.checkpoint / "model.safetensors"), load_file(f"{out}/model.safetensors")
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name
    config = json.loads((tmp_path / "original" / "config.json").read_text())
    assert set(config) == set(ref.config)
    vt, ref_vt = config["visual_tokenizer_config"], ref.config["visual_tokenizer_config"]
    assert vt["backbone_config"] == ref_vt["backbone_config"]
    assert {k: vt[k] for k in ("model_type", "vocab_size", "hidden_stride", "tokenize_function")} == {
        k: ref_vt[k] for k in ("model_type", "vocab_size", "hidden_stride", "tokenize_function")}
    assert config["conversation_formatter_class"] == "QwenConversationFormatter"
