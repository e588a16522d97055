"""What is particular to the Ovis2 (v2.0) reference fixture: the AIMv2 layout, the max_partition rule, video frames."""

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


def test_max_partition_rule_9_for_one_image_1_per_image_or_frame(ref):
    """The processor's own choice of max_partition reproduces the fixture: one image 9, several images or video
    frames 1 each (the data pipeline and evaluation leave max_partition to the processor)."""
    parity.check_conversations(ref, default_max_partition=True)


def test_video_is_a_list_of_frames_each_its_own_image(ref):
    case = ref.expected["generate"]["sample3"]
    frames = [ref.image(p) for p in case["images"]]
    sample = ref.processor.query("What happens in the video?", frames)
    assert sample.prompt == case["prompt"] and parity.original_ids(ref, sample)[0] == case["input_ids"]
    assert sample.n_crops == len(frames)


# Preprocessing, prompts, visual tokens, forward, loss, gradients, generation and export are checked for every
# fixture in test_fixture_parity.py.
