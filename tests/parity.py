"""Checks of ovis-lit against a reference fixture made by the original code (tests/fixtures/*-reference-tiny).

Every Ovis 1.6/2 fixture has the same layout (see its README): `expected.json` (preprocess, format_and_forward,
generate, loss), `expected.safetensors` (forward batch, merged inputs, logits, loss, visual tokens, pixel values),
`expected_grads.safetensors` and `checkpoint/`. The functions here take a `Reference` so that one fixture's test
module is a list of one-line tests, and a new fixture needs no copied checks.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from ovis_lit.constants import IGNORE_ID, IMAGE_ATOM_ID
from ovis_lit.interop.original import load_original
from ovis_lit.interop.original_export import export_original, original_state_dict
from ovis_lit.model.vision import keep_residual_stream_contiguous, residual_stream_is_contiguous
from ovis_lit.processing.conversation import FORMAT_BY_CLASS
from ovis_lit.processing.placeholders import from_original_ids, to_original_ids

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@dataclass
class Reference:
    root: Path
    expected: dict
    tensors: dict[str, torch.Tensor]
    model: torch.nn.Module = field(repr=False)
    processor: object = field(repr=False)

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint"

    @property
    def config(self) -> dict:
        return json.loads((self.checkpoint / "config.json").read_text())

    def image(self, relative: str) -> Image.Image:
        return Image.open(self.root / relative)


def load_reference(name: str) -> Reference:
    root = FIXTURES / name
    model, processor = load_original(root / "checkpoint")
    return Reference(
        root, json.loads((root / "expected.json").read_text()), load_file(root / "expected.safetensors"),
        model.eval(), processor,
    )


def forward_inputs(ref: Reference) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The fixture's forward batch in ovis-lit's layout (`expand_original_batch`) and the crops of the samples that
    have image atoms (a text-only sample carries a zero image in the original's batch but no atom: it contributes no
    crop here)."""
    t = ref.tensors
    original = {k.rsplit(".", 1)[-1]: v for k, v in t.items() if k.startswith("forward.batch.")}
    with_images = [i for i, row in enumerate(original["input_ids"]) if bool((row == IMAGE_ATOM_ID).any())]
    crops = torch.cat([t[f"forward.sample{i}.pixel_values"] for i in with_images])
    return expand_original_batch(original, ref.processor.tokens_per_crop, ref.processor.pad_token_id), crops


def expand_original_batch(original: dict[str, torch.Tensor], tokens_per_crop: int, pad_id: int = 0):
    """An original-layout batch (one atom per crop) -> ovis-lit's (one -300 per visual token, `from_original_ids`
    on each row's real positions), right-padded again."""
    rows = []
    for ids, labels, mask in zip(original["input_ids"], original["labels"], original["attention_mask"]):
        real = mask.bool()
        rows.append(from_original_ids(ids[real].tolist(), tokens_per_crop, labels[real].tolist()))
    longest = max(len(ids) for ids, _ in rows)
    batch = {
        "input_ids": torch.full((len(rows), longest), pad_id),
        "attention_mask": torch.zeros(len(rows), longest, dtype=torch.long),
        "labels": torch.full((len(rows), longest), IGNORE_ID),
    }
    for i, (ids, labels) in enumerate(rows):
        batch["input_ids"][i, : len(ids)] = torch.tensor(ids)
        batch["labels"][i, : len(ids)] = torch.tensor(labels)
        batch["attention_mask"][i, : len(ids)] = 1
    return batch


def original_ids(ref: Reference, sample) -> tuple[list[int], list[int]]:
    """A sample's ids and labels in the original layout (one atom per crop), as the fixtures record them."""
    return to_original_ids(sample.input_ids, ref.processor.tokens_per_crop, sample.labels)


def embed_scale(model) -> float:
    """The LLM's embedding scale (Gemma's sqrt(d)); the fixtures store merged embeddings before it."""
    scale = getattr(model.llm.get_input_embeddings(), "embed_scale", None)
    return 1.0 if scale is None else float(scale)


