"""ovis-lit against the original Ovis2.5 code's outputs on the tiny reference checkpoint (SigLIP2-NaViT + Qwen3)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ovis_lit.processing.native_resolution import NativeResolutionPreprocessor, patchify, smart_resize
from ovis_lit.rejection import Rejected

from .conftest import REPO

FIXTURE25 = REPO / "tests" / "fixtures" / "ovis25-reference-tiny"
SHARED_FIXTURE25 = REPO.parent / "shared" / "fixtures" / "ovis25-reference-tiny"


@pytest.fixture(scope="module")
def expected25() -> dict:
    return json.loads((FIXTURE25 / "expected.json").read_text())


@pytest.fixture(scope="module")
def tensors25() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE25 / "expected.safetensors")


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.skipif(not SHARED_FIXTURE25.is_dir(), reason="no ../shared checkout beside the repo")
def test_vendored_fixture_is_the_shared_one():
    assert _digest(FIXTURE25) == _digest(SHARED_FIXTURE25)


# ------------------------------------------------------------------------------------------------ preprocessing
def test_smart_resize_matches_reference(expected25):
    for case in expected25["preprocess"]["smart_resize"]:
        got = smart_resize(case["height"], case["width"], case["factor"], case["min_pixels"], case["max_pixels"])
        assert list(got) == case["result"], case


def _tiny_preprocessor() -> NativeResolutionPreprocessor:
    return NativeResolutionPreprocessor(patch_size=8, hidden_stride=2, temporal_patch_size=1)


def test_preprocessing_matches_reference(expected25, tensors25):
    pp = _tiny_preprocessor()
    cases = {k: v for k, v in expected25["preprocess"].items() if k != "smart_resize"}
    assert any("video" in c for c in cases.values())
    for name, case in cases.items():
        if "video" in case:
            frames = [Image.open(FIXTURE25 / p) for p in case["video"]]
            patches, grid, placeholders = pp.video(frames, case["min_pixels"], case["max_pixels"])
            start, end = -303, -304
        else:
            image = Image.open(FIXTURE25 / case["image"])
            patches, grid, placeholders = pp.image(image, case["min_pixels"], case["max_pixels"])
            start, end = -301, -302
        assert [grid] == case["grid_thw"], name
        ref = tensors25[f"preprocess.{name}.pixel_values"]
        assert patches.shape == ref.shape and (patches - ref).abs().max().item() <= 1e-5, name
        t, h, w = grid
        assert placeholders == [start] + [-300] * (t * h * w // 4) + [end]


def test_patches_are_in_hidden_stride_block_order():
    # A 1-channel 4x4 "image" of patch 1: pixel value = its raster index. Blocks of 2x2, row-major.
    frames = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    patches, grid = patchify(frames, patch_size=1, hidden_stride=2, temporal_patch_size=1)
    assert grid == [1, 4, 4]
    assert patches[:, 0].tolist() == [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]


def test_video_frames_are_padded_to_the_temporal_patch():
    pp = NativeResolutionPreprocessor(patch_size=8, hidden_stride=2, temporal_patch_size=2, min_pixels=256, max_pixels=1024)
    frames = [Image.new("RGB", (32, 32), (i * 100, 0, 0)) for i in range(3)]
    patches, grid, placeholders = pp.video(frames)
    assert grid == [2, 4, 4] and patches.shape == (32, 3 * 2 * 64)
    # the 4th frame repeats the 3rd: in the second temporal patch both frames are equal
    second = patches[16:].reshape(16, 3, 2, 64)
    assert torch.equal(second[:, :, 0], second[:, :, 1])
    first = patches[:16].reshape(16, 3, 2, 64)
    assert not torch.equal(first[:, :, 0], first[:, :, 1])
    assert len(placeholders) == 2 + 2 * 16 // 4


def test_degenerate_sizes_are_refused_not_crashed():
    pp = NativeResolutionPreprocessor(patch_size=8, hidden_stride=2, min_pixels=256, max_pixels=9216)
    with pytest.raises(Rejected, match="degenerate_size"):
        pp.image(Image.new("RGB", (3000, 7)))


# ------------------------------------------------------------------------------------------------------- format
@pytest.fixture(scope="module")
def processor25():
    from ovis_lit.processing.native_processor import NativeOvisProcessor

    vit_config = json.loads((FIXTURE25 / "checkpoint" / "config.json").read_text())["vit_config"]
    return NativeOvisProcessor.from_pretrained(FIXTURE25 / "checkpoint", "qwen3", vit_config)


def _sample(processor, case, generation_preface=None):
    images = [Image.open(FIXTURE25 / p) for p in case.get("images", [])]
    video = [Image.open(FIXTURE25 / p) for p in case["video"]] if "video" in case else None
    return processor.conversation(
        case["conversations"], images, video, case["min_pixels"], case["max_pixels"], generation_preface
    )


def test_qwen3_format_matches_reference(processor25, expected25, tensors25):
    processor = processor25
    cases = expected25["format_and_forward"]
    assert len(cases) == 5
    samples = []
    for i, case in enumerate(cases):
        sample = _sample(processor, case)
        assert sample.prompt == case["prompt"], i
        assert sample.input_ids == case["input_ids"], i
        assert sample.labels == case["labels"], i
        assert sample.grid_thws.tolist() == (case["grid_thws"] or []), i
        samples.append(sample)
    batch = processor.collate(samples)
    for name in ("input_ids", "attention_mask", "labels", "grid_thws"):
        assert torch.equal(batch[name], tensors25[f"forward.batch.{name}"]), name
    assert (batch["pixel_values"] - tensors25["forward.batch.pixel_values"]).abs().max().item() <= 1e-5


def test_qwen3_generation_prompt_and_thinking_switch(processor25):
    processor = processor25
    on = processor.query("Hi")
    off = processor.query("Hi", thinking=False)
    assert on.prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n" == off.prompt
    thinking = processor.query("Hi", thinking=True)
    assert thinking.prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert set(thinking.labels) == {-100}


def test_qwen3_ignored_gpt_is_never_supervised(processor25):
    processor = processor25
    sample = processor.conversation([{"from": "human", "value": "a"}, {"from": "ignored_gpt", "value": "b"}])
    assert set(sample.labels) == {-100}
    assert processor.tokenizer.decode(sample.input_ids[-1:]) == "<|im_end|>"  # the final newline is dropped


