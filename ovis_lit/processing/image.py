"""Image preprocessing of Ovis 1.6: dynamic partition into crops, plus a global view, each padded to a square.

The grid search, crop order and placeholder layout follow the original so that a checkpoint sees exactly the
inputs it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..constants import (
    COLUMN_SEPARATOR_ID,
    IMAGE_ATOM_ID,
    IMAGE_END_ID,
    IMAGE_START_ID,
    PARTITION_START_ID,
    ROW_SEPARATOR_ID,
)
from .image_decoding import to_rgb

Box = tuple[int, int, int, int]  # left, top, right, bottom


def placeholders_for_grid(rows: int, cols: int) -> list[int]:
    """[start, global/first crop, partition start, (crops with column/row separators), end]."""
    ids = [IMAGE_START_ID, IMAGE_ATOM_ID, PARTITION_START_ID]
    if rows * cols > 1:
        for r in range(rows):
            for c in range(cols):
                ids.append(IMAGE_ATOM_ID)
                if c < cols - 1:
                    ids.append(COLUMN_SEPARATOR_ID)
            if r < rows - 1:
                ids.append(ROW_SEPARATOR_ID)
    ids.append(IMAGE_END_ID)
    return ids


def partition(width: int, height: int, rows: int, cols: int) -> list[Box]:
    """Row-major boxes of a rows x cols grid; the last row and column take the remainder."""
    row_h, col_w = height // rows, width // cols
    boxes = []
    for r in range(rows):
        top = r * row_h
        bottom = height if r == rows - 1 else top + row_h
        for c in range(cols):
            left = c * col_w
            right = width if c == cols - 1 else left + col_w
            boxes.append((left, top, right, bottom))
    return boxes


def covering_area(width: int, height: int, side: int) -> float:
    """Pixels of a crop that survive resizing it into a side x side square (no credit for upscaling)."""
    long, short = max(width, height), min(width, height)
    if long > side:
        return side * (short / long * side)
    return float(width * height)


def select_grid(width: int, height: int, side: int, max_partition: int, covering_threshold: float = 0.9) -> tuple[int, int]:
    """The original grid choice: among grids covering > threshold, the fewest crops (then the higher ratio);
    if none does, the highest ratio (then the fewest crops). Ties keep enumeration order (rows outer)."""
    area = width * height
    scored = []
    for rows in range(1, max_partition + 1):
        for cols in range(1, max_partition + 1):
            if rows * cols <= max_partition:
                boxes = partition(width, height, rows, cols)
                ratio = sum(covering_area(r - l, b - t, side) for l, t, r, b in boxes) / area
                scored.append(((rows, cols), ratio))
    good = [s for s in scored if s[1] > covering_threshold]
    if good:
        return min(good, key=lambda s: (s[0][0] * s[0][1], -s[1]))[0]  # min() keeps the first of equal keys
    return min(scored, key=lambda s: (-s[1], s[0][0] * s[0][1]))[0]


@dataclass
class ImagePreprocessor:
    side: int = 384  # crop side in pixels (the ViT's image size)
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: int = Image.Resampling.BICUBIC
    covering_threshold: float = 0.9

    def to_square(self, image: Image.Image) -> np.ndarray:
        """Resize so the longer side is `side` (the shorter truncated to an integer), normalise, then zero-pad to a
        centred square in normalised space (0 is the channel mean). Returns [3, side, side] float32."""
        w, h = image.size
        side = self.side
        if w == h:
            new_w = new_h = side
        elif w > h:
            new_w, new_h = side, max(1, int(h / w * side))
        else:
            new_w, new_h = max(1, int(w / h * side)), side
        resized = image.resize((new_w, new_h), resample=self.resample)
        arr = np.asarray(resized, dtype=np.float32) * np.float32(1 / 255)
        arr = (arr - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
        square = np.zeros((side, side, 3), dtype=np.float32)
        top, left = (side - new_h) // 2, (side - new_w) // 2
        square[top : top + new_h, left : left + new_w] = arr
        return square.transpose(2, 0, 1)

    def __call__(self, image: Image.Image, max_partition: int = 9) -> tuple[torch.Tensor, list[int]]:
        """An image -> (pixel values [n_crops, 3, side, side], its placeholder ids in the original layout: one -300
        per crop; the processor expands each into the crop's visual tokens, `placeholders.from_original_ids`)."""
        image = to_rgb(image)
        w, h = image.size
        rows, cols = select_grid(w, h, self.side, max_partition, self.covering_threshold)
        crops = [image.crop(box) for box in partition(w, h, rows, cols)]
        if len(crops) > 1:
            crops.insert(0, image)  # the whole image first, as a global view
        pixel_values = torch.from_numpy(np.stack([self.to_square(c) for c in crops]))
        return pixel_values, placeholders_for_grid(rows, cols)