@contextlib.contextmanager
def strided_vit_stream(model):
    """Run the ViT on the residual-stream layout the original has (no contiguity speed-up, see
    `keep_residual_stream_contiguous`): float32 results then equal the original's bit for bit."""
    backbone = model.visual_tokenizer.backbone
    was = residual_stream_is_contiguous(backbone)
    keep_residual_stream_contiguous(backbone, False)
    try:
        yield model
    finally:
        keep_residual_stream_contiguous(backbone, was)


# ------------------------------------------------------------------------------------------- inputs and prompts
def check_preprocess(ref: Reference, tol: float = 1e-5) -> None:
    pp = ref.processor.image_preprocessor
    assert ref.expected["preprocess"]
    for name, case in ref.expected["preprocess"].items():
        pixel_values, placeholders = pp(ref.image(case["image"]), case["max_partition"])
        assert placeholders == case["placeholders"], name
        assert pixel_values.shape[0] == case["n_crops"], name
        want = ref.tensors[f"preprocess.{name}.pixel_values"]
        assert pixel_values.shape == want.shape, name
        assert (pixel_values - want).abs().max().item() <= tol, name


def check_conversations(ref: Reference, default_max_partition: bool = False) -> None:
    """Prompt strings, ids and labels identical. With `default_max_partition` the processor chooses max_partition
    itself (9 for one image, 1 per image or frame otherwise) and must choose what the fixture used."""
    for case in ref.expected["format_and_forward"]:
        images = [ref.image(p) for p in case["images"]]
        max_partition = None if default_max_partition else case["max_partition"]
        sample = ref.processor.conversation(case["conversations"], images, max_partition)
        assert sample.prompt == case["prompt"]
        assert original_ids(ref, sample) == (case["input_ids"], case["labels"])


# ------------------------------------------------------------------------------------------------------ forward
def check_forward(ref: Reference, tol: float = 1e-5, embeds_tol: float = 1e-5) -> None:
    """Full-logits forward: merged inputs, labels, logits at real positions and the loss."""
    model, t = ref.model, ref.tensors
    batch, crops = forward_inputs(ref)
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"], batch["labels"], crops, return_logits=True)
    length = out.logits.shape[1]
    ref_mask = t["forward.merged.attention_mask"].bool()
    assert not ref_mask[:, length:].any()  # nothing real lies past our longest row (1.6 pads to the max length)
    mask = ref_mask[:, :length]
    assert torch.equal(out.merged.attention_mask.bool(), mask)
    assert torch.equal(out.merged.labels[mask], t["forward.merged.labels"][:, :length][mask])
    logit_err = (out.logits - t["forward.logits"][:, :length])[mask].abs().max().item()
    assert logit_err <= tol, logit_err
    assert abs(out.loss.item() - t["forward.loss"].item()) <= tol
    assert abs(out.loss.item() - ref.expected["loss"]) <= tol
    ref_embeds = t["forward.merged.inputs_embeds"][:, :length] * embed_scale(model)
    assert (out.merged.inputs_embeds - ref_embeds)[mask].abs().max().item() <= embeds_tol


def check_training_loss(ref: Reference, tol: float = 1e-5) -> None:
    """The sparse-logits training loss equals the full-logits reference loss."""
    batch, crops = forward_inputs(ref)
    with torch.no_grad():
        out = ref.model(batch["input_ids"], batch["attention_mask"], batch["labels"], crops)
    assert out.logits is None  # the sparse path really ran
    assert abs(out.loss.item() - ref.tensors["forward.loss"].item()) <= tol
    assert out.n_label_tokens == int((ref.tensors["forward.merged.labels"][:, 1:] != IGNORE_ID).sum())


def check_visual_tokens(ref: Reference, tol: float = 1e-6) -> None:
    with torch.no_grad():
        tokens = ref.model.visual_tokenizer(ref.tensors["forward.sample0.pixel_values"])
    want = ref.tensors["forward.sample0.visual_tokens"]
    assert tokens.shape == want.shape
    assert (tokens - want).abs().max().item() <= tol


