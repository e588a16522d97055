"""Native-resolution preprocessing of Ovis2.5: each image keeps (about) its own size and aspect ratio.

An image is resized by `smart_resize` to sides that are multiples of `patch_size * hidden_stride`, normalised and
cut into patches. The patches are flattened to [patches, channels * temporal_patch_size * patch^2] and ordered by
hidden_stride x hidden_stride blocks (blocks row-major, patches row-major inside a block), so that the ViT's
output can be merged into visual tokens by a plain reshape: each run of hidden_stride^2 consecutive patches is
one token. `grid_thw` is [t, h / patch, w / patch]. A video is its frames, all resized to the first frame's
size and stacked on t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..constants import IMAGE_ATOM_ID
from ..rejection import Rejected
from .image_decoding import to_rgb

# Indicator ids of Ovis2.5 (4 rows at the end of the visual table): an image is -301, -300 x n, -302 and a video
# -303, -300 x n, -304, one -300 per visual token.
NATIVE_IMAGE_START_ID, NATIVE_IMAGE_END_ID = -301, -302
NATIVE_VIDEO_START_ID, NATIVE_VIDEO_END_ID = -303, -304
NATIVE_N_INDICATORS = 4

# The original's defaults for inference (`preprocess_inputs`); training passes its own per kind of sample.
DEFAULT_MIN_PIXELS = 448 * 448
DEFAULT_MAX_PIXELS = 1344 * 1792
MAX_ASPECT_RATIO = 200


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) rounded to multiples of `factor` with an area scaled into [min_pixels, max_pixels].

    The Qwen2-VL rule as Ovis2.5 applies it: a side shorter than `factor` is first scaled up to `factor` (the other
    side keeping the aspect ratio); each side is rounded to the nearest multiple of `factor` (Python's round, ties
    to even); an area over max_pixels is scaled down (sides floored to multiples of factor), one under min_pixels
    up (ceiled). Like the original this can return a 0 side for extreme aspect ratios (e.g. 7 x 3000 under 9216
    pixels): callers refuse such sizes (`check_size`).
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height} x {width}")
    if min(height, width) < factor:
        if height < width:
            height, width = factor, round(width * factor / height)
        else:
            height, width = round(height * factor / width), factor
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def check_size(height: int, width: int, original: tuple[int, int]) -> None:
    """Refuse what the resize rule cannot represent: a 0 side, or an aspect ratio over 200 (the original's limit)."""
    if height == 0 or width == 0:
        raise Rejected("degenerate_size", f"{original[1]} x {original[0]} image resizes to {width} x {height}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise Rejected("aspect_ratio", f"{width} x {height} exceeds aspect ratio {MAX_ASPECT_RATIO}")


def patchify(frames: np.ndarray, patch_size: int, hidden_stride: int, temporal_patch_size: int) -> tuple[torch.Tensor, list[int]]:
    """Frames [T, C, H, W] (normalised) -> (patches [t*h*w, C*tp*p*p] in hidden_stride block order, [t, h, w]).

    T is padded to a multiple of temporal_patch_size by repeating the last frame. A patch's vector is laid out as
    (channel, frame within the temporal patch, row, column).
    """
    if frames.shape[0] % temporal_patch_size:
        repeat = temporal_patch_size - frames.shape[0] % temporal_patch_size
        frames = np.concatenate([frames, np.repeat(frames[-1:], repeat, axis=0)])
    n_frames, channels, height, width = frames.shape
    p, hs, tp = patch_size, hidden_stride, temporal_patch_size
    t, h, w = n_frames // tp, height // p, width // p
    x = frames.reshape(t, tp, channels, h // hs, hs, p, w // hs, hs, p)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # t, block row, block col, row in block, col in block, C, tp, p, p
    patches = np.ascontiguousarray(x).reshape(t * h * w, channels * tp * p * p)
    return torch.from_numpy(patches), [t, h, w]


@dataclass
class NativeResolutionPreprocessor:
    """Images and videos -> (patches, grid_thw, placeholder ids) for the Ovis2.5 NaViT."""

    patch_size: int = 16
    hidden_stride: int = 2
    temporal_patch_size: int = 1
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: int = Image.Resampling.BICUBIC
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def factor(self) -> int:
        return self.patch_size * self.hidden_stride

    @property
    def patch_dim(self) -> int:
        return 3 * self.temporal_patch_size * self.patch_size * self.patch_size

    def target_size(self, image: Image.Image, min_pixels: int | None = None, max_pixels: int | None = None) -> tuple[int, int]:
        """(height, width) the image is resized to."""
        width, height = image.size
        size = smart_resize(
            height, width, self.factor,
            self.min_pixels if min_pixels is None else min_pixels,
            self.max_pixels if max_pixels is None else max_pixels,
        )
        check_size(*size, original=(height, width))
        return size

    def normalised(self, image: Image.Image, size: tuple[int, int]) -> np.ndarray:
        """RGB, resized to (height, width) = size, rescaled to [0, 1] and normalised: [3, H, W] float32."""
        height, width = size
        resized = to_rgb(image).resize((width, height), resample=self.resample)
        arr = np.asarray(resized, dtype=np.float32) * np.float32(1 / 255)
        arr = (arr - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
        return arr.transpose(2, 0, 1)

    def n_tokens(self, grid_thw: list[int]) -> int:
        t, h, w = grid_thw
        return t * h * w // (self.hidden_stride * self.hidden_stride)

    def image(
        self, image: Image.Image, min_pixels: int | None = None, max_pixels: int | None = None
    ) -> tuple[torch.Tensor, list[int], list[int]]:
        """One image -> (patches [n, patch_dim], grid_thw [1, h, w], placeholders -301, -300 x tokens, -302)."""
        size = self.target_size(image, min_pixels, max_pixels)
        patches, grid = patchify(self.normalised(image, size)[None], self.patch_size, self.hidden_stride,
                                 self.temporal_patch_size)
        return patches, grid, self._placeholders(grid, NATIVE_IMAGE_START_ID, NATIVE_IMAGE_END_ID)

    def video(
        self, frames: list[Image.Image], min_pixels: int | None = None, max_pixels: int | None = None
    ) -> tuple[torch.Tensor, list[int], list[int]]:
        """Frames of one video -> (patches, grid_thw [t, h, w], placeholders -303, -300 x tokens, -304). Every frame
        takes the first frame's size."""
        if not frames:
            raise Rejected("empty_video", "a video needs at least one frame")
        size = self.target_size(frames[0], min_pixels, max_pixels)
        stacked = np.stack([self.normalised(frame, size) for frame in frames])
        patches, grid = patchify(stacked, self.patch_size, self.hidden_stride, self.temporal_patch_size)
        return patches, grid, self._placeholders(grid, NATIVE_VIDEO_START_ID, NATIVE_VIDEO_END_ID)

    def _placeholders(self, grid: list[int], start: int, end: int) -> list[int]:
        return [start] + [IMAGE_ATOM_ID] * self.n_tokens(grid) + [end]
