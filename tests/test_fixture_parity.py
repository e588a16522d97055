"""ovis-lit against the original implementation's outputs on the tiny Ovis 1.6 reference checkpoint."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from ovis_lit.interop.original import export_original, load_original

from .conftest import FIXTURE, REPO

SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"
VENDORED = ("ovis16-reference-tiny", "ovis2-reference-tiny", "ovis25-reference-tiny")


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", VENDORED)
def test_vendored_fixture_is_the_shared_one(name):
    shared = SHARED_FIXTURES / name
    if not shared.is_dir():
        pytest.skip("no ../shared checkout beside the repo")
    vendored = FIXTURE.parent / name
    assert vendored.is_dir(), f"{name} is not vendored under tests/fixtures/"
    assert _digest(vendored) == _digest(shared)


def _forward_inputs(t):
    batch = {k.rsplit(".", 1)[-1]: v for k, v in t.items() if k.startswith("forward.batch.")}
    # The text-only sample (2) carries a zero image in the original's batch but no atom: it contributes no crop here.
    crops = torch.cat([t[f"forward.sample{i}.pixel_values"] for i in (0, 1, 3)])
    return batch, crops


def test_forward_matches_reference(reference, expected, expected_tensors):
    model, _ = reference
    batch, crops = _forward_inputs(expected_tensors)
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"], batch["labels"], crops, return_logits=True)
    length = out.logits.shape[1]
    ref_mask = expected_tensors["forward.merged.attention_mask"].bool()
    # The reference pads every batch to multimodal_max_length (256); nothing real lies past our longest row.
    assert not ref_mask[:, length:].any()
    mask = ref_mask[:, :length]
    assert torch.equal(out.merged.attention_mask.bool(), mask)
    assert torch.equal(out.merged.labels[mask], expected_tensors["forward.merged.labels"][:, :length][mask])
    logit_err = (out.logits - expected_tensors["forward.logits"][:, :length])[mask].abs().max().item()
    assert logit_err <= 1e-5, logit_err
    assert abs(out.loss.item() - expected_tensors["forward.loss"].item()) <= 1e-5
    assert abs(out.loss.item() - expected["loss"]) <= 1e-5
    # Merged embeddings: the reference stores them before Gemma's sqrt(d) scale, ours include it.
    scale = model.llm.config.hidden_size**0.5
    ref_embeds = expected_tensors["forward.merged.inputs_embeds"][:, :length] * scale
    assert (out.merged.inputs_embeds - ref_embeds)[mask].abs().max().item() <= 1e-5


def test_training_loss_path_matches_reference(reference, expected_tensors):
    """The sparse-logits training loss equals the full-logits reference loss."""
    model, _ = reference
    batch, crops = _forward_inputs(expected_tensors)
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"], batch["labels"], crops)
    assert out.logits is None  # the sparse path really ran
    assert abs(out.loss.item() - expected_tensors["forward.loss"].item()) <= 1e-5
    assert out.n_label_tokens == int((expected_tensors["forward.merged.labels"][:, 1:] != -100).sum())


def test_visual_tokens_match_reference(reference, expected_tensors):
    model, _ = reference
    with torch.no_grad():
        tokens = model.visual_tokenizer(expected_tensors["forward.sample0.pixel_values"])
    ref = expected_tensors["forward.sample0.visual_tokens"]
    assert tokens.shape == ref.shape
    assert (tokens - ref).abs().max().item() <= 1e-6


def _generation_samples(processor, expected):
    samples = []
    for case in expected["generate"].values():
        images = [Image.open(FIXTURE / p) for p in case["images"]]
        sample = processor.conversation(case["conversations"], images, case["max_partition"], generation_preface="")
        assert sample.prompt == case["prompt"] and sample.input_ids == case["input_ids"]
        samples.append((sample, case["new_token_ids"]))
    return samples


def test_greedy_generation_alone(reference, expected):
    model, processor = reference
    for sample, want in _generation_samples(processor, expected):
        batch = processor.collate([sample])
        new = model.generate(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], max_new_tokens=12, do_sample=False)
        assert new[0].tolist() == want


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_greedy_generation_batched(reference, expected, padding_side):
    model, processor = reference
    pairs = _generation_samples(processor, expected)
    assert pairs[0][0].n_crops != pairs[1][0].n_crops  # different expanded lengths: the batch really is padded
    batch = processor.collate([s for s, _ in pairs], padding_side=padding_side)
    new = model.generate(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], max_new_tokens=12, do_sample=False)
    assert [row.tolist() for row in new] == [want for _, want in pairs]


def test_export_reimport_bitwise_and_same_layout(reference, tmp_path):
    model, processor = reference
    out = export_original(model, processor, tmp_path / "export", multimodal_max_length=256)

    def keys(directory):
        with safe_open(directory / "model.safetensors", "pt") as f:
            return set(f.keys())

    src = FIXTURE / "checkpoint"
    assert keys(out) == keys(src)
    assert json.loads((out / "config.json").read_text()) == json.loads((src / "config.json").read_text())
    for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert json.loads((out / name).read_text()) == json.loads((src / name).read_text()), name
    # the fixture's preprocessor, plus what the original needs of every backbone's (the CLIP-based ones read it)
    side = json.loads((src / "preprocessor_config.json").read_text())["size"]["height"]
    want = {**json.loads((src / "preprocessor_config.json").read_text()),
            "crop_size": {"height": side, "width": side}, "do_center_crop": False}
    assert json.loads((out / "preprocessor_config.json").read_text()) == want

    again, again_processor = load_original(out)
    ours, theirs = model.state_dict(), again.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name].dtype == theirs[name].dtype and torch.equal(ours[name], theirs[name]), name
    assert again_processor.chat_format == "gemma"
