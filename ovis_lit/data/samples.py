"""Turn a decoded WebDataset record into a model sample: formatting, preprocessing and length control.

Record layout (what `data/` builders and converters write): `<key>.json` holds either {"conversations": [...]}
(LLaVA style, `<image>` marks) or {"caption": "..."}, optionally "images": [member names] giving the image order;
images are members with image extensions (`<key>.png`, `<key>.0.jpg`, ...), in name order unless "images" says
otherwise. A conversation without images is a text-only sample.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from PIL import Image

from ..constants import IGNORE_ID, IMAGE_ATOM_ID, IMAGE_END_ID, IMAGE_START_ID, IMAGE_TOKEN
from ..processing.processor import OvisProcessor, Sample
from .stream import SkipSample

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff")


def record_images(record: dict, meta: dict) -> list[Image.Image]:
    names = meta.get("images")
    if names is None:
        names = sorted(k for k in record if k.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS)
    images = []
    for name in names:
        if name not in record:
            raise SkipSample("missing_image", f"{record.get('__key__')}: no member {name!r}")
        image = record[name]
        if not isinstance(image, Image.Image):
            raise SkipSample("decode_error", f"{record.get('__key__')}: {name} did not decode to an image")
        images.append(image)
    return images


def expanded_length(input_ids: list[int], tokens_per_crop: int) -> int:
    return len(input_ids) + input_ids.count(IMAGE_ATOM_ID) * (tokens_per_crop - 1)


def fit_length(sample: Sample, max_length: int, tokens_per_crop: int) -> Sample:
    """Keep the head of a sample that is too long, never cutting an image's placeholder run in half
    (a cut inside an image moves to just before it, and that image's crops are dropped)."""
    if expanded_length(sample.input_ids, tokens_per_crop) <= max_length:
        return sample
    length, cut, image_start, crops = 0, 0, None, 0
    kept_crops = 0
    for i, token in enumerate(sample.input_ids):
        if token == IMAGE_START_ID:
            image_start, crops = i, 0
        length += tokens_per_crop if token == IMAGE_ATOM_ID else 1
        crops += token == IMAGE_ATOM_ID
        if length > max_length:
            break
        if token == IMAGE_END_ID:
            image_start, kept_crops = None, kept_crops + crops
        cut = i + 1
    if image_start is not None:  # stopped inside an image: drop it whole
        cut = image_start
    return Sample(
        sample.input_ids[:cut],
        sample.labels[:cut],
        sample.pixel_values[:kept_crops],
        sample.prompt,
        {**sample.meta, "truncated": True},
    )


@dataclass
class SampleBuilder:
    """Callable record -> Sample used inside dataloader workers (so it must pickle)."""

    processor: OvisProcessor
    max_length: int
    tokens_per_crop: int
    captions_as: str = "template"  # "template": caption pretraining (stage 1); "chat": a described image (stage 2)
    caption_template: str = f"{IMAGE_TOKEN}\n"
    caption_prompts: list[str] = field(default_factory=lambda: ["Describe the image."])
    truncate: bool = True  # False: over-long samples are skipped instead of cut

    def __post_init__(self):
        if self.captions_as not in ("template", "chat"):
            raise ValueError(f"captions_as must be 'template' or 'chat', got {self.captions_as!r}")

    def __call__(self, record: dict) -> Sample:
        meta = record.get("json")
        if not isinstance(meta, dict):
            raise SkipSample("bad_json", f"{record.get('__key__')}: no JSON object")
        images = record_images(record, meta)
        try:
            sample = self._format(meta, images, record.get("__key__", ""))
        except ValueError as exn:  # formatter refusals: mismatched <image> count, unknown role, ...
            raise SkipSample("invalid_sample", str(exn)) from exn
        if expanded_length(sample.input_ids, self.tokens_per_crop) > self.max_length:
            if not self.truncate:
                raise SkipSample("too_long")
            sample = fit_length(sample, self.max_length, self.tokens_per_crop)
        if all(label == IGNORE_ID for label in sample.labels):
            raise SkipSample("no_supervised_tokens", record.get("__key__", ""))
        sample.meta["key"] = record.get("__key__")
        return sample

    def _format(self, meta: dict, images: list[Image.Image], key: str) -> Sample:
        if "conversations" in meta:
            conversations = meta["conversations"]
            if not isinstance(conversations, list) or not conversations:
                raise SkipSample("empty_conversation", key)
            if not any(turn.get("from") in ("gpt", "assistant") for turn in conversations):
                raise SkipSample("no_assistant_turn", key)
            return self.processor.conversation(conversations, images)
        if "caption" in meta:
            if len(images) != 1:
                raise SkipSample("invalid_sample", f"{key}: a caption sample needs one image, has {len(images)}")
            caption = str(meta["caption"]).strip()
            if not caption:
                raise SkipSample("empty_caption", key)
            if self.captions_as == "template":
                return self.processor.caption(caption, images[0], meta.get("caption_template", self.caption_template))
            prompt = self.caption_prompts[zlib.crc32(key.encode()) % len(self.caption_prompts)]
            turns = [{"from": "human", "value": f"{IMAGE_TOKEN}\n{prompt}"}, {"from": "gpt", "value": caption}]
            return self.processor.conversation(turns, images)
        raise SkipSample("bad_json", f"{key}: neither 'conversations' nor 'caption'")