def training_gradients(ref: Reference, model=None) -> dict[str, torch.Tensor]:
    """The gradient of the fixture's training loss, in train mode, under the original checkpoint's names. `model`:
    a fresh import by default (the shared one stays in eval mode without gradients)."""
    model = model if model is not None else load_original(ref.checkpoint)[0]
    model.train()
    model.zero_grad(set_to_none=True)
    batch, crops = forward_inputs(ref)
    out = model(batch["input_ids"], batch["attention_mask"], batch["labels"], crops)
    assert abs(out.loss.item() - ref.tensors["forward.loss"].item()) <= 1e-5
    out.loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    return original_state_dict(model, grads)


def check_gradients(ref: Reference, tol: float = 1e-5, model=None) -> None:
    want = load_file(ref.root / "expected_grads.safetensors")
    got = training_gradients(ref, model)
    assert set(got) == set(want), (sorted(set(got) - set(want)), sorted(set(want) - set(got)))
    errors = {name: (got[name] - want[name]).abs().max().item() for name in want}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tol, (worst, errors[worst])


# --------------------------------------------------------------------------------------------------- generation
def generation_cases(ref: Reference) -> list[tuple[object, list[int]]]:
    """(sample, expected new tokens) for each single-sample generation case; prompts and ids checked on the way."""
    pairs = []
    for case in ref.expected["generate"].values():
        if "conversations" not in case:
            continue  # a batched entry (Ovis2: batched_left_padded), checked by check_generation_batched
        images = [ref.image(p) for p in case["images"]]
        sample = ref.processor.conversation(case["conversations"], images, case["max_partition"], generation_preface="")
        assert sample.prompt == case["prompt"] and original_ids(ref, sample)[0] == case["input_ids"]
        pairs.append((sample, case["new_token_ids"]))
    return pairs


def _greedy(ref: Reference, samples, n_new: int) -> list[list[int]]:
    batch = ref.processor.collate(samples, padding_side="left")
    new = ref.model.generate(
        batch["input_ids"], batch["attention_mask"], batch["pixel_values"], max_new_tokens=n_new, do_sample=False
    )
    return [row.tolist() for row in new]


def check_generation_alone(ref: Reference) -> None:
    for sample, want in generation_cases(ref):
        assert _greedy(ref, [sample], len(want)) == [want]


def check_generation_batched(ref: Reference) -> None:
    pairs = generation_cases(ref)
    assert len({len(s.input_ids) for s, _ in pairs}) > 1  # different lengths: the batch really is padded
    wants = [want for _, want in pairs]
    batched = ref.expected["generate"].get("batched_left_padded")
    if batched is not None:  # what the original decoded as one left-padded batch: each sample's own tokens
        assert batched["new_token_ids"] == wants
    assert _greedy(ref, [s for s, _ in pairs], len(wants[0])) == wants


# ------------------------------------------------------------------------------------------------------- export
def safetensors_keys(directory: Path) -> set[str]:
    with safe_open(directory / "model.safetensors", "pt") as f:
        return set(f.keys())


def check_export_reimport(ref: Reference, directory: Path) -> None:
    """Export then re-import: the fixture's exact key set, config fields and side files; bitwise equal weights."""
    model, processor, src = ref.model, ref.processor, ref.checkpoint
    out = export_original(model, processor, directory, multimodal_max_length=ref.config["multimodal_max_length"])
    assert safetensors_keys(out) == safetensors_keys(src)
    assert json.loads((out / "config.json").read_text()) == ref.config
    for name in ("preprocessor_config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert json.loads((out / name).read_text()) == json.loads((src / name).read_text()), name
    with safe_open(out / "model.safetensors", "pt") as a, safe_open(src / "model.safetensors", "pt") as b:
        for key in a.keys():
            assert torch.equal(a.get_tensor(key), b.get_tensor(key)), key

    again, again_processor = load_original(out)
    ours, theirs = model.state_dict(), again.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name].dtype == theirs[name].dtype and torch.equal(ours[name], theirs[name]), name
    assert again_processor.chat_format == FORMAT_BY_CLASS[ref.config["conversation_formatter_class"]].name
