"""Per-input pixel budgets of Ovis2.5 training: the min/max pixels an image is resized into depend on what the
sample holds, as in the original recipe (its `single_image_*`, `multiple_image_*` and `video_*` min/max pixels).

- one image: the single-image range (the preprocessor's own `min_pixels` / `max_pixels`);
- several images: the multiple-image range, applied to each image;
- a video: the video range, applied to each frame.

A negative min means the single-image min; a negative max means the single-image max divided by the number of
images (or frames), but never below the min: several images (a video's frames) then share one image's budget.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PixelBudgets:
    single_image_min_pixels: int
    single_image_max_pixels: int
    multiple_image_min_pixels: int = -1
    multiple_image_max_pixels: int = -1
    video_min_pixels: int = -1
    video_max_pixels: int = -1

    def __post_init__(self):
        if not 0 < self.single_image_min_pixels <= self.single_image_max_pixels:
            raise ValueError(f"single-image pixels must satisfy 0 < min <= max, got {self.single_image_min_pixels} "
                             f"and {self.single_image_max_pixels}")
        for kind in ("multiple_image", "video"):
            low, high = getattr(self, f"{kind}_min_pixels"), getattr(self, f"{kind}_max_pixels")
            if low == 0 or high == 0 or (low > 0 and high > 0 and low > high):
                raise ValueError(f"{kind} pixels must be positive (or negative: derived) with min <= max, got "
                                 f"{low} and {high}")

    def limits(self, n_images: int, n_frames: int = 0) -> tuple[int, int]:
        """(min_pixels, max_pixels) for each image of a sample with `n_images` images, or each frame of its video of
        `n_frames` frames."""
        if n_frames:
            if n_images:
                raise ValueError("a sample holds images or one video, not both")
            low, high, n = self.video_min_pixels, self.video_max_pixels, n_frames
        elif n_images > 1:
            low, high, n = self.multiple_image_min_pixels, self.multiple_image_max_pixels, n_images
        else:
            return self.single_image_min_pixels, self.single_image_max_pixels
        if low < 0:
            low = self.single_image_min_pixels
        if high < 0:
            high = max(low, self.single_image_max_pixels // n)
        return low, high
