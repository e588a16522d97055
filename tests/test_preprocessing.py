"""Image preprocessing: the original's dynamic partition, crop order, placeholders and pixel values."""

import numpy as np
import pytest
import torch
from PIL import Image

from ovis_lit.constants import IMAGE_ATOM_ID
from ovis_lit.processing.image import ImagePreprocessor, partition, placeholders_for_grid, select_grid
from ovis_lit.processing.image_decoding import to_rgb

from .conftest import FIXTURE


def test_fixture_preprocess_cases(expected, expected_tensors):
    pp = ImagePreprocessor(side=42)
    assert len(expected["preprocess"]) == 18
    for name, case in expected["preprocess"].items():
        pixel_values, placeholders = pp(Image.open(FIXTURE / case["image"]), case["max_partition"])
        assert placeholders == case["placeholders"], name
        assert pixel_values.shape[0] == case["n_crops"] == placeholders.count(IMAGE_ATOM_ID), name
        ref = expected_tensors[f"preprocess.{name}.pixel_values"]
        assert pixel_values.shape == ref.shape, name
        # float32 rounding of (x/255 - 0.5)/0.5 computed in a different order: at most a few ulp
        assert (pixel_values - ref).abs().max().item() <= 1e-5, name


def test_grid_selection_all_160_cases(expected):
    cases = expected["grid_selection_side384"]
    assert len(cases) == 160
    for case in cases:
        rows, cols = select_grid(case["width"], case["height"], 384, case["max_partition"])
        n_crops = 1 if rows * cols == 1 else rows * cols + 1
        assert (placeholders_for_grid(rows, cols), n_crops) == (case["placeholders"], case["n_crops"]), case


def test_placeholder_layout():
    assert placeholders_for_grid(1, 1) == [-301, -300, -302, -305]
    assert placeholders_for_grid(2, 2) == [-301, -300, -302, -300, -303, -300, -304, -300, -303, -300, -305]
    assert placeholders_for_grid(1, 3) == [-301, -300, -302, -300, -303, -300, -303, -300, -305]
    assert placeholders_for_grid(3, 1) == [-301, -300, -302, -300, -304, -300, -304, -300, -305]


def test_partition_gives_remainder_to_last_row_and_column():
    boxes = partition(101, 52, 2, 3)
    assert boxes[0] == (0, 0, 33, 26)
    assert boxes[2] == (66, 0, 101, 26)
    assert boxes[-1] == (66, 26, 101, 52)
    assert sum((r - l) * (b - t) for l, t, r, b in boxes) == 101 * 52


def test_global_view_first_then_crops_row_major():
    # A 2x2 grid of flat colours: crops must come back in row-major order after the whole image.
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    arr = np.zeros((800, 800, 3), np.uint8)
    for k, c in enumerate(colours):
        r, col = divmod(k, 2)
        arr[r * 400 : (r + 1) * 400, col * 400 : (col + 1) * 400] = c
    pp = ImagePreprocessor(side=42)
    pixel_values, placeholders = pp(Image.fromarray(arr), max_partition=4)
    assert placeholders == placeholders_for_grid(2, 2)
    centres = pixel_values[1:, :, 21, 21]  # normalised: 1.0 for 255, -1.0 for 0
    assert torch.allclose(centres, torch.tensor(colours, dtype=torch.float32) / 127.5 - 1)


def test_padding_is_centred_and_zero():
    pp = ImagePreprocessor(side=42)
    wide = Image.new("RGB", (200, 50), (255, 255, 255))
    square = torch.from_numpy(pp.to_square(wide))
    rows = (square.abs().sum(dim=(0, 2)) > 0).nonzero().flatten()
    assert rows.min().item() == (42 - 10) // 2 and rows.numel() == 10  # int(50/200*42) = 10 rows of content
    assert square[:, : rows.min()].abs().sum() == 0


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (30, 20), 128),
        Image.new("P", (30, 20)),
        Image.new("RGBA", (30, 20), (10, 20, 30, 0)),
        Image.new("CMYK", (30, 20), (0, 0, 0, 0)),
        Image.new("1", (30, 20), 1),
    ],
    ids=lambda im: im.mode,
)
def test_non_rgb_modes(image):
    pixel_values, _ = ImagePreprocessor(side=42)(image, 4)
    assert pixel_values.shape[1:] == (3, 42, 42)
    assert torch.isfinite(pixel_values).all()


def test_16_bit_grey_is_rescaled_not_clipped():
    arr = np.full((20, 30), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    rgb = to_rgb(Image.fromarray(arr))
    assert rgb.mode == "RGB"
    assert abs(np.asarray(rgb)[0, 0, 0] - 127) <= 1


def test_extreme_aspect_ratio_keeps_one_pixel():
    pixel_values, placeholders = ImagePreprocessor(side=42)(Image.new("RGB", (5000, 3), "white"), 1)
    assert pixel_values.shape == (1, 3, 42, 42)
    assert (pixel_values.abs().sum(dim=(0, 1, 3)) > 0).sum() == 1  # int(3/5000*42) = 0 -> kept at one row
