"""Per-input pixel budgets of Ovis2.5 training (processing/pixel_budgets.py): one image, several images and a video
each resize within their own min/max pixels; a negative max is the single-image max divided by the count."""

import pytest
from PIL import Image

from ovis_lit.data.samples import SampleBuilder
from ovis_lit.processing.pixel_budgets import PixelBudgets
from ovis_lit.training.run import build_processor

from .helpers import compose_train

ORIGINAL = PixelBudgets(448 * 448, 1792 * 1344, 448 * 448, 448 * 448, 448 * 448, 448 * 448)  # the recipe's defaults


def test_limits_by_kind_of_input():
    assert ORIGINAL.limits(0) == ORIGINAL.limits(1) == (200704, 2408448)  # text-only: no image to resize
    assert ORIGINAL.limits(3) == (200704, 200704)
    assert ORIGINAL.limits(0, n_frames=8) == (200704, 200704)
    derived = PixelBudgets(256, 4096)  # negative (the default): derived from the single-image budget
    assert derived.limits(2) == (256, 2048)
    assert derived.limits(32) == (256, 256)  # never below the min
    assert derived.limits(0, n_frames=4) == (256, 1024)
    mixed = PixelBudgets(256, 4096, multiple_image_min_pixels=-1, multiple_image_max_pixels=3000,
                         video_min_pixels=512, video_max_pixels=-1)
    assert mixed.limits(5) == (256, 3000)
    assert mixed.limits(0, n_frames=16) == (512, 512)  # 4096 // 16 = 256, raised to the min
    with pytest.raises(ValueError, match="not both"):
        derived.limits(1, n_frames=2)


@pytest.mark.parametrize("bad", [dict(single_image_min_pixels=0), dict(single_image_max_pixels=100),
                                 dict(video_min_pixels=0), dict(multiple_image_min_pixels=900,
                                                                multiple_image_max_pixels=800)])
def test_bad_budgets_are_refused(bad):
    with pytest.raises(ValueError):
        PixelBudgets(**{"single_image_min_pixels": 256, "single_image_max_pixels": 4096, **bad})


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("budgets")
    cfg = compose_train(["model=ovis25_tiny"], tmp, tmp)  # 8 px patches, hidden_stride 2, 256..4096 pixels
    return build_processor(cfg)


def _conv(text):
    return [{"from": "human", "value": text}, {"from": "gpt", "value": "a square"}]


def test_training_samples_resize_within_their_budget(processor):
    # conf/processor/ovis25_tiny.yaml: several images derived; a video's frames up to 64 x 64 each
    assert processor.pixel_budgets == PixelBudgets(256, 4096, video_max_pixels=4096)
    image = Image.new("RGB", (64, 64), "red")
    one = processor.conversation(_conv("<image>\nWhat?"), [image])
    assert one.grid_thws.tolist() == [[1, 8, 8]]  # 64 x 64 = 4096 pixels: the single-image max
    two = processor.conversation(_conv("<image>\n<image>\nWhat?"), [image, image])
    assert two.grid_thws.tolist() == [[1, 4, 4], [1, 4, 4]]  # each under 4096 / 2 pixels: 32 x 32
    video = processor.conversation(_conv("<video>\nWhat?"), video=[image] * 4)
    assert video.grid_thws.tolist() == [[4, 8, 8]]  # each frame within 4096 pixels: 64 x 64
    # the data path (SampleBuilder) makes its samples this way
    record = {"__key__": "k", "json": {"conversations": _conv("<image>\n<image>\nWhat?")}, "0.png": image,
              "1.png": image}
    assert SampleBuilder(processor, max_length=256)(record).grid_thws.tolist() == [[1, 4, 4], [1, 4, 4]]
    # explicit limits win
    assert processor.conversation(_conv("<image>\n<image>\nWhat?"), [image, image], None, 256, 4096).grid_thws.tolist() \
        == [[1, 8, 8], [1, 8, 8]]


def test_inference_prompts_keep_the_preprocessor_range(processor):
    image = Image.new("RGB", (64, 64), "red")
    assert processor.query("What?", [image, image]).grid_thws.tolist() == [[1, 8, 8], [1, 8, 8]]
