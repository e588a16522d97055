"""The Ovis2.5 processor: tokenizer + Qwen3 chat format + native-resolution images and videos -> samples, batches.

A sample holds images or one video, not both (as in the original). Each `<image>` (or the `<video>`) becomes its
indicator ids around one -300 per visual token; the patches of all images are concatenated with one grid_thw row
per image. Training samples resize their images within the pixel budget of their kind (one image, several, a
video: `pixel_budgets`, as the original recipe); inference prompts within the preprocessor's own range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ..constants import IGNORE_ID, IMAGE_TOKEN, IMAGE_TOKEN_ID, VIDEO_TOKEN, VIDEO_TOKEN_ID
from .chat_processor import ChatProcessor, expand_marks, pad_ids, user_turn
from .conversation import NO_THINKING_PREFACE
from .native_resolution import (
    NATIVE_IMAGE_END_ID,
    NATIVE_IMAGE_START_ID,
    NATIVE_VIDEO_END_ID,
    NATIVE_VIDEO_START_ID,
    NativeResolutionPreprocessor,
)
from .pixel_budgets import PixelBudgets
from .processor import PREPROCESSOR_FILE
from .tokenizer import load_tokenizer
from .video import VideoFrames


@dataclass
class NativeSample:
    input_ids: list[int]  # text ids with each image / video expanded into -301/-303, -300 x tokens, -302/-304
    labels: list[int]
    pixel_values: torch.Tensor  # [patches, 3 * tp * p * p]; may have 0 rows
    grid_thws: torch.Tensor  # [images, 3] long; may have 0 rows
    prompt: str = ""
    meta: dict = field(default_factory=dict)


class NativeOvisProcessor(ChatProcessor):
    takes_video = True  # a video is one visual input (frames on the temporal axis), not a list of images

    def __init__(self, tokenizer, chat_format: str, preprocessor: NativeResolutionPreprocessor,
                 pixel_budgets: dict | None = None):
        super().__init__(tokenizer, chat_format)
        self.image_preprocessor = preprocessor
        # the single-image range is the preprocessor's; `pixel_budgets` sets the multiple-image and video ranges
        self.pixel_budgets = PixelBudgets(preprocessor.min_pixels, preprocessor.max_pixels, **(pixel_budgets or {}))

    # ------------------------------------------------------------------------------------------------ samples
    def conversation(
        self, conversations: list[dict], images: list[Image.Image] | None = None,
        video: list[Image.Image] | None = None, min_pixels: int | None = None, max_pixels: int | None = None,
        generation_preface: str | None = None,
    ) -> NativeSample:
        """Training sample (`generation_preface` None) or inference prompt (an open assistant turn starting with
        the preface: "" with thinking, `NO_THINKING_PREFACE` without). Without min/max pixels, the images (or the
        video's frames) are resized within the pixel budget for their number (`pixel_budgets`)."""
        text = self.formatter.format(conversations, generation_preface)
        images = images or []
        n_images, n_videos = text.input_ids.count(IMAGE_TOKEN_ID), text.input_ids.count(VIDEO_TOKEN_ID)
        if n_images != len(images):
            raise ValueError(f"the text has {n_images} {IMAGE_TOKEN} marks but {len(images)} images were given")
        if n_videos != (1 if video else 0):
            raise ValueError(f"the text has {n_videos} {VIDEO_TOKEN} marks; a sample holds at most one video")
        if images and video:
            raise ValueError("a sample holds images or one video, not both")
        pp = self.image_preprocessor
        if min_pixels is None and max_pixels is None:
            min_pixels, max_pixels = self.pixel_budgets.limits(len(images), len(video) if video else 0)
        patches, grids, image_iter = [], [], iter(images)

        def patches_of(token: int) -> list[int] | None:  # an image's or the video's patches; its placeholder ids
            if token == IMAGE_TOKEN_ID:
                pixel_values, grid, placeholders = pp.image(next(image_iter), min_pixels, max_pixels)
            elif token == VIDEO_TOKEN_ID:
                pixel_values, grid, placeholders = pp.video(video, min_pixels, max_pixels)
            else:
                return None
            patches.append(pixel_values)
            grids.append(grid)
            return placeholders

        input_ids, labels = expand_marks(text, patches_of)
        pixel_values = torch.cat(patches) if patches else torch.zeros(0, pp.patch_dim)
        grid_thws = torch.tensor(grids, dtype=torch.long).reshape(-1, 3)
        return NativeSample(input_ids, labels, pixel_values, grid_thws, text.prompt)

    def caption(self, caption: str, image: Image.Image, template: str = f"{IMAGE_TOKEN}\n") -> NativeSample:
        """Caption sample: template (with one `<image>`) + caption; labels on the caption only."""
        text = self.formatter.format_caption(caption, template)
        patches, grid, placeholders = self.image_preprocessor.image(image)
        at = text.input_ids.index(IMAGE_TOKEN_ID)
        input_ids = text.input_ids[:at] + placeholders + text.input_ids[at + 1:]
        labels = text.labels[:at] + [IGNORE_ID] * len(placeholders) + text.labels[at + 1:]
        return NativeSample(input_ids, labels, patches, torch.tensor([grid]), text.prompt)

    def query(
        self, question: str, images: list[Image.Image] | None = None, thinking: bool = False,
        min_pixels: int | None = None, max_pixels: int | None = None,
    ) -> NativeSample:
        """An inference prompt for one user turn (`chat_processor.user_turn`). Images are resized within the
        preprocessor's range unless min/max pixels are given (as the original's inference). `images` may be the
        frames of one video (`video.VideoFrames`): the prompt then holds them as one `<video>` (prepended when the
        text has none), each frame within the video's pixel budget when it has one."""
        pp = self.image_preprocessor
        preface = "" if thinking else NO_THINKING_PREFACE
        if isinstance(images, VideoFrames):
            if VIDEO_TOKEN not in question:
                question = f"{VIDEO_TOKEN}\n{question}"
            min_pixels = images.min_pixels if min_pixels is None else min_pixels
            max_pixels = images.max_pixels if max_pixels is None else max_pixels
        min_pixels = pp.min_pixels if min_pixels is None else min_pixels
        max_pixels = pp.max_pixels if max_pixels is None else max_pixels
        if isinstance(images, VideoFrames):
            return self.conversation(user_turn(question, 0), None, images, min_pixels, max_pixels, preface)
        images = images or []
        return self.conversation(user_turn(question, len(images)), images, None, min_pixels, max_pixels, preface)

    # ------------------------------------------------------------------------------------------------ batches
    def collate(self, samples: list[NativeSample], padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Pad to the longest sample; patches and grids are concatenated in sample order."""
        return {
            **pad_ids(samples, self.pad_token_id, padding_side),
            "pixel_values": torch.cat([s.pixel_values for s in samples]),
            "grid_thws": torch.cat([s.grid_thws for s in samples]),
        }

    # ----------------------------------------------------------------------------------------------------- I/O
    @classmethod
    def from_pretrained(
        cls, directory: str | Path, chat_format: str, vit_config: dict, pixel_budgets: dict | None = None,
        **preprocessor_kwargs,
    ) -> "NativeOvisProcessor":
        """Tokenizer files + preprocessor_config.json (normalisation, resample, and the pixel range where an export
        recorded one) of a directory; patch sizes come from the ViT's config (the image processor's `size` is not
        used at native resolution)."""
        directory = Path(directory)
        from ..interop.local_files import read_json_file

        config = read_json_file(directory / PREPROCESSOR_FILE)
        # the pixel range an export recorded (interop/ovis25.py: with_pixel_range); arguments take precedence
        recorded = {k: config[k] for k in ("min_pixels", "max_pixels") if k in config}
        if any(type(v) is not int or v <= 0 for v in recorded.values()):
            raise ValueError(f"{directory / PREPROCESSOR_FILE}: min_pixels / max_pixels must be positive integers, "
                             f"got {recorded}")
        preprocessor_kwargs = {**recorded, **preprocessor_kwargs}
        pp = NativeResolutionPreprocessor(
            patch_size=vit_config["patch_size"],
            hidden_stride=vit_config.get("hidden_stride", 2),
            temporal_patch_size=vit_config.get("temporal_patch_size", 1),
            image_mean=tuple(config["image_mean"]),
            image_std=tuple(config["image_std"]),
            resample=int(config.get("resample", 3)),
            **preprocessor_kwargs,
        )
        processor = cls(load_tokenizer(directory), chat_format, pp, pixel_budgets)
        processor.tokenizer_source = directory
        processor.preprocessor_config = config  # written back unchanged by an export
        return processor


def fit_native_length(sample: NativeSample, max_length: int) -> NativeSample:
    """Keep the head of a sample longer than `max_length`, never cutting an image or video in half (a cut inside
    one moves to just before it); the patches and grids of the dropped images go too."""
    if len(sample.input_ids) <= max_length:
        return sample
    cut, image_start, kept = max_length, None, 0
    for i, token in enumerate(sample.input_ids[:max_length]):
        if token in (NATIVE_IMAGE_START_ID, NATIVE_VIDEO_START_ID):
            image_start = i
        elif token in (NATIVE_IMAGE_END_ID, NATIVE_VIDEO_END_ID):
            image_start, kept = None, kept + 1
    if image_start is not None:
        cut = image_start
    grids = sample.grid_thws[:kept]
    n_patches = int(grids.prod(dim=1).sum()) if kept else 0
    return NativeSample(sample.input_ids[:cut], sample.labels[:cut], sample.pixel_values[:n_patches], grids,
                        sample.prompt, {**sample.meta, "truncated": True})
