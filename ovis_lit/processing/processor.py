"""OvisProcessor: tokenizer + chat format + image preprocessing -> model-ready samples and batches."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ..constants import IMAGE_TOKEN, IMAGE_TOKEN_ID
from .chat_processor import ChatProcessor, expand_marks, pad_ids, user_turn
from .conversation import CHAT_FORMATS
from .image import ImagePreprocessor
from .placeholders import from_original_ids
from .tokenizer import load_tokenizer

PREPROCESSOR_FILE = "preprocessor_config.json"


@dataclass
class Sample:
    input_ids: list[int]  # text ids with each image expanded: indicators (-301..-305), one -300 per visual token
    labels: list[int]
    pixel_values: torch.Tensor  # [n_crops, 3, S, S]; n_crops may be 0
    prompt: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def n_crops(self) -> int:
        return self.pixel_values.shape[0]


class OvisProcessor(ChatProcessor):
    def __init__(
        self,
        tokenizer,
        chat_format: str,
        image_preprocessor: ImagePreprocessor,
        tokens_per_crop: int,
        max_partition: int = 9,
        multi_image_max_partition: int = 1,
        multimodal_max_length: int = 8192,
    ):
        if tokens_per_crop < 1:
            raise ValueError(f"tokens_per_crop must be positive, got {tokens_per_crop}")
        super().__init__(tokenizer, chat_format)
        self.tokens_per_crop = tokens_per_crop  # the model's visual tokens per crop: each crop's run of -300s
        self.image_preprocessor = image_preprocessor
        self.max_partition = max_partition  # single-image samples
        self.multi_image_max_partition = multi_image_max_partition  # each image of a several-image sample
        # the longest sequence the original's preprocessing keeps: what an export's config.json says
        self.multimodal_max_length = multimodal_max_length

    # ------------------------------------------------------------------------------------------------ samples
    def conversation(
        self, conversations: list[dict], images: list[Image.Image] | None = None, max_partition: int | None = None,
        generation_preface: str | None = None,
    ) -> Sample:
        text = self.formatter.format(conversations, generation_preface)
        return self._with_images(text, images or [], max_partition)

    def query(self, question: str, images: list[Image.Image] | None = None, max_partition: int | None = None) -> Sample:
        """An inference prompt for one user turn (`chat_processor.user_turn`)."""
        images = images or []
        return self.conversation(user_turn(question, len(images)), images, max_partition, generation_preface="")

    def caption(self, caption: str, image: Image.Image, template: str = f"{IMAGE_TOKEN}\n") -> Sample:
        return self._with_images(self.formatter.format_caption(caption, template), [image], None)

    def _with_images(self, text, images: list[Image.Image], max_partition: int | None) -> Sample:
        n_marks = text.input_ids.count(IMAGE_TOKEN_ID)
        if n_marks != len(images):
            raise ValueError(f"the text has {n_marks} {IMAGE_TOKEN} marks but {len(images)} images were given")
        if max_partition is None:
            max_partition = self.max_partition if len(images) == 1 else self.multi_image_max_partition
        crops, image_iter = [], iter(images)

        def crops_of(token: int) -> list[int] | None:  # an image's crops; its placeholder ids
            if token != IMAGE_TOKEN_ID:
                return None
            pixel_values, original = self.image_preprocessor(next(image_iter), max_partition)
            crops.append(pixel_values)
            return from_original_ids(original, self.tokens_per_crop)[0]

        input_ids, labels = expand_marks(text, crops_of)
        side = self.image_preprocessor.side
        pixel_values = torch.cat(crops) if crops else torch.zeros(0, 3, side, side)
        return Sample(input_ids, labels, pixel_values, text.prompt)

    # ------------------------------------------------------------------------------------------------ batches
    def collate(self, samples: list[Sample], padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Pad to the longest sample; crops are concatenated in sample order. Training pads on the right;
        generation needs `padding_side="left"` (every prompt ends at the last column)."""
        return {**pad_ids(samples, self.pad_token_id, padding_side),
                "pixel_values": torch.cat([s.pixel_values for s in samples])}

    # ----------------------------------------------------------------------------------------------------- I/O
    def save_pretrained(self, directory: str | Path, image_processor_class: str = "SiglipImageProcessor") -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        save_image_preprocessor(self.image_preprocessor, directory, image_processor_class)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, chat_format: str, tokens_per_crop: int, **kwargs
    ) -> "OvisProcessor":
        directory = Path(directory)
        processor = cls(load_tokenizer(directory), chat_format, load_image_preprocessor(directory), tokens_per_crop,
                        **kwargs)
        processor.tokenizer_source = directory  # exports copy the original tokenizer files from here
        return processor


def save_image_preprocessor(pp: ImagePreprocessor, directory: Path, image_processor_class: str) -> None:
    """preprocessor_config.json in the layout of transformers' SigLIP or CLIP image processor
    (`image_preprocessor_config`)."""
    config = image_preprocessor_config(pp, image_processor_class)
    (Path(directory) / PREPROCESSOR_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def image_preprocessor_config(pp: ImagePreprocessor, image_processor_class: str) -> dict:
    """The preprocessor_config.json fields of transformers' SigLIP or CLIP image processor for `pp`.

    A CLIP processor gets the crop side as `crop_size` (which the original Ovis code reads for CLIP and AIMv2) and
    `do_center_crop: false`: the original refuses a processor that centre-crops, since crops are padded squares.
    """
    config = {
        "do_convert_rgb": None,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": list(pp.image_mean),
        "image_processor_type": image_processor_class,
        "image_std": list(pp.image_std),
        "resample": int(pp.resample),
        "rescale_factor": 1 / 255,
        "size": {"height": pp.side, "width": pp.side},
    }
    if image_processor_class == "CLIPImageProcessor":
        config.update(
            {
                "crop_size": {"height": pp.side, "width": pp.side},
                "do_center_crop": False,
                "do_convert_rgb": True,
                "size": {"shortest_edge": pp.side},
            }
        )
    return config


def load_image_preprocessor(directory: str | Path) -> ImagePreprocessor:
    """The crop side is `crop_size` where the config has one (CLIP, as the original reads it), else `size`."""
    from ..interop.local_files import read_json_file

    path = Path(directory) / PREPROCESSOR_FILE
    config = read_json_file(path)
    if config.get("do_center_crop"):
        raise ValueError(f"{path} centre-crops (do_center_crop: true); Ovis pads each crop to a square instead")
    try:
        size = config.get("crop_size") or config["size"]
        side = size.get("height", size.get("shortest_edge"))
        if side is None or size.get("width", side) != side:
            raise ValueError(f"expected a square crop size, got {size}")
        return ImagePreprocessor(
            side=int(side),
            image_mean=tuple(config["image_mean"]),
            image_std=tuple(config["image_std"]),
            resample=int(config.get("resample", 3)),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ValueError(f"{path}: not a usable image-processor config ({type(e).__name__}: {e})") from None


__all__ = ["CHAT_FORMATS", "OvisProcessor", "Sample", "load_image_preprocessor"]
