"""ovis-lit against the original Ovis2 (v2.0) code on the tiny AIMv2 + Qwen2 reference checkpoint."""

import pytest

from . import parity

NAME = "ovis2-reference-tiny"


@pytest.fixture(scope="module")
def ref():
    return parity.load_reference(NAME)


def test_checkpoint_is_the_aimv2_original_layout(ref):
    assert ref.config["visual_tokenizer_config"]["model_type"] == "aimv2_visual_tokenizer"
    assert ref.model.visual_tokenizer.backbone.config.model_type == "aimv2_vision_model"
    assert not ref.model.visual_tokenizer.backbone.config.use_head
    assert ref.processor.chat_format == "qwen"
    assert ref.processor.image_preprocessor.side == 56  # CLIP's crop_size


def test_preprocessing(ref):
    parity.check_preprocess(ref)


def test_prompts_ids_and_labels(ref):
    parity.check_conversations(ref)


def test_max_partition_rule_9_for_one_image_1_per_image_or_frame(ref):
    """The processor's own choice of max_partition reproduces the fixture: one image 9, several images or video
    frames 1 each (the data pipeline and evaluation leave max_partition to the processor)."""
    parity.check_conversations(ref, default_max_partition=True)


def test_video_is_a_list_of_frames_each_its_own_image(ref):
    case = ref.expected["generate"]["sample3"]
    frames = [ref.image(p) for p in case["images"]]
    sample = ref.processor.query("What happens in the video?", frames)
    assert sample.prompt == case["prompt"] and sample.input_ids == case["input_ids"]
    assert sample.n_crops == len(frames)


def test_visual_tokens(ref):
    parity.check_visual_tokens(ref)


def test_forward_logits_and_loss(ref):
    """On the original's ViT memory layout, the whole forward is the original's to float32 rounding."""
    with parity.strided_vit_stream(ref.model):
        parity.check_forward(ref)


def test_forward_with_the_contiguous_vit_stream_speed_up(ref):
    """The default (contiguous ViT stream) rounds the visual tokens differently (<= 2e-7) and this tiny random
    LLM amplifies that to ~5e-5 in the logits: recorded here so that a larger drift shows up."""
    parity.check_forward(ref, tol=1e-4, embeds_tol=1e-6)


def test_training_loss_path(ref):
    parity.check_training_loss(ref)


def test_training_gradients_equal_the_original(ref):
    parity.check_gradients(ref)


def test_greedy_generation_alone(ref):
    parity.check_generation_alone(ref)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_greedy_generation_batched(ref, padding_side):
    parity.check_generation_batched(ref, padding_side)


def test_export_reimport_bitwise_and_same_layout(ref, tmp_path):
    parity.check_export_reimport(ref, tmp_path / "export")
